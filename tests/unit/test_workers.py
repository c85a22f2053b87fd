"""The reconcile workers (handlers/workers.py): a bound on reconciles under way, rollouts with a change out first."""

from __future__ import annotations

import asyncio

import pytest

from guarded.handlers import operator as handlers
from guarded.handlers.workers import Workers


async def _hold(workers: Workers, name: str, urgent: bool, served: list[str], release: asyncio.Event,
                pressing: bool = False) -> None:
    async with workers.slot(urgent, pressing):
        served.append(name)
        await release.wait()


def test_at_most_size_at_once_and_the_waiting_changing_rollouts_go_first_each_in_order_of_arrival() -> None:
    async def go() -> list[str]:
        workers, served, release = Workers(2), [], asyncio.Event()
        tasks = [asyncio.create_task(_hold(workers, name, urgent, served, release))
                 for name, urgent in (("a", False), ("b", False), ("idle-1", False), ("canary-1", True),
                                      ("idle-2", False), ("canary-2", True))]
        await asyncio.sleep(0.01)
        assert served == ["a", "b"] and workers.busy == 2 and workers.waiting == 4
        release.set()
        await asyncio.gather(*tasks)
        assert workers.busy == 0 and workers.waiting == 0
        return served

    assert asyncio.run(go()) == ["a", "b", "canary-1", "canary-2", "idle-1", "idle-2"]


def test_while_both_wait_three_of_every_four_freed_workers_go_to_changing_rollouts() -> None:
    async def go() -> list[str]:
        workers, served, release = Workers(1), [], asyncio.Event()
        first = asyncio.create_task(_hold(workers, "first", False, served, release))
        await asyncio.sleep(0.01)
        waiting = [asyncio.create_task(_hold(workers, name, name.startswith("u"), served, release))
                   for name in ("o1", "u1", "u2", "u3", "u4", "o2", "u5", "u6", "u7", "u8")]
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(first, *waiting)
        return served

    assert asyncio.run(go()) == ["first", "u1", "u2", "u3", "o1", "u4", "u5", "u6", "o2", "u7", "u8"]


def test_a_pressing_rollout_is_served_before_every_other_waiter_and_the_share_of_the_others_keeps_its_turn() -> None:
    async def go() -> list[str]:
        workers, served, release = Workers(1), [], asyncio.Event()
        first = asyncio.create_task(_hold(workers, "first", False, served, release))
        await asyncio.sleep(0.01)
        waiting = [asyncio.create_task(_hold(workers, name, name.startswith(("u", "p")), served, release,
                                             pressing=name.startswith("p")))
                   for name in ("o1", "u1", "u2", "p1", "u3", "u4", "p2", "o2")]
        await asyncio.sleep(0.01)
        assert workers.waiting == 8
        release.set()
        await asyncio.gather(first, *waiting)
        assert workers.busy == 0 and workers.waiting == 0
        return served

    # Both pressing ones first, in order of arrival; then three changing to one other, as without them.
    assert asyncio.run(go()) == ["first", "p1", "p2", "u1", "u2", "u3", "o1", "u4", "o2"]


def test_many_pressing_rollouts_get_three_of_every_four_freed_workers_and_never_starve_the_others() -> None:
    async def go() -> list[str]:
        workers, served, release = Workers(1), [], asyncio.Event()
        first = asyncio.create_task(_hold(workers, "first", False, served, release))
        await asyncio.sleep(0.01)
        waiting = [asyncio.create_task(_hold(workers, name, name.startswith("u"), served, release,
                                             pressing=name.startswith("p")))
                   for name in ("p1", "p2", "p3", "p4", "p5", "p6", "p7", "u1", "o1")]
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(first, *waiting)
        return served

    assert asyncio.run(go()) == ["first", "p1", "p2", "p3", "u1", "p4", "p5", "p6", "o1", "p7"]


