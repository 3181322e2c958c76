#!/usr/bin/env bash
# Side-by-side load comparison of clearml-gateway with an nginx + Lua baseline standing for
# the OpenResty gateway it replaces, and with the backend reached directly (the ceiling).
#
#   cargo build --release && benches/load/run.sh
#
# - a fake ClearML (crates/testkit/src/bin/fake-clearml.rs, built here) with ROUTES running
#   tasks whose endpoints all point at one backend; the first STABLE of them carry the load;
# - the backend: Debian's nginx answering "200 ok" on keep-alive connections;
# - the baseline: nginx + Lua, one worker, one generated location and keep-alive upstream
#   per task, the auth cookie checked in Lua against a lua_shared_dict (baseline.sh);
# - the gateway in ClearML mode against the fake, the same tasks, the same cookie.
# Each proxy is pinned to core PROXY_CORE with one worker; the load generator, the backend
# and the fake ClearML to core LOAD_CORE. Both proxies write an access log line per request.
#
# Phases (PHASES, all by default): wrk (HTTP/1.1), h2 (h2load, h2c prior knowledge), c1 (one
# connection), churn (routes changing under load), sse (time to first event), probe (how
# long a new task waits for its endpoint), mem (resident memory). Settings, from the
# environment, with their defaults (about 9 minutes in all):
: "${ROUNDS:=5}"               # rounds of each side-by-side measurement, alternating
: "${DURATION:=10}"            # seconds per wrk / h2load run ("10" or "10s")
: "${CONNECTIONS:=64}"         # wrk connections
: "${H2_CLIENTS:=16}"          # h2load connections ...
: "${H2_STREAMS:=4}"           # ... and streams in flight on each
: "${C1_DURATION:=5}"          # seconds per one-connection run
: "${ROUTES:=1000}"            # routed tasks
: "${STABLE:=100}"             # of which the load goes to (and churn never touches)
: "${POLL_MS:=1000}"           # the gateway's ROUTER__SYNC__POLL_INTERVAL_MS (all phases but probe)
: "${CHURN_PER_SECOND:=100}"   # route changes per second in the churn phase
: "${CHURN_DURATION:=20}"      # seconds of load in the churn phase
: "${SSE_SAMPLES:=300}"        # time-to-first-event samples per target
: "${PROBE_TASKS:=100}"        # new tasks timed from runtime write to endpoint and route
: "${PROBE_SPACING_MS:=250}"   # between two of them
: "${PROBE_POLL_MS:=2000}"     # the gateway's poll interval in the probe phase (its default)
: "${MEM_ROUTES:=10000}"       # routes for the memory figure
: "${MEM_CONNS:=1000}"         # idle keep-alive client connections for the memory figure
: "${PHASES:=wrk h2 c1 churn sse probe mem}"
: "${PROXY_CORE:=0}"
: "${LOAD_CORE:=1}"
: "${OUT:=}"                   # directory for logs and raw results (a new temporary one)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
DURATION=${DURATION%s}
C1_DURATION=${C1_DURATION%s}
CHURN_DURATION=${CHURN_DURATION%s}
COOKIE=clearml_token_basic

SCRIPT=benches/load/run.sh
# shellcheck source=../lib.sh
. "$here/../lib.sh"

# ---------------------------------------------------------------- tools and binaries
need() { command -v "$1" >/dev/null 2>&1 || fail "'$1' is missing: apt-get install $2"; }
need nginx nginx-light
need wrk wrk
need h2load nghttp2-client
need taskset util-linux
need python3 python3
need curl curl
need awk mawk
need getconf libc-bin
lua_module=/usr/lib/nginx/modules/ngx_http_lua_module.so
[ -e "$lua_module" ] || fail "$lua_module is missing: apt-get install libnginx-mod-http-lua"
[ -e /usr/lib/nginx/modules/ndk_http_module.so ] || fail "the NDK module is missing: apt-get install libnginx-mod-http-ndk"
[ "$(nproc)" -ge 2 ] || fail "needs 2 cores (the proxy on one, load on the other); this machine has $(nproc)"
for core in "$PROXY_CORE" "$LOAD_CORE"; do
  taskset -c "$core" true 2>/dev/null || fail "cannot pin to core $core (PROXY_CORE / LOAD_CORE)"
done
for n in ROUNDS DURATION CONNECTIONS H2_CLIENTS H2_STREAMS C1_DURATION ROUTES STABLE POLL_MS \
         CHURN_PER_SECOND CHURN_DURATION SSE_SAMPLES PROBE_TASKS PROBE_SPACING_MS PROBE_POLL_MS \
         MEM_ROUTES MEM_CONNS; do
  case ${!n} in ''|*[!0-9]*) fail "$n=${!n}: expected a whole number";; esac
