"""No path around the guardrails: a guarded Deployment changes only in waves, whoever edits it and however.

alice (namespace `edit` rights) uses every plain path kubectl offers on a Deployment a RolloutPolicy
guards; none reaches a pod. Template changes are recorded as releases authored by alice that wait for
the policy's two approvals; bob and carol approve the last one and it rolls out in waves.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

import pytest
import yaml

from guardrails import Team, policy
from operator_process import OperatorProcess
from rollouts import GROUP, PLURAL, VERSION, Shop, shop_deployment
from story import Rollout, when
from testbed import Cluster
from waiting import eventually

GUARDED = f"{GROUP}/guarded"
OLD, NEW = "registry.example/shop:1.0.0", "registry.example/shop:6.6.6"
DEFAULTS = {"waves": [{"replicas": 1, "bake": "2s"}, {"weight": 100, "bake": "1s"}]}


@pytest.fixture
def team(cluster: Cluster, namespace: str, operator: OperatorProcess) -> Team:
    return Team(cluster, namespace)


def deployment(team: Team, name: str = "shop") -> dict[str, Any]:
    out = team.cluster.kubectl("get", "deployment", name, "-n", team.namespace, "-o", "json")
    return json.loads(out.stdout)


def annotations(team: Team, name: str = "shop") -> dict[str, str]:
    return deployment(team, name)["metadata"].get("annotations") or {}


def releases(team: Team) -> list[dict[str, Any]]:
    items = team.custom().list_namespaced_custom_object(GROUP, VERSION, team.namespace, PLURAL)["items"]
    return [r for r in items if (r["metadata"].get("labels") or {}).get(f"{GROUP}/from-apply") == "true"]


def pod_images(team: Team, app: str = "shop") -> list[str]:
    out = team.cluster.kubectl("get", "pods", "-n", team.namespace, "-l", f"app={app}", "-o", "json")
    return sorted(p["spec"]["containers"][0]["image"] for p in json.loads(out.stdout)["items"]
                  if not p["metadata"].get("deletionTimestamp"))


def kubectl(team: Team, user: str, *args: str, input: str | None = None, check: bool = True) -> Any:
    return team.cluster.kubectl(*args, "-n", team.namespace, user=user, input=input, check=check)


def wait_guarded(team: Team, name: str = "shop") -> None:
    eventually(lambda: (deployment(team, name)["metadata"].get("labels") or {}).get(GUARDED) == "true",
               timeout=30, what=f"Deployment {name} labelled guarded by the operator")


def test_every_plain_path_leaves_the_pods_alone_and_becomes_a_release_by_alice(
        cluster: Cluster, team: Team) -> None:
    team.shop(labels={"tier": "1"})
    team.shop(name="blog", replicas=2)  # not selected by the policy: plain Kubernetes
    cluster.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shop-config"},
                   "data": {"checkout": "v1"}}, namespace=team.namespace)
    with policy(cluster, team, {"requiredApprovals": 2}, guardWorkloads=True, releaseDefaults=DEFAULTS,
                selector={"namespaceSelector": {"matchLabels": {"guarded.dev/policy": team.label}},
                          "targetSelector": {"matchLabels": {"tier": "1"}}}):
        wait_guarded(team)
        running = deployment(team)["spec"]["template"]

        # 1. kubectl set image: accepted with a warning, recorded, nothing reaches a pod.
        started = time.monotonic()
        out = kubectl(team, "alice", "set", "image", "deployment/shop", f"app={NEW}")
        assert "guarded" in out.stderr and "alice" in out.stderr, out.stderr
        first = eventually(lambda: releases(team), timeout=30, what="a release made of alice's set image")[0]
        created_after = time.monotonic() - started
        assert deployment(team)["spec"]["template"] == running
        assert json.loads(first["metadata"]["annotations"][f"{GROUP}/authors"]) == ["alice"]
        assert first["spec"]["change"]["template"]["spec"]["containers"][0]["image"] == NEW
        assert annotations(team)[f"{GROUP}/desired-by"] == "alice"
        status = team.wait_phase(first["metadata"]["name"], "AwaitingApproval")
        assert status["authors"] == ["alice"]

        # 2-5. set env, patch, rollout restart, edit-by-replace: each a new release replacing the waiting one.
        paths: list[tuple[str, tuple[str, ...], str | None]] = [
            ("set env", ("set", "env", "deployment/shop", "CHECKOUT_V2=true"), None),
            ("patch", ("patch", "deployment/shop", "--type=strategic", "-p",
                       json.dumps({"spec": {"template": {"metadata": {"annotations": {"x": "1"}}}}})), None),
            ("rollout restart", ("rollout", "restart", "deployment/shop"), None),
        ]
        for what, args, stdin in paths:
            before = {r["metadata"]["name"] for r in releases(team)}
            kubectl(team, "alice", *args, input=stdin)
            latest = eventually(lambda b=before: [r for r in releases(team) if r["metadata"]["name"] not in b],
                                timeout=30, what=f"the release of alice's {what}")[0]
            assert deployment(team)["spec"]["template"] == running, f"{what} changed the running template"
            assert json.loads(latest["metadata"]["annotations"][f"{GROUP}/authors"]) == ["alice"], what
            eventually(lambda b=before: not (b & {r["metadata"]["name"] for r in releases(team)}), timeout=30,
                       what=f"the release superseded by {what} removed")
        assert pod_images(team) == [OLD] * 4

        # 6. kubectl apply of a changed manifest (what a GitOps tool does), with its documentation.
        manifest = shop_deployment("shop", 4, image=NEW)
        manifest["metadata"]["labels"] = {**manifest["metadata"]["labels"], "tier": "1"}
        manifest["metadata"]["annotations"] = {f"{GROUP}/description": "checkout v2", f"{GROUP}/ticket": "SHOP-7"}
        kubectl(team, "alice", "apply", "-f", "-", input=yaml.safe_dump(manifest))
        applied = eventually(lambda: [r for r in releases(team) if r["spec"].get("ticket") == "SHOP-7"],
                             timeout=30, what="the release of alice's apply")[0]
        name = applied["metadata"]["name"]
        assert applied["spec"]["description"] == "checkout v2"

        # Deleting it (to create it again without a guard) and editing the configuration it reads are refused.
        refused = kubectl(team, "alice", "delete", "deployment", "shop", check=False)
        assert refused.returncode != 0 and "guarded" in refused.stderr, refused.stderr

        # The unguarded Deployment is plain Kubernetes.
        kubectl(team, "alice", "set", "image", "deployment/blog", f"app={NEW}")
        eventually(lambda: pod_images(team, "blog") == [NEW] * 2, timeout=60, what="blog rolled by Kubernetes")
        assert pod_images(team) == [OLD] * 4

        # bob and carol approve alice's release: it rolls out in waves and is promoted.
        team.approve("bob", name)
        team.approve("carol", name)
        done = team.wait_phase(name, "Succeeded", timeout=120)
        assert [h["wave"] for h in done["history"] if h["reason"] == "WaveStarted"] == [0, 1]
        eventually(lambda: pod_images(team) == [NEW] * 4, timeout=60, what="4 pods on the released image")
        eventually(lambda: f"{GROUP}/desired-template" not in annotations(team), timeout=30,
                   what="the fulfilled desire cleared")
        print(f"plain apply to GuardedRollout created: {created_after:.2f}s")


def configmap(team: Team, name: str) -> dict[str, Any]:
    return json.loads(kubectl(team, "admin", "get", "configmap", name, "-o", "json").stdout)


def test_as_alice_an_edit_of_a_configmap_guarded_pods_read_becomes_her_release(cluster: Cluster, team: Team) -> None:
    cluster.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shop-config"},
                   "data": {"checkout": "v1"}}, namespace=team.namespace)
    body = shop_deployment("shop", 2)
    body["metadata"]["labels"]["tier"] = "1"
    body["spec"]["template"]["spec"]["volumes"] = [{"name": "config", "configMap": {"name": "shop-config"}}]
    cluster.apply(body, namespace=team.namespace)
    with policy(cluster, team, {}, guardWorkloads=True, releaseDefaults=DEFAULTS,
                selector={"namespaceSelector": {"matchLabels": {"guarded.dev/policy": team.label}},
                          "targetSelector": {"matchLabels": {"tier": "1"}}}):
        wait_guarded(team)
        eventually(lambda: (configmap(team, "shop-config")["metadata"].get("labels") or {}).get(GUARDED) == "true",
                   timeout=30, what="the ConfigMap it reads labelled guarded")
        before = deployment(team)["spec"]["template"]
        # alice edits it the way she would without guarded-rollouts: kubectl edit (her editor saves v2).
        editor = {**os.environ, "KUBE_EDITOR": "sed -i s/checkout:.v1/checkout:\\ v2/"}
        edited = subprocess.run([*cluster.kubectl_args("alice"), "edit", "configmap", "shop-config", "-n",
                                 team.namespace], env=editor, capture_output=True, text=True, timeout=60, check=False)
        assert edited.returncode == 0, edited.stderr
        assert "recorded as a release by alice" in edited.stderr, edited.stderr
        # What the stable pods read did not change: the ConfigMap's content, and the template's reference.
        assert configmap(team, "shop-config")["data"] == {"checkout": "v1"}
        assert deployment(team)["spec"]["template"] == before
        release = eventually(lambda: next(iter(releases(team)), None), timeout=30, what="alice's edit as a release")
        [change] = release["spec"]["change"]["configMaps"]
        version = configmap(team, change["contentFrom"])
        assert change["name"] == "shop-config" and version["data"] == {"checkout": "v2"} and version["immutable"]
        assert release["spec"]["target"]["name"] == "shop"
        name = release["metadata"]["name"]
        authors = eventually(lambda: team.status(name).get("authors"), timeout=30, what="the release's authors")
        assert authors == ["alice"]
        # The edit rolls out in waves and is promoted: the pods read the version, the ConfigMap shows v2.
        done = team.wait_phase(name, "Succeeded", timeout=120)
        assert [h["wave"] for h in done["history"] if h["reason"] == "WaveStarted"] == [0, 1]
        volumes = deployment(team)["spec"]["template"]["spec"]["volumes"]
        assert volumes == [{"name": "config", "configMap": {"name": change["contentFrom"], "defaultMode": 420}}]
        eventually(lambda: configmap(team, "shop-config")["data"] == {"checkout": "v2"}, timeout=30,
                   what="the ConfigMap mirrors the promoted version")
        eventually(lambda: f"{GROUP}/desired-version" not in (configmap(team, "shop-config")["metadata"]
                                                              .get("annotations") or {}),
                   timeout=30, what="the fulfilled edit cleared")
        unlabel = kubectl(team, "alice", "label", "configmap", "shop-config", f"{GUARDED}-", check=False)
        assert unlabel.returncode != 0, unlabel.stdout


def test_an_edit_of_a_configmap_two_guarded_deployments_read_is_one_release_across_both(
        cluster: Cluster, team: Team) -> None:
    cluster.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shared-config"},
                   "data": {"checkout": "v1"}}, namespace=team.namespace)
    for name in ("cart", "checkout"):
        body = shop_deployment(name, 2)
        body["metadata"]["labels"]["tier"] = "1"
        body["spec"]["template"]["spec"]["volumes"] = [{"name": "config", "configMap": {"name": "shared-config"}}]
        cluster.apply(body, namespace=team.namespace)
    with policy(cluster, team, {}, guardWorkloads=True, releaseDefaults=DEFAULTS,
                selector={"namespaceSelector": {"matchLabels": {"guarded.dev/policy": team.label}},
                          "targetSelector": {"matchLabels": {"tier": "1"}}}):
        for name in ("cart", "checkout"):
            wait_guarded(team, name)
        eventually(lambda: (configmap(team, "shared-config")["metadata"].get("labels") or {}).get(GUARDED) == "true",
                   timeout=30, what="the shared ConfigMap labelled guarded")
        edited = kubectl(team, "alice", "patch", "configmap", "shared-config", "-p",
                         json.dumps({"data": {"checkout": "v2"}}), check=False)
        assert edited.returncode == 0, edited.stderr
        release = eventually(lambda: next(iter(releases(team)), None), timeout=30, what="the edit as a release")
        assert release["spec"]["target"]["name"] == "cart"
        assert [c["name"] for c in release["spec"]["consumers"]] == ["checkout"]
        done = team.wait_phase(release["metadata"]["name"], "Succeeded", timeout=150)
        version = done["config"][0]["version"]
        assert [(c["name"], c["phase"]) for c in done["consumers"]] == [("cart", "Succeeded"),
                                                                          ("checkout", "Succeeded")]
        for name in ("cart", "checkout"):
            volumes = deployment(team, name)["spec"]["template"]["spec"]["volumes"]
            assert [v["configMap"]["name"] for v in volumes] == [version]
        eventually(lambda: configmap(team, "shared-config")["data"] == {"checkout": "v2"}, timeout=30,
                   what="the shared ConfigMap mirrors the promoted version")


@pytest.mark.exclusive
def test_with_the_operator_down_the_api_server_refuses_and_says_how_to_release(
        cluster: Cluster, team: Team, operator: OperatorProcess) -> None:
    cluster.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "shop-config"},
                   "data": {"checkout": "v1"}}, namespace=team.namespace)
    team.shop(labels={"tier": "1"})
    kubectl(team, "admin", "patch", "deployment", "shop", "-p", json.dumps({"spec": {"template": {"spec": {
        "volumes": [{"name": "config", "configMap": {"name": "shop-config"}}]}}}}))
    with policy(cluster, team, {}, guardWorkloads=True,
                selector={"namespaceSelector": {"matchLabels": {"guarded.dev/policy": team.label}},
                          "targetSelector": {"matchLabels": {"tier": "1"}}}):
        wait_guarded(team)
        eventually(lambda: (configmap(team, "shop-config")["metadata"].get("labels") or {}).get(GUARDED) == "true",
                   timeout=30, what="the ConfigMap it reads labelled guarded")
        operator.stop()
        try:
            edit = kubectl(team, "alice", "patch", "configmap", "shop-config", "-p",
                           json.dumps({"data": {"checkout": "v2"}}), check=False)
            assert edit.returncode != 0 and "--config shop-config" in edit.stderr, edit.stderr
            assert configmap(team, "shop-config")["data"] == {"checkout": "v1"}
            out = kubectl(team, "alice", "set", "image", "deployment/shop", f"app={NEW}", check=False)
            assert out.returncode != 0, out.stdout
            assert "kubectl guarded release" in out.stderr and "guarded by a RolloutPolicy" in out.stderr, out.stderr
            label = kubectl(team, "alice", "label", "deployment", "shop", f"{GUARDED}-", check=False)
            assert label.returncode != 0 and "set by guarded-rollouts" in label.stderr, label.stderr
            scaled = kubectl(team, "alice", "scale", "deployment/shop", "--replicas=5", check=False)
            assert scaled.returncode == 0, scaled.stderr  # scaling is not a change
            assert pod_images(team) == [OLD] * len(pod_images(team))
        finally:
            operator.start()


def test_a_gitops_loop_reapplying_one_manifest_makes_one_release_and_none_after_its_rollback(
        cluster: Cluster, team: Team) -> None:
    team.shop(labels={"tier": "1"})
    with policy(cluster, team, {}, guardWorkloads=True,
                releaseDefaults={"waves": [{"replicas": 1, "bake": "168h"}, {"weight": 100, "bake": "1s"}]},
                selector={"namespaceSelector": {"matchLabels": {"guarded.dev/policy": team.label}},
                          "targetSelector": {"matchLabels": {"tier": "1"}}}):
        wait_guarded(team)
        manifest = shop_deployment("shop", 4, image=NEW)
        manifest["metadata"]["labels"] = {**manifest["metadata"]["labels"], "tier": "1"}
        text = yaml.safe_dump(manifest)

        def sync() -> None:
            kubectl(team, "alice", "apply", "-f", "-", input=text)

        sync()
        release = eventually(lambda: releases(team), timeout=30, what="the release of the first sync")[0]
        name = release["metadata"]["name"]
        when.rollout_reaches(Rollout(Shop(team.cluster, team.namespace), name), stage="Bake", within=60,
                             what="wave 1 baking")
        for _ in range(3):  # every 5 s while it bakes
            time.sleep(5)
            sync()
        assert [r["metadata"]["name"] for r in releases(team)] == [name]
        team.custom("bob").patch_namespaced_custom_object(GROUP, VERSION, team.namespace, PLURAL, name, {
            "metadata": {"annotations": {f"{GROUP}/request": json.dumps({"id": "1", "action": "abort"})}}})
        team.wait_phase(name, "RolledBack", timeout=60)
        marker = eventually(lambda: annotations(team).get(f"{GROUP}/rolled-back"), timeout=30,
                            what="the Deployment naming the rolled-back release")
        assert name in marker and "Aborted" in marker
        for _ in range(3):  # the loop goes on: the same content is not retried
            time.sleep(5)
            sync()
        assert [r["metadata"]["name"] for r in releases(team)] == [name]
        assert pod_images(team) == [OLD] * 4
        assert deployment(team)["spec"]["template"]["spec"]["containers"][0]["image"] == OLD
