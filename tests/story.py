"""The integration tests as a story: given / when / then (after Argo Rollouts' test/fixtures).

    shop = given.a_shop(cluster, namespace, replicas=10)
    release = when.rollout_created(shop, "release", waves=[...])    # a GuardedRollout of the shop
    when.rollout_reaches(release, stage="Bake", wave=1)             # waits; names what for when it times out
    when.asked(release, "abort")                                    # as `kubectl guarded abort` does
    status = then.phase_is(release, "RolledBack", within=60)        # waits up to `within` s (0: as it is now)
    then.stage_is(release, "Gate")

`with when.watched(shop, "release") as watch:` samples, every 0.2 s, the Ready pods of the stable and
the canary, the canary object (uid, owner) and the rollout's stage, for checks over the whole run.
Waiting is always polling for observable state (waiting.eventually), never a fixed sleep.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

from operator_process import OperatorProcess
from rollouts import GROUP, PLURAL, VERSION, Shop, guarded_rollout
from testbed import Cluster
from waiting import eventually


@dataclass(frozen=True)
class Rollout:
    """One GuardedRollout in a shop's namespace."""

    shop: Shop
    name: str

    def status(self) -> dict:
        return self.shop.status(self.name)

    def exists(self) -> bool:
        return self.shop.rollout(self.name) is not None

    def condition(self, type_: str, status: dict | None = None) -> dict:
        """The condition of `type_` in `status` (default: the rollout's status now), or {}."""
        conditions = (status if status is not None else self.status()).get("conditions", [])
        return next((c for c in conditions if c["type"] == type_), {})

    def events(self) -> list[Any]:
        return self.shop.events(self.name)

    def at(self, *, stage: str | None = None, wave: int | None = None, phase: str | None = None) -> dict | None:
        """The status, if it is at `stage`, `wave` and `phase` (those given); else None."""
        status = self.status()
        wanted = {"stage": stage, "wave": wave, "phase": phase}
        ok = all(status.get(k) == v for k, v in wanted.items() if v is not None)
        return status if ok else None

    def where(self, status: dict | None = None) -> str:
        s = status if status is not None else self.status()
        return (f"{self.name} at stage {s.get('stage')}, wave {s.get('wave')}, phase {s.get('phase')}: "
                f"{s.get('message')!r}")


class Sample(NamedTuple):
    at: float                   # time.monotonic()
    canary: int                 # Ready pods of <shop>-canary
    stable: int                 # Ready pods of <shop>
    canary_uid: str | None      # which canary object (None: none)
    canary_owner: str | None    # the rollout named by its ownerReference
    stage: str | None           # the watched rollout's stage (None: no rollout watched, or no status yet)
    wave_progress: str | None


class Sampler:
    """Calls `sample()` every 0.2 s on a thread of its own, from the with-block's start to its end, and keeps
    what it returns in `samples` (for checks over a whole run, from the outside)."""

    def __init__(self) -> None:
        self.samples: list[Any] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> Any:
        raise NotImplementedError

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.sample())
            time.sleep(0.2)

    def __enter__(self) -> Any:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class Watch(Sampler):
    """Samples a shop (and one of its rollouts): Ready pods, the canary object, the stage."""

    def __init__(self, shop: Shop, rollout: str | None = None) -> None:
        super().__init__()
        self.shop, self.rollout = shop, rollout

    def sample(self) -> Sample:
        canary = self.shop.deployment(f"{self.shop.name}-canary")
        stable = self.shop.deployment(self.shop.name)
        status = self.shop.status(self.rollout) if self.rollout else {}
        owners = (canary.metadata.owner_references or []) if canary is not None else []
        return Sample(
            at=time.monotonic(),
            canary=(canary.status.ready_replicas or 0) if canary is not None else 0,
            stable=(stable.status.ready_replicas or 0) if stable is not None else 0,
            canary_uid=canary.metadata.uid if canary is not None else None,
            canary_owner=owners[0].name if owners else None,
            stage=status.get("stage"), wave_progress=status.get("waveProgress"))

    def below(self, replicas: int) -> list[Sample]:
        """The samples with fewer than `replicas` Ready pods of stable and canary together."""
        return [s for s in self.samples if s.canary + s.stable < replicas]


def _wait_for(rollout: Rollout, what: str, within: float, probe: Any) -> dict:
    """`probe()` (a status or None) now, or polled for up to `within` s; fails with the status and the cluster."""
    if within <= 0:
        found = probe()
        assert found is not None, f"expected {what}; {rollout.where()}"
        return found
    try:
        return eventually(probe, timeout=within, interval=0.3, what=what)
    except AssertionError as exc:
        status = rollout.status()
        raise AssertionError(f"{exc}\n{rollout.where(status)}\nstatus: {json.dumps(status, indent=1)[:3000]}\n"
                             f"{rollout.shop.describe()}") from None


# given, when and then are lower case: they read as words of the story (given.a_shop(...)).