done
[ "$STABLE" -ge 1 ] && [ "$STABLE" -le "$ROUTES" ] || fail "STABLE=$STABLE must be in 1..ROUTES ($ROUTES)"
[ "$STABLE" -le "$MEM_ROUTES" ] || fail "STABLE=$STABLE must not exceed MEM_ROUTES ($MEM_ROUTES)"
[ "$ROUNDS" -ge 1 ] || fail "ROUNDS must be at least 1"
for phase in $PHASES; do
  case " wrk h2 c1 churn sse probe mem " in *" $phase "*) ;; *) fail "PHASES: unknown phase '$phase' (wrk h2 c1 churn sse probe mem)";; esac
done

gateway_bin=$repo/target/release/clearml-gateway
[ -x "$gateway_bin" ] || fail "$gateway_bin is missing: run 'cargo build --release' first"
fake_bin=$repo/target/release/fake-clearml
if command -v cargo >/dev/null 2>&1; then
  log "building fake-clearml (cargo build --release -p gateway-testkit --bin fake-clearml)"
  (cd "$repo" && cargo build --quiet --release -p gateway-testkit --bin fake-clearml) \
    || fail "building fake-clearml failed"
fi
[ -x "$fake_bin" ] || fail "$fake_bin is missing: run 'cargo build --release -p gateway-testkit --bin fake-clearml'"

if [ -z "$OUT" ]; then OUT=$(mktemp -d /tmp/gateway-load.XXXXXX); fi
mkdir -p "$OUT"
results=$OUT/results.txt meta=$OUT/meta.txt
: > "$results"; : > "$meta"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ "$(ulimit -n)" -gt $((MEM_CONNS + 200)) ] \
  || fail "open-file limit $(ulimit -n) is too low for MEM_CONNS=$MEM_CONNS: raise 'ulimit -n'"
tck=$(getconf CLK_TCK)

# ---------------------------------------------------------------- processes
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

alive() { kill -0 "$1" 2>/dev/null || fail "$2 exited (logs in $OUT)"; }

json_list() { # FILE KEY: a list field of the first JSON line of FILE, one item a line
  python3 -c 'import json,sys; print("\n".join(json.loads(open(sys.argv[1]).readline())[sys.argv[2]]))' "$1" "$2"
}

start_backend() { # writes $OUT/backend.conf and starts it on LOAD_CORE
  backend_port=$(free_port) backend_h2c=$(free_port)
  cat > "$OUT/backend.conf" <<CONF
# The "task" every route leads to: a keep-alive app answering "200 ok".
worker_processes 1;
daemon off;
pid $OUT/backend.pid;
error_log $OUT/backend-error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$backend_port backlog=4096;
        listen 127.0.0.1:$backend_h2c http2 backlog=4096;
        location / { default_type text/plain; return 200 "ok\n"; }
    }
}
CONF
  taskset -c "$LOAD_CORE" nginx -c "$OUT/backend.conf" -p "$OUT/" 2>>"$OUT/backend-error.log" &
  backend_pid=$!
  pids+=("$backend_pid")
  wait_until 10 "the backend answering" curl -sf "http://127.0.0.1:$backend_port/"
}

start_fake() { # NAME ARGS...: starts fake-clearml on LOAD_CORE; sets fake_pid, fake_out
  local name=$1
  shift
  fake_out=$OUT/$name.json
  taskset -c "$LOAD_CORE" "$fake_bin" "$@" >"$fake_out" 2>"$OUT/$name.log" &
  fake_pid=$!
  pids+=("$fake_pid")
  wait_until 60 "$name printing its JSON line" grep -q '"url"' "$fake_out"
}

start_gateway() { # NAME PORT FAKE_URL POLL_MS: starts the gateway on PROXY_CORE; sets gateway_pid
  local name=$1 port=$2 url=$3 poll=$4
  gateway_env "$url" "$port" "$poll"
  "${gateway_env_args[@]}" AUTH_COOKIE_NAME="$COOKIE" ROUTER__RUNTIME__THREADS=1 \
    taskset -c "$PROXY_CORE" "$gateway_bin" 2>"$OUT/$name.log" &
  gateway_pid=$!
  pids+=("$gateway_pid")
}

gateway_routes() { # PORT: the number of routes /_gateway/ready reports (0 before ready)
  curl -s "http://127.0.0.1:$1/_gateway/ready" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin).get("routes", 0))' 2>/dev/null || echo 0
}

has_routes() { [ "$(gateway_routes "$1")" = "$2" ]; }

start_baseline() { # NAME LISTEN H2C BACKEND IDS_FILE: generates and starts nginx + Lua on PROXY_CORE
  local name=$1 listen=$2 h2c=$3 backend=$4 ids=$5
  local dir=$OUT/$name
  mkdir -p "$dir"
  "$here/baseline.sh" "$dir" "$listen" "$h2c" "$backend" "$COOKIE" "$token" "$ids"
  local t0
  t0=$(now)
  taskset -c "$PROXY_CORE" nginx -c "$dir/baseline.conf" -p "$dir/" 2>>"$dir/baseline-error.log" &
  baseline_pid=$!
  pids+=("$baseline_pid")
  # One upstream per task makes nginx's start (and every reload) grow with the square of
  # the routes: 10 000 take tens of seconds of CPU.
  wait_until 600 "$name answering" curl -sf -o /dev/null "http://127.0.0.1:$listen/service/$(head -1 "$ids")/" \
    -H "Cookie: $COOKIE=$token"
  record "start baseline $name routes=$(wc -l < "$ids") seconds=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }') cpu_s=$(awk -v t="$(cpu_ticks "$baseline_pid")" -v k="$tck" 'BEGIN { printf "%.2f", t / k }')"
}

