"""A shared configuration change across consumers (core/consumers.py): one parent rollout, one consumer's rollout
per spec.consumers Deployment, in lockstep by observing each other, rolled back together.

decide() is driven directly with hand-built Observations: the parent sees its consumers' rollouts as
`obs.children`, a consumer's rollout sees its parent as `obs.parent` (LinkedRollout values with the API models).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from specs import analysis, spec, wave, waves
from world import T0, pod_template

from guarded.api.reasons import Reason
from guarded.api.rollout import (
    ConfigVersion,
    ConsumerStatus,
    GuardedRolloutSpec,
    GuardedRolloutStatus,
    HistoryEntry,
    Wave,
)
from guarded.api.stages import Stage
from guarded.core import conditions as cond
from guarded.core.actions import (
    ApplyCanary,
    ClaimTarget,
    ConfigRef,
    CreateRollout,
    DeleteDeployment,
    DeleteRollout,
    MirrorConfig,
    PromoteTarget,
    ScaleDeployment,
)
from guarded.core.clock import stamp
from guarded.core.config_refs import content_digest, version_name
from guarded.core.consumers import PART_OF_LABEL, WAIT, child_name, child_spec, offset, part_of_value
from guarded.core.draft import rollout_revision, template_hash
from guarded.core.engine import Decision, decide
from guarded.core.observations import (
    Claim,
    ConfigObs,
    DeploymentState,
    GuardObservation,
    LinkedRollout,
    Observations,
    Request,
    VersionObs,
)
from guarded.core.templates import REVISION_ANNOTATION, canary_name, claim_value
from guarded.core.waves import canary_replicas

NOW = T0 + timedelta(minutes=10)
NAME, UID = "release", "uid-release"
REPLICAS = 4
OLD = {"settings.json": '{"checkout": true}'}
NEW = {"settings.json": '{"checkout": false}'}
CHANGE = {"configMaps": [{"name": "shop-config", "data": NEW}]}
VERSION = version_name("shop-config", content_digest(NEW, {}))
PARENT = spec(waves=waves("1 pod", "50%", "100%", bake="3s"), change=CHANGE, consumers=[{"name": "cart"},
                                                                                          {"name": "web"}])
GUARD = GuardObservation(dry_run_done=True, created=stamp(T0))   # the gates' observations: the dry run passed
# The parent's gates also find every consumer, reading the ConfigMap: name -> (replicas, what it reads, labels).
FOUND = {name: (REPLICAS, frozenset({("ConfigMap", "shop-config")}), {"app": name}) for name in ("cart", "web")}


# -- builders ---------------------------------------------------------------------------------------

def child(consumer: str) -> GuardedRolloutSpec:
    """The spec the parent gives the rollout of `consumer`."""
    return child_spec(PARENT, list(PARENT.waves), consumer)


def at(rollout: GuardedRolloutSpec, stage: Stage, wave: int = 0, **fields: object) -> GuardedRolloutStatus:
    """A status at `stage` of wave index `wave`; Pending: one that never started. Started 2 minutes ago, its
    wave's bake began a minute ago (long past the 3 s bakes)."""
    if stage == Stage.PENDING:
        return GuardedRolloutStatus(**fields)
    base: dict = dict(stage=stage, wave=wave, plan=list(rollout.waves), revision=rollout_revision(rollout),
                      stable_replicas=REPLICAS, stable_template_hash=template_hash(reading_config()), attempt=1,
                      started_at=stamp(NOW - timedelta(minutes=2)), wave_started_at=stamp(NOW - timedelta(minutes=1)),
                      bake_started_at=stamp(NOW - timedelta(minutes=1)), baked_seconds=60.0,
                      config=[ConfigVersion(kind="ConfigMap", name="shop-config", version=VERSION)])
    return GuardedRolloutStatus(**{**base, **fields})


def reading_config() -> dict:
    template = pod_template()
    template["spec"]["volumes"] = [{"name": "settings", "configMap": {"name": "shop-config"}}]
    return template


def deployment(name: str, replicas: int, **fields: object) -> DeploymentState:
    """A settled Deployment with every pod Ready."""
    return DeploymentState(name=name, uid=f"uid-{name}", replicas=replicas, status_replicas=replicas, ready=replicas,
                           available=replicas, updated=replicas, selector={"matchLabels": {"app": "shop"}},
                           template=reading_config(), **fields)


