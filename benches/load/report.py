#!/usr/bin/env python3
"""Prints benches/load/run.sh's results as one markdown report.

  report.py RESULTS META

RESULTS holds one line per measurement, `PHASE TARGET ROUND key=value ...`; META holds
`key=value` lines about the machine, versions and commands. Figures are medians over rounds.
"""
import statistics
import sys
from collections import defaultdict


def load(path):
    data = defaultdict(lambda: defaultdict(list))
    records = []
    for line in open(path):
        parts = line.split()
        if len(parts) < 3:
            continue
        phase, target = parts[0], parts[1]
        fields = dict(kv.partition("=")[::2] for kv in parts[3:])
        records.append((phase, target, parts[2], fields))
        for key, value in fields.items():
            data[(phase, target)][key].append(value)
    return data, records


def num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def median(data, phase, target, key):
    values = [num(v) for v in data.get((phase, target), {}).get(key, [])]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def total(data, phase, target, key):
    values = [num(v) for v in data.get((phase, target), {}).get(key, [])]
    values = [v for v in values if v is not None]
    return sum(values) if values else None


def rounds(data, phase, target):
    values = data.get((phase, target), {})
    return max((len(v) for v in values.values()), default=0)


def fmt(value, unit="", digits=0):
    if value is None:
        return "—"
    if digits == 0:
        text = "{:,.0f}".format(value).replace(",", " ")
    else:
        text = "{:.{}f}".format(value, digits)
    return text + unit


def ms(us):
    return None if us is None else us / 1000


def ratio(a, b):
    if a is None or b in (None, 0):
        return "—"
    return "{:.2f}×".format(a / b)


def paired_ratios(records, phase):
    """Gateway / baseline within each round (the two ran back to back)."""
    by_round = defaultdict(dict)
    for p, target, rnd, fields in records:
        if p == phase and target in ("baseline", "gateway"):
            by_round[rnd][target] = fields
    out = []
    for rnd in sorted(by_round, key=lambda r: int(r) if r.isdigit() else 0):
        pair = by_round[rnd]
        if "baseline" not in pair or "gateway" not in pair:
            continue
        ratios = {}
        for key in ("rps", "cpu_us"):
            g, b = num(pair["gateway"].get(key)), num(pair["baseline"].get(key))
            if g is not None and b:
                ratios[key] = g / b
        out.append(ratios)
    return out


def throughput_table(data, records, phase, title, direct_label):
    if not any((phase, t) in data for t in ("direct", "baseline", "gateway")):
        return []
    out = ["### " + title, "",
           "| target | req/s | p50 | p99 | CPU per request (proxy) | proxy core busy | errors (all rounds) | rounds |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    labels = {"direct": direct_label, "baseline": "baseline: nginx + Lua, 1 worker",
              "gateway": "clearml-gateway, 1 core"}
    for target in ("direct", "baseline", "gateway"):
        if (phase, target) not in data:
            continue
        out.append("| {} | {} | {} | {} | {} | {} | {} | {} |".format(
            labels[target],
            fmt(median(data, phase, target, "rps")),
            fmt(ms(median(data, phase, target, "p50_us")), " ms", 2),
            fmt(ms(median(data, phase, target, "p99_us")), " ms", 2),
            fmt(median(data, phase, target, "cpu_us"), " µs", 1),
            fmt(median(data, phase, target, "busy"), " %", 0),
            "{} ({} non-2xx)".format(fmt(total(data, phase, target, "errors")),
                                     fmt(total(data, phase, target, "non2xx"))),
            rounds(data, phase, target)))
    if (phase, "baseline") in data and (phase, "gateway") in data:
        get = lambda key, t: median(data, phase, t, key)
        out.append("| **gateway / baseline** | **{}** | {} | {} | **{}** | | | |".format(
            ratio(get("rps", "gateway"), get("rps", "baseline")),
            ratio(get("p50_us", "gateway"), get("p50_us", "baseline")),
            ratio(get("p99_us", "gateway"), get("p99_us", "baseline")),
            ratio(get("cpu_us", "gateway"), get("cpu_us", "baseline"))))
    pairs = paired_ratios(records, phase)
    if pairs:
        out.append("")
        for key, label in (("rps", "req/s"), ("cpu_us", "CPU per request")):
            values = [r[key] for r in pairs if key in r]
            if values:
                out.append("Gateway / baseline {} round by round: {} (median {:.2f}×).".format(
                    label, ", ".join("{:.2f}".format(v) for v in values), statistics.median(values)))
    if (phase, "direct") in data:
        d = median(data, phase, "direct", "rps")
        parts = []
        for target in ("baseline", "gateway"):
            if (phase, target) in data and d:
                parts.append("{} {:.0%}".format(target, median(data, phase, target, "rps") / d))
        if parts:
            out.append("")
            out.append("Of the ceiling's req/s: " + ", ".join(parts) + ".")
    out.append("")
    return out