gateway_started() { # NAME ROUTES T0: records how long the gateway took to serve ROUTES routes
  record "start gateway $1 routes=$2 seconds=$(awk -v a="$3" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }') cpu_s=$(awk -v t="$(cpu_ticks "$gateway_pid")" -v k="$tck" 'BEGIN { printf "%.2f", t / k }')"
}

# ---------------------------------------------------------------- measuring
cpu_ticks() { # PID: CPU ticks (user + system) of PID, its reaped children and its live ones
  local pid=$1 total child
  total=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$pid/stat")
  for child in $(cat /proc/"$pid"/task/*/children 2>/dev/null); do
    total=$((total + $(awk '{ print $14 + $15 }' "/proc/$child/stat" 2>/dev/null || echo 0)))
  done
  echo "$total"
}

now() { date +%s.%N; }

record() { echo "$*" >> "$results"; }

command_seen=" "
note_command() { # KEY COMMAND: records a command line for the report, once per KEY
  case $command_seen in *" $1 "*) return;; esac
  command_seen="$command_seen$1 "
  echo "command=$2" >> "$meta"
}

run_wrk() { # PHASE TARGET ROUND BASE_URL PID|- CONNS SECONDS
  local phase=$1 target=$2 round=$3 url=$4 pid=$5 conns=$6 secs=$7
  local file=$OUT/$phase-$target-$round.wrk before=0 after=0 t0 t1
  [ "$pid" = - ] || before=$(cpu_ticks "$pid")
  t0=$(now)
  LOAD_PATHS=$OUT/paths.txt LOAD_COOKIE="$COOKIE=$token" \
    taskset -c "$LOAD_CORE" wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$here/spread.lua" "$url" >"$file" 2>&1 \
    || fail "wrk failed: $(tail -3 "$file")"
  t1=$(now)
  [ "$pid" = - ] || after=$(cpu_ticks "$pid")
  note_command "wrk-$conns" "LOAD_PATHS=paths.txt LOAD_COOKIE='$COOKIE=<token>' taskset -c $LOAD_CORE wrk -t1 -c$conns -d${secs}s --latency -s benches/load/spread.lua http://127.0.0.1:PORT"
  local line
  line=$(grep '^RESULT ' "$file") || fail "wrk printed no RESULT line: $(tail -3 "$file")"
  line=$(awk -v line="$line" -v cpu=$((after - before)) -v tck="$tck" -v t0="$t0" -v t1="$t1" -v pid="$pid" 'BEGIN {
    n = split(line, kv, " ")
    for (i = 2; i <= n; i++) { split(kv[i], p, "="); v[p[1]] = p[2] }
    sock = v["connect"] + v["read"] + v["write"] + v["timeout"]
    printf "rps=%.1f p50_us=%d p99_us=%d non2xx=%d sockerr=%d errors=%d requests=%d",
      v["requests"] / (v["duration_us"] / 1e6), v["p50_us"], v["p99_us"], v["status"], sock,
      v["status"] + sock, v["requests"]
    if (pid != "-" && v["requests"] > 0)
      printf " cpu_us=%.2f busy=%.1f", cpu / tck * 1e6 / v["requests"], cpu / tck / (t1 - t0) * 100
  }')
  record "$phase $target $round $line"
  log "  $phase $target round $round: $line"
}

run_h2load() { # PHASE TARGET ROUND BASE_URL PID|-
  local phase=$1 target=$2 round=$3 base=$4 pid=$5
  local file=$OUT/$phase-$target-$round.h2load reqlog=$OUT/$phase-$target-$round.h2log before=0 after=0 t0 t1
  sed "s|^|$base|" "$OUT/paths.txt" > "$OUT/h2-urls.txt"
  [ "$pid" = - ] || before=$(cpu_ticks "$pid")
  t0=$(now)
  taskset -c "$LOAD_CORE" h2load -t1 -c"$H2_CLIENTS" -m"$H2_STREAMS" -D"$DURATION" \
    -H "cookie: $COOKIE=$token" -i "$OUT/h2-urls.txt" --log-file="$reqlog" >"$file" 2>&1 \
    || fail "h2load failed: $(tail -3 "$file")"
  t1=$(now)
  [ "$pid" = - ] || after=$(cpu_ticks "$pid")
  note_command h2load "taskset -c $LOAD_CORE h2load -t1 -c$H2_CLIENTS -m$H2_STREAMS -D$DURATION -H 'cookie: $COOKIE=<token>' -i urls.txt --log-file=requests.log"
  local line
  line=$(python3 - "$file" "$reqlog" "$((after - before))" "$tck" "$t0" "$t1" "$pid" <<'PY'
import re, sys
out, reqlog, cpu, tck, t0, t1, pid = sys.argv[1:]
text = open(out).read()
m = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", text)
r = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout", text)
s = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
if not (m and r and s):
    sys.exit("h2load output not understood: " + text[-300:])
done, errored, timeout = int(r.group(3)), int(r.group(6)), int(r.group(7))
non2xx = int(s.group(2)) + int(s.group(3)) + int(s.group(4))
lat = sorted(int(l.split("\t")[2]) for l in open(reqlog) if l.count("\t") >= 2)
pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0
line = "rps=%s p50_us=%d p99_us=%d non2xx=%d sockerr=%d errors=%d requests=%d" % (
    m.group(3), pct(0.5), pct(0.99), non2xx, errored + timeout, non2xx + errored + timeout, done)
if pid != "-" and done:
    cpu = int(cpu) / int(tck)
    line += " cpu_us=%.2f busy=%.1f" % (cpu * 1e6 / done, cpu / (float(t1) - float(t0)) * 100)
print(line)
PY
) || fail "reading h2load's results failed"
  rm -f "$reqlog"
  record "$phase $target $round $line"
  log "  $phase $target round $round: $line"
}

route_changes() { # LOG: route changes the gateway logged (20 of each kind in detail per
  # table swap, gateway_sync::run::log_changes, then one "route table replaced" line with the counts)
  awk '/ route (live|removed) / { n++ }
       / route table replaced / {
         a = r = 0
         for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == "added") a = kv[2]; if (kv[1] == "removed") r = kv[2] }
         n += a + r - (a < 20 ? a : 20) - (r < 20 ? r : 20)
       }
       END { print n + 0 }' "$1"
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

rss_sampled() { # PID PREFIX: VmRSS 25 times over 5 s, as "PREFIXmedian_kib=M PREFIXmax_kib=X"
  local i
  for ((i = 0; i < 25; i++)); do rss_kib "$1"; sleep 0.2; done \
    | sort -n | awk '{ v[NR] = $1 } END { printf "%smedian_kib=%d %smax_kib=%d\n", p, v[int((NR + 1) / 2)], p, v[NR] }' p="$2"
}

phase_on() { case " $PHASES " in *" $1 "*) return 0;; *) return 1;; esac; }

# ---------------------------------------------------------------- the machine
{
  echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "nproc=$(nproc)"
  echo "cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "load_before=$(cut -d' ' -f1-3 /proc/loadavg)"
  echo "nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')"
  echo "lua_module=$(dpkg-query -W -f '${Version}' libnginx-mod-http-lua 2>/dev/null || echo unknown)"
  echo "rustc=$(rustc -V 2>/dev/null || echo unknown)"
  echo "wrk=$(wrk -v 2>&1 | head -1 | awk '{ print $1, $2 }')"
  echo "h2load=$(h2load --version 2>&1 | head -1)"
  echo "python=$(python3 -V 2>&1)"
  echo "gateway=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$repo" diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "settings=ROUNDS=$ROUNDS DURATION=${DURATION}s CONNECTIONS=$CONNECTIONS H2_CLIENTS=$H2_CLIENTS H2_STREAMS=$H2_STREAMS C1_DURATION=${C1_DURATION}s ROUTES=$ROUTES STABLE=$STABLE POLL_MS=$POLL_MS CHURN_PER_SECOND=$CHURN_PER_SECOND CHURN_DURATION=${CHURN_DURATION}s SSE_SAMPLES=$SSE_SAMPLES PROBE_TASKS=$PROBE_TASKS PROBE_SPACING_MS=$PROBE_SPACING_MS PROBE_POLL_MS=$PROBE_POLL_MS MEM_ROUTES=$MEM_ROUTES MEM_CONNS=$MEM_CONNS"
  echo "pinning=proxies on core $PROXY_CORE; load generator, backend, fake ClearML on core $LOAD_CORE"
  echo "note=the gateway's CPU includes its ClearML sync (polling every ${POLL_MS} ms); the baseline's router (generating config, nginx -s reload) is another process, on the load core, not counted — only the nginx master's re-reading of the config and the new workers are"
  echo "note=the baseline speaks h2c (prior knowledge) on a listener of its own: nginx 1.22 cannot serve HTTP/1.1 and cleartext HTTP/2 on one port; the gateway serves both on one"
  echo "note=the gateway does more per request than the baseline: it also sets X-Real-IP, X-Forwarded-Host, X-Forwarded-Prefix and X-ClearML-User and strips the auth cookie before forwarding"
} >> "$meta"
log "results and logs in $OUT"

start_backend
log "backend on 127.0.0.1:$backend_port (h2c $backend_h2c), core $LOAD_CORE"

# ---------------------------------------------------------------- main instances
if phase_on wrk || phase_on h2 || phase_on c1 || phase_on churn; then
  gw_port=$(free_port) base_port=$(free_port) base_h2c=$(free_port)
  start_fake fake-main --tasks "$ROUTES" --stable "$STABLE" --backend "127.0.0.1:$backend_port" \
    --router-url "http://127.0.0.1:$gw_port" --churn-per-second "$CHURN_PER_SECOND"
  main_fake_pid=$fake_pid
  token=$(json_field "$fake_out" token)
  json_list "$fake_out" tasks > "$OUT/ids.txt"
  json_list "$fake_out" stable > "$OUT/stable.txt"
  sed 's|.*|/service/&/|' "$OUT/stable.txt" > "$OUT/paths.txt"
  note_command fake "fake-clearml --tasks $ROUTES --stable $STABLE --backend 127.0.0.1:PORT --router-url http://127.0.0.1:GATEWAY_PORT --churn-per-second $CHURN_PER_SECOND"

  start_baseline baseline "$base_port" "$base_h2c" "127.0.0.1:$backend_port" "$OUT/ids.txt"
  main_baseline_pid=$baseline_pid
  note_command baseline "benches/load/baseline.sh DIR PORT H2C_PORT 127.0.0.1:BACKEND_PORT $COOKIE <token> ids.txt; taskset -c $PROXY_CORE nginx -c DIR/baseline.conf -p DIR/"
  t0=$(now)
  start_gateway gateway "$gw_port" "$(json_field "$fake_out" url)" "$POLL_MS"
  main_gateway_pid=$gateway_pid
  note_command gateway "env CLEARML_API_HOST=<fake> ... AUTH_COOKIE_NAME=$COOKIE ROUTER__RUNTIME__THREADS=1 ROUTER__SYNC__POLL_INTERVAL_MS=$POLL_MS LOGGER_LEVEL=info taskset -c $PROXY_CORE target/release/clearml-gateway 2>gateway.log"
  wait_until 120 "the gateway serving $ROUTES routes" has_routes "$gw_port" "$ROUTES"
  gateway_started gateway "$ROUTES" "$t0"
  log "baseline on :$base_port (h2c :$base_h2c), gateway on :$gw_port, $ROUTES routes each, core $PROXY_CORE"

  # Both answer a routed request with the token, and refuse it without.
  first=$(head -1 "$OUT/paths.txt")
  for port in "$base_port" "$gw_port"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $COOKIE=$token" "http://127.0.0.1:$port$first")
    [ "$code" = 200 ] || fail "127.0.0.1:$port$first answered $code with the token, not 200"
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port$first")
    [ "$code" = 401 ] || fail "127.0.0.1:$port$first answered $code without a token, not 401"
  done
  grep -q 'ignoring an environment variable.*ROUTER__RUNTIME__THREADS' "$OUT/gateway.log" \
    && echo "note=this gateway build does not know ROUTER__RUNTIME__THREADS yet (ignored; taskset gives it one core, so one runtime worker)" >> "$meta"

  # What each proxy costs when nothing is asked of it (the gateway polls its ClearML).
  b0=$(cpu_ticks "$main_baseline_pid") g0=$(cpu_ticks "$main_gateway_pid")
  sleep 5
  b1=$(cpu_ticks "$main_baseline_pid") g1=$(cpu_ticks "$main_gateway_pid")
  record "idle baseline 1 cpu_ms_per_s=$(awk -v t=$((b1 - b0)) -v k="$tck" 'BEGIN { printf "%.1f", t / k * 1000 / 5 }')"
  record "idle gateway 1 cpu_ms_per_s=$(awk -v t=$((g1 - g0)) -v k="$tck" 'BEGIN { printf "%.1f", t / k * 1000 / 5 }')"

  log "warm-up: 2 s of wrk each"
  for url in "http://127.0.0.1:$backend_port" "http://127.0.0.1:$base_port" "http://127.0.0.1:$gw_port"; do
    LOAD_PATHS=$OUT/paths.txt LOAD_COOKIE="$COOKIE=$token" taskset -c "$LOAD_CORE" \
      wrk -t1 -c"$CONNECTIONS" -d2s -s "$here/spread.lua" "$url" >/dev/null 2>&1 || true
  done
fi

pair() { # ROUND COMMAND...: runs COMMAND for baseline and gateway, in turn (order alternates)
  local round=$1
  shift
  if [ $((round % 2)) = 1 ]; then
    "$@" baseline "$round" "http://127.0.0.1:$base_port" "$main_baseline_pid"
    "$@" gateway "$round" "http://127.0.0.1:$gw_port" "$main_gateway_pid"
  else
    "$@" gateway "$round" "http://127.0.0.1:$gw_port" "$main_gateway_pid"
    "$@" baseline "$round" "http://127.0.0.1:$base_port" "$main_baseline_pid"
  fi
}

wrk_c() { local target=$1 round=$2 url=$3 pid=$4; run_wrk wrk "$target" "$round" "$url" "$pid" "$CONNECTIONS" "$DURATION"; }
wrk_1() { local target=$1 round=$2 url=$3 pid=$4; run_wrk "$c1_phase" "$target" "$round" "$url" "$pid" 1 "$C1_DURATION"; }

if phase_on wrk; then
  log "HTTP/1.1: wrk -c$CONNECTIONS, ${DURATION}s, $ROUNDS rounds"
  for ((round = 1; round <= ROUNDS; round++)); do
    run_wrk wrk direct "$round" "http://127.0.0.1:$backend_port" - "$CONNECTIONS" "$DURATION"
    pair "$round" wrk_c
  done
fi

if phase_on h2; then
  log "h2c: h2load -c$H2_CLIENTS -m$H2_STREAMS, ${DURATION}s, $ROUNDS rounds (the baseline on its own h2c port)"
  h2_baseline() { local target=$1 round=$2 pid=$4; run_h2load h2 "$target" "$round" "http://127.0.0.1:$base_h2c" "$pid"; }
  h2_gateway() { local target=$1 round=$2 url=$3 pid=$4; run_h2load h2 "$target" "$round" "$url" "$pid"; }
  h2_pair() { if [ "$1" = baseline ]; then h2_baseline "$@"; else h2_gateway "$@"; fi; }
  for ((round = 1; round <= ROUNDS; round++)); do
    run_h2load h2 direct "$round" "http://127.0.0.1:$backend_h2c" -
    pair "$round" h2_pair
  done
fi

repin() { # CORE: moves both proxies (every thread, nginx's worker too) to CORE
  local pid
  for pid in "$main_gateway_pid" "$main_baseline_pid" $(cat /proc/"$main_baseline_pid"/task/*/children); do
    taskset -a -p -c "$1" "$pid" >/dev/null
  done
}

