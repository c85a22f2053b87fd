"""The operator's entry point: `guarded-operator` (registrations live in guarded.handlers.operator)."""

from __future__ import annotations

import argparse
import collections
import functools
import os
import random
import sys
import time
import types
from typing import Any

import orjson

PEERING_NAME = "guarded-rollouts"  # the ClusterKopfPeering object in manifests/install


def peering_priority(now: float, rng: random.Random) -> int:
    """Older replicas outrank newer ones, so leadership stays put while a replica restarts.

    kopf's peering is not leader election: operators of the *same* priority all pause. So every
    replica takes its own, from its start time in milliseconds (earlier: higher) with a random
    tie-break below it. Negative, so that a developer's operator at kopf's default priority 0
    outranks the deployed ones, as kopf intends."""
    return -(int(now * 1000) * 1000 + rng.randrange(1000))


M_ARENA_MAX = -8  # glibc's mallopt parameter


@functools.cache
def _glibc() -> Any:
    """glibc, to tune and trim its malloc; None where there is none (musl, macOS). Loaded once: the trim
    thread asks for it every MALLOC_TRIM_SECONDS."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def few_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas (by default 8 per core, one taken per thread that allocates): with kopf's
    event loop, the I/O threads and the webhook server each in an arena of its own, the operator's memory
    grew by some 100 MiB of half-empty arenas at N = 1,000 rollouts (issue 11). Before any thread starts;
    GUARDED_MALLOC_ARENAS=0 leaves glibc's default. False where there is no glibc."""
    libc = _glibc()
    return arenas > 0 and libc is not None and bool(libc.mallopt(M_ARENA_MAX, arenas))


TLS_READ_BUFFER = 16 * 1024  # one TLS record at most: what a read can return at once anyway


def small_tls_buffers(size: int = TLS_READ_BUFFER) -> bool:
    """Give each TLS connection of the event loop a read buffer of `size` instead of asyncio's 256 KiB.

    asyncio allocates that buffer per connection, for its whole life: kopf's client connections to the API
    server and the API server's connections to our admission webhooks, some 220 of them at N = 150, held
    55 MiB of the operator's memory, most of its growth with N (tracemalloc, issue 11). A read returns at
    most one TLS record (16 KiB), so a larger buffer buys nothing. False where asyncio has no such buffer."""
    import asyncio.sslproto
    if not isinstance(getattr(asyncio.sslproto.SSLProtocol, "max_size", None), int):
        return False
    asyncio.sslproto.SSLProtocol.max_size = size
    return True


def watch_event(line: bytes | str) -> Any:
    """A watch stream's line as kopf reads it, decoded by orjson, without its object's metadata.managedFields.

    kopf keeps the last body of every object with a daemon (each rollout) for the daemon's next call, and no
    handler, index or decision reads managedFields (the watch cache drops them too, kube/cache.kept). A
    rollout's are about as large as the rest of its metadata and spec together, since every field of its
    status is listed under the operator's manager; deployments' and pods' are often half of their JSON.
    Dropped at the decoding, they are never built into Python objects either."""
    event = orjson.loads(line)
    obj = event.get("object") if isinstance(event, dict) else None
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return event


def fast_watch_decoding() -> bool:
    """Decode the watch streams kopf reads with orjson instead of the standard library's json: at N = 335,
    decoding watch events was 8% of the operator's busy time (py-spy, issue 11); and without the objects'
    managedFields (watch_event). kopf decodes each line with its api module's `json.loads`; that name alone
    is replaced. False (and nothing changed) where a kopf release reads its streams otherwise."""
    import json

    from kopf._cogs.clients import api
    if getattr(api, "json", None) is not json:
        return False
    # The json module's other names stay: a later kopf that also encodes there keeps working.
    names = {name: getattr(json, name) for name in json.__all__}
    api.json = types.SimpleNamespace(**{**names, "loads": watch_event})  # type: ignore[assignment]
    return True


