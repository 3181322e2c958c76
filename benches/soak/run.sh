#!/usr/bin/env bash
# The soak: the release gateway in ClearML mode against the fake ClearML, under mixed traffic
# for DURATION seconds (10 minutes by default) while tasks start and stop, with its open
# descriptors and resident memory sampled. One command:
#
#   benches/soak/run.sh                   # builds what it needs, then about 12 minutes
#   DURATION=120 benches/soak/run.sh      # a shorter run
#
# What runs (all on 127.0.0.1):
# - the app (soak.py backend): HTTP keep-alive answering `ok`, server-sent events, WebSocket
#   echo; and a TCP echo service standing for the tasks' SSH servers;
# - fake-clearml (crates/testkit/src/bin/fake-clearml.rs): TASKS running tasks whose HTTP
#   endpoints point at the app, every TCP_EVERY-th also with a TCP endpoint (`ssh`) at the
#   echo service; once the load starts, CHURN_PER_SECOND tasks stop or start per second
#   (SIGUSR1; SIGUSR2 pauses it when the load ends), the first STABLE never;
# - target/release/clearml-gateway against it, with TCP sessions on TCP_PORTS ports;
# - soak.py drive: the traffic and the sampling (see its --help for the mix), then a quiet
#   QUIET seconds for idle connections and the upstream pool to be let go, one last sample,
#   and the report (also in OUT/summary.json, the samples in OUT/samples.csv).
# It exits 1 if descriptors grew or memory left 10 % around where it settled.
: "${DURATION:=600}"          # seconds of traffic
: "${SAMPLE:=5}"              # seconds between samples of /proc and /_gateway/metrics
: "${QUIET:=75}"              # seconds left alone after the traffic (idle timeouts are 60 s)
: "${TASKS:=200}"             # running tasks
: "${STABLE:=50}"             # of which the traffic goes to (and churn never touches)
: "${TCP_EVERY:=10}"          # every Nth task also has a TCP endpoint
: "${TCP_PORTS:=64}"          # TCP session ports the gateway may hand out
: "${CHURN_PER_SECOND:=2}"    # tasks stopped or started per second under load
: "${POLL_MS:=1000}"          # the gateway's ROUTER__SYNC__POLL_INTERVAL_MS
: "${GATEWAY_ENV:=}"          # more NAME=value settings for the gateway, space-separated
: "${SKIP_BUILD:=}"           # non-empty: use the binaries already built
: "${GATEWAY_BIN:=}"          # the gateway to soak [target/release/clearml-gateway]
: "${FAKE_BIN:=}"             # the fake ClearML [target/release/fake-clearml]
: "${OUT:=}"                  # directory for logs and results (a new temporary one)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
SCRIPT=benches/soak/run.sh
# shellcheck source=../lib.sh
. "$here/../lib.sh"

for n in DURATION SAMPLE QUIET TASKS STABLE TCP_EVERY TCP_PORTS CHURN_PER_SECOND POLL_MS; do
  case ${!n} in ''|*[!0-9]*) fail "$n=${!n}: expected a whole number";; esac
done
[ "$STABLE" -ge 1 ] && [ "$STABLE" -le "$TASKS" ] || fail "STABLE=$STABLE must be in 1..TASKS ($TASKS)"
# soak.py warms up for 30 s, takes the settled window over the next 30 s (or 10 % each) and
# the end window over the last 10 %: below two minutes the end window may hold no sample.
[ "$DURATION" -ge 120 ] || fail "DURATION=$DURATION: at least 120 s, to have a settled and an end window"
command -v python3 >/dev/null || fail "python3 is missing"

if [ -z "$SKIP_BUILD" ]; then
  log "building the gateway and fake-clearml (release)"
  (cd "$repo" && cargo build --quiet --release --bin clearml-gateway \
     && cargo build --quiet --release -p gateway-testkit --bin fake-clearml) || fail "the build failed"
fi
gateway_bin=${GATEWAY_BIN:-$repo/target/release/clearml-gateway}
fake_bin=${FAKE_BIN:-$repo/target/release/fake-clearml}
[ -x "$gateway_bin" ] && [ -x "$fake_bin" ] || fail "$gateway_bin or $fake_bin is missing"

if [ -z "$OUT" ]; then OUT=$(mktemp -d /tmp/gateway-soak.XXXXXX); fi
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true


free_ports() { # COUNT: COUNT free ports, the last TCP_PORTS of them consecutive
  python3 - "$1" "$TCP_PORTS" <<'PY'
import random, socket, sys
count, run = int(sys.argv[1]), int(sys.argv[2])
def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False
singles = []
for _ in range(count):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        singles.append(s.getsockname()[1])
for _ in range(200):
    first = random.randrange(20000, 32000 - run)
    if all(free(p) for p in range(first, first + run)):
        print(*singles, first)
        break
else:
    sys.exit("no %d consecutive free ports" % run)
PY
}

ready() {
  python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=2)' \
    "http://127.0.0.1:$gw_port/_gateway/ready"
}

read -r http_port tcp_port gw_port tcp_first < <(free_ports 3)
tcp_last=$((tcp_first + TCP_PORTS - 1))

python3 "$here/soak.py" backend "$http_port" "$tcp_port" 2>"$OUT/backend.log" &
pids+=($!)
"$fake_bin" --backend "127.0.0.1:$http_port" --tasks "$TASKS" --stable "$STABLE" \
  --tcp-backend "127.0.0.1:$tcp_port" --tcp-every "$TCP_EVERY" \
  --churn-per-second "$CHURN_PER_SECOND" --router-url "http://127.0.0.1:$gw_port" \
  >"$OUT/fake.json" 2>"$OUT/fake.log" &
fake_pid=$!
pids+=("$fake_pid")
wait_until 30 "fake-clearml printing its JSON line" grep -q '"url"' "$OUT/fake.json"
gateway_env "$(json_field "$OUT/fake.json" url)" "$gw_port" "$POLL_MS"
"${gateway_env_args[@]}" \
  TCP_ROUTER_ADDRESS=127.0.0.1 \
  TCP_PORT_START="$tcp_first" \
  TCP_PORT_END="$tcp_last" \
  $GATEWAY_ENV \
  "$gateway_bin" 2>"$OUT/gateway.log" &
gateway_pid=$!
pids+=("$gateway_pid")
wait_until 60 "the gateway becoming ready" ready
log "gateway pid $gateway_pid on :$gw_port, TCP sessions on $tcp_first-$tcp_last; $DURATION s of traffic, results in $OUT"

status=0
python3 "$here/soak.py" drive --fake-json "$OUT/fake.json" --gateway "127.0.0.1:$gw_port" \
  --pid "$gateway_pid" --duration "$DURATION" --sample "$SAMPLE" --quiet "$QUIET" \
  --on-load-start "kill -USR1 $fake_pid" --on-load-end "kill -USR2 $fake_pid" \
  --out "$OUT" | tee "$OUT/report.md" || status=$?
kill -0 "$gateway_pid" 2>/dev/null || fail "the gateway exited during the soak (log: $OUT/gateway.log)"

{
  echo
  echo "Gateway log: $(wc -l < "$OUT/gateway.log") lines; warnings and errors by message:"
  grep -E ' (WARN|ERROR) ' "$OUT/gateway.log" \
    | sed -E 's/^[^ ]+ +(WARN|ERROR) +([^:]+: )?//; s/ [a-z_]+=.*$//' \
    | sort | uniq -c | sort -rn | head -20 || true
  echo "fake-clearml: $(tail -1 "$OUT/fake.log" 2>/dev/null)"
} | tee -a "$OUT/report.md"
exit "$status"
