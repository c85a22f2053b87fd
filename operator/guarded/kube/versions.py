"""Every rollout's resourceVersion in the API server's own order: what lets the split-brain fence
(handlers/fence.py) pass without a GET of its own (issue 11: the fence's metadata GETs were nearly all the
operator's GETs in steady state, 52 per 5 s at N = 1,000).

One watch of every GuardedRollout's metadata (PartialObjectMetadata: neither spec nor status), read on a
thread of its own, in the order the API server sends it. A watch delivers a resource's changes in
resourceVersion order, so once it shows the version that a status write of ours produced, it has shown every
change to any rollout committed before that write was sent. Each such write is noted with the monotonic time
it was sent (`wrote`); the latest of those times the watch has passed is the *horizon*: every rollout's
version as of then is known here. `vouch(namespace, name, version)` answers the horizon when the watch shows
the rollout still at that version, else None.

The fence takes a horizon less than FENCE_SECONDS old as it takes a GET that answered that long ago (its rule
for a decision's next action). Nothing here is trusted beyond that:
* a process that was stopped (SIGSTOP, a long pause) stopped this thread too, and monotonic time ran on: its
  horizon is old, and the fence asks the API server;
* so it does while the watch is down, relisting, or behind (a busy API server: no write of ours seen lately),
  and for a rollout the watch has not shown at the version the decision read (a newer one, or ours not yet);
* kopf's pause for a peer does not touch this thread: a replica resumed from a pause whose own caches are
  old is refused by the version here, which is current.

Cluster-wide operators only (a namespaced one has no right to watch every namespace's rollouts): without it,
the fence asks the API server, as it always did."""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import orjson
import urllib3

from guarded.api.common import GROUP, VERSION
from guarded.api.rollout import PLURAL
from guarded.kube.rest import METADATA_LIST, METADATA_ONLY, Rest

log = logging.getLogger(__name__)

WATCH_SECONDS = 300     # the API server ends each watch after this; it is resumed from its last version
READ_SECONDS = 90       # a watch that sends nothing for this long (bookmarks come about every minute) is cut
PAGE = 500              # rollouts per page of the listing
KEEP_SENT = 60.0        # seconds a write of ours the watch has not shown is waited for (then forgotten)
BACKOFF = (0.5, 10.0)   # seconds before a failed watch or listing is tried again: first, most


class Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


def _rv(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class Versions:
    """The rollouts' versions as the watch last showed them, and the horizon (thread-safe)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic,
                 lag: Callable[[float], None] | None = None) -> None:
        """`lag(seconds)`: told, for each write of ours the watch shows, how long after its sending it did."""
        self.clock = clock
        self.lag = lag
        self._lock = threading.Lock()
        self._versions: dict[tuple[str, str], int] = {}
        self._sent: list[tuple[int, float]] = []   # a heap of (version, monotonic time sent): writes not yet shown
        self._seen = -1                             # the latest version the watch has shown (or listed at)
        self._horizon: float | None = None
        self._prune_at = 0.0
        self.synced = False

    def wrote(self, version: Any, sent_at: float, *, after: Any) -> None:
        """A write of ours, sent at `sent_at` (monotonic) on the condition that the rollout was at version
        `after`, produced this resourceVersion. Only a write that committed, a version above its condition,
        counts: one the API server found changed nothing answers the old version, which may be below changes
        the watch has not shown yet."""
        rv, before = _rv(version), _rv(after)
        if rv is None or before is None or rv <= before:
            return
        with self._lock:
            if self.synced and rv <= self._seen:
                self._pass(sent_at)
                return
            heapq.heappush(self._sent, (rv, sent_at))
            now = self.clock()
            if now >= self._prune_at:   # writes the watch never showed (it broke off meanwhile): forgotten
                self._sent = [(v, at) for v, at in self._sent if at >= now - KEEP_SENT]
                heapq.heapify(self._sent)
                self._prune_at = now + KEEP_SENT

    def _pass(self, sent_at: float) -> None:
        if self._horizon is None or sent_at > self._horizon:
            self._horizon = sent_at

    def _reach(self, rv: int) -> None:
        """The watch has shown every change up to `rv` (lock held)."""
        self._seen = max(self._seen, rv)
        while self._sent and self._sent[0][0] <= self._seen:
            sent_at = heapq.heappop(self._sent)[1]
            self._pass(sent_at)
            if self.lag is not None:
                self.lag(self.clock() - sent_at)

    def listed(self, items: list[tuple[str, str, Any]], version: Any) -> None:
        """A listing's rollouts (namespace, name, resourceVersion), as of its resourceVersion."""
        rv = _rv(version)
        with self._lock:
            self._versions = {(ns, name): v for ns, name, value in items if (v := _rv(value)) is not None}
            self._seen = -1
            if rv is not None:
                self._reach(rv)
            self.synced = rv is not None

    def saw(self, kind: str, namespace: str, name: str, version: Any) -> None:
        """One watch event: ADDED, MODIFIED, DELETED or BOOKMARK (no object of its own)."""
        rv = _rv(version)
        if rv is None:
            return
        with self._lock:
            if kind == "DELETED":
                self._versions.pop((namespace, name), None)
            elif kind in ("ADDED", "MODIFIED"):
                self._versions[(namespace, name)] = rv
            self._reach(rv)

    def lost(self) -> None:
        """The watch broke off: nothing is vouched for until it is listed afresh."""
        with self._lock:
            self.synced = False
            self._horizon = None

    def vouch(self, namespace: str, name: str, version: Any) -> float | None:
        """The horizon (monotonic) when the watch shows the rollout at `version`, else None."""
        rv = _rv(version)
        with self._lock:
            if not self.synced or rv is None or self._versions.get((namespace, name)) != rv:
                return None
            return self._horizon

    def moved_on(self, namespace: str, name: str, version: Any) -> str | None:
        """The version the watch shows when it is later than `version`: the rollout moved on since that read."""
        rv = _rv(version)
        with self._lock:
            seen = self._versions.get((namespace, name)) if self.synced else None
        return str(seen) if rv is not None and seen is not None and seen > rv else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._versions)


