"""Identity at admission: who wrote a change, who approved it. Pure functions of the admission request.

The API server authenticates every request and hands the webhook its `userInfo`. These functions
turn that into fields the gates trust, and refuse requests that claim another identity:

- A GuardedRollout's authors (annotation rollouts.guarded.dev/authors, a JSON list) are its creator
  plus everyone who later changed its spec. Whatever a client puts in that annotation is replaced,
  so it can only ever say what the API server authenticated.
- Whoever sets a manual request (the request annotation) is stamped in rollouts.guarded.dev/request-by.
- A RolloutApproval's approver and groups come from userInfo. A different approver or group list is
  refused, and so is approving one's own change, a revision that is not the current one, or a
  rollout that does not exist. Approvals are immutable: to change one, delete it and approve again.

Each function returns either the fields to set or a message for the user (AdmissionRefused).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from guarded.api.common import GROUP
from guarded.api.rollout import AUTHORS_ANNOTATION, REQUEST_ANNOTATION, REQUESTER_ANNOTATION, authors_in


class AdmissionRefused(Exception):
    """The request is refused; the message is shown to the user by the API server."""


@dataclass(frozen=True, kw_only=True)
class User:
    username: str
    groups: tuple[str, ...] = ()

    @classmethod
    def from_userinfo(cls, userinfo: Mapping[str, Any] | None) -> User:
        info = userinfo or {}
        if not info.get("username"):
            raise AdmissionRefused("the API server sent no authenticated user; refusing (fail closed)")
        return cls(username=str(info["username"]), groups=tuple(str(g) for g in info.get("groups") or ()))


@dataclass(frozen=True, kw_only=True)
class Stamp:
    annotations: dict[str, str | None] = field(default_factory=dict)  # None: remove
    spec: dict[str, Any] = field(default_factory=dict)


ON_BEHALF_OF = f"{GROUP}/on-behalf-of"  # a release the operator made of someone's plain apply


def rollout_stamp(*, operation: str, user: User, new: Mapping[str, Any], old: Mapping[str, Any] | None,
                  operator: bool = False) -> Stamp:
    """Annotations to set on a GuardedRollout being created or updated.

    The operator itself creates releases of plain applies of guarded Deployments; their author is the
    requester the Deployment webhook stamped (`on-behalf-of`), and only the operator may say so."""
    new_ann = (new.get("metadata") or {}).get("annotations") or {}
    old_ann = ((old or {}).get("metadata") or {}).get("annotations") or {}
    out: dict[str, str | None] = {}
    delegate = new_ann.get(ON_BEHALF_OF)
    if delegate is not None and delegate != old_ann.get(ON_BEHALF_OF) and not operator:
        raise AdmissionRefused(f"metadata.annotations[{ON_BEHALF_OF}] is set by guarded-rollouts only (for releases "
                               "made of plain applies); you create rollouts as yourself")
    if operation == "CREATE" or old is None:
        authors: list[str] | None = [delegate if operator and delegate else user.username]
    else:
        authors = authors_in(old_ann)
        # Unknown authors (the object predates the webhook) stay unknown: adding the next editor would
        # leave out whoever wrote it, who could then approve their own change.
        if authors is not None and new.get("spec") != old.get("spec") and user.username not in authors:
            authors = [*authors, user.username]
    out[AUTHORS_ANNOTATION] = json.dumps(authors, ensure_ascii=False) if authors is not None else None

    request, old_request = new_ann.get(REQUEST_ANNOTATION), old_ann.get(REQUEST_ANNOTATION)
    if request and (operation == "CREATE" or request != old_request):
        out[REQUESTER_ANNOTATION] = user.username
    elif request:
        out[REQUESTER_ANNOTATION] = old_ann.get(REQUESTER_ANNOTATION)
    else:
        out[REQUESTER_ANNOTATION] = None
    return Stamp(annotations={k: v for k, v in out.items() if new_ann.get(k) != v})


_DNS_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def approved_rollout(spec: Mapping[str, Any]) -> str | None:
    """The name of the rollout an approval names, checked before it is looked up (mutating admission runs
    before the schema): a name no object can have is refused naming spec.rollout, rather than failing the
    lookup and this webhook with a message that names nothing (found by fuzzing)."""
    name = spec.get("rollout")
    if name is None or name == "":
        return None
    if not isinstance(name, str) or len(name) > 253 or not _DNS_NAME.match(name):
        raise AdmissionRefused(f"spec.rollout: must be the name of a GuardedRollout (lowercase letters, digits, "
                               f"'-' and '.'), not {name!r:.80}")
    return name


def approval_stamp(*, operation: str, user: User, spec: Mapping[str, Any], old_spec: Mapping[str, Any] | None,
                   rollout: Mapping[str, Any] | None) -> Stamp:
    """Fields to set on a RolloutApproval, or AdmissionRefused with the reason."""
    if operation == "UPDATE":
        if old_spec is not None and dict(spec) != dict(old_spec):
            raise AdmissionRefused("a RolloutApproval is immutable: delete it and approve again")
        return Stamp()
    name = spec.get("rollout")
    given = spec.get("approver")
    if given is not None and given != user.username:
        raise AdmissionRefused(
            f"spec.approver: you are authenticated as {user.username!r}, so you cannot approve as {given!r}; "
            "leave spec.approver out and the API server's identity is recorded")
    given_groups = spec.get("approverGroups")
    # Mutating admission runs before the schema is checked: a field of the wrong type is refused here, by
    # name, rather than failing this webhook with a message that names nothing (found by fuzzing).
    if given_groups is not None and not (isinstance(given_groups, list) and all(isinstance(g, str)
                                                                                 for g in given_groups)):
        raise AdmissionRefused(f"spec.approverGroups: must be a list of group names, not {given_groups!r:.80}")
    revision = spec.get("revision")
    if revision is not None and (not isinstance(revision, int) or isinstance(revision, bool)):
        raise AdmissionRefused(f"spec.revision: must be a whole number (a generation), not {revision!r:.80}")
    if given_groups is not None and sorted(given_groups) != sorted(user.groups):
        raise AdmissionRefused(
            f"spec.approverGroups: {sorted(given_groups)} are not your groups {sorted(user.groups)}; leave it out")
    if rollout is None:
        raise AdmissionRefused(f"spec.rollout: no GuardedRollout {name!r} in this namespace")
    uid = rollout["metadata"].get("uid")
    if spec.get("rolloutUid") is not None and spec.get("rolloutUid") != uid:
        raise AdmissionRefused(f"spec.rolloutUid: {spec.get('rolloutUid')!r} is not the uid of rollout {name!r}")
    generation = int(rollout["metadata"].get("generation", 1))
    if revision is not None and revision != generation:
        raise AdmissionRefused(
            f"spec.revision: rollout {name!r} is at revision {generation}, not {revision}; its spec changed "
            "since, so review the change again and approve revision " + str(generation))
    authors = authors_in((rollout["metadata"].get("annotations")) or {})
    if authors is not None and user.username in authors:
        raise AdmissionRefused(
            f"{user.username!r} is an author of rollout {name!r} (authors: {', '.join(authors)}); "
            "a change needs approval by someone who did not write it")
    return Stamp(spec={"approver": user.username, "approverGroups": list(user.groups), "rolloutUid": uid,
                       "revision": generation})


