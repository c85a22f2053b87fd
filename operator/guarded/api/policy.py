"""RolloutPolicy (cluster-scoped) and RolloutApproval (namespaced): the guardrails and the sign-offs.

A platform team writes RolloutPolicies: which rollouts they govern (namespace and target labels) and
the rules those rollouts must meet before wave 1 (approvals, senior sign-off, documentation, first
wave size, bake times, required metrics, concurrency, freeze windows, a time-boxed safety reset), and
what the ConfigMaps a rollout changes must hold (configValidation: a key parses as JSON or YAML and
meets a JSON Schema the platform team keeps in a ConfigMap; checked by core/config_checks.py).
Several policies may match one rollout; the strictest value of each rule wins (core/policy.py).

A RolloutApproval is one person's sign-off of one rollout at one spec revision. Who approved is not
typed by the approver: the operator's admission webhook stamps `spec.approver` and
`spec.approverGroups` from the API server's authenticated userInfo, and rejects values that differ.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import Field, model_validator

from guarded.api.common import ApiModel, DnsName, bounded_duration

POLICY_KIND = "RolloutPolicy"
POLICY_PLURAL = "rolloutpolicies"
POLICY_SHORT_NAMES = ["grp"]

APPROVAL_KIND = "RolloutApproval"
APPROVAL_PLURAL = "rolloutapprovals"
APPROVAL_SHORT_NAMES = ["gra"]

# The documentation a policy may require (requiredDocumentation): fields of a GuardedRollout's spec,
# by their names on the wire. Named here only; the gates, the status view and the audit read them.
DocumentationField = Literal["description", "ticket", "rollbackPlan"]
DOCUMENTATION_FIELDS: tuple[DocumentationField, ...] = get_args(DocumentationField)
# Guards a policy can demand of spec.analysis: the two shortcuts (by the metric each one adds), or a
# named metric.
BUILTIN_METRICS = {"orders": "order-rate", "errors": "error-rate", "latency": "slow-request-rate"}


# The same bounds as a wave's bake: a floor a wave could not meet would refuse every rollout.
MinBake = bounded_duration("minBake", "1s", "168h", "Every wave bakes at least this long.")
EmergencyBake = bounded_duration(
    "emergencyBake", "1s", "168h", "An emergency release (spec.emergency) bakes each wave at most this long "
    "(instead of minBake; default 30s).")


class LabelSelectorRequirement(ApiModel):
    key: str = Field(min_length=1, max_length=317)
    operator: Literal["In", "NotIn", "Exists", "DoesNotExist"]
    values: list[str] = Field(default_factory=list, max_length=64)


class LabelSelector(ApiModel):
    """A Kubernetes label selector. An empty selector matches everything."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list, max_length=32)


class PolicySelector(ApiModel):
    namespace_selector: LabelSelector = Field(
        default_factory=LabelSelector, description="Labels of the rollout's namespace.")
    target_selector: LabelSelector = Field(
        default_factory=LabelSelector, description="Labels of the target Deployment (e.g. tier: \"1\").")


class FirstWave(ApiModel):
    """The largest first wave: a wave 1 above either bound is lowered to it."""

    max_replicas: int | None = Field(default=None, ge=1, le=10000,
                                     description="At most this many canary pods in wave 1.")
    max_weight: int | None = Field(default=None, ge=1, le=100, description="At most this percent in wave 1.")


class BlastRadiusLine(ApiModel):
    """Above either line a change is high blast radius and needs the senior groups' approval too."""

    max_pods: int | None = Field(default=None, ge=1, le=1_000_000, description="Pods the change reaches in the end.")
    max_share_percent: int | None = Field(default=None, ge=1, le=100,
                                          description="Share of the pods behind the target's Services.")


class RequiredDetection(ApiModel):
    """A degradation a governed rollout must be able to detect before its last wave (spec.analysis.detect)."""

    metric: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                        description="orders, errors, latency or a metric's name.")
    degradation: float = Field(gt=0, le=10, description="At most this degradation (0.2: orders 20% lower, "
                               "1.0: errors twice as high) must be detectable.")
    power: float = Field(default=0.95, gt=0.5, le=0.999, description="With at least this probability.")


