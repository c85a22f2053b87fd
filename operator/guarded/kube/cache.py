"""Objects as the operator's watches last saw them, read instead of a GET when they cannot mislead a decision.

kopf keeps one watch per kind; its indexes (handlers/operator.py) hold each object by (namespace, name) and
are what this cache serves. Two rules keep a read from the cache as good as a GET for a decision:

* Synced: kopf calls no handler, so starts no reconcile, before every index has had its first full listing.
  A kind that has no index served here is never read from the cache.
* Not older than our own last write: a reconcile that scaled the canary a moment ago must not decide from
  the canary as it was before, because the watch has not yet delivered the change. Every write the
  operator sends marks its object (kube.client does it for every named write, before sending), with the
  resourceVersion the write produced when that is known. Until the watch shows that version or a later one,
  a read of the object is answered by what the write returned (the object at that very version: newer than
  anything the watch has shown, and any write made from it is guarded by that version) for OWN_SECONDS,
  then by the API server (a miss); such a GET tells the cache when it has caught up (`settle`: the watch
  holds what the API server just said). At N = 335 reads after our own writes were most of the operator's
  GETs (issue 11).

Anything in doubt is a miss, never a guess: a miss costs one GET, a wrong hit could cost a wave. The cache
holds no state of its own worth keeping: a restarted operator lists everything afresh.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

Key = tuple[str, str, str]  # (resource, namespace, name)
CacheObserver = Callable[[str, bool], None]  # (resource, hit)

_UNKNOWN = ""  # written, the resourceVersion the write produced not (yet) known
# How long the object a write of ours returned answers reads while the watch has not shown it: a watch that
# lags longer (or relisted past that version) is not waited for, the API server is asked.
OWN_SECONDS = 5.0


def kept(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object as the cache keeps it: without metadata.managedFields (no decision reads it, and it is often
    the larger part of an object: memory grows with every object watched, issue 11)."""
    meta = obj.get("metadata") or {}
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def _version(obj: Mapping[str, Any] | None) -> str | None:
    return None if obj is None else (obj.get("metadata") or {}).get("resourceVersion")


def _past(obj: Mapping[str, Any] | None, awaited: str | None) -> bool:
    """Whether the watch's copy is a later version than the one our write produced. The watch delivers an
    object's versions in order, so it has then shown ours, and what came after it (kube-controller-manager's
    status updates, a user's edit) must be read, not our write's copy. resourceVersions are compared as
    the API server's etcd revisions, integers; anything else counts as not past (the API server is asked)."""
    seen = _version(obj)
    if not awaited or seen is None:
        return False
    try:
        return int(seen) > int(awaited)
    except ValueError:
        return False


