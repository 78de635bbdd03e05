#!/usr/bin/env python3
"""Flash and static RAM of each firmware, and telemark's part of them.

    scripts/footprint.py [--markdown] [--no-clients]

Builds the firmware examples in release (opt-level "s", fat LTO), reads
their sections with llvm-size and their symbols with llvm-nm (rustup
component llvm-tools), and attributes each symbol to the crate it comes
from. Code that LTO inlined into a firmware's own functions counts as the
firmware's, so the telemark figures are a floor, not a ceiling.

Then it builds benches/mqtt-clients three times (one MQTT 5 session
through minimq, through rust-mqtt, and neither), boots each in QEMU's
mps2-an386 for the bytes its session's state holds, and prints the two
clients side by side: flash above the baseline, state, and the ratio
(`--no-clients` leaves that out: CI does, for time).
"""
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READING = 24  # bytes of a telemark_core::model::Reading on Cortex-M

def tool(name):
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, check=True).stdout.strip()
    host = re.search(r"host: (\S+)", subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True).stdout).group(1)
    path = Path(sysroot) / "lib" / "rustlib" / host / "bin" / name
    if not path.exists():
        sys.exit(f"{name} not found: rustup component add llvm-tools")
    return str(path)

# Firmware: (name, folder, target, binary, extra cargo args, target dir)
FIRMWARE = [
    ("qemu-netduinoplus2 (Cortex-M4F, flash store)", "examples/qemu-netduinoplus2", "thumbv7em-none-eabihf", "telemark-qemu-netduinoplus2", [], "target"),
    ("qemu-netduinoplus2 --features ram-store (Cortex-M4F, RAM store)", "examples/qemu-netduinoplus2", "thumbv7em-none-eabihf", "telemark-qemu-netduinoplus2", ["--features", "ram-store"], "target/ram-store"),
    ("qemu-netduinoplus2 --features ram-store,small (Cortex-M4F, RAM store, small)", "examples/qemu-netduinoplus2", "thumbv7em-none-eabihf", "telemark-qemu-netduinoplus2", ["--features", "ram-store,small"], "target/ram-store-small"),
    ("qemu-microbit (Cortex-M0, RAM store, small)", "examples/qemu-microbit", "thumbv6m-none-eabi", "telemark-qemu-microbit", [], "target"),
    ("qemu-mps2-an386 (Cortex-M4, RAM store, MQTT over Ethernet)", "examples/qemu-mps2-an386", "thumbv7em-none-eabihf", "telemark-qemu-mps2-an386", [], "target"),
    ("stm32f4-embassy (STM32F405, flash store)", "examples/stm32f4-embassy", "thumbv7em-none-eabihf", "telemark-stm32f4-embassy", [], "target"),
    ("stm32f4-embassy --features mqtt (STM32F407, flash store, MQTT over Ethernet)", "examples/stm32f4-embassy", "thumbv7em-none-eabihf", "telemark-stm32f4-embassy", ["--no-default-features", "--features", "mqtt"], "target/mqtt"),
    ("nrf52840-embassy (nRF52840, flash store)", "examples/nrf52840-embassy", "thumbv7em-none-eabihf", "telemark-nrf52840-embassy", [], "target"),
]

CLASSES = [
    ("mqtt", re.compile(r"telemark_mqtt|minimq")),
    ("ip stack", re.compile(r"embassy_net|smoltcp|telemark_lan9118|embassy_stm32::eth")),
    ("aead", re.compile(r"chacha20|poly1305|\baead\b|aead(::|\.\.)|universal_hash|\bcipher(::|\.\.)|inout(::|\.\.)")),
    ("flash store", re.compile(r"store(::|\.\.)flash|sequential_storage|embedded_storage")),
    ("core", re.compile(r"telemark_core|minicbor|heapless|\bcrc\b|crc(::|\.\.)|lz4_flex")),
    ("serial", re.compile(r"telemark_serial|\bcobs\b|cobs(::|\.\.)")),
    ("sensors", re.compile(r"telemark_sensors")),
    ("board support", re.compile(r"telemark_cortex_m")),
]

