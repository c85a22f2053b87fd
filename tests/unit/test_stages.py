"""Each stage's behaviour as a table (the style of Argo Rollouts' canary_test.go).

A case is a rollout brought to a stage in the World, what the next observation shows (as the World
sees it, or changed by one detail), and what the one decision then does: where it leaves the rollout
and the actions it asks of the cluster, in order. The plan is the same everywhere: 10 replicas, waves
of 1 pod, 50% and 100% (1, 5 and 10 canary pods), baking 10 s each, one tick a second.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
from specs import analysis, spec, wave, waves
from world import World

from guarded.api.policy import RolloutPolicySpec
from guarded.api.stages import Phase, Stage
from guarded.core.actions import (
    Action,
    ApplyCanary,
    ClaimTarget,
    DeleteDeployment,
    PromoteTarget,
    ReleaseTarget,
    ScaleDeployment,
)
from guarded.core.analysis import SCRAPE_LAG_SECONDS, AnalysisObservation
from guarded.core.engine import Decision, decide, decide_fail_safe
from guarded.core.observations import Observations
from guarded.core.policy import NamedPolicy

PLAN = waves("1 pod", "50%", "100%", bake="10s")
GATED = [wave("1 pod", bake="10s", gate=True), wave("100%", bake="10s")]
ANY: object = object()  # a field of a case that is not checked


# -- the rollouts the cases start from ------------------------------------------------------------

def fresh(*, waves: list[dict] = PLAN, ready_delay: int = 1, **fields: object) -> World:
    """A rollout just created for the 10-replica shop; `fields` go into its spec."""
    return World(spec(waves=waves, **fields), ready_delay=ready_delay)


def reached(stage: Stage, wave: int | None = None, *, idle: int = 0, ask: str | None = None,
            **rollout: object) -> World:
    """A rollout run until its written status is at `stage` (and `wave`); then `idle` ticks pass without
    a decision (pods become Ready, bakes run out) and `ask` is requested."""
    world = fresh(**rollout)  # type: ignore[arg-type]
    world.run_until(stage=stage, wave=wave)
    world.idle(idle)
    if ask is not None:
        world.ask(ask)
    return world


def started(*, idle: int = 0, **rollout: object) -> World:
    """The first decision was carried out: the target claimed, wave 1's canary asked for."""
    world = fresh(**rollout)  # type: ignore[arg-type]
    world.step()
    world.idle(idle)
    return world


def asked(world: World, action: str, *, steps: int = 0, idle: int = 0) -> World:
    """`world` asked for `action`; then `steps` decisions and `idle` ticks without one."""
    world.ask(action)
    world.run_for(steps)
    world.idle(idle)
    return world


def finished(world: World) -> World:
    """`world` run until the rollout has ended."""
    world.run_until_done()
    return world


def without_dry_run() -> World:
    world = fresh()
    world.guard = dataclasses.replace(world.guard, dry_run_done=False)
    return world


def needing_approval() -> World:
    world = fresh()
    policy = NamedPolicy(name="tier-1", spec=RolloutPolicySpec.model_validate({"rules": {"requiredApprovals": 1}}))
    world.guard = dataclasses.replace(world.guard, policies=(policy,), authors=("alice",))
    return world


def held_by_another() -> World:
    first = World(spec(waves=PLAN), name="first", uid="uid-first")
    first.step()  # claims the target
    return World(spec(waves=PLAN, image="shop:2.0.1"), deployments=first.deployments, peers=first.peers)


def with_no_replicas() -> World:
    world = fresh()
    world.deployments["shop"].replicas = 0
    return world


def spec_changed_mid_wave(*, idle: int = 0) -> World:
    """Wave 2 (5 canary, 5 stable) bakes when the change becomes shop:2.0.1."""
    world = reached(Stage.BAKE, 1)
    world.spec, world.generation = spec(waves=PLAN, image="shop:2.0.1"), 2
    if idle:
        world.run_until(stage=Stage.RETIRING)
        world.idle(idle)
    return world


def failed_mid_wave(*, idle: int = 0) -> World:
    """The operator raised during wave 2's bake; its fail-safe decision was carried out."""
    world = reached(Stage.BAKE, 1)
    world.enact(decide_fail_safe(world.spec, world.status, world.observe(), "ZeroDivisionError in gather"))
    world.idle(idle)
    return world


def prometheus_down() -> World:
    world = World(spec(waves=PLAN, analysis=analysis(interval="5s")), analysis_source=lambda w: AnalysisObservation(
        metrics={}, alerts_error="Prometheus unreachable"))
    world.run_until(stage=Stage.BAKE, wave=0)
    world.idle(20)
    return world


