"""The wave engine as a user sees it: waves, bakes, gates, promotion, rollback, requests."""

from __future__ import annotations

from specs import QUICK, spec, wave, waves
from world import World

from guarded.api.stages import Phase, Stage
from guarded.core.actions import ClaimTarget
from guarded.core.templates import REVISION_ANNOTATION


def wave_starts(world: World) -> list[int]:
    return [h.wave for h in world.status.history if h.reason == "WaveStarted"]  # type: ignore[misc]


def test_a_healthy_change_goes_through_every_wave_and_is_promoted() -> None:
    world = World(spec(waves=QUICK))
    world.run_until_done()
    assert world.status.phase == Phase.SUCCEEDED
    assert wave_starts(world) == [0, 1, 2, 3]
    target = world.deployments["shop"]
    assert target.template["spec"]["containers"][0]["image"] == "shop:2.0.0"
    assert target.replicas == 10
    assert "shop-canary" not in world.deployments
    completed = next(c for c in world.status.conditions if c.type == "Completed")
    assert completed.status == "True" and completed.reason == "Promoted"


def test_the_first_decision_claims_the_target_creates_a_one_pod_canary_and_leaves_the_stable_alone() -> None:
    world = World(spec(waves=QUICK))
    decision = world.step()
    assert [type(a).__name__ for a in decision.actions] == ["ClaimTarget", "ApplyCanary"]
    claim = decision.actions[0]
    assert claim == ClaimTarget(name="shop", value="release/uid-1", expected=None)
    manifest = decision.actions[1].manifest  # type: ignore[union-attr]
    assert manifest["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert manifest["metadata"]["name"] == "shop-canary"
    assert manifest["spec"]["replicas"] == 1
    assert manifest["spec"]["template"]["metadata"]["labels"]["app"] == "shop"
    assert manifest["spec"]["selector"]["matchLabels"] == {"app": "shop", "rollouts.guarded.dev/role": "canary"}
    assert decision.status.phase == Phase.PROGRESSING
    assert decision.status.wave_progress == "1/4"


def test_bake_holds_the_wave_until_its_time_has_passed() -> None:
    world = World(spec(waves=[wave("1 pod", bake="30s"), wave("100%", bake="1s")]))
    world.run_until(stage=Stage.BAKE)
    started = world.tick
    world.run_until(predicate=lambda w: w.status.stage != Stage.BAKE)
    assert world.tick - started >= 30
    assert world.status.wave == 1


def test_a_manual_gate_waits_for_a_promote_request() -> None:
    world = World(spec(waves=[wave("1 pod", bake="2s", gate=True), wave("100%", bake="1s")]))
    world.run_for(40)
    assert world.status.stage == Stage.GATE
    assert world.status.phase == Phase.PAUSED
    world.ask("promote")
    world.run_until_done()
    assert world.status.phase == Phase.SUCCEEDED
    assert world.status.last_request is not None and world.status.last_request.result == "Accepted"


def test_abort_mid_wave_removes_the_canary_and_restores_the_stable() -> None:
    world = World(spec(waves=QUICK))
    world.run_until(stage=Stage.BAKE, wave=2)
    assert world.deployments["shop"].replicas == 5
    world.ask("abort")
    decision = world.step()
    names = {type(a).__name__ for a in decision.actions}
    assert names == {"DeleteDeployment", "ScaleDeployment"}, "the canary goes and the stable comes back at once"
    world.run_until_done()
    assert world.status.phase == Phase.ROLLED_BACK
    assert world.status.rollback_reason == "Aborted"
    assert "shop-canary" not in world.deployments
    assert world.deployments["shop"].replicas == 10
    assert world.deployments["shop"].template["spec"]["containers"][0]["image"] == "shop:1.0.0"


def test_a_rolled_back_rollout_can_be_retried() -> None:
    world = World(spec(waves=QUICK))
    world.step()
    world.ask("abort")
    world.run_until_done()
    world.ask("retry")
    world.run_until_done()
    assert world.status.phase == Phase.SUCCEEDED
    assert world.status.attempt == 2


def test_abort_during_promotion_is_refused_with_a_reason() -> None:
    world = World(spec(waves=waves("100%", bake="1s")))
    world.run_until(stage=Stage.PROMOTE)
    world.ask("abort")
    world.step()
    assert world.status.last_request is not None
    assert world.status.last_request.result == "Rejected"
    assert "promoted" in world.status.last_request.message
    world.run_until_done()
    assert world.status.phase == Phase.SUCCEEDED


def test_pause_stops_the_bake_clock_and_resume_continues() -> None:
    world = World(spec(waves=[wave("1 pod", bake="10s"), wave("100%", bake="1s")]))
    world.run_until(stage=Stage.BAKE)
    world.ask("pause")
    world.run_for(50)
    assert world.status.stage == Stage.BAKE and world.status.phase == Phase.PAUSED
    world.ask("resume")
    world.step()
    assert world.status.stage == Stage.BAKE, "the paused time does not count as bake time"
    world.run_until_done()
    assert world.status.phase == Phase.SUCCEEDED


def test_a_spec_change_mid_rollout_retires_the_canary_and_restarts_from_wave_one() -> None:
    world = World(spec(waves=QUICK))
    world.run_until(wave=2)
    old_revision = world.status.revision
    world.spec = spec(waves=QUICK, image="shop:2.0.1")
    world.generation = 2
    world.run_until_done()
    assert world.status.phase == Phase.SUCCEEDED
    assert world.status.revision != old_revision
    reasons = [h.reason for h in world.status.history]
    assert "SpecChanged" in reasons and "Retired" in reasons
    new_waves = [h.wave for h in world.status.history
                 if h.reason == "WaveStarted" and h.revision == world.status.revision]
    assert new_waves == [0, 1, 2, 3]
    assert world.deployments["shop"].template["spec"]["containers"][0]["image"] == "shop:2.0.1"


def test_a_missing_target_is_reported_by_name_and_nothing_is_done() -> None:
    world = World(spec(waves=QUICK, target="shop"))
    del world.deployments["shop"]
    decision = world.step()
    assert decision.actions == ()
    assert decision.status.phase == Phase.BLOCKED
    found = next(c for c in decision.status.conditions if c.type == "TargetFound")
    assert found.status == "False" and found.reason == "TargetNotFound"
    assert "spec.target.name" in found.message and "'shop'" in found.message


def test_a_template_changed_underneath_holds_with_a_clear_condition() -> None:
    world = World(spec(waves=QUICK))
    world.run_until(stage=Stage.BAKE)
    world.deployments["shop"].template["spec"]["containers"][0]["image"] = "shop:9.9.9"
    decision = world.step()
    assert decision.actions == ()
    assert decision.status.phase == Phase.BLOCKED
    assert any(c.reason == "TargetTemplateChanged" for c in decision.status.conditions)


def test_a_change_naming_an_unknown_container_fails_naming_the_field() -> None:
    world = World(spec(waves=QUICK, change={"containers": [{"name": "sidecar", "image": "x:1"}]}))
    decision = world.step()
    assert decision.actions == ()
    assert decision.status.phase == Phase.FAILED
    assert "spec.change.containers[0].name" in decision.status.message


def test_a_canary_that_never_becomes_ready_is_rolled_back_at_the_progress_deadline() -> None:
    world = World(spec(waves=QUICK, progressDeadline="20s"), ready_delay=10_000)
    world.run_until_done()
    assert world.status.phase == Phase.ROLLED_BACK
    assert world.status.rollback_reason == "ProgressDeadlineExceeded"
    assert world.deployments["shop"].replicas == 10


def test_promoted_template_carries_the_revision() -> None:
    world = World(spec(waves=QUICK))
    world.run_until_done()
    annotations = world.deployments["shop"].template["metadata"]["annotations"]
    assert annotations[REVISION_ANNOTATION] == world.status.revision


def test_unknown_and_malformed_requests_are_rejected_and_recorded() -> None:
    world = World(spec(waves=QUICK))
    world.ask("explode")
    world.step()
    assert world.status.last_request is not None and world.status.last_request.result == "Rejected"
    assert "unknown action" in world.status.last_request.message
    assert world.status.history[-1].reason == "RequestRejected" or any(
        h.reason == "RequestRejected" for h in world.status.history)


def test_mixed_waves_that_would_shrink_the_canary_are_refused_naming_the_field() -> None:
    world = World(spec(waves=waves("3 pods", "10%", "100%")))
    decision = world.step()
    assert decision.actions == ()
    assert decision.status.phase == Phase.FAILED
    assert "spec.waves" in decision.status.message and "[3, 1, 10]" in decision.status.message
