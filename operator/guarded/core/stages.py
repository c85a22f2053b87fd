"""One function per stage: (inputs, draft) -> draft. `STAGES` maps each stage to its function.

    Pending -> [ScaleCanary -> ScaleStable -> Bake (-> Gate)] per wave -> Promote -> Cleanup -> Succeeded
    any wave stage -> RollingBack -> RolledBack;   a spec change mid-wave -> Retiring -> Pending

Capacity rule: a wave raises the canary first and lowers the stable only while the canary's pods are
Ready, so Ready pods never number fewer than the target's count (docs/waves.md).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

from guarded.api.common import parse_duration
from guarded.api.reasons import CAPACITY_FIRST, Reason
from guarded.api.stages import Stage
from guarded.core import conditions as cond
from guarded.core import config, routing
from guarded.core.actions import MirrorConfig, PromoteTarget
from guarded.core.analysis import Verdict
from guarded.core.clock import seconds_between, stamp
from guarded.core.consumers import (
    WAIT,
    consumers_done,
    consumers_ended,
    consumers_gated,
    gate_passed,
    is_parent,
    parent_of,
    rollback_overdue,
)
from guarded.core.draft import (
    POLL_SECONDS,
    Draft,
    Inputs,
    canary_target,
    current_wave,
    stable_target,
    template_hash,
    total,
    wave_label,
    waves,
)
from guarded.core.judging import power_hold
from guarded.core.moves import advance, record_wave_started, restart, rollback, target_promoted
from guarded.core.preflight import pass_gates
from guarded.core.templates import ChangeError, changed_template
from guarded.core.waves import canary_replicas, routed_canary_replicas, routed_weight
from guarded.core.workloads import (
    canary_current,
    canary_foreign,
    canary_ours,
    claim_target,
    ensure_canary,
    ensure_target_replicas,
    holder,
    remove_canary,
    stable_restored,
)

StageFunction = Callable[[Inputs, Draft], Draft]


def valid_for_target(inp: Inputs, d: Draft) -> Draft:
    """The Valid condition: False (and a wait) when the change cannot go onto the target as it is now."""
    t = inp.obs.target
    assert t is not None
    if t.replicas < 1:
        return d.condition(inp, cond.VALID, False, Reason.TARGET_HAS_NO_REPLICAS,
                           f"spec.target.name: Deployment {t.name!r} has 0 replicas; a canary needs at least 1"
                           ).wait(10.0)
    plan = waves(inp, d.status)
    routed = routing.routed(inp)
    size = routed_canary_replicas if routed else canary_replicas
    sizes = [size(w, t.replicas) for w in plan]
    if any(b < a for a, b in pairwise(sizes)):
        return d.condition(inp, cond.VALID, False, Reason.WAVES_SHRINK_CANARY,
                           f"spec.waves: on {t.replicas} replicas the waves run {sizes} canary pods; each wave "
                           "must run at least as many as the one before").wait(10.0)
    weights = [routed_weight(w, t.replicas) for w in plan] if routed else []
    if any(b < a for a, b in pairwise(weights)):
        # A canary scaled down to a later wave's size would take the earlier wave's weight until it moved.
        return d.condition(inp, cond.VALID, False, Reason.WAVES_SHRINK_CANARY,
                           f"spec.waves: on {t.replicas} replicas the waves send the canary {weights}% of the "
                           "requests; each wave must send it at least as much as the one before").wait(10.0)
    try:
        changed_template(t.template, inp.spec.change, inp.revision)
    except ChangeError as err:
        return d.condition(inp, cond.VALID, False, Reason.INVALID_CHANGE, str(err))
    problem = config.problem(inp)
    if problem is not None:
        return d.condition(inp, cond.VALID, False, Reason.INVALID_CHANGE, problem).wait(10.0)
    problem = routing.problem(inp)
    if problem is not None:
        return d.condition(inp, cond.VALID, False, Reason.INVALID_TRAFFIC_ROUTING, problem).wait(5.0)
    return d.condition(inp, cond.VALID, True, Reason.VALID, "the change applies to the target")


def pending(inp: Inputs, d: Draft) -> Draft:
    """Wait for the gates, then start: claim the target, fix the plan, record the original count."""
    t = inp.obs.target
    assert t is not None
    if inp.status.traffic is not None and d.status.traffic is None:
        # Routing was undone in this very decision (Retiring): it read the route and the Services the old
        # status.traffic named, not those the spec may name now; the start is decided on a fresh observation.
        return d.wait(0.0)
    if d.status.revision is None:
        d = d.update(revision=inp.revision)
    d = d.update(gates=[])  # judged anew below, or not at all: stale gates must not hold a queue slot
    d = valid_for_target(inp, d)
    if cond.is_false(d.status.conditions, cond.VALID):
        return d
    d, outcome = pass_gates(inp, d)
    if outcome is None:
        return remove_canary(inp, d)  # a start whose status was never written left a canary: no wave, no pods
    if d.status.paused or holder(inp) is not None or canary_foreign(inp):
        return d  # paused before start, or check_exclusive() says which rollout or object is in the way
    # The claim is written first and compare-and-swapped: if another rollout got it in between, the
    # shell carries out nothing after it and this start is decided again on fresh data.
    d = claim_target(inp, d).update(plan=outcome.plan)
    for note in outcome.plan_notes:
        d = d.record(inp, Reason.POLICY_APPLIED, note)
    if outcome.emergency_note:
        d = d.record(inp, Reason.EMERGENCY_RELEASE, outcome.emergency_note, warning=True)
    d = d.update(
        revision=inp.revision, config=config.resolved(inp), wave=0, stable_replicas=t.replicas,
        stable_template_hash=template_hash(t.template),
        started_at=stamp(inp.now), wave_started_at=stamp(inp.now), bake_started_at=None, baked_seconds=None,
        completed_at=None, rollback_reason=None, attempt=d.status.attempt + 1,
    ).goto(Stage.SCALE_CANARY)
    d = routing.start(inp, d)
    d = d.record(inp, Reason.ROLLOUT_STARTED, f"rolling out revision {inp.revision} to {t.replicas} pods of "
                 f"{t.name!r} in {len(waves(inp, d.status))} waves (attempt {d.status.attempt})")
    return record_wave_started(inp, d)


def routing_lost(inp: Inputs, d: Draft) -> Draft | None:
    """Routed, in a wave: the rollback when the route can no longer carry the weights (the HTTPRoute deleted,
    the stable Service gone or changed, the routed rule removed). Fail safe: waiting would hold canary pods
    that no weight reaches, under a message about something else, until someone noticed."""
    problem = routing.problem(inp)
    if problem is None:
        return None
    return rollback(inp, d, Reason.INVALID_TRAFFIC_ROUTING, f"wave {wave_label(inp, d.status)}: {problem}")


def scale_canary(inp: Inputs, d: Draft) -> Draft:
    """Raise the canary to the wave's size; once its pods are Ready, lower the stable (or, routed by weight,
    shift the route's weight). Routed, the stable Service is pinned to the stable pods before any canary pod
    exists, since they share its labels."""
    lost = routing_lost(inp, d)
    if lost is not None:
        return lost
    want = canary_target(inp, d.status)
    d, prepared = routing.prepare(inp, d)
    if prepared:
        d = ensure_canary(inp, d, want)
    c = inp.obs.canary
    ready = (prepared and canary_current(inp, d) and c is not None and c.replicas == want
             and c.observed_generation >= c.generation and c.updated >= want and c.ready >= want)
    if ready:
        # Evidence accumulates over the whole rollout (each interval's likelihood ratio is conditioned
        # on that interval's traffic split); each wave still needs a fresh Pass after its own bake.
        state = d.status.analysis
        return d.update(analysis=state.model_copy(update={
            "since": state.since or stamp(inp.now), "last_at": None, "last_verdict": None,
            "fresh_since": None, "consecutive_inconclusive": 0})).goto(Stage.SCALE_STABLE)
    deadline = parse_duration(inp.spec.progress_deadline)
    waited = seconds_between(d.status.wave_started_at, inp.now)
    if waited > deadline:
        got = c.ready if c is not None and canary_current(inp, d) else 0
        return rollback(inp, d, Reason.PROGRESS_DEADLINE_EXCEEDED,
                        f"wave {wave_label(inp, d.status)}: {got}/{want} canary pods Ready after "
                        f"{int(waited)}s (spec.progressDeadline {inp.spec.progress_deadline})")
    return d.wait(POLL_SECONDS)


def scale_stable(inp: Inputs, d: Draft) -> Draft:
    """Lower the stable to the rest of the count, only while the canary's pods are Ready; then bake."""
    lost = routing_lost(inp, d)
    if lost is not None:
        return lost
    want_canary, want_stable = canary_target(inp, d.status), stable_target(inp, d.status)
    c, t = inp.obs.canary, inp.obs.target
    assert t is not None
    d = ensure_canary(inp, d, want_canary)
    if c is None or not canary_current(inp, d) or c.ready < want_canary:
        return d.goto(Stage.SCALE_CANARY)  # capacity rule: back to waiting for the canary
    if routing.routed(inp):
        return shift_weight(inp, d)
    d = ensure_target_replicas(inp, d, want_stable)
    if t.replicas == want_stable and t.settled:
        d = d.update(bake_started_at=stamp(inp.now), baked_seconds=0.0).goto(Stage.BAKE)
        return d.record(inp, Reason.WAVE_READY, f"wave {wave_label(inp, d.status)}: {c.ready} canary and {t.ready} "
                        f"stable pods Ready; baking {current_wave(inp, d.status).bake}")
    return d.wait(POLL_SECONDS)


