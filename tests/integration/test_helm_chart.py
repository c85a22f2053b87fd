"""The Helm chart (charts/guarded-rollouts) installs what the kustomize manifests install.

A user who picks Helm over `kubectl apply -k manifests/install` gets the same objects, field for
field, except the Namespace (Helm keeps its release in it, so it exists first) and the labels that
say which release an object belongs to; the options add only their own objects; and the chart
installs on a real API server (the test bed) and uninstalls without touching the suite's objects.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
import yaml

from testbed import ROOT, Cluster, helm_path
from waiting import eventually

CHART = ROOT / "charts" / "guarded-rollouts"
NAMESPACE = "guarded-rollouts"  # the kustomize manifests' namespace
RELEASE_LABELS = ("app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "app.kubernetes.io/version",
                  "helm.sh/chart")
EVERY_OPTION = ("serviceMonitor.enabled=true", "grafanaDashboard.enabled=true", "podDisruptionBudget.enabled=true",
                "webhook.certManager.enabled=true", "prometheus.url=http://prometheus.monitoring.svc:9090",
                "extraEnv[0].name=GUARDED_ALERTS_LISTEN", "extraEnv[0].value=0.0.0.0:9095",
                "nodeSelector.pool=system", "tolerations[0].key=dedicated", "tolerations[0].operator=Exists")


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[str]]:
    """The helm command, with its configuration and cache kept out of the user's home."""
    home = tmp_path_factory.mktemp("helm")
    env = [f"HELM_{d}_HOME={home / d.lower()}" for d in ("CONFIG", "CACHE", "DATA")]
    yield ["env", *env, helm_path()]


def run(args: list[str]) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{' '.join(args[-4:])} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}"
    return proc.stdout


def objects(text: str) -> dict[str, dict]:
    """Rendered objects by apiVersion/kind namespace/name."""
    found = {}
    for obj in yaml.safe_load_all(text):
        if obj:
            meta = obj["metadata"]
            found[f"{obj['apiVersion']}/{obj['kind']} {meta.get('namespace', '')}/{meta['name']}"] = obj
    return found


def template(helm: list[str], *values: str, namespace: str = NAMESPACE) -> dict[str, dict]:
    sets = [arg for v in values for arg in ("--set", v)]
    return objects(run([*helm, "template", "guarded-rollouts", str(CHART), "-n", namespace, "--include-crds", *sets]))


def single_line_breaks(value: object) -> object:
    """The value with every run of line breaks in its strings made one. Kustomize's YAML library reads a
    folded scalar (`>-`) with more-indented lines with one line break too many before them; Helm's, as the
    YAML spec says, does not. Only the CEL expressions of the policies are written so: whitespace to CEL."""
    if isinstance(value, str):
        return re.sub(r"\n\n+", "\n", value)
    if isinstance(value, dict):
        return {k: single_line_breaks(v) for k, v in value.items()}
    if isinstance(value, list):
        return [single_line_breaks(v) for v in value]
    return value


def comparable(obj: dict) -> object:
    """The object less the labels naming the Helm release, its line breaks as single_line_breaks makes them."""
    obj = copy.deepcopy(obj)
    for meta in (obj["metadata"], obj.get("spec", {}).get("template", {}).get("metadata", {})):
        for label in RELEASE_LABELS:
            meta.get("labels", {}).pop(label, None)
    return single_line_breaks(obj)


def diff(name: str, chart: object, kustomize: object) -> str:
    dump = lambda o: yaml.safe_dump(o, sort_keys=True).splitlines(keepends=True)  # noqa: E731
    return "".join(difflib.unified_diff(dump(chart), dump(kustomize), f"helm template: {name}", f"kustomize: {name}"))


def test_the_charts_copies_of_the_kustomize_manifests_are_current() -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "hack" / "sync_chart.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{proc.stderr}{proc.stdout}"


def test_the_chart_lints_with_defaults_and_with_every_option(helm: list[str]) -> None:
    run([*helm, "lint", "--strict", str(CHART)])
    run([*helm, "lint", "--strict", str(CHART), *(arg for v in EVERY_OPTION for arg in ("--set", v))])