def churn_table(data):
    if ("churn", "gateway") not in data and ("churn", "baseline") not in data:
        return []
    out = ["### Route churn under load", "",
           "| target | routes changed during the run | req/s | p99 | p99 without churn | errors | non-2xx | socket errors | CPU per request |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for target, label in (("baseline", "baseline (config regenerated + `nginx -s reload`, once a second)"),
                          ("gateway", "clearml-gateway (fake ClearML stops/starts tasks; polled every POLL_MS)")):
        if ("churn", target) not in data:
            continue
        extra = ""
        reloads = median(data, "churn", target, "reloads")
        if reloads is not None:
            extra = " ({} reloads)".format(fmt(reloads))
        out.append("| {} | {}{} | {} | {} | {} | {} | {} | {} | {} |".format(
            label, fmt(median(data, "churn", target, "changes")), extra,
            fmt(median(data, "churn", target, "rps")),
            fmt(ms(median(data, "churn", target, "p99_us")), " ms", 2),
            fmt(ms(median(data, "wrk", target, "p99_us")), " ms", 2),
            fmt(median(data, "churn", target, "errors")),
            fmt(median(data, "churn", target, "non2xx")),
            fmt(median(data, "churn", target, "sockerr")),
            fmt(median(data, "churn", target, "cpu_us"), " µs", 1)))
    out.append("")
    return out


def user_table(data):
    out = []
    rows = []
    for phase, label in (("c1", "p50 at one connection (wrk -c1), proxy on its own core"),
                         ("c1same", "p50 at one connection, proxy on the client's and backend's core")):
        if (phase, "direct") not in data:
            continue
        d = median(data, phase, "direct", "p50_us")
        b = median(data, phase, "baseline", "p50_us")
        g = median(data, phase, "gateway", "p50_us")
        rows.append("| {} | {} | {} | {} | {} | {} |".format(
            label, fmt(d, " µs"), fmt(b, " µs"), fmt(g, " µs"),
            fmt(None if b is None or d is None else b - d, " µs"),
            fmt(None if g is None or d is None else g - d, " µs")))
    if ("sse", "direct") in data:
        d = median(data, "sse", "direct", "median_us")
        b = median(data, "sse", "baseline", "median_us")
        g = median(data, "sse", "gateway", "median_us")
        n = median(data, "sse", "direct", "n")
        rows.append("| time to first SSE event, fresh connection (median of {}) | {} | {} | {} | {} | {} |".format(
            fmt(n), fmt(d, " µs"), fmt(b, " µs"), fmt(g, " µs"),
            fmt(None if b is None or d is None else b - d, " µs"),
            fmt(None if g is None or d is None else g - d, " µs")))
    if rows:
        out += ["### What a user feels", "",
                "| | direct | baseline | gateway | added by baseline | added by gateway |",
                "|---|---:|---:|---:|---:|---:|"] + rows + [""]
    if ("probe", "gateway") in data:
        get = lambda key: median(data, "probe", "gateway", key)
        out += ["How long a new task waits (from its runtime write to the fake ClearML), over {} tasks ({} failed):".format(
                    fmt(get("n")), fmt(get("failed"))), "",
                "| until | median | max |", "|---|---:|---:|",
                "| `endpoint` written back | {} | {} |".format(fmt(get("endpoint_median_ms"), " ms"), fmt(get("endpoint_max_ms"), " ms")),
                "| the route answers 200 | {} | {} |".format(fmt(get("route_median_ms"), " ms"), fmt(get("route_max_ms"), " ms")),
                "| both | {} | {} |".format(fmt(get("both_median_ms"), " ms"), fmt(get("both_max_ms"), " ms")),
                ""]
    return out


def kib_parts(value):
    return [float(p) for p in value.split("+")] if value else []


