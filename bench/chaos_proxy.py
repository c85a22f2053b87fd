"""A loopback TCP proxy that bench/chaos puts between the operator and what it talks to, to break the link.

The operator reaches the API server (its kubeconfig's server) and Prometheus (--prometheus-url) through one
of these. TLS passes through untouched (the API server's certificate names 127.0.0.1, whatever the port).
Modes, switched at any moment from another thread:

* ``open``: bytes flow both ways.
* ``cut``: a partition. No byte moves in either direction on any connection, old or new (new ones are
  accepted, and wait); the client's own timeouts are what end its requests. When the link opens again the
  connections still alive carry on with what was held back, as TCP does when a partition heals.
* ``slow``: every chunk from the upstream (an answer) waits `delay` seconds before it is passed on.
* ``reset``: every connection is closed at once, and new ones are closed as soon as they are accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass

CHUNK = 65536


@dataclass(frozen=True)
class Mode:
    name: str = "open"
    delay: float = 0.0


class Proxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.mode = Mode()
        self.port = 0
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._open = asyncio.Event()
        self._writers: set[asyncio.StreamWriter] = set()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"chaos-proxy-{upstream_port}", daemon=True)

    def start(self) -> Proxy:
        self._thread.start()
        self._started.wait(10)
        return self

    @property
    def url_host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def set(self, name: str, delay: float = 0.0) -> None:
        """Switch the mode (thread-safe); takes effect on every connection at once."""
        assert name in ("open", "cut", "slow", "reset"), name
        self._loop.call_soon_threadsafe(self._apply, Mode(name, delay))

    def _apply(self, mode: Mode) -> None:
        self.mode = mode
        if mode.name == "cut":
            self._open.clear()
        else:
            self._open.set()
        if mode.name == "reset":
            for w in list(self._writers):
                w.transport.abort()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._open.set()
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._started.set()
        self._loop.run_forever()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode.name == "reset":
            writer.transport.abort()
            return
        await self._open.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pump(reader, up_writer, answers=False),
                                 self._pump(up_reader, writer, answers=True))
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, answers: bool) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(CHUNK):
                await self._open.wait()
                if answers and self.mode.name == "slow":
                    await asyncio.sleep(self.mode.delay)
                    await self._open.wait()
                if self.mode.name == "reset" or writer.transport.is_closing():
                    break
                writer.write(data)
                await writer.drain()
        # One side ended: end the other too (no half-open connections left behind).
        writer.transport.abort()
