"""The dashboard without a cluster: who may talk to it, what the page gets, the chart, the buttons' arguments."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from guarded.cli.errors import CliError
from guarded.dashboard.actions import BadAction, arguments, run_action
from guarded.dashboard.chart import chart, window_of
from guarded.dashboard.guard import TOKEN_HEADER, Guard, middleware
from guarded.dashboard.model import list_view, merge_records, rollout_view
from guarded.metrics.provider import Series

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
GUARD = Guard.for_address("s3cret", "127.0.0.1", 8123)
EVIDENCE = {"judge": "Stable", "verdict": "Pass", "canaryEvents": 12.0, "canaryRequests": 300.0, "canaryRatio": 0.04,
            "referenceRatio": 0.05, "thresholdRho": 0.8, "logLr": -6.25, "logThreshold": 5.99,
            "reason": "no degradation"}


def rollout(**status: object) -> dict:
    return {
        "metadata": {"name": "shop-2-0-0", "namespace": "shop", "generation": 2, "uid": "u1",
                     "creationTimestamp": "2026-03-01T11:57:00Z",
                     "annotations": {"rollouts.guarded.dev/authors": '["alice"]'}},
        "spec": {"target": {"name": "shop"}, "change": {"containers": [{"name": "app", "image": "shop:2.0.0"}]},
                 "ticket": "SHOP-1", "waves": [{"replicas": 1, "bake": "5s"}, {"weight": 100, "bake": "5s"}],
                 "analysis": {"interval": "2s", "requests": "http_requests_total", "orders": "orders_total"}},
        "status": {"phase": "Progressing", "stage": "Bake", "wave": 0, "wavesTotal": 2, "canaryWeight": 10,
                   "authors": ["alice"], "stableReplicas": 10,
                   "gates": [{"gate": "Approvals", "passed": True, "reason": "Approved", "message": "1/1"}],
                   "approvals": [{"name": "a-1", "approver": "bob", "groups": ["engineers"], "revision": 2,
                                  "counted": True}],
                   "policy": {"policies": ["p"], "rules": [{"rule": "requiredApprovals", "value": "1",
                                                            "setBy": ["p"]}]},
                   "analysis": {"recent": [{"time": "2026-03-01T11:59:00Z", "wave": 0, "verdict": "Pass",
                                            "intervals": 3, "judgements": [
                                                {"metric": "order-rate", "verdict": "Pass", "evidence": [EVIDENCE]}]}]},
                   "history": [{"time": "2026-03-01T11:58:00Z", "wave": 0, "reason": "WaveStarted",
                                "message": "wave 1/2 (1 pods)"}],
                   **status},
    }


# -- who may talk to it ----------------------------------------------------------------------------

def refusal(**headers: str | None) -> tuple[int, str] | None:
    request = {"method": "GET", "path": "/api/rollouts", "host": "127.0.0.1:8123", "token": "s3cret",
               "origin": None, "fetch_site": None, "content_type": None}
    return GUARD.refusal(**{**request, **headers})


def test_an_api_read_needs_our_host_and_the_token_header():
    assert refusal() is None
    assert refusal(host="localhost:8123") is None and refusal(host="[::1]:8123") is None
    assert refusal(token=None)[0] == 401
    assert refusal(token="s3cres")[0] == 401
    assert refusal(host="attacker.example:8123")[0] == 421  # DNS rebinding: another name for 127.0.0.1
    assert refusal(host="127.0.0.1:8124")[0] == 421
    assert refusal(host=None)[0] == 421


def test_the_pages_own_files_need_no_token_but_our_host():
    for path in ("/", "/favicon.ico", "/static/app.js", "/static/style.css", "/static/plotly.min.js"):
        assert refusal(path=path, token=None) is None, path
    assert refusal(path="/", token=None, host="attacker.example:8123")[0] == 421
    assert refusal(path="/static/../api/rollouts", token=None)[0] == 401
    assert refusal(path="/api/whoami", token=None)[0] == 401
    assert refusal(method="POST", path="/", token=None, origin="http://127.0.0.1:8123",
                   content_type="application/json")[0] == 401


def test_a_change_needs_our_origin_and_json():
    post = {"method": "POST", "content_type": "application/json"}
    assert refusal(**post, origin="http://127.0.0.1:8123", fetch_site="same-origin") is None
    assert refusal(**post, origin="http://127.0.0.1:8123") is None            # a browser without Sec-Fetch-Site
    assert refusal(**post)[0] == 403                                            # no Origin
    assert refusal(**post, origin="http://evil.example")[0] == 403
    assert refusal(**post, origin="http://127.0.0.1:8123", fetch_site="cross-site")[0] == 403
    assert refusal(**post, origin="https://127.0.0.1:8123")[0] == 403
    assert refusal(method="POST", origin="http://127.0.0.1:8123", content_type="text/plain")[0] == 415
    assert refusal(**post, token=None, origin="http://127.0.0.1:8123")[0] == 401


def test_the_token_travels_in_a_header_never_in_a_cookie_nor_a_redirect():
    async def go() -> None:
        guard = Guard.for_address("s3cret", "127.0.0.1", 8123)
        app = web.Application(middlewares=[middleware(guard)])

        async def page(_: web.Request) -> web.Response:
            return web.Response(text="page")

        async def api(_: web.Request) -> web.Response:
            return web.json_response({"items": []})
        app.router.add_get("/", page)
        app.router.add_get("/api/rollouts", api)
        async with TestClient(TestServer(app)) as client:
            host = {"Host": "127.0.0.1:8123"}
            index = await client.get("/", headers=host, allow_redirects=False)
            assert index.status == 200 and await index.text() == "page"
            assert "Set-Cookie" not in index.headers
            assert "frame-ancestors 'none'" in index.headers["Content-Security-Policy"]
            assert (await client.get("/api/rollouts", headers=host)).status == 401
            # The old ways in are closed: a query parameter or a cookie is no token.
            assert (await client.get("/api/rollouts?token=s3cret", headers=host)).status == 401
            assert (await client.get("/api/rollouts", headers={**host, "Cookie": "guarded_dashboard=s3cret"})
                    ).status == 401
            ok = await client.get("/api/rollouts", headers={**host, TOKEN_HEADER: "s3cret"})
            assert ok.status == 200 and await ok.json() == {"items": []} and "Set-Cookie" not in ok.headers
            # A path starting with // is refused, never redirected (no open redirect to //evil.example/).
            reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
            writer.write(b"GET //evil.example/ HTTP/1.1\r\nHost: 127.0.0.1:8123\r\nX-Guarded-Token: s3cret\r\n"
                         b"Connection: close\r\n\r\n")
            answer = (await reader.read()).decode()
            writer.close()
            assert answer.startswith("HTTP/1.1 404") and "Location" not in answer, answer
    asyncio.run(go())


# -- what the page gets ----------------------------------------------------------------------------

def test_the_list_shows_phase_stage_wave_canary_author_and_approvals():
    [row] = list_view([rollout()], NOW)
    assert (row["namespace"], row["name"], row["phase"], row["stage"], row["wave"], row["canary"]) == \
        ("shop", "shop-2-0-0", "Progressing", "Bake", "1/2", "10%")
    assert row["authors"] == ["alice"] and row["approvals"] == "1/1 counted: bob (engineers)"
    assert row["age"] == "3m" and not row["terminal"]


def test_the_rollout_page_has_waves_with_shares_evidence_gates_approvals_and_history():
    page = rollout_view(rollout(), merge_records({}, rollout()["status"]))
    assert page["revision"] == 2 and page["authors"] == ["alice"]
    assert [(w["size"], w["state"], w["current"]) for w in page["waves"]] == [
        ("1 pod", "current: baking", True), ("100% (10 pods)", "pending", False)]
    assert page["gates"]["rows"] == [["Approvals", "yes", "Approved", "1/1"]]
    assert page["approvals"] == [{"name": "a-1", "approver": "bob (engineers)", "revision": 2, "counted": "yes"}]
    [judgement] = page["analysis"][0]["judgements"]
    assert judgement["metric"] == "order-rate" and judgement["evidence"][0][:3] == ["Stable", "Pass", "12/300"]
    assert page["history"][0][2] == "WaveStarted" and "Ticket" in dict(page["documentation"])
    assert page["statusText"].startswith("Name:")


def test_analysis_records_are_kept_beyond_the_few_the_status_holds():
    seen: dict = {}
    merge_records(seen, {"analysis": {"recent": [{"time": "2026-03-01T11:59:00Z"}]}})
    records = merge_records(seen, {"analysis": {"recent": [{"time": "2026-03-01T11:59:05Z"}]}})
    assert [r["time"] for r in records] == ["2026-03-01T11:59:00Z", "2026-03-01T11:59:05Z"]


# -- the chart -------------------------------------------------------------------------------------

class Prometheus:
    """Answers each range query with a constant: canary pods 1 per step, stable 9, orders 5% of requests."""

    def __init__(self) -> None:
        self.queries: list[str] = []

    def range(self, query: str, *, start: datetime, end: datetime, step_seconds: float) -> Series:
        self.queries.append(query)
        requests = 10.0 if "-canary-" in query else 90.0
        value = requests * (0.05 if "orders_total" in query else 0.01 if "5.." in query else 1.0)
        t0 = start.timestamp()
        return Series(values={t0 + i * step_seconds: value for i in range(5)})

    def instant(self, query: str, *, at: datetime | None = None) -> Series:
        raise AssertionError("the chart reads ranges only")

    def labels(self, query: str):
        raise AssertionError("the chart reads ranges only")


def test_the_chart_draws_each_metric_per_version_the_canary_share_waves_and_judgements():
    prometheus = Prometheus()
    result = chart(rollout(), prometheus, merge_records({}, rollout()["status"]), NOW)
    assert result["errors"] == []
    assert any('pod=~"shop-canary-' in q for q in prometheus.queries)
    traces = result["figure"]["data"]
    lines = {(t["name"], t.get("yaxis", "y")): t for t in traces if t["mode"] == "lines"}
    assert lines[("canary", "y")]["y"] == [0.05] * 5 and lines[("stable", "y2")]["y"] == [0.01] * 5
    assert lines[("canary share", "y3")]["y"] == [10.0] * 5
    judged = next(t for t in traces if t["name"] == "judged Pass" and t.get("x"))
    assert judged["y"] == [0.04] and "Stable: Pass no degradation" in judged["text"][0]
    shapes = result["figure"]["layout"]["shapes"]
    assert {s["x0"] for s in shapes} == {"2026-03-01T11:58:00"} and len(shapes) == 3  # across the 3 panels


def test_the_chart_says_why_it_is_empty():
    assert "--prometheus-url" in chart(rollout(), None, [], NOW)["note"]
    bare = rollout()
    del bare["spec"]["analysis"]
    assert "no spec.analysis" in chart(bare, Prometheus(), [], NOW)["note"]


def test_the_window_runs_from_a_minute_before_the_start_to_now_while_the_rollout_runs():
    window = window_of(rollout(), NOW)
    assert window.start == datetime(2026, 3, 1, 11, 56, tzinfo=UTC) and window.end == NOW
    assert window.step == 1.0 and window.rate >= 10


# -- the buttons -----------------------------------------------------------------------------------

def test_each_button_is_the_plugins_command_with_its_arguments():
    approve = arguments("approve", "shop", "r", {"comment": "LGTM", "revision": 3})
    assert (approve.command, approve.namespace, approve.name, approve.comment, approve.revision) == \
        ("approve", "shop", "r", "LGTM", 3)
    full = arguments("promote-full", "shop", "r", {})
    assert (full.command, full.full) == ("promote", True)
    assert arguments("abort", "shop", "r", {}).command == "abort"
    with pytest.raises(BadAction):
        arguments("delete", "shop", "r", {})
    with pytest.raises(BadAction):
        arguments("approve", "shop", "r", {"revision": "3"})


class RefusingKube:
    """The API server refusing an author's approval, as the plugin's Kube reports it."""

    def namespace(self, explicit: str | None) -> str:
        return explicit or "default"

    def get(self, namespace: str, name: str) -> dict:
        return rollout(phase="AwaitingApproval")

    def create_approval(self, namespace: str, body: dict) -> dict:
        raise CliError("Error from server (Forbidden): admission webhook \"x.rollouts.guarded.dev\" denied the "
                       "request: 'alice' is an author of rollout 'shop-2-0-0' (authors: alice)", 3)


def test_a_refused_approval_returns_the_api_servers_message_and_exit_code_3():
    outcome = run_action(RefusingKube(), "approve", "shop", "shop-2-0-0", {"comment": "", "revision": 2})
    assert outcome.code == 3 and not outcome.ok
    assert outcome.output.splitlines()[0] == 'Approving revision 2 of guardedrollout "shop-2-0-0" in namespace "shop":'
    assert outcome.output.splitlines()[-1].startswith("Error from server (Forbidden): admission webhook")


# -- a Prometheus that never answers ---------------------------------------------------------------

class OneRollout:
    """The plugin's Kube as the server uses it, holding one rollout (the API server is not the subject here)."""

    context = "test"

    def list(self, namespace: str | None) -> list[dict]:
        return [rollout()]

    def get(self, namespace: str, name: str) -> dict:
        return rollout()


