"""Failpoints: injected exceptions at named steps of a reconcile, for tests of the fail-safe path.

Off unless GUARDED_FAILPOINTS is set (never in a real install). Its value is a comma-separated list
of `point[@Stage][#wave][/rollout]`, e.g. `decide@Bake#1` (raise in decide() for any rollout baking
wave 2), `act@ScaleStable#1/shop-2` (only for the rollout named shop-2) or `gather` (every analysis
query step). Points: observe, gather, decide, act, persist. The stage and wave are those of the status
read for observe, gather and decide, and those of the decision's new status for act and persist (so
`act@ScaleStable#1` is the acting on a decision that lowers the stable for wave 2). One more point,
`release/<deployment>`, stops the operator from creating the release of a guarded Deployment's recorded
desire (kube/workloads.release_desire). Like etcd's gofail, the point is in production code so that
the path a real bug would take is the one tested.

GUARDED_FREEZEPOINTS takes the same syntax but freezes instead of raising: the first time its point is
hit, the process stops itself (SIGSTOP) and goes on where it was when someone sends SIGCONT. That is a
replica paused at the worst moment (a decision made, not yet acted on) for as long as a test likes:
longer than its peering lease, so that another replica takes over, and then back with a stale decision.
"""

from __future__ import annotations

import os
import signal

_frozen: set[str] = set()  # freezepoints already taken: each freezes the process once


class InjectedFault(RuntimeError):
    """An exception raised on purpose by a failpoint."""


def _parse(text: str) -> list[tuple[str, str | None, int | None, str | None]]:
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        item, _, rollout = item.partition("/")
        point, _, wave = item.partition("#")
        point, _, stage = point.partition("@")
        out.append((point, stage or None, int(wave) if wave else None, rollout or None))
    return out


def _matching(variable: str, point: str, stage: str | None, wave: int | None, rollout: str | None) -> str | None:
    """The first item of the environment variable's list that matches this step, as written."""
    spec = os.environ.get(variable)
    if not spec:
        return None
    for item, (name, want_stage, want_wave, want_rollout) in zip(
            filter(None, (part.strip() for part in spec.split(","))), _parse(spec), strict=True):
        if name == point and want_stage in (None, stage) and want_wave in (None, wave) \
                and want_rollout in (None, rollout):
            return item
    return None


def hit(point: str, *, stage: str | None, wave: int | None, rollout: str | None = None) -> None:
    """Raise InjectedFault when a failpoint matches this step; stop the process at a freezepoint's first hit."""
    frozen = _matching("GUARDED_FREEZEPOINTS", point, stage, wave, rollout)
    if frozen is not None and frozen not in _frozen:
        _frozen.add(frozen)
        os.kill(os.getpid(), signal.SIGSTOP)
    if _matching("GUARDED_FAILPOINTS", point, stage, wave, rollout) is not None:
        raise InjectedFault(f"failpoint {point}@{stage}#{wave}")