def observe(rollout: GuardedRolloutSpec, status: GuardedRolloutStatus, *, name: str = NAME, uid: str = UID,
            guard: GuardObservation | None = None, owner_uid: str | None = None,
            parent: LinkedRollout | None = None, children: tuple[LinkedRollout, ...] = ()) -> Observations:
    """The cluster as a rollout at `status` finds it: in a wave its canary runs the wave's pods and the target the
    rest; elsewhere no canary and the target at its count. Started and not ended, it holds the target."""
    target = rollout.target.name
    stage, canary, pods = status.stage, None, REPLICAS
    if stage.in_wave:
        n = canary_replicas(status.plan[status.wave or 0], REPLICAS)
        canary = deployment(canary_name(target), n, owner_uid=uid,
                            annotations={REVISION_ANNOTATION: status.revision or ""})
        pods -= n
    held = stage != Stage.PENDING and not stage.terminal
    claim = Claim(value=claim_value(name, uid), name=name, uid=uid, alive=True) if held else None
    return Observations(
        now=NOW, namespace="shop", name=name, uid=uid, generation=1, target=deployment(target, pods), canary=canary,
        guard=guard, claim=claim, owner_uid=owner_uid, parent=parent, children=children,
        config=(ConfigObs(kind="ConfigMap", name="shop-config", version=VERSION,
                          content={"data": {**OLD, **NEW}, "binaryData": {}}),),
        config_versions=(VersionObs(kind="ConfigMap", version=VERSION, exists=True, uid="uid-version", ours=True),))


def linked_child(consumer: str, stage: Stage, wave: int = 0, *, rollout: GuardedRolloutSpec | None = None,
                 owner: str = UID, **fields: object) -> LinkedRollout:
    """The rollout of `consumer` as the parent observes it (the spec the parent gives it, unless `rollout`)."""
    rollout = rollout or child(consumer)
    return LinkedRollout(name=child_name(NAME, consumer), uid=f"uid-{consumer}-rollout", owner_uid=owner,
                         spec=rollout, status=at(rollout, stage, wave, **fields))


def linked_parent(stage: Stage, wave: int = 0, **fields: object) -> LinkedRollout:
    return LinkedRollout(name=NAME, uid=UID, spec=PARENT, status=at(PARENT, stage, wave, **fields))


def decide_parent(status: GuardedRolloutStatus, *children: LinkedRollout,
                  guard: GuardObservation | None = None) -> Decision:
    return decide(PARENT, status, observe(PARENT, status, children=children, guard=guard))


def decide_child(status: GuardedRolloutStatus, parent: LinkedRollout | None, *, consumer: str = "cart",
                 rollout: GuardedRolloutSpec | None = None, owner_uid: str | None = UID) -> Decision:
    """A decision of the rollout of `consumer` (the spec its parent gives it, unless `rollout`)."""
    rollout = rollout or child(consumer)
    return decide(rollout, status, observe(rollout, status, name=child_name(NAME, consumer),
                                           uid=f"uid-{consumer}-rollout", guard=GUARD, owner_uid=owner_uid,
                                           parent=parent))


def created(decision: Decision) -> dict[str, dict]:
    """The consumers' rollouts a decision creates, by name."""
    return {a.manifest["metadata"]["name"]: a.manifest for a in decision.actions if isinstance(a, CreateRollout)}


def reasons(decision: Decision) -> list[str]:
    return [e.reason for e in decision.events]


def gate(decision: Decision, name: str) -> tuple[bool, str, str]:
    g = next(g for g in decision.status.gates if g.gate == name)
    return g.passed, g.reason, g.message


# -- child_spec, child_name, offset -------------------------------------------------------------------

