"""The operator's memory report (SIGUSR2; bench/scale's diagnostic, issue 11)."""

import inspect
import re
import signal
import threading
import tracemalloc

from guarded.main import memory_report, report_memory_on_signal, trim_malloc_every


def test_the_report_names_the_largest_allocation_sites_when_tracing(tmp_path):
    tracemalloc.start(3)
    try:
        held, line = [bytearray(4096) for _ in range(500)], inspect.currentframe().f_lineno  # 2 MiB here
        memory_report(str(tmp_path / "memory.txt"), limit=5)
        del held
    finally:
        tracemalloc.stop()
    text = (tmp_path / "memory.txt").read_text()
    assert text.startswith("traced: ")
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
    assert re.search(r"resident: [\d.]+ MiB; after gc and malloc_trim: [\d.]+ MiB", text)


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
