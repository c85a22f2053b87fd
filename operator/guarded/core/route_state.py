"""What routing this rollout has in force, as status.traffic and the observed route and Services show it.

Pure: read by core/routing.py's moves (and through it by the shell), never a move itself. The routing module
holds the order of the moves and why (docs/traffic-routing.md); this one holds what is true now: which rules
carry this rollout's weights, what weight they carry, whether the stable Service carries its pin, and
whether the route is as it was before the rollout.
"""

from __future__ import annotations

from guarded.api.common import GROUP
from guarded.api.rollout import GuardedRolloutStatus, TrafficStatus
from guarded.core.observations import Observations, RouteState, RoutingObservation, ServiceState

PIN_KEY = "pod-template-hash"   # the Deployment controller's label: one value per ReplicaSet
PIN_ANNOTATION = f"{GROUP}/selector-pinned-by"   # on the stable Service: the uid of the rollout that pinned it


def routing_of(obs: Observations) -> RoutingObservation:
    return obs.routing or RoutingObservation()


def canary_service_name(service: str) -> str:
    return f"{service}-canary"


def in_force(status: GuardedRolloutStatus, obs: Observations) -> TrafficStatus | None:
    """What routing this rollout has in force: as status.traffic records it or, when the decision that started
    it never had its status written (the operator stopped in between), as the cluster shows it: the Service
    this rollout's uid pinned (or the one its own canary Service copies), the route's rules that send to that
    canary Service. The stable's weight before is then unknown: it goes back to unset (the default, 1)."""
    if status.traffic is not None:
        return status.traffic
    seen, uid = routing_of(obs), obs.uid
    if uid is None:
        return None
    pinned = sorted(n for n, s in seen.services.items() if s.annotations.get(PIN_ANNOTATION) == uid)
    owned = sorted(n.removesuffix("-canary") for n, s in seen.services.items() if s.owner_uid == uid)
    if not pinned and not owned:
        return None
    service = (pinned or owned)[0]
    canary, route = canary_service_name(service), seen.route
    rules = [i for i, rule in enumerate(route.rules) if any(b.name == canary for b in rule)] if route else []
    svc = seen.services.get(service)
    return TrafficStatus(route=route.name if route else "", rules=rules, service=service, canary_service=canary,
                         stable_pin=svc.selector.get(PIN_KEY) if svc is not None else None, stable_weight=None)


def rules_now(t: TrafficStatus, route: RouteState) -> list[int]:
    """The rules this rollout's weights are on now: the recorded ones the route still has (and that still send
    to the stable Service), and every rule holding the canary backendRef, wherever it is: a rule inserted or
    removed by someone else moves the indexes, and a weight must never be left on a rule nobody looks at."""
    recorded = {i for i in t.rules if i < len(route.rules) and any(b.name == t.service for b in route.rules[i])}
    return sorted(recorded | {i for i, rule in enumerate(route.rules) if any(b.name == t.canary_service
                                                                             for b in rule)})


def observed_weight(status: GuardedRolloutStatus, obs: Observations) -> int | None:
    """The canary backendRef's weight in every routed rule (0 when it is absent, and a recorded rule that is
    gone sends nothing), None when the rules disagree or the route is gone."""
    t, route = in_force(status, obs), routing_of(obs).route
    if t is None or route is None:
        return None
    found = set()
    for i in rules_now(t, route):
        refs = [b for b in route.rules[i] if b.name == t.canary_service]
        found.add((refs[0].weight if refs[0].weight is not None else 1) if refs else 0)
    if not found:
        return 0   # no rule sends anything to the canary
    return found.pop() if len(found) == 1 else None


def weights_are(status: GuardedRolloutStatus, obs: Observations, canary: int) -> bool:
    """Every routed rule sends `canary` to the canary and the rest to the stable."""
    t, route = in_force(status, obs), routing_of(obs).route
    if t is None or route is None or observed_weight(status, obs) != canary:
        return False
    stable = [b.weight for i in rules_now(t, route) for b in route.rules[i] if b.name == t.service]
    return all(w == 100 - canary for w in stable)


def route_restored(status: GuardedRolloutStatus, obs: Observations) -> bool:
    t, route = in_force(status, obs), routing_of(obs).route
    if t is None or route is None:
        return True   # nothing of ours on a route that is gone
    rules = [route.rules[i] for i in rules_now(t, route)]
    return not any(b.name == t.canary_service for rule in rules for b in rule) and all(
        b.weight == t.stable_weight for rule in rules for b in rule if b.name == t.service)


def pinned(status: GuardedRolloutStatus, obs: Observations) -> bool:
    t = in_force(status, obs)
    svc = routing_of(obs).services.get(t.service) if t is not None else None
    return (t is not None and svc is not None and svc.selector.get(PIN_KEY) == t.stable_pin
            and svc.annotations.get(PIN_ANNOTATION) == obs.uid)


def pin_of_ours(status: GuardedRolloutStatus, obs: Observations) -> ServiceState | None:
    """The stable Service while it carries this rollout's pin."""
    t = in_force(status, obs)
    svc = routing_of(obs).services.get(t.service) if t is not None else None
    if t is None or svc is None or obs.uid is None:
        return None
    return svc if svc.annotations.get(PIN_ANNOTATION) == obs.uid else None


def owned_canary_service(status: GuardedRolloutStatus, obs: Observations) -> ServiceState | None:
    """The canary Service, when it exists and is this rollout's."""
    t = in_force(status, obs)
    svc = routing_of(obs).services.get(t.canary_service) if t is not None else None
    return svc if svc is not None and obs.uid is not None and svc.owner_uid == obs.uid else None
