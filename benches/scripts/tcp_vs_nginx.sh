#!/usr/bin/env bash
# Runs benches/tcp_throughput.rs with nginx's stream proxy (Debian: nginx-light and
# libnginx-mod-stream) as a reference beside the session ports: nginx is started once the
# bench has written its task port.
set -eu
dir=$(mktemp -d)
port_file=$dir/task_port
listen=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
( while [ ! -s "$port_file" ]; do sleep 0.1; done
  task=$(cat "$port_file")
  cat > "$dir/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
stream { server { listen 127.0.0.1:$listen; proxy_pass 127.0.0.1:$task; proxy_half_close on; } }
CONF
  exec nginx -c "$dir/nginx.conf" -p "$dir/" ) &
nginx_pid=$!
TCP_BENCH_REFERENCE=127.0.0.1:$listen TCP_BENCH_TASK_PORT_FILE=$port_file cargo bench --bench tcp_throughput 2>&1 | grep -vE "Compiling|Finished|Running|Blocking"
kill "$nginx_pid" 2>/dev/null || true
pkill -f "$dir/nginx.conf" || true