c1_rounds() { # PHASE: ROUNDS one-connection runs, direct and through each proxy
  c1_phase=$1
  for ((round = 1; round <= ROUNDS; round++)); do
    run_wrk "$c1_phase" direct "$round" "http://127.0.0.1:$backend_port" - 1 "$C1_DURATION"
    pair "$round" wrk_1
  done
}

if phase_on c1; then
  log "one connection: wrk -c1, ${C1_DURATION}s, $ROUNDS rounds"
  c1_rounds c1
  # On its own core, an idle proxy is woken across cores twice a request (by the client,
  # then by the backend); on a VM each wake-up costs tens of µs, for nginx as for the
  # gateway. With the proxies moved beside the client and backend, what remains is the
  # proxy's own work and its extra hop.
  log "one connection, the proxies moved to core $LOAD_CORE beside client and backend"
  repin "$LOAD_CORE"
  c1_rounds c1same
  repin "$PROXY_CORE"
fi

if phase_on churn; then
  log "route churn: $CHURN_PER_SECOND route changes per second under wrk -c$CONNECTIONS, ${CHURN_DURATION}s"
  # The gateway: the fake ClearML stops and starts tasks; the gateway's polls pick it up.
  kill -USR1 "$main_fake_pid"
  sleep 1
  changes_before=$(route_changes "$OUT/gateway.log")
  run_wrk churn gateway 1 "http://127.0.0.1:$gw_port" "$main_gateway_pid" "$CONNECTIONS" "$CHURN_DURATION"
  kill -USR2 "$main_fake_pid"
  changes_after=$(route_changes "$OUT/gateway.log")
  sed -i "\$s/\$/ changes=$((changes_after - changes_before))/" "$results"
  alive "$main_gateway_pid" "the gateway"

  # The baseline: what its router does, the config regenerated and nginx reloaded once a
  # second with that second's changes (on the load core: the router is another container).
  baseline_churn() {
    local n=$((1 << 40)) stops=$((CHURN_PER_SECOND / 2)) starts=$((CHURN_PER_SECOND - CHURN_PER_SECOND / 2))
    local dir=$OUT/baseline next i
    tail -n +"$((STABLE + 1))" "$OUT/ids.txt" > "$dir/churn-ids"
    next=$(date +%s)
    while :; do
      next=$((next + 1))
      sleep "$(awk -v n="$next" -v t="$(now)" 'BEGIN { d = n - t; print (d > 0 ? d : 0) }')"
      { tail -n +"$((stops + 1))" "$dir/churn-ids"
        for ((i = 0; i < starts; i++)); do printf 'be9c4a11%024x\n' $((n++)); done; } > "$dir/churn-ids.new"
      mv "$dir/churn-ids.new" "$dir/churn-ids"
      cat "$OUT/stable.txt" "$dir/churn-ids" > "$dir/ids-now"
      "$here/baseline.sh" "$dir" "$base_port" "$base_h2c" "127.0.0.1:$backend_port" "$COOKIE" "$token" "$dir/ids-now"
      nginx -c "$dir/baseline.conf" -p "$dir/" -s reload 2>>"$dir/reload.log"
      echo reload >> "$dir/reloads"
    done
  }
  : > "$OUT/baseline/reloads"
  ( taskset -p -c "$LOAD_CORE" "$BASHPID" >/dev/null; baseline_churn ) &
  churn_pid=$!
  pids+=("$churn_pid")
  sleep 1.5
  reloads_before=$(wc -l < "$OUT/baseline/reloads")
  run_wrk churn baseline 1 "http://127.0.0.1:$base_port" "$main_baseline_pid" "$CONNECTIONS" "$CHURN_DURATION"
  reloads_after=$(wc -l < "$OUT/baseline/reloads")
  stop "$churn_pid"
  sed -i "\$s/\$/ changes=$(((reloads_after - reloads_before) * CHURN_PER_SECOND)) reloads=$((reloads_after - reloads_before))/" "$results"
  alive "$main_baseline_pid" "the baseline"
  note_command churn "gateway: kill -USR1 <fake-clearml> (it stops/starts tasks, $CHURN_PER_SECOND changes/s), then wrk; baseline: once a second baseline.sh with that second's ids + nginx -s reload, then wrk"
