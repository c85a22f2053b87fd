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


def test_one_check_stands_for_the_actions_that_follow_within_a_second_and_a_freeze_checks_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    store, gets, clock = Store(), [], [1000.0]
    real_get = store.rollout_version

    async def counted(namespace: str, name: str) -> str | None:
        gets.append(clock[0])
        return await real_get(namespace, name)

    store.rollout_version = counted  # type: ignore[method-assign]
    monkeypatch.setattr("guarded.handlers.fence.time.monotonic", lambda: clock[0])
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
