"""Properties of the wave engine over random specs, worlds, requests and operator crashes.

Every run drives the pure engine with the fake Deployment controller of world.py, tick by tick:
no cluster and no mocks of Kubernetes. A "crash" is a step whose actions were carried out but
whose status was never written, so the next step decides again from the older status.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from specs import IMAGE, spec, waves
from world import World, pod_template

from guarded.api.rollout import GuardedRolloutSpec, GuardedRolloutStatus, Wave
from guarded.api.stages import Phase, Stage
from guarded.core.engine import Decision, decide
from guarded.core.observations import DeploymentState, Observations
from guarded.core.templates import content_hash
from guarded.core.waves import canary_replicas, weight_bound

WAVE_STAGES = {Stage.SCALE_CANARY, Stage.SCALE_STABLE, Stage.BAKE, Stage.GATE}
CAPACITY_STAGES = WAVE_STAGES | {Stage.PROMOTE, Stage.CLEANUP}
TERMINAL = {Stage.SUCCEEDED, Stage.ROLLED_BACK, Stage.FAILED}
ACTIONS = ["abort", "pause", "resume", "promote", "promote-full", "retry"]
ORIGINAL = content_hash(pod_template())
NEW_IMAGE = IMAGE
EPSILON = 1e-9
LIMIT = 1500  # steps; a healthy run of the largest example needs a few hundred

# About 200 examples a test keeps the file near 50 s of CPU on 2 cores; raise for a deeper search.
EXAMPLES = int(os.environ.get("GUARDED_PROPERTY_EXAMPLES", "200"))
FAST = settings(deadline=None, max_examples=EXAMPLES, suppress_health_check=[HealthCheck.too_slow])
FEWER = settings(FAST, max_examples=max(1, EXAMPLES * 3 // 4))  # the slower tests

# Not the 10 s of the other unit tests (tests/unit/conftest.py): each example drives the engine for about
# a hundred decisions, and decide() costs 0.3-0.5 ms (most of it Draft.update/condition copies and
# summary.update_conditions), so 200 examples take 5-11 s of CPU, twice that on a shared, loaded machine.
# 60 s per 200 examples still fails a hang or a many-fold slowdown quickly. Scaled, as the other unit tests'
# bound is (tests/unit/conftest.py), by the pytest workers sharing the cores: alone a test takes 10-23 s.
_SHARE = max(1.0, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) / (os.cpu_count() or 1) * 2)
pytestmark = pytest.mark.timeout(60 * max(1.0, EXAMPLES / 200) * _SHARE)


# -- generators -------------------------------------------------------------------------------

@st.composite
def wave_lists(draw: st.DrawFn, total: int, gates: bool) -> list[dict]:
    """1..6 waves, each kind strictly increasing (as the schema demands).

    Mixed lists are kept only in the order in which the canary never shrinks for this `total`:
    a wave list such as [3 pods, 10%] on 10 pods passes validation, but no engine can go from
    3 canary pods to 1 while keeping both the capacity rule and the weight bound (see the report).
    """
    n = draw(st.integers(1, 6))
    kind = draw(st.sampled_from(["weight", "replicas", "mixed"]))
    kinds = [kind] * n if kind != "mixed" else draw(st.lists(st.sampled_from(["weight", "replicas"]),
                                                             min_size=n, max_size=n))
    weights = sorted(draw(st.lists(st.integers(1, 100), min_size=kinds.count("weight"),
                                   max_size=kinds.count("weight"), unique=True)))
    counts = sorted(draw(st.lists(st.integers(1, 45), min_size=kinds.count("replicas"),
                                  max_size=kinds.count("replicas"), unique=True)))
    sizes = [{"weight": w} for w in weights] + [{"replicas": r} for r in counts]

    def key(size: dict) -> tuple[int, int]:
        return canary_replicas(Wave(**size), total), next(iter(size.values()))

    sizes.sort(key=key)
    waves = []
    for size in sizes:
        wave = {**size, "bake": f"{draw(st.integers(1, 20))}s"}  # the schema refuses a 0s bake
        if gates and draw(st.integers(0, 4)) == 0:
            wave["manualGate"] = True
        waves.append(wave)
    return waves


@dataclass
class Scenario:
    spec: GuardedRolloutSpec
    replicas: int
    ready_delay: int
    jitter: int
    seed: int
    requests: list[tuple[int, str]] = field(default_factory=list)  # (earliest step, action)
    crashes: frozenset[int] = frozenset()  # steps whose status is never written

    def world(self) -> World:
        return World(self.spec, replicas=self.replicas, ready_delay=self.ready_delay,
                     jitter=self.jitter, seed=self.seed)


@st.composite
def scenarios(draw: st.DrawFn, *, gates: bool = True, requests: bool = False,
              crashes: bool = False) -> Scenario:
    replicas = draw(st.integers(2, 40))  # one replica is refused before wave 1 (core.validation)
    rollout = spec(waves=draw(wave_lists(replicas, gates)))
    scenario = Scenario(spec=rollout, replicas=replicas, ready_delay=draw(st.integers(0, 5)),
                        jitter=draw(st.integers(0, 3)), seed=draw(st.integers(0, 2**16)))
    ends: list[int] = []
    if crashes:  # single crashes and bursts of them (a crash-looping operator), often at the start
        bursts = draw(st.lists(st.tuples(st.one_of(st.integers(0, 8), st.integers(0, 400)), st.integers(1, 6)),
                               max_size=12))
        scenario.crashes = frozenset(i for start, length in bursts for i in range(start, start + length))
        ends = sorted({start + length for start, length in bursts})
    if requests:  # at random steps, or right after a burst of crashes (the cluster ahead of the status)
        when = st.one_of(st.integers(0, 200), st.sampled_from(ends)) if ends else st.integers(0, 200)
        scenario.requests = sorted(draw(st.lists(st.tuples(when, st.sampled_from(ACTIONS)), max_size=6)))
    return scenario


# Regressions: runs that once broke a property (each needs a rare mix of crashes and timing).
# An unwritten start whose successor lowered the stable: the next start took 1 pod for the original 2.
CRASHED_START = Scenario(spec=spec(waves=waves("1%", bake="1s")), replicas=2, ready_delay=0, jitter=0, seed=0,
                         crashes=frozenset({0, 1}))
# An unwritten move to wave 2: the next decision shrank the grown canary back to wave 1 and lowered the stable.
CRASHED_ADVANCE = Scenario(spec=spec(waves=waves("1 pod", "2 pods", "3 pods", bake="1s")),
                           replicas=2, ready_delay=0, jitter=0, seed=0, crashes=frozenset({3}))
# Unwritten decisions ran wave 2 and lowered the stable; a pause then found the status still in wave 1
# (an engine that sizes a wave its input status does not name shrinks the canary below capacity here).
PAUSE_BEHIND = Scenario(spec=spec(waves=waves("1 pod", "2 pods", bake="2s")), replicas=2,
                        ready_delay=1, jitter=0, seed=0, requests=[(8, "pause")], crashes=frozenset(range(5, 8)))
# An unwritten promotion: the next decision saw its own template as a foreign change and held forever.
# (Step 4 promotes after the 1s bake; with the 0s bakes the schema once allowed, step 3 did.)
CRASHED_PROMOTION = Scenario(spec=spec(waves=waves("100%", bake="1s")), replicas=2, ready_delay=0, jitter=0,
                             seed=0, crashes=frozenset({4}))
# An unwritten start created the canary; an abort in Pending then left it serving.
CRASHED_START_ABORT = Scenario(spec=spec(waves=waves("1 pod", bake="5s")), replicas=2, ready_delay=0, jitter=0,
                               seed=0, crashes=frozenset({0}))


# -- the driver -------------------------------------------------------------------------------

Check = Callable[[World, Decision], None]


def acknowledged(world: World) -> bool:
    """The last request sent has been answered in the written status (or none was sent)."""
    last = world.status.last_request
    return world.request is None or (last is not None and last.id == world.request.id)


def drive(scenario: Scenario, check: Check | None = None, *, world: World | None = None,
          inject: Callable[[World, int], str | None] | None = None) -> World:
    """Run a scenario to a terminal stage, calling `check` after every step.

    Requests are sent one at a time, each once the previous one is answered (a user of
    `kubectl guarded` who overwrote an unanswered request would lose it). Once the scripted
    requests are out, a gate gets a promote and a pause gets a resume, so every run can end.
    """
    world = world or scenario.world()
    queue = list(scenario.requests)
    for step in range(LIMIT):
        stage = world.status.stage
        extra = inject(world, step) if inject else None
        if extra is not None:
            world.ask(extra)  # sent at once, even over an unanswered request
        elif acknowledged(world):
            if queue and (queue[0][0] <= step or stage in TERMINAL):
                world.ask(queue.pop(0)[1])
            elif not queue and world.status.paused:
                world.ask("resume")
            elif not queue and stage == Stage.GATE:
                world.ask("promote")
            elif not queue and stage in TERMINAL:
                return world
        decision = world.step(persist=step not in scenario.crashes)
        if check is not None:
            check(world, decision)
    raise AssertionError(f"did not finish in {LIMIT} steps: {world.status.stage} {world.status.message}")


def wave_starts(world: World) -> list[int | None]:
    return [h.wave for h in world.status.history
            if h.reason == "WaveStarted" and h.revision == world.status.revision]


def image(template: dict) -> str:
    return template["spec"]["containers"][0]["image"]


# -- 1. capacity -------------------------------------------------------------------------------

@FAST
@given(scenarios(requests=True, crashes=True))
@example(CRASHED_START)
@example(CRASHED_ADVANCE)
@example(PAUSE_BEHIND)
def test_ready_pods_never_fall_below_the_original_count_while_waves_or_promotion_run(scenario: Scenario) -> None:
    reached = False

    def check(world: World, decision: Decision) -> None:
        nonlocal reached
        canary, stable = world.serving()
        if canary + stable >= scenario.replicas:
            reached = True
        if reached and decision.status.stage in CAPACITY_STAGES:
            assert decision.status.stable_replicas == scenario.replicas, "N is the count before the rollout"
            assert canary + stable >= scenario.replicas, (
                f"tick {world.tick}, stage {decision.status.stage} wave {decision.status.wave}: "
                f"{canary} canary + {stable} stable Ready < {scenario.replicas}")

    drive(scenario, check)


# -- 2. weight bound ---------------------------------------------------------------------------

@FAST
@given(scenarios(requests=True, crashes=True))
@example(PAUSE_BEHIND)
def test_the_canary_share_of_ready_pods_stays_within_the_current_waves_bound(scenario: Scenario) -> None:
    def check(world: World, decision: Decision) -> None:
        status = decision.status
        if status.stage not in WAVE_STAGES:
            return
        canary, stable = world.serving()
        if canary + stable == 0:
            return
        assert status.wave is not None
        bound = weight_bound(scenario.spec.waves[status.wave], scenario.replicas)
        share = canary / (canary + stable)
        assert share <= bound + EPSILON, (
            f"tick {world.tick}, stage {status.stage} wave {status.wave}: {canary}/{canary + stable} "
            f"= {share:.3f} > bound {bound:.3f}")

    drive(scenario, check)


# -- 3. rollback -------------------------------------------------------------------------------

@FAST
@given(scenarios(requests=True, crashes=True), st.integers(0, 10_000))
@example(CRASHED_START_ABORT, 0)
def test_an_abort_at_any_wave_tick_ends_with_only_the_original_stable_serving(
        scenario: Scenario, when: int) -> None:
    # The scripted requests must not end the run first; keep those that cannot (no abort/promote-full).
    scenario = dataclasses.replace(scenario, requests=[(t, a) for t, a in scenario.requests
                                                       if a in ("pause", "resume", "promote")])
    # A dry run lists the steps after which the cluster is in a wave (the decision acted on was in a
    # wave stage, whether or not its status was written); the abort comes right after one of them.
    wave_steps = [i for i, d in enumerate(drive(scenario).log) if d.status.stage in WAVE_STAGES]
    assert wave_steps, "every run passes through wave 1"
    abort_step = wave_steps[when % len(wave_steps)] + 1
    aborted = False

    def inject(world: World, step: int) -> str | None:
        nonlocal aborted
        if step == abort_step:
            aborted = True
            return "abort"
        return None

    world = drive(scenario, inject=inject)
    assert aborted, "the abort was sent"
    assert world.status.stage == Stage.ROLLED_BACK
    assert world.status.phase == Phase.ROLLED_BACK
    assert world.status.rollback_reason == "Aborted"
    assert "shop-canary" not in world.deployments
    stable = world.deployments["shop"]
    assert stable.replicas == scenario.replicas
    assert image(stable.template) == "shop:1.0.0"
    assert content_hash(stable.template) == ORIGINAL
    ready = stable.ready_pods(world.tick)
    assert len(ready) >= scenario.replicas
    assert all(h == ORIGINAL for h, _ in ready)


# -- 4. every run ends --------------------------------------------------------------------------

@FAST
@given(scenarios(gates=False))
def test_a_healthy_run_without_requests_goes_through_every_wave_once_and_succeeds(scenario: Scenario) -> None:
    world = drive(scenario)
    assert world.request is None, "no request was needed"
    assert world.status.stage == Stage.SUCCEEDED and world.status.phase == Phase.SUCCEEDED
    assert wave_starts(world) == list(range(len(scenario.spec.waves)))
    target = world.deployments["shop"]
    assert image(target.template) == NEW_IMAGE
    assert target.replicas == scenario.replicas
    assert "shop-canary" not in world.deployments


# -- 5. crash safety -----------------------------------------------------------------------------

@FAST
@given(scenarios(crashes=True))
@example(CRASHED_START)
@example(CRASHED_ADVANCE)
@example(CRASHED_PROMOTION)
def test_a_run_with_crashes_before_status_writes_still_passes_each_wave_exactly_once(scenario: Scenario) -> None:
    world = drive(scenario)
    assert world.status.stage == Stage.SUCCEEDED, world.status.message
    assert wave_starts(world) == list(range(len(scenario.spec.waves)))
    target = world.deployments["shop"]
    assert image(target.template) == NEW_IMAGE
    assert target.replicas == scenario.replicas
    assert "shop-canary" not in world.deployments


# -- 6. replay --------------------------------------------------------------------------------------

@FEWER
@given(scenarios(requests=True, crashes=True))
def test_replaying_any_recorded_decision_gives_the_same_decision(scenario: Scenario) -> None:
    world = drive(scenario)
    assert len(world.inputs) == len(world.log)
    for (rollout, status, obs), recorded in zip(world.inputs, world.log, strict=True):
        # The inputs, serialized, before and after: any change shows (and this costs a tenth of deep copies).
        before = inputs_as_bytes(status, obs)
        again = decide(rollout, status, obs)
        assert again.actions == recorded.actions
        assert again.status == recorded.status
        assert again.events == recorded.events
        assert again.requeue_after == recorded.requeue_after
        assert inputs_as_bytes(status, obs) == before, "decide() changed its inputs"


def inputs_as_bytes(status: GuardedRolloutStatus, obs: Observations) -> tuple[str, bytes]:
    return status.model_dump_json(), pickle.dumps(obs, pickle.HIGHEST_PROTOCOL)


# -- 7. terminal stages are quiet -------------------------------------------------------------------

deployment_states = st.builds(
    DeploymentState,
    name=st.just("shop"),
    generation=st.integers(1, 5), observed_generation=st.integers(0, 5), replicas=st.integers(0, 45),
    status_replicas=st.integers(0, 45), ready=st.integers(0, 45), available=st.integers(0, 45),
    updated=st.integers(0, 45), template=st.sampled_from([pod_template(), pod_template("shop:9.9.9")]),
    deleting=st.booleans(),
)


@FEWER
@given(scenarios(requests=True, crashes=True), st.one_of(st.none(), st.integers(0, 80)), st.integers(1, 30),
       st.lists(st.tuples(st.one_of(st.none(), deployment_states), st.one_of(st.none(), deployment_states),
                          st.integers(0, 10**6)), max_size=10))
def test_terminal_stages_emit_no_actions_without_a_new_request_or_spec(
        scenario: Scenario, abort: int | None, ticks: int,
        observed: list[tuple[DeploymentState | None, DeploymentState | None, int]]) -> None:
    if abort is not None:  # usually ends in RolledBack (unless the abort comes during promotion)
        scenario = dataclasses.replace(scenario, requests=[(abort, "abort")])
    world = drive(scenario)
    status: GuardedRolloutStatus = world.status
    assert status.stage in (Stage.SUCCEEDED, Stage.ROLLED_BACK)
    # The world goes on; the last request is still in its annotation (or there never was one).
    for _ in range(ticks):
        decision = world.step()
        assert decision.actions == (), f"{status.stage}: {decision.actions}"
        assert decision.status.stage == status.stage
    # Whatever the cluster looks like later, a terminal rollout touches nothing.
    for target, canary, seconds in observed:
        obs = Observations(now=world.now + timedelta(seconds=seconds), namespace="shop", name="release",
                           uid="uid-1", generation=world.generation, target=target,
                           canary=None if canary is None else dataclasses.replace(canary, name="shop-canary"),
                           request=world.request)
        decision = decide(world.spec, world.status, obs)
        assert decision.actions == (), f"{status.stage}: {decision.actions}"
        assert decision.status.stage == status.stage