def collect_garbage_report(limit: int = 12) -> str:
    """Collect the garbage (objects kept only by reference cycles) before anything else of a memory report is
    measured: how much there was, of what types, and the resident memory before the collection, after it and
    after a trim (what malloc held free). Garbage that piles up between the interpreter's own full
    collections is memory no holder explains."""
    import gc
    start = resident_mib()
    gc.set_debug(gc.DEBUG_SAVEALL)  # keep what it finds in gc.garbage, to be counted
    try:
        found = gc.collect()
        kinds = collections.Counter(type(o).__name__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    gc.collect()  # now free it
    collected = resident_mib()
    trimmed = trim_malloc()
    lines = [f"resident: {start:.1f} MiB; after collecting {found} objects of garbage: {collected:.1f} MiB; "
             f"after malloc_trim: {resident_mib():.1f} MiB{'' if trimmed else ' (no malloc_trim here)'}",
             "garbage by type:"]
    lines.extend(f"    {n:>9} {name}" for name, n in kinds.most_common(limit))
    return "\n".join(lines)


def memory_report(path: str, limit: int = 40) -> None:
    """Write where the operator's memory is (a diagnostic for bench/scale, issue 11): with tracemalloc on
    (PYTHONTRACEMALLOC=<frames>), the `limit` largest allocation sites by traceback and by owner; always the
    most numerous object types the garbage collector tracks, the resident memory before and after a trim, and
    pymalloc's arenas."""
    import gc
    import tracemalloc
    lines = [collect_garbage_report()]
    if tracemalloc.is_tracing():
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        stats = snapshot.statistics("traceback")
        lines.append(f"traced: {sum(s.size for s in stats) / 2**20:.1f} MiB in {sum(s.count for s in stats)} blocks")
        # Whose data it is: each block under the newest frame of its traceback outside the standard library
        # (json's decoder allocates what a watch event of kopf's or a request of ours holds).
        owners: collections.Counter[str] = collections.Counter()
        stdlib = os.path.dirname(os.__file__)
        for trace in snapshot.traces:
            frames = [f for f in trace.traceback if not f.filename.startswith((stdlib, "<"))]
            owner = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "(standard library, imports)"
            owners[owner] += trace.size
        lines.append("\nby the newest frame outside the standard library:")
        lines.extend(f"    {size / 2**20:8.2f} MiB  {owner}" for owner, size in owners.most_common(limit))
        for stat in stats[:limit]:
            lines.append(f"\n{stat.size / 2**20:.2f} MiB in {stat.count} blocks")
            lines.extend(f"    {frame.filename}:{frame.lineno}" for frame in stat.traceback)
    lines.append("\nwho holds it (deep sizes, each object counted once, under the first holder that reaches it):")
    lines.extend(f"    {size / 2**20:8.2f} MiB  {holder}" for holder, size in holders(limit))
    counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
    lines.append("\nobjects the collector tracks, by type:")
    lines.extend(f"    {n:>9} {name}" for name, n in counts.most_common(25))
    # The walks above allocated for themselves: what is resident after them, and after giving it back.
    before = resident_mib()
    gc.collect()
    trimmed = trim_malloc()
    lines.append(f"\nresident after this report's walks: {before:.1f} MiB; after gc and malloc_trim: "
                 f"{resident_mib():.1f} MiB{'' if trimmed else ' (no malloc_trim here)'}")
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")
        out.flush()
        if hasattr(sys, "_debugmallocstats"):  # pymalloc's arenas and pools, written to file descriptor 2
            saved = os.dup(2)
            try:
                os.dup2(out.fileno(), 2)
                sys._debugmallocstats()
            finally:
                os.dup2(saved, 2)
                os.close(saved)


_LEAVES = (str, bytes, bytearray, int, float, complex, bool, type(None))
_SKIPPED = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType, types.CodeType)


def deep_size(root: object, seen: set[int]) -> int:
    """Bytes held by `root` and what it reaches through containers, instance attributes and a coroutine's
    frames, skipping what `seen` holds (and adding what it counts to `seen`). Modules, classes, functions
    and code are not followed: they are the program, not its data."""
    size, stack = 0, [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _SKIPPED):
            continue
        seen.add(id(obj))
        try:
            size += sys.getsizeof(obj)
        except TypeError:
            continue
        if isinstance(obj, _LEAVES):
            continue
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset, collections.deque)):
            stack.extend(obj)
        elif isinstance(obj, types.CoroutineType):
            frame = obj.cr_frame
            if frame is not None:
                stack.extend(frame.f_locals.values())
            if obj.cr_await is not None:
                stack.append(obj.cr_await)
        elif isinstance(obj, types.FrameType):
            stack.extend(obj.f_locals.values())
        else:
            attrs = getattr(obj, "__dict__", None)
            if isinstance(attrs, dict):
                stack.append(attrs)
            for name in getattr(type(obj), "__slots__", ()):
                stack.append(getattr(obj, name, None))
    return size