# -- the watch ---------------------------------------------------------------------------------------------------
Observer = Callable[[str, str], None]   # (verb, resource): the operator counts its requests


class Follower:
    """Keeps `versions` current from one metadata watch of every GuardedRollout, on a thread of its own."""

    def __init__(self, api_client: Any, versions: Versions, observer: Observer | None = None) -> None:
        self.api_client = api_client
        self.versions = versions
        self.observer = observer
        self.stop = threading.Event()
        self.version: str | None = None   # the last version the watch showed (None: list first)
        self.thread = threading.Thread(target=self.run, name="guarded-versions", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _headers(self, accept: str) -> dict[str, str]:
        return {**Rest(self.api_client).headers(), "Accept": accept}   # credentials taken afresh each time

    def _get(self, query: dict[str, Any], *, stream: bool) -> Any:
        url = (self.api_client.configuration.host.rstrip("/") + f"/apis/{GROUP}/{VERSION}/{PLURAL}?"
               + urlencode(query))
        if self.observer is not None:
            self.observer("watch" if query.get("watch") else "list", PLURAL)
        timeout = urllib3.Timeout(connect=5.0, read=READ_SECONDS if stream else 30.0)
        headers = self._headers(METADATA_ONLY if stream else METADATA_LIST)
        resp = self.api_client.rest_client.pool_manager.request(
            "GET", url, headers=headers, timeout=timeout, preload_content=not stream)
        if not 200 <= resp.status <= 299:
            data = resp.data if not stream else resp.read(1024)
            if stream:
                _discard(resp)
            if resp.status == 410:
                raise Expired()
            raise RuntimeError(f"{resp.status} {resp.reason}: {data[:200]!r}")
        return resp

    def list(self) -> str:
        items: list[tuple[str, str, Any]] = []
        cont, version = "", None
        while True:
            page = orjson.loads(self._get({"limit": PAGE, "continue": cont} if cont else {"limit": PAGE},
                                          stream=False).data)
            for item in page.get("items") or ():
                meta = item.get("metadata") or {}
                items.append((meta.get("namespace", ""), meta.get("name", ""), meta.get("resourceVersion")))
            meta = page.get("metadata") or {}
            version = version or meta.get("resourceVersion")   # a paged listing is the first page's snapshot
            cont = meta.get("continue") or ""
            if not cont:
                break
        self.versions.listed(items, version)
        return str(version)

    def watch(self) -> None:
        """Follow the watch from self.version until the API server ends it (self.version: the last shown)."""
        resp = self._get({"watch": "true", "resourceVersion": self.version, "allowWatchBookmarks": "true",
                          "timeoutSeconds": WATCH_SECONDS}, stream=True)
        try:
            for line in _lines(resp):
                event = orjson.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise Expired()
                    raise RuntimeError(f"watch error: {obj.get('message')}")
                meta = obj.get("metadata") or {}
                rv = meta.get("resourceVersion")
                self.versions.saw(str(kind), meta.get("namespace", ""), meta.get("name", ""), rv)
                self.version = rv or self.version
                if self.stop.is_set():
                    break
        finally:
            _discard(resp)

    def run(self) -> None:
        delay = BACKOFF[0]
        while not self.stop.is_set():
            began = time.monotonic()
            try:
                if self.version is None:
                    self.versions.lost()
                    self.version = self.list()
                self.watch()
            except Expired:   # too old to resume from: list again (after a pause, should it repeat at once)
                self.version = None
                log.info("the rollouts' version watch expired; listing them again")
            except Exception as exc:   # unreachable, refused, a dropped stream: resume from the last version
                log.warning("the rollouts' version watch failed (the fence asks the API server meanwhile): %s", exc)
            if time.monotonic() - began > 2 * BACKOFF[1]:
                delay = BACKOFF[0]   # it ran a while: the next failure starts the pauses afresh
            else:
                self.stop.wait(delay)
                delay = min(delay * 2, BACKOFF[1])


def _discard(resp: Any) -> None:
    """Close a streamed response before its connection goes back to the pool: a watch cut short would leave
    the API server writing on a socket that the next request of the operator's client would be given."""
    resp.close()
    resp.release_conn()


def _lines(resp: Any) -> Iterator[bytes]:
    """The newline-separated JSON documents of a watch's streamed body."""
    rest = b""
    for chunk in resp.stream(65536, decode_content=True):
        *whole, tail = chunk.split(b"\n")
        if whole:
            whole[0], rest = rest + whole[0], tail
            for line in whole:
                if line.strip():
                    yield line
        else:
            rest += tail
    if rest.strip():
        yield rest
