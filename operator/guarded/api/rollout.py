"""The GuardedRollout resource: one change to one workload, moved out in waves.

These pydantic models are the single source of the resource's shape: the CRD in crds/ is
generated from them (``python -m guarded.api.crdgen``), the operator parses objects with them,
and the core reasons about them. They are frozen value objects: the core never mutates its inputs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Literal

from pydantic import Field, model_validator

from guarded.api.analysis import Analysis, AnalysisRecord
from guarded.api.analysis import EvidenceRecord as EvidenceRecord  # re-exported: parts of status.analysis.recent
from guarded.api.analysis import JudgementRecord as JudgementRecord  # re-exported
from guarded.api.change import Change as Change  # re-exported: spec.change and its parts
from guarded.api.change import ConfigMapChange as ConfigMapChange  # re-exported
from guarded.api.change import ContainerChange as ContainerChange  # re-exported
from guarded.api.change import EnvVar as EnvVar  # re-exported
from guarded.api.change import SecretChange as SecretChange  # re-exported
from guarded.api.common import GROUP, ApiModel, Condition, DnsName, bounded_duration
from guarded.api.stages import Phase, Stage

KIND = "GuardedRollout"
PLURAL = "guardedrollouts"
SHORT_NAMES = ["gro"]

REQUEST_ANNOTATION = f"{GROUP}/request"
# What a request in that annotation may ask for.
REQUEST_ACTIONS = ("abort", "pause", "resume", "promote", "promote-full", "retry")
# Stamped by the operator's admission webhook from the API server's userInfo; never typed by users.
AUTHORS_ANNOTATION = f"{GROUP}/authors"          # JSON list: the creator and everyone who changed the spec
REQUESTER_ANNOTATION = f"{GROUP}/request-by"      # who set the request annotation


def authors_in(annotations: Mapping[str, str] | None) -> list[str] | None:
    """The authors admission stamped on a GuardedRollout; None when there are none or they are unreadable."""
    raw = (annotations or {}).get(AUTHORS_ANNOTATION)
    try:
        names = json.loads(raw) if raw else None
    except ValueError:
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


class TargetRef(ApiModel):
    """The stable Deployment the change applies to, in the rollout's namespace."""

    kind: Literal["Deployment"] = "Deployment"
    name: DnsName


Bake = bounded_duration("spec.waves[].bake", "1s", "168h",
                        "How long the wave runs healthy before the next one (0s is refused).")
ProgressDeadline = bounded_duration("spec.progressDeadline", "10s", "24h",
                                    "How long a wave may wait for its canary pods to be Ready before rolling back.")


class Wave(ApiModel):
    """One step: a share of the ready pods (weight, percent) or a number of canary pods (replicas)."""

    weight: int | None = Field(default=None, ge=1, le=100, description="Percent of ready pods that run the canary.")
    replicas: int | None = Field(default=None, ge=1, le=10000, description="Number of canary pods.")
    bake: Bake = "60s"
    manual_gate: bool = Field(default=False, description="After the bake, wait for a promote request.")

    @model_validator(mode="after")
    def _one_size(self) -> Wave:
        if (self.weight is None) == (self.replicas is None):
            raise ValueError("a wave needs exactly one of weight or replicas")
        return self


def default_waves() -> list[Wave]:
    return [Wave(replicas=1), Wave(weight=10), Wave(weight=50), Wave(weight=100)]


WAVES_CEL = [
    {
        "rule": "self.all(w, has(w.weight) != has(w.replicas))",
        "message": "each wave needs exactly one of weight or replicas",
    },
    {
        "rule": "self.filter(w, has(w.weight)).map(w, w.weight).isSorted()"
        " && self.filter(w, has(w.weight)).map(w, w.weight).all(x,"
        " self.filter(w, has(w.weight) && w.weight == x).size() == 1)",
        "message": "wave weights must increase strictly",
        "fieldPath": "",
    },
    {
        "rule": "self.filter(w, has(w.replicas)).map(w, w.replicas).isSorted()"
        " && self.filter(w, has(w.replicas)).map(w, w.replicas).all(x,"
        " self.filter(w, has(w.replicas) && w.replicas == x).size() == 1)",
        "message": "wave replica counts must increase strictly",
    },
]


class HttpRouteRef(ApiModel):
    """The Gateway API HTTPRoute (gateway.networking.k8s.io/v1) whose backendRef weights carry the waves."""

    name: DnsName = Field(description="The HTTPRoute, in the rollout's namespace.")
    rule_index: int | None = Field(
        default=None, ge=0, le=63, description="The one rule (0-based) whose weights the waves set. Default: every "
        "rule that sends to the stable Service.")


class TrafficRouting(ApiModel):
    """Route each wave's weight through an HTTPRoute instead of through the share of ready pods
    (docs/traffic-routing.md): the canary gets its own Service, `<service>-canary`, as a second backendRef."""

    http_route: HttpRouteRef
    service: DnsName | None = Field(
        default=None, description="The stable Service the route's backendRefs name. Default: the one Service the "
        "route's rules send to.")


