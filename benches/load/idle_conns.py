#!/usr/bin/env python3
"""Opens N keep-alive client connections for benches/load/run.sh's memory figure.

  idle_conns.py HOST:PORT PATH N

Each connection sends one GET PATH (Cookie from $LOAD_COOKIE) and reads the whole answer,
one connection after the other, then all stay open and idle. Prints "open N" once they
are, and holds them until the process is killed.
"""
import os
import signal
import socket
import sys


def read_response(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            raise RuntimeError("closed before the response head")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(4096)
        if not chunk:
            raise RuntimeError("closed before the response body ended")
        body += chunk
    return status


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    host, port = sys.argv[1].rsplit(":", 1)
    path, count = sys.argv[2], int(sys.argv[3])
    cookie = os.environ.get("LOAD_COOKIE", "")
    request = ("GET %s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (
        path, sys.argv[1], "Cookie: %s\r\n" % cookie if cookie else "")).encode()
    conns = []
    for _ in range(count):
        conn = socket.create_connection((host, int(port)))
        conn.sendall(request)
        status = read_response(conn)
        if status != b"200":
            sys.exit("idle_conns.py: %s answered %s" % (path, status.decode()))
        conns.append(conn)
    print("open %d" % len(conns), flush=True)
    signal.pause()


if __name__ == "__main__":
    main()
