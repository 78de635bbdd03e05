#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a bounded time and prints how
# many inputs each one ran. A crash, a panic, a leak or a timeout in any
# target fails the script, and libFuzzer names the input it saved under
# fuzz/artifacts/.
#
#   ./scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 20)
#
# Installs cargo-fuzz from crates.io where it is missing. Runs on the
# nightly toolchain when rustup has one, otherwise on stable with
# RUSTC_BOOTSTRAP=1 (the sanitizer flags need it). Each target starts from
# fuzz/corpus/<target> (kept between runs, not committed) and the seeds
# committed in fuzz/seeds/<target>.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-20}"

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
if rustup toolchain list | grep -q '^nightly'; then
    fuzz() { cargo +nightly fuzz "$@"; }
else
    fuzz() { RUSTC_BOOTSTRAP=1 cargo fuzz "$@"; }
fi

fuzz build -O
summary=""
for target in $(fuzz list); do
    mkdir -p "corpus/$target"
    corpora=("corpus/$target")
    [ -d "seeds/$target" ] && corpora+=("seeds/$target")
    log="$(mktemp)"
    if ! fuzz run -O "$target" "${corpora[@]}" -- -max_total_time="$seconds" -timeout=10 >"$log" 2>&1; then
        tail -n 60 "$log"
        echo "fuzz: $target failed; the input is under fuzz/artifacts/$target/" >&2
        exit 1
    fi
    done_line="$(grep -E '^Done [0-9]+ runs' "$log" | tail -n 1)"
    cov="$(grep -Eo 'cov: [0-9]+' "$log" | tail -n 1)"
    rm -f "$log"
    summary+="$(printf '%-18s %s (%s)' "$target" "$done_line" "$cov")"$'\n'
done
printf '%s' "$summary"
