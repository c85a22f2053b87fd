"""The moves a decision makes on workloads, each only on what the rollout owns.

The canary is this rollout's when its controller ownerReference carries the rollout's uid; the target
is this rollout's to scale or promote while its claim annotation names the rollout. Every function
here returns a new Draft with the action appended, or the Draft unchanged when there is nothing (or
nothing of ours) to do.
"""

from __future__ import annotations

from typing import Any

from guarded.core import config, routing
from guarded.core.actions import ApplyCanary, ClaimTarget, DeleteDeployment, ReleaseTarget, ScaleDeployment
from guarded.core.draft import POLL_SECONDS, Draft, Inputs
from guarded.core.observations import Claim, Observations
from guarded.core.templates import REVISION_ANNOTATION, canary_deployment, claim_value

# -- whose is what --------------------------------------------------------------------------------


def owns_canary(obs: Observations) -> bool:
    """The canary Deployment exists and its controller ownerReference is this rollout (by uid)."""
    c = obs.canary
    return c is not None and obs.uid is not None and c.owner_uid == obs.uid


def canary_ours(inp: Inputs) -> bool:
    return owns_canary(inp.obs)


def canary_foreign(inp: Inputs) -> bool:
    """A Deployment by the canary's name exists that this rollout does not own: never touch it."""
    return inp.obs.canary is not None and not canary_ours(inp)


def canary_current(inp: Inputs, d: Draft) -> bool:
    """Our canary, not going away, and of the revision being rolled out."""
    c = inp.obs.canary
    return (c is not None and not c.deleting and canary_ours(inp)
            and c.annotations.get(REVISION_ANNOTATION) == d.status.revision)


def claim_of(obs: Observations) -> str | None:
    """The claim annotation this rollout writes on its target."""
    return claim_value(obs.name, obs.uid) if obs.uid else None


def claims_target(obs: Observations) -> bool:
    """The target's claim names this rollout."""
    return obs.claim is not None and obs.claim.value == claim_of(obs)


def holds_target(inp: Inputs) -> bool:
    return claims_target(inp.obs)


def holder(inp: Inputs) -> Claim | None:
    """Another rollout that still exists and has not ended, when it holds the target."""
    claim = inp.obs.claim
    return claim if claim is not None and claim.alive and not holds_target(inp) else None


# -- the moves ------------------------------------------------------------------------------------

def claim_target(inp: Inputs, d: Draft) -> Draft:
    """Ask for the target's claim (compare-and-swap on the value seen); a stale claim is taken over."""
    t, mine = inp.obs.target, claim_of(inp.obs)
    if t is None or mine is None or holds_target(inp) or holder(inp) is not None:
        return d
    return d.act(ClaimTarget(name=t.name, value=mine, expected=inp.obs.claim.value if inp.obs.claim else None))


def release_target(inp: Inputs, d: Draft) -> Draft:
    """Give the target up; a claim asked for earlier in this same decision is simply not made."""
    d = d.drop(ClaimTarget)
    t, mine = inp.obs.target, claim_of(inp.obs)
    if t is not None and mine is not None and holds_target(inp):
        d = d.act(ReleaseTarget(name=t.name, value=mine))
    return d


def canary_manifest(inp: Inputs, d: Draft, replicas: int) -> dict[str, Any]:
    t = inp.obs.target
    assert t is not None
    revision = d.status.revision or inp.revision
    template = config.new_template(inp, d, t.template, revision)
    return canary_deployment(
        rollout_name=inp.obs.name, rollout_uid=inp.obs.uid, namespace=inp.obs.namespace,
        target_name=inp.spec.target.name, target_selector=t.selector, template=template,
        replicas=replicas, revision=revision,
    )


def ensure_canary(inp: Inputs, d: Draft, replicas: int) -> Draft:
    """The canary of this revision at `replicas` pods; an older canary still going away is waited for."""
    c = inp.obs.canary
    if c is not None and (c.deleting or not canary_ours(inp)):
        return d
    if canary_current(inp, d) and c is not None and c.replicas == replicas:
        return d
    d = config.ensure_versions(inp, d)  # the copies the canary's pods read exist before the canary does
    return d.act(ApplyCanary(manifest=canary_manifest(inp, d, replicas)))


def ensure_target_replicas(inp: Inputs, d: Draft, replicas: int) -> Draft:
    t = inp.obs.target
    if t is None or t.replicas == replicas:
        return d
    return d.act(ScaleDeployment(name=t.name, replicas=replicas, rollout_uid=inp.obs.uid))


def remove_canary(inp: Inputs, d: Draft) -> Draft:
    """Delete our canary; with routing by weight only once the route sends it nothing (weight 0 first)."""
    c = inp.obs.canary
    if c is None or c.deleting or not canary_ours(inp):
        return d
    d, withdrawn = routing.withdraw(inp, d)
    if not withdrawn:
        return d.wait(POLL_SECONDS)
    return d.act(DeleteDeployment(name=c.name, uid=c.uid))


def stable_restored(inp: Inputs, d: Draft) -> bool:
    """The target is back at its original count, settled and available (or the rollout never started)."""
    n, t = int(d.status.stable_replicas or 0), inp.obs.target
    return not n or (t is not None and t.replicas == n and t.settled and t.available >= n)