class given:
    """What there is before the story starts."""

    @staticmethod
    def a_shop(cluster: Cluster, namespace: str, *, replicas: int = 10, name: str = "shop") -> Shop:
        """A Deployment `name` of `replicas` Ready pods (image registry.example/shop:1.0.0)."""
        shop = Shop(cluster, namespace, name)
        shop.deploy(replicas)
        return shop

    @staticmethod
    def no_shop(cluster: Cluster, namespace: str, *, name: str = "shop") -> Shop:
        """A namespace without the Deployment (rollouts created here name a target that does not exist)."""
        return Shop(cluster, namespace, name)


class when:
    """What happens: a user creates, asks, deletes; the operator dies; time passes until a state is reached."""

    @staticmethod
    def rollout_created(shop: Shop, name: str, *, body: dict | None = None, **spec: Any) -> Rollout:
        """A GuardedRollout `name` of the shop: `body` as given, or guarded_rollout(name, target=shop, **spec)."""
        if body is None:
            body = guarded_rollout(name, target=spec.pop("target", shop.name), **spec)
        assert body["metadata"]["name"] == name, body["metadata"]
        shop.create_rollout(body)
        return Rollout(shop, name)

    @staticmethod
    def rollout_reaches(rollout: Rollout, *, stage: str | None = None, wave: int | None = None,
                        phase: str | None = None, within: float = 90, what: str | None = None) -> dict:
        """Wait until the rollout's status is at `stage`, `wave` and `phase` (those given); its status then."""
        wanted = ", ".join(f"{k} {v}" for k, v in (("stage", stage), ("wave", wave), ("phase", phase)) if v is not None)
        label = f"{rollout.name} at {wanted}" + (f" ({what})" if what else "")
        return _wait_for(rollout, label, within, lambda: rollout.at(stage=stage, wave=wave, phase=phase))

    @staticmethod
    def asked(rollout: Rollout, action: str) -> str:
        """The request annotation set as the plugin sets it (a fresh id); returns the id."""
        return rollout.shop.request(rollout.name, action)

    @staticmethod
    def spec_patched(rollout: Rollout, spec: dict) -> None:
        rollout.shop.custom.patch_namespaced_custom_object(GROUP, VERSION, rollout.shop.namespace, PLURAL,
                                                           rollout.name, {"spec": spec})

    @staticmethod
    def rollout_deleted(rollout: Rollout) -> None:
        rollout.shop.custom.delete_namespaced_custom_object(GROUP, VERSION, rollout.shop.namespace, PLURAL,
                                                            rollout.name)

    @staticmethod
    def operator_killed(operator: OperatorProcess) -> None:
        """SIGKILL: no goodbye, no status written on the way out."""
        operator.kill()

    @staticmethod
    def operator_started(operator: OperatorProcess) -> None:
        operator.start()

    @staticmethod
    def watched(shop: Shop, rollout: str | None = None) -> Watch:
        return Watch(shop, rollout)


class then:
    """What must hold: now (within=0), or within so many seconds."""

    @staticmethod
    def at(rollout: Rollout, *, stage: str | None = None, wave: int | None = None, phase: str | None = None,
           within: float = 0) -> dict:
        wanted = ", ".join(f"{k} {v}" for k, v in (("stage", stage), ("wave", wave), ("phase", phase)) if v is not None)
        return _wait_for(rollout, f"{rollout.name} at {wanted}", within,
                         lambda: rollout.at(stage=stage, wave=wave, phase=phase))

    @staticmethod
    def phase_is(rollout: Rollout, phase: str, *, within: float = 0) -> dict:
        return then.at(rollout, phase=phase, within=within)

    @staticmethod
    def stage_is(rollout: Rollout, stage: str, *, within: float = 0) -> dict:
        return then.at(rollout, stage=stage, within=within)

    @staticmethod
    def rollout_gone(rollout: Rollout, *, within: float = 60) -> None:
        eventually(lambda: not rollout.exists(), timeout=within, what=f"{rollout.name} to be gone")

    @staticmethod
    def canary_gone(shop: Shop, *, within: float = 0) -> None:
        name = f"{shop.name}-canary"
        if within <= 0:
            assert shop.deployment(name) is None, f"{name} still exists"
        else:
            eventually(lambda: shop.deployment(name) is None, timeout=within, what=f"{name} to be gone")

    @staticmethod
    def stable_ready(shop: Shop, replicas: int, *, within: float = 0) -> None:
        if within <= 0:
            assert shop.ready(shop.name) == replicas, f"{shop.ready(shop.name)} Ready pods of {shop.name}"
        else:
            eventually(lambda: shop.ready(shop.name) == replicas, timeout=within,
                       what=f"{replicas} Ready pods of {shop.name}")

    @staticmethod
    def capacity_kept(watch: Watch, replicas: int) -> None:
        """Every sample had at least `replicas` Ready pods of stable and canary together."""
        assert watch.samples, "the watch took no sample"
        lows = watch.below(replicas)
        assert not lows, (f"Ready pods fell below {replicas} in {len(lows)} of {len(watch.samples)} samples: "
                          f"{[(s.canary, s.stable) for s in lows[:10]]}")