class GuardedRolloutSpec(ApiModel):
    target: TargetRef
    change: Change
    consumers: list[TargetRef] = Field(
        default_factory=list, max_length=32,
        description="Other Deployments that read the changed configuration and move with this rollout: the first "
        "wave runs on spec.target alone, later waves grow across every consumer, each judged against its own "
        "stable pods; a failure in any rolls back all. Only with a configuration-only change.")
    waves: list[Wave] = Field(
        default_factory=default_waves, min_length=1, max_length=20,
        description="Ordered steps. Default: 1 pod, 10%, 50%, 100%.",
        json_schema_extra={"x-kubernetes-validations": WAVES_CEL},
    )
    progress_deadline: ProgressDeadline = "10m"
    description: str | None = Field(default=None, max_length=4096, description="What changes and why.")
    ticket: str | None = Field(default=None, max_length=256, description="Change ticket or issue reference.")
    rollback_plan: str | None = Field(default=None, max_length=4096)
    ai_assisted: bool = Field(default=False, description="The change was written with AI assistance.")
    emergency: bool = Field(
        default=False, description="Break glass: a fix that cannot wait. Every wave's bake is shortened to the "
        "policies' emergencyBake (30s when none sets it), and the change needs at least one approval by someone "
        "other than its authors even when no policy asks for one. Read when the rollout starts.")
    analysis: Analysis | None = Field(default=None, description="Metric analysis and alerts that guard every wave.")
    traffic_routing: TrafficRouting | None = Field(
        default=None, description="Set each wave's weight as HTTPRoute backendRef weights between the stable Service "
        "and a canary Service; the canary runs ceil(replicas * weight / 100) pods and the stable keeps all of its "
        "own until promotion.")

    @model_validator(mode="after")
    def _routing(self) -> GuardedRolloutSpec:
        if self.traffic_routing is not None and self.consumers:
            raise ValueError("spec.trafficRouting: a shared change (spec.consumers) cannot be routed by weight")
        return self

    @model_validator(mode="after")
    def _consumers(self) -> GuardedRolloutSpec:
        names = [c.name for c in self.consumers]
        if self.target.name in names or len(names) != len(set(names)):
            raise ValueError("spec.consumers: each Deployment may appear once, and not as spec.target too")
        c = self.change
        if names and (c.containers or c.pod_template_patch or c.template is not None
                      or not (c.config_maps or c.secrets)):
            raise ValueError("spec.consumers: only a change of configMaps or secrets alone can move several "
                             "Deployments (a pod template change is for spec.target only)")
        return self

    @model_validator(mode="after")
    def _waves_increase(self) -> GuardedRolloutSpec:
        for attr in ("weight", "replicas"):
            sizes = [getattr(w, attr) for w in self.waves if getattr(w, attr) is not None]
            for i in range(1, len(sizes)):
                if sizes[i] <= sizes[i - 1]:
                    raise ValueError(f"spec.waves: wave {attr}s must increase strictly, got {sizes}")
        return self


class HistoryEntry(ApiModel):
    time: str
    reason: str
    message: str
    wave: int | None = None
    revision: str | None = None


class RequestRecord(ApiModel):
    id: str
    action: str
    result: Literal["Accepted", "Rejected"]
    message: str = ""
    time: str
    by: str | None = Field(default=None, description="Who asked (the authenticated user, stamped at admission).")


class PreRolloutCounts(ApiModel):
    metric: str
    events: float
    requests: float


class AnalysisStatus(ApiModel):
    since: str | None = Field(default=None, description="Start of the current wave's analysis window.")
    last_at: str | None = None
    last_verdict: str | None = None
    fresh_since: str | None = Field(
        default=None, description="Since when every judgement had fresh data (the newest interval of every "
        "metric); null when the latest one had none (a gap: its time does not count as bake).")
    consecutive_inconclusive: int = 0
    pre_rollout: list[PreRolloutCounts] = Field(default_factory=list)
    recent: list[AnalysisRecord] = Field(default_factory=list, description=(
        "The latest judgements (8), newest last. Only the newest of each wave keeps the numbers behind its "
        "verdicts (each judge's counts, thresholds, power); an older one keeps its verdicts and, per judge, "
        "both ratios and the log likelihood ratio."))


class ApprovalSeen(ApiModel):
    """A RolloutApproval as the operator judged it for the current revision."""

    name: str
    approver: str
    groups: list[str] = Field(default_factory=list)
    revision: int | None = None
    counted: bool
    reason: str = Field(default="", description="Why it does not count (stale, the author's own, ...).")


class GateRecord(ApiModel):
    """One pre-flight gate: Validation, Documentation, Metrics, BlastRadius, Approvals, Freeze, Concurrency."""

    gate: str
    passed: bool
    reason: str
    message: str = ""


class RuleSource(ApiModel):
    rule: str
    value: str
    set_by: list[str] = Field(default_factory=list, description="The policies (or safety resets) that set it.")


