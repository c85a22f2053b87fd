"""Routing by weight through an HTTPRoute (core/routing.py, kube/routing.set_weights): the engine driven on plain
data, with the route and the Services modelled next to the fake Deployments of tests/unit/world.py.

Each story checks what a user of a Gateway would notice: the weights each wave sets, the pods each weight
runs, and the order of the moves that keep requests off pods that are not meant to have them.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from specs import spec, waves
from world import World

from guarded.api.rollout import Wave
from guarded.api.stages import Stage
from guarded.core.actions import (
    ApplyCanary,
    ApplyService,
    DeleteDeployment,
    DeleteService,
    PinSelector,
    PromoteTarget,
    ReleaseTarget,
    SetRouteWeights,
    UnpinSelector,
)
from guarded.core.engine import Decision, decide_cleanup
from guarded.core.observations import BackendRef, Observations, RouteState, RoutingObservation, ServiceState
from guarded.core.routing import PIN_ANNOTATION, PIN_KEY
from guarded.core.waves import routed_canary_replicas, routed_weight
from guarded.kube.routing import set_weights

ROUTING = {"httpRoute": {"name": "shop"}}
FOUR_WAVES = waves("1%", "10%", "50%", "100%", bake="3s")


@pytest.mark.parametrize(("weight", "replicas", "pods"), [
    (1, 4, 1), (10, 4, 1), (50, 4, 2), (100, 4, 4),
    (1, 10, 1), (10, 10, 1), (11, 10, 2), (50, 10, 5), (100, 10, 10),
    (50, 3, 2), (34, 3, 2), (33, 3, 1), (1, 1, 1),
])
def test_a_weight_runs_enough_canary_pods_to_take_it_at_the_stables_load(weight: int, replicas: int,
                                                                        pods: int) -> None:
    wave = Wave(weight=weight)
    assert routed_canary_replicas(wave, replicas) == pods
    assert routed_weight(wave, replicas) == weight


@pytest.mark.parametrize(("count", "replicas", "weight"), [(1, 4, 25), (1, 10, 10), (3, 4, 75), (1, 300, 1),
                                                           (9, 4, 100)])
def test_a_replicas_wave_sets_its_pods_share_as_the_weight(count: int, replicas: int, weight: int) -> None:
    assert routed_weight(Wave(replicas=count), replicas) == weight


@dataclass
class RoutedWorld(World):
    """World plus an HTTPRoute `shop` (one rule, to the Service `shop`) and the namespace's Services."""

    rules: list[list[dict[str, Any]]] = field(default_factory=lambda: [[{"name": "shop", "port": 80}]])
    services: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "shop": {"uid": "uid-svc", "selector": {"app": "shop"}, "annotations": {}, "owner": None}})
    route_exists: bool = True
    trace: list[str] = field(default_factory=list)   # what the cluster saw done, in order

    def observe(self) -> Observations:
        obs = super().observe()
        route = RouteState(name="shop", rules=tuple(tuple(BackendRef(name=b["name"], port=b.get("port"),
                                                                     weight=b.get("weight")) for b in rule)
                                                    for rule in self.rules)) if self.route_exists else None
        services = {n: ServiceState(name=n, uid=s["uid"], owner_uid=s["owner"], selector=dict(s["selector"]),
                                    annotations=dict(s["annotations"]), ports=({"port": 80},))
                    for n, s in self.services.items()}
        target = self.deployments.get("shop")
        pod_hash = f"h-{self.template_hash(target.template)[:8]}" if target else None
        return replace(obs, routing=RoutingObservation(route=route, services=services, stable_pod_hash=pod_hash))

    def carry_out(self, action: object) -> None:
        if isinstance(action, SetRouteWeights):
            body = {"spec": {"rules": [{"backendRefs": rule} for rule in self.rules]}}
            changed = set_weights(copy.deepcopy(body), action)
            if changed is not None:
                self.rules = [r["backendRefs"] for r in changed["spec"]["rules"]]
                self.trace.append(f"weight {action.canary_weight}")
        elif isinstance(action, ApplyService):
            m = action.manifest
            self.services.setdefault(m["metadata"]["name"], {
                "uid": "uid-canary-svc", "annotations": {}, "owner": m["metadata"]["ownerReferences"][0]["uid"]},
            )["selector"] = dict(m["spec"]["selector"])
            self.trace.append("canary service")
        elif isinstance(action, DeleteService):
            if self.services.get(action.name, {}).get("uid") == action.uid:
                del self.services[action.name]
                self.trace.append("canary service deleted")
        elif isinstance(action, PinSelector):
            s = self.services[action.service]
            assert s["annotations"].get(PIN_ANNOTATION) in (None, action.rollout_uid)
            s["selector"][action.key] = action.value
            s["annotations"][PIN_ANNOTATION] = action.rollout_uid
            self.trace.append("pin")
        elif isinstance(action, UnpinSelector):
            s = self.services[action.service]
            if s["annotations"].get(PIN_ANNOTATION) == action.rollout_uid:
                s["selector"].pop(action.key, None)
                del s["annotations"][PIN_ANNOTATION]
                self.trace.append("unpin")
        else:
            before = self.deployments.get("shop-canary")
            replicas = before.replicas if before else None
            super().carry_out(action)
            if isinstance(action, ApplyCanary) and action.replicas != replicas:
                self.trace.append(f"canary {action.replicas}")
            elif isinstance(action, DeleteDeployment) and action.name == "shop-canary":
                self.trace.append("canary deleted")
            elif isinstance(action, PromoteTarget):
                self.trace.append("promote")

    def weights(self) -> dict[str, int | None]:
        return {b["name"]: b.get("weight") for b in self.rules[0]}

    def canary_pods(self) -> int:
        c = self.deployments.get("shop-canary")
        return c.replicas if c else 0


