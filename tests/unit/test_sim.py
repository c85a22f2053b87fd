"""The traffic simulator on plain data: traffic split, rates, ratios, determinism, counter invariants."""

from __future__ import annotations

import base64
import json
import math
import random
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from guarded.sim import model, sampling
from guarded.sim.exporter import Store, make_registry
from guarded.sim.kube import ClusterReader, Informer
from guarded.sim.main import Loop
from guarded.sim.model import (
    BUCKETS,
    CONFIG_MAP,
    ENABLED,
    ERROR_RATIO,
    ERROR_RATIO_ADD,
    LATENCY_MS,
    ORDER_RATIO,
    ORDER_RATIO_FACTOR,
    RPS,
    SECRET,
    Observation,
    PodObservation,
    PodSeries,
    Simulation,
    Snapshot,
)
from guarded.sim.observe import config_reads, observation, with_configs

TICK = 0.5


def pod(name: str, *, ns: str = "shop", app: str = "web", ready: bool = True, deleting: bool = False,
        **annotations: str) -> PodObservation:
    keys = {"rps": RPS, "error_ratio": ERROR_RATIO, "order_ratio": ORDER_RATIO, "latency_ms": LATENCY_MS}
    return PodObservation(ns, name, app, ready, deleting,
                          {ENABLED: "true", **{keys[k]: v for k, v in annotations.items()}})


def run(sim: Simulation, obs: Observation, ticks: int) -> dict[str, PodSeries]:
    for _ in range(ticks):
        sim.step(obs, TICK)
    return {s.pod: s for s in sim.snapshot().pods}


def test_traffic_splits_equally_among_ready_pods_only() -> None:
    obs = Observation((
        pod("a", rps="300"), pod("b", rps="300"), pod("c", rps="300"),
        pod("starting", ready=False, rps="300"), pod("leaving", deleting=True, rps="300"),
    ))
    series = run(Simulation(seed=7), obs, 400)  # 200 s at 100 rps per Ready pod: 20,000 each
    for name in "abc":
        assert series[name].requests == pytest.approx(20_000, rel=0.05)
    assert series["starting"].requests == 0  # live, so exported, but serves nothing
    assert "leaving" not in series  # being deleted: no series at all
    assert {p.name for p in Simulation(seed=7).step(obs, TICK).started} == {"a", "b", "c"}


def test_pods_that_do_not_opt_in_or_have_no_app_are_ignored() -> None:
    plain = PodObservation("shop", "plain", "web", True, False, {})
    no_app = pod("no-app", app="")
    off = PodObservation("shop", "off", "web", True, False, {ENABLED: "false"})
    sim = Simulation(seed=1)
    sim.step(Observation((plain, no_app, off, pod("on"))), TICK)
    assert [s.pod for s in sim.snapshot().pods] == ["on"]


@pytest.mark.parametrize("rps", [5.0, 60.0, 1000.0])
def test_rates_match_the_configured_rps_within_noise(rps: float) -> None:
    ticks = 600  # 300 s
    series = run(Simulation(seed=3), Observation((pod("a", rps=str(rps)), pod("b", rps=str(rps)))), ticks)
    total = sum(s.requests for s in series.values())
    expected = rps * ticks * TICK
    assert abs(total - expected) < 5 * math.sqrt(expected)  # Poisson: 5 standard deviations


def test_the_rate_is_what_most_pods_say_and_defaults_to_the_flag() -> None:
    sim = Simulation(seed=1, default_rps=40)
    series = run(sim, Observation((pod("a"), pod("b"))), 1000)  # neither says: 40 rps
    assert sum(s.requests for s in series.values()) == pytest.approx(40 * 500, rel=0.05)
    sim = Simulation(seed=1, default_rps=40)
    series = run(sim, Observation((pod("a", rps="200"), pod("b", rps="200"), pod("c", rps="10"))), 1000)
    assert sum(s.requests for s in series.values()) == pytest.approx(200 * 500, rel=0.05)


def test_a_low_order_ratio_makes_99_percent_fewer_orders_per_request() -> None:
    obs = Observation((pod("good", order_ratio="0.05"), pod("bad", order_ratio="0.0005")))
    series = run(Simulation(seed=11, default_rps=2000), obs, 400)
    good = series["good"].orders / series["good"].ok
    bad = series["bad"].orders / series["bad"].ok
    assert good == pytest.approx(0.05, rel=0.05)
    assert bad / good == pytest.approx(0.01, abs=0.003)