def holders(limit: int = 40) -> list[tuple[str, int]]:
    """The largest holders of the operator's data (a diagnostic, issue 11): the watch cache's objects by kind,
    the rest of this package's modules' state (the shared queries, the known Events), kopf's per-object
    memories, and the running asyncio tasks by coroutine (a rollout's daemon, a reconcile, a watch)."""
    import asyncio
    import gc
    seen: set[int] = set()
    found: collections.Counter[str] = collections.Counter()
    caches = [o for o in gc.get_objects() if type(o).__name__ in ("WatchCache", "ResourceMemories")]
    for obj in caches:
        # First the watch cache's objects by kind (kopf's indexes): else they would count under whichever
        # module's client reaches the cache first.
        if type(obj).__name__ == "WatchCache":
            for sources in (getattr(obj, "_sources", {}), getattr(obj, "_lists", {})):
                for resource, index in sources.items():
                    found[f"watch cache: {resource}"] += deep_size(index, seen)
    for name, module in sorted(sys.modules.items()):
        if not name.startswith("guarded.") or module is None:
            continue
        for attr, value in list(vars(module).items()):
            if not attr.startswith("__"):
                found[f"{name}.{attr}"] += deep_size(value, seen)
    for obj in caches:
        if type(obj).__name__ == "ResourceMemories":
            found["kopf: per-object memories (ResourceMemories)"] += deep_size(obj, seen)
    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:  # no running loop (a unit test)
        tasks = set()
    for task in tasks:
        coro = task.get_coro()
        found[f"task: {getattr(coro, '__qualname__', type(coro).__name__)}"] += deep_size(coro, seen)
    return [(holder, size) for holder, size in found.most_common(limit) if size]


def resident_mib() -> float:
    """This process's resident memory now (MiB; 0 where /proc is not)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def trim_malloc() -> bool:
    """Give the memory glibc's malloc holds free back to the system (malloc_trim). False where there is no glibc."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)  # 1 if it gave memory back, 0 if there was none to give
    return True


def report_memory_on_signal() -> None:
    """SIGUSR2 writes memory_report to GUARDED_MEMORY_REPORT (default /tmp/guarded-memory-<pid>.txt)."""
    import signal
    path = os.environ.get("GUARDED_MEMORY_REPORT") or f"/tmp/guarded-memory-{os.getpid()}.txt"

    def report(*_: object) -> None:
        # A report under tracemalloc can take a minute: a signal meanwhile is ignored, not a report begun again.
        # It runs on the event loop's thread, between two of its steps: an error of its own (a read-only /tmp)
        # must not surface in whatever the loop was doing, so it is printed and dropped.
        previous = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
        try:
            memory_report(path)
        except Exception as exc:
            print(f"memory report to {path} failed: {exc!r}", file=sys.stderr)
        finally:
            signal.signal(signal.SIGUSR2, previous)

    signal.signal(signal.SIGUSR2, report)


MALLOC_TRIM_SECONDS = 15.0


def trim_malloc_every(seconds: float) -> bool:
    """Give malloc's free memory back to the system every `seconds`, on a thread of its own (issue 11).

    What a watch event, a list or a query's answer held for a moment is freed, but glibc keeps the pages
    for its next allocations; between the long-lived objects they stay resident. At N = 335 a trim gave back
    20-29 MiB of 261-296 (bench/scale, 2026-11-27). False where there is no glibc (or seconds <= 0)."""
    if seconds <= 0 or not trim_malloc():
        return False
    import threading

    def trim() -> None:
        while True:
            time.sleep(seconds)
            trim_malloc()

    threading.Thread(target=trim, name="guarded-malloc-trim", daemon=True).start()
    return True