def test_a_consumers_spec_is_the_parents_change_on_the_consumer_with_the_waves_after_the_first_each_gated():
    parent = spec(waves=waves("1 pod", "10%", "50%", bake="3s"), change=CHANGE, consumers=[{"name": "cart"}],
                  analysis=analysis(interval="5s"), progressDeadline="20s", description="checkout off")
    plan = [Wave(replicas=1, bake="30s"), Wave(weight=10, bake="30s"), Wave(weight=50, bake="30s")]  # policy bakes
    out = child_spec(parent, plan, "cart")
    assert out.target.name == "cart" and out.consumers == []
    assert [w.to_wire() for w in out.waves] == [{"weight": 10, "bake": "30s", "manualGate": True},
                                                {"weight": 50, "bake": "30s", "manualGate": True}]
    assert out.change == parent.change and out.analysis == parent.analysis
    assert out.progress_deadline == "20s" and out.description == "checkout off"
    assert [w.manual_gate for w in plan] == [False, False, False]   # the plan given is not changed


def test_a_plan_of_one_wave_gives_the_consumer_that_wave_gated():
    parent = spec(waves=[wave("100%", bake="5s")], change=CHANGE, consumers=[{"name": "cart"}])
    out = child_spec(parent, list(parent.waves), "cart")
    assert [w.to_wire() for w in out.waves] == [{"weight": 100, "bake": "5s", "manualGate": True}]
    assert offset(list(parent.waves)) == 0
    assert offset(list(PARENT.waves)) == 1


def test_a_consumers_rollout_is_named_after_parent_and_consumer_within_253_characters():
    assert child_name("release", "cart") == "release-cart" == child_name("release", "cart")
    exact = child_name("r" * 200, "c" * 52)
    assert exact == "r" * 200 + "-" + "c" * 52 and len(exact) == 253
    long = child_name("r" * 253, "cart")
    assert len(long) == 253 and long.startswith("r" * 236 + "-") and long == child_name("r" * 253, "cart")
    assert child_name("r" * 253, "web") != long   # the same prefix, another consumer: another name
    assert len(child_name("r" * 253, "c" * 253)) == 253


# -- the parent: waves wait for the consumers ----------------------------------------------------------

def test_the_parents_first_wave_advances_without_consumers():
    d = decide_parent(at(PARENT, Stage.BAKE, 0))
    assert (d.status.stage, d.status.wave, d.requeue_after) == (Stage.SCALE_CANARY, 1, 0.0)


def test_the_parents_second_wave_holds_until_every_consumer_waits_in_gate_of_its_first_wave():
    baked = at(PARENT, Stage.BAKE, 1)
    for children in [(), (linked_child("cart", Stage.GATE, 0),),
                     (linked_child("cart", Stage.GATE, 0), linked_child("web", Stage.BAKE, 0)),
                     (linked_child("cart", Stage.GATE, 0), linked_child("web", Stage.PENDING)),
                     (linked_child("cart", Stage.GATE, 0), linked_child("web", Stage.GATE, 1))]:
        d = decide_parent(baked, *children)
        assert (d.status.stage, d.status.wave, d.requeue_after) == (Stage.BAKE, 1, WAIT), children
        assert not any(isinstance(a, ScaleDeployment) for a in d.actions)
    d = decide_parent(baked, linked_child("cart", Stage.GATE, 0), linked_child("web", Stage.GATE, 0))
    assert (d.status.stage, d.status.wave, d.requeue_after) == (Stage.SCALE_CANARY, 2, 0.0)
    assert created(d) == {}


def test_the_parents_last_wave_waits_for_the_consumers_last_wave_then_promotes():
    last = at(PARENT, Stage.BAKE, 2)
    d = decide_parent(last, linked_child("cart", Stage.GATE, 0), linked_child("web", Stage.GATE, 1))
    assert (d.status.stage, d.status.wave) == (Stage.BAKE, 2)
    d = decide_parent(last, linked_child("cart", Stage.GATE, 1), linked_child("web", Stage.GATE, 1))
    assert d.status.stage == Stage.PROMOTE
    assert any(isinstance(a, PromoteTarget) for a in d.actions)


def test_a_consumers_rollout_with_another_spec_or_another_owner_does_not_count():
    baked = at(PARENT, Stage.BAKE, 1)
    other_waves = child_spec(PARENT, [Wave(replicas=1), Wave(weight=50), Wave(weight=100)], "web")  # 60 s bakes
    ungated = GuardedRolloutSpec.model_validate({**child("web").to_wire(),
                                                 "waves": [w.to_wire() for w in PARENT.waves[1:]]})
    for web in (linked_child("web", Stage.GATE, 0, rollout=other_waves),
                linked_child("web", Stage.GATE, 0, rollout=ungated),
                linked_child("web", Stage.GATE, 0, owner="uid-someone-else")):
        d = decide_parent(baked, linked_child("cart", Stage.GATE, 0), web)
        assert (d.status.stage, d.status.wave, d.requeue_after) == (Stage.BAKE, 1, WAIT)