def test_error_ratio_comes_from_the_pod() -> None:
    obs = Observation((pod("a", error_ratio="0.2"), pod("b")))
    series = run(Simulation(seed=5, default_rps=1000), obs, 200)
    assert series["a"].errors / series["a"].requests == pytest.approx(0.2, rel=0.05)
    assert series["b"].errors / series["b"].requests == pytest.approx(0.005, rel=0.2)


def test_the_namespace_factor_and_error_addition_apply_to_every_pod_there() -> None:
    pods = tuple(pod(n, ns=ns, app=app, order_ratio=r) for ns in ("hurt", "fine")
                 for n, app, r in (("v1", "web", "0.05"), ("v2", "web", "0.1"), ("api", "api", "0.05")))
    namespaces = {"hurt": {ORDER_RATIO_FACTOR: "0.1", ERROR_RATIO_ADD: "0.1"}, "fine": {}}
    sim = Simulation(seed=9, default_rps=1000)
    for _ in range(400):
        sim.step(Observation(pods, namespaces), TICK)
    by = {(s.namespace, s.pod): s for s in sim.snapshot().pods}
    for name in ("v1", "v2", "api"):
        hurt, fine = by[("hurt", name)], by[("fine", name)]
        assert (hurt.orders / hurt.ok) / (fine.orders / fine.ok) == pytest.approx(0.1, rel=0.15)
        assert hurt.errors / hurt.requests == pytest.approx(0.105, rel=0.1)
        assert fine.errors / fine.requests < 0.01


def test_the_same_seed_and_inputs_give_the_same_counters() -> None:
    history = [
        Observation((pod("a"), pod("b", ready=False))),
        Observation((pod("a"), pod("b"), pod("c", error_ratio="0.3")), {"shop": {ORDER_RATIO_FACTOR: "0.5"}}),
        Observation((pod("b"), pod("c", error_ratio="0.3"))),
    ]

    def replay(seed: int) -> Snapshot:
        sim = Simulation(seed=seed)
        for obs in history:
            for _ in range(20):
                sim.step(obs, TICK)
        return sim.snapshot()

    assert replay(1) == replay(1)
    assert replay(1) != replay(2)


def test_counters_never_decrease_and_histograms_are_cumulative_with_count_equal_to_requests() -> None:
    rng = random.Random(0)
    sim = Simulation(seed=4)
    previous: dict[tuple[str, str], PodSeries] = {}
    for _ in range(300):
        pods = tuple(pod(f"p{i}", ready=rng.random() < 0.8, rps=str(rng.choice([1, 50, 400])),
                         latency_ms=str(rng.choice([0.5, 40, 3000]))) for i in range(rng.randint(0, 5)))
        sim.step(Observation(pods), rng.choice([0.1, 0.5, 2.0]))
        current = {(s.namespace, s.pod): s for s in sim.snapshot().pods}
        for key, s in current.items():
            assert len(s.buckets) == len(BUCKETS) + 1
            assert all(a <= b for a, b in zip(s.buckets, s.buckets[1:], strict=False))
            assert s.buckets[-1] == s.requests  # the +Inf bucket is _count
            assert s.duration_sum >= 0
            if key in previous:
                before = previous[key]
                assert s.ok >= before.ok and s.errors >= before.errors and s.orders >= before.orders
                assert all(b >= a for a, b in zip(before.buckets, s.buckets, strict=True))
                assert s.duration_sum >= before.duration_sum
        previous = current


def test_latency_follows_the_configured_mean() -> None:
    series = run(Simulation(seed=2, default_rps=1000), Observation((pod("fast"), pod("slow", latency_ms="400"))), 100)
    for name, mean in (("fast", 0.04), ("slow", 0.4)):
        s = series[name]
        assert s.duration_sum / s.requests == pytest.approx(mean, rel=0.05)
        # The exponential's CDF at each bound, against the bucket's share of requests.
        for bound, cumulative in zip(BUCKETS, s.buckets, strict=False):
            assert cumulative / s.requests == pytest.approx(1 - math.exp(-bound / mean), abs=0.02)


