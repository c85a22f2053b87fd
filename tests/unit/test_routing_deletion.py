"""Deleting a GuardedRollout routed by weight (handlers/reconcile.clean_up): its finalizer goes only once the
route, the canary Service and the stable Service's selector are as they were.

The canary Deployment is deleted in the foreground, as the API server does it when its pods have to go first:
for a while it is still there, being deleted, and no step is left to take but to wait for it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any

import kopf
import pytest
from test_routing import RoutedWorld, routed_world

from guarded.api.stages import Stage
from guarded.core.actions import Action, DeleteDeployment
from guarded.core.observations import Observations
from guarded.handlers import reconcile


@dataclass
class Deleting:
    """The canary Deployment stays `terminating` ticks after its delete (None: forever), then goes."""

    world: RoutedWorld
    terminating: int | None
    left: int | None = None

    def carry_out(self, action: Action) -> None:
        if isinstance(action, DeleteDeployment) and action.name == "shop-canary":
            self.left = self.terminating   # the Deployment is marked deleting, not gone
            return
        self.world.carry_out(action)

    def observe(self) -> Observations:
        self.world.tick += 1
        if self.left is not None and self.left > 0:
            self.left -= 1
        elif self.left == 0:
            self.world.deployments.pop("shop-canary", None)
            self.left = None
        obs = self.world.observe()
        if self.left is not None and obs.canary is not None:
            obs = replace(obs, canary=replace(obs.canary, deleting=True))
        return obs


def delete(world: RoutedWorld, monkeypatch: pytest.MonkeyPatch, *, terminating: int | None) -> Deleting:
    cluster = Deleting(world, terminating)

    async def observe(client: Any, obj: dict[str, Any], target_name: str, **_: Any) -> Observations:
        return cluster.observe()

    async def apply(client: Any, namespace: str, actions: tuple[Action, ...], **_: Any) -> None:
        for action in actions:
            cluster.carry_out(action)

    monkeypatch.setattr(reconcile, "_observe", observe)
    monkeypatch.setattr(reconcile, "apply_actions", apply)
    monkeypatch.setattr(reconcile, "CLEANUP_PAUSE", 0.0)
    body = {"metadata": {"name": "release", "namespace": "shop", "uid": world.uid},
            "spec": world.spec.model_dump(by_alias=True, exclude_none=True),
            "status": world.status.model_dump(by_alias=True, exclude_none=True, mode="json")}
    asyncio.run(reconcile.clean_up(None, "shop", "release", body))  # type: ignore[arg-type]
    return cluster


def test_deleting_a_routed_rollout_waits_for_its_terminating_canary_then_unpins_the_stable(
        monkeypatch: pytest.MonkeyPatch) -> None:
    world = routed_world()
    world.run_until(stage=Stage.BAKE, wave=1)
    delete(world, monkeypatch, terminating=5)
    assert "shop-canary" not in world.deployments
    assert world.rules == [[{"name": "shop", "port": 80}]]
    assert world.services == {"shop": {"uid": "uid-svc", "selector": {"app": "shop"}, "annotations": {},
                                       "owner": None}}


def test_a_canary_that_never_goes_keeps_the_finalizer_and_the_deletion_is_tried_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    world = routed_world()
    world.run_until(stage=Stage.BAKE, wave=1)
    with pytest.raises(kopf.TemporaryError, match="routing not yet undone"):
        delete(world, monkeypatch, terminating=None)
    assert world.weights() == {"shop": 100, "shop-canary": 0}   # no request reaches the canary meanwhile