def routed_world(**spec_fields: Any) -> RoutedWorld:
    fields = {"waves": FOUR_WAVES, "trafficRouting": ROUTING, **spec_fields}
    return RoutedWorld(spec(**fields), replicas=4)


def test_a_release_goes_1_10_50_100_percent_by_weight_on_four_pods_and_puts_everything_back() -> None:
    world = routed_world()
    seen = []
    for wave in range(4):
        world.run_until(stage=Stage.BAKE, wave=wave)
        seen.append((world.weights(), world.canary_pods(), world.deployments["shop"].replicas,
                     world.status.canary_weight))
        assert world.services["shop"]["selector"][PIN_KEY].startswith("h-")
        assert world.services["shop-canary"]["selector"] == {"app": "shop", "rollouts.guarded.dev/role": "canary",
                                                             "rollouts.guarded.dev/rollout": "release"}
    assert seen == [({"shop": 99, "shop-canary": 1}, 1, 4, 1), ({"shop": 90, "shop-canary": 10}, 1, 4, 10),
                    ({"shop": 50, "shop-canary": 50}, 2, 4, 50), ({"shop": 0, "shop-canary": 100}, 4, 4, 100)]
    world.run_until_done()
    assert world.status.stage == Stage.SUCCEEDED
    assert world.rules == [[{"name": "shop", "port": 80}]]          # the route as it was, weight unset again
    assert world.services == {"shop": {"uid": "uid-svc", "selector": {"app": "shop"}, "annotations": {},
                                       "owner": None}}
    assert "shop-canary" not in world.deployments and world.status.traffic is None
    # Pin before any canary pod; a weight only on Ready pods; promotion unpins first and gives the stable its
    # weight back before the canary goes, and the canary backendRef goes before its Service.
    assert world.trace[:3] == ["canary service", "pin", "canary 1"]
    tail = world.trace[world.trace.index("unpin"):]
    assert tail == ["unpin", "promote", "weight 0", "canary deleted", "weight None", "canary service deleted"]


