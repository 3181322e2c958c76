# Shared by benches/load/run.sh and benches/soak/run.sh, which source it after setting
# SCRIPT (named in errors) and before OUT is needed (named where logs are): messages,
# the processes a script started (stopped on exit), polling with a deadline, and the
# environment of a gateway in ClearML mode against fake-clearml.

fail() { echo "$SCRIPT: $*" >&2; exit 1; }
log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }

pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop() { # PID...: stops processes this script started
  local pid
  for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

wait_until() { # SECONDS WHAT COMMAND...: polls COMMAND every 0.1 s
  local limit=$1 what=$2 i
  shift 2
  for ((i = 0; i < limit * 10; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  fail "$what did not happen within ${limit}s (logs in $OUT)"
}

json_field() { # FILE KEY: a field of the first JSON line of FILE (fake-clearml's)
  python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())[sys.argv[2]])' "$1" "$2"
}

gateway_env() { # FAKE_URL PORT POLL_MS: sets gateway_env_args, `env -i` and the settings
  # every bench gives the gateway; callers add their own and the command.
  gateway_env_args=(env -i PATH="$PATH"
    CLEARML_API_HOST="$1"
    CLEARML_API_ACCESS_KEY=GATEWAY_ACCESS_KEY
    CLEARML_API_SECRET_KEY=gateway-secret-key
    ROUTER_URL="http://127.0.0.1:$2"
    ROUTER__WEBSERVER__SERVER_HOST=127.0.0.1
    ROUTER__WEBSERVER__SERVER_PORT="$2"
    ROUTER__SYNC__POLL_INTERVAL_MS="$3"
    LOGGER_LEVEL=info)
}