fi

if [ -n "${main_gateway_pid:-}" ]; then
  stop "$main_gateway_pid" "$main_baseline_pid" "$main_fake_pid"
fi

# ---------------------------------------------------------------- what a user feels
if phase_on sse; then
  log "time to the first server-sent event: $SSE_SAMPLES samples per target"
  sse_port=$(free_port) gw_sse=$(free_port) base_sse=$(free_port)
  taskset -c "$LOAD_CORE" python3 "$here/sse.py" serve "$sse_port" 2>"$OUT/sse.log" &
  sse_pid=$!
  pids+=("$sse_pid")
  wait_until 10 "the SSE app listening" python3 -c "import socket; socket.create_connection(('127.0.0.1', $sse_port))"
  start_fake fake-sse --tasks 1 --backend "127.0.0.1:$sse_port" --router-url "http://127.0.0.1:$gw_sse"
  sse_fake_pid=$fake_pid
  token=$(json_field "$fake_out" token)
  json_list "$fake_out" tasks > "$OUT/sse-ids.txt"
  sse_id=$(head -1 "$OUT/sse-ids.txt")
  start_gateway gateway-sse "$gw_sse" "$(json_field "$fake_out" url)" "$POLL_MS"
  sse_gateway_pid=$gateway_pid
  wait_until 60 "the SSE gateway ready" has_routes "$gw_sse" 1
  start_baseline baseline-sse "$base_sse" 0 "127.0.0.1:$sse_port" "$OUT/sse-ids.txt"
  sse_baseline_pid=$baseline_pid
  LOAD_COOKIE="$COOKIE=$token" taskset -c "$LOAD_CORE" python3 "$here/sse.py" measure "$SSE_SAMPLES" \
    direct="http://127.0.0.1:$sse_port/" baseline="http://127.0.0.1:$base_sse/service/$sse_id/" \
    gateway="http://127.0.0.1:$gw_sse/service/$sse_id/" > "$OUT/sse.txt" || fail "measuring SSE failed"
  while read -r target rest; do record "sse $target 1 $rest"; log "  sse $target: $rest"; done < "$OUT/sse.txt"
  note_command sse "LOAD_COOKIE=... taskset -c $LOAD_CORE python3 benches/load/sse.py measure $SSE_SAMPLES direct=URL baseline=URL gateway=URL"
  stop "$sse_gateway_pid" "$sse_baseline_pid" "$sse_fake_pid" "$sse_pid"