def test_the_stable_keeps_its_pods_and_a_weight_moves_only_onto_ready_canary_pods() -> None:
    world = routed_world()
    world.ready_delay = 3

    def check(w: World, _: Decision) -> None:
        assert isinstance(w, RoutedWorld)
        assert w.deployments["shop"].replicas == 4
        canary = w.deployments.get("shop-canary")
        weight = w.weights().get("shop-canary") or 0
        if weight:
            assert canary is not None and len(canary.ready_pods(w.tick)) >= routed_canary_replicas(
                Wave(weight=weight), 4)

    world.run_until(stage=Stage.PROMOTE, each=check)


def test_a_rollback_at_one_percent_sets_the_weight_to_0_before_anything_else() -> None:
    world = routed_world()
    world.run_until(stage=Stage.BAKE, wave=0)
    assert world.weights() == {"shop": 99, "shop-canary": 1}
    mark = len(world.trace)
    world.ask("abort")
    world.run_until_done()
    assert world.status.stage == Stage.ROLLED_BACK
    assert world.trace[mark:] == ["weight 0", "canary deleted", "weight None", "canary service deleted", "unpin"]
    assert world.rules == [[{"name": "shop", "port": 80}]]
    assert world.services["shop"]["selector"] == {"app": "shop"} and "shop-canary" not in world.services


def test_a_stable_weight_set_before_the_rollout_is_put_back() -> None:
    world = routed_world()
    world.rules = [[{"name": "shop", "port": 80, "weight": 7}]]
    world.run_until(stage=Stage.BAKE, wave=1)
    assert world.weights() == {"shop": 90, "shop-canary": 10}
    world.run_until_done()
    assert world.rules == [[{"name": "shop", "port": 80, "weight": 7}]]


def test_a_killed_operator_resumes_a_rollback_from_any_step() -> None:
    """The operator stops after acting and before writing status, at each step in turn: it resumes."""
    for crash_at in range(1, 8):
        world = routed_world()
        world.run_until(stage=Stage.BAKE, wave=2)
        world.ask("abort")
        for _ in range(crash_at):
            world.step(persist=False)
        world.run_until_done()
        assert world.status.stage == Stage.ROLLED_BACK, crash_at
        assert world.rules == [[{"name": "shop", "port": 80}]], crash_at
        assert world.services["shop"]["selector"] == {"app": "shop"}, crash_at
        assert world.trace.index("weight 0") < world.trace.index("canary deleted"), crash_at


@pytest.mark.parametrize(("change", "field_named"), [
    (lambda w: setattr(w, "route_exists", False), "spec.trafficRouting.httpRoute.name: HTTPRoute 'shop' not found"),
    (lambda w: setattr(w, "rules", [[{"name": "cart"}]]), "spec.trafficRouting.service: Service 'cart' not found"),
    (lambda w: setattr(w, "rules", [[{"name": "shop"}, {"name": "cart"}]]), "spec.trafficRouting.service: "
     "HTTPRoute 'shop' sends to the Services ['cart', 'shop']"),
    (lambda w: w.services.__setitem__("shop-canary", {"uid": "x", "selector": {"a": "b"}, "annotations": {},
                                                      "owner": None}),
     "spec.trafficRouting.service: Service 'shop-canary' exists and is not owned by this rollout"),
    (lambda w: w.services["shop"]["annotations"].__setitem__(PIN_ANNOTATION, "uid-other"),
     "spec.trafficRouting.service: Service 'shop' is pinned by another rollout"),
    # Another app's Service the route sends to: pinned, it would select no pod at all.
    (lambda w: w.services["shop"].__setitem__("selector", {"app": "cart"}),
     "spec.trafficRouting.service: Service 'shop' does not select the pods of Deployment 'shop' (its selector "
     "{'app': 'cart'} is not in their labels)"),
    # One stable weight is recorded and put back: a rule switched off (weight 0) would come back switched on.
    (lambda w: setattr(w, "rules", [[{"name": "shop", "port": 80}], [{"name": "shop", "port": 80, "weight": 0}]]),
     "spec.trafficRouting.httpRoute.ruleIndex: the rules [0, 1] of HTTPRoute 'shop' give Service 'shop' the "
     "weights [None, 0]"),
])
def test_a_route_that_cannot_carry_the_weights_holds_the_rollout_naming_the_field(change: Any,
                                                                                 field_named: str) -> None:
    world = routed_world()
    change(world)
    world.run_for(5)
    valid = next(c for c in world.status.conditions if c.type == "Valid")
    assert (valid.status, valid.reason) == ("False", "InvalidTrafficRouting")
    assert valid.message.startswith(field_named)
    assert world.status.stage == Stage.PENDING and "shop-canary" not in world.deployments
    assert world.trace == []   # nothing half-applied


