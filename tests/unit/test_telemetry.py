"""The operator's own metrics, read off plain decisions: what an operator's dashboard would show."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path

import pytest
import urllib3
from kubernetes.client.rest import ApiException
from prometheus_client import CollectorRegistry
from specs import THREE, spec
from world import World

from guarded.api.rollout import AnalysisRecord, AnalysisStatus, EvidenceRecord, GuardedRolloutStatus, JudgementRecord
from guarded.api.stages import Phase, Stage
from guarded.core.actions import Transition
from guarded.core.analysis import AnalysisObservation, MetricData
from guarded.core.engine import Decision
from guarded.core.observations import Observations
from guarded.handlers.telemetry import TELEMETRY, Telemetry
from guarded.kube.client import Conflict

DASHBOARD = Path(__file__).resolve().parents[2] / "manifests" / "grafana" / "guarded-rollouts-dashboard.json"
NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def obs(namespace: str = "shop", name: str = "release", analysis: AnalysisObservation | None = None) -> Observations:
    return Observations(now=NOW, namespace=namespace, name=name, uid="u", generation=1, target=None, canary=None,
                        analysis=analysis)


def status(stage: Stage = Stage.PENDING, phase: Phase = Phase.PENDING, wave: int | None = None,
           **fields: object) -> GuardedRolloutStatus:
    return GuardedRolloutStatus(stage=stage, phase=phase, wave=wave, **fields)  # type: ignore[arg-type]


def decision(new: GuardedRolloutStatus, *path: str) -> Decision:
    """A decision that moved through the positions of `path` ("Pending", "1", ... as the engine names them)."""
    moves = tuple(Transition(source=a, target=b) for a, b in pairwise(path))
    return Decision(actions=(), status=new, events=(), requeue_after=None, transitions=moves)


def sample(t: Telemetry, name: str, **labels: str) -> float:
    return t.registry.get_sample_value(name, labels) or 0.0


def transitions(t: Telemetry) -> list[tuple[str, str, float]]:
    family = next(f for f in t.registry.collect() if f.name == "guarded_wave_transitions")
    return sorted((s.labels["from"], s.labels["to"], s.value) for s in family.samples if s.name.endswith("_total"))


def test_starting_and_advancing_waves_are_counted_from_and_to_each_wave() -> None:
    t = Telemetry()
    pending = status()
    wave1 = status(Stage.SCALE_CANARY, Phase.PROGRESSING, 0)
    t.record(obs(), pending, decision(wave1, "Pending", "1"), 0.002)
    baking = status(Stage.BAKE, Phase.PROGRESSING, 0)
    t.record(obs(), wave1, decision(baking), 0.001)  # same wave, other stage: no transition
    wave2 = status(Stage.SCALE_CANARY, Phase.PROGRESSING, 1)
    t.record(obs(), baking, decision(wave2, "1", "2"), 0.001)

    assert transitions(t) == [("1", "2", 1.0), ("Pending", "1", 1.0)]
    assert sample(t, "guarded_rollouts", namespace="shop", phase="Progressing") == 1
    assert sample(t, "guarded_decision_seconds_count") == 3
    assert sample(t, "guarded_decision_seconds_sum") == pytest.approx(0.004)


def test_the_phase_gauge_moves_each_rollout_once_and_forgets_deleted_ones() -> None:
    t = Telemetry()
    progressing = status(Stage.BAKE, Phase.PROGRESSING, 3)
    for name in ("a", "b"):
        t.record(obs(name=name), status(), decision(progressing), 0.001)
        t.record(obs(name=name), progressing, decision(progressing), 0.001)  # seen again: counted once
    done = status(Stage.SUCCEEDED, Phase.SUCCEEDED, 3)
    t.record(obs(name="a"), progressing, decision(done, "4", "Succeeded"), 0.001)
    assert sample(t, "guarded_rollouts", namespace="shop", phase="Progressing") == 1
    assert sample(t, "guarded_rollouts", namespace="shop", phase="Succeeded") == 1

    t.forget("shop", "a")
    t.forget("shop", "a")  # a second stop of the same daemon changes nothing
    t.forget("shop", "never-seen")
    assert sample(t, "guarded_rollouts", namespace="shop", phase="Succeeded") == 0
    assert sample(t, "guarded_rollouts", namespace="shop", phase="Progressing") == 1


def failing_record(at: str) -> AnalysisRecord:
    def evidence(judge: str, verdict: str) -> EvidenceRecord:
        return EvidenceRecord(judge=judge, verdict=verdict)
    return AnalysisRecord(time=at, wave=1, verdict="Fail", judgements=[
        JudgementRecord(metric="order-rate", verdict="Fail",
                        evidence=[evidence("Stable", "Fail"), evidence("PreRollout", "Inconclusive")]),
        JudgementRecord(metric="error-rate", verdict="Pass", evidence=[evidence("Stable", "Pass")]),
    ])


def test_an_analysis_failure_counts_each_judge_the_rollback_and_its_reason() -> None:
    t = Telemetry()
    baking = status(Stage.BAKE, Phase.PROGRESSING, 1)
    at = "2026-11-22T12:00:05Z"
    rolling_back = status(Stage.ROLLING_BACK, Phase.ROLLING_BACK, 1, rollback_reason="AnalysisFailed",
                          analysis=AnalysisStatus(last_at=at, last_verdict="Fail", recent=[failing_record(at)]))
    t.record(obs(), baking, decision(rolling_back, "2", "RollingBack"), 0.001)
    rolled_back = rolling_back.model_copy(update={"stage": Stage.ROLLED_BACK, "phase": Phase.ROLLED_BACK})
    t.record(obs(), rolling_back, decision(rolled_back, "RollingBack", "RolledBack"), 0.001)

    judgements = {(g, j, r): sample(t, "guarded_judgements_total", namespace="shop", guard=g, judge=j, result=r)
                  for g, j, r in [("order-rate", "Stable", "Fail"), ("order-rate", "PreRollout", "Inconclusive"),
                                  ("error-rate", "Stable", "Pass")]}
    assert judgements == {k: 1.0 for k in judgements}, "one analysis step, counted once though kept in status"
    assert sample(t, "guarded_analysis_steps_total", namespace="shop", result="Fail") == 1
    assert sample(t, "guarded_rollbacks_total", namespace="shop", reason="AnalysisFailed") == 1
    assert transitions(t) == [("2", "RollingBack", 1.0), ("RollingBack", "RolledBack", 1.0)]


def test_a_namespace_whose_last_rollout_went_keeps_no_series() -> None:
    """Forgetting a rollout drops its wave transitions; forgetting a namespace's last one drops every series
    labelled with that namespace, so an operator that saw many namespaces come and go keeps none of theirs."""
    t = Telemetry()
    progressing = status(Stage.SCALE_CANARY, Phase.PROGRESSING, 0)
    for namespace, name in (("shop", "a"), ("shop", "b"), ("cart", "c")):
        t.record(obs(namespace=namespace, name=name), status(), decision(progressing, "Pending", "1"), 0.001)
    at = "2026-11-22T12:00:05Z"
    rolling_back = status(Stage.ROLLING_BACK, Phase.ROLLING_BACK, 0, rollback_reason="AnalysisFailed",
                          analysis=AnalysisStatus(last_at=at, last_verdict="Fail", recent=[failing_record(at)]))
    t.record(obs(name="a"), progressing, decision(rolling_back, "1", "RollingBack"), 0.001)

    def namespaces() -> set[str]:
        return {s.labels["namespace"] for f in t.registry.collect() for s in f.samples if "namespace" in s.labels}

    def series(namespace: str) -> int:
        return sum(1 for f in t.registry.collect() for s in f.samples if s.labels.get("namespace") == namespace)

    assert sample(t, "guarded_rollbacks_total", namespace="shop", reason="AnalysisFailed") == 1
    assert sample(t, "guarded_wave_transitions_total", namespace="shop", rollout="a", **{"from": "1"},
                  to="RollingBack") == 1
    t.forget("shop", "a")
    assert sample(t, "guarded_wave_transitions_total", namespace="shop", rollout="a", **{"from": "1"},
                  to="RollingBack") == 0
    assert sample(t, "guarded_rollbacks_total", namespace="shop", reason="AnalysisFailed") == 1  # b is left
    assert sample(t, "guarded_wave_transitions_total", namespace="shop", rollout="b", **{"from": "Pending"},
                  to="1") == 1
    t.forget("shop", "b")
    assert namespaces() == {"cart"} and series("shop") == 0
    assert series("cart") > 0


def test_an_abort_before_any_wave_is_a_rollback_though_no_rollback_event_was_recorded() -> None:
    t = Telemetry()
    aborted = status(Stage.ROLLED_BACK, Phase.ROLLED_BACK, rollback_reason="Aborted")
    t.record(obs(), status(), decision(aborted, "Pending", "RolledBack"), 0.001)
    assert transitions(t) == [("Pending", "RolledBack", 1.0)]
    assert sample(t, "guarded_rollbacks_total", namespace="shop", reason="Aborted") == 1


def test_a_restart_that_keeps_old_analysis_records_does_not_count_them_again() -> None:
    t = Telemetry()
    at = "2026-11-22T12:00:05Z"
    old = status(Stage.ROLLED_BACK, Phase.ROLLED_BACK, 1, rollback_reason="AnalysisFailed",
                 analysis=AnalysisStatus(last_at=at, recent=[failing_record(at)]))
    retried = status(Stage.SCALE_CANARY, Phase.PROGRESSING, 0, analysis=AnalysisStatus(recent=[failing_record(at)]))
    t.record(obs(), old, decision(retried, "RolledBack", "Pending", "1"), 0.001)
    assert sample(t, "guarded_analysis_steps_total", namespace="shop", result="Fail") == 0
    assert transitions(t) == [("Pending", "1", 1.0), ("RolledBack", "Pending", 1.0)]
    assert sample(t, "guarded_rollbacks_total", namespace="shop", reason="AnalysisFailed") == 0


def test_failed_queries_are_counted_per_guard_and_for_the_alerts_query() -> None:
    t = Telemetry()
    baking = status(Stage.BAKE, Phase.PROGRESSING, 0)
    seen = AnalysisObservation(metrics={"order-rate": MetricData(error="Prometheus unreachable"),
                                        "error-rate": MetricData()}, alerts_error="Prometheus unreachable")
    t.record(obs(analysis=seen), baking, decision(baking), 0.001)
    assert sample(t, "guarded_metric_query_errors_total", namespace="shop", guard="order-rate") == 1
    assert sample(t, "guarded_metric_query_errors_total", namespace="shop", guard="alerts") == 1
    assert sample(t, "guarded_metric_query_errors_total", namespace="shop", guard="error-rate") == 0


@pytest.mark.parametrize("exc, code, result", [
    (Conflict("moved"), "409", "conflict"),
    (ApiException(status=503), "503", "error"),
    (urllib3.exceptions.MaxRetryError(None, "/", urllib3.exceptions.NewConnectionError(None, "refused")),
     "connection", "error"),
    (urllib3.exceptions.ReadTimeoutError(None, "/", "read timed out"), "timeout", "error"),
    (TimeoutError(), None, "timeout"),
    (ValueError("a bug"), None, "error"),
])
def test_a_failed_reconcile_is_timed_and_its_api_error_counted(exc: Exception, code: str | None,
                                                               result: str) -> None:
    t = Telemetry()
    with pytest.raises(type(exc)), t.reconciling():
        raise exc
    assert sample(t, "guarded_reconcile_seconds_count", result=result) == 1
    counted = {s.labels["code"]: s.value for f in t.registry.collect() if f.name == "guarded_kubernetes_api_errors"
               for s in f.samples if s.name.endswith("_total")}
    assert counted == ({code: 1.0} if code else {})


def test_a_successful_reconcile_is_timed_as_ok() -> None:
    t = Telemetry()
    with t.reconciling():
        pass
    assert sample(t, "guarded_reconcile_seconds_count", result="ok") == 1


def replay(world: World) -> Telemetry:
    t = Telemetry()
    for (_, old, seen), made in zip(world.inputs, world.log, strict=True):
        t.record(seen, old, made, 0.001)
    return t


def test_the_engines_own_decisions_read_as_one_wave_after_another_then_promotion() -> None:
    world = World(spec(waves=THREE))
    world.run_until_done()
    t = replay(world)
    assert transitions(t) == [("1", "2", 1.0), ("2", "3", 1.0), ("3", "Promote", 1.0), ("Pending", "1", 1.0),
                              ("Promote", "Succeeded", 1.0)]
    assert sample(t, "guarded_rollouts", namespace="shop", phase="Succeeded") == 1
    assert sample(t, "guarded_rollouts", namespace="shop", phase="Progressing") == 0


def test_the_engines_abort_reads_as_a_rollback_from_the_wave_it_stopped() -> None:
    world = World(spec(waves=THREE))
    world.run_until(stage=Stage.BAKE, wave=1)
    world.ask("abort")
    world.run_until_done()
    t = replay(world)
    assert ("2", "RollingBack", 1.0) in transitions(t)
    assert ("RollingBack", "RolledBack", 1.0) in transitions(t)
    assert sample(t, "guarded_rollbacks_total", namespace="shop", reason="Aborted") == 1


def test_every_dashboard_query_uses_a_metric_the_operator_exports() -> None:
    """A renamed metric must not leave a dashboard panel silently empty."""
    model = json.loads(DASHBOARD.read_text())
    exported = TELEMETRY.metric_names()
    panels = [p for row in model["panels"] for p in [row, *row.get("panels", [])]]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    assert len(exprs) >= 8
    for expr in exprs:
        names = set(re.findall(r"\b((?:guarded|process)_[a-z_]+)\b", expr))
        assert names, f"no operator metric in {expr!r}"
        assert names <= exported, f"{expr!r} uses {names - exported}, not exported"
    for needed in ("guarded_rollouts", "guarded_wave_transitions_total", "guarded_judgements_total",
                   "guarded_rollbacks_total", "guarded_decision_seconds_bucket", "guarded_reconcile_seconds_bucket",
                   "guarded_kubernetes_api_errors_total", "guarded_metric_query_errors_total"):
        assert any(needed in e for e in exprs), f"no panel shows {needed}"


def test_the_served_registry_names_every_operator_metric_and_the_process_ones() -> None:
    names = TELEMETRY.metric_names()
    assert {"guarded_rollouts", "guarded_wave_transitions_total", "guarded_decision_seconds_bucket",
            "process_resident_memory_bytes"} <= names
    assert "process_resident_memory_bytes" not in Telemetry(CollectorRegistry()).metric_names()