# -- the parent: rolling back together ---------------------------------------------------------------

def test_a_consumers_rollback_rolls_the_parent_back_naming_the_consumer():
    cart = linked_child("cart", Stage.ROLLED_BACK, 0, rollback_reason="AnalysisFailed",
                        completed_at=stamp(NOW - timedelta(seconds=5)))
    for stage in (Stage.SCALE_CANARY, Stage.SCALE_STABLE, Stage.BAKE, Stage.GATE):
        d = decide_parent(at(PARENT, stage, 1), cart, linked_child("web", Stage.GATE, 0))
        assert d.status.stage == Stage.ROLLING_BACK and d.status.rollback_reason == Reason.CONSUMER_ROLLED_BACK
        [entry] = [h for h in d.status.history if h.reason == Reason.ROLLING_BACK]
        assert "consumer 'cart' (release-cart) rolled back (AnalysisFailed)" in entry.message


def test_a_consumer_rolling_back_rolls_the_parent_back_too():
    d = decide_parent(at(PARENT, Stage.BAKE, 1), linked_child("cart", Stage.GATE, 0),
                      linked_child("web", Stage.ROLLING_BACK, 0, rollback_reason="ProgressDeadlineExceeded"))
    assert d.status.rollback_reason == Reason.CONSUMER_ROLLED_BACK
    assert "consumer 'web'" in d.status.history[-1].message


def test_a_consumers_rollback_of_an_earlier_attempt_does_not_roll_back_the_parents_retry():
    # The parent rolled back, and with it both consumers' rollouts; then a retry started it again. Until each
    # consumer's rollout observes the new start (and starts again with it, check_parent), it still reads
    # RolledBack: that ended an earlier attempt, not this one. (It used to roll the retry back at once.)
    ended = dict(rollback_reason="ParentRolledBack", completed_at=stamp(NOW - timedelta(minutes=5)))
    retry = at(PARENT, Stage.SCALE_CANARY, 0, started_at=stamp(NOW), wave_started_at=stamp(NOW), attempt=2)
    d = decide_parent(retry, linked_child("cart", Stage.ROLLED_BACK, 0, **ended),
                      linked_child("web", Stage.ROLLED_BACK, 0, **ended))
    assert d.status.stage.in_wave and d.status.rollback_reason is None
    assert Reason.ROLLING_BACK not in reasons(d)
    # One that rolled back after this attempt started does roll it back.
    now = dict(rollback_reason="AnalysisFailed", completed_at=stamp(NOW + timedelta(seconds=1)))
    d = decide_parent(at(PARENT, Stage.BAKE, 1, started_at=stamp(NOW)), linked_child("cart", Stage.ROLLED_BACK, 0,
                                                                                     **now))
    assert d.status.rollback_reason == Reason.CONSUMER_ROLLED_BACK


def test_the_parent_ends_its_rollback_only_once_every_consumers_rollout_has_ended():
    restored = at(PARENT, Stage.ROLLING_BACK, 1, rollback_reason="AnalysisFailed")
    for cart in (linked_child("cart", Stage.BAKE, 0), linked_child("cart", Stage.GATE, 0),
                 linked_child("cart", Stage.ROLLING_BACK, 0, rollback_reason="ParentRolledBack")):
        d = decide_parent(restored, cart, linked_child("web", Stage.ROLLED_BACK, 0))
        assert (d.status.stage, d.requeue_after) == (Stage.ROLLING_BACK, WAIT)
    d = decide_parent(restored, linked_child("cart", Stage.ROLLED_BACK, 0, rollback_reason="ParentRolledBack"),
                      linked_child("web", Stage.PENDING))
    assert d.status.stage == Stage.ROLLED_BACK and d.status.completed_at == stamp(NOW)
    assert Reason.ROLLED_BACK in reasons(d)


# -- the parent: promotion ---------------------------------------------------------------------------

