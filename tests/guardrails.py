"""Helpers for the guardrail journeys: policies, users acting in a namespace, approvals."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import kubernetes
from kubernetes.client.rest import ApiException

from rollouts import GROUP, PLURAL, VERSION, Shop, guarded_rollout, shop_deployment
from testbed import Cluster
from waiting import eventually

POLICIES, APPROVALS = "rolloutpolicies", "rolloutapprovals"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_now(seconds: float) -> str:
    return rfc3339(datetime.now(UTC) + timedelta(seconds=seconds))


def passed(moment: str) -> bool:
    return datetime.now(UTC) >= datetime.fromisoformat(moment.replace("Z", "+00:00"))


class Team:
    """A namespace where the engineers may work (group engineers bound to the `edit` role)."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.label = f"policy-{secrets.token_hex(3)}"
        rbac = kubernetes.client.RbacAuthorizationV1Api(cluster.api())
        rbac.create_namespaced_role_binding(namespace, {
            "metadata": {"name": "engineers-edit"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "engineers"}],
        })
        core = kubernetes.client.CoreV1Api(cluster.api())
        core.patch_namespace(namespace, {"metadata": {"labels": {"guarded.dev/policy": self.label}}})
        # The aggregated `edit` role reaches the engineers once RBAC has caught up.
        eventually(lambda: self.can("alice", "create", "guardedrollouts") and self.can("bob", "create", APPROVALS),
                   timeout=30, what="engineers may create rollouts and approvals")

    def can(self, user: str, verb: str, resource: str) -> bool:
        out = self.cluster.kubectl("auth", "can-i", verb, f"{resource}.{GROUP}", "-n", self.namespace,
                                   user=user, check=False)
        return out.stdout.strip() == "yes"

    def custom(self, user: str = "admin") -> kubernetes.client.CustomObjectsApi:
        return kubernetes.client.CustomObjectsApi(self.cluster.api(user))

    def shop(self, name: str = "shop", replicas: int = 4, labels: dict[str, str] | None = None) -> Shop:
        shop = Shop(self.cluster, self.namespace, name)
        body = shop_deployment(name, replicas)
        body["metadata"]["labels"] = {**body["metadata"]["labels"], **(labels or {})}
        shop.apps.create_namespaced_deployment(self.namespace, body)
        eventually(lambda: shop.ready(name) == replicas, timeout=90, what=f"{replicas} ready {name} pods")
        return shop

    def create_rollout(self, user: str, name: str, target: str = "shop", **spec: Any) -> dict:
        spec.setdefault("waves", [{"replicas": 1, "bake": "1s"}, {"weight": 100, "bake": "1s"}])
        body = guarded_rollout(name, target=target, **spec)
        return self.custom(user).create_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, body)

    def rollout(self, name: str) -> dict:
        return self.custom().get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def status(self, name: str) -> dict:
        return self.rollout(name).get("status") or {}

    def condition(self, name: str, type_: str) -> dict:
        return next((c for c in self.status(name).get("conditions", []) if c["type"] == type_), {})

    def approve(self, user: str, rollout: str, revision: int | None = None, **spec: Any) -> dict:
        if revision is None:
            revision = int(self.rollout(rollout)["metadata"]["generation"])
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RolloutApproval",
                "metadata": {"generateName": f"{rollout}-{user}-"},
                "spec": {"rollout": rollout, "revision": revision, **spec}}
        return self.custom(user).create_namespaced_custom_object(GROUP, VERSION, self.namespace, APPROVALS, body)

    def refused(self, user: str, rollout: str, **kwargs: Any) -> str:
        """The API server's message when it refuses this approval."""
        try:
            self.approve(user, rollout, **kwargs)
        except ApiException as exc:
            assert exc.status == 403, f"expected Forbidden, got {exc.status}: {exc.body}"
            return str(exc.body)
        raise AssertionError(f"the API server accepted {user}'s approval of {rollout}")

    def ready(self, deployment: str) -> int:
        return Shop(self.cluster, self.namespace, deployment).ready(deployment)

    def phase(self, name: str) -> str | None:
        return self.status(name).get("phase")

    def wait_phase(self, name: str, *phases: str, timeout: float = 90) -> dict:
        def reached() -> dict:
            status = self.status(name)
            recent = (status.get("analysis") or {}).get("recent") or [{}]
            judged = [(j.get("metric"), j.get("verdict"), j.get("reason")) for j in recent[-1].get("judgements", [])]
            assert status.get("phase") in phases, f"{status.get('phase')}: {status.get('message')} {judged}"
            return status
        return eventually(reached, timeout=timeout, what=f"{name} in {phases}")


@contextmanager
def policy(cluster: Cluster, team: Team | None, rules: dict[str, Any], **spec: Any) -> Iterator[str]:
    """A cluster-scoped RolloutPolicy for the team's namespace only, deleted afterwards."""
    name = f"test-{secrets.token_hex(4)}"
    # Always the team's namespace only, also with a target selector: tests run side by side, and a policy
    # that reached other namespaces would hold their rollouts.
    selector = {"namespaceSelector": {"matchLabels": {"guarded.dev/policy": team.label}}} if team else {}
    selector = {**spec.pop("selector", {}), **selector}
    body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "RolloutPolicy", "metadata": {"name": name},
            "spec": {"selector": selector, "rules": rules, **spec}}
    custom = kubernetes.client.CustomObjectsApi(cluster.api())
    custom.create_cluster_custom_object(GROUP, VERSION, POLICIES, body)
    try:
        yield name
    finally:
        custom.delete_cluster_custom_object(GROUP, VERSION, POLICIES, name)