fi

if phase_on probe; then
  log "endpoint wait: $PROBE_TASKS new tasks, ${PROBE_SPACING_MS} ms apart, gateway polling every $PROBE_POLL_MS ms"
  gw_probe=$(free_port)
  start_fake fake-probe --tasks "$STABLE" --backend "127.0.0.1:$backend_port" \
    --router-url "http://127.0.0.1:$gw_probe" --probe "$PROBE_TASKS" \
    --probe-gateway "127.0.0.1:$gw_probe" --probe-spacing-ms "$PROBE_SPACING_MS" --cookie-name "$COOKIE"
  probe_fake_pid=$fake_pid
  start_gateway gateway-probe "$gw_probe" "$(json_field "$fake_out" url)" "$PROBE_POLL_MS"
  probe_gateway_pid=$gateway_pid
  note_command probe "fake-clearml --tasks $STABLE --backend 127.0.0.1:PORT --router-url URL --probe $PROBE_TASKS --probe-gateway 127.0.0.1:PORT --probe-spacing-ms $PROBE_SPACING_MS (gateway with ROUTER__SYNC__POLL_INTERVAL_MS=$PROBE_POLL_MS)"
  wait_until $((PROBE_TASKS * PROBE_SPACING_MS / 1000 + 120)) "the probe finishing" grep -q '"probe"' "$fake_out"
  line=$(python3 - "$fake_out" <<'PY'
import json, sys
probe = [json.loads(l) for l in open(sys.argv[1]) if '"probe"' in l][0]["probe"]
if "error" in probe:
    sys.exit("probe failed: " + probe["error"])
out = []
for key, name in (("endpoint_written_ms", "endpoint"), ("route_answers_ms", "route"), ("both_ms", "both")):
    s = probe[key] or {}
    out.append("%s_median_ms=%s %s_max_ms=%s" % (name, s.get("median"), name, s.get("max")))
print(" ".join(out) + " n=%d failed=%d" % (probe["tasks"], probe["failed"]))
PY
) || fail "the probe failed: see $fake_out and $OUT/fake-probe.log"
  record "probe gateway 1 $line"
  log "  probe: $line"
  stop "$probe_gateway_pid" "$probe_fake_pid"
