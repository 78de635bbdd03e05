//! Devices on serial lines: a UART (`--serial /dev/ttyUSB0`), or a TCP
//! socket carrying one, as QEMU's `-serial tcp:` does (`--line ADDR` to
//! listen, `--line-connect ADDR` to dial). Frames arrive COBS-framed
//! ([`telemark_serial`]); each goes to the [`Hub`](crate::Hub) and its response, sent
//! only after the commit, goes back down the same line.

use std::io::{Read, Write};

use telemark_serial::{encode, overhead, Deframer};

use crate::hub::{Arrival, HubHandle, NotAcknowledged};

/// Serves one line until it closes, on the calling thread: frames in,
/// responses out. `clock` gives Unix milliseconds.
pub fn serve<L: Read + Write>(
    hub: &HubHandle,
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
            let arrival = Arrival {
                device: None,
                frame: frame.to_vec(),
                received_unix_ms: clock(),
            };
            let reply = match hub.receive_blocking(arrival) {
                Ok(reply) => reply,
                Err(NotAcknowledged::Unstored(e)) => {
                    tracing::warn!(error = %e, "frame not stored, not acknowledged (the device sends it again)");
                    continue;
                }
                Err(_) => continue,
            };
            let mut framed = vec![0u8; reply.len() + overhead(reply.len())];
            if let Ok(len) = encode(&reply, &mut framed) {
                line.write_all(framed.get(..len).unwrap_or_default())?;
            }
            line.flush()?;
        }
    }
}
