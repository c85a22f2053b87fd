"""kube/rest.py: the generated API classes' methods the operator calls, sent as the API server expects them,
without the classes (their import alone was 26 MiB of the operator's memory with kubernetes 37)."""

from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace
from typing import Any

import kubernetes
import pytest
from kubernetes.client.rest import ApiException

from guarded.kube.rest import APPS, CORE, Resources, Rest

HOST = "https://k:6443"


class Recorder:
    """The HTTP requests sent, answered with `status` and `body`."""

    def __init__(self, status: int = 200, body: Any = None) -> None:
        self.sent: list[dict[str, Any]] = []
        self.status, self.body = status, body if body is not None else {"kind": "Thing"}

    def __call__(self, method: str, url: str, headers: dict[str, str], body: bytes | None, timeout: Any) -> Any:
        self.sent.append({"method": method, "url": url, "headers": headers,
                          "body": None if body is None else json.loads(body), "timeout": timeout})
        return SimpleNamespace(status=self.status, reason="Reason", data=json.dumps(self.body).encode(),
                               headers={"Content-Type": "application/json"})


def apis(recorder: Recorder, token: str | None = None) -> tuple[Resources, Resources, Resources]:
    config = kubernetes.client.Configuration(host=HOST)
    if token:
        config.api_key = {"BearerToken": token}
        config.api_key_prefix = {"BearerToken": "Bearer"}
    rest = Rest(kubernetes.client.ApiClient(config))
    return (Resources(rest, "/api/v1", CORE, send=recorder), Resources(rest, "/apis/apps/v1", APPS, send=recorder),
            Resources(rest, send=recorder))


def test_built_in_kinds_are_read_listed_and_written_at_their_paths() -> None:
    r = Recorder()
    core, apps, _ = apis(r)
    apps.read_namespaced_deployment("shop", "team-a", _request_timeout=(5.0, 30.0), _preload_content=False)
    core.list_namespaced_pod("team-a", label_selector="app=shop,tier in (web)")
    core.list_namespace()
    apps.list_deployment_for_all_namespaces(label_selector="x=true")
    core.read_namespace("team-a")
    apps.create_namespaced_deployment("team-a", {"metadata": {"name": "c"}}, dry_run="All")
    apps.replace_namespaced_deployment("c", "team-a", {"metadata": {"name": "c"}})
    core.delete_namespaced_service("s", "team-a", body={"preconditions": {"uid": "u-1"}})
    apps.list_namespaced_replica_set(namespace="team-a", label_selector="")
    assert [(s["method"], s["url"]) for s in r.sent] == [
        ("GET", f"{HOST}/apis/apps/v1/namespaces/team-a/deployments/shop"),
        ("GET", f"{HOST}/api/v1/namespaces/team-a/pods?labelSelector=app%3Dshop%2Ctier+in+%28web%29"),
        ("GET", f"{HOST}/api/v1/namespaces"),
        ("GET", f"{HOST}/apis/apps/v1/deployments?labelSelector=x%3Dtrue"),
        ("GET", f"{HOST}/api/v1/namespaces/team-a"),
        ("POST", f"{HOST}/apis/apps/v1/namespaces/team-a/deployments?dryRun=All"),
        ("PUT", f"{HOST}/apis/apps/v1/namespaces/team-a/deployments/c"),
        ("DELETE", f"{HOST}/api/v1/namespaces/team-a/services/s"),
        ("GET", f"{HOST}/apis/apps/v1/namespaces/team-a/replicasets"),   # an empty selector is not sent
    ]
    assert r.sent[0]["timeout"] == (5.0, 30.0)
    assert r.sent[5]["body"] == {"metadata": {"name": "c"}}
    assert r.sent[5]["headers"]["Content-Type"] == "application/json"
    assert r.sent[7]["body"] == {"preconditions": {"uid": "u-1"}}
    assert all(s["headers"]["Accept"] == "application/json" for s in r.sent)


