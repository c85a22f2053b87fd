"""Every reason the engine writes: history entries, Events and its own conditions, named once.

A history entry, the Event emitted with it and the operator's metrics all read the same member, so
a reason is never spelled twice. (Gate findings carry the reasons of their rules, core/gates.py.)"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # -- the rollout's course (history entries and Events) --
    ROLLOUT_STARTED = "RolloutStarted"
    POLICY_APPLIED = "PolicyApplied"
    WAVE_STARTED = "WaveStarted"
    WAVE_READY = "WaveReady"
    AWAITING_PROMOTION = "AwaitingPromotion"
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    ROLLING_BACK = "RollingBack"
    ROLLED_BACK = "RolledBack"
    SPEC_CHANGED = "SpecChanged"
    RETIRED = "Retired"
    NEW_REVISION = "NewRevision"
    # -- manual requests --
    REQUEST_ABORT = "RequestAbort"
    REQUEST_PAUSE = "RequestPause"
    REQUEST_RESUME = "RequestResume"
    REQUEST_PROMOTE = "RequestPromote"
    REQUEST_PROMOTE_FULL = "RequestPromoteFull"
    REQUEST_RETRY = "RequestRetry"
    REQUEST_REJECTED = "RequestRejected"
    PROMOTE_REQUESTED = "PromoteRequested"
    PROMOTE_FULL_REQUESTED = "PromoteFullRequested"
    # -- pre-flight gates --
    APPROVAL_COUNTED = "ApprovalCounted"
    APPROVAL_NOT_COUNTED = "ApprovalNotCounted"
    AWAITING_APPROVAL = "AwaitingApproval"
    BLOCKED = "Blocked"
    GATES_PASSED = "GatesPassed"
    EMERGENCY_RELEASE = "EmergencyRelease"  # an emergency release (spec.emergency) started with shortened bakes
    # -- analysis --
    ANALYSIS_PASSED = "AnalysisPassed"
    ANALYSIS_INCONCLUSIVE = "AnalysisInconclusive"
    ANALYSIS_FAILED = "AnalysisFailed"
    ALERT_FIRING = "AlertFiring"
    NEEDS_MORE_EVIDENCE = "NeedsMoreEvidence"   # the wave before the last holds: spec.analysis.detect not yet powered
    POWERED = "Powered"
    # -- why a rollout rolled back (status.rollbackReason), besides the analysis ones above --
    ABORTED = "Aborted"
    PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
    OPERATOR_ERROR = "OperatorError"
    INVALID_SPEC = "InvalidSpec"
    # -- the operator itself --
    RECONCILE_FAILED = "ReconcileFailed"
    # -- reasons of the engine's conditions --
    FOUND = "Found"
    TARGET_NOT_FOUND = "TargetNotFound"
    EXCLUSIVE = "Exclusive"
    HELD_BY_ROLLOUT = "HeldByRollout"
    CANARY_NOT_OWNED = "CanaryNotOwned"
    RELEASED = "Released"
    UNCHANGED = "Unchanged"
    TARGET_TEMPLATE_CHANGED = "TargetTemplateChanged"
    VALID = "Valid"
    TARGET_HAS_NO_REPLICAS = "TargetHasNoReplicas"
    WAVES_SHRINK_CANARY = "WavesShrinkCanary"
    INVALID_CHANGE = "InvalidChange"
    INVALID_TRAFFIC_ROUTING = "InvalidTrafficRouting"
    CONSUMER_ROLLED_BACK = "ConsumerRolledBack"   # a consumer's rollout of a shared change rolled back: all do
    PARENT_ROLLED_BACK = "ParentRolledBack"       # the rollout this consumer's rollout is part of rolled back
    PART_OF = "PartOf"                            # a consumer's rollout: the gates are its parent's
    WAITING_FOR_PARENT = "WaitingForParent"
    NOT_PART_OF = "NotPartOf"                     # claims a parent that does not list it this way
    CONSUMERS_NOT_PROGRESSING = "ConsumersNotProgressing"   # a consumer's rollout did not bake its wave in time
    UNEXPECTED_ERROR = "UnexpectedError"
    RECOVERED = "Recovered"
    PAUSED_BY_REQUEST = "PausedByRequest"
    NOT_PAUSED = "NotPaused"
    NOT_STARTED = "NotStarted"
    CANARY_SCALING = "CanaryScaling"
    STABLE_SCALING = "StableScaling"
    BAKING = "Baking"
    PAUSED = "Paused"
    REMOVING_CANARY = "RemovingCanary"
    RETIRING_CANARY = "RetiringCanary"
    FAILED = "Failed"
    PROMOTED = "Promoted"
    NOT_COMPLETED = "NotCompleted"
    NOT_ROLLED_BACK = "NotRolledBack"

    @classmethod
    def for_request(cls, action: str) -> Reason:
        """RequestAbort, RequestPromoteFull, ... for an accepted request's action."""
        return cls("Request" + action.title().replace("-", ""))


# Rollbacks of a canary that nothing judged bad: the stable is restored before the canary goes.
CAPACITY_FIRST = frozenset({Reason.OPERATOR_ERROR, Reason.INVALID_SPEC})
