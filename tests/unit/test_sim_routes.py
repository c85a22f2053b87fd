"""The simulator honours HTTPRoutes (guarded.sim.routes): a route's requests split by its weights, then equally
among each backend Service's Ready endpoints; pods behind no route keep sharing their app's rate."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

import pytest

from guarded.sim.kube import ClusterReader, Informer
from guarded.sim.model import ENABLED, RPS, Observation, PodObservation, Simulation
from guarded.sim.observe import observation, with_routes
from guarded.sim.routes import Backend, RouteObservation, routed_rates

TICK = 0.5
STABLE = {"app": "shop", "pod-template-hash": "old"}
CANARY = {"app": "shop", "pod-template-hash": "new", "rollouts.guarded.dev/role": "canary"}
SELECTORS = {("shop", "shop"): {"app": "shop", "pod-template-hash": "old"},
             ("shop", "shop-canary"): {"app": "shop", "rollouts.guarded.dev/role": "canary"}}


def pod(name: str, labels: dict[str, str], *, ready: bool = True, rps: str | None = None) -> PodObservation:
    annotations = {ENABLED: "true", **({RPS: rps} if rps else {})}
    return PodObservation("shop", name, labels.get("app", ""), ready, annotations=annotations, labels=labels)


def route(*rules: tuple[Backend, ...]) -> RouteObservation:
    return RouteObservation("shop", "shop", tuple(rules))


def shop(canary_weight: int | None, *, canary_ready: bool = True) -> Observation:
    pods = (*tuple(pod(f"s{i}", STABLE) for i in range(4)), pod("c0", CANARY, ready=canary_ready))
    rules = ((Backend("shop"),) if canary_weight is None else
             (Backend("shop", 100 - canary_weight), Backend("shop-canary", canary_weight)),)
    return Observation(pods, routes=(route(*rules),), service_selectors=SELECTORS)


def rates(obs: Observation) -> dict[str, float]:
    ready = {p.key: p.labels for p in obs.pods if p.ready}
    got, _ = routed_rates(obs.routes, obs.service_selectors, ready, lambda keys: 100.0)
    return {k[1]: round(v, 6) for k, v in got.items()}


@pytest.mark.parametrize(("weight", "canary_share"), [(1, 0.01), (10, 0.10), (50, 0.5), (100, 1.0), (0, 0.0)])
def test_a_routes_weights_give_the_canary_service_exactly_its_share(weight: int, canary_share: float) -> None:
    got = rates(shop(weight))
    assert got.get("c0", 0.0) == pytest.approx(100 * canary_share)
    assert sum(got.values()) == pytest.approx(100.0)
    assert [got.get(f"s{i}", 0.0) for i in range(4)] == pytest.approx([100 * (1 - canary_share) / 4] * 4)


def test_an_unset_weight_is_one_and_a_backend_without_endpoints_answers_its_share_without_a_pod() -> None:
    obs = Observation(shop(None).pods, routes=(route((Backend("shop"), Backend("shop-canary", 1))),),
                      service_selectors=SELECTORS)
    assert rates(obs)["c0"] == pytest.approx(50.0)
    unready = rates(shop(50, canary_ready=False))
    assert "c0" not in unready and sum(unready.values()) == pytest.approx(50.0)


def test_a_pod_two_backends_select_takes_requests_from_both() -> None:
    selectors = {**SELECTORS, ("shop", "shop"): {"app": "shop"}}    # unpinned: it selects the canary pod too
    obs = Observation(shop(50).pods, routes=shop(50).routes, service_selectors=selectors)
    got = rates(obs)
    assert got["c0"] == pytest.approx(50 + 50 / 5) and got["s0"] == pytest.approx(10.0)


def test_rules_share_the_routes_requests_equally() -> None:
    obs = Observation(shop(None).pods, routes=(route((Backend("shop"),), (Backend("shop-canary"),)),),
                      service_selectors=SELECTORS)
    assert rates(obs)["c0"] == pytest.approx(50.0)


def test_the_measured_canary_share_follows_the_weight_and_pods_behind_no_route_keep_their_apps_rate() -> None:
    other = tuple(PodObservation("shop", f"o{i}", "other", True, annotations={ENABLED: "true"},
                                 labels={"app": "other"}) for i in range(2))
    base = shop(1)
    obs = Observation(base.pods + other, routes=base.routes, service_selectors=base.service_selectors)
    sim = Simulation(seed=5, default_rps=1000)
    for _ in range(200):   # 100 s at 1000 rps through the route
        sim.step(obs, TICK)
    series = {s.pod: s.requests for s in sim.snapshot().pods}
    routed = sum(series[n] for n in ("s0", "s1", "s2", "s3", "c0"))
    assert abs(series["c0"] / routed - 0.01) < 0.002          # 1% within Poisson noise of 1,000 requests
    assert series["o0"] + series["o1"] == pytest.approx(100_000, rel=0.02)   # the other app: unchanged


def test_the_same_seed_and_observations_give_the_same_counters() -> None:
    def run() -> list[Any]:
        sim = Simulation(seed=9)
        for w in (1, 1, 10, 50, 0):
            sim.step(shop(w), TICK)
        return list(sim.snapshot().pods)

    assert run() == run()


def test_routes_and_service_selectors_are_read_from_the_api_bodies() -> None:
    routes = {"items": [{"metadata": {"namespace": "shop", "name": "shop"}, "spec": {"rules": [{"backendRefs": [
        {"name": "shop", "port": 80, "weight": 99}, {"name": "shop-canary", "port": 80, "weight": 1},
        {"kind": "ServiceImport", "group": "multicluster.x-k8s.io", "name": "far"}]}]}}]}
    services = {"items": [{"metadata": {"namespace": "shop", "name": "shop"}, "spec": {"selector": STABLE}}]}
    obs = with_routes(Observation(()), routes, services)
    assert obs.routes == (route((Backend("shop", 99), Backend("shop-canary", 1))),)
    assert obs.service_selectors == {("shop", "shop"): STABLE}
    pods = {"items": [{"metadata": {"namespace": "shop", "name": "p", "labels": STABLE}, "status": {}}]}
    assert observation(pods, {"items": []}).pods[0].labels == STABLE


class Fake:
    def __init__(self, bodies: dict[str, Any]) -> None:
        self.bodies, self.calls = bodies, []  # type: dict[str, Any], list[str]

    def __getattr__(self, call: str) -> Any:
        def answer(*_: Any, **__: Any) -> SimpleNamespace:
            self.calls.append(call)
            return SimpleNamespace(data=json.dumps(self.bodies[call]).encode())
        return answer


def test_services_are_listed_only_when_there_is_a_route() -> None:
    reader = ClusterReader.__new__(ClusterReader)
    reader.label_selector, reader.timeout = "app", 1.0
    reader.core = core = Fake({"list_pod_for_all_namespaces": {"items": []}, "list_namespace": {"items": []},  # type: ignore[assignment]
                               "list_service_for_all_namespaces": {"items": []}})
    reader.custom = Fake({"list_cluster_custom_object": {"items": []}})  # type: ignore[assignment]
    reader.pods = Informer("pods", core.list_pod_for_all_namespaces, 1.0)
    reader.namespaces = Informer("namespaces", core.list_namespace, 1.0)
    reader.pods.relist()
    reader.namespaces.relist()
    reader.observe()
    assert "list_service_for_all_namespaces" not in core.calls
    reader.custom = Fake({"list_cluster_custom_object": {"items": [  # type: ignore[assignment]
        {"metadata": {"namespace": "shop", "name": "r"}, "spec": {"rules": []}}]}})
    assert reader.observe().routes == (RouteObservation("shop", "r", ()),)
    assert "list_service_for_all_namespaces" in core.calls


def test_a_pod_of_a_routed_app_that_no_backend_selects_takes_no_requests() -> None:
    """A canary whose Service is not in the route yet: no Service's endpoint, so no requests."""
    base = shop(None)
    sim = Simulation(seed=2)
    for _ in range(20):
        sim.step(base, TICK)
    series = {s.pod: s.requests for s in sim.snapshot().pods}
    assert series["c0"] == 0 and sum(series.values()) > 0
