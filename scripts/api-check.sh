#!/usr/bin/env bash
# Runs schemathesis (from PyPI, in a venv of its own) against a
# telemark-cloud started on free ports with an empty data directory:
# every operation of /openapi.json with generated requests, valid and
# not, checked for server errors, undocumented statuses and content
# types, and answers that do not match their schemas. The binary ingest
# (POST /v1/up) is fuzzed by cargo-fuzz instead.
#
#   scripts/api-check.sh [path/to/telemark-cloud] [max examples per operation]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/telemark-cloud}
examples=${2:-20}
venv=${SCHEMATHESIS_VENV:-target/schemathesis}
if [ ! -x "$venv/bin/schemathesis" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'schemathesis==4.*'
fi
data=$(mktemp -d)
out=$(mktemp)
token=api-check-$RANDOM$RANDOM
"$bin" --data "$data" --http 127.0.0.1:0 --mqtt 127.0.0.1:0 --coap 127.0.0.1:0 \
    --admin-token "$token" >"$out" 2>"$data/stderr" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data" "$out"' EXIT
for _ in $(seq 100); do
    [ -s "$out" ] && break
    sleep 0.1
done
http=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["http"])' "$out")
"$venv/bin/schemathesis" --config-file scripts/schemathesis.toml run "http://$http/openapi.json" \
    -H "Authorization: Bearer $token" --checks all --max-examples "$examples" \
    --generation-deterministic --exclude-path /v1/up
# The service took all that and still answers.
curl -sf "http://$http/healthz" >/dev/null
