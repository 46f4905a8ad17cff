"""A tiny local HTTP forward proxy, for measuring the proxy behind `HTTPS_PROXY`/`HTTP_PROXY`.

`CONNECT host:port` is answered `200` and the bytes are then piped both ways; any other first request (absolute form,
`POST http://host:port/path`) opens a connection to that host and port and pipes the connection there as it is (the
bench stand-in reads absolute-form request lines). One upstream connection per client connection, kept alive as long
as the client keeps it. Nothing is logged.

Run: `python -m bench.httpproxy --port 9400` (prints `ready <port>` once listening).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        writer.close()
        return
    method, target = head.split(b" ", 2)[:2]
    if method.upper() == b"CONNECT":
        authority, first = target, b""
    else:
        authority, first = target.split(b"//", 1)[1].split(b"/", 1)[0], head
    host, _, port = authority.decode().rpartition(":")
    try:
        up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
    except OSError:
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        writer.close()
        return
    if first:
        up_writer.write(first)
    else:
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
    await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def serve(host: str, port: int) -> None:
    server = await asyncio.start_server(handle, host, port, backlog=4096)
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="tiny local HTTP forward proxy for benchmarks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.host, args.port))
    else:
        uvloop.run(serve(args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
