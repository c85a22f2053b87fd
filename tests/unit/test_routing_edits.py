"""Routing by weight while someone else changes the route, the Services or the rollout's spec mid-rollout (a sync
from Git, a colleague with kubectl): the canary's requests stay bounded by the wave's weight, the stable Service
selects the stable pods alone while canary pods run, and a rollback always ends with everything as it was.
"""

from __future__ import annotations

from specs import waves
from test_routing import PIN_ANNOTATION, PIN_KEY, routed_world

from guarded.api.stages import Stage


def test_a_pin_taken_off_during_a_bake_is_put_back_before_anything_else() -> None:
    world = routed_world(waves=waves("1%", "10%", "50%", "100%", bake="60s"))
    world.run_until(stage=Stage.BAKE, wave=0)
    stable = world.services["shop"]
    pin = stable["selector"].pop(PIN_KEY)   # a GitOps sync puts the Service back as in Git
    stable["annotations"].pop(PIN_ANNOTATION)
    world.step()
    assert stable["selector"] == {"app": "shop", PIN_KEY: pin}
    assert stable["annotations"] == {PIN_ANNOTATION: world.uid}
    assert world.status.stage == Stage.BAKE


def test_after_a_sync_puts_route_and_service_back_as_in_git_the_weight_returns_only_once_pinned_again() -> None:
    world = routed_world(waves=waves("1%", "10%", "50%", "100%", bake="60s"))
    world.run_until(stage=Stage.BAKE, wave=0)
    stable = world.services["shop"]
    stable["selector"].pop(PIN_KEY)
    stable["annotations"].pop(PIN_ANNOTATION)
    world.rules = [[{"name": "shop", "port": 80}]]
    mark = len(world.trace)
    world.step()
    assert world.trace[mark:] == ["pin"]   # no weight to the canary while the stable Service selects it too
    world.step()
    assert world.trace[mark:] == ["pin", "weight 1"]
    assert world.weights() == {"shop": 99, "shop-canary": 1}


def test_an_httproute_deleted_mid_rollout_rolls_it_back_naming_the_field() -> None:
    world = routed_world(progressDeadline="20s")
    world.run_until(stage=Stage.BAKE, wave=0)
    world.route_exists = False
    world.run_until_done(limit=100)
    assert world.status.stage == Stage.ROLLED_BACK
    assert world.status.rollback_reason == "InvalidTrafficRouting"
    assert any("spec.trafficRouting.httpRoute.name: HTTPRoute 'shop' not found" in h.message
               for h in world.status.history)
    assert "shop-canary" not in world.deployments and "shop-canary" not in world.services
    assert world.services["shop"]["selector"] == {"app": "shop"} and world.services["shop"]["annotations"] == {}


def test_a_rule_inserted_before_the_routed_one_mid_rollout_is_put_back_too_on_a_rollback() -> None:
    world = routed_world()
    world.run_until(stage=Stage.BAKE, wave=1)
    world.rules.insert(0, [{"name": "shop", "port": 80}])   # a new path match, in front of the routed rule
    world.run_for(3)
    assert all(w.get("shop-canary") in (None, 10) for w in
               ({b["name"]: b.get("weight") for b in rule} for rule in world.rules))   # never above the wave's
    world.ask("abort")
    world.run_until_done(limit=100)
    assert world.status.stage == Stage.ROLLED_BACK
    assert world.rules == [[{"name": "shop", "port": 80}], [{"name": "shop", "port": 80}]]
    assert "shop-canary" not in world.services and world.services["shop"]["selector"] == {"app": "shop"}


def test_a_routed_rule_removed_mid_rollout_does_not_stop_the_rollback() -> None:
    world = routed_world()
    world.rules = [[{"name": "shop", "port": 80}], [{"name": "shop", "port": 80}]]
    world.run_until(stage=Stage.BAKE, wave=1)
    assert world.status.traffic is not None and world.status.traffic.rules == [0, 1]
    del world.rules[0]   # a sync from Git drops a rule
    world.ask("abort")
    world.run_until_done(limit=100)
    assert world.status.stage == Stage.ROLLED_BACK
    assert world.trace[-5:] == ["weight 0", "canary deleted", "weight None", "canary service deleted", "unpin"]
    assert world.rules == [[{"name": "shop", "port": 80}]]
