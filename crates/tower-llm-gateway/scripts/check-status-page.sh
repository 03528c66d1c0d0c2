#!/usr/bin/env bash
# The status page in a real headless browser: starts the demo gateway (its
# simulated providers, a warm-up that takes the primary down and back),
# lets Chromium run the page's script against it, checks what the page
# shows, and saves its screenshot to crates/tower-llm-gateway/docs/.
#
#   crates/tower-llm-gateway/scripts/check-status-page.sh
#
# Needs Chromium (`apt-get install chromium`, or CHROMIUM=/path/to/chrome).
# Exits non-zero, saying why, when the page does not show what it should.
set -euo pipefail
cd "$(dirname "$0")/../../.."

port="${PORT:-18089}"
base="http://127.0.0.1:${port}"
browser="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}"
if [[ -z "${browser}" ]]; then
  echo "no Chromium found: apt-get install chromium, or set CHROMIUM" >&2
  exit 2
fi
out="$(mktemp -d)"
cargo build --release -q -p tower-llm-gateway
target/release/tower-llm-gateway --listen "127.0.0.1:${port}" --warm-up 60 \
  > "${out}/gateway.log" 2>&1 &
gateway=$!
trap 'kill ${gateway} 2>/dev/null || true; rm -rf "${out}"' EXIT

for _ in $(seq 1 100); do
  curl -sf "${base}/health/live" > /dev/null && break
  sleep 0.1
done
curl -sf "${base}/health/live" > /dev/null || { cat "${out}/gateway.log" >&2; exit 1; }
# The warm-up runs in the background: wait until the primary's outage has
# sent requests to the backup (its requests 20..30), at most a minute.
for _ in $(seq 1 600); do
  curl -s "${base}/health" | grep -q '"target":"backup"' && break
  sleep 0.1
done

run_browser() {
  "${browser}" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --virtual-time-budget=5000 "$@" "${base}/" 2> "${out}/browser.log"
}
run_browser --dump-dom > "${out}/page.html"

fail() {
  echo "status page check failed: $*" >&2
  cp "${out}/page.html" /tmp/status-page-dom.html && echo "the page as rendered: /tmp/status-page-dom.html" >&2
  exit 1
}
grep -q 'id="status" class="badge' "${out}/page.html" || fail "no status badge"
grep -q 'loading…' "${out}/page.html" && fail "the script never filled the page (still loading)"
# Every target of the demo has a row in the targets table.
for target in primary backup; do
  grep -q "<td>${target}</td>" "${out}/page.html" || fail "no row for target ${target}"
done
# Breaker keys are target/model.
grep -q '<td>primary/' "${out}/page.html" || fail "no breaker key for the primary"
grep -q '<p id="error" class="muted" hidden=""' "${out}/page.html" \
  || fail "the page could not read /health"

run_browser --window-size=1280,900 --screenshot="${out}/status-page.png" > /dev/null
cp "${out}/status-page.png" crates/tower-llm-gateway/docs/status-page.png
echo "status page ok: every target and breaker shown; screenshot in crates/tower-llm-gateway/docs/status-page.png"
