#!/usr/bin/env bash
# The gateway against outside peers, with wrk on loopback.
#
# An nginx serves a static chat completion (the upstream). wrk then sends the
# same POST /v1/chat/completions three ways, in one run:
#   direct   straight to the upstream
#   nginx    through nginx as a reverse proxy (keep-alive to the upstream)
#   gateway  through the tower-llm gateway (release build, one target)
# at 1 connection (latency: p50 added over direct) and at 64 connections
# (throughput, as a share of nginx-as-proxy's).
#
# It installs nothing. Needs `wrk` and `nginx` on PATH (Debian: `apt-get
# install wrk nginx-light`) and cargo. Everything listens on 127.0.0.1 and
# stops when the script ends. Usage:
#   crates/tower-llm-gateway/benches/wrk/run.sh [seconds per cell, default 5]
# Ports: WRK_UPSTREAM_PORT (18081), WRK_PROXY_PORT (18082),
# WRK_GATEWAY_PORT (18083). WRK_GATEWAY_BIN: a gateway binary to run instead
# of building this checkout's.
set -euo pipefail
# From the workspace root (where `target/` is).
cd "$(dirname "$0")/../../../.."

duration="${1:-5}"
missing=()
for tool in wrk nginx cargo curl; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "missing: ${missing[*]} (Debian: apt-get install wrk nginx-light curl)" >&2
  exit 1
fi

upstream_port="${WRK_UPSTREAM_PORT:-18081}"
proxy_port="${WRK_PROXY_PORT:-18082}"
gateway_port="${WRK_GATEWAY_PORT:-18083}"
work="$(mktemp -d)"
nginx_pid=""
gateway_pid=""
cleanup() {
  [ -n "$gateway_pid" ] && kill "$gateway_pid" 2>/dev/null || true
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

completion='{"id":"chatcmpl-wrk","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the static upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":6,"total_tokens":11}}'

cat >"$work/nginx.conf" <<EOF
worker_processes auto;
pid $work/nginx.pid;
error_log $work/error.log warn;
daemon off;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/body;
  proxy_temp_path $work/proxy;
  fastcgi_temp_path $work/fastcgi;
  uwsgi_temp_path $work/uwsgi;
  scgi_temp_path $work/scgi;
  keepalive_requests 1000000;
  upstream static_completion {
    server 127.0.0.1:$upstream_port;
    keepalive 128;
  }
  server {
    listen 127.0.0.1:$upstream_port;
    location / {
      default_type application/json;
      return 200 '$completion';
    }
  }
  server {
    listen 127.0.0.1:$proxy_port;
    location / {
      proxy_pass http://static_completion;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
EOF

cat >"$work/gateway.toml" <<EOF
preset = "sdk_default"

[gateway]
listen = "127.0.0.1:$gateway_port"
max_concurrency = 4096

[[targets]]
name = "static"
base_url = "http://127.0.0.1:$upstream_port/v1"
provider = "openai-compatible"
EOF

cat >"$work/post.lua" <<'EOF'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}],"max_tokens":16}'
EOF

# WRK_GATEWAY_BIN runs another build of the gateway (an earlier commit's,
# to compare); by default this checkout's, built here.
gateway_bin="${WRK_GATEWAY_BIN:-}"
if [ -z "$gateway_bin" ]; then
  echo "building the gateway (release)..." >&2
  cargo build --release -p tower-llm-gateway --bin tower-llm-gateway -q
  gateway_bin="${CARGO_TARGET_DIR:-target}/release/tower-llm-gateway"
fi

nginx -c "$work/nginx.conf" -p "$work" &
nginx_pid=$!
RUST_LOG=warn "$gateway_bin" --config "$work/gateway.toml" --no-warm-up \
  >"$work/gateway.log" 2>&1 &
gateway_pid=$!

wait_for() {
  for _ in $(seq 1 100); do
    if curl -s -o /dev/null -X POST -H 'content-type: application/json' \
      -d '{"model":"gpt-4o-mini","messages":[]}' "$1"; then
      return 0
    fi
    sleep 0.1
  done
  echo "no answer from $1" >&2
  cat "$work/gateway.log" >&2
  exit 1
}
wait_for "http://127.0.0.1:$upstream_port/v1/chat/completions"
wait_for "http://127.0.0.1:$proxy_port/v1/chat/completions"
wait_for "http://127.0.0.1:$gateway_port/v1/chat/completions"

# One cell: prints "req/s p50_us non2xx".
cell() {
  local url="$1" conns="$2" threads=1
  [ "$conns" -gt 1 ] && threads=2
  local out
  out="$(wrk -t"$threads" -c"$conns" -d"${duration}s" --latency -s "$work/post.lua" "$url")"
  local rps p50 non2xx
  rps="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")"
  p50="$(awk '$1 == "50%" {print $2}' <<<"$out")"
  non2xx="$(awk '/Non-2xx/ {print $5}' <<<"$out")"
  # wrk prints 38.00us, 1.20ms, 2.00s.
  p50="$(awk -v v="$p50" 'BEGIN {
    n = v + 0
    if (v ~ /us$/) print n; else if (v ~ /ms$/) print n * 1000; else if (v ~ /s$/) print n * 1000000; else print n
  }')"
  echo "$rps $p50 ${non2xx:-0}"
}

printf '%-8s %6s %12s %10s %8s\n' target conns "req/s" "p50 (µs)" non-2xx
declare -A rps p50
for conns in 1 64; do
  for target in direct nginx gateway; do
    case "$target" in
      direct) port=$upstream_port ;;
      nginx) port=$proxy_port ;;
      gateway) port=$gateway_port ;;
    esac
    read -r r p n < <(cell "http://127.0.0.1:$port/v1/chat/completions" "$conns")
    rps[$target$conns]=$r
    p50[$target$conns]=$p
    printf '%-8s %6s %12s %10s %8s\n' "$target" "$conns" "$r" "$p" "$n"
  done
done

awk -v gp="${p50[gateway1]}" -v dp="${p50[direct1]}" -v np="${p50[nginx1]}" \
  -v g64="${rps[gateway64]}" -v n64="${rps[nginx64]}" 'BEGIN {
  printf "added p50 at 1 connection: gateway %+.0f µs, nginx %+.0f µs over direct (goal: gateway <= 50 µs)\n", gp - dp, np - dp
  printf "throughput at 64 connections: gateway %.0f %% of nginx-as-proxy (goal: >= 70 %%)\n", 100 * g64 / n64
}'
