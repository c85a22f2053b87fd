"""Routing by weight through a Gateway API HTTPRoute (spec.trafficRouting). Pure: values in, actions out.

Without routing a wave's weight is the canary's share of ready pods behind one Service. With it, the
weight is the canary backendRef's weight in the route (the stable's is 100 minus it), so 1% is a real
first wave on 4 pods. Three objects change, each recorded in `status.traffic` when the rollout starts
so that a restarted operator puts back exactly what it changed:

- the canary Service `<service>-canary` (owned by the rollout) selects the canary pods only;
- the stable Service's selector is pinned to the pod-template-hash of the target's current ReplicaSet,
  since the canary pods carry the same app labels and would otherwise be its endpoints too;
- the route's rules that send to the stable Service get a second backendRef, the canary Service.

The order is the safety (docs/traffic-routing.md): pin and canary Service before any canary pod exists;
canary pods Ready before any weight moves to them; on a rollback the weight goes to 0 before anything
else; the pin comes off only once no canary pod is left (or, at promotion, once the canary has passed
every wave); the canary backendRef goes before the Service it names.
"""

from __future__ import annotations

from typing import Any

from guarded.api.common import GROUP, VERSION
from guarded.api.rollout import GuardedRolloutStatus, TrafficStatus
from guarded.core.actions import Action, ApplyService, DeleteService, PinSelector, SetRouteWeights, UnpinSelector
from guarded.core.draft import POLL_SECONDS, Draft, Inputs, current_wave, total
from guarded.core.observations import BackendRef, Observations, RouteState
from guarded.core.route_state import (
    PIN_ANNOTATION,
    PIN_KEY,
    canary_service_name,
    in_force,
    observed_weight,
    owned_canary_service,
    pin_of_ours,
    pinned,
    route_restored,
    routing_of,
    rules_now,
    weights_are,
)
from guarded.core.templates import MANAGED_BY, MANAGED_BY_LABEL, ROLE_LABEL, ROLLOUT_LABEL
from guarded.core.waves import routed_weight

ROUTE_FIELD = "spec.trafficRouting.httpRoute"
SERVICE_FIELD = "spec.trafficRouting.service"


def routed(inp: Inputs) -> bool:
    return inp.spec.traffic_routing is not None


# -- what the route says, and whether this rollout may route through it -----------------------------

def _service_refs(rule: tuple[BackendRef, ...], namespace: str) -> list[BackendRef]:
    return [b for b in rule if b.is_service and b.namespace in (None, namespace)]


def _stable_service(inp: Inputs) -> tuple[str | None, str | None]:
    """The stable Service's name, or why it cannot be told."""
    tr = inp.spec.traffic_routing
    assert tr is not None
    if inp.status.traffic is not None:
        return inp.status.traffic.service, None
    if tr.service is not None:
        return tr.service, None
    route = routing_of(inp.obs).route
    assert route is not None
    ours = {n for n, s in routing_of(inp.obs).services.items() if inp.obs.uid and s.owner_uid == inp.obs.uid}
    names = sorted({b.name for rule in route.rules for b in _service_refs(rule, inp.obs.namespace)} - ours)
    if len(names) == 1:
        return names[0], None
    return None, (f"{SERVICE_FIELD}: HTTPRoute {route.name!r} sends to the Services {names}; name the stable one"
                  if names else f"{ROUTE_FIELD}.name: HTTPRoute {route.name!r} sends to no Service in namespace "
                  f"{inp.obs.namespace!r}")