class WatchCache:
    def __init__(self, observer: CacheObserver | None = None, kinds: Iterable[str] | None = None) -> None:
        """`kinds`: every resource this cache will ever serve (None: any). Writes of other kinds (Events,
        ConfigMaps) are not marked: none of them is read here, and marks that no read clears would pile up
        for the life of the process, with every list read scanning them."""
        self.kinds = None if kinds is None else frozenset(kinds)
        self._sources: dict[str, Mapping[Any, Iterable[Any]]] = {}
        self._lists: dict[str, Mapping[Any, Iterable[Any]]] = {}
        self._written: dict[Key, str | None] = {}  # our writes not yet seen: rv, _UNKNOWN, or None (deleted)
        # What those writes returned (as JSON: a read copies it anyway, and bytes are a fourth of the objects'
        # size; at N = 1,000 the copies held 5-9 MiB as objects), and until when.
        self._own: dict[Key, tuple[bytes, float]] = {}
        self._prune_at = 0.0
        self.observer = observer
        self.clock: Callable[[], float] = time.monotonic

    def _kind(self, resource: str) -> None:
        if self.kinds is not None and resource not in self.kinds:
            raise ValueError(f"{resource!r} is not among the kinds this cache was made for: its writes are not marked")

    def serve(self, resource: str, index: Mapping[Any, Iterable[Any]]) -> None:
        """Read `resource` (plural, e.g. "deployments") from a synced index of (namespace, name) -> objects."""
        self._kind(resource)
        self._sources[resource] = index

    def serve_lists(self, resource: str, index: Mapping[Any, Iterable[Any]]) -> None:
        """Read lists of `resource` from a synced index of namespace ("" for cluster-scoped kinds) -> objects."""
        self._kind(resource)
        self._lists[resource] = index

    def _marks(self, resource: str) -> bool:
        return self.kinds is None or resource in self.kinds

    def serves(self, resource: str) -> bool:
        return resource in self._sources

    # -- what the operator wrote --------------------------------------------------------------
    def touched(self, resource: str, namespace: str, name: str) -> None:
        """A write of this object is on its way (or failed, or conflicted): distrust the cache's copy."""
        if not self._marks(resource):
            return
        self._written[(resource, namespace, name)] = _UNKNOWN
        self._own.pop((resource, namespace, name), None)

    def wrote(self, resource: str, namespace: str, name: str, version: str | None,
              body: Mapping[str, Any] | None = None) -> None:
        """A write produced this resourceVersion (None: the object was deleted), and returned `body`: trust the
        watch's copy once it is that version, and `body` (the object at that version) meanwhile."""
        if not self._marks(resource):
            return
        key = (resource, namespace, name)
        self._written[key] = _UNKNOWN if version == "" else version
        self._own.pop(key, None)
        now = self.clock()
        # Copies of objects written and not read since go once stale, checked every OWN_SECONDS: each may be a
        # whole rollout, and a settled rollout is read only once a minute.
        if now >= self._prune_at:
            for stale in [k for k, (_, until) in self._own.items() if until <= now]:
                del self._own[stale]
            self._prune_at = now + OWN_SECONDS
        if version and body is not None and _version(body) == version:
            with contextlib.suppress(TypeError):  # not JSON: not kept (a read asks the API server, as on a miss)
                self._own[key] = (orjson.dumps(kept(body)), now + OWN_SECONDS)

    # -- reading --------------------------------------------------------------------------------
    def _cached(self, resource: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        found = self._sources[resource].get((namespace, name))  # type: ignore[attr-defined]
        return next(iter(found), None) if found is not None else None

    def peek(self, resource: str, namespace: str, name: str) -> Mapping[str, Any] | None:
        """The object as the watch last saw it, neither copied nor counted as a read: a hint (whom to serve
        first), never what a decision is made from."""
        return self._cached(resource, namespace, name) if resource in self._sources else None

    def read(self, resource: str, namespace: str, name: str) -> tuple[bool, dict[str, Any] | None]:
        """(trusted, the object as the watch saw it; None: absent). Not trusted: ask the API server."""
        if resource not in self._sources:
            return False, None
        obj = self._cached(resource, namespace, name)
        key = (resource, namespace, name)
        if key in self._written:
            awaited = self._written[key]
            if (awaited == _UNKNOWN or awaited != _version(obj)) and not _past(obj, awaited):
                own, until = self._own.get(key, (None, 0.0))
                if own is not None and self.clock() < until:
                    self._tell(resource, True)
                    return True, orjson.loads(own)
                self._tell(resource, False)
                return False, None
            self._written.pop(key, None)  # the watch has delivered our write (or a later version)
            self._own.pop(key, None)
        self._tell(resource, True)
        return True, None if obj is None else dict(obj)

    def read_list(self, resource: str, namespace: str = "") -> tuple[bool, list[dict[str, Any]]]:
        """(trusted, the namespace's objects of this kind as the watch saw them). Not trusted while a write of
        ours to any of them is not yet seen: ask the API server (and `settle_list` with its answer)."""
        if resource not in self._lists or any(k[0] == resource and k[1] == namespace for k in list(self._written)):
            if resource in self._lists:
                self._tell(resource, False)
            return False, []
        self._tell(resource, True)
        items = [dict(obj) for obj in self._lists[resource].get(namespace) or ()]  # type: ignore[attr-defined]
        # In the API server's order (by name), not the watch's: what a decision names first must not depend
        # on which object the watch happened to deliver first.
        return True, sorted(items, key=lambda obj: str((obj.get("metadata") or {}).get("name")))

    def settle_list(self, resource: str, namespace: str, fresh: Iterable[Mapping[str, Any]]) -> None:
        """After a LIST: the objects whose write we awaited are trusted again once the watch agrees with it."""
        if resource not in self._lists:
            return
        listed = {(obj.get("metadata") or {}).get("name"): _version(obj) for obj in fresh}
        cached = {(obj.get("metadata") or {}).get("name"): _version(obj)
                  for obj in self._lists[resource].get(namespace) or ()}  # type: ignore[attr-defined]
        for key in [k for k in list(self._written) if k[0] == resource and k[1] == namespace]:
            if listed.get(key[2]) == cached.get(key[2]):
                self._written.pop(key, None)
                self._own.pop(key, None)

    def settle(self, resource: str, namespace: str, name: str, fresh: Mapping[str, Any] | None) -> None:
        """After a GET: once the watch holds what the API server answered, the cache is trusted again."""
        key = (resource, namespace, name)
        if key not in self._written or resource not in self._sources:
            return
        if _version(self._cached(resource, namespace, name)) == _version(fresh):
            self._written.pop(key, None)
            self._own.pop(key, None)

    def objects(self, resource: str) -> list[Mapping[str, Any]]:
        """Every object of a kind the watch holds (none for a kind not served): for hints, never a decision."""
        index = self._sources.get(resource)
        if index is None:
            return []
        return [obj for found in list(index.values()) for obj in list(found)[:1]]  # type: ignore[attr-defined]

    def _tell(self, resource: str, hit: bool) -> None:
        if self.observer is not None:
            self.observer(resource, hit)