# -- what the observation shows differently ---------------------------------------------------------

Seen = Callable[[Observations], Observations]


def as_observed(obs: Observations) -> Observations:
    return obs


def canary_ready(n: int) -> Seen:
    def seen(obs: Observations) -> Observations:
        assert obs.canary is not None
        return dataclasses.replace(obs, canary=dataclasses.replace(obs.canary, ready=n, available=n))
    return seen


def canary_gone(obs: Observations) -> Observations:
    return dataclasses.replace(obs, canary=None)


def stable_at(replicas: int) -> Seen:
    """Someone (an autoscaler, a person) set the target's replicas."""
    def seen(obs: Observations) -> Observations:
        assert obs.target is not None
        return dataclasses.replace(obs, target=dataclasses.replace(obs.target, replicas=replicas))
    return seen


def stable_unsettled(obs: Observations) -> Observations:
    """The Deployment controller has not yet seen the target's latest spec."""
    assert obs.target is not None
    return dataclasses.replace(obs, target=dataclasses.replace(obs.target,
                                                               observed_generation=obs.target.generation - 1))


# -- a case and how it is checked ---------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    name: str
    given: Callable[[], World]
    stage: Stage                          # where the decision leaves the rollout
    actions: tuple[str, ...] = ()         # what it asks of the cluster, in order (see `described`)
    seen: Seen = as_observed
    wave: object = ANY
    phase: object = ANY
    requeue: object = ANY                 # seconds until it wants to decide again (None: on a change only)
    says: str | None = None               # in the status message
    then: Callable[[Decision], None] | None = None
    marks: tuple[pytest.MarkDecorator, ...] = field(default=())


def described(action: Action) -> str:
    """An action as a case names it: `claim shop`, `apply shop-canary 5 (shop:2.0.0)`, `scale shop 9`, ..."""
    if isinstance(action, ClaimTarget):
        return f"claim {action.name}"
    if isinstance(action, ApplyCanary):
        m = action.manifest
        image = m["spec"]["template"]["spec"]["containers"][0]["image"]
        return f"apply {m['metadata']['name']} {action.replicas} ({image})"
    if isinstance(action, ScaleDeployment):
        return f"scale {action.name} {action.replicas}"
    if isinstance(action, DeleteDeployment):
        return f"delete {action.name}"
    if isinstance(action, PromoteTarget):
        return f"promote {action.name} {action.replicas} ({action.template['spec']['containers'][0]['image']})"
    assert isinstance(action, ReleaseTarget)
    return f"release {action.name}"


def check(case: Case) -> None:
    world = case.given()
    obs = case.seen(world.observe())
    decision = decide(world.spec, world.status, obs)
    status = decision.status
    assert (status.stage, [described(a) for a in decision.actions]) == (case.stage, list(case.actions)), status.message
    for name, want in (("wave", case.wave), ("phase", case.phase)):
        if want is not ANY:
            assert getattr(status, name) == want, f"{name}: {status.message}"
    if case.requeue is not ANY:
        # Times are float seconds of a clock: equal to the microsecond.
        want = case.requeue
        assert decision.requeue_after == (pytest.approx(want, abs=1e-6) if isinstance(want, float) else want)
    if case.says is not None:
        assert case.says in status.message
    # Whatever the case: each action touches only what this rollout owns, exactly as observed.
    for action in decision.actions:
        if isinstance(action, ApplyCanary):
            assert action.manifest["metadata"]["ownerReferences"][0]["uid"] == obs.uid
        elif isinstance(action, ScaleDeployment | PromoteTarget):
            assert action.rollout_uid == obs.uid
        elif isinstance(action, DeleteDeployment):
            assert obs.canary is not None and (action.name, action.uid) == (obs.canary.name, obs.canary.uid)
    if case.then is not None:
        case.then(decision)


def table(cases: list[Case]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=c.marks) for c in cases])


def request_rejected(words: str) -> Callable[[Decision], None]:
    def then(decision: Decision) -> None:
        last = decision.status.last_request
        assert last is not None and last.result == "Rejected" and words in last.message, last
    return then


def rolled_back_for(reason: str) -> Callable[[Decision], None]:
    def then(decision: Decision) -> None:
        assert decision.status.rollback_reason == reason
    return then


# -- the tables -------------------------------------------------------------------------------------

