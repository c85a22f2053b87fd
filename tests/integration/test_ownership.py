"""One rollout acts on a target at a time, and no rollout touches a canary it does not own.

The reported outage: alice's rollout `release-latest` was Blocked (image tag `latest`); she created a
corrected `release-fixed` for the same Deployment without deleting the first. The blocked one deleted
every `<target>-canary` it saw, and the service fell to 0 of 4 Ready pods.
"""

from __future__ import annotations

import threading
import time

from operator_process import OperatorProcess
from rollouts import GROUP, PLURAL, VERSION, Shop, guarded_rollout
from testbed import Cluster
from waiting import eventually

REPLICAS = 4
CLAIM = f"{GROUP}/held-by"


class Watch:
    """Samples every 0.2 s: Ready pods of stable + canary, and the uid and owner of the canary object."""

    def __init__(self, shop: Shop) -> None:
        self.shop = shop
        self.samples: list[tuple[float, int, int, str | None, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            canary = self.shop.deployment("shop-canary")
            stable = self.shop.deployment("shop")
            c_ready = (canary.status.ready_replicas or 0) if canary is not None else 0
            s_ready = (stable.status.ready_replicas or 0) if stable is not None else 0
            uid = canary.metadata.uid if canary is not None else None
            owner = None
            if canary is not None and canary.metadata.owner_references:
                owner = canary.metadata.owner_references[0].name
            self.samples.append((time.monotonic(), c_ready, s_ready, uid, owner))
            time.sleep(0.2)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions", []) if c["type"] == type_), {})


def test_a_blocked_rollout_and_a_second_one_for_the_same_target_never_take_capacity_away(
        cluster: Cluster, namespace: str, operator: OperatorProcess) -> None:
    shop = Shop(cluster, namespace)
    shop.deploy(REPLICAS)
    waves = [{"replicas": 1, "bake": "3s"}, {"weight": 50, "bake": "3s", "manualGate": True},
             {"weight": 100, "bake": "3s"}]
    with Watch(shop) as watch:
        shop.create_rollout(guarded_rollout("release-latest", image="registry.example/shop:latest", waves=waves))
        shop.wait_phase("release-latest", "Blocked", timeout=60)
        shop.create_rollout(guarded_rollout("release-fixed", image="registry.example/shop:2.0.1", waves=waves))
        # release-fixed runs to its manual gate in wave 2: the stable is lowered, the canary serves half.
        eventually(lambda: shop.status("release-fixed").get("stage") == "Gate", timeout=120,
                   what="release-fixed waiting at its manual gate in wave 2")
        held = shop.deployment("shop").metadata.annotations.get(CLAIM, "")
        assert held.startswith("release-fixed/"), held

        # alice fixes the blocked one: its gates pass, but the target is held, so it waits and says by whom.
        shop.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, "release-latest",
            {"spec": {"change": {"containers": [{"name": "app", "image": "registry.example/shop:2.0.2"}]}}})

        def waits_for_the_holder() -> dict | None:
            st = shop.status("release-latest")
            held = condition(st, "TargetExclusive").get("reason") == "HeldByRollout"
            return st if held and condition(st, "Validated").get("status") == "True" else None
        waiting = eventually(waits_for_the_holder, timeout=60, what="release-latest waiting for the target")
        exclusive = condition(waiting, "TargetExclusive")
        assert exclusive["status"] == "False" and "release-fixed" in exclusive["message"]
        assert exclusive["message"].startswith("spec.target.name")
        assert waiting["phase"] == "Blocked" and waiting["stage"] == "Pending"
        assert condition(waiting, "Approved").get("status") == "True", "its own gates passed"
        time.sleep(3)  # it keeps waiting: nothing of release-fixed moves
        assert shop.status("release-fixed").get("stage") == "Gate"
        assert shop.status("release-latest").get("stage") == "Pending"

        shop.request("release-fixed", "promote")
        shop.wait_phase("release-fixed", "Succeeded", timeout=120)
        # The waiting one starts by itself once the holder has ended, and runs on the promoted version.
        eventually(lambda: shop.status("release-latest").get("stage") == "Gate", timeout=120,
                   what="release-latest at its own manual gate")
        shop.request("release-latest", "promote")
        final = shop.wait_phase("release-latest", "Succeeded", timeout=120)

    assert shop.image() == "registry.example/shop:2.0.2"
    assert CLAIM not in (shop.deployment("shop").metadata.annotations or {})
    fixed = shop.status("release-fixed")
    ended = next(h["time"] for h in fixed["history"] if h["reason"] == "Succeeded")
    started = [h["time"] for h in final["history"] if h["reason"] == "RolloutStarted"]
    assert started and min(started) >= ended, (started, ended)

    samples = watch.samples
    assert len(samples) > 100
    lows = [(c, s) for _, c, s, _, _ in samples if c + s < REPLICAS]
    assert not lows, f"Ready pods fell below {REPLICAS} in {len(lows)} of {len(samples)} samples: {lows[:10]}"
    # Each canary object lived once, owned by one rollout: none was deleted and re-created by another.
    owners: dict[str, set[str | None]] = {}
    for _, _, _, uid, owner in samples:
        if uid is not None:
            owners.setdefault(uid, set()).add(owner)
    assert len(owners) == 2, f"one canary per rollout, got {len(owners)}: {owners}"
    assert sorted(next(iter(o)) for o in owners.values()) == ["release-fixed", "release-latest"]
    deletions_by_latest = [e for e in shop.events("release-latest") if "canary" in (e.message or "")
                           and e.reason in ("RollingBack", "Retired")]
    assert not deletions_by_latest
