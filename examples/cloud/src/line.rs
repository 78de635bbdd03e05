//! Devices on serial lines: a UART (`--serial /dev/ttyUSB0`), or a TCP
//! socket carrying one, as QEMU's `-serial tcp:` does (`--line ADDR` to
//! listen, `--line-connect ADDR` to dial). Frames arrive COBS-framed
//! ([`telemark_serial`]); each goes to the [`Hub`] and its response, sent
//! only after the commit, goes back down the same line.

use std::io::{Read, Write};
use std::sync::Mutex;

use telemark_serial::{encode, overhead, Deframer};

use crate::hub::Hub;
use crate::lock;

/// Serves one line until it closes: frames in, responses out. Each frame
/// takes the hub only while it is handled, so many lines share it.
/// `clock` gives Unix milliseconds.
pub fn serve<L: Read + Write>(
    hub: &Mutex<Hub>,
    line: &mut L,
    clock: impl Fn() -> u64,
) -> std::io::Result<()> {
    let mut rx: Deframer<4096> = Deframer::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = match line.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for &b in buf.get(..n).unwrap_or_default() {
            let Some(Ok(frame)) = rx.push(b) else {
                continue;
            };
            let frame = frame.to_vec();
            let Some(reply) = lock(hub).receive(&frame, clock()) else {
                continue;
            };
            let mut framed = vec![0u8; reply.len() + overhead(reply.len())];
            if let Ok(len) = encode(&reply, &mut framed) {
                line.write_all(framed.get(..len).unwrap_or_default())?;
            }
            line.flush()?;
        }
    }
}
