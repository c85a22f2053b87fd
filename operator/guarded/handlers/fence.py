"""The split-brain fence: a decision's actions are carried out only while the rollout is still the object the
decision was made from (docs/faults.md)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from guarded import logs
from guarded.handlers import telemetry
from guarded.kube.client import Conflict, KubeClient

# How long a passed check stands for the next action of one decision: well under the seconds a standby
# replica needs to take over from an active one whose lease went stale.
FENCE_SECONDS = 1.0


def still_as_read(client: KubeClient, obj: dict[str, Any]) -> Callable[[], Awaitable[None]]:
    """A check, before each action, that the rollout is still the object this decision was made from.

    The status write after the actions is guarded by the read resourceVersion, but the actions come first:
    a replica frozen between deciding and acting (a stopped process, a long pause) while another one took
    over would otherwise, on waking, set the workloads back to what it decided before (a canary lowered
    under a later wave's stable, a canary made again after a rollback). Any write to the rollout since the
    read (another replica's status, a user's request) voids the decision: Conflict, and the daemon decides
    again on fresh data.

    A check that passed less than FENCE_SECONDS ago (monotonic: a stopped process's clock runs on) stands
    for the next action of the same decision: another replica takes over only after the active one's
    peering lease has gone stale, seconds, so no other replica can have acted in between (issue 11: one GET
    per action was a third of the operator's GETs).

    Nor is the API server asked when the version watch (kube/versions) vouches for the rollout: it shows the
    rollout at the version read, and it has shown a status write of ours sent less than FENCE_SECONDS ago,
    so every change committed before that write was sent; as good as a GET that answered then. A stopped
    process's watch is as old as its stop, and it vouches for nothing then."""
    meta = obj["metadata"]
    passed_at: list[float] = []

    async def check() -> None:
        asked = time.monotonic()
        versions = client.versions
        if versions is not None:   # the watch already shows a later version: refused without asking anyone
            later = versions.moved_on(meta["namespace"], meta["name"], meta.get("resourceVersion"))
            if later is not None:
                stale(later)
        if passed_at and asked - passed_at[-1] < FENCE_SECONDS:
            return
        if versions is not None:
            horizon = versions.vouch(meta["namespace"], meta["name"], meta.get("resourceVersion"))
            if horizon is not None and asked - horizon < FENCE_SECONDS:
                telemetry.fence_check("watch")
                passed_at.append(horizon)  # as of the horizon: the watch's answer is that old
                return
        telemetry.fence_check("server")
        # Always the API server, never the watch cache: a replica that was frozen holds a watch as old as
        # itself, whose copy would pass this check for the very decision it exists to void.
        # Its metadata only: the resourceVersion is all the check needs, and status is most of a rollout.
        seen = await client.rollout_version(meta["namespace"], meta["name"])
        if seen != meta.get("resourceVersion"):
            stale(seen)
        passed_at.append(asked)  # as of when it was asked: the answer may be that old

    def stale(seen: str | None) -> None:
        logs.logger(rollout=meta["name"], namespace=meta["namespace"], wave=None).warning(
            "stale decision: the rollout moved on since it was read; deciding again", read=meta.get(
                "resourceVersion"), now=seen)
        raise Conflict(f"rollout {meta['name']} moved on (resourceVersion {meta.get('resourceVersion')} -> "
                       f"{seen}) since this decision's read: not acting on it")

    return check