def build(folder, args, target_dir):
    env = dict(os.environ, CARGO_TARGET_DIR=str(ROOT / folder / target_dir))
    env.pop("RUSTFLAGS", None)
    subprocess.run(["cargo", "build", "--release", "--locked", *args], cwd=ROOT / folder, env=env, check=True)

def sections(elf):
    out = subprocess.run([tool("llvm-size"), "-A", elf], capture_output=True, text=True, check=True).stdout
    size = {}
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].startswith(".") and parts[1].isdigit():
            size[parts[0]] = int(parts[1])
    flash = sum(size.get(s, 0) for s in (".vector_table", ".text", ".rodata", ".data"))
    ram = sum(size.get(s, 0) for s in (".data", ".bss", ".uninit"))
    return flash, ram

def symbols(elf):
    out = subprocess.run([tool("llvm-nm"), "--print-size", "--size-sort", "-C", elf], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.split(None, 3)
        if len(parts) == 4:
            yield int(parts[1], 16), parts[2], parts[3]

def attribute(elf):
    code = {name: 0 for name, _ in CLASSES}
    statics = {}
    for size, kind, name in symbols(elf):
        if kind in "tTrR":
            for cls, pattern in CLASSES:
                if pattern.search(name):
                    code[cls] += size
                    break
        elif kind in "dDbB":
            statics[name] = size
    return code, statics

def engine_state(statics, stage, mtu, store_buffers):
    """Engine and store state besides the user's buffers (store lanes,
    staged readings, frame buffers)."""
    engine = next((s for n, s in statics.items() if n.endswith("ENGINE") or "::ENGINE::" in n), 0)
    store = next((s for n, s in statics.items() if "::STORE::" in n or n.endswith("STORE")), 0)
    return engine + store - store_buffers - stage * READING - 2 * mtu

def kib(n):
    return f"{n / 1024:.1f}"

def main():
    markdown = "--markdown" in sys.argv
    rows = []
    for name, folder, target, binary, args, target_dir in FIRMWARE:
        build(folder, args, target_dir)
        elf = str(ROOT / folder / target_dir / target / "release" / binary)
        flash, ram = sections(elf)
        code, statics = attribute(elf)
        rows.append((name, flash, ram, code, statics))
    header = ("| firmware | flash | static RAM | telemark core | AEAD | flash store | serial | MQTT | IP stack | "
              "sensors | board support |")
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, flash, ram, code, _ in rows:
        print(f"| {name} | {kib(flash)} KiB | {kib(ram)} KiB | {kib(code['core'])} KiB | {kib(code['aead'])} KiB | "
              f"{kib(code['flash store'])} KiB | {kib(code['serial'])} KiB | {kib(code['mqtt'])} KiB | "
              f"{kib(code['ip stack'])} KiB | {kib(code['sensors'])} KiB | {kib(code['board support'])} KiB |")
    # The goal: engine, codec and RAM store on thumbv7em at opt-level "s".
    _, _, _, code, statics = rows[1]
    state = engine_state(statics, stage=64, mtu=256, store_buffers=1024 + 8192)
    print()
    print(f"telemark core on Cortex-M4F (engine, codec, RAM store, config, reports): "
          f"{code['core']} bytes of flash ({kib(code['core'])} KiB; goal 16 KiB), "
          f"{state} bytes of RAM besides the user's buffers (goal 2 KiB)")
    _, _, _, flash_code, _ = rows[0]
    print(f"flash store on Cortex-M4F (FlashStore and sequential-storage): {flash_code['flash store']} bytes of flash "
          f"({kib(flash_code['flash store'])} KiB)")
    _, _, _, scode, sstatics = rows[2]
    sstate = engine_state(sstatics, stage=64, mtu=256, store_buffers=1024 + 8192)
    print(f"the same with telemark-core's `small` feature: {scode['core']} bytes of flash ({kib(scode['core'])} KiB), "
          f"{sstate} bytes of RAM besides the user's buffers")
    _, _, _, mcode, mstatics = rows[3]
    mstate = engine_state(mstatics, stage=16, mtu=256, store_buffers=256 + 1536)
    print(f"telemark core on Cortex-M0 (microbit, `small`): {mcode['core']} bytes of flash ({kib(mcode['core'])} KiB), "
          f"{mstate} bytes of RAM besides the user's buffers")
    print(f"ChaCha20-Poly1305 (chacha20, poly1305, aead): {code['aead']} bytes of flash on Cortex-M4F, "
          f"{mcode['aead']} bytes on Cortex-M0")
    for index, uart_index in ((4, 1), (6, 5)):
        name, flash, ram, ncode, nstatics = rows[index]
        mqtt_ram = sum(s for n, s in nstatics.items()
                       if any(k in n for k in ("MQTT_BUFFERS", "TCP_BUFFERS", "::STATE::", "::NET::", "PACKETS",
                                               "run_mqtt", "run_network")))
        _, uart_flash, uart_ram, _, _ = rows[uart_index]
        print(f"MQTT device stack, {name}: telemark-mqtt and minimq {ncode['mqtt']} bytes of flash "
              f"({kib(ncode['mqtt'])} KiB), the IP stack (embassy-net, smoltcp, the MAC driver) {ncode['ip stack']} "
              f"bytes ({kib(ncode['ip stack'])} KiB), both a floor; {mqtt_ram} bytes of static RAM for the MQTT and "
              f"TCP buffers, the socket set, the packet queues and the two network tasks; the whole firmware "
              f"{kib(flash - uart_flash)} KiB of flash and {kib(ram - uart_ram)} KiB of static RAM above its UART "
              f"counterpart ({rows[uart_index][0]})")
    if "--no-clients" not in sys.argv:
        clients()

# MQTT clients: (name, cargo args); the first is the baseline.
CLIENTS = [
    ("baseline (no client)", []),
    ("minimq 0.13", ["--features", "minimq"]),
    ("rust-mqtt 0.6", ["--features", "rust-mqtt"]),
]

def session_state(elf):
    """Boots the client bench in QEMU; it prints its session's size and exits."""
    out = subprocess.run(["qemu-system-arm", "-machine", "mps2-an386", "-display", "none", "-monitor", "none",
                          "-semihosting-config", "enable=on,target=native", "-kernel", elf],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    found = re.search(r"session state: (\d+) bytes", out)
    if not found:
        sys.exit(f"{elf} printed no session state: {out!r}")
    return int(found.group(1))

def clients():
    folder = "benches/mqtt-clients"
    rows = []
    for name, args in CLIENTS:
        target_dir = "target/" + (args[1] if args else "baseline")
        build(folder, args, target_dir)
        elf = str(ROOT / folder / target_dir / "thumbv7em-none-eabihf" / "release" / "telemark-bench-mqtt-clients")
        flash, _ = sections(elf)
        rows.append((name, flash, session_state(elf)))
    _, base_flash, _ = rows[0]
    print()
    print("One MQTT 5 session (connect with a persistent session, subscribe QoS 1, publish 256 B QoS 1, "
          "one inbound publish, disconnect) on Cortex-M4F, benches/mqtt-clients:")
    print()
    print("| client | flash above baseline | session state | flash ratio to minimq |")
    print("|---|---:|---:|---:|")
    minimq_flash = rows[1][1] - base_flash
    for name, flash, state in rows[1:]:
        extra = flash - base_flash
        print(f"| {name} | {extra} B ({kib(extra)} KiB) | {state} B | {extra / minimq_flash:.2f}x |")

if __name__ == "__main__":
    main()