def test_a_rule_index_names_the_one_rule_whose_weights_move() -> None:
    world = routed_world(trafficRouting={"httpRoute": {"name": "shop", "ruleIndex": 1}})
    world.rules = [[{"name": "shop"}], [{"name": "shop"}]]
    world.run_until(stage=Stage.BAKE, wave=2)
    assert world.rules == [[{"name": "shop"}], [{"name": "shop", "weight": 50}, {"name": "shop-canary",
                                                                                  "weight": 50}]]
    bad = routed_world(trafficRouting={"httpRoute": {"name": "shop", "ruleIndex": 3}})
    bad.run_for(3)
    valid = next(c for c in bad.status.conditions if c.type == "Valid")
    assert valid.message == "spec.trafficRouting.httpRoute.ruleIndex: HTTPRoute 'shop' has 1 rules, no rule 3"


def test_deleting_a_routed_rollout_takes_the_weight_off_the_canary_first() -> None:
    world = routed_world()
    world.run_until(stage=Stage.BAKE, wave=1)
    def kinds(actions: tuple[object, ...]) -> list[type]:
        return [type(a) for a in actions if not isinstance(a, ReleaseTarget)]

    first = decide_cleanup(world.status, world.observe())
    assert kinds(first) == [SetRouteWeights]
    world.apply(Decision(actions=first, status=world.status, events=(), requeue_after=None))
    second = decide_cleanup(world.status, world.observe())
    assert kinds(second) == [DeleteDeployment]
    world.apply(Decision(actions=second, status=world.status, events=(), requeue_after=None))
    third = decide_cleanup(world.status, world.observe())
    assert kinds(third) == [SetRouteWeights, DeleteService, UnpinSelector]
    world.apply(Decision(actions=third, status=world.status, events=(), requeue_after=None))
    assert kinds(decide_cleanup(world.status, world.observe())) == []
    assert world.rules == [[{"name": "shop", "port": 80}]] and world.services["shop"]["selector"] == {"app": "shop"}


def test_set_weights_adds_the_canary_backend_ref_beside_the_stable_one_and_removes_it_again() -> None:
    route = {"spec": {"rules": [{"backendRefs": [{"name": "shop", "port": 80}]}]}}
    action = SetRouteWeights(route="shop", rules=(0,), service="shop", canary_service="shop-canary",
                             canary_weight=1, stable_weight=None)
    routed = set_weights(copy.deepcopy(route), action)
    assert routed is not None
    assert routed["spec"]["rules"][0]["backendRefs"] == [{"name": "shop", "port": 80, "weight": 99},
                                                         {"port": 80, "name": "shop-canary", "weight": 1}]
    assert set_weights(copy.deepcopy(routed), action) is None   # absolute: a second time changes nothing
    back = set_weights(routed, replace(action, canary_weight=None))
    assert back == route