def problem(inp: Inputs) -> str | None:
    """Why the route cannot carry this rollout's weights (a message naming the field), or None."""
    tr = inp.spec.traffic_routing
    if tr is None:
        return None
    seen, name = routing_of(inp.obs), tr.http_route.name
    if seen.route_error is not None:
        return f"{ROUTE_FIELD}.name: HTTPRoute {name!r} cannot be read: {seen.route_error}"
    if seen.route is None:
        return f"{ROUTE_FIELD}.name: HTTPRoute {name!r} not found in namespace {inp.obs.namespace!r}"
    service, why = _stable_service(inp)
    if service is None:
        return why
    svc = seen.services.get(service)
    if svc is None or svc.deleting:
        return f"{SERVICE_FIELD}: Service {service!r} not found in namespace {inp.obs.namespace!r}"
    if not {k: v for k, v in svc.selector.items() if k != PIN_KEY}:
        return f"{SERVICE_FIELD}: Service {service!r} has no selector; its endpoints cannot be split"
    target = inp.obs.target
    labels = ((target.template.get("metadata") or {}).get("labels") or {}) if target is not None else {}
    unmatched = {k: v for k, v in svc.selector.items() if k != PIN_KEY and labels.get(k) != v}
    if target is not None and unmatched:
        # Pinning a Service that does not select the target's pods would leave it no endpoint at all.
        return (f"{SERVICE_FIELD}: Service {service!r} does not select the pods of Deployment {target.name!r} "
                f"(its selector {unmatched} is not in their labels)")
    pinned_by = svc.annotations.get(PIN_ANNOTATION)
    if pinned_by and pinned_by != inp.obs.uid:
        return f"{SERVICE_FIELD}: Service {service!r} is pinned by another rollout (uid {pinned_by})"
    canary = seen.services.get(canary_service_name(service))
    if canary is not None and canary.owner_uid != inp.obs.uid:
        return (f"{SERVICE_FIELD}: Service {canary.name!r} exists and is not owned by this rollout; it is never "
                "changed: remove or rename it")
    rules = rule_indexes(inp, service)
    if isinstance(rules, str):
        return rules
    for i in rules:
        others = sorted({b.name for b in seen.route.rules[i]} - {service, canary_service_name(service)})
        if others:
            return (f"{ROUTE_FIELD}: rule {i} of HTTPRoute {name!r} also sends to {others}; the waves set weights "
                    f"between Service {service!r} and its canary alone")
    weights = {b.weight for i in rules for b in seen.route.rules[i] if b.name == service}
    if len(weights) > 1 and inp.status.traffic is None:
        # One stable weight is recorded and put back at the end: rules that differ would all get the first one.
        return (f"{ROUTE_FIELD}.ruleIndex: the rules {rules} of HTTPRoute {name!r} give Service {service!r} the "
                f"weights {sorted(weights, key=lambda w: -1 if w is None else w)} (unset is None); name one rule, "
                "or give them one weight")
    if seen.stable_pod_hash is None and inp.status.traffic is None:
        return (f"spec.target.name: the current ReplicaSet of Deployment {inp.spec.target.name!r} was not found "
                "(is it rolling?); the stable Service is pinned to its pods")
    return None


def rule_indexes(inp: Inputs, service: str) -> list[int] | str:
    """The rules whose weights the waves set, or why there are none."""
    tr, route = inp.spec.traffic_routing, routing_of(inp.obs).route
    assert tr is not None and route is not None
    sends = [i for i, rule in enumerate(route.rules) if any(b.name == service for b in
                                                               _service_refs(rule, inp.obs.namespace))]
    index = tr.http_route.rule_index
    if index is None:
        return sends or (f"{SERVICE_FIELD}: HTTPRoute {route.name!r} has no rule that sends to Service {service!r}")
    if index >= len(route.rules):
        return f"{ROUTE_FIELD}.ruleIndex: HTTPRoute {route.name!r} has {len(route.rules)} rules, no rule {index}"
    return [index] if index in sends else (f"{ROUTE_FIELD}.ruleIndex: rule {index} of HTTPRoute {route.name!r} "
                                           f"does not send to Service {service!r}")