def shift_weight(inp: Inputs, d: Draft) -> Draft:
    """Routed by weight: the canary's pods are Ready, so the route may send it the wave's weight; bake once
    the route shows it. The stable keeps all its pods (no capacity is taken from it)."""
    weight = routing.wave_weight(inp, d)
    d, shifted = routing.shift(inp, d, weight)
    if not shifted:
        return d.wait(POLL_SECONDS)
    c = inp.obs.canary
    assert c is not None and d.status.traffic is not None
    d = d.update(bake_started_at=stamp(inp.now), baked_seconds=0.0).goto(Stage.BAKE)
    return d.record(inp, Reason.WAVE_READY, f"wave {wave_label(inp, d.status)}: {c.ready} canary pods Ready, "
                    f"HTTPRoute {d.status.traffic.route!r} sends them {weight}%; baking "
                    f"{current_wave(inp, d.status).bake}")


def hold_wave(inp: Inputs, d: Draft) -> Draft:
    """Keep the wave's sizes (a canary pod lost and replaced is raised again before the stable is)."""
    want_canary = canary_target(inp, d.status)
    d = ensure_canary(inp, d, want_canary)
    if routing.routed(inp):
        d = routing.repin(inp, d)   # canary pods run: the stable Service selects the stable pods alone
    c = inp.obs.canary
    if c is not None and canary_current(inp, d) and c.ready >= want_canary:
        d = ensure_target_replicas(inp, d, stable_target(inp, d.status))
        if routing.routed(inp):
            d, _ = routing.shift(inp, d, routing.wave_weight(inp, d))  # the weight a wave baked under is kept
    return d