class PolicyRules(ApiModel):
    required_approvals: int | None = Field(
        default=None, ge=0, le=10, description="Distinct approvers, none of them an author of the change.")
    senior_groups: list[str] = Field(
        default_factory=list, max_length=16,
        description="When the change is AI-assisted or high blast radius, one approver must be in one of "
        "these groups.")
    required_documentation: list[DocumentationField] = Field(
        default_factory=list, description="Spec fields that must be filled in.")
    first_wave: FirstWave | None = None
    min_bake: MinBake | None = None
    emergency_bake: EmergencyBake | None = None
    required_metrics: list[str] = Field(
        default_factory=list, max_length=16,
        description="Guards spec.analysis must have: orders, errors, latency, or a metric name.")
    required_detection: list[RequiredDetection] = Field(
        default_factory=list, max_length=16,
        description="Degradations spec.analysis.detect must make detectable before the last wave (a smaller "
        "degradation and a higher power meet the rule).")
    max_concurrent: int | None = Field(
        default=None, ge=1, le=1000,
        description="At most this many rollouts under this policy progress at once; the rest wait in order.")
    blast_radius: BlastRadiusLine | None = None


class TimeWindow(ApiModel):
    start: str = Field(description="RFC 3339 time the window opens.", json_schema_extra={"format": "date-time"})
    end: str = Field(description="RFC 3339 time the window closes.", json_schema_extra={"format": "date-time"})
    reason: str = Field(default="", max_length=1024)


class SafetyReset(TimeWindow):
    """A time-boxed tightening: while active, these rules combine (strictest wins) with the policy's own."""

    rules: PolicyRules = Field(default_factory=PolicyRules)