def test_a_waiter_whose_rollout_becomes_pressing_while_it_waits_is_moved_up() -> None:
    async def go() -> tuple[list[str], list[bool]]:
        workers, served, release = Workers(1), [], asyncio.Event()

        async def hold(name: str, urgent: bool) -> None:
            async with workers.slot(urgent, key=("shop", name)):
                served.append(name)
                await release.wait()

        first = asyncio.create_task(hold("first", False))
        await asyncio.sleep(0.01)
        waiting = [asyncio.create_task(hold(name, name.startswith("u"))) for name in ("u1", "u2", "u3", "o1")]
        await asyncio.sleep(0.01)
        # u3's canary became Ready while it waited; o1's too (a rollout not seen as changing yet). Unknown keys,
        # the one being served and a second press change nothing.
        moved = [workers.press(("shop", "u3")), workers.press(("shop", "o1")), workers.press(("shop", "u3")),
                 workers.press(("shop", "nobody")), workers.press(("shop", "first"))]
        assert workers.waiting == 4
        release.set()
        await asyncio.gather(first, *waiting)
        return served, moved

    served, moved = asyncio.run(go())
    assert moved == [True, True, False, False, False]
    assert served == ["first", "u3", "o1", "u1", "u2"]


def test_a_waiter_cancelled_gives_its_place_and_a_slot_handed_to_a_cancelled_one_goes_on() -> None:
    async def go() -> list[str]:
        workers, served, release = Workers(1), [], asyncio.Event()
        first = asyncio.create_task(_hold(workers, "first", False, served, release))
        await asyncio.sleep(0.01)
        gone = asyncio.create_task(_hold(workers, "gone", True, served, release))
        late = asyncio.create_task(_hold(workers, "late", False, served, release))
        await asyncio.sleep(0.01)
        gone.cancel()                     # cancelled while waiting: passed over
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(first, late)
        assert gone.cancelled()

        # A slot handed to a waiter at the moment it is cancelled is passed on, not lost.
        release.clear()
        holder = asyncio.create_task(_hold(workers, "holder", False, served, release))
        await asyncio.sleep(0.01)
        unlucky = asyncio.create_task(_hold(workers, "unlucky", True, served, release))
        after = asyncio.create_task(_hold(workers, "after", False, served, release))
        await asyncio.sleep(0.01)
        assert workers.waiting == 2
        release.set()
        while workers.waiting == 2:       # holder leaves and hands its slot to "unlucky"...
            await asyncio.sleep(0)
        unlucky.cancel()                  # ...which is cancelled before it runs
        await asyncio.gather(holder, after, return_exceptions=True)
        assert workers.busy == 0 and workers.waiting == 0
        return served

    served = asyncio.run(go())
    assert served[:2] == ["first", "late"] and "gone" not in served
    assert served[-1] == "after" and "unlucky" not in served


