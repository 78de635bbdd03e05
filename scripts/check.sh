#!/usr/bin/env bash
# The one check command: what CI runs, and what to run before a commit.
#
#   ./scripts/check.sh
#
# Installs what it needs (rustup targets and components; qemu-system-arm,
# mosquitto, nats-server, chromium and npm through apt-get where they are missing, and a
# NATS server on 127.0.0.1:4222 and PostgreSQL on 5432 where none runs), then runs, in order: rustfmt, clippy
# (warnings denied), the whole test suite (with the QEMU firmware end to end
# and the flash store's power-cut sweep), the no_std builds for Cortex-M0 and
# Cortex-M4F, the codec report, the fleet simulator, the flash wear figures,
# the firmware footprint (which builds the embassy examples), every fuzz
# target for a bounded time (scripts/fuzz.sh), and rustdoc (warnings
# denied). Stops at the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

# A clean clone builds everything once: incremental compilation's records
# would only cost time there.
if [ "${CI:-}" = true ]; then export CARGO_INCREMENTAL=0; fi

step() { printf '\n== %s (at %d s)\n' "$*" "$SECONDS"; }

step "toolchain: rustup components and targets, QEMU, mosquitto"
rustup component add rustfmt clippy llvm-tools >/dev/null 2>&1 || true
for target in thumbv6m-none-eabi thumbv7em-none-eabihf; do
    rustup target list --installed | grep -qx "$target" || rustup target add "$target"
