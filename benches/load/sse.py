#!/usr/bin/env python3
"""Time to the first server-sent event, for benches/load/run.sh.

  sse.py serve PORT
      A keep-alive HTTP/1.1 app on 127.0.0.1:PORT answering every GET with an event
      stream: the first event at once, a second one PAUSE_MS (20) later, then the end.
  sse.py measure SAMPLES NAME=URL [NAME=URL ...]
      Opens a fresh connection per sample, sends GET with the Cookie header from
      $LOAD_COOKIE, and times connect + request + first event. The targets are taken
      in turn, sample after sample; prints one line per target:
      NAME median_us=... p90_us=... min_us=... n=...
"""
import asyncio
import os
import socket
import statistics
import sys
import time
from urllib.parse import urlsplit

PAUSE_MS = 20
HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")


def chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


async def handle(reader, writer):
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                break
            writer.write(HEAD + chunk(b"data: first\n\n"))
            await writer.drain()
            await asyncio.sleep(PAUSE_MS / 1000)
            writer.write(chunk(b"data: last\n\n") + b"0\r\n\r\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def serve(port):
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def one(host, port, request):
    """Microseconds from connect to the first event; reads the stream to its end."""
    start = time.perf_counter()
    with socket.create_connection((host, port)) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(request)
        received = b""
        first = None
        while True:
            data = conn.recv(65536)
            if not data:
                raise RuntimeError("connection closed before the stream ended: %r" % received[:200])
            received += data
            if first is None and b"data: first" in received:
                first = time.perf_counter()
                if not received.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError("not a 200: %r" % received[:200])
            if first is not None and received.endswith(b"0\r\n\r\n"):
                return (first - start) * 1e6


def measure(samples, targets):
    cookie = os.environ.get("LOAD_COOKIE", "")
    prepared = []
    for target in targets:
        name, url = target.split("=", 1)
        parts = urlsplit(url)
        request = ("GET %s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n%s\r\n" % (
            parts.path or "/", parts.netloc,
            "Cookie: %s\r\n" % cookie if cookie else "")).encode()
        prepared.append((name, parts.hostname, parts.port, request, []))
    for _ in range(samples):
        for name, host, port, request, times in prepared:
            times.append(one(host, port, request))
    for name, _, _, _, times in prepared:
        times.sort()
        print("%s median_us=%.0f p90_us=%.0f min_us=%.0f n=%d" % (
            name, statistics.median(times), times[int(0.9 * (len(times) - 1))], times[0], len(times)))


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        asyncio.run(serve(int(sys.argv[2])))
    elif len(sys.argv) >= 4 and sys.argv[1] == "measure":
        measure(int(sys.argv[2]), sys.argv[3:])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
