"""The operator's TLS connections read into 16 KiB buffers (guarded.main.small_tls_buffers), and still carry
whole messages of any size both ways."""

from __future__ import annotations

import asyncio
import asyncio.sslproto
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from guarded.handlers.tls import generate
from guarded.main import TLS_READ_BUFFER, small_tls_buffers


@pytest.fixture
def small_buffers() -> Iterator[None]:
    before = asyncio.sslproto.SSLProtocol.max_size
    assert small_tls_buffers()
    yield
    asyncio.sslproto.SSLProtocol.max_size = before


def test_a_megabyte_crosses_a_tls_connection_whose_buffers_are_16_kib(small_buffers: None, tmp_path: Path) -> None:
    cert = generate(tmp_path, ["127.0.0.1"])
    payload = bytes(b for b in range(256) if b != 10) * 4096 + b"\n"   # 1 MiB, then its only line end
    buffers: list[int] = []

    async def exchange() -> bytes:
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_ctx.load_cert_chain(cert.certfile, cert.keyfile)

        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            buffers.append(len(writer.transport._ssl_protocol._ssl_buffer))  # type: ignore[attr-defined]
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx, limit=2**21)
        port = server.sockets[0].getsockname()[1]
        client_ctx = ssl.create_default_context(cadata=cert.ca.decode())
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, limit=2**21)
        buffers.append(len(writer.transport._ssl_protocol._ssl_buffer))  # type: ignore[attr-defined]
        writer.write(payload)
        await writer.drain()
        echoed = await reader.readline()
        writer.close()
        server.close()
        await server.wait_closed()
        return echoed

    assert asyncio.run(exchange()) == payload
    assert buffers == [TLS_READ_BUFFER, TLS_READ_BUFFER]
