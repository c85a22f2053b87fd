"""A replica acts only on a decision made from the rollout as it still is (split brain, docs/faults.md).

A replica frozen between deciding and acting, while another one took over and moved the rollout on,
wakes up holding its old decision. Its status write would be refused (resourceVersion), but the actions
come before it: so each action is fenced on the rollout still being the object the decision was read from.
"""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from guarded.core.actions import ScaleDeployment
from guarded.core.templates import CLAIM_ANNOTATION
from guarded.handlers.fence import still_as_read
from guarded.kube.act import apply_actions
from guarded.kube.client import Conflict
from guarded.kube.versions import Versions


class Store:
    """The API server's objects for one namespace: a rollout and the target, with resourceVersions."""

    def __init__(self) -> None:
        self.rollout = {"apiVersion": "rollouts.guarded.dev/v1alpha1", "kind": "GuardedRollout",
                        "metadata": {"name": "release", "namespace": "shop", "uid": "u1", "resourceVersion": "10"},
                        "spec": {}, "status": {"stage": "ScaleStable", "wave": 1}}
        self.target = {"metadata": {"name": "shop", "namespace": "shop", "resourceVersion": "20",
                                    "annotations": {CLAIM_ANNOTATION: "release/u1"}},
                       "spec": {"replicas": 2}}
        self.writes: list[dict[str, Any]] = []
        self.versions: Versions | None = None   # the rollouts' version watch (kube/versions), when followed

    async def rollout_version(self, namespace: str, name: str) -> str | None:
        return self.rollout["metadata"]["resourceVersion"]

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.target) if name == "shop" else None

    async def observed_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.get_deployment(namespace, name)   # the watch's copy: here, as it is

    def distrust(self, resource: str, namespace: str, name: str) -> None:
        pass

    async def replace_deployment(self, namespace: str, body: dict[str, Any]) -> None:
        if body["metadata"]["resourceVersion"] != self.target["metadata"]["resourceVersion"]:
            raise Conflict("moved")
        self.writes.append(body)
        self.target = {**body, "metadata": {**body["metadata"], "resourceVersion": "21"}}


def stale_decision_acted(store: Store, *, moved_on: bool) -> None:
    read = copy.deepcopy(store.rollout)  # what the replica decided from
    if moved_on:  # meanwhile another replica wrote the rollout's status (wave 2: the stable at 0)
        store.rollout["metadata"]["resourceVersion"] = "11"
        store.rollout["status"] = {"stage": "Bake", "wave": 2}
        store.target["spec"]["replicas"] = 0
    action = ScaleDeployment(name="shop", replicas=2, rollout_uid="u1")  # the old decision: stable at 2
    asyncio.run(apply_actions(store, "shop", (action,), fence=still_as_read(store, read)))  # type: ignore[arg-type]


def test_a_decision_from_a_rollout_that_moved_on_is_not_acted_on() -> None:
    store = Store()
    with pytest.raises(Conflict, match="moved on"):
        stale_decision_acted(store, moved_on=True)
    assert store.writes == [] and store.target["spec"]["replicas"] == 0, "the later wave's stable stays as it is"


def test_a_decision_from_the_rollout_as_it_is_is_acted_on() -> None:
    store = Store()
    store.target["spec"]["replicas"] = 4
    stale_decision_acted(store, moved_on=False)
    assert store.target["spec"]["replicas"] == 2 and len(store.writes) == 1


def counting_gets(monkeypatch: pytest.MonkeyPatch) -> tuple[Store, list[float], list[float]]:
    """A store whose metadata GETs of the rollout are noted (at the clock's time), and the fence's clock."""
    store, gets, clock = Store(), [], [1000.0]
    real_get = store.rollout_version

    async def counted(namespace: str, name: str) -> str | None:
        gets.append(clock[0])
        return await real_get(namespace, name)

    store.rollout_version = counted  # type: ignore[method-assign]
    monkeypatch.setattr("guarded.handlers.fence.time.monotonic", lambda: clock[0])
    return store, gets, clock


def test_one_check_stands_for_the_actions_that_follow_within_a_second_and_a_freeze_checks_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store, gets, clock = counting_gets(monkeypatch)
    fence = still_as_read(store, copy.deepcopy(store.rollout))  # type: ignore[arg-type]

    asyncio.run(fence())
    clock[0] += 0.4
    asyncio.run(fence())                                   # the same decision's next action: no GET
    assert gets == [1000.0]
    clock[0] += 30.0                                       # frozen between two actions, past any takeover
    store.rollout["metadata"]["resourceVersion"] = "11"    # while another replica moved the rollout on
    with pytest.raises(Conflict, match="moved on"):
        asyncio.run(fence())
    assert gets == [1000.0, 1030.4]


def watched(store: Store, clock: list[float]) -> Versions:
    """A version watch that listed the store's rollout, and a clock for it and the fence."""
    versions = Versions(clock=lambda: clock[0])
    meta = store.rollout["metadata"]
    versions.listed([(meta["namespace"], meta["name"], meta["resourceVersion"])], "10")
    store.versions = versions
    return versions