def test_the_parent_succeeds_once_every_consumers_rollout_has_and_then_mirrors_the_config():
    cleanup = at(PARENT, Stage.CLEANUP, 2)
    for web in (linked_child("web", Stage.PROMOTE, 1), linked_child("web", Stage.CLEANUP, 1),
                linked_child("web", Stage.GATE, 1)):
        d = decide_parent(cleanup, linked_child("cart", Stage.SUCCEEDED, 1), web)
        assert (d.status.stage, d.requeue_after) == (Stage.CLEANUP, WAIT)
        assert not any(isinstance(a, MirrorConfig) for a in d.actions)
    d = decide_parent(cleanup, linked_child("cart", Stage.SUCCEEDED, 1), linked_child("web", Stage.SUCCEEDED, 1))
    assert d.status.stage == Stage.SUCCEEDED
    assert [a for a in d.actions if isinstance(a, MirrorConfig)] == [
        MirrorConfig(target="shop", config=(ConfigRef(kind="ConfigMap", name="shop-config", version=VERSION),))]


def test_a_consumers_rollout_succeeds_without_mirroring_the_config():
    d = decide_child(at(child("cart"), Stage.CLEANUP, 1), linked_parent(Stage.CLEANUP, 2))
    assert d.status.stage == Stage.SUCCEEDED
    assert not any(isinstance(a, MirrorConfig) for a in d.actions)


# -- the parent makes its consumers' rollouts --------------------------------------------------------

