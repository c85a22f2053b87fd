"""`kubectl guarded dashboard` in a real browser (Debian's chromium, driven by Playwright), as alice and bob.

Alice writes a change that a policy wants approved; her own approval from her dashboard is refused with
the API server's message, Bob approves it from his, and his page follows the rollout to Succeeded with
its chart and evidence. Each dashboard is the plugin run with the user's own kubeconfig context.
Screenshots go to a temporary folder, or to $GUARDED_DASHBOARD_SCREENSHOTS (`make dashboard-screenshots`
points it at docs/images).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from guardrails import Team, policy
from operator_process import OperatorProcess
from plugin_users import plugin, users_team
from rollouts import ANALYSIS, GROUP, PLURAL, VERSION, Shop, prometheus_has_traffic, simulated_shop
from testbed import Cluster
from waiting import eventually

CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
WAVES = [{"replicas": 1, "bake": "4s"}, {"weight": 100, "bake": "2s"}]
SLOW = 90_000  # ms: the longest any page waits for the rollout to move


@contextmanager
def dashboard(cluster: Cluster, user: str, namespace: str) -> Iterator[str]:
    """The dashboard served as `user`: its URL (with the token) once it listens."""
    proc = subprocess.Popen(plugin(cluster, user, "dashboard", "-n", namespace, "--prometheus-url",
                                   str(cluster.prometheus_url)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            if "http://" in line:
                yield line.strip()
                break
        else:
            raise AssertionError(f"the dashboard of {user} exited: {proc.wait()} {proc.stderr.read()}")  # type: ignore
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def team(cluster: Cluster, namespace: str, operator: OperatorProcess) -> Team:
    if cluster.prometheus_url is None:
        pytest.skip("needs a Prometheus that scrapes the traffic simulator")
    team = users_team(cluster, namespace)
    Shop(cluster, namespace).apps.create_namespaced_deployment(namespace, simulated_shop(replicas=5))
    eventually(lambda: team.ready("shop") == 5, timeout=90, what="5 ready shop pods")
    eventually(lambda: prometheus_has_traffic(cluster, namespace), timeout=60, what="shop traffic in Prometheus")
    return team


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("GUARDED_DASHBOARD_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_bob_approves_alices_rollout_from_his_page_and_follows_it_to_succeeded(
        cluster: Cluster, namespace: str, team: Team, shots: Path) -> None:
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: make browser installs Debian's chromium"
    with policy(cluster, team, {"requiredApprovals": 1}), \
            dashboard(cluster, "alice", namespace) as alice_url, dashboard(cluster, "bob", namespace) as bob_url, \
            sync_playwright() as pw:
        team.create_rollout("alice", "release", waves=WAVES, analysis=ANALYSIS, ticket="SHOP-1234",
                            description="New checkout flow", rollbackPlan="abort: the stable is untouched")
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        errors: list[str] = []
        alice, bob = (browser.new_page(viewport={"width": 1400, "height": 900}) for _ in range(2))
        for page in (alice, bob):
            page.on("pageerror", lambda exc: errors.append(str(exc)))

        # The list: alice sees her rollout waiting for an approval, as herself.
        alice.goto(alice_url)
        row = alice.locator('tr[data-name="release"]')
        row.and_(alice.locator('[data-phase="AwaitingApproval"]')).wait_for(timeout=SLOW)
        # Who is asking comes from its own request (/api/whoami), which may answer after the list's.
        alice.locator("#identity").filter(has_text="acting as alice (engineers)").wait_for(timeout=SLOW)
        assert "acting as alice (engineers)" in alice.locator("#identity").inner_text()
        assert row.locator("td").nth(7).inner_text() == "alice"          # the author column
        assert alice.url.endswith("/") and "token" not in alice.url     # the token left the URL
        assert not alice.context.cookies()                               # ... for sessionStorage, not a cookie
        alice.screenshot(path=shots / "dashboard-list.png")

        # Alice's own approval: refused by the API server, its message on the page.
        row.locator("a").click()
        alice.locator("#phase").get_by_text("AwaitingApproval").wait_for()
        alice.fill("#approve-comment", "LGTM (my own change)")
        alice.click('button[data-action="approve"]')
        refused = alice.locator("#action-output.refused")
        refused.wait_for(timeout=30_000)
        text = refused.inner_text()
        assert "Error from server (Forbidden): admission webhook" in text, text
        assert "'alice' is an author of rollout 'release' (authors: alice)" in text, text
        assert "created" not in text
        alice.screenshot(path=shots / "dashboard-approval-refused.png", full_page=True)

        # Bob opens the rollout; alice then edits its spec: his open page moves its Approve button to the
        # new revision with the facts, so his approval counts for what he sees.
        bob.goto(f"{bob_url}#/rollout/{namespace}/release")
        bob.locator("#phase").get_by_text("AwaitingApproval").wait_for(timeout=30_000)
        approve = bob.locator('button[data-action="approve"]')
        assert approve.inner_text() == "Approve revision 1"
        team.custom("alice").patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "release", {"spec": {"description": "New checkout flow, v2"}})
        bob.locator('button[data-action="approve"][data-revision="2"]').wait_for(timeout=30_000)
        assert approve.inner_text() == "Approve revision 2"
        bob.fill("#approve-comment", "reviewed SHOP-1234")
        approve.click()
        approved = bob.locator("#action-output.ok")
        approved.wait_for(timeout=30_000)
        assert "created: approved revision 2 of release as bob" in approved.inner_text()

        # Bob's page follows it to Succeeded: waves done, approvals, evidence of each judgement, the chart.
        bob.locator("#phase").get_by_text("Succeeded").wait_for(timeout=SLOW)
        assert "1/1 counted: bob (engineers)" in bob.locator("#approvals-headline").inner_text()
        assert bob.locator("table tr.current").count() == 0
        evidence = bob.locator("#evidence")
        assert "order-rate" in evidence.inner_text() and "Pass" in evidence.inner_text()
        bob.locator('#chart[data-ready="true"] .main-svg').first.wait_for(timeout=30_000)
        bob.wait_for_timeout(5_500)  # the chart's next refresh draws the run up to its end
        chart = bob.locator("#chart").inner_text()
        assert "order-rate" in chart and "error-rate" in chart and "canary share" in chart
        bob.screenshot(path=shots / "dashboard-rollout.png", full_page=True)
        alice.reload()
        alice.locator("#phase").get_by_text("Succeeded").wait_for(timeout=30_000)   # the same state for both
        browser.close()
        assert errors == []