def test_a_prometheus_that_never_answers_leaves_the_list_details_and_buttons_working():
    import socket

    from guarded.dashboard.server import Dashboard, make_app
    from guarded.metrics.prometheus import PrometheusProvider

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)   # connections are accepted by the kernel and never answered
    provider = PrometheusProvider(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=1, retries=0)
    dash = Dashboard(kube=OneRollout(), namespace="shop", provider=provider, chart_seconds=1.5)  # type: ignore[arg-type]

    async def go() -> None:
        async with TestClient(TestServer(make_app(dash, GUARD))) as client:
            headers = {"Host": "127.0.0.1:8123", TOKEN_HEADER: "s3cret"}
            charts = [asyncio.create_task(client.get("/api/rollouts/shop/shop-2-0-0/chart", headers=headers))
                      for _ in range(12)]   # more than the default thread pool has threads
            await asyncio.sleep(0.2)
            listed = await client.get("/api/rollouts", headers=headers)
            detail = await client.get("/api/rollouts/shop/shop-2-0-0", headers=headers)
            assert listed.status == 200 and [r["name"] for r in (await listed.json())["items"]] == ["shop-2-0-0"]
            assert detail.status == 200 and (await detail.json())["name"] == "shop-2-0-0"
            assert not all(c.done() for c in charts)   # answered while the charts still wait for Prometheus
            for answer in await asyncio.gather(*charts):
                body = await answer.json()
                assert answer.status == 200 and set(body) == {"unavailable"}, body
                assert "Prometheus" in body["unavailable"]
    try:
        asyncio.run(go())
    finally:
        silent.close()
        dash.chart_pool.shutdown(wait=True)


