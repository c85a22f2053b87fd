"""The moves between stages that several parts of a decision make: start, advance, roll back, restart.

Stages (core/stages.py), manual requests (core/requests.py) and analysis (core/judging.py) call these;
they call nothing back, so the way a decision goes can be read by following calls.
"""

from __future__ import annotations

from guarded.api.reasons import Reason
from guarded.api.rollout import AnalysisStatus
from guarded.api.stages import Stage
from guarded.core import conditions as cond
from guarded.core.clock import parse, stamp
from guarded.core.draft import Draft, Inputs, canary_target, current_wave, total, wave_index, wave_label, waves
from guarded.core.templates import REVISION_ANNOTATION
from guarded.core.waves import routed_weight


def rollback(inp: Inputs, d: Draft, reason: Reason, message: str) -> Draft:
    """To RollingBack: the canary goes and the stable gets its pods back (core/stages.rolling_back)."""
    d = d.update(rollback_reason=str(reason), paused=False).goto(Stage.ROLLING_BACK)
    return d.record(inp, Reason.ROLLING_BACK, f"{reason}: {message}; removing the canary and restoring "
                    f"{total(d.status)} stable pods", warning=True)


def record_wave_started(inp: Inputs, d: Draft) -> Draft:
    wave = current_wave(inp, d.status)
    size = f"{wave.weight}%" if wave.weight is not None else f"{wave.replicas} pods"
    if inp.spec.traffic_routing is not None:
        return d.record(inp, Reason.WAVE_STARTED, f"wave {wave_label(inp, d.status)} ({size}): "
                        f"{canary_target(inp, d.status)} canary pods beside the {total(d.status)} stable ones, then "
                        f"{routed_weight(wave, total(d.status))}% of the requests by the HTTPRoute's weights")
    return d.record(inp, Reason.WAVE_STARTED, f"wave {wave_label(inp, d.status)} ({size}): "
                    f"{canary_target(inp, d.status)} of {total(d.status)} pods on the canary")


def advance(inp: Inputs, d: Draft) -> Draft:
    """The current wave is done: to the next one, or to promotion after the last."""
    d = past_power_hold(d)
    s = d.status
    if wave_index(s) + 1 >= len(waves(inp, s)):
        d = d.goto(Stage.PROMOTE)
        return d.record(inp, Reason.PROMOTING, f"all {len(waves(inp, s))} waves passed: promoting revision "
                        f"{s.revision} to {inp.spec.target.name!r}")
    d = d.update(wave=wave_index(s) + 1, wave_started_at=stamp(inp.now), bake_started_at=None, baked_seconds=None)
    return record_wave_started(inp, d.goto(Stage.SCALE_CANARY))


def past_power_hold(d: Draft) -> Draft:
    """Leaving a wave: a Powered that is not True described a hold now behind us (skipped by a promote) and
    would go stale; a True one stays as the record that the evidence was enough."""
    conditions = d.status.conditions
    if cond.get(conditions, cond.POWERED) is None or cond.is_true(conditions, cond.POWERED):
        return d
    return d.update(conditions=[c for c in conditions if c.type != cond.POWERED])


def restart(inp: Inputs, d: Draft) -> Draft:
    """Back to Pending for the spec's current revision (a new revision, a retry, a retired canary)."""
    cleared = dict.fromkeys(("wave", "wave_started_at", "bake_started_at", "baked_seconds", "stable_replicas",
                             "stable_template_hash", "canary_weight", "canary_replicas", "rollback_reason",
                             "completed_at", "started_at"))
    # Powered belongs to one revision's wave before the last: a new start gathers its power anew
    conditions = [c for c in d.status.conditions if c.type not in (cond.COMPLETED, cond.ROLLED_BACK, cond.POWERED)]
    return d.update(**cleared, plan=[], conditions=conditions, revision=inp.revision,
                    analysis=AnalysisStatus(recent=d.status.analysis.recent)).goto(Stage.PENDING)


def unpause(inp: Inputs, d: Draft) -> Draft:
    """Resume; the bake clock stood still while paused."""
    s = d.status
    if not s.paused:
        return d
    if s.bake_started_at and s.paused_at:
        shifted = parse(s.bake_started_at) + (inp.now - parse(s.paused_at))
        d = d.update(bake_started_at=stamp(shifted))
    return d.update(paused=False, paused_at=None)


def target_promoted(inp: Inputs, d: Draft) -> bool:
    """The target's template is the changed one of this revision (our PromoteTarget was carried out)."""
    t = inp.obs.target
    annotations = t.template.get("metadata", {}).get("annotations", {}) if t is not None else {}
    return d.status.revision is not None and annotations.get(REVISION_ANNOTATION) == d.status.revision
