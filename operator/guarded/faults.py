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
"""

from __future__ import annotations

import os


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


def hit(point: str, *, stage: str | None, wave: int | None, rollout: str | None = None) -> None:
    """Raise InjectedFault when a failpoint matches this step."""
    spec = os.environ.get("GUARDED_FAILPOINTS")
    if not spec:
        return
    for name, want_stage, want_wave, want_rollout in _parse(spec):
        if name == point and want_stage in (None, stage) and want_wave in (None, wave) \
                and want_rollout in (None, rollout):
            raise InjectedFault(f"failpoint {point}@{stage}#{wave}")
