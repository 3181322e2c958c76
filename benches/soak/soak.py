#!/usr/bin/env python3
"""The soak's apps and its traffic, for benches/soak/run.sh (standard library only).

  soak.py backend HTTP_PORT TCP_PORT
      The app every task points at, on 127.0.0.1: HTTP/1.1 keep-alive answering
      `GET .../sse` with an event stream (EVENTS events, EVENT_MS apart), `GET .../ws` with
      a WebSocket that echoes every message, anything else with `200 ok`; and a TCP echo
      service on TCP_PORT (what a task's SSH server stands for).
  soak.py drive --fake-json FILE --gateway HOST:PORT --pid PID --duration S --out DIR [...]
      Mixed traffic through the gateway for S seconds — HTTP requests on keep-alive
      connections, SSE streams, WebSockets, TCP sessions on the ports the gateway gave the
      stable tasks, idle connections, and requests to tasks that start and stop — while
      /proc/PID (open descriptors, VmRSS) and /_gateway/metrics are sampled. Then the
      traffic stops, the gateway is left alone for --quiet seconds and sampled once more.
      Writes DIR/samples.csv and DIR/summary.json, prints a markdown report, and exits 1
      if descriptors grew or memory left the band around where it settled.
"""
import argparse
import asyncio
import base64
import collections
import csv
import hashlib
import json
import os
import random
import statistics
import struct
import sys
import time
import urllib.request

EVENTS = 20
EVENT_MS = 100
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC11B85"
TIMEOUT = 15  # seconds any one step of any exchange may take


# ---------------------------------------------------------------- WebSocket frames
def ws_frame(opcode, payload, masked):
    head = bytes([0x80 | opcode])
    mask_bit = 0x80 if masked else 0
    n = len(payload)
    if n < 126:
        head += bytes([mask_bit | n])
    elif n < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", n)
    if not masked:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def ws_read(reader):
    """(opcode, payload) of the next frame, unmasked."""
    b1, b2 = await reader.readexactly(2)
    n = b2 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    key = await reader.readexactly(4) if b2 & 0x80 else None
    payload = await reader.readexactly(n)
    if key:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return b1 & 0x0F, payload


def ws_accept(key):
    return base64.b64encode(hashlib.sha1(key + WS_GUID).digest())


# ---------------------------------------------------------------- the app
async def read_head(reader):
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, target, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return method, target, headers


def chunk(data):
    return b"%x\r\n%s\r\n" % (len(data), data)


async def serve_http(reader, writer):
    try:
        while True:
            method, target, headers = await read_head(reader)
            length = int(headers.get("content-length", "0"))
            if length:
                await reader.readexactly(length)
            path = target.split("?", 1)[0]
            if path.endswith("/ws") and headers.get("upgrade", "").lower() == "websocket":
                await serve_websocket(reader, writer, headers)
                return
            if path.endswith("/sse"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                             b"Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n")
                for n in range(EVENTS):
                    writer.write(chunk(b"data: event %d\n\n" % n))
                    await writer.drain()
                    await asyncio.sleep(EVENT_MS / 1000)
                writer.write(b"0\r\n\r\n")
            else:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: 3\r\n\r\nok\n")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, ValueError):
        pass
    finally:
        writer.close()


async def serve_websocket(reader, writer, headers):
    key = headers.get("sec-websocket-key", "").encode()
    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + ws_accept(key) + b"\r\n\r\n")
    await writer.drain()
    while True:
        opcode, payload = await ws_read(reader)
        if opcode == 8:
            writer.write(ws_frame(8, payload[:2], masked=False))
            await writer.drain()
            return
        if opcode in (1, 2):
            writer.write(ws_frame(opcode, payload, masked=False))
            await writer.drain()


