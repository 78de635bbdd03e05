#!/usr/bin/env python3
"""Flash and static RAM of each firmware, and telemark's part of them.

    scripts/footprint.py [--json] [--no-clients] [--no-budget]

Builds the firmware examples in release (opt-level "s", fat LTO), reads
their sections with llvm-size and their symbols with llvm-nm (rustup
component llvm-tools), and attributes each symbol to the crate it comes
from. Code that LTO inlined into a firmware's own functions counts as the
firmware's, so the telemark figures are a floor, not a ceiling.

Prints a table, or with `--json` one JSON object per image, one a line:
`image` and `profile` (full, small or device), `target`, `flash_bytes` and
`static_ram_bytes` of the whole image, `telemark_flash_bytes` (telemark-core
with the crates it uses: engine, codec, RAM store, wire layer; the AEAD
apart), `telemark_ram_bytes` (the engine's and the store's state besides the
user's buffers, for the RAM-store images; null elsewhere), and the flash of
each other part (`aead_flash_bytes`, `flash_store_flash_bytes`, ...).

Then checks every image in scripts/footprint-budget.toml against its budget
and exits 1 where telemark's part has grown past it (`--no-budget` skips
that). Raising a budget is a change of its own.

Then, without `--json`, it builds benches/mqtt-clients three times (one MQTT
5 session through minimq, through rust-mqtt, and neither), boots each in
QEMU's mps2-an386 for the bytes its session's state holds, and prints the
two clients side by side: flash above the baseline, state, and the ratio
(`--no-clients` leaves that out: CI does, for time).
"""
import json
import os
import re
import subprocess
import sys
import tomllib
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

class Image:
    """One firmware build: `image` names it in the JSON and the budget;
    `buffers` (staged readings, MTU, bytes of the store's lanes) are the
    user's buffers inside its engine and store, where the engine's state
    besides them is measured (RAM-store images)."""

    def __init__(self, image, label, folder, target, args, target_dir, profile, buffers=None):
        self.image, self.label, self.folder, self.target = image, label, folder, target
        self.args, self.target_dir, self.profile, self.buffers = args, target_dir, profile, buffers
        self.binary = "telemark-" + folder.rsplit("/", 1)[-1]

    def elf(self):
        return str(ROOT / self.folder / self.target_dir / self.target / "release" / self.binary)

RAM_STORE_M4 = (64, 256, 1024 + 8192)
RAM_STORE_M0 = (16, 256, 256 + 1536)
FIRMWARE = [
    Image("qemu-netduinoplus2", "qemu-netduinoplus2 (Cortex-M4F, flash store)", "examples/qemu-netduinoplus2",
          "thumbv7em-none-eabihf", [], "target", "full"),
    Image("qemu-netduinoplus2/ram-store", "qemu-netduinoplus2 --features ram-store (Cortex-M4F, RAM store)",
          "examples/qemu-netduinoplus2", "thumbv7em-none-eabihf", ["--features", "ram-store"], "target/footprint",
          "full", RAM_STORE_M4),
    Image("qemu-netduinoplus2/ram-store,small",
          "qemu-netduinoplus2 --features ram-store,small (Cortex-M4F, RAM store, small)",
          "examples/qemu-netduinoplus2", "thumbv7em-none-eabihf", ["--features", "ram-store,small"],
          "target/footprint", "small", RAM_STORE_M4),
    Image("qemu-netduinoplus2/device", "qemu-netduinoplus2 --features ram-store,device (Cortex-M4F, RAM store, "
          "device profile)", "examples/qemu-netduinoplus2", "thumbv7em-none-eabihf", ["--features", "ram-store,device"],
          "target/footprint", "device", RAM_STORE_M4),
    Image("qemu-microbit/full", "qemu-microbit --features full (Cortex-M0, RAM store, small)",
          "examples/qemu-microbit", "thumbv6m-none-eabi", ["--features", "full"], "target/full", "small",
          RAM_STORE_M0),
    Image("qemu-microbit", "qemu-microbit (Cortex-M0, RAM store, device profile)", "examples/qemu-microbit",
          "thumbv6m-none-eabi", [], "target", "device", RAM_STORE_M0),
    Image("qemu-mps2-an386", "qemu-mps2-an386 (Cortex-M4, RAM store, MQTT over Ethernet)", "examples/qemu-mps2-an386",
          "thumbv7em-none-eabihf", [], "target", "full", RAM_STORE_M4),
    Image("stm32f4-embassy", "stm32f4-embassy (STM32F405, flash store)", "examples/stm32f4-embassy",
          "thumbv7em-none-eabihf", [], "target", "full"),
    Image("stm32f4-embassy/mqtt", "stm32f4-embassy --features mqtt (STM32F407, flash store, MQTT over Ethernet)",
          "examples/stm32f4-embassy", "thumbv7em-none-eabihf", ["--no-default-features", "--features", "mqtt"],
          "target/mqtt", "full"),
    Image("nrf52840-embassy", "nrf52840-embassy (nRF52840, flash store)", "examples/nrf52840-embassy",
          "thumbv7em-none-eabihf", [], "target", "full"),
]
BUDGET = ROOT / "scripts" / "footprint-budget.toml"

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