def test_pods_that_vanish_lose_their_series_and_services_their_gauge() -> None:
    sim = Simulation(seed=1)
    sim.step(Observation((pod("a"), pod("b"), pod("x", app="api", ready=False))), TICK)
    assert dict(sim.snapshot().ready) == {("shop", "web"): 2, ("shop", "api"): 0}
    result = sim.step(Observation((pod("a"),)), TICK)
    assert [s.pod for s in sim.snapshot().pods] == ["a"]
    assert dict(sim.snapshot().ready) == {("shop", "web"): 1}
    assert [p.name for p in result.stopped] == ["b"]
    assert result.started == ()


def test_bad_annotation_values_fall_back_to_defaults_and_are_reported() -> None:
    sim = Simulation(seed=1, default_rps=100)
    result = sim.step(Observation((pod("a", rps="lots", error_ratio="2"),), {"shop": {ERROR_RATIO_ADD: "x"}}), TICK)
    assert {(i.name, i.key, i.value) for i in result.invalid} == {("a", RPS, "lots"), ("", ERROR_RATIO_ADD, "x")}
    series = run(sim, Observation((pod("a", error_ratio="2"),)), 10)
    assert series["a"].errors == series["a"].requests  # clamped to 1


def test_samplers_have_the_right_mean_and_spread() -> None:
    rng = random.Random(1)
    for lam in (0.3, 12.0, 59.0, 500.0):
        draws = [sampling.poisson(rng, lam) for _ in range(4000)]
        mean = sum(draws) / len(draws)
        var = sum((d - mean) ** 2 for d in draws) / len(draws)
        assert mean == pytest.approx(lam, rel=0.05, abs=0.03)
        assert var == pytest.approx(lam, rel=0.15, abs=0.05)
    for n, p in ((10, 0.3), (200, 0.05), (1000, 0.9), (5000, 0.4)):
        draws = [sampling.binomial(rng, n, p) for _ in range(4000)]
        assert all(0 <= d <= n for d in draws)
        assert sum(draws) / len(draws) == pytest.approx(n * p, rel=0.03)
    counts, total = sampling.latency_buckets(rng, 0, 0.04, BUCKETS)
    assert counts == [0] * (len(BUCKETS) + 1) and total == 0


def test_observations_come_from_the_api_servers_json() -> None:
    pods = {"items": [
        {"metadata": {"namespace": "shop", "name": "a", "labels": {"app": "web"},
                      "annotations": {ENABLED: "true"}},
         "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        {"metadata": {"namespace": "shop", "name": "b", "labels": {"app": "web"},
                      "deletionTimestamp": "2026-01-01T00:00:00Z"},
         "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        {"metadata": {"namespace": "shop", "name": "c"},
         "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
        {"metadata": {"namespace": "shop", "name": "d"}, "status": {}},
    ]}
    obs = observation(pods, {"items": [{"metadata": {"name": "shop", "annotations": {ORDER_RATIO_FACTOR: "2"}}}]})
    assert [(p.name, p.app, p.ready, p.deleting) for p in obs.pods] == [
        ("a", "web", True, False), ("b", "web", True, True), ("c", "", False, False), ("d", "", False, False)]
    assert obs.pods[0].annotations == {ENABLED: "true"}
    assert obs.namespace_annotations == {"shop": {ORDER_RATIO_FACTOR: "2"}}


def test_the_served_text_is_prometheus_clients_own_rendering_byte_for_byte_and_made_once_per_snapshot() -> None:
    sim = Simulation(seed=3)
    odd = PodObservation("sh\\op", 'p"q', "we\nb", True, False, {ENABLED: "true"})
    for _ in range(3):
        sim.step(Observation((pod("a"), pod("b"), pod("c", ready=False), odd)), TICK)
    store = Store()
    store.publish(sim.snapshot())
    text = store.exposition()
    assert text == generate_latest(make_registry(store))
    assert b'pod="p\\"q"' in text and b"orders_total{" in text
    assert store.exposition() is text                    # a second scrape of the same tick: not rendered again
    sim.step(Observation((pod("a"),)), TICK)
    store.publish(sim.snapshot())
    assert store.exposition() == generate_latest(make_registry(store)) != text


