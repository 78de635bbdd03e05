#!/usr/bin/env bash
# Boots a QEMU board's firmware and telemark-cloud beside it: the firmware's
# log (semihosting) and every record the service stores are printed here.
# Ctrl-C stops both.
#
#   ./scripts/qemu-demo.sh              # STM32F405 (netduinoplus2)
#   ./scripts/qemu-demo.sh microbit     # nRF51822 (BBC micro:bit)
set -euo pipefail
cd "$(dirname "$0")/.."

board=${1:-netduinoplus2}
case "$board" in
    netduinoplus2) port=4405 ;;
    microbit) port=4451 ;;
    *) echo "usage: $0 [netduinoplus2|microbit]" >&2; exit 2 ;;
esac
if ! command -v qemu-system-arm >/dev/null; then
    echo "qemu-system-arm is missing: install it (Debian/Ubuntu: sudo apt-get install qemu-system-arm)" >&2
    exit 1
fi
(cd "examples/qemu-$board" && cargo build --release --locked)
cargo build --release --locked -p telemark-cloud

# The firmware's .cargo/config.toml runner boots it in QEMU, its UART a TCP
# server on $port.
(cd "examples/qemu-$board" && exec cargo run --release --locked) &
firmware=$!
trap 'pkill -P "$firmware" 2>/dev/null; kill "$firmware" 2>/dev/null || true' EXIT
rm -rf "qemu-$board-data"
# The service on free ports (the board needs only its serial line); Ctrl-C
# stops both.
./target/release/telemark-cloud --data "qemu-$board-data" --keys examples/qemu-app/demo-keys.txt \
    --http 127.0.0.1:0 --mqtt 127.0.0.1:0 --coap 127.0.0.1:0 --line-connect "127.0.0.1:$port" --verbose