done
# need COMMAND PACKAGE: installs PACKAGE through apt-get where COMMAND is missing.
need() {
    command -v "$1" >/dev/null && return
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq && apt-get install -y -qq "$2" >/dev/null
    elif command -v sudo >/dev/null; then
        sudo apt-get update -qq && sudo apt-get install -y -qq "$2" >/dev/null
    else
        echo "$1 is missing and cannot be installed here: install it (apt-get install $2)" >&2
        exit 1
    fi
}
# The firmware end-to-end test boots the QEMU boards; the MQTT link's tests
# start brokers of their own.
need qemu-system-arm qemu-system-arm
need mosquitto mosquitto
need mosquitto_passwd mosquitto
# The NATS link's tests: servers of their own, and the machine's on 4222.
need nats-server nats-server
# The HTTP link's interoperability test posts a frame with curl.
need curl curl
# The CoAP link's interoperability tests run libcoap's server and client.
need coap-client-notls libcoap3-bin
if ! (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
    nats-server -a 127.0.0.1 -p 4222 -js >/dev/null 2>&1 &
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && break; sleep 0.1; done
fi
# telemark-cloud's PostgreSQL backend: the machine's server on 5432.
need psql postgresql
if ! (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; then
    pg_ctlcluster "$(ls /etc/postgresql | head -1)" main start
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null && break; sleep 0.1; done
fi
qemu-system-arm --version | head -1

step "cargo fmt --check"
cargo fmt --all --check

# The workspace's own members already turn on telemark-core's `async` and
# the links' `host` sides (the cloud, the simulator and the air bench use
# them); the async drivers of the sensors and the serial link are turned on
# here, so that one clippy run checks every feature of the host crates.
step "cargo clippy (host, all targets, the async drivers and the links' host sides)"
cargo clippy --workspace --all-targets --features telemark-sensors/async,telemark-serial/async --locked -- -D warnings

step "cargo clippy (telemark-core, no_std + defmt, thumbv7em-none-eabihf)"
cargo clippy -p telemark-core --no-default-features --features defmt,async,flash --target thumbv7em-none-eabihf --locked -- -D warnings
cargo clippy -p telemark-cortex-m --target thumbv7em-none-eabihf --locked -- -D warnings
cargo clippy -p telemark-cortex-m --target thumbv6m-none-eabi --locked -- -D warnings
cargo clippy -p telemark-lan9118 --target thumbv7em-none-eabihf --locked -- -D warnings
cargo clippy -p telemark-mqtt --features defmt,embassy-net,embassy-net/medium-ethernet --target thumbv7em-none-eabihf --locked -- -D warnings
cargo clippy -p telemark-http --features defmt --target thumbv7em-none-eabihf --locked -- -D warnings
cargo clippy -p telemark-coap --features defmt --target thumbv7em-none-eabihf --locked -- -D warnings

step "cargo fmt and clippy (the firmware: each example is a workspace of its own)"
# One target folder for all of them: the dependencies they share (build
# scripts, proc macros, cortex-m, embassy, telemark's crates) are checked once.
firmware_clippy="$PWD/target/firmware-clippy"
for fw in qemu-netduinoplus2 qemu-microbit qemu-mps2-an386 stm32f4-embassy nrf52840-embassy; do
    (cd "examples/$fw" && cargo fmt --check && CARGO_TARGET_DIR="$firmware_clippy" cargo clippy --release --locked -- -D warnings)
done
# The STM32 example's other variant: MQTT over Ethernet on an STM32F407.
(cd examples/stm32f4-embassy && CARGO_TARGET_DIR="$firmware_clippy" cargo clippy --release --locked --no-default-features --features mqtt -- -D warnings)
# The bench of the two no_std MQTT clients, with each and with neither.
(cd benches/mqtt-clients && cargo fmt --check)
for client in "" minimq rust-mqtt; do
    (cd benches/mqtt-clients && CARGO_TARGET_DIR="$firmware_clippy" cargo clippy --release --locked ${client:+--features "$client"} -- -D warnings)
done

step "cargo test --workspace"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# The links' host-side tests (MQTT against brokers with TLS, HTTP against
# axum and curl, CoAP against libcoap) run here too: the workspace turns on
# their `host` features.
cargo test --workspace --locked 2>&1 | tee "$log"
# The async drivers of the sensors and of the serial link.
cargo test -p telemark-sensors -p telemark-serial --features telemark-sensors/async,telemark-serial/async \
    --test async_drivers --test wait_input --locked 2>&1 | tee -a "$log"
# The `small` encoder writes the wire format's vectors to the same bytes.
cargo test -p telemark-core --features std,small --test wire_vectors --locked 2>&1 | tee -a "$log"

step "schemathesis: generated requests to every operation of telemark-cloud's /openapi.json"
bash scripts/api-check.sh target/debug/telemark-cloud 20

step "the dashboard in headless Chromium, against telemark-cloud fed by the simulator (screenshots in target/dashboard)"
# Debian's Chromium, driven by playwright-core from npm (tests/browser's lock file).
need chromium chromium
need npm npm
(cd examples/cloud/tests/browser && npm ci --no-audit --no-fund --loglevel=error)
# In the workspace's build: the test binary `cargo test --workspace` built, not a second one.
cargo test --workspace --test dashboard --locked -- --ignored 2>&1 | tee -a "$log"
ls target/dashboard/*.png

step "no_std builds"
cargo build -p telemark-core --no-default-features --target thumbv6m-none-eabi --locked
cargo build -p telemark-core --no-default-features --target thumbv7em-none-eabihf --locked
cargo build -p telemark-core --no-default-features --features serde,defmt,async,lz4 --target thumbv6m-none-eabi --locked
cargo build -p telemark-sensors --features async --target thumbv6m-none-eabi --locked
cargo build -p telemark-serial --features async --target thumbv6m-none-eabi --locked
cargo build -p telemark-mqtt --target thumbv6m-none-eabi --locked
cargo build -p telemark-http --target thumbv7em-none-eabihf --locked
cargo build -p telemark-coap --target thumbv6m-none-eabi --locked
cargo build -p telemark-core --no-default-features --features flash,small --target thumbv6m-none-eabi --locked
cargo build -p telemark-qemu-app --target thumbv6m-none-eabi --locked

step "bytes on air: one device-day through serial, MQTT, HTTP, CoAP and NATS against real peers"
# The workspace's binaries with the test build's features: `cargo run -p`
# would resolve features for the one package and build its dependencies again.
cargo build --workspace --bins --tests --examples --locked
target/debug/air-report

step "codec-report: every batch of the recordings round-trips, from the full encoder and the device profile's (sizes and speeds for the record)"
cargo run --release --locked -p telemark-benches --bin codec-report -- --batch 256

# The in-process runs need no transport: without the `service` feature
# (`--server`, which examples/sim/tests/service.rs covers) the release
# build leaves out tokio, reqwest and rumqttc.
step "telemark-sim: 100 devices x 30 days, 30 % loss, 12 h outages, a power cycle a day, an attacker; exits non-zero on any invariant violation"
cargo run --release --locked -p telemark-sim --no-default-features -- --devices 100 --days 30 --loss 0.3 --partition-hours 12 --reboots-per-day 1 --attacker --seed 1 --json

step "telemark-sim on the flash store: power cut at a random byte of a random write or erase, 4 a day; no sealed record may be lost"
cargo run --release --locked -p telemark-sim --no-default-features -- --devices 100 --days 30 --loss 0.3 --partition-hours 12 --store flash --power-cuts-per-day 4 --seed 1 --json

step "telemark-sim on a LoRa-sized link: every frame in pieces of at most 51 bytes, each lost on its own, on the flash store with power cuts"
cargo run --release --locked -p telemark-sim --no-default-features -- --devices 100 --days 30 --loss 0.3 --partition-hours 12 --store flash --power-cuts-per-day 4 --seed 1 --mtu 51 --json

step "flash store wear: a year of a block every 5 minutes on 64 KiB of STM32F4 and nRF52840 flash"
# The store is built at opt-level 2 in the dev profile: quick to build and to run.
cargo run --locked -p telemark-core --features std,flash --example flash_wear

# The MQTT clients' side-by-side (three more release builds) is left to
# `python3 scripts/footprint.py`, for time; clippy above checks them.
step "firmware footprint: flash and static RAM, telemark's part and the AEAD's, in the full and the device profile; fails past scripts/footprint-budget.toml (builds the embassy examples)"
python3 scripts/footprint.py --no-clients

# 4 s a target keeps the whole check under 30 minutes on two cores;
# scripts/fuzz.sh alone runs longer (FUZZ_SECONDS here, or its argument).
# The fuzz workspace's lock file is checked without a second build.
step "fuzz: every target for ${FUZZ_SECONDS:-4} s, with its execution count"
cargo metadata --manifest-path fuzz/Cargo.toml --locked --format-version 1 >/dev/null
(cd fuzz && cargo fmt --check)
bash scripts/fuzz.sh "${FUZZ_SECONDS:-4}"

step "cargo doc (warnings denied)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

passed=$(grep -Eo 'test result: ok\. [0-9]+ passed' "$log" | awk '{s+=$4} END {print s+0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s+=$1} END {print s+0}')
printf '\n== all checks passed\n'
echo "check: ${passed} passed, ${failed} failed"