PENDING = [
    Case("the gates pass: claim the target and create wave 1's canary of one pod",
         fresh, Stage.SCALE_CANARY, ("claim shop", "apply shop-canary 1 (shop:2.0.0)"), wave=0,
         phase=Phase.PROGRESSING),
    Case("the server-side dry run has not been done: hold, touching nothing",
         without_dry_run, Stage.PENDING, phase=Phase.BLOCKED, says="dry run"),
    Case("a policy asks for an approval: await it, touching nothing",
         needing_approval, Stage.PENDING, phase=Phase.AWAITING_APPROVAL),
    Case("paused before the start: hold",
         lambda: asked(fresh(), "pause"), Stage.PENDING, phase=Phase.PAUSED),
    Case("another rollout holds the target: wait, naming it",
         held_by_another, Stage.PENDING, phase=Phase.BLOCKED, says="held by GuardedRollout 'first'"),
    Case("the target has no replicas: fail, naming the field",
         with_no_replicas, Stage.PENDING, phase=Phase.FAILED, says="spec.target.name"),
]

SCALE_CANARY = [
    Case("the canary's pods are not Ready yet: wait, the stable untouched",
         lambda: started(ready_delay=5), Stage.SCALE_CANARY, wave=0, requeue=1.0),
    Case("the canary's pods are Ready: lower the stable by as many",
         lambda: started(ready_delay=5, idle=5), Stage.SCALE_STABLE, ("scale shop 9",), wave=0),
    Case("a new wave: raise the canary to its size first",
         lambda: reached(Stage.SCALE_CANARY, 1), Stage.SCALE_CANARY, ("apply shop-canary 5 (shop:2.0.0)",), wave=1),
    Case("no Ready canary within spec.progressDeadline: roll back, the canary removed",
         lambda: started(ready_delay=10_000, idle=25, progressDeadline="20s"), Stage.ROLLING_BACK,
         ("delete shop-canary",), then=rolled_back_for("ProgressDeadlineExceeded")),
]

SCALE_STABLE = [
    Case("the canary Ready, the stable lowered and settled: bake",
         lambda: reached(Stage.SCALE_STABLE, 1, ready_delay=3), Stage.BAKE, wave=1, requeue=10.0),
    Case("the stable has not settled yet: wait",
         lambda: reached(Stage.SCALE_STABLE, 1), Stage.SCALE_STABLE, seen=stable_unsettled, requeue=1.0),
    Case("the stable raised by someone else: lower it again",
         lambda: reached(Stage.SCALE_STABLE, 1), Stage.SCALE_STABLE, ("scale shop 5",), seen=stable_at(10)),
    Case("a canary pod lost: back off to waiting for the canary, the stable not lowered further",
         lambda: reached(Stage.SCALE_STABLE, 1), Stage.SCALE_CANARY, seen=canary_ready(2), wave=1),
]

BAKE = [
    Case("its time has not passed: hold, asking to be woken when it has",
         lambda: reached(Stage.BAKE, 0), Stage.BAKE, wave=0, requeue=9.0, says="baking 10s"),
    Case("baked: the next wave starts, decided again at once",
         lambda: reached(Stage.BAKE, 0, idle=10), Stage.SCALE_CANARY, wave=1, requeue=0.0),
    Case("the last wave baked: promote the target to the change at its full count",
         lambda: reached(Stage.BAKE, 2, idle=10), Stage.PROMOTE, ("promote shop 10 (shop:2.0.0)",)),
    Case("baked, with a manual gate: wait at the gate for a promote request",
         lambda: reached(Stage.BAKE, 0, idle=10, waves=GATED), Stage.GATE, phase=Phase.PAUSED, requeue=None),
    Case("paused: hold past its time",
         lambda: asked(reached(Stage.BAKE, 0), "pause", idle=20), Stage.BAKE, phase=Phase.PAUSED, requeue=None),
    # Judged again when the next 5 s interval on the grid can be read (it ends on a multiple of 5 s; read
    # SCRAPE_LAG_SECONDS later): the world's clock is 4 s past a multiple of 5.
    Case("under analysis with no data: the bake clock stops; judged again when the next interval can be read",
         prometheus_down, Stage.BAKE, wave=0, requeue=1.0 + SCRAPE_LAG_SECONDS, says="no fresh data"),
    Case("its canary deleted by someone: create it again at the wave's size",
         lambda: reached(Stage.BAKE, 1), Stage.BAKE, ("apply shop-canary 5 (shop:2.0.0)",), seen=canary_gone),
    Case("the stable raised by someone else: lower it again",
         lambda: reached(Stage.BAKE, 1), Stage.BAKE, ("scale shop 5",), seen=stable_at(10)),
    Case("a promote request: the next wave at once",
         lambda: reached(Stage.BAKE, 1, ask="promote"), Stage.SCALE_CANARY, wave=2, requeue=0.0),
    Case("a promote-full request: promote the target now",
         lambda: reached(Stage.BAKE, 1, ask="promote-full"), Stage.PROMOTE, ("promote shop 10 (shop:2.0.0)",)),
    Case("an abort: the stable comes back and the canary goes, at once",
         lambda: reached(Stage.BAKE, 1, ask="abort"), Stage.ROLLING_BACK, ("scale shop 10", "delete shop-canary"),
         then=rolled_back_for("Aborted")),
]

