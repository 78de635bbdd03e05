//! Devices on CoAP over UDP (`telemark-coap`): each request to `up` is a
//! frame, handed to the hub without waiting for the one before; its
//! answer, sent after the commit, carries the response frame (2.04). A
//! device or key the service does not know is 4.01, a frame that is none
//! 4.00, and a store that cannot commit 5.03 with a Max-Age for the
//! device to wait.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use telemark_coap::message::Code;
use telemark_coap::server::Server;
use telemark_server::Refusal;
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::hub::{Arrival, HubHandle, NotAcknowledged};

/// The largest datagram taken.
pub const MAX_DATAGRAM: usize = 2048;

/// How long a device waits after a 5.03, seconds.
pub const BUSY_MAX_AGE_S: u32 = 5;

/// The CoAP code, Max-Age and payload of a frame's answer.
fn answer_of(answer: Result<Vec<u8>, NotAcknowledged>) -> (Code, Option<u32>, Vec<u8>) {
    match answer {
        Ok(response) => (Code::CHANGED, None, response),
        Err(NotAcknowledged::Refused(
            Refusal::UnknownDevice(_)
            | Refusal::UnknownKey { .. }
            | Refusal::RetiredKey { .. }
            | Refusal::BadTag
            | Refusal::Unauthenticated(_),
        )) => (Code::UNAUTHORIZED, None, Vec::new()),
        Err(NotAcknowledged::Unstored(_)) => {
            (Code::SERVICE_UNAVAILABLE, Some(BUSY_MAX_AGE_S), Vec::new())
        }
        Err(NotAcknowledged::Throttled { retry_after_ms }) => (
            Code::TOO_MANY_REQUESTS,
            Some(u32::try_from(retry_after_ms.div_ceil(1000)).unwrap_or(u32::MAX)),
            Vec::new(),
        ),
        Err(_) => (Code::BAD_REQUEST, None, Vec::new()),
    }
}

/// Serves `socket` until `stop` turns true. `clock` gives Unix ms.
pub async fn serve(
    hub: HubHandle,
    socket: UdpSocket,
    clock: fn() -> u64,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let socket = Arc::new(socket);
    let next_id = Arc::new(AtomicU16::new((clock() & 0xffff) as u16));
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, peer): (usize, SocketAddr) = tokio::select! {
            got = socket.recv_from(&mut buf) => got?,
            _ = stop.wait_for(|&stop| stop) => return Ok(()),
        };
        let datagram = buf.get(..n).unwrap_or_default().to_vec();
        // Not a request for a frame (another path, a reply, noise): no answer.
        let Ok(incoming) = Server::default().take(&datagram) else {
            continue;
        };
        let arrival = Arrival {
            device: None,
            frame: incoming.frame.to_vec(),
            received_unix_ms: clock(),
        };
        let (hub, socket, next_id) = (hub.clone(), Arc::clone(&socket), Arc::clone(&next_id));
        tokio::spawn(async move {
            let (code, max_age, payload) = answer_of(hub.receive(arrival).await);
            let Ok(incoming) = Server::default().take(&datagram) else {
                return;
            };
            let mut out = vec![0u8; payload.len() + 64];
            let id = next_id.fetch_add(1, Ordering::Relaxed);
            if let Ok(m) = incoming.answer(&mut out, id, code, max_age, &payload) {
                // An answer lost is lost like any other: the device sends
                // the frame again.
                let _ = socket.send_to(out.get(..m).unwrap_or_default(), peer).await;
            }
        });
    }
}