def test_the_exposition_has_every_series_with_its_labels() -> None:
    sim = Simulation(seed=1)
    sim.step(Observation((pod("a"), pod("b", ready=False))), TICK)
    store = Store()
    assert not store.fresh(10.0)  # /healthz says 503 until the first poll
    store.publish(sim.snapshot())
    assert store.fresh(10.0)

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(generate_latest(make_registry(store)).decode())
        for sample in family.samples
    }

    def value(name: str, pod_name: str, **extra: str) -> float:
        return samples[(name, tuple(sorted({"namespace": "shop", "pod": pod_name, "app": "web", **extra}.items())))]

    a = {s.pod: s for s in sim.snapshot().pods}["a"]
    assert a.requests > 0
    assert value("http_requests_total", "a", code="200") == a.ok
    assert value("http_requests_total", "a", code="500") == a.errors
    assert value("orders_total", "a") == a.orders
    assert value("http_request_duration_seconds_count", "a") == a.requests
    assert value("http_request_duration_seconds_bucket", "a", le="+Inf") == a.requests
    assert [value("http_request_duration_seconds_bucket", "a", le=le) for le in
            ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0")] == list(a.buckets[:-1])
    assert value("http_request_duration_seconds_sum", "a") == pytest.approx(a.duration_sum)
    assert value("http_requests_total", "b", code="200") == 0  # live but not Ready: exported at zero
    assert samples[("sim_ready_pods", (("app", "web"), ("namespace", "shop")))] == 1


# --- model.Behaviour from a key of the ConfigMaps and Secrets a pod reads (sim.guarded.dev/config-key) ---

SHOP_CONFIG = "currency: EUR\ncheckout:\n  provider: acme\n"  # a real app's settings: nothing for the simulator
Refs = tuple[dict[str, Any], ...]


def raw_pod(name: str, *, volumes: Refs = (), env_from: Refs = (), key: str | None = "shop.yaml",
            ns: str = "shop") -> dict[str, Any]:
    annotations = {ENABLED: "true", ORDER_RATIO: "0.05", **({model.CONFIG_KEY: key} if key else {})}
    return {"metadata": {"namespace": ns, "name": name, "labels": {"app": "web"}, "annotations": annotations},
            "spec": {"volumes": list(volumes), "containers": [{"name": "app", "envFrom": list(env_from)}]},
            "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


def cm(name: str, kind: str = CONFIG_MAP) -> dict[str, Any]:  # a volume
    source = {"configMap": {"name": name}} if kind == CONFIG_MAP else {"secret": {"secretName": name}}
    return {"name": name, **source}


def config_list(kind: str, *objects: tuple[str, dict[str, str]], ns: str = "shop") -> tuple[str, dict[str, Any]]:
    """A ConfigMapList or SecretList body; a Secret's values are base64-encoded as the API server does."""
    items = [{"metadata": {"namespace": ns, "name": n}, "data": {
        k: base64.b64encode(v.encode()).decode() if kind == SECRET else v for k, v in d.items()}} for n, d in objects]
    return kind, {"kind": f"{kind}List", "items": items}


def observe(pods: list[dict[str, Any]], *lists: tuple[str, dict[str, Any]]) -> Observation:
    return with_configs(observation({"items": pods}, {"items": []}), lists)


def behaviours(obs: Observation) -> tuple[dict[str, model.Behaviour], tuple[model.InvalidConfig, ...]]:
    bad: list[model.InvalidConfig] = []
    return {p.name: model.behaviour(model.with_config(p, obs.config_data, bad), {}) for p in obs.pods}, tuple(bad)


def test_a_config_map_change_drops_orders_only_for_the_pods_that_read_it() -> None:
    pods = [raw_pod("canary", volumes=(cm("shop-config-3f2a9c1b7d"),)), raw_pod("stable", volumes=(cm("shop-config"),))]
    obs = observe(pods, config_list(CONFIG_MAP, ("shop-config", {"shop.yaml": SHOP_CONFIG}), (
        "shop-config-3f2a9c1b7d", {"shop.yaml": SHOP_CONFIG + "order-ratio: 0.0005\nrps: 4000\n"})))
    assert config_reads(obs) == [("shop", CONFIG_MAP)]
    by, bad = behaviours(obs)
    assert (by["canary"].order_ratio, by["stable"].order_ratio, bad) == (0.0005, 0.05, ())
    sim = Simulation(seed=11, default_rps=100)
    assert sim.step(obs, TICK).invalid_config == ()
    series = run(sim, obs, 399)
    assert sum(s.requests for s in series.values()) == pytest.approx(4000 * 200, rel=0.02)  # rps from the canary
    ratio = (series["canary"].orders / series["canary"].ok) / (series["stable"].orders / series["stable"].ok)
    assert ratio == pytest.approx(0.01, abs=0.003)


def test_a_secrets_base64_value_is_decoded_envfrom_is_read_and_the_first_object_with_the_key_wins() -> None:
    settings = '{"error-ratio": 0.25, "latency-ms": 300}'
    projected = {"name": "p", "projected": {"sources": [{"configMap": {"name": "a"}}, {"secret": {"name": "s"}}]}}
    pods = [raw_pod("vol", volumes=(cm("s", SECRET),)), raw_pod("projected", volumes=(projected,)),
            raw_pod("env", env_from=({"configMapRef": {"name": "a"}}, {"secretRef": {"name": "s"}})),
            raw_pod("first", volumes=(cm("a"), cm("b")), env_from=({"secretRef": {"name": "s"}},))]
    configs = config_list(CONFIG_MAP, ("a", {"other": "order-ratio: 0.9"}), ("b", {"shop.yaml": "error-ratio: 0.5"}))
    obs = observe(pods, configs, config_list(SECRET, ("s", {"shop.yaml": settings})))
    assert obs.config_data[("shop", SECRET, "s")] == {"shop.yaml": settings}
    assert obs.pods[2].config_refs == ((CONFIG_MAP, "a"), (SECRET, "s"))
    assert config_reads(obs) == [("shop", CONFIG_MAP), ("shop", SECRET)]
    by, bad = behaviours(obs)
    assert bad == () and {n: (b.error_ratio, b.latency_s, b.order_ratio) for n, b in by.items()} == {
        "vol": (0.25, 0.3, 0.05), "projected": (0.25, 0.3, 0.05), "env": (0.25, 0.3, 0.05), "first": (0.5, 0.04, 0.05)}


def test_json_and_yaml_values_both_parse() -> None:
    assert model.parse_settings('{"order-ratio": 0.0005, "rps": "40"}') == {"order-ratio": 0.0005, "rps": "40"}
    assert model.parse_settings("order-ratio: 0.0005\nf:\n  x: [1, 2]\n") == {"order-ratio": 0.0005, "f": {"x": [1, 2]}}
    obs = observe([raw_pod("json", volumes=(cm("j"),)), raw_pod("yaml", volumes=(cm("y"),))], config_list(
        CONFIG_MAP, ("j", {"shop.yaml": '{"order-ratio": "0.01"}'}), ("y", {"shop.yaml": "# x\norder-ratio: 1e-2"})))
    by, _ = behaviours(obs)
    assert by["json"].order_ratio == by["yaml"].order_ratio == 0.01


@pytest.mark.parametrize(("kind", "data", "problem", "entry", "shown"), [
    (CONFIG_MAP, {"other.yaml": "order-ratio: 0.0005"}, model.NOT_FOUND, "", ""),  # the object lacks the key
    (CONFIG_MAP, {"shop.yaml": "order-ratio: [0.0005"}, model.NOT_A_MAPPING, "", ""),  # does not parse
    (CONFIG_MAP, {"shop.yaml": "0.0005"}, model.NOT_A_MAPPING, "", ""),  # parses, but not to a mapping
    (CONFIG_MAP, {"shop.yaml": "order-ratio: lots"}, model.NOT_A_NUMBER, "order-ratio", "lots"),
    (SECRET, {"shop.yaml": "order-ratio: hunter2"}, model.NOT_A_NUMBER, "order-ratio", ""),  # value never shown
    (SECRET, {"shop.yaml": "password: hunter2\norder-ratio: [0"}, model.NOT_A_MAPPING, "", ""),
])
def test_an_unusable_config_key_falls_back_to_the_annotations_and_is_reported(
        kind: str, data: dict[str, str], problem: str, entry: str, shown: str) -> None:
    obs = observe([raw_pod("p", volumes=(cm("cfg", kind),))], config_list(kind, ("cfg", data)))
    result = Simulation(seed=1).step(obs, TICK)
    source, searched = ("", (f"{kind}/cfg",)) if problem == model.NOT_FOUND else (f"{kind}/cfg", ())
    bad = model.InvalidConfig("shop", "p", "shop.yaml", problem, source, searched, entry, shown)
    assert result.invalid_config == (bad,)
    assert "hunter2" not in repr(result)
    assert behaviours(obs)[0]["p"].order_ratio == 0.05  # the pod's annotation


def test_a_missing_object_falls_back_and_the_log_names_it_but_never_shows_a_secrets_values() -> None:
    pods = [raw_pod("p", volumes=(cm("shop-config-3f2a9c1b7d"),)), raw_pod("s", volumes=(cm("s", SECRET),))]
    obs = observe(pods, config_list(SECRET, ("s", {"shop.yaml": "password: hunter2\nrps: hunter2"})))
    result = Simulation(seed=1).step(obs, TICK)
    assert result.invalid_config[0] == model.InvalidConfig(
        "shop", "p", "shop.yaml", model.NOT_FOUND, searched=("ConfigMap/shop-config-3f2a9c1b7d (missing)",))
    assert behaviours(obs)[0]["p"].order_ratio == 0.05
    with capture_logs() as logs:
        Loop(None, Simulation(seed=1), Store(), TICK, threading.Event()).report(  # type: ignore[arg-type]
            model.StepResult(invalid_config=result.invalid_config))
    assert [(e["pod"], e["event"]) for e in logs] == [
        ("p", f"{model.NOT_FOUND}; using the annotations"), ("s", f"{model.NOT_A_NUMBER}; using the annotations")]
    assert (logs[1]["source"], logs[1]["entry"], logs[1]["value"]) == ("Secret/s", "rps", None)
    assert "hunter2" not in repr(logs)


ROUTES = ("gateway.networking.k8s.io", "v1", "httproutes")


class FakeCore:
    """A CoreV1Api that records its list calls and answers them raw from `bodies`, by (call, *namespace)."""
    def __init__(self, bodies: dict[tuple[str, ...], Any]) -> None:
        self.bodies, self.calls = bodies, []  # type: dict[tuple[str, ...], Any], list[tuple[str, ...]]

    def __getattr__(self, call: str) -> Any:
        def answer(*namespace: str, **_: Any) -> SimpleNamespace:
            self.calls.append((call, *namespace))
            return SimpleNamespace(data=json.dumps(self.bodies[(call, *namespace)]).encode())
        return answer


def listed(reader: ClusterReader) -> None:
    """The reader's pods and namespaces as its watches would hold them after their first list (no thread)."""
    reader.pods = Informer("pods", reader.core.list_pod_for_all_namespaces, 1.0)
    reader.namespaces = Informer("namespaces", reader.core.list_namespace, 1.0)
    reader.pods.relist()
    reader.namespaces.relist()


def test_the_pods_are_not_known_before_their_first_list() -> None:
    with pytest.raises(RuntimeError, match="pods: not listed yet"):
        Informer("pods", FakeCore({}).list_pod_for_all_namespaces, 1.0).items()


def test_config_maps_and_secrets_are_listed_only_where_a_pod_has_a_config_key_once_per_kind() -> None:
    reader = ClusterReader.__new__(ClusterReader)  # no kubeconfig: the API is the fake's
    reader.label_selector, reader.timeout = "app", 1.0
    reader.custom = FakeCore({("list_cluster_custom_object", *ROUTES): {"items": []}})  # type: ignore[assignment]
    plain = [raw_pod(f"p{i}", ns=ns, volumes=(cm("c"),), key=None) for i, ns in enumerate("ab")]
    base = {("list_pod_for_all_namespaces",): {"items": plain}, ("list_namespace",): {"items": []}}
    reader.core = core = FakeCore(base)  # type: ignore[assignment]
    listed(reader)
    assert reader.observe().config_data == {}
    assert core.calls == [("list_pod_for_all_namespaces",), ("list_namespace",)]  # the watches' lists alone
    opted = [raw_pod(n, ns="b", volumes=(cm("c"),), env_from=({"secretRef": {"name": "s"}},)) for n in "qr"]
    cms = config_list(CONFIG_MAP, ("c", {"shop.yaml": "order-ratio: 0.5"}), ns="b")[1]
    reader.core = core = FakeCore({**base, ("list_pod_for_all_namespaces",): {"items": plain + opted},
                                   ("list_namespaced_config_map", "b"): cms, ("list_namespaced_secret", "b"): {}})
    listed(reader)
    obs = reader.observe()
    assert core.calls[2:] == [("list_namespaced_config_map", "b"), ("list_namespaced_secret", "b")]
    assert behaviours(obs)[0]["q"].order_ratio == 0.5