async def serve_tcp_echo(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


async def backend(http_port, tcp_port):
    http = await asyncio.start_server(serve_http, "127.0.0.1", http_port, backlog=1024)
    tcp = await asyncio.start_server(serve_tcp_echo, "127.0.0.1", tcp_port, backlog=1024)
    async with http, tcp:
        await asyncio.gather(http.serve_forever(), tcp.serve_forever())


# ---------------------------------------------------------------- traffic
class Tally:
    """Operations done and failures, by kind."""

    def __init__(self):
        self.ok = collections.Counter()
        self.errors = collections.Counter()
        self.notes = collections.Counter()

    def fail(self, kind, what):
        self.errors[(kind, what)] += 1


def error_name(err):
    if isinstance(err, asyncio.TimeoutError):
        return "timeout"
    if isinstance(err, asyncio.IncompleteReadError):
        return "closed_early"
    if isinstance(err, ConnectionRefusedError):
        return "refused"
    if isinstance(err, ConnectionResetError):
        return "reset"
    return type(err).__name__


class Traffic:
    def __init__(self, args, fake):
        self.host, port = args.gateway.rsplit(":", 1)
        self.port = int(port)
        self.cookie = "%s=%s" % (args.cookie, fake["token"])
        self.stable = fake["stable"]
        self.fake = fake
        self.tally = Tally()
        self.tcp_ports = []
        self.running = True

    def request(self, path, extra=""):
        return ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nCookie: %s\r\n%s\r\n" % (
            path, self.host, self.port, self.cookie, extra)).encode()

    async def open(self):
        return await asyncio.wait_for(asyncio.open_connection(self.host, self.port), TIMEOUT)

    async def response(self, reader):
        """(status, body) of a Content-Length framed response."""
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        body = await asyncio.wait_for(reader.readexactly(length), TIMEOUT)
        return status, body

    async def forever(self, kind, one_round):
        """Runs `one_round` until the traffic stops; a failure is tallied, then a pause."""
        while self.running:
            try:
                await one_round()
            except asyncio.CancelledError:
                raise
            except Exception as err:  # every failure is a finding, tallied by its kind
                self.tally.fail(kind, error_name(err))
                await asyncio.sleep(0.5)

    async def http_round(self, rate):
        """One keep-alive connection, 200 requests at `rate` per second."""
        reader, writer = await self.open()
        try:
            for n in range(200):
                if not self.running:
                    return
                writer.write(self.request("/service/%s/item/%d" % (random.choice(self.stable), n)))
                status, _ = await self.response(reader)
                if status != 200:
                    self.tally.fail("http", "status_%d" % status)
                else:
                    self.tally.ok["http"] += 1
                await asyncio.sleep(1 / rate)
        finally:
            writer.close()

    async def sse_round(self):
        reader, writer = await self.open()
        try:
            writer.write(self.request("/service/%s/sse" % random.choice(self.stable),
                                      "Accept: text/event-stream\r\n"))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            status = int(head.split(b" ", 2)[1])
            if status != 200:
                self.tally.fail("sse", "status_%d" % status)
                return
            received = b""
            while not received.endswith(b"0\r\n\r\n"):
                data = await asyncio.wait_for(reader.read(65536), TIMEOUT)
                if not data:
                    raise asyncio.IncompleteReadError(received, None)
                received += data
            events = received.count(b"data: event ")
            if events != EVENTS:
                self.tally.fail("sse", "events_%d_of_%d" % (events, EVENTS))
            else:
                self.tally.ok["sse"] += 1
        finally:
            writer.close()

    async def websocket_round(self):
        reader, writer = await self.open()
        try:
            key = base64.b64encode(os.urandom(16))
            writer.write(self.request(
                "/service/%s/ws" % random.choice(self.stable),
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                "Sec-WebSocket-Key: %s\r\n" % key.decode()))
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            if not head.startswith(b"HTTP/1.1 101") or ws_accept(key) not in head:
                self.tally.fail("websocket", "handshake_" + head.split(b" ", 2)[1].decode())
                return
            for n in range(20):
                message = b"message %d %s" % (n, os.urandom(8).hex().encode())
                writer.write(ws_frame(1, message, masked=True))
                opcode, echo = await asyncio.wait_for(ws_read(reader), TIMEOUT)
                if (opcode, echo) != (1, message):
                    self.tally.fail("websocket", "echo_mismatch")
                    return
                await asyncio.sleep(0.1)
            writer.write(ws_frame(8, struct.pack("!H", 1000), masked=True))
            opcode, _ = await asyncio.wait_for(ws_read(reader), TIMEOUT)
            if opcode != 8:
                self.tally.fail("websocket", "no_close_reply")
                return
            self.tally.ok["websocket"] += 1
        finally:
            writer.close()

    async def tcp_round(self):
        if not self.tcp_ports:
            await asyncio.sleep(1)
            return
        port = random.choice(self.tcp_ports)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, port), TIMEOUT)
        try:
            for n in range(20):
                line = b"line %d %s\n" % (n, os.urandom(8).hex().encode())
                writer.write(line)
                echo = await asyncio.wait_for(reader.readexactly(len(line)), TIMEOUT)
                if echo != line:
                    self.tally.fail("tcp", "echo_mismatch")
                    return
                await asyncio.sleep(0.1)
            self.tally.ok["tcp"] += 1
        finally:
            writer.close()

    async def idle_round(self, count, period):
        """`count` connections that ask once, then idle `period` seconds between requests."""
        connections = []
        try:
            for _ in range(count):
                reader, writer = await self.open()
                connections.append((reader, writer))
            while self.running:
                for reader, writer in connections:
                    writer.write(self.request("/service/%s/idle" % random.choice(self.stable)))
                    status, _ = await self.response(reader)
                    if status != 200:
                        self.tally.fail("idle", "status_%d" % status)
                    else:
                        self.tally.ok["idle"] += 1
                await asyncio.sleep(period)
        finally:
            for _, writer in connections:
                writer.close()

    async def churn_round(self):
        """Asks for a few tasks that start and stop: 200 once routed, 404 before or after."""
        tasks = await asyncio.to_thread(self.fake_tasks, None)
        stable = set(self.stable)
        churned = [t["id"] for t in tasks if t["id"] not in stable and t.get("status") == "in_progress"]
        for task_id in random.sample(churned, min(5, len(churned))):
            reader, writer = await self.open()
            try:
                writer.write(self.request("/service/%s/" % task_id))
                status, _ = await self.response(reader)
            finally:
                writer.close()
            if status == 200:
                self.tally.ok["churned_task"] += 1
            elif status == 404:
                self.tally.notes["churned task not routed (yet, or any more): 404"] += 1
            else:
                self.tally.fail("churned_task", "status_%d" % status)
        await asyncio.sleep(1)

    def fake_tasks(self, ids):
        """The fake ClearML's tasks (as the soak's user sees them), by the real API."""
        data = {"only_fields": ["id", "status", "runtime"], "search_hidden": True}
        if ids is not None:
            data["id"] = ids
        request = urllib.request.Request(
            self.fake["url"].rstrip("/") + "/tasks.get_all", data=json.dumps(data).encode(),
            headers={"Authorization": "Bearer " + self.fake["token"],
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=TIMEOUT) as reply:
            return json.load(reply)["data"]["tasks"]

    async def discover_tcp_ports(self, router_address):
        """The ports the gateway wrote back into the stable tasks' `ssh` TCP endpoints."""
        deadline = time.monotonic() + 60
        wanted = self.fake.get("tcp_stable", [])
        while wanted and time.monotonic() < deadline:
            tasks = await asyncio.to_thread(self.fake_tasks, wanted)
            ports = [int(t["runtime"]["external_tcp_port__ssh"]) for t in tasks
                     if t.get("runtime", {}).get("upstream_task_address__ssh")
                     and t["runtime"].get("external_address__ssh") == router_address]
            if len(ports) == len(wanted):
                self.tcp_ports = ports
                return
            await asyncio.sleep(0.5)
        if wanted:
            raise SystemExit("soak.py: the gateway gave %d of %d stable tasks a TCP port within 60 s"
                             % (len(self.tcp_ports), len(wanted)))


# ---------------------------------------------------------------- sampling
def proc_sample(pid):
    fds = len(os.listdir("/proc/%d/fd" % pid))
    rss_kib = 0
    with open("/proc/%d/status" % pid) as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
    return fds, rss_kib


GAUGES = ["clearml_gateway_open_connections", "clearml_gateway_open_websockets",
          "clearml_gateway_tcp_sessions_open", "clearml_gateway_tcp_ports_in_use",
          "clearml_gateway_routes"]


def metrics(gateway):
    try:
        with urllib.request.urlopen("http://%s/_gateway/metrics" % gateway, timeout=5) as page:
            text = page.read().decode()
    except OSError:
        return {}
    values = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name in GAUGES:
            values[name] = float(value)
    return values


class Sampler:
    def __init__(self, args):
        self.pid, self.gateway, self.every = args.pid, args.gateway, args.sample
        self.samples = []
        self.started = time.monotonic()

    async def take(self, phase):
        fds, rss = proc_sample(self.pid)
        gauges = await asyncio.to_thread(metrics, self.gateway)
        row = {"t": round(time.monotonic() - self.started, 1), "phase": phase, "fds": fds,
               "rss_kib": rss}
        row.update({name.replace("clearml_gateway_", ""): int(gauges.get(name, -1)) for name in GAUGES})
        self.samples.append(row)
        return row

    async def run(self, phase_of):
        while True:
            await self.take(phase_of())
            await asyncio.sleep(self.every)


# ---------------------------------------------------------------- the run
async def drive(args):
    with open(args.fake_json) as f:
        fake = json.loads(f.readline())
    traffic = Traffic(args, fake)
    sampler = Sampler(args)
    await traffic.discover_tcp_ports(args.router_address)
    await asyncio.sleep(args.sample)
    start = await sampler.take("start")
    if args.on_load_start:
        os.system(args.on_load_start)
    load_started = time.monotonic()
    warmup = max(30.0, args.duration * 0.1)

    def phase():
        elapsed = time.monotonic() - load_started
        if not traffic.running:
            return "drain"
        if elapsed < warmup:
            return "warmup"
        if elapsed < warmup + max(30.0, args.duration * 0.1):
            return "settle"
        if elapsed > args.duration * 0.9:
            return "end"
        return "load"

    workers = [traffic.forever("http", lambda: traffic.http_round(args.http_rate))
               for _ in range(args.http)]
    workers += [traffic.forever("sse", traffic.sse_round) for _ in range(args.sse)]
    workers += [traffic.forever("websocket", traffic.websocket_round) for _ in range(args.websockets)]
    workers += [traffic.forever("tcp", traffic.tcp_round) for _ in range(args.tcp)]
    workers += [traffic.forever("idle", lambda: traffic.idle_round(args.idle, 20))]
    workers += [traffic.forever("churned_task", traffic.churn_round)]
    tasks = [asyncio.create_task(w) for w in workers]
    sampling = asyncio.create_task(sampler.run(phase))
    await asyncio.sleep(args.duration)
    traffic.running = False
    await asyncio.sleep(TIMEOUT + 2)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    sampling.cancel()
    if args.on_load_end:
        os.system(args.on_load_end)
    await asyncio.sleep(args.quiet)
    after = await sampler.take("after")
    return report(args, traffic.tally, sampler.samples, start, after)


def median(rows, key):
    values = [r[key] for r in rows]
    return statistics.median(values) if values else float("nan")


def report(args, tally, samples, start, after):
    settle = [s for s in samples if s["phase"] == "settle"]
    end = [s for s in samples if s["phase"] == "end"]
    loaded = [s for s in samples if s["phase"] in ("settle", "load", "end")]
    if not settle or not end:
        raise SystemExit("soak.py: the run was too short to have a settled and an end window")
    fd_settled, fd_end = median(settle, "fds"), median(end, "fds")
    rss_settled = median(settle, "rss_kib")
    rss_max = max(s["rss_kib"] for s in loaded)
    rss_end = end[-1]["rss_kib"]
    # Descriptors follow the traffic's own connections, which come and go: growth is the
    # end window against the settled one beyond that jitter, and whatever the quiet
    # gateway still holds beyond where it started (TCP session ports of tasks counted).
    fd_jitter = max(10, 0.05 * fd_settled)
    port_change = after["tcp_ports_in_use"] - start["tcp_ports_in_use"]
    checks = {
        "fds: end window within the settled one's jitter (%d)" % fd_jitter:
            fd_end <= fd_settled + fd_jitter,
        "fds: quiet gateway back where it started (± session ports, +5)":
            after["fds"] <= start["fds"] + max(0, port_change) + 5,
        "rss: max under load within 10 % of settled": rss_max <= rss_settled * 1.10,
        "rss: end within 10 % of settled": abs(rss_end - rss_settled) <= rss_settled * 0.10,
    }
    summary = {
        "duration_s": args.duration, "sample_s": args.sample,
        "fds": {"start": start["fds"], "settled_median": fd_settled, "end_median": fd_end,
                "max": max(s["fds"] for s in loaded), "after_quiet": after["fds"]},
        "rss_kib": {"start": start["rss_kib"], "settled_median": rss_settled, "max": rss_max,
                    "end": rss_end, "after_quiet": after["rss_kib"]},
        "tcp_ports_in_use": {"start": start["tcp_ports_in_use"], "after_quiet": after["tcp_ports_in_use"]},
        "ok": dict(tally.ok),
        "errors": {"%s: %s" % k: v for k, v in sorted(tally.errors.items())},
        "notes": dict(tally.notes),
        "checks": checks,
    }
    with open(os.path.join(args.out, "samples.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(samples[0].keys()))
        writer.writeheader()
        writer.writerows(samples)
    with open(os.path.join(args.out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    print_report(summary)
    return all(checks.values())


def print_report(s):
    mib = lambda kib: "%.1f MiB" % (kib / 1024)
    fds, rss = s["fds"], s["rss_kib"]
    print("## Soak: %d s of mixed traffic, sampled every %d s\n" % (s["duration_s"], s["sample_s"]))
    print("| | start | settled (median) | max under load | end (median / last) | after quiet |")
    print("|---|---|---|---|---|---|")
    print("| open descriptors | %d | %d | %d | %d | %d |" % (
        fds["start"], fds["settled_median"], fds["max"], fds["end_median"], fds["after_quiet"]))
    print("| VmRSS | %s | %s | %s | %s | %s |" % (
        mib(rss["start"]), mib(rss["settled_median"]), mib(rss["max"]), mib(rss["end"]),
        mib(rss["after_quiet"])))
    print("\nTCP session ports in use: %(start)d at the start, %(after_quiet)d after." % s["tcp_ports_in_use"])
    print("\n| traffic | done | failed |")
    print("|---|---|---|")
    for kind in ("http", "sse", "websocket", "tcp", "idle", "churned_task"):
        failed = sum(v for k, v in s["errors"].items() if k.startswith(kind + ":"))
        print("| %s | %d | %d |" % (kind, s["ok"].get(kind, 0), failed))
    print("\nFailures by kind: %s" % (", ".join("%s × %d" % kv for kv in s["errors"].items()) or "none"))
    for note, count in s["notes"].items():
        print("Expected: %s × %d" % (note, count))
    print()
    for check, passed in s["checks"].items():
        print("- [%s] %s" % ("x" if passed else " ", check))


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "backend":
        asyncio.run(backend(int(sys.argv[2]), int(sys.argv[3])))
        return
    if len(sys.argv) < 2 or sys.argv[1] != "drive":
        sys.exit(__doc__)
    parser = argparse.ArgumentParser(prog="soak.py drive")
    parser.add_argument("--fake-json", required=True)
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--pid", type=int, required=True)
    parser.add_argument("--router-address", default="127.0.0.1")
    parser.add_argument("--cookie", default="clearml_token_basic")
    parser.add_argument("--duration", type=float, default=600)
    parser.add_argument("--sample", type=float, default=5)
    parser.add_argument("--quiet", type=float, default=75)
    parser.add_argument("--http", type=int, default=16)
    parser.add_argument("--http-rate", type=float, default=20)
    parser.add_argument("--sse", type=int, default=8)
    parser.add_argument("--websockets", type=int, default=16)
    parser.add_argument("--tcp", type=int, default=8)
    parser.add_argument("--idle", type=int, default=200)
    parser.add_argument("--on-load-start", default="")
    parser.add_argument("--on-load-end", default="")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(sys.argv[2:])
    sys.exit(0 if asyncio.run(drive(args)) else 1)


if __name__ == "__main__":
    main()
