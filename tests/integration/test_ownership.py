"""One rollout acts on a target at a time, and no rollout touches a canary it does not own.

The reported outage: alice's rollout `release-latest` was Blocked (image tag `latest`); she created a
corrected `release-fixed` for the same Deployment without deleting the first. The blocked one deleted
every `<target>-canary` it saw, and the service fell to 0 of 4 Ready pods.
"""

from __future__ import annotations

import time

from operator_process import OperatorProcess
from rollouts import GROUP
from story import given, then, when
from testbed import Cluster
from waiting import eventually

REPLICAS = 4
CLAIM = f"{GROUP}/held-by"


def test_a_blocked_rollout_and_a_second_one_for_the_same_target_never_take_capacity_away(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    shop = given.a_shop(cluster, namespace, replicas=REPLICAS)
    waves = [{"replicas": 1, "bake": "3s"}, {"weight": 50, "bake": "3s", "manualGate": True},
             {"weight": 100, "bake": "3s"}]
    with when.watched(shop) as watch:
        latest = when.rollout_created(shop, "release-latest", image="registry.example/shop:latest", waves=waves)
        then.phase_is(latest, "Blocked", within=60)
        fixed = when.rollout_created(shop, "release-fixed", image="registry.example/shop:2.0.1", waves=waves)
        # release-fixed runs to its manual gate in wave 2: the stable is lowered, the canary serves half.
        when.rollout_reaches(fixed, stage="Gate", within=120, what="waiting at its manual gate in wave 2")
        held = shop.deployment("shop").metadata.annotations.get(CLAIM, "")
        assert held.startswith("release-fixed/"), held

        # alice fixes the blocked one: its gates pass, but the target is held, so it waits and says by whom.
        when.spec_patched(latest, {"change": {"containers": [{"name": "app", "image": "registry.example/shop:2.0.2"}]}})

        def waits_for_the_holder() -> dict | None:
            st = latest.status()
            held = latest.condition("TargetExclusive", st).get("reason") == "HeldByRollout"
            return st if held and latest.condition("Validated", st).get("status") == "True" else None
        waiting = eventually(waits_for_the_holder, timeout=60, what="release-latest waiting for the target")
        exclusive = latest.condition("TargetExclusive", waiting)
        assert exclusive["status"] == "False" and "release-fixed" in exclusive["message"]
        assert exclusive["message"].startswith("spec.target.name")
        assert waiting["phase"] == "Blocked" and waiting["stage"] == "Pending"
        assert latest.condition("Approved", waiting).get("status") == "True", "its own gates passed"
        time.sleep(3)  # it keeps waiting: nothing of release-fixed moves (no state to wait for, only time)
        then.stage_is(fixed, "Gate")
        then.stage_is(latest, "Pending")

        when.asked(fixed, "promote")
        then.phase_is(fixed, "Succeeded", within=120)
        # The waiting one starts by itself once the holder has ended, and runs on the promoted version.
        when.rollout_reaches(latest, stage="Gate", within=120, what="at its own manual gate")
        when.asked(latest, "promote")
        final = then.phase_is(latest, "Succeeded", within=120)

    assert shop.image() == "registry.example/shop:2.0.2"
    assert CLAIM not in (shop.deployment("shop").metadata.annotations or {})
    ended = next(h["time"] for h in fixed.status()["history"] if h["reason"] == "Succeeded")
    started = [h["time"] for h in final["history"] if h["reason"] == "RolloutStarted"]
    assert started and min(started) >= ended, (started, ended)

    samples = watch.samples
    assert len(samples) > 100
    then.capacity_kept(watch, REPLICAS)
    # Each canary object lived once, owned by one rollout: none was deleted and re-created by another.
    owners: dict[str, set[str | None]] = {}
    for sample in samples:
        if sample.canary_uid is not None:
            owners.setdefault(sample.canary_uid, set()).add(sample.canary_owner)
    assert len(owners) == 2, f"one canary per rollout, got {len(owners)}: {owners}"
    assert sorted(next(iter(o)) for o in owners.values()) == ["release-fixed", "release-latest"]
    deletions_by_latest = [e for e in latest.events() if "canary" in (e.message or "")
                           and e.reason in ("RollingBack", "Retired")]
    assert not deletions_by_latest
