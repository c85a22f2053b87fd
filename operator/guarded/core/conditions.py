"""Conditions in the Kubernetes convention (KEP-1623), and the phase derived from them.

Conditions are the truth; `phase` is a summary for `kubectl get`, computed here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from guarded.api.common import Condition
from guarded.api.stages import Phase
from guarded.core.clock import stamp_seconds

PROGRESSING = "Progressing"
PAUSED = "Paused"
COMPLETED = "Completed"
ROLLED_BACK = "RolledBack"
TARGET_FOUND = "TargetFound"
TARGET_UNCHANGED = "TargetUnchanged"
TARGET_EXCLUSIVE = "TargetExclusive"   # no other rollout holds the target, no foreign canary in the way
VALID = "Valid"
# The wave before the last has gathered the power spec.analysis.detect asks for (core/judging.power_hold).
POWERED = "Powered"
# True while reconciles fail with an unexpected error (the shell restored the stable's capacity).
RECONCILE_FAILED = "ReconcileFailed"
# Pre-flight gates (core/gates): they hold a rollout before wave 1.
VALIDATED = "Validated"
ADMITTED = "Admitted"
APPROVED = "Approved"

# Progressing=False/True reasons that the phase distinguishes.
REASON_ROLLING_BACK = "RollingBack"
REASON_AWAITING_PROMOTION = "AwaitingPromotion"


def set_condition(conditions: Iterable[Condition], *, type: str, status: bool | str, reason: str,
                  message: str, now: datetime, generation: int | None) -> list[Condition]:
    """Upsert one condition; lastTransitionTime moves only when the status flips."""
    value = status if isinstance(status, str) else ("True" if status else "False")
    out: list[Condition] = []
    found = False
    for cond in conditions:
        if cond.type != type:
            out.append(cond)
            continue
        found = True
        transition = cond.last_transition_time if cond.status == value else stamp_seconds(now)
        out.append(Condition(type=type, status=value, reason=reason, message=message,  # type: ignore[arg-type]
                             last_transition_time=transition, observed_generation=generation))
    if not found:
        out.append(Condition(type=type, status=value, reason=reason, message=message,  # type: ignore[arg-type]
                             last_transition_time=stamp_seconds(now), observed_generation=generation))
    return out


def get(conditions: Iterable[Condition], type: str) -> Condition | None:
    return next((c for c in conditions if c.type == type), None)


def is_true(conditions: Iterable[Condition], type: str) -> bool:
    cond = get(conditions, type)
    return cond is not None and cond.status == "True"


def is_false(conditions: Iterable[Condition], type: str) -> bool:
    cond = get(conditions, type)
    return cond is not None and cond.status == "False"


def derive_phase(conditions: list[Condition]) -> Phase:
    if is_false(conditions, VALID):
        return Phase.FAILED
    if is_true(conditions, COMPLETED):
        return Phase.SUCCEEDED
    if is_true(conditions, ROLLED_BACK):
        return Phase.ROLLED_BACK
    progressing = get(conditions, PROGRESSING)
    if progressing is not None and progressing.reason == REASON_ROLLING_BACK:
        return Phase.ROLLING_BACK
    if is_true(conditions, RECONCILE_FAILED):
        return Phase.FAILED
    if is_false(conditions, TARGET_FOUND) or is_false(conditions, TARGET_UNCHANGED) \
            or is_false(conditions, TARGET_EXCLUSIVE):
        return Phase.BLOCKED
    if is_false(conditions, VALIDATED) or is_false(conditions, ADMITTED):
        return Phase.BLOCKED
    if is_false(conditions, APPROVED):
        return Phase.AWAITING_APPROVAL
    if is_true(conditions, PAUSED) or (progressing is not None and progressing.reason == REASON_AWAITING_PROMOTION):
        return Phase.PAUSED
    if progressing is not None and progressing.status == "True":
        return Phase.PROGRESSING
    return Phase.PENDING