def start(inp: Inputs, d: Draft) -> Draft:
    """Record what this rollout will change (called when it starts, after problem() said None)."""
    tr = inp.spec.traffic_routing
    if tr is None:
        return d
    service, _ = _stable_service(inp)
    assert service is not None
    rules = rule_indexes(inp, service)
    assert isinstance(rules, list)
    seen, before = routing_of(inp.obs), inp.status.traffic
    canary = canary_service_name(service)
    route = seen.route
    assert route is not None
    weights = [b.weight for b in route.rules[rules[0]] if b.name == service]
    # A canary backendRef still there is ours from an attempt not yet restored: its stable weight is not the
    # original; the one recorded then is.
    leftover = any(b.name == canary for i in rules for b in route.rules[i])
    stable_weight = before.stable_weight if leftover and before is not None else (weights[0] if weights else None)
    svc = seen.services[service]
    pin = svc.selector.get(PIN_KEY) if svc.annotations.get(PIN_ANNOTATION) == inp.obs.uid else seen.stable_pod_hash
    return d.update(traffic=TrafficStatus(route=route.name, rules=rules, service=service, canary_service=canary,
                                          stable_pin=pin, stable_weight=stable_weight, weight=observed_weight(
                                              d.status, inp.obs)))


def canary_service_manifest(inp: Inputs, status: GuardedRolloutStatus) -> dict[str, Any]:
    t = status.traffic
    assert t is not None
    stable = routing_of(inp.obs).services[t.service]
    selector = {k: v for k, v in stable.selector.items() if k != PIN_KEY}
    selector.update({ROLE_LABEL: "canary", ROLLOUT_LABEL: inp.obs.name})
    ports = [{k: v for k, v in p.items() if k != "nodePort"} for p in stable.ports]
    metadata: dict[str, Any] = {
        "name": t.canary_service, "namespace": inp.obs.namespace,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY, ROLLOUT_LABEL: inp.obs.name, ROLE_LABEL: "canary"},
    }
    if inp.obs.uid:
        metadata["ownerReferences"] = [{
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "GuardedRollout", "name": inp.obs.name,
            "uid": inp.obs.uid, "controller": True, "blockOwnerDeletion": False,
        }]
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata,
            "spec": {"type": "ClusterIP", "selector": selector, "ports": ports}}


# -- the moves ----------------------------------------------------------------------------------------

def prepare(inp: Inputs, d: Draft) -> tuple[Draft, bool]:
    """Before any canary pod exists: the canary Service made, the stable Service pinned to the stable pods.
    True once the cluster shows both."""
    t = d.status.traffic
    if t is None or t.stable_pin is None or inp.obs.uid is None:
        return d, t is None
    manifest = canary_service_manifest(inp, d.status)
    svc = owned_canary_service(d.status, inp.obs)
    ready = svc is not None and not svc.deleting and svc.selector == manifest["spec"]["selector"]
    if not ready and (svc is None or not svc.deleting):
        d = d.act(ApplyService(manifest=manifest))
    if not pinned(d.status, inp.obs):
        d = d.act(PinSelector(service=t.service, key=PIN_KEY, value=t.stable_pin, rollout_uid=inp.obs.uid))
        ready = False
    return d, ready


def repin(inp: Inputs, d: Draft) -> Draft:
    """While canary pods run (a wave, a rollback): the stable Service selects the stable pods alone again
    (someone took the pin off, or a promotion that unpinned it was cut short before its status was written)."""
    t = d.status.traffic
    if t is None or t.stable_pin is None or inp.obs.uid is None or pinned(d.status, inp.obs):
        return d
    if any(isinstance(a, PinSelector) for a in d.actions):
        return d   # already asked for in this decision
    return d.act(PinSelector(service=t.service, key=PIN_KEY, value=t.stable_pin, rollout_uid=inp.obs.uid))


def wave_weight(inp: Inputs, d: Draft) -> int:
    return routed_weight(current_wave(inp, d.status), total(d.status))


def shift(inp: Inputs, d: Draft, weight: int) -> tuple[Draft, bool]:
    """The routed rules at `weight` for the canary; True once the route shows it. Never while the stable
    Service is not pinned (a sync from Git took the pin off): it would send the stable's share to the canary
    pods too, so the pin goes back first."""
    t = d.status.traffic
    if t is None:
        return d, True
    if t.stable_pin is not None and not pinned(d.status, inp.obs):
        return repin(inp, d), False
    if weights_are(d.status, inp.obs, weight):
        return d, True
    return d.act(_weights(t, routing_of(inp.obs).route, weight)), False