class PolicyStatus(ApiModel):
    policies: list[str] = Field(default_factory=list, description="RolloutPolicies that select this rollout.")
    safety_resets: list[str] = Field(default_factory=list, description="Policies whose safety reset is active.")
    rules: list[RuleSource] = Field(default_factory=list, description="The strictest value of each rule.")


class BlastRadius(ApiModel):
    pods: int = Field(description="Pods that run the change once promoted.")
    service_pods: int | None = Field(default=None, description="Pods behind the Services that route to the target.")
    share_percent: int | None = None
    namespaces: list[str] = Field(default_factory=list)
    high: bool = False
    reason: str = ""


class ValidationFinding(ApiModel):
    rule: str
    field: str
    message: str


class ConfigVersion(ApiModel):
    """A changed ConfigMap or Secret: the versioned copy the canary reads (and the target after promotion)."""

    kind: Literal["ConfigMap", "Secret"]
    name: str = Field(description="The object the change is for (what the stable pods read).")
    version: str = Field(description="The immutable copy with the new content, named by its content hash.")


class ConsumerStatus(ApiModel):
    """One Deployment a shared configuration change moves, and how far it is."""

    name: str = Field(description="The Deployment.")
    rollout: str = Field(description="The GuardedRollout moving it: this one for spec.target, else the one it "
                         "made (owned by this one, labelled rollouts.guarded.dev/part-of).")
    phase: str | None = None
    stage: str | None = None
    wave_progress: str | None = None
    canary_replicas: int | None = None
    stable_replicas: int | None = None
    message: str = ""


class TrafficStatus(ApiModel):
    """What routing by weight changed, recorded when the rollout starts, so that a restarted operator restores
    exactly it: the route's rules, the stable Service's selector pin, the stable backendRef's weight before."""

    route: str = Field(description="The HTTPRoute.")
    rules: list[int] = Field(default_factory=list, description="The rules (0-based) whose weights the waves set.")
    service: str = Field(description="The stable Service.")
    canary_service: str = Field(description="The canary Service this rollout made (owned by it).")
    stable_pin: str | None = Field(
        default=None, description="The pod-template-hash of the target's pods that the stable Service's selector "
        "is pinned to while canary pods run (they share its other labels).")
    stable_weight: int | None = Field(
        default=None, description="The stable backendRef's weight before the rollout (null: not set), restored at "
        "the end.")
    weight: int | None = Field(default=None, description="The canary backendRef's weight as last observed.")


class GuardedRolloutStatus(ApiModel):
    phase: Phase = Phase.PENDING
    message: str = ""
    observed_generation: int | None = None
    stage: Stage = Stage.PENDING
    revision: str | None = Field(default=None, description="Hash of the change being rolled out.")
    wave: int | None = Field(default=None, description="Index of the current wave (0-based).")
    waves_total: int | None = None
    wave_progress: str | None = Field(default=None, description="Current wave of all, 1-based (\"2/4\").")
    canary_weight: int | None = Field(default=None, description="Canary share of ready pods, percent.")
    canary_replicas: int | None = None
    stable_replicas: int | None = Field(default=None, description="The target's replica count before the rollout.")
    stable_template_hash: str | None = None
    wave_started_at: str | None = None
    bake_started_at: str | None = None
    baked_seconds: float | None = Field(
        default=None, description="Seconds the current wave has baked under observation: with analysis, only "
        "time between judgements that both had fresh data counts; paused time never counts.")
    paused: bool = False
    paused_at: str | None = None
    rollback_reason: str | None = None
    attempt: int = 0
    started_at: str | None = None
    completed_at: str | None = None
    last_request: RequestRecord | None = None
    authors: list[str] = Field(default_factory=list, description="Who created or changed the spec (admission).")
    approvals: list[ApprovalSeen] = Field(default_factory=list)
    gates: list[GateRecord] = Field(default_factory=list, description="Pre-flight gates, evaluated before wave 1.")
    policy: PolicyStatus | None = None
    blast_radius: BlastRadius | None = None
    validation: list[ValidationFinding] = Field(default_factory=list)
    plan: list[Wave] = Field(default_factory=list,
                             description="The waves in effect for this revision: spec.waves after policy limits.")
    consumers: list[ConsumerStatus] = Field(
        default_factory=list, description="Per Deployment of a shared configuration change (spec.consumers), "
        "spec.target first.")
    config: list[ConfigVersion] = Field(
        default_factory=list, description="The configuration versions this attempt rolls out, fixed at its start "
        "(names only: a Secret's data never appears here).")
    emergency: bool = Field(default=False, description="An emergency release (spec.emergency), as the gates "
                            "judged it: its bakes are shortened to the emergency minimum (status.plan).")
    traffic: TrafficStatus | None = Field(default=None, description="Routing by weight (spec.trafficRouting), "
                                          "while its changes are in force.")
    analysis: AnalysisStatus = Field(default_factory=AnalysisStatus)
    conditions: list[Condition] = Field(default_factory=list)
    history: list[HistoryEntry] = Field(default_factory=list)
