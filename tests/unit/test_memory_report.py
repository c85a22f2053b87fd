"""The operator's memory report (SIGUSR2; bench/scale's diagnostic, issue 11)."""

import asyncio
import gc
import inspect
import re
import signal
import sys
import threading
import tracemalloc
import types

from guarded.main import deep_size, holders, memory_report, report_memory_on_signal, trim_malloc_every


def test_the_report_names_the_largest_allocation_sites_when_tracing(tmp_path):
    tracemalloc.start(3)
    try:
        held, line = [bytearray(4096) for _ in range(500)], inspect.currentframe().f_lineno  # 2 MiB here
        memory_report(str(tmp_path / "memory.txt"), limit=5)
        del held
    finally:
        tracemalloc.stop()
    text = (tmp_path / "memory.txt").read_text()
    assert re.search(r"^traced: ", text, re.M)
    assert f"test_memory_report.py:{line}" in text
    assert "objects the collector tracks, by type:" in text


def test_without_tracing_the_report_still_counts_objects_by_type(tmp_path):
    memory_report(str(tmp_path / "memory.txt"))
    text = (tmp_path / "memory.txt").read_text()
    assert "traced:" not in text
    assert " dict\n" in text


def test_the_report_says_what_giving_back_free_memory_would_save(tmp_path):
    memory_report(str(tmp_path / "memory.txt"))
    text = (tmp_path / "memory.txt").read_text()
    assert re.search(r"resident after this report's walks: [\d.]+ MiB; after gc and malloc_trim: [\d.]+ MiB", text)


class _Cyclic:
    def __init__(self) -> None:
        self.me = self


def test_the_report_first_collects_the_garbage_and_says_what_it_was(tmp_path):
    # What other tests in this process left is collected first, and no automatic collection runs meanwhile:
    # the report's own collection finds these cycles, and they are the most numerous garbage.
    gc.collect()
    gc.disable()
    try:
        for _ in range(500):
            _Cyclic()  # unreachable, kept only by its own reference: garbage the next collection finds
        memory_report(str(tmp_path / "memory.txt"))
    finally:
        gc.enable()
    text = (tmp_path / "memory.txt").read_text()
    first = text.splitlines()[0]
    found = re.match(r"resident: [\d.]+ MiB; after collecting (\d+) objects of garbage: [\d.]+ MiB; "
                     r"after malloc_trim: [\d.]+ MiB$", first)
    assert found and int(found.group(1)) >= 500
    cyclic = re.search(r"^ +(\d+) _Cyclic$", text, re.M)
    assert cyclic and int(cyclic.group(1)) == 500
    assert not gc.garbage  # counted, then freed


def test_free_memory_is_given_back_periodically_on_a_thread_of_its_own_unless_turned_off():
    assert trim_malloc_every(0) is False
    assert trim_malloc_every(3600) is True  # glibc here
    assert "guarded-malloc-trim" in [t.name for t in threading.enumerate()]


def test_a_report_that_cannot_be_written_does_not_disturb_the_operator(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("GUARDED_MEMORY_REPORT", str(tmp_path / "no-such-directory" / "memory.txt"))
    previous = signal.getsignal(signal.SIGUSR2)
    try:
        report_memory_on_signal()
        signal.raise_signal(signal.SIGUSR2)  # handled here, between two bytecodes of this thread
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert "memory report to" in capsys.readouterr().err


def test_a_deep_size_counts_what_containers_and_attributes_reach_once():
    text = "x" * 10_000
    held = {"a": [text, text], "b": types.SimpleNamespace(c=(text, bytearray(5_000)))}
    seen: set[int] = set()
    size = deep_size(held, seen)
    assert 15_000 < size < 17_000   # the string once, the bytearray, the containers
    assert deep_size(held, seen) == 0   # already counted: a second holder gets nothing of it
    assert deep_size(text, set()) == sys.getsizeof(text)


def test_a_deep_size_follows_a_suspended_coroutine_into_its_locals():
    async def waits(event):
        kept = bytearray(50_000)
        await event.wait()
        return len(kept)

    async def main():
        event = asyncio.Event()
        task = asyncio.ensure_future(waits(event))
        await asyncio.sleep(0)
        size = deep_size(task.get_coro(), set())
        named = dict(holders(limit=100))
        event.set()
        await task
        return size, named

    size, named = asyncio.run(main())
    assert size > 50_000
    assert named[f"task: {waits.__qualname__}"] > 50_000


def test_the_report_names_the_package_state_that_holds_memory(tmp_path, monkeypatch):
    module = types.ModuleType("guarded.test_holder")
    module.HELD = {"k": bytearray(3 * 2**20)}
    monkeypatch.setitem(sys.modules, "guarded.test_holder", module)
    memory_report(str(tmp_path / "memory.txt"))
    text = (tmp_path / "memory.txt").read_text()
    assert re.search(r"\n +3\.\d\d MiB  guarded\.test_holder\.HELD\n", text)


def test_the_watch_caches_objects_are_counted_by_kind(tmp_path):
    from guarded.kube.cache import WatchCache
    cache = WatchCache()
    cache.serve("deployments", {("shop", "shop"): [{"metadata": {"name": "shop"}, "spec": "x" * 2_000_000}]})
    try:
        named = dict(holders(limit=100))
    finally:
        del cache
    assert 1.9e6 < named["watch cache: deployments"] < 2.2e6
