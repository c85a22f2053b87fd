"""Delivering notifications (handlers/notify.py) to HTTP receivers on 127.0.0.1: the operator's sinks from its
environment, retries with backoff, a refusal not retried, a hanging sink given up on, and a submit that never waits."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from guarded.api.rollout import GuardedRolloutStatus, HistoryEntry
from guarded.api.stages import Phase, Stage
from guarded.handlers import notify
from guarded.handlers.notify import Notifier, Sink, operator_namespace, operator_sinks


@pytest.mark.parametrize(("env", "expected"), [
    pytest.param({}, [], id="none"),
    pytest.param({"GUARDED_NOTIFY_SLACK_URL": "https://chat.example/hook/T1"},
                 [("operator-slack-1", "slack", "https://chat.example/hook/T1", ())], id="one slack"),
    pytest.param({"GUARDED_NOTIFY_WEBHOOK_URL": "http://a.example/x, http://b.example/y",
                  "GUARDED_NOTIFY_EVENTS": "RolledBack,Promoted"},
                 [("operator-webhook-1", "webhook", "http://a.example/x", ("RolledBack", "Promoted")),
                  ("operator-webhook-2", "webhook", "http://b.example/y", ("RolledBack", "Promoted"))],
                 id="two webhooks, some events"),
])
def test_operator_sinks_from_the_environment(env: dict[str, str], expected: list[tuple]) -> None:
    assert [(s.name, s.type, s.url, s.events) for s in operator_sinks(env)] == expected


@pytest.mark.parametrize(("env", "error"), [
    ({"GUARDED_NOTIFY_EVENTS": "RolledBack,Rollback"}, "GUARDED_NOTIFY_EVENTS: unknown Rollback"),
    ({"GUARDED_NOTIFY_SLACK_URL": "chat.example/hook"}, "GUARDED_NOTIFY_SLACK_URL: a URL must start with http"),
])
def test_a_bad_setting_is_refused_at_start_naming_the_variable(env: dict[str, str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        operator_sinks(env)


def test_the_secrets_namespace_is_the_setting_or_the_operators_own() -> None:
    assert operator_namespace({"GUARDED_NOTIFY_NAMESPACE": "platform"}) == "platform"
    assert operator_namespace({}) in (notify.DEFAULT_NAMESPACE, notify.SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
                                      if notify.SERVICE_ACCOUNT_NAMESPACE.exists() else notify.DEFAULT_NAMESPACE)


BEFORE = GuardedRolloutStatus(stage=Stage.BAKE, phase=Phase.PROGRESSING, wave=0, wave_progress="1/2",
                              revision="abc")
ROLLING_BACK = HistoryEntry(time="2026-01-01T00:00:00Z", reason="RollingBack",
                            message="AnalysisFailed: wave 1/2: error-rate: 5% vs 0.5%; removing the canary")
AFTER = BEFORE.model_copy(update={"stage": Stage.ROLLING_BACK, "phase": Phase.ROLLING_BACK,
                                  "rollback_reason": "AnalysisFailed", "history": [ROLLING_BACK]})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(routes: dict[str, Handler]) -> tuple[web.AppRunner, str]:
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_post(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


def test_every_sink_is_told_once_a_failing_one_is_retried_a_refusing_one_is_not_and_a_hanging_one_is_left(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify, "FIRST_BACKOFF", 0.01)
    got: dict[str, list[dict]] = {"slack": [], "hook": [], "flaky": [], "gone": [], "hang": []}

    def recorder(name: str, *statuses: int) -> Handler:
        async def handle(request: web.Request) -> web.Response:
            got[name].append(await request.json())
            answers = list(statuses) or [200]
            return web.Response(status=answers[min(len(got[name]), len(answers)) - 1])
        return handle

    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        got["hang"].append(await request.json())
        await asyncio.wait_for(release.wait(), timeout=60)
        return web.Response()

    async def scenario() -> float:
        runner, base = await serve({"/slack": recorder("slack"), "/hook": recorder("hook"),
                                    "/flaky": recorder("flaky", 503, 503, 200), "/gone": recorder("gone", 404),
                                    "/hang": hang})
        notifier = Notifier([Sink(name=n, type="slack" if n == "slack" else "webhook", url=f"{base}/{n}")
                             for n in got], timeout=0.3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        notes = notifier.submit(namespace="shop", name="bad", target="shop", before=BEFORE, after=AFTER)
        returned = loop.time() - started
        assert [n.event for n in notes] == ["RolledBack"]
        await notifier.drain()
        release.set()
        await runner.cleanup()
        return returned

    returned = asyncio.run(scenario())
    assert returned < 0.3, "submit only starts the delivery"
    assert len(got["slack"]) == 1 and "error-rate: 5% vs 0.5%" in got["slack"][0]["text"]
    assert len(got["hook"]) == 1 and got["hook"][0]["evidence"].startswith("AnalysisFailed: wave 1/2")
    assert len(got["flaky"]) == 3, "retried until it answered"
    assert len(got["gone"]) == 1, "a 404 is not asked again"
    assert len(got["hang"]) == notify.ATTEMPTS, "each attempt given up after the timeout, then no more"
    assert {b["key"] for b in got["hook"] + got["flaky"] + got["hang"]} == {got["hook"][0]["key"]}


def test_a_decision_without_news_sends_nothing_and_a_fault_never_reaches_the_reconcile() -> None:
    async def scenario() -> tuple[tuple, tuple]:
        notifier = Notifier([Sink(name="s", type="webhook", url="http://127.0.0.1:9/x")])
        quiet = notifier.submit(namespace="shop", name="r", target="shop", before=BEFORE, after=BEFORE)
        broken = notifier.submit(namespace="shop", name="r", target="shop", before=BEFORE,
                                 after=None)  # type: ignore[arg-type]
        return quiet, broken
    assert asyncio.run(scenario()) == ((), ())


def test_with_too_many_deliveries_under_way_a_decisions_messages_are_dropped_and_counted(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify, "MAX_PENDING", 3)
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    def dropped() -> float:
        return notify.SENT.labels("*", "RolledBack", "dropped")._value.get()

    async def scenario() -> tuple[int, float]:
        runner, base = await serve({"/hang": hang})
        notifier = Notifier([Sink(name="h", type="webhook", url=f"{base}/hang")], timeout=30)
        before = dropped()
        for i in range(5):
            notifier.submit(namespace="shop", name=f"bad-{i}", target="shop", before=BEFORE, after=AFTER)
        pending, count = len(notifier._tasks), dropped() - before
        release.set()
        await notifier.drain()
        await runner.cleanup()
        return pending, count

    assert asyncio.run(scenario()) == (3, 2.0)


def test_the_kubernetes_client_runs_on_the_operators_own_threads_while_the_default_executor_is_stuck() -> None:
    """A sink whose DNS lookup hangs fills the event loop's default executor (aiohttp's resolver runs there):
    the Kubernetes and Prometheus calls, on a pool of their own, still run."""
    import threading

    from guarded.kube.client import run_blocking

    async def scenario() -> str:
        loop = asyncio.get_running_loop()
        stuck = threading.Event()
        for _ in range(64):  # more than the default executor's threads
            loop.run_in_executor(None, stuck.wait, 30)
        try:
            return await asyncio.wait_for(run_blocking(lambda: "answered"), timeout=5)
        finally:
            stuck.set()

    assert asyncio.run(scenario()) == "answered"