def test_a_started_parent_creates_each_consumers_rollout_owned_by_it():
    d = decide_parent(at(PARENT, Stage.BAKE, 0, bake_started_at=stamp(NOW)))
    assert d.status.stage == Stage.BAKE
    made = created(d)
    assert list(made) == ["release-cart", "release-web"]
    for consumer in ("cart", "web"):
        m = made[f"release-{consumer}"]
        assert m["kind"] == "GuardedRollout" and m["metadata"]["namespace"] == "shop"
        assert m["metadata"]["labels"] == {PART_OF_LABEL: NAME}
        [owner] = m["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == ("GuardedRollout", NAME, UID, True)
        assert GuardedRolloutSpec.model_validate(m["spec"]) == child(consumer)   # read back: the current spec


def test_the_parent_creates_only_the_missing_consumers_rollouts():
    waiting = at(PARENT, Stage.BAKE, 0, bake_started_at=stamp(NOW))
    assert list(created(decide_parent(waiting, linked_child("cart", Stage.PENDING)))) == ["release-web"]
    gone = LinkedRollout(name="release-cart", uid="uid-cart-rollout", owner_uid=UID, spec=child("cart"),
                         status=GuardedRolloutStatus(), deleting=True)
    assert list(created(decide_parent(waiting, gone))) == ["release-cart", "release-web"]
    both = (linked_child("cart", Stage.PENDING), linked_child("web", Stage.PENDING))
    assert created(decide_parent(waiting, *both)) == {}


def test_no_consumers_rollout_before_the_parent_starts():
    assert created(decide_parent(at(PARENT, Stage.PENDING))) == {}                  # gates not observed yet
    for held in (GuardObservation(dry_run_done=False, created=stamp(T0), consumers=FOUND),
                 GuardObservation(dry_run_done=True, created=stamp(T0), consumers={"cart": FOUND["cart"]})):
        d = decide_parent(at(PARENT, Stage.PENDING), guard=held)
        assert d.status.stage == Stage.PENDING and created(d) == {}
    started = GuardObservation(dry_run_done=True, created=stamp(T0), consumers=FOUND)
    d = decide_parent(at(PARENT, Stage.PENDING), guard=started)                    # the decision that starts it
    assert d.status.stage == Stage.SCALE_CANARY and d.status.plan
    assert list(created(d)) == ["release-cart", "release-web"]


# -- a consumer's rollout: admitted by its parent only -------------------------------------------------

def test_a_rollout_claiming_a_parent_that_does_not_own_it_never_starts():
    parent = linked_parent(Stage.SCALE_CANARY, 1)
    not_ours = spec(waves=[wave("50%", gate=True), wave("100%", gate=True)], change=CHANGE, target="cart")
    for d in (decide_child(at(child("cart"), Stage.PENDING), parent, owner_uid="uid-someone-else"),
              decide_child(at(child("cart"), Stage.PENDING), parent, owner_uid=None),
              decide_child(at(not_ours, Stage.PENDING), parent, rollout=not_ours)):
        assert d.status.stage == Stage.PENDING
        passed, reason, message = gate(d, "PartOf")
        assert (passed, reason) == (False, Reason.NOT_PART_OF)
        assert message.startswith("labelled part of GuardedRollout 'release', which does not own it")
        assert cond.get(d.status.conditions, cond.ADMITTED).reason == Reason.NOT_PART_OF
        assert not any(isinstance(a, ClaimTarget | ApplyCanary | ScaleDeployment) for a in d.actions)


def test_a_consumers_rollout_waits_for_the_parents_second_wave_then_starts():
    d = decide_child(at(child("cart"), Stage.PENDING), linked_parent(Stage.BAKE, 0))
    assert d.status.stage == Stage.PENDING
    passed, reason, message = gate(d, "PartOf")
    assert (passed, reason) == (False, Reason.WAITING_FOR_PARENT) and "reaches wave 2" in message
    d = decide_child(at(child("cart"), Stage.PENDING), linked_parent(Stage.SCALE_CANARY, 1))
    assert (d.status.stage, d.status.wave) == (Stage.SCALE_CANARY, 0)
    assert gate(d, "PartOf")[:2] == (True, Reason.PART_OF)
    assert ClaimTarget(name="cart", value=claim_value("release-cart", "uid-cart-rollout"), expected=None) in d.actions


@pytest.mark.parametrize(("mine", "parent", "moves"), [
    (0, linked_parent(Stage.BAKE, 1), False),
    (0, linked_parent(Stage.GATE, 1), False),
    (0, linked_parent(Stage.SCALE_CANARY, 2), True),
    (1, linked_parent(Stage.BAKE, 2), False),
    (1, linked_parent(Stage.PROMOTE, 2), True),
    (1, linked_parent(Stage.CLEANUP, 2), True),
])
def test_a_consumers_rollout_leaves_its_gate_once_the_parent_is_past_the_matching_wave(
        mine: int, parent: LinkedRollout, moves: bool):
    d = decide_child(at(child("cart"), Stage.GATE, mine), parent)
    if not moves:
        assert (d.status.stage, d.status.wave, d.requeue_after) == (Stage.GATE, mine, WAIT)
    elif mine + 1 < len(child("cart").waves):
        assert (d.status.stage, d.status.wave) == (Stage.SCALE_CANARY, mine + 1)
    else:
        assert d.status.stage == Stage.PROMOTE


def test_a_consumers_rollout_with_another_owner_never_leaves_its_gate():
    d = decide_child(at(child("cart"), Stage.GATE, 0), linked_parent(Stage.PROMOTE, 2), owner_uid="uid-other")
    assert (d.status.stage, d.status.wave) == (Stage.GATE, 0)


# -- a consumer's rollout: rolling back and starting again with its parent ---------------------------

def test_a_consumers_rollout_rolls_back_with_its_parent():
    parent = linked_parent(Stage.ROLLING_BACK, 1, rollback_reason="AnalysisFailed")
    for stage in (Stage.SCALE_CANARY, Stage.BAKE, Stage.GATE):
        d = decide_child(at(child("cart"), stage, 0), parent)
        assert d.status.stage == Stage.ROLLING_BACK and d.status.rollback_reason == Reason.PARENT_ROLLED_BACK
        assert "GuardedRollout 'release', which this one is part of, rolls back (AnalysisFailed)" in \
            d.status.history[-1].message
    d = decide_child(at(child("cart"), Stage.PENDING), parent)   # one that never started ends so too
    assert d.status.stage == Stage.ROLLED_BACK and d.status.rollback_reason == Reason.PARENT_ROLLED_BACK
    assert d.status.completed_at == stamp(NOW)
    gone = LinkedRollout(name=NAME, uid=UID, spec=PARENT, status=at(PARENT, Stage.BAKE, 1), deleting=True)
    d = decide_child(at(child("cart"), Stage.BAKE, 0), gone)
    assert d.status.rollback_reason == Reason.PARENT_ROLLED_BACK


def test_a_consumers_rollout_that_ended_starts_again_when_its_parent_does():
    ended = at(child("cart"), Stage.ROLLED_BACK, 0, rollback_reason="ParentRolledBack",
               completed_at=stamp(NOW - timedelta(minutes=1)))
    again = stamp(NOW - timedelta(seconds=30))
    d = decide_child(ended, linked_parent(Stage.BAKE, 0, started_at=again))
    assert d.status.stage == Stage.PENDING and d.status.completed_at is None
    assert Reason.NEW_REVISION in reasons(d)
    for parent in (linked_parent(Stage.BAKE, 0, started_at=stamp(NOW - timedelta(minutes=2))),   # the same attempt
                   linked_parent(Stage.ROLLING_BACK, 0, started_at=again),
                   linked_parent(Stage.ROLLED_BACK, 0, started_at=again),
                   linked_parent(Stage.PENDING)):
        d = decide_child(ended, parent)
        assert d.status.stage == Stage.ROLLED_BACK, parent.status.stage


# -- status.consumers ------------------------------------------------------------------------------

def test_the_parents_status_lists_its_target_first_then_each_consumer_from_its_rollout():
    cart = linked_child("cart", Stage.GATE, 0, phase="Progressing", wave_progress="1/2", canary_replicas=2,
                        message="x" * 400)
    d = decide_parent(at(PARENT, Stage.BAKE, 1), cart)
    s = d.status
    assert s.consumers == [
        ConsumerStatus(name="shop", rollout=NAME, phase=str(s.phase), stage="Bake", wave_progress="2/3",
                       canary_replicas=2, stable_replicas=REPLICAS),
        ConsumerStatus(name="cart", rollout="release-cart", phase="Progressing", stage="Gate", wave_progress="1/2",
                       canary_replicas=2, stable_replicas=REPLICAS, message="x" * 300),
        ConsumerStatus(name="web", rollout="release-web"),
    ]
    d = decide_parent(at(PARENT, Stage.ROLLING_BACK, 1, rollback_reason="AnalysisFailed"),
                      linked_child("cart", Stage.ROLLED_BACK, 0, phase="RolledBack"))
    assert d.status.phase == "RolledBack"
    assert [(c.name, c.phase, c.stage) for c in d.status.consumers] == [
        ("shop", "RolledBack", "RolledBack"), ("cart", "RolledBack", "RolledBack"), ("web", None, None)]


def test_a_consumers_rollout_has_no_consumers_in_its_status():
    d = decide_child(at(child("cart"), Stage.BAKE, 0), linked_parent(Stage.BAKE, 1))
    assert d.status.consumers == []


# -- edits and ends the lockstep must survive ----------------------------------------------------------

def test_a_consumers_rollout_of_an_earlier_parent_spec_is_deleted_and_made_again():
    waiting = at(PARENT, Stage.BAKE, 0, bake_started_at=stamp(NOW))
    earlier = spec(waves=waves("1 pod", "50%", "100%", bake="9s"), change=CHANGE, consumers=[{"name": "cart"}])
    stale = linked_child("cart", Stage.GATE, 0, rollout=child_spec(earlier, list(earlier.waves), "cart"))
    d = decide_parent(waiting, stale, linked_child("web", Stage.PENDING))
    assert [a for a in d.actions if isinstance(a, DeleteRollout)] == [
        DeleteRollout(name="release-cart", uid="uid-cart-rollout")]
    assert created(d) == {}   # made again once the old one is gone (a rollout being deleted is not counted)


def test_a_consumer_that_rolls_back_after_the_parents_target_was_promoted_ends_the_change_failed_naming_it():
    promoting = at(PARENT, Stage.CLEANUP, 2)
    d = decide_parent(promoting, linked_child("cart", Stage.ROLLED_BACK, 1, rollback_reason="AnalysisFailed",
                                              completed_at=stamp(NOW)), linked_child("web", Stage.SUCCEEDED, 1))
    assert d.status.stage == Stage.FAILED and d.status.rollback_reason == str(Reason.CONSUMER_ROLLED_BACK)
    said = d.status.history[-1].message
    assert "'cart'" in said and "AnalysisFailed" in said and "some consumers only" in said
    assert not any(isinstance(a, MirrorConfig) for a in d.actions)


def test_a_long_parent_name_gives_a_part_of_label_within_63_characters():
    long = "r" * 100
    assert len(part_of_value(long)) <= 63 and part_of_value(long) != part_of_value("r" * 99)
    assert part_of_value("release") == "release"


# -- what the review found: forgeries, requests, a consumer that never comes ---------------------------

def test_a_rollout_for_a_deployment_the_parent_does_not_list_never_starts_even_with_the_derived_spec():
    payments = child_spec(PARENT, list(PARENT.waves), "payments")   # what a forger would compute
    status = at(payments, Stage.PENDING)
    d = decide(payments, status, observe(payments, status, name=child_name(NAME, "payments"), uid="uid-forged",
                                         guard=GUARD, owner_uid=UID, parent=linked_parent(Stage.BAKE, 1)))
    assert d.status.stage == Stage.PENDING and gate(d, "PartOf")[1] == str(Reason.NOT_PART_OF)
    assert not any(isinstance(a, ClaimTarget | ApplyCanary) for a in d.actions)


def test_a_rollout_of_a_listed_consumer_under_another_name_never_starts():
    status = at(child("cart"), Stage.PENDING)
    d = decide(child("cart"), status, observe(child("cart"), status, name="my-own-name", uid="uid-forged",
                                              guard=GUARD, owner_uid=UID, parent=linked_parent(Stage.BAKE, 1)))
    assert d.status.stage == Stage.PENDING and gate(d, "PartOf")[1] == str(Reason.NOT_PART_OF)


@pytest.mark.parametrize("action", ["promote", "promote-full", "pause", "retry"])
def test_requests_that_would_break_the_lockstep_are_refused_on_a_consumers_rollout(action: str):
    status = at(child("cart"), Stage.GATE, 0)
    rollout = child("cart")
    obs = observe(rollout, status, name=child_name(NAME, "cart"), uid="uid-cart-rollout", guard=GUARD,
                  owner_uid=UID, parent=linked_parent(Stage.BAKE, 1))
    d = decide(rollout, status, replace(obs, request=Request(id="r1", action=action)))
    assert d.status.last_request is not None and d.status.last_request.result == "Rejected"
    assert f"kubectl guarded {action} {NAME}" in d.status.last_request.message
    assert d.status.stage == Stage.GATE and d.status.wave == 0


def test_a_parent_whose_consumers_never_bake_rolls_back_after_the_progress_deadline():
    late = at(PARENT, Stage.BAKE, 1, bake_started_at=stamp(NOW - timedelta(minutes=15)))
    d = decide_parent(late, linked_child("cart", Stage.SCALE_CANARY, 0), linked_child("web", Stage.GATE, 0))
    assert d.status.stage == Stage.ROLLING_BACK
    assert d.status.rollback_reason == str(Reason.CONSUMERS_NOT_PROGRESSING)
    soon = at(PARENT, Stage.BAKE, 1, bake_started_at=stamp(NOW - timedelta(minutes=1)))
    assert decide_parent(soon, linked_child("cart", Stage.SCALE_CANARY, 0),
                         linked_child("web", Stage.GATE, 0)).status.stage == Stage.BAKE


def test_a_parent_stops_waiting_for_a_consumers_rollback_after_the_progress_deadline():
    began = NOW - timedelta(minutes=11)
    rolling = at(PARENT, Stage.ROLLING_BACK, 1, rollback_reason="AnalysisFailed", stable_replicas=REPLICAS,
                 history=[HistoryEntry(time=stamp(began), reason="RollingBack", message="x")])
    stuck = linked_child("cart", Stage.ROLLING_BACK, 0)
    status = rolling
    obs = replace(observe(PARENT, status, children=(stuck, linked_child("web", Stage.ROLLED_BACK, 0))), canary=None)
    assert decide(PARENT, status, obs).status.stage == Stage.ROLLED_BACK


def test_a_consumers_rollout_whose_deployment_is_gone_still_rolls_back_with_its_parent():
    status = at(child("cart"), Stage.BAKE, 0)
    obs = observe(child("cart"), status, name=child_name(NAME, "cart"), uid="uid-cart-rollout", guard=GUARD,
                  owner_uid=UID, parent=linked_parent(Stage.ROLLING_BACK, 1, rollback_reason="AnalysisFailed"))
    d = decide(child("cart"), status, replace(obs, target=None))
    assert d.status.stage == Stage.ROLLING_BACK
    assert any(isinstance(a, DeleteDeployment) for a in d.actions)   # its canary goes