def test_weight_0_and_the_canary_ref_removed_reach_every_rule_holding_the_canary_whatever_its_index() -> None:
    canary = {"name": "shop-canary", "port": 80, "weight": 10}
    route = {"spec": {"rules": [{"backendRefs": [{"name": "shop", "port": 80}]},
                                {"backendRefs": [{"name": "shop", "port": 80, "weight": 90}, dict(canary)]}]}}
    action = SetRouteWeights(route="shop", rules=(0,), service="shop", canary_service="shop-canary",
                             canary_weight=0, stable_weight=None)   # decided before a rule 0 was inserted
    withdrawn = set_weights(copy.deepcopy(route), action)
    assert withdrawn is not None
    assert [r["backendRefs"] for r in withdrawn["spec"]["rules"]] == [
        [{"name": "shop", "port": 80}], [{"name": "shop", "port": 80, "weight": 100}, {**canary, "weight": 0}]]
    restored = set_weights(withdrawn, replace(action, canary_weight=None))
    assert restored is not None
    assert [r["backendRefs"] for r in restored["spec"]["rules"]] == [[{"name": "shop", "port": 80}]] * 2


def test_removing_traffic_routing_mid_rollout_retires_the_canary_and_undoes_the_routing() -> None:
    world = routed_world()
    world.run_until(stage=Stage.BAKE, wave=2)
    world.spec = spec(waves=FOUR_WAVES)   # the user deletes spec.trafficRouting
    world.generation += 1
    world.run_until(predicate=lambda w: any(h.reason == "Retired" for h in w.status.history))
    assert world.trace.index("weight 0") < world.trace.index("canary deleted")
    assert world.rules == [[{"name": "shop", "port": 80}]]
    assert world.services["shop"]["selector"] == {"app": "shop"} and "shop-canary" not in world.services
    assert world.status.traffic is None


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(delay=st.integers(1, 4), jitter=st.integers(0, 3), abort_at=st.integers(0, 80) | st.none(),
       crashes=st.sets(st.integers(0, 120), max_size=12), seed=st.integers(0, 1000))
def test_requests_reach_only_ready_canary_pods_while_the_stable_is_pinned_and_everything_is_undone(
        delay: int, jitter: int, abort_at: int | None, crashes: set[int], seed: int) -> None:
    """Random readiness delays, an abort at any tick and crashes before any status write: a weight above 0
    only on Ready canary pods of the wave's size, the stable Service pinned whenever a canary pod exists,
    the stable never below its count, and at the end the route and the Services as they were."""
    world = RoutedWorld(spec(waves=FOUR_WAVES, trafficRouting=ROUTING), replicas=4, ready_delay=delay,
                        jitter=jitter, seed=seed)
    for tick in range(400):
        if abort_at is not None and tick == abort_at:
            world.ask("abort")
        stage = world.step(persist=tick not in crashes).status.stage   # where the decision went (even unwritten)
        canary = world.deployments.get("shop-canary")
        weight = world.weights().get("shop-canary") or 0
        if weight and stage not in (Stage.PROMOTE, Stage.CLEANUP):
            assert canary is not None
            assert len(canary.ready_pods(world.tick)) >= routed_canary_replicas(Wave(weight=weight), 4) or (
                stage == Stage.ROLLING_BACK)
        if canary is not None and stage not in (Stage.PROMOTE, Stage.CLEANUP):
            assert world.services["shop"]["selector"].get(PIN_KEY), "a canary pod exists: the stable is pinned"
        assert world.deployments["shop"].replicas == 4
        if world.status.stage in (Stage.SUCCEEDED, Stage.ROLLED_BACK):
            break
    assert world.status.stage in (Stage.SUCCEEDED, Stage.ROLLED_BACK)
    assert world.rules == [[{"name": "shop", "port": 80}]]
    assert world.services["shop"]["selector"] == {"app": "shop"} and "shop-canary" not in world.services
    assert "shop-canary" not in world.deployments