def test_helm_template_renders_the_objects_of_the_kustomize_manifests(cluster: Cluster, helm: list[str]) -> None:
    chart = template(helm)
    kustomize = objects(cluster.kubectl("kustomize", str(ROOT / "manifests" / "install")).stdout)
    namespace = kustomize.pop(f"v1/Namespace /{NAMESPACE}")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"

    assert sorted(set(chart) - set(kustomize)) == [], "rendered by the chart only"
    assert sorted(set(kustomize) - set(chart)) == [], "in the kustomize manifests only"
    for obj in (o for o in chart.values() if o["kind"] != "CustomResourceDefinition"):  # crds/ is never templated
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm" and labels["app.kubernetes.io/instance"], obj
    diffs = [diff(name, comparable(chart[name]), comparable(kustomize[name])) for name in sorted(chart)
             if comparable(chart[name]) != comparable(kustomize[name])]
    assert not diffs, "the chart differs from the kustomize manifests:\n" + "\n".join(diffs)


def test_each_option_adds_its_own_objects_and_settings(helm: list[str]) -> None:
    default = template(helm)
    chart = template(helm, *EVERY_OPTION)
    ns = NAMESPACE
    assert sorted(set(chart) - set(default)) == sorted([
        f"cert-manager.io/v1/Certificate {ns}/guarded-rollouts-webhook",
        f"cert-manager.io/v1/Certificate {ns}/guarded-rollouts-webhook-ca",
        f"cert-manager.io/v1/Issuer {ns}/guarded-rollouts-selfsigned",
        f"cert-manager.io/v1/Issuer {ns}/guarded-rollouts-webhook-ca",
        f"monitoring.coreos.com/v1/ServiceMonitor {ns}/guarded-rollouts-operator",
        f"policy/v1/PodDisruptionBudget {ns}/guarded-rollouts-operator",
        f"v1/ConfigMap {ns}/guarded-rollouts-dashboard",
    ])
    assert set(default) <= set(chart)

    pod = chart[f"apps/v1/Deployment {ns}/guarded-rollouts-operator"]["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["GUARDED_PROMETHEUS_URL"] == "http://prometheus.monitoring.svc:9090"
    assert env["GUARDED_ALERTS_LISTEN"] == "0.0.0.0:9095"
    assert pod["nodeSelector"] == {"pool": "system"}
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Exists"}]

    # cert-manager writes the Secret the pods mount, for the host the operator puts in the webhook configuration.
    serving = chart[f"cert-manager.io/v1/Certificate {ns}/guarded-rollouts-webhook"]["spec"]
    mounted = next(v["secret"]["secretName"] for v in pod["volumes"] if v["name"] == "webhook-tls")
    assert serving["secretName"] == mounted
    assert serving["dnsNames"] == [env["GUARDED_WEBHOOK_HOST"]] == [f"guarded-rollouts-webhook.{ns}.svc"]
    assert serving["issuerRef"] == {"name": "guarded-rollouts-webhook-ca", "kind": "Issuer"}

    monitor = chart[f"monitoring.coreos.com/v1/ServiceMonitor {ns}/guarded-rollouts-operator"]["spec"]
    metrics = chart[f"v1/Service {ns}/guarded-rollouts-metrics"]
    assert monitor["selector"]["matchLabels"].items() <= metrics["metadata"]["labels"].items()
    assert monitor["endpoints"][0]["port"] == metrics["spec"]["ports"][0]["name"]

    dashboard = chart[f"v1/ConfigMap {ns}/guarded-rollouts-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((ROOT / "manifests" / "grafana" / "guarded-rollouts-dashboard.json").read_text())
    assert json.loads(dashboard["data"]["guarded-rollouts-dashboard.json"]) == shipped


def test_numbers_and_booleans_in_values_render_as_the_strings_kubernetes_takes(helm: list[str]) -> None:
    """--set (and unquoted YAML) make 20260301 a number and true a boolean: the tag, annotations and
    labels must still render as strings, not as Go's %!s(int64=...) nor as YAML numbers the API refuses."""
    ns = NAMESPACE
    chart = template(helm, "image.tag=20260301", "podAnnotations.example\\.com/build=42",
                     "podAnnotations.example\\.com/canary=true", "grafanaDashboard.enabled=true",
                     "grafanaDashboard.labels.tier=1", "grafanaDashboard.annotations.example\\.com/rev=7",
                     "serviceMonitor.enabled=true", "serviceMonitor.labels.release=2")
    template_ = chart[f"apps/v1/Deployment {ns}/guarded-rollouts-operator"]["spec"]["template"]
    assert template_["spec"]["containers"][0]["image"] == "guarded-rollouts:20260301"
    assert template_["metadata"]["annotations"]["example.com/build"] == "42"
    assert template_["metadata"]["annotations"]["example.com/canary"] == "true"
    assert template_["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    grafana = chart[f"v1/ConfigMap {ns}/guarded-rollouts-dashboard"]["metadata"]
    assert grafana["labels"]["tier"] == "1" and grafana["labels"]["grafana_dashboard"] == "1"
    assert grafana["annotations"] == {"example.com/rev": "7"}
    monitor = chart[f"monitoring.coreos.com/v1/ServiceMonitor {ns}/guarded-rollouts-operator"]["metadata"]
    assert monitor["labels"]["release"] == "2"


def kubectl_get(cluster: Cluster, keys: list[str], namespace: str) -> set[str]:
    """Which of the objects (as `objects` names them) exist in the cluster."""
    found = set()
    for key in keys:
        api_kind, where = key.split(" ")
        group_version, kind = api_kind.rsplit("/", 1)
        group = group_version.rsplit("/", 1)[0] if "/" in group_version else ""
        name = where.split("/")[1]
        ns = ["-n", namespace] if where.split("/")[0] else []
        out = cluster.kubectl("get", f"{kind}.{group}".rstrip(".") + f"/{name}", *ns, "--ignore-not-found",
                              "-o", "name").stdout
        if out.strip():
            found.add(key)
    return found


# Exclusive: while installed, the release's copies of the admission policies trust its own service account,
# not the shared operator's in-cluster one, and would refuse that operator's writes in tests running beside.
@pytest.mark.exclusive
def test_the_chart_installs_on_the_test_bed_and_uninstalls_cleanly(
        cluster: Cluster, helm: list[str], namespace: str) -> None:
    # A second copy beside the suite's own (its CRDs, RBAC and policies stay as they are): every name
    # gets the release's prefix, and the namespace enforces the restricted Pod Security Standard.
    prefix = f"gr-{namespace[-6:]}"
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    target = ["-n", namespace, "--kubeconfig", cluster.kubeconfig]
    if cluster.context_for("admin"):
        target += ["--kube-context", cluster.context_for("admin") or ""]
    rendered = template(helm, f"fullnameOverride={prefix}", namespace=namespace)
    crds = [k for k in rendered if "/CustomResourceDefinition " in k]
    installed = [k for k in rendered if k not in crds]
    cluster_wide = [k for k in installed if " /" in k]
    assert crds and cluster_wide, rendered.keys()
    crd_versions = {k: cluster.kubectl("get", "crd", k.split("/")[-1], "-o", "jsonpath={.metadata.resourceVersion}")
                    .stdout for k in crds}

    out = run([*helm, "install", "guarded-rollouts", str(CHART), *target, "--set", f"fullnameOverride={prefix}"])
    try:
        assert "STATUS: deployed" in out, out
        assert kubectl_get(cluster, installed, namespace) == set(installed)
        # The Deployment's two replicas are admitted (kwok fakes them: nothing runs in them).
        def operator_pods() -> list[str] | None:
            pods = cluster.kubectl("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/component=operator",
                                   "-o", "name").stdout.split()
            return pods if len(pods) == 2 else None

        pods = eventually(operator_pods, timeout=30, what="the Deployment's two operator pods")
        assert all(p.startswith(f"pod/{prefix}-operator-") for p in pods)
    finally:
        run([*helm, "uninstall", "guarded-rollouts", *target, "--wait", "--timeout", "60s"])

    assert kubectl_get(cluster, cluster_wide, namespace) == set()
    # Helm leaves CRDs alone: the suite's were already there, so the install skipped them.
    for key, version in crd_versions.items():
        now = cluster.kubectl("get", "crd", key.split("/")[-1], "-o", "jsonpath={.metadata.resourceVersion}").stdout
        assert now == version, f"{key} changed"