GATE = [
    Case("no request: hold the wave",
         lambda: reached(Stage.GATE, waves=GATED), Stage.GATE, phase=Phase.PAUSED, requeue=None),
    Case("a promote request: the next wave",
         lambda: reached(Stage.GATE, waves=GATED, ask="promote"), Stage.SCALE_CANARY, wave=1, requeue=0.0),
    Case("an abort: the stable comes back and the canary goes, at once",
         lambda: reached(Stage.GATE, waves=GATED, ask="abort"), Stage.ROLLING_BACK,
         ("scale shop 10", "delete shop-canary"), then=rolled_back_for("Aborted")),
]

PROMOTE = [
    Case("the target promoted, not yet fully available: wait",
         lambda: reached(Stage.PROMOTE), Stage.PROMOTE, requeue=1.0),
    Case("the target fully available: clean up, removing the canary",
         lambda: reached(Stage.PROMOTE, idle=20), Stage.CLEANUP, ("delete shop-canary",)),
    Case("an abort is refused: the change is already on the target",
         lambda: reached(Stage.PROMOTE, ask="abort"), Stage.PROMOTE, then=request_rejected("already being promoted")),
]

CLEANUP = [
    Case("the canary is gone: succeeded, the target released",
         lambda: reached(Stage.CLEANUP), Stage.SUCCEEDED, ("release shop",), phase=Phase.SUCCEEDED, requeue=None),
]

ROLLING_BACK = [
    Case("aborted, the stable not back yet: wait",
         lambda: asked(reached(Stage.BAKE, 1), "abort", steps=1), Stage.ROLLING_BACK, requeue=1.0),
    Case("the stable back and the canary gone: rolled back, the target released",
         lambda: asked(reached(Stage.BAKE, 1), "abort", steps=1, idle=20), Stage.ROLLED_BACK, ("release shop",),
         phase=Phase.ROLLED_BACK),
    Case("an operator error, the stable not back yet: the canary, judged by nothing, keeps serving",
         failed_mid_wave, Stage.ROLLING_BACK, then=rolled_back_for("OperatorError")),
    Case("an operator error, the stable back: now the canary goes",
         lambda: failed_mid_wave(idle=20), Stage.ROLLING_BACK, ("delete shop-canary",)),
]

RETIRING = [
    # The old canary is judged by nothing: as after an operator error it serves until the stable is back
    # (the capacity rule), then goes; the new revision starts once it is gone (test_engine covers that).
    Case("the spec changed mid-wave: the stable comes back first, the old canary serving meanwhile",
         spec_changed_mid_wave, Stage.RETIRING, ("scale shop 10",)),
    Case("retiring, the stable back: now the old canary goes",
         lambda: spec_changed_mid_wave(idle=20), Stage.RETIRING, ("delete shop-canary",)),
]

ENDED = [
    Case("succeeded: nothing to do", lambda: finished(fresh()), Stage.SUCCEEDED, requeue=None),
    Case("rolled back: nothing to do", lambda: finished(asked(started(), "abort")), Stage.ROLLED_BACK, requeue=None),
    Case("rolled back, a retry: start again, claiming the target",
         lambda: asked(finished(asked(started(), "abort")), "retry"), Stage.SCALE_CANARY,
         ("claim shop", "apply shop-canary 1 (shop:2.0.0)"), wave=0),
]


@table(PENDING)
def test_pending(case: Case) -> None:
    check(case)


@table(SCALE_CANARY)
def test_scale_canary(case: Case) -> None:
    check(case)


@table(SCALE_STABLE)
def test_scale_stable(case: Case) -> None:
    check(case)


@table(BAKE)
def test_bake(case: Case) -> None:
    check(case)


@table(GATE)
def test_gate(case: Case) -> None:
    check(case)


@table(PROMOTE)
def test_promote(case: Case) -> None:
    check(case)


@table(CLEANUP)
def test_cleanup(case: Case) -> None:
    check(case)


@table(ROLLING_BACK)
def test_rolling_back(case: Case) -> None:
    check(case)


@table(RETIRING)
def test_retiring(case: Case) -> None:
    check(case)


@table(ENDED)
def test_ended(case: Case) -> None:
    check(case)