class ReleaseDefaults(ApiModel):
    """How a release made of a plain apply runs (its GuardedRollout's fields; the rules still apply)."""

    waves: list[dict[str, Any]] | None = Field(
        default=None, max_length=20, description="spec.waves of such a release (default: the GuardedRollout's).",
        json_schema_extra={"items": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}})
    analysis: dict[str, Any] | None = Field(
        default=None, description="spec.analysis of such a release (e.g. requests and orders counters).",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    progress_deadline: str | None = Field(default=None, max_length=32, description="spec.progressDeadline.")


# A ConfigMap key, as Kubernetes allows it.
CONFIG_KEY_PATTERN = r"^[-._a-zA-Z0-9]+$"
ConfigKey = Annotated[str, Field(min_length=1, max_length=253, pattern=CONFIG_KEY_PATTERN)]


class SchemaRef(ApiModel):
    """A ConfigMap key holding a JSON Schema (as JSON or YAML text)."""

    namespace: DnsName = Field(description="Namespace of the ConfigMap that holds the schema.")
    name: DnsName = Field(description="Name of the ConfigMap that holds the schema.")
    key: ConfigKey = Field(description="The key whose value is the schema (JSON or YAML text).")

    @property
    def ref(self) -> str:
        """How status and messages name it: namespace/name#key."""
        return f"{self.namespace}/{self.name}#{self.key}"


class ConfigValidation(ApiModel):
    """A key of a ConfigMap a governed rollout changes must parse, and meet a JSON Schema when one is given.
    Checked against the new content before wave 1; a finding blocks the rollout."""

    config_map: DnsName | None = Field(
        default=None, description="The ConfigMap this rule applies to, by the name the rollout changes "
        "(spec.change.configMaps[].name). Absent: every ConfigMap a governed rollout changes.")
    key: ConfigKey = Field(description="The ConfigMap key to check.")
    format: Literal["json", "yaml"] = Field(description="How the key's value must parse.")
    schema_from: SchemaRef | None = Field(
        default=None, description="A JSON Schema (Draft 2020-12 unless it names another $schema) the parsed value "
        "must meet. Absent: the value need only parse. A schema that cannot be read blocks the rollout.")
    required: bool = Field(
        default=True, description="The key must be present in the new content when the rule applies; false: "
        "a ConfigMap without it passes.")


# What a notification sink may be sent (spec.notifications[].events); the operator's own reading of a
# persisted decision (core/notifications.py) names its notifications by these.
NotifyEvent = Literal["AwaitingApproval", "Blocked", "Started", "WaveStarted", "RolledBack", "Promoted",
                      "EmergencyRelease"]
NOTIFY_EVENTS: tuple[NotifyEvent, ...] = get_args(NotifyEvent)


class SecretKeySelector(ApiModel):
    """A key of a Secret in the operator's namespace (a cluster-scoped policy has no namespace of its own)."""

    name: DnsName = Field(description="The Secret, in the operator's namespace (GUARDED_NOTIFY_NAMESPACE).")
    key: ConfigKey = Field(description="The key whose value is the URL.")


class UrlSource(ApiModel):
    secret_key_ref: SecretKeySelector


class NotificationSink(ApiModel):
    """Where the operator sends messages about the rollouts this policy governs. The URL is read from a
    Secret: a Slack incoming-webhook URL is a credential and must not be readable by whoever reads policies."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                      description="Names the sink in the operator's logs and metrics.")
    type: Literal["slack", "webhook"] = Field(
        description="slack: a Slack-compatible incoming webhook ({\"text\": ...}); webhook: a JSON body "
        "(docs/notifications.md).")
    url_from: UrlSource = Field(description="The URL, from secretKeyRef (name and key).")
    events: list[NotifyEvent] = Field(default_factory=list, max_length=len(NOTIFY_EVENTS),
                                      description="What to send; empty: everything.")


class RolloutPolicySpec(ApiModel):
    selector: PolicySelector = Field(default_factory=PolicySelector)
    rules: PolicyRules = Field(default_factory=PolicyRules)
    freeze_windows: list[TimeWindow] = Field(
        default_factory=list, max_length=64, description="No rollout under this policy starts in a freeze.")
    safety_reset: SafetyReset | None = None
    guard_workloads: bool = Field(
        default=False, description="Guard the Deployments this policy selects: no change of their pod template "
        "(or of a ConfigMap or Secret their pods read) reaches pods except through a GuardedRollout; a plain "
        "apply of a changed template is recorded as one, authored by whoever applied it.")
    release_defaults: ReleaseDefaults | None = Field(
        default=None, description="Waves, analysis and deadline of the releases made of plain applies.")
    config_validation: list[ConfigValidation] = Field(
        default_factory=list, max_length=64,
        description="What the ConfigMaps a governed rollout changes must hold; the rules of every matching policy "
        "apply.")
    notifications: list[NotificationSink] = Field(
        default_factory=list, max_length=16,
        description="Sinks told about the rollouts this policy governs: awaiting approval, blocked, started, wave, "
        "rolled back (with the evidence), promoted, emergency release. Every matching policy's sinks are told.",
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": "self.all(s, self.filter(t, t.name == s.name).size() == 1)",
            "message": "each sink name may appear only once"}]})

    @model_validator(mode="after")
    def _sink_names(self) -> RolloutPolicySpec:
        names = [s.name for s in self.notifications]
        if len(names) != len(set(names)):
            raise ValueError("spec.notifications: each sink name may appear only once")
        return self


class RolloutApprovalSpec(ApiModel):
    rollout: DnsName = Field(description="Name of the GuardedRollout in this namespace.")
    revision: int | None = Field(
        default=None, ge=1,
        description="The rollout's metadata.generation being approved; admission fills in the current one.")
    comment: str = Field(default="", max_length=4096)
    approver: str | None = Field(
        default=None, max_length=512,
        description="Set by admission from the authenticated user; a different value is rejected.")
    approver_groups: list[str] | None = Field(
        default=None, max_length=128, description="Set by admission from the authenticated user's groups.")
    rollout_uid: str | None = Field(default=None, max_length=64,
                                    description="Set by admission: the approved rollout's uid.")

    @model_validator(mode="after")
    def _no_blank_approver(self) -> RolloutApprovalSpec:
        if self.approver is not None and not self.approver.strip():
            raise ValueError("spec.approver: leave it out or give your own user name")
        return self