def bake(inp: Inputs, d: Draft) -> Draft:
    """Hold the wave for its bake (under analysis: time under observation), then advance on a fresh Pass."""
    lost = routing_lost(inp, d)
    if lost is not None:
        return lost
    d = hold_wave(inp, d)
    s = d.status
    if s.paused:
        return d
    wave = current_wave(inp, s)
    bake_seconds = parse_duration(wave.bake)
    elapsed = seconds_between(s.bake_started_at, inp.now)
    analysis = inp.spec.analysis
    baked = float(s.baked_seconds or 0.0) if analysis is not None else elapsed
    if baked < bake_seconds:
        # Under analysis only observed time counts (core/judging.observe_bake): no data stops the clock.
        return d.wait(max(0.2, bake_seconds - baked))
    if analysis is not None and (s.analysis.last_verdict != Verdict.PASS or s.analysis.fresh_since is None):
        # A wave advances on evidence, never on a lack of it; evidence that never comes (too little
        # traffic) is bounded by progressDeadline after the bake.
        deadline = parse_duration(inp.spec.progress_deadline)
        if elapsed >= bake_seconds + deadline and analysis.on_inconclusive == "Rollback":
            return rollback(inp, d, Reason.ANALYSIS_INCONCLUSIVE, f"wave {wave_label(inp, s)}: no Pass within "
                            f"spec.progressDeadline ({inp.spec.progress_deadline}) after the bake")
        return d.wait(parse_duration(analysis.interval))
    d, held = power_hold(inp, d)
    if held and analysis is not None:   # the wave before the last: until a required degradation is detectable
        return d.wait(parse_duration(analysis.interval))
    waiting_for = consumers_gated(inp, d)
    if waiting_for is not None:   # a shared change moves on only when every consumer's rollout baked this wave
        if elapsed >= bake_seconds + parse_duration(inp.spec.progress_deadline):
            return rollback(inp, d, Reason.CONSUMERS_NOT_PROGRESSING, f"wave {wave_label(inp, s)}: {waiting_for} "
                            f"after spec.progressDeadline ({inp.spec.progress_deadline}) past the bake")
        return d.wait(WAIT)
    if wave.manual_gate:
        d = d.goto(Stage.GATE)
        return d.record(inp, Reason.AWAITING_PROMOTION, f"wave {wave_label(inp, s)} baked {wave.bake}; waiting for "
                        "a promote request (kubectl guarded promote)")
    return advance(inp, d)


def gate(inp: Inputs, d: Draft) -> Draft:
    """Baked; hold the wave until a promote request (core/requests.py) advances it, or, for a consumer's
    rollout of a shared change, until its parent has moved past the matching wave."""
    lost = routing_lost(inp, d)
    if lost is not None:
        return lost
    d = hold_wave(inp, d)
    if parent_of(inp) is None:
        return d
    return advance(inp, d) if gate_passed(inp, d) else d.wait(WAIT)