fi

# ---------------------------------------------------------------- memory
if phase_on mem; then
  log "memory: $MEM_ROUTES routes idle, then $MEM_CONNS idle keep-alive connections"
  gw_mem=$(free_port) base_mem=$(free_port)
  start_fake fake-mem --tasks "$MEM_ROUTES" --stable "$STABLE" --backend "127.0.0.1:$backend_port" \
    --router-url "http://127.0.0.1:$gw_mem"
  mem_fake_pid=$fake_pid
  token=$(json_field "$fake_out" token)
  json_list "$fake_out" tasks > "$OUT/mem-ids.txt"
  mem_path=/service/$(head -1 "$OUT/mem-ids.txt")/
  t0=$(now)
  start_gateway gateway-mem "$gw_mem" "$(json_field "$fake_out" url)" "$POLL_MS"
  mem_gateway_pid=$gateway_pid
  wait_until 300 "the gateway serving $MEM_ROUTES routes" has_routes "$gw_mem" "$MEM_ROUTES"
  gateway_started gateway-mem "$MEM_ROUTES" "$t0"
  start_baseline baseline-mem "$base_mem" 0 "127.0.0.1:$backend_port" "$OUT/mem-ids.txt"
  mem_baseline_pid=$baseline_pid
  mem_worker=$(cat /proc/"$mem_baseline_pid"/task/*/children | awk '{ print $1 }')
  sleep 5
  measure_mem() { # TARGET PORT PID [WORKER]: sets mem_idle, mem_held, mem_after (KiB)
    local target=$1 port=$2 pid=$3 worker=${4:-} conns
    mem_idle=$(rss_kib "$pid")
    [ -z "$worker" ] || mem_idle="$mem_idle+$(rss_kib "$worker")"
    # The gateway's RSS rises while it parses a poll's listing and falls after: sampled.
    rss_sampled "$pid" idle_ > "$OUT/rss-idle-$target.txt"
    LOAD_COOKIE="$COOKIE=$token" taskset -c "$LOAD_CORE" python3 "$here/idle_conns.py" \
      "127.0.0.1:$port" "$mem_path" "$MEM_CONNS" > "$OUT/idle-$target.txt" 2>&1 &
    conns=$!
    pids+=("$conns")
    wait_until 120 "$MEM_CONNS connections open to the $target" grep -q '^open' "$OUT/idle-$target.txt"
    sleep 2
    mem_held=$(rss_kib "$pid")
    [ -z "$worker" ] || mem_held="$mem_held+$(rss_kib "$worker")"
    rss_sampled "$pid" held_ > "$OUT/rss-held-$target.txt"
    stop "$conns"
    sleep 2
    mem_after=$(rss_kib "$pid")
    [ -z "$worker" ] || mem_after="$mem_after+$(rss_kib "$worker")"
  }
  measure_mem gateway "$gw_mem" "$mem_gateway_pid"
  g_idle=$mem_idle g_held=$mem_held g_after=$mem_after
  measure_mem baseline "$base_mem" "$mem_baseline_pid" "$mem_worker"
  b_idle=$mem_idle b_held=$mem_held b_after=$mem_after
  record "mem gateway 1 idle_kib=$g_idle held_kib=$g_held after_kib=$g_after routes=$MEM_ROUTES conns=$MEM_CONNS $(cat "$OUT/rss-idle-gateway.txt" "$OUT/rss-held-gateway.txt" | tr '\n' ' ') hwm_kib=$(awk '/^VmHWM:/ { print $2 }' "/proc/$mem_gateway_pid/status")"
  record "mem baseline 1 idle_kib=$b_idle held_kib=$b_held after_kib=$b_after routes=$MEM_ROUTES conns=$MEM_CONNS"
  log "  gateway VmRSS: idle $g_idle KiB, with $MEM_CONNS connections $g_held KiB"
  log "  baseline VmRSS (master+worker): idle $b_idle KiB, with $MEM_CONNS connections $b_held KiB"
  note_command mem "VmRSS from /proc/PID/status after 5 s idle; then taskset -c $LOAD_CORE python3 benches/load/idle_conns.py 127.0.0.1:PORT /service/<id>/ $MEM_CONNS, VmRSS again 2 s after they are open"
  stop "$mem_gateway_pid" "$mem_baseline_pid" "$mem_fake_pid"
fi

echo "load_after=$(cut -d' ' -f1-3 /proc/loadavg)" >> "$meta"
python3 "$here/report.py" "$results" "$meta" | tee "$OUT/report.md"
log "raw results: $results; logs: $OUT"