# The variants of one firmware share a target folder ("target/footprint"),
# so that the dependencies they build alike are built once; each image is
# measured right after its build, before the next one replaces it.
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
    staged readings, frame buffers), or None where the image has no static
    named ENGINE and one named STORE."""
    engine = next((s for n, s in statics.items() if n.endswith("ENGINE") or "::ENGINE::" in n), None)
    store = next((s for n, s in statics.items() if "::STORE::" in n or n.endswith("STORE")), None)
    if engine is None or store is None:
        return None
    return engine + store - store_buffers - stage * READING - 2 * mtu

def kib(n):
    return f"{n / 1024:.1f}"

def measure(image):
    """The JSON object of one built image."""
    flash, ram = sections(image.elf())
    code, statics = attribute(image.elf())
    state = engine_state(statics, *image.buffers) if image.buffers else None
    fields = {
        "image": image.image,
        "profile": image.profile,
        "target": image.target,
        "flash_bytes": flash,
        "static_ram_bytes": ram,
        "telemark_flash_bytes": code["core"],
        "telemark_ram_bytes": state,
    }
    for cls, _ in CLASSES:
        if cls != "core":
            fields[cls.replace(" ", "_") + "_flash_bytes"] = code[cls]
    return fields, statics

def over_budget(rows):
    """Each image whose telemark part is past its budget in
    scripts/footprint-budget.toml, as a sentence; and each budgeted image
    this run did not build."""
    budgets = tomllib.loads(BUDGET.read_text())["image"]
    measured = {r["image"]: r for r, _ in rows}
    failures = []
    for budget in budgets:
        row = measured.get(budget["image"])
        if row is None:
            failures.append(f"{budget['image']}: has a budget but was not built")
            continue
        if row["profile"] != budget["profile"]:
            failures.append(f"{budget['image']}: built as profile {row['profile']}, budgeted as {budget['profile']}")
        for field in ("telemark_flash_bytes", "telemark_ram_bytes"):
            if field in budget and (row[field] is None or row[field] > budget[field]):
                failures.append(f"{budget['image']} ({row['profile']}): {field} {row[field]} is past its budget of "
                                f"{budget[field]}")
    return failures

def main():
    as_json = "--json" in sys.argv
    rows = []
    for image in FIRMWARE:
        build(image.folder, image.args, image.target_dir)
        rows.append(measure(image))
    if as_json:
        for row, _ in rows:
            print(json.dumps(row))
    else:
        table(rows)
    failures = [] if "--no-budget" in sys.argv else over_budget(rows)
    for failure in failures:
        print(f"footprint budget: {failure}", file=sys.stderr)
    if failures:
        sys.exit("footprint: past the budget in scripts/footprint-budget.toml (raising one is a change of its own, "
                 "with the reason in its commit)")
    if not as_json and "--no-clients" not in sys.argv:
        clients()

def table(rows):
    by = {row["image"]: (row, statics) for row, statics in rows}
    print("| firmware | profile | flash | static RAM | telemark core | AEAD | flash store | serial | MQTT | IP stack | "
          "sensors | board support |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    labels = {image.image: image.label for image in FIRMWARE}
    for row, _ in rows:
        print(f"| {labels[row['image']]} | {row['profile']} | {kib(row['flash_bytes'])} KiB | "
              f"{kib(row['static_ram_bytes'])} KiB | {kib(row['telemark_flash_bytes'])} KiB | "
              f"{kib(row['aead_flash_bytes'])} KiB | {kib(row['flash_store_flash_bytes'])} KiB | "
              f"{kib(row['serial_flash_bytes'])} KiB | {kib(row['mqtt_flash_bytes'])} KiB | "
              f"{kib(row['ip_stack_flash_bytes'])} KiB | {kib(row['sensors_flash_bytes'])} KiB | "
              f"{kib(row['board_support_flash_bytes'])} KiB |")
    print()
    # The goal: engine, codec, RAM store and wire layer at opt-level "s".
    for image, goal in (("qemu-netduinoplus2/ram-store", None), ("qemu-netduinoplus2/ram-store,small", None),
                        ("qemu-netduinoplus2/device", 16), ("qemu-microbit/full", None), ("qemu-microbit", 20)):
        row, _ = by[image]
        print(f"telemark core, {labels[image]}: {row['telemark_flash_bytes']} bytes of flash "
              f"({kib(row['telemark_flash_bytes'])} KiB{f'; goal {goal} KiB' if goal else ''}), "
              f"{row['telemark_ram_bytes']} bytes of RAM besides the user's buffers (goal 2 KiB)")
    flash_row, _ = by["qemu-netduinoplus2"]
    print(f"flash store on Cortex-M4F (FlashStore and sequential-storage): {flash_row['flash_store_flash_bytes']} "
          f"bytes of flash ({kib(flash_row['flash_store_flash_bytes'])} KiB)")
    m4, _ = by["qemu-netduinoplus2/ram-store"]
    m0, _ = by["qemu-microbit/full"]
    print(f"ChaCha20-Poly1305 (chacha20, poly1305, aead): {m4['aead_flash_bytes']} bytes of flash on Cortex-M4F, "
          f"{m0['aead_flash_bytes']} bytes on Cortex-M0")
    for image, uart in (("qemu-mps2-an386", "qemu-netduinoplus2/ram-store"), ("stm32f4-embassy/mqtt", "stm32f4-embassy")):
        row, statics = by[image]
        mqtt_ram = sum(s for n, s in statics.items()
                       if any(k in n for k in ("MQTT_BUFFERS", "TCP_BUFFERS", "::STATE::", "::NET::", "PACKETS",
                                               "run_mqtt", "run_network")))
        base, _ = by[uart]
        print(f"MQTT device stack, {labels[image]}: telemark-mqtt and minimq {row['mqtt_flash_bytes']} bytes of flash "
              f"({kib(row['mqtt_flash_bytes'])} KiB), the IP stack (embassy-net, smoltcp, the MAC driver) "
              f"{row['ip_stack_flash_bytes']} bytes ({kib(row['ip_stack_flash_bytes'])} KiB), both a floor; "
              f"{mqtt_ram} bytes of static RAM for the MQTT and TCP buffers, the socket set, the packet queues and "
              f"the two network tasks; the whole firmware {kib(row['flash_bytes'] - base['flash_bytes'])} KiB of "
              f"flash and {kib(row['static_ram_bytes'] - base['static_ram_bytes'])} KiB of static RAM above its "
              f"UART counterpart ({labels[uart]})")

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