def test_the_chart_stops_querying_past_its_deadline():
    class Counting:
        def __init__(self) -> None:
            self.queries = 0

        def range(self, query: str, **_: object) -> Series:
            self.queries += 1
            return Series()

    ticks = iter(range(100))
    provider = Counting()
    got = chart(rollout(), provider, [], NOW, deadline=2.5, clock=lambda: next(ticks))  # type: ignore[arg-type]
    assert got == {"unavailable": "Prometheus did not answer the chart's queries in time"}
    assert provider.queries == 3


# -- where it listens ------------------------------------------------------------------------------

def test_a_wildcard_address_is_refused_and_a_remote_one_needs_insecure_remote_and_warns():
    from guarded.cli.parser import parse_args
    from guarded.dashboard.server import check_address

    for loopback in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        assert check_address(loopback, insecure_remote=False) is None, loopback
    for wildcard in ("0.0.0.0", "::", "", "0", "::0"):
        for insecure in (False, True):
            with pytest.raises(CliError, match="every interface"):
                check_address(wildcard, insecure_remote=insecure)
    with pytest.raises(CliError, match="--insecure-remote"):
        check_address("192.0.2.10", insecure_remote=False)
    warning = check_address("192.0.2.10", insecure_remote=True)
    assert warning is not None and "clear text" in warning
    assert parse_args(["dashboard", "--address", "192.0.2.10", "--insecure-remote"]).insecure_remote
    assert not parse_args(["dashboard"]).insecure_remote


def test_a_judges_reason_shows_as_text_in_the_charts_hover_never_as_markup():
    from guarded.dashboard.chart import evidence_text

    reason = '<a href="https://evil.example/">click</a> & <b>more</b>'
    record = {"time": "2026-03-01T11:59:00Z", "wave": 0}
    judgement = {"metric": "order-rate", "verdict": "Fail",
                 "evidence": [{**EVIDENCE, "verdict": "Fail", "reason": reason}]}
    text = evidence_text(record, judgement)
    assert "<a" not in text and "<b>" not in text
    assert "Stable: Fail &lt;a href=\"https://evil.example/\"&gt;click&lt;/a&gt; &amp; &lt;b&gt;more&lt;/b&gt;" in text
    assert text.count("<br>") == 1   # our own line break stays markup