def memory_table(data):
    if ("mem", "gateway") not in data:
        return []
    g = data[("mem", "gateway")]
    routes, conns = g["routes"][0], float(g["conns"][0])
    out = ["### Memory (VmRSS)", "",
           "| process | idle, {} routes | with {:.0f} idle keep-alive connections | per 1 000 connections | 2 s after they closed |".format(routes, conns),
           "|---|---:|---:|---:|---:|"]

    def row(label, idle, held, after):
        out.append("| {} | {} | {} | +{} | {} |".format(
            label, fmt(idle / 1024, " MiB", 1), fmt(held / 1024, " MiB", 1),
            fmt((held - idle) * 1000 / conns / 1024, " MiB", 1),
            fmt(None if after is None else after / 1024, " MiB", 1)))

    def parts(fields, key):
        return kib_parts(fields[key][0]) if key in fields else []

    gi, gh, ga = parts(g, "idle_kib"), parts(g, "held_kib"), parts(g, "after_kib")
    sampled = "idle_median_kib" in g and "held_median_kib" in g
    if sampled:
        # Sampled medians: the gateway's RSS moves with its polls.
        gi, gh = parts(g, "idle_median_kib"), parts(g, "held_median_kib")
    row("clearml-gateway", gi[0], gh[0], ga[0] if ga else None)
    if ("mem", "baseline") in data:
        b = data[("mem", "baseline")]
        bi, bh, ba = parts(b, "idle_kib"), parts(b, "held_kib"), parts(b, "after_kib")
        if len(bi) == 2 and len(bh) == 2:
            row("baseline nginx master", bi[0], bh[0], ba[0] if len(ba) == 2 else None)
            row("baseline nginx worker", bi[1], bh[1], ba[1] if len(ba) == 2 else None)
    out += ["", "(nginx's master and worker share pages copied on fork; their sum overstates.)", ""]
    if sampled:
        out += ["The gateway's VmRSS, sampled 25 times over 5 s: idle median {}, max {}; with the "
                "connections median {}, max {}. Peak since start (VmHWM): {}, which includes "
                "the first poll writing the endpoints of all {} tasks back; later polls rise to "
                "the max while their listing is parsed and planned.".format(
                    fmt(gi[0] / 1024, " MiB", 1), fmt(parts(g, "idle_max_kib")[0] / 1024, " MiB", 1),
                    fmt(gh[0] / 1024, " MiB", 1), fmt(parts(g, "held_max_kib")[0] / 1024, " MiB", 1),
                    fmt(parts(g, "hwm_kib")[0] / 1024, " MiB", 1) if "hwm_kib" in g else "—", routes), ""]
    return out


def start_table(records):
    rows = [(t, f) for p, t, name, f in records
            if p == "start" and name in ("baseline", "gateway", "baseline-mem", "gateway-mem")]
    if not rows:
        return []
    out = ["### Loading the routes", "",
           "From start to the first routed request answered (baseline: nginx parses the generated "
           "config, as at every reload; gateway: logs in to ClearML, lists the tasks, publishes the table).", "",
           "| process | routes | wall time | CPU time |", "|---|---:|---:|---:|"]
    for target, f in sorted(rows, key=lambda r: (int(r[1].get("routes", 0)), r[0])):
        out.append("| {} | {} | {} | {} |".format(
            target, fmt(num(f.get("routes"))), fmt(num(f.get("seconds")), " s", 2),
            "< 0.01 s" if num(f.get("cpu_s")) == 0 else fmt(num(f.get("cpu_s")), " s", 2)))
    out.append("")
    return out


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    data, records = load(sys.argv[1])
    meta = [l.rstrip("\n").partition("=") for l in open(sys.argv[2]) if "=" in l]
    info = {k: v for k, _, v in meta if k != "command"}
    commands = [v for k, _, v in meta if k == "command"]
    notes = [v for k, _, v in meta if k == "note"]
    out = ["## clearml-gateway against the nginx + Lua baseline", "",
           "- machine: {} cores, {}; load average {} before, {} after".format(
               info.get("nproc"), info.get("cpu"), info.get("load_before"), info.get("load_after")),
           "- versions: {}, libnginx-mod-http-lua {}, {}, wrk {}, {}, gateway at {}".format(
               info.get("nginx"), info.get("lua_module"), info.get("rustc"), info.get("wrk"),
               info.get("h2load"), info.get("gateway")),
           "- {}".format(info.get("pinning")),
           "- settings: {}".format(info.get("settings")),
           "- date: {}".format(info.get("date"))]
    out += ["- note: " + n for n in notes]
    if ("idle", "gateway") in data:
        out.append("- CPU when idle (no requests): baseline {} ms/s, gateway {} ms/s (its sync polling ClearML)".format(
            fmt(median(data, "idle", "baseline", "cpu_ms_per_s"), "", 1),
            fmt(median(data, "idle", "gateway", "cpu_ms_per_s"), "", 1)))
    out.append("")
    out += throughput_table(data, records, "wrk", "HTTP/1.1 (wrk), median of rounds", "direct to the backend (ceiling)")
    out += throughput_table(data, records, "h2", "Cleartext HTTP/2 (h2load, prior knowledge), median of rounds",
                            "direct to the backend, h2c (ceiling)")
    out += churn_table(data)
    out += user_table(data)
    out += memory_table(data)
    out += start_table(records)
    if commands:
        out += ["### Commands", ""] + ["- `{}`".format(c) for c in commands] + [""]
    print("\n".join(out))


if __name__ == "__main__":
    main()