def promote(inp: Inputs, d: Draft) -> Draft:
    """Give the target the changed template and its count; once it is fully available, clean up."""
    t = inp.obs.target
    assert t is not None
    n = total(d.status)
    if not target_promoted(inp, d):
        # Routed: the stable Service's pin comes off first (the canary has passed every wave), so that it
        # selects the target's new pods as they come; pinned, it would keep only the old ones as they go.
        d, unpinned = routing.unpin(inp, d)
        if not unpinned:
            return d.wait(POLL_SECONDS)
        template = config.new_template(inp, d, t.template, d.status.revision or inp.revision)
        d = config.ensure_versions(inp, d)
        d = d.act(PromoteTarget(name=t.name, template=template, replicas=n, rollout_uid=inp.obs.uid,
                                config=config.refs(inp, d)))
        return d.wait(POLL_SECONDS)
    d = ensure_target_replicas(inp, d, n)
    if t.replicas == n and t.fully_available and t.ready >= n:
        return d.goto(Stage.CLEANUP)
    return d.wait(POLL_SECONDS)


def cleanup(inp: Inputs, d: Draft) -> Draft:
    """Promoted: remove the canary, wait for every consumer's rollout to succeed, let the changed configuration
    show the promoted content; then the rollout has succeeded."""
    if canary_ours(inp):
        return remove_canary(inp, d).wait(POLL_SECONDS)   # routed: the weight back to the stable first
    d, unwound = routing.unwind(inp, d)
    if not unwound:
        return d.wait(POLL_SECONDS)
    if is_parent(inp) and consumers_done(inp) is not None:
        return d.wait(WAIT)
    refs = config.refs(inp, d)
    if refs and parent_of(inp) is None:
        d = d.act(MirrorConfig(target=inp.spec.target.name, config=refs))
    d = d.update(completed_at=stamp(inp.now)).goto(Stage.SUCCEEDED)
    return d.record(inp, Reason.SUCCEEDED, f"revision {d.status.revision} promoted: {total(d.status)} pods of "
                    f"{inp.spec.target.name!r} run the change; canary removed")


def restore(inp: Inputs, d: Draft) -> tuple[Draft, bool]:
    """Remove the canary and give the stable its pods back; True once both are done.

    A canary judged bad (or aborted) goes at once: stop the bleeding first. One that nothing judged
    bad (the operator failed, the spec became unreadable, a new revision retires it) serves until the
    stable is back at full capacity, so Ready pods never fall below the target's count."""
    n = total(d.status)
    if n:
        d = ensure_target_replicas(inp, d, n)
    restored = stable_restored(inp, d)
    if canary_ours(inp):
        d = routing.repin(inp, d)   # routed: the stable Service must not select canary pods while they go
    judged_bad = d.stage == Stage.ROLLING_BACK and d.status.rollback_reason not in CAPACITY_FIRST
    if restored or judged_bad:
        d = remove_canary(inp, d)
    done = restored and not canary_ours(inp)
    if done:
        # Routed: once no canary pod is left, the route, the canary Service and the stable's selector as before.
        d, done = routing.unwind(inp, d)
    if done:
        # The copies of the configuration this attempt made go with its canary (one a Deployment adopted stays).
        d = config.remove_versions(inp, d, keep=config.resolved_now(inp) if d.stage == Stage.RETIRING else None)
    return (d, True) if done else (d.wait(POLL_SECONDS), False)


def rolling_back(inp: Inputs, d: Draft) -> Draft:
    d, done = restore(inp, d)
    if not done:
        return d
    if is_parent(inp) and not consumers_ended(inp) and not rollback_overdue(inp, d):
        return d.wait(WAIT)   # every consumer's rollout rolls back with this one (bounded: its Deployment may be gone)
    d = d.update(completed_at=stamp(inp.now)).goto(Stage.ROLLED_BACK)
    return d.record(inp, Reason.ROLLED_BACK, f"rolled back ({d.status.rollback_reason}): canary removed, "
                    f"{total(d.status)} stable pods Ready", warning=True)


def retiring(inp: Inputs, d: Draft) -> Draft:
    d, done = restore(inp, d)
    if not done:
        return d
    d = d.record(inp, Reason.RETIRED, f"canary of revision {d.status.revision} removed")
    return restart(inp, d)


def ended(inp: Inputs, d: Draft) -> Draft:
    """Succeeded, RolledBack, Failed: nothing to do until a new revision or a retry."""
    return d


STAGES: dict[Stage, StageFunction] = {
    Stage.PENDING: pending,
    Stage.SCALE_CANARY: scale_canary,
    Stage.SCALE_STABLE: scale_stable,
    Stage.BAKE: bake,
    Stage.GATE: gate,
    Stage.PROMOTE: promote,
    Stage.CLEANUP: cleanup,
    Stage.ROLLING_BACK: rolling_back,
    Stage.RETIRING: retiring,
    Stage.SUCCEEDED: ended,
    Stage.ROLLED_BACK: ended,
    Stage.FAILED: ended,
}