def test_the_version_watch_vouches_for_a_rollout_only_past_a_fresh_write_of_ours(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No GET while the watch has shown, at the rollout's read version, a status write sent under a second ago;
    a GET as soon as that write is older, the watch shows another version, or it broke off."""
    store, gets, clock = counting_gets(monkeypatch)
    versions = watched(store, clock)
    read = copy.deepcopy(store.rollout)

    asyncio.run(still_as_read(store, read)())   # listed at 10, but no write of ours shown yet: no horizon
    assert gets == [1000.0]

    versions.wrote("12", sent_at=1000.1, after="11")        # our write to another rollout, sent at 1000.1 ...
    clock[0] = 1000.5
    asyncio.run(still_as_read(store, read)())   # ... not yet shown by the watch
    assert gets == [1000.0, 1000.5]
    versions.saw("MODIFIED", "other", "release", "12")    # shown: every change before 1000.1 is known here
    asyncio.run(still_as_read(store, read)())
    assert gets == [1000.0, 1000.5], "vouched for by the watch: no GET"

    clock[0] = 1001.2                           # the write is 1.1 s old: a stopped process, a slow watch
    asyncio.run(still_as_read(store, read)())
    assert gets[-1] == 1001.2

    versions.wrote("14", sent_at=1001.3, after="12")
    versions.saw("MODIFIED", "shop", "release", "13")   # another replica (or a user) wrote the rollout
    versions.saw("BOOKMARK", "", "", "14")
    clock[0] = 1001.4
    store.rollout["metadata"]["resourceVersion"] = "13"
    with pytest.raises(Conflict, match="moved on"):      # the watch shows a later version: refused, unasked
        asyncio.run(still_as_read(store, read)())
    assert gets[-1] == 1001.2

    fresh = copy.deepcopy(store.rollout)
    asyncio.run(still_as_read(store, fresh)())          # decided again from version 13: vouched for
    assert gets[-1] == 1001.2
    versions.lost()                                      # the watch broke off
    asyncio.run(still_as_read(store, fresh)())
    assert gets[-1] == 1001.4 and len(gets) == 4


def test_a_write_that_changed_nothing_vouches_for_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A status write the API server found a no-op answers the rollout's old version: below changes the watch
    may not have shown yet (a replica just woken from a stop, its watch's backlog unread). It sets no horizon."""
    clock = [50.0]
    versions = Versions(clock=lambda: clock[0])
    versions.listed([("shop", "release", "10"), ("shop", "other", "8")], "10")
    versions.wrote("8", sent_at=50.0, after="8")         # no-op: the version it was conditioned on
    assert versions.vouch("shop", "release", "10") is None
    versions.wrote("11", sent_at=50.1, after="8")        # committed: a version above its condition
    versions.saw("MODIFIED", "shop", "other", "11")
    assert versions.vouch("shop", "release", "10") == 50.1
    versions.wrote("12", sent_at=50.2, after=None)       # unconditioned: unknown whether it committed
    versions.saw("MODIFIED", "shop", "other", "12")
    assert versions.vouch("shop", "release", "10") == 50.1


def test_a_write_the_watch_showed_before_its_answer_came_passes_at_once_and_unseen_writes_are_forgotten() -> None:
    clock = [0.0]
    versions = Versions(clock=lambda: clock[0])
    versions.listed([("shop", "release", "5")], "5")
    versions.saw("MODIFIED", "shop", "release", "7")   # the watch was quicker than the write's answer
    versions.wrote("7", sent_at=0.0, after="5")
    assert versions.vouch("shop", "release", "7") == 0.0
    versions.wrote("9", sent_at=0.5, after="7")        # never shown (the watch broke off after it)
    versions.wrote("10", sent_at=0.6, after="9")
    clock[0] = 100.0
    versions.wrote("11", sent_at=99.0, after="10")     # the pruning pass forgets writes older than a minute
    assert [rv for rv, _ in versions._sent] == [11]
    versions.saw("MODIFIED", "shop", "release", "11")
    assert versions.vouch("shop", "release", "11") == 99.0
    versions.saw("DELETED", "shop", "release", "12")
    assert versions.vouch("shop", "release", "11") is None and len(versions) == 0


def test_a_watch_stream_cut_anywhere_gives_its_events_whole() -> None:
    from guarded.kube.versions import _lines

    body = b'{"type":"ADDED","n":1}\n{"type":"MODIFIED","n":2}\n\n{"type":"BOOKMARK","n":3}\n{"type":"DELETED"}'

    class Resp:
        def __init__(self, cut: int) -> None:
            self.chunks = [body[i:i + cut] for i in range(0, len(body), cut)]

        def stream(self, amt: int, decode_content: bool) -> list[bytes]:
            return self.chunks

    want = [b'{"type":"ADDED","n":1}', b'{"type":"MODIFIED","n":2}', b'{"type":"BOOKMARK","n":3}',
            b'{"type":"DELETED"}']
    for cut in (1, 2, 7, 23, len(body)):
        assert list(_lines(Resp(cut))) == want, cut


def test_the_watch_s_lag_is_told_for_each_write_of_ours_it_shows() -> None:
    clock, lags = [10.0], []
    versions = Versions(clock=lambda: clock[0], lag=lags.append)
    versions.listed([], "1")
    versions.wrote("3", sent_at=9.0, after="2")
    versions.wrote("5", sent_at=9.5, after="4")
    clock[0] = 12.0
    versions.saw("MODIFIED", "shop", "release", "4")    # past the first write only
    assert lags == [3.0]
    versions.saw("BOOKMARK", "", "", "6")
    assert lags == [3.0, 2.5] and versions.vouch("shop", "release", "4") == 9.5