def test_custom_objects_and_their_status_are_at_their_group_paths() -> None:
    r = Recorder()
    _, _, custom = apis(r)
    g, v = "rollouts.guarded.dev", "v1alpha1"
    custom.get_namespaced_custom_object(g, v, "team-a", "guardedrollouts", "release",
                                        _headers={"Accept": "application/json;as=PartialObjectMetadata"})
    custom.list_cluster_custom_object(g, v, "rolloutpolicies")
    custom.get_cluster_custom_object(g, v, "rolloutpolicies", "tier-1")
    custom.patch_namespaced_custom_object_status(g, v, "team-a", "guardedrollouts", "release", {"status": {}})
    custom.replace_namespaced_custom_object_status(g, v, "team-a", "guardedrollouts", "release", {"status": {}})
    custom.delete_namespaced_custom_object(g, v, "team-a", "guardedrollouts", "old", body={"preconditions": {}})
    custom.list_namespaced_custom_object(g, v, "team-a", "guardedrollouts", label_selector="a=b")
    base = f"{HOST}/apis/{g}/{v}"
    assert [(s["method"], s["url"]) for s in r.sent] == [
        ("GET", f"{base}/namespaces/team-a/guardedrollouts/release"),
        ("GET", f"{base}/rolloutpolicies"),
        ("GET", f"{base}/rolloutpolicies/tier-1"),
        ("PATCH", f"{base}/namespaces/team-a/guardedrollouts/release/status"),
        ("PUT", f"{base}/namespaces/team-a/guardedrollouts/release/status"),
        ("DELETE", f"{base}/namespaces/team-a/guardedrollouts/old"),
        ("GET", f"{base}/namespaces/team-a/guardedrollouts?labelSelector=a%3Db"),
    ]
    assert r.sent[0]["headers"]["Accept"] == "application/json;as=PartialObjectMetadata"
    assert r.sent[3]["headers"]["Content-Type"] == "application/merge-patch+json"   # no strategic merge for CRDs


def test_a_patch_is_sent_as_the_generated_client_sends_it() -> None:
    r = Recorder()
    core, apps, _ = apis(r)
    apps.patch_namespaced_deployment("shop", "team-a", {"metadata": {"labels": {"a": None}}})
    core.patch_namespaced_event("e", "team-a", [{"op": "replace", "path": "/count", "value": 2}])
    core.patch_namespaced_config_map("c", "team-a", {"data": {}}, _content_type="application/merge-patch+json")
    assert [s["headers"]["Content-Type"] for s in r.sent] == [
        "application/strategic-merge-patch+json", "application/json-patch+json", "application/merge-patch+json"]
    assert r.sent[0]["body"] == {"metadata": {"labels": {"a": None}}}   # null kept: it removes the label


def test_a_refusal_raises_the_clients_api_exception_with_status_and_body() -> None:
    core, _, _ = apis(Recorder(404, {"kind": "Status", "reason": "NotFound", "message": "gone"}))
    with pytest.raises(ApiException) as refused:
        core.read_namespace("nowhere")
    assert refused.value.status == 404
    assert json.loads(refused.value.body)["message"] == "gone"


def test_the_answer_is_the_response_whose_data_is_the_body() -> None:
    core, _, _ = apis(Recorder(201, {"kind": "Event", "metadata": {"resourceVersion": "7"}}))
    answer = core.create_namespaced_event("team-a", {"metadata": {"name": "e"}})
    assert answer.status == 201 and json.loads(answer.data)["metadata"]["resourceVersion"] == "7"


def test_credentials_come_from_the_configuration_with_each_request() -> None:
    r = Recorder()
    core, _, _ = apis(r, token="t0k3n")
    core.read_namespace("team-a")
    assert r.sent[0]["headers"]["authorization"] == "Bearer t0k3n"


def test_a_call_it_does_not_know_is_refused_by_name_not_guessed() -> None:
    core, apps, custom = apis(Recorder())
    with pytest.raises(AttributeError, match="read_namespaced_persistent_volume"):
        core.read_namespaced_persistent_volume("v", "team-a")
    with pytest.raises(AttributeError, match="read_namespaced_pod"):
        apps.read_namespaced_pod("p", "team-a")   # pods are core, not apps
    with pytest.raises(TypeError, match="pretty"):
        core.read_namespace("team-a", pretty="true")
    with pytest.raises(AttributeError):
        custom.read_namespaced_deployment("d", "team-a")


def test_the_operators_client_imports_none_of_the_generated_api_classes() -> None:
    # Beyond what `import kubernetes.client` itself imports (all of them before kubernetes 37, none since).
    apis = "{m for m in sys.modules if m.startswith('kubernetes.client.api.')}"
    check = (f"import sys, kubernetes.client; before = {apis}; "
             "from guarded.kube.client import KubeClient; KubeClient(kubernetes.client.ApiClient()); "
             f"print(sorted({apis} - before))")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
