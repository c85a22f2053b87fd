"""HTTPRoutes as the simulator's data plane: how a route's requests are split among the pods behind it.

No gateway controller runs in the test bed; the simulator plays its part. A route whose backendRefs name
Services takes the requests of the pods behind it (one stream, at the rate those pods say, see
``model.service_rps``), shares them equally among its rules that send to Services, splits each rule's share
among its backendRefs by weight (unset: 1, the Gateway API's default; 0: nothing), and each backend's
share equally among the Service's endpoints: the Ready pods that its selector matches. A backend with no
endpoint answers its share without any pod (a gateway would return 503), so no pod's counters grow for it.

Pure and ordered (routes by namespace and name, pods by key), so that a seed reproduces a run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

PodKey = tuple[str, str]        # (namespace, pod name)
ServiceRef = tuple[str, str]    # (namespace, Service name)


@dataclass(frozen=True)
class Backend:
    service: str
    weight: int | None = None    # None: unset (1)
    namespace: str | None = None  # None: the route's

    @property
    def share(self) -> int:
        return 1 if self.weight is None else max(0, self.weight)


@dataclass(frozen=True)
class RouteObservation:
    namespace: str
    name: str
    rules: tuple[tuple[Backend, ...], ...]   # the Service backendRefs of each rule (other kinds left out)


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    """A Service's equality selector; an empty one selects nothing (its endpoints are managed by hand)."""
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def endpoints(service: ServiceRef, selectors: Mapping[ServiceRef, Mapping[str, str]],
              pods: Mapping[PodKey, Mapping[str, str]]) -> list[PodKey]:
    """The pods (Ready ones are passed in) a Service's selector matches, in key order."""
    selector = selectors.get(service)
    if selector is None:
        return []
    return [k for k in sorted(pods) if k[0] == service[0] and selects(selector, pods[k])]


def routed_rates(routes: Sequence[RouteObservation], selectors: Mapping[ServiceRef, Mapping[str, str]],
                 ready: Mapping[PodKey, Mapping[str, str]], rate_of: Callable[[list[PodKey]], float]
                 ) -> tuple[dict[PodKey, float], set[PodKey]]:
    """Requests per second each Ready pod takes through the routes, and every pod behind any route (those
    take no traffic but the routes'). `ready` maps each Ready pod to its labels; `rate_of` gives a set of
    pods' request rate."""
    rates: dict[PodKey, float] = {}
    behind: set[PodKey] = set()
    for route in sorted(routes, key=lambda r: (r.namespace, r.name)):
        rules = [rule for rule in route.rules if rule]
        members = [[endpoints((b.namespace or route.namespace, b.service), selectors, ready) for b in rule]
                   for rule in rules]
        pods = sorted({k for rule in members for pods in rule for k in pods})
        behind.update(pods)
        if not pods:
            continue
        per_rule = rate_of(pods) / len(rules)
        for rule, rule_members in zip(rules, members, strict=True):
            total = sum(b.share for b in rule)
            if total == 0:
                continue
            for backend, eps in zip(rule, rule_members, strict=True):
                for k in eps:
                    rates[k] = rates.get(k, 0.0) + per_rule * backend.share / total / len(eps)
    return rates, behind


def route_observation(obj: Mapping[str, object]) -> RouteObservation:
    """From an HTTPRoute's JSON body (Service backendRefs only)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    assert isinstance(meta, dict) and isinstance(spec, dict)
    rules = []
    for rule in spec.get("rules") or []:
        refs = tuple(Backend(service=str(b.get("name", "")), weight=b.get("weight"), namespace=b.get("namespace"))
                     for b in rule.get("backendRefs") or []
                     if b.get("kind", "Service") == "Service" and b.get("group", "") in ("", "core"))
        rules.append(refs)
    return RouteObservation(namespace=str(meta.get("namespace", "")), name=str(meta.get("name", "")),
                            rules=tuple(rules))