def _weights(t: TrafficStatus, route: RouteState | None, canary: int | None) -> SetRouteWeights:
    rules = rules_now(t, route) if route is not None else t.rules
    return SetRouteWeights(route=t.route, rules=tuple(rules), service=t.service, canary_service=t.canary_service,
                           canary_weight=canary, stable_weight=t.stable_weight)


def withdraw_actions(status: GuardedRolloutStatus, obs: Observations) -> tuple[tuple[Action, ...], bool]:
    """Stop sending requests to the canary: its weight to 0. True once the route shows no weight on it."""
    t = in_force(status, obs)
    if t is None or routing_of(obs).route is None or observed_weight(status, obs) == 0:
        return (), True
    return (_weights(t, routing_of(obs).route, 0),), False


def unwind_actions(status: GuardedRolloutStatus, obs: Observations) -> tuple[tuple[Action, ...], bool]:
    """Once no canary pod is left: the route as it was (canary backendRef gone first, then the Service it
    named), the stable Service unpinned. True once the cluster shows all three undone."""
    t = in_force(status, obs)
    if t is None:
        return (), True
    actions: list[Action] = []
    if not route_restored(status, obs):
        actions.append(_weights(t, routing_of(obs).route, None))
    svc = owned_canary_service(status, obs)
    if svc is not None and not svc.deleting and svc.uid is not None:
        actions.append(DeleteService(name=svc.name, uid=svc.uid))
    actions += unpin_actions(status, obs)
    return tuple(actions), not actions and svc is None


def undone(status: GuardedRolloutStatus, obs: Observations) -> bool:
    """Nothing of this rollout's routing is left in force: no canary Deployment (its pods may still be
    terminating while it is being deleted) and the route, the canary Service and the stable's selector as
    they were. Deleting a routed rollout waits for this before its finalizer goes."""
    if in_force(status, obs) is None:
        return True
    return obs.canary is None and unwind_actions(status, obs) == ((), True)


def unpin_actions(status: GuardedRolloutStatus, obs: Observations) -> tuple[Action, ...]:
    t, svc = in_force(status, obs), pin_of_ours(status, obs)
    if t is None or svc is None or obs.uid is None:
        return ()
    return (UnpinSelector(service=t.service, key=PIN_KEY, value=t.stable_pin or "", rollout_uid=obs.uid),)


def with_actions(d: Draft, actions: tuple[Action, ...]) -> Draft:
    for action in actions:
        d = d.act(action)
    return d


def withdraw(inp: Inputs, d: Draft) -> tuple[Draft, bool]:
    actions, done = withdraw_actions(d.status, inp.obs)
    return with_actions(d, actions), done


def unwind(inp: Inputs, d: Draft) -> tuple[Draft, bool]:
    actions, done = unwind_actions(d.status, inp.obs)
    d = with_actions(d, actions)
    return (d.update(traffic=None), True) if done else (d, False)


def unpin(inp: Inputs, d: Draft) -> tuple[Draft, bool]:
    actions = unpin_actions(d.status, inp.obs)
    return with_actions(d, actions), not actions


def tidy(inp: Inputs, d: Draft, *, canary_gone: bool) -> Draft:
    """Waiting to start, or ended: undo what a decision whose status was never written left of routing (its
    weight to 0 first, the rest once no canary pod is left)."""
    if in_force(d.status, inp.obs) is None:
        return d
    d, withdrawn = withdraw(inp, d)
    done = False
    if withdrawn and canary_gone:
        d, done = unwind(inp, d)
    return d if done else d.wait(POLL_SECONDS)


def observed(inp: Inputs, d: Draft) -> Draft:
    """status.traffic.weight as the route shows it now."""
    t = d.status.traffic
    if t is None:
        return d
    weight = observed_weight(d.status, inp.obs)
    return d if weight == t.weight else d.update(traffic=t.model_copy(update={"weight": weight}))