def test_a_rollout_counts_as_changing_while_its_status_or_its_canary_says_a_change_is_out(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[tuple[str, str], dict[str, object] | None] = {
        ("shop", "baking"): {"status": {"stage": "Bake"}},
        ("shop", "rolling-back"): {"status": {"stage": "RollingBack"}},
        ("shop", "promoting"): {"status": {"stage": "Promote"}},
        ("shop", "pending"): {"status": {}},
        ("shop", "done"): {"status": {"stage": "Succeeded"}},
        ("shop", "odd"): {"status": {"stage": "NoSuchStage"}},
        ("shop", "gone"): None,
    }
    seen[("shop", "claimed")] = {"spec": {"target": {"name": "cart"}}, "status": {"stage": "Pending"}}
    canaries = {("shop", "cart-canary"): {"metadata": {"name": "cart-canary"}}}

    def peek(resource: str, namespace: str, name: str) -> dict[str, object] | None:
        return (canaries if resource == "deployments" else seen).get((namespace, name))

    monkeypatch.setattr(handlers.CACHE, "peek", peek)
    # "claimed": its status still says Pending (the write of the decision that made its canary conflicted),
    # but its canary is out.
    assert {name for (_, name) in seen if handlers.changing(("shop", name))} == {"baking", "rolling-back",
                                                                                  "promoting", "claimed"}


def test_a_rollout_waiting_for_its_canary_presses_once_its_canary_s_pods_are_all_ready(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def rollout(stage: str, target: str) -> dict[str, object]:
        return {"spec": {"target": {"name": target}}, "status": {"stage": stage}}

    def canary(want: int | None, ready: int | None) -> dict[str, object]:
        return {"spec": {"replicas": want}, "status": {} if ready is None else {"readyReplicas": ready}}

    seen = {("shop", "ready"): rollout("ScaleCanary", "a"), ("shop", "starting"): rollout("ScaleCanary", "b"),
            ("shop", "no-pods-yet"): rollout("ScaleCanary", "c"), ("shop", "baking"): rollout("Bake", "d"),
            ("shop", "no-canary"): rollout("ScaleCanary", "e"), ("shop", "zero"): rollout("ScaleCanary", "f")}
    canaries = {("shop", "a-canary"): canary(2, 2), ("shop", "b-canary"): canary(2, 1),
                ("shop", "c-canary"): canary(1, None), ("shop", "d-canary"): canary(1, 1),
                ("shop", "f-canary"): canary(0, 0)}

    def peek(resource: str, namespace: str, name: str) -> dict[str, object] | None:
        return (canaries if resource == "deployments" else seen).get((namespace, name))

    monkeypatch.setattr(handlers.CACHE, "peek", peek)
    # Only "ready": its next reconcile starts the wave's analysis. "baking" presses by its decision, if at all.
    assert {name for (_, name) in seen if handlers.canary_ready(("shop", name))} == {"ready"}


def test_the_watch_showing_a_canary_all_ready_moves_its_rollout_s_waiting_reconcile_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {("shop", "release"): {"spec": {"target": {"name": "cart"}}, "status": {"stage": "ScaleCanary"}}}
    canaries = {("shop", "cart-canary"): {"spec": {"replicas": 1}, "status": {"readyReplicas": 1}}}

    def peek(resource: str, namespace: str, name: str) -> dict[str, object] | None:
        return (canaries if resource == "deployments" else seen).get((namespace, name))

    pressed: list[tuple[str, str]] = []
    monkeypatch.setattr(handlers.CACHE, "peek", peek)
    monkeypatch.setattr(handlers._workers, "press", pressed.append)
    monkeypatch.setitem(handlers._targets, ("shop", "release"), "cart")
    asyncio.run(handlers.deployment_changed(namespace="shop", name="cart"))         # the target: no
    asyncio.run(handlers.deployment_changed(namespace="other", name="cart-canary"))  # another namespace: no
    assert pressed == []
    asyncio.run(handlers.deployment_changed(namespace="shop", name="cart-canary"))
    assert pressed == [("shop", "release")]
    canaries[("shop", "cart-canary")]["status"] = {"readyReplicas": 0}             # not all Ready yet: no
    asyncio.run(handlers.deployment_changed(namespace="shop", name="cart-canary"))
    assert pressed == [("shop", "release")]


def test_a_rollout_restoring_its_stable_or_with_a_user_s_request_unhandled_presses_and_its_waiter_moves_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A rollback begun by a replica before this one, or a user's abort arriving while a reconcile waits: its
    next reconcile presses, and one already waiting is moved up. A request already handled does not."""
    from guarded.api.rollout import REQUEST_ANNOTATION

    def rollout(stage: str, asked: str | None = None, handled: str | None = None) -> dict[str, object]:
        meta = {"annotations": {REQUEST_ANNOTATION: f'{{"id": "{asked}", "action": "abort"}}'}} if asked else {}
        status: dict[str, object] = {"stage": stage}
        if handled:
            status["lastRequest"] = {"id": handled, "action": "abort", "result": "Accepted", "time": "t"}
        return {"metadata": meta, "spec": {"target": {"name": "cart"}}, "status": status}

    seen = {("shop", "rolling-back"): rollout("RollingBack"), ("shop", "retiring"): rollout("Retiring"),
            ("shop", "aborted"): rollout("Bake", asked="r2", handled="r1"),
            ("shop", "handled"): rollout("Bake", asked="r1", handled="r1"),
            ("shop", "baking"): rollout("Bake"), ("shop", "done"): rollout("RolledBack")}
    monkeypatch.setattr(handlers.CACHE, "peek", lambda resource, ns, name: seen.get((ns, name)))
    assert {name for (_, name) in seen if handlers.restoring_or_asked(("shop", name))} == {
        "rolling-back", "retiring", "aborted"}

    pressed: list[tuple[str, str]] = []
    monkeypatch.setattr(handlers._workers, "press", pressed.append)
    monkeypatch.setattr(handlers, "_wake", lambda key: None)
    monkeypatch.setattr(handlers, "_seen", {})   # each a first sight: woken
    for name in ("baking", "aborted"):
        asyncio.run(handlers.rollout_changed(namespace="shop", name=name, body=seen[("shop", name)], type=None))
    assert pressed == [("shop", "aborted")]
