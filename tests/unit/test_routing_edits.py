"""Routing by weight while someone else changes the route, the Services or the rollout's spec mid-rollout (a sync
from Git, a colleague with kubectl): the canary's requests stay bounded by the wave's weight, the stable Service
selects the stable pods alone while canary pods run, and a rollback always ends with everything as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from specs import spec, waves
from test_routing import FOUR_WAVES, PIN_ANNOTATION, PIN_KEY, RoutedWorld, routed_world

from guarded.api.stages import Stage
from guarded.core.actions import SetRouteWeights
from guarded.core.observations import Observations, RouteState


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


def retired(world: RoutedWorld) -> bool:
    return any(h.reason == "Retired" for h in world.status.history)


def test_naming_another_stable_service_mid_rollout_starts_again_on_that_service() -> None:
    world = RoutedWorld(spec(waves=FOUR_WAVES, trafficRouting={"httpRoute": {"name": "shop"}, "service": "shop"}),
                        replicas=4)
    world.rules = [[{"name": "shop", "port": 80}], [{"name": "shop-admin", "port": 80}]]
    world.services["shop-admin"] = {"uid": "uid-svc2", "selector": {"app": "shop"}, "annotations": {}, "owner": None}
    world.run_until(stage=Stage.BAKE, wave=1)
    world.spec = spec(waves=FOUR_WAVES, trafficRouting={"httpRoute": {"name": "shop"}, "service": "shop-admin"})
    world.generation += 1
    world.run_until(predicate=retired)
    world.run_until(stage=Stage.BAKE, wave=1)
    assert world.rules == [[{"name": "shop", "port": 80}],
                           [{"name": "shop-admin", "port": 80, "weight": 90},
                            {"port": 80, "name": "shop-admin-canary", "weight": 10}]]
    assert world.services["shop"]["selector"] == {"app": "shop"} and PIN_KEY in world.services["shop-admin"]["selector"]


@dataclass
class TwoRoutes(RoutedWorld):
    """Two HTTPRoutes to the Service `shop`; the shell reads the one status.traffic names, else the spec's."""

    routes: dict[str, list[list[dict[str, Any]]]] = field(default_factory=lambda: {
        "shop": [[{"name": "shop", "port": 80}]], "shop-v2": [[{"name": "shop", "port": 80}]]})

    def read(self) -> str:
        assert self.spec.traffic_routing is not None
        return (self.status.traffic.route if self.status.traffic else None) or self.spec.traffic_routing.http_route.name

    def observe(self) -> Observations:
        self.rules = self.routes[self.read()]
        obs = super().observe()
        assert obs.routing is not None and obs.routing.route is not None
        route = RouteState(name=self.read(), rules=obs.routing.route.rules)
        return replace(obs, routing=replace(obs.routing, route=route))

    def carry_out(self, action: object) -> None:
        if isinstance(action, SetRouteWeights):
            self.rules = self.routes[action.route]
            super().carry_out(action)
            self.routes[action.route] = self.rules
        else:
            super().carry_out(action)


def test_naming_another_httproute_mid_rollout_puts_the_old_one_back_and_routes_through_the_new_one() -> None:
    world = TwoRoutes(spec(waves=FOUR_WAVES, trafficRouting={"httpRoute": {"name": "shop"}}), replicas=4)
    world.run_until(stage=Stage.BAKE, wave=1)
    world.spec = spec(waves=FOUR_WAVES, trafficRouting={"httpRoute": {"name": "shop-v2"}})
    world.generation += 1
    world.run_until(predicate=retired)
    world.run_until(stage=Stage.BAKE, wave=1)
    assert world.status.traffic is not None and world.status.traffic.route == "shop-v2"
    assert world.routes == {"shop": [[{"name": "shop", "port": 80}]],
                            "shop-v2": [[{"name": "shop", "port": 80, "weight": 90},
                                         {"port": 80, "name": "shop-canary", "weight": 10}]]}


def test_routed_waves_whose_canary_or_weight_would_go_down_hold_the_rollout_naming_spec_waves() -> None:
    # Not routed, 30% then 1 pod runs 1 then 1 canary pod; routed, 2 pods at 30%, then 1 pod at 25%.
    world = routed_world(waves=waves("30%", "1 pod", "100%", bake="3s"))
    world.run_for(3)
    valid = next(c for c in world.status.conditions if c.type == "Valid")
    assert (valid.status, valid.reason) == ("False", "WavesShrinkCanary")
    assert valid.message == ("spec.waves: on 4 replicas the waves run [2, 1, 4] canary pods; each wave must run "
                             "at least as many as the one before")
    assert world.trace == [] and "shop-canary" not in world.deployments
    by_weight = routed_world(waves=waves("2 pods", "30%", "100%", bake="3s"))   # 2 pods at 50%, then 2 at 30%
    by_weight.run_for(3)
    valid = next(c for c in by_weight.status.conditions if c.type == "Valid")
    assert valid.message == ("spec.waves: on 4 replicas the waves send the canary [50, 30, 100]% of the requests; "
                             "each wave must send it at least as much as the one before")