def main(argv: list[str] | None = None) -> int:
    report_memory_on_signal()
    few_malloc_arenas(int(os.environ.get("GUARDED_MALLOC_ARENAS", "2") or "0"))
    trim_malloc_every(float(os.environ.get("GUARDED_MALLOC_TRIM_SECONDS", str(MALLOC_TRIM_SECONDS)) or "0"))
    small_tls_buffers()
    parser = argparse.ArgumentParser(prog="guarded-operator", description="Run the guarded-rollouts operator.")
    parser.add_argument("-n", "--namespace", action="append", default=[],
                        help="watch only this namespace (repeatable); default: all namespaces")
    parser.add_argument("--context", help="kubeconfig context to use outside a cluster")
    parser.add_argument("--peering", action="store_true",
                        help=f"coordinate replicas through kopf peering (one active at a time); needs the "
                        f"ClusterKopfPeering {PEERING_NAME!r} (or a KopfPeering per namespace with -n)")
    parser.add_argument("--peering-lifetime", type=int, default=int(os.environ.get("GUARDED_PEERING_LIFETIME", "60")),
                        help="seconds after its last keep-alive that a replica counts as gone (takeover time "
                        "after a crash)")
    parser.add_argument("--liveness", default=os.environ.get("GUARDED_LIVENESS", "http://0.0.0.0:8080/healthz"),
                        help="health endpoint URL (empty to disable)")
    parser.add_argument("--metrics-listen", default=os.environ.get("GUARDED_METRICS_LISTEN", ""),
                        help="host:port serving /metrics and /readyz; empty: off")
    parser.add_argument("--prometheus-url", default=os.environ.get("GUARDED_PROMETHEUS_URL", ""),
                        help="Prometheus for metric analysis and alerts")
    parser.add_argument("--alerts-listen", default=os.environ.get("GUARDED_ALERTS_LISTEN", ""),
                        help="host:port for the Alertmanager webhook (POST /alertmanager); empty: off")
    parser.add_argument("--webhook-listen", default=os.environ.get("GUARDED_WEBHOOK_LISTEN", ""),
                        help="host:port for the admission webhooks (HTTPS) that stamp authors and approvers; "
                        "empty: off (policies that require approvals then hold every rollout: authors unknown)")
    parser.add_argument("--webhook-host", default=os.environ.get("GUARDED_WEBHOOK_HOST", ""),
                        help="the name the API server reaches the webhooks by (default: the listen host), "
                        "e.g. guarded-rollouts-webhook.guarded-rollouts.svc")
    parser.add_argument("--webhook-tls-dir", default=os.environ.get("GUARDED_WEBHOOK_TLS_DIR", ""),
                        help="directory with tls.crt, tls.key and ca.crt; without them a private CA is made")
    parser.add_argument("--notify-events", default=os.environ.get("GUARDED_NOTIFY_EVENTS", ""),
                        help="comma-separated events the operator-wide sinks are sent (default: all); their URLs "
                        "come from GUARDED_NOTIFY_SLACK_URL / GUARDED_NOTIFY_WEBHOOK_URL only (credentials: never "
                        "on the command line). See docs/notifications.md")
    parser.add_argument("--notify-namespace", default=os.environ.get("GUARDED_NOTIFY_NAMESPACE", ""),
                        help="namespace of the Secrets RolloutPolicies' notification sinks name (default: the "
                        "operator's own)")
    parser.add_argument("--log-level", default=os.environ.get("GUARDED_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)

    from guarded import logs
    logs.configure(args.log_level)
    if args.context:
        os.environ["GUARDED_KUBE_CONTEXT"] = args.context
    os.environ["GUARDED_PROMETHEUS_URL"] = args.prometheus_url
    os.environ["GUARDED_ALERTS_LISTEN"] = args.alerts_listen
    os.environ["GUARDED_WEBHOOK_LISTEN"] = args.webhook_listen
    os.environ["GUARDED_WEBHOOK_HOST"] = args.webhook_host
    os.environ["GUARDED_WEBHOOK_TLS_DIR"] = args.webhook_tls_dir
    os.environ["GUARDED_METRICS_LISTEN"] = args.metrics_listen
    os.environ["GUARDED_NOTIFY_EVENTS"] = args.notify_events
    os.environ["GUARDED_NOTIFY_NAMESPACE"] = args.notify_namespace
    os.environ["GUARDED_WATCHED_NAMESPACES"] = ",".join(args.namespace)  # kopf's connections (handlers/connection)

    import kopf
    fast_watch_decoding()

    import guarded.handlers.operator  # registers the handlers
    import guarded.handlers.workloads
    if args.webhook_listen:
        import guarded.handlers.admission
        import guarded.handlers.workload_admission  # noqa: F401  (guarded Deployments: a change becomes a release)
    from guarded.handlers import endpoints

    settings = kopf.OperatorSettings()
    settings.peering.lifetime = args.peering_lifetime
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace,
        settings=settings,
        standalone=not args.peering,
        # Mandatory when asked for: without its peering object a replica waits rather than act alone.
        peering_name=PEERING_NAME if args.peering else None,
        priority=peering_priority(time.time(), random.Random()) if args.peering else None,
        liveness_endpoint=args.liveness or None,
        ready_flag=endpoints.STARTED,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
