//! The server's end over CoAP (feature `coap`): a loopback UDP socket
//! behind `telemark_coap::server`, with answers a test can script.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use telemark_coap::message::{Code, Type, Writer};
use telemark_coap::server::Server as CoapServer;
use telemark_server::{MemoryStore, ReceiveError, Server};
use tokio::net::UdpSocket;

use crate::{keyring, unix_ms};

/// An answer the server end gives instead of its usual one.
#[derive(Clone, Copy)]
pub enum Scripted {
    /// The frame committed, the answer lost on the way.
    Lose,
    /// 5.03 with this Max-Age.
    Busy(u32),
    /// 4.01.
    Unauthorized,
    /// A datagram that is no CoAP, and an answer with another token,
    /// before the real answer.
    Stray,
}

/// The CoAP server end, running.
pub struct End {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it stored.
    pub store: Arc<Mutex<MemoryStore>>,
    script: Arc<Mutex<Vec<Scripted>>>,
}

/// The server end: telemark-server over a memory store behind
/// `telemark_coap::server`, answering after the commit.
pub async fn serve() -> End {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let store = Arc::new(Mutex::new(MemoryStore::new()));
    let script: Arc<Mutex<Vec<Scripted>>> = Arc::default();
    let (shared, scripted) = (store.clone(), script.clone());
    tokio::spawn(async move {
        let mut server = Server::new(keyring());
        let mut message_id = 0u16;
        let mut datagram = [0u8; 1500];
        let mut answer = [0u8; 1500];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut datagram).await else {
                continue;
            };
            let Ok(incoming) = CoapServer::default().take(&datagram[..n]) else {
                continue;
            };
            message_id = message_id.wrapping_add(1);
            let next = {
                let mut script = scripted.lock().unwrap();
                (!script.is_empty()).then(|| script.remove(0))
            };
            let (code, max_age, payload) = match next {
                Some(Scripted::Busy(age)) => (Code::SERVICE_UNAVAILABLE, Some(age), Vec::new()),
                Some(Scripted::Unauthorized) => (Code::UNAUTHORIZED, None, Vec::new()),
                other => {
                    let received = {
                        let mut store = shared.lock().unwrap();
                        server.receive(&mut *store, incoming.frame, unix_ms())
                    };
                    match (other, received) {
                        (Some(Scripted::Lose), _) => continue,
                        (Some(Scripted::Stray), _) => {
                            let _ = socket.send_to(b"\x00no coap", peer).await;
                            let mut w = Writer::new(
                                &mut answer,
                                Type::Non,
                                Code::CHANGED,
                                1,
                                &[0xee, 0xee],
                            )
                            .unwrap();
                            let _ = w.option(14, &[1]);
                            let m = w.payload(b"not yours").unwrap();
                            let _ = socket.send_to(&answer[..m], peer).await;
                            // Then the real answer, below: the frame is
                            // already stored, so it is sent again as a
                            // duplicate would be.
                            let again = {
                                let mut store = shared.lock().unwrap();
                                server.receive(&mut *store, incoming.frame, unix_ms())
                            };
                            match again {
                                Ok(r) => (Code::CHANGED, None, r.response),
                                Err(_) => (Code::BAD_REQUEST, None, Vec::new()),
                            }
                        }
                        (_, Ok(r)) => (Code::CHANGED, None, r.response),
                        (_, Err(ReceiveError::Refused(_))) => (Code::BAD_REQUEST, None, Vec::new()),
                        (_, Err(ReceiveError::Store(_))) => {
                            (Code::SERVICE_UNAVAILABLE, Some(5), Vec::new())
                        }
                    }
                }
            };
            let m = incoming
                .answer(&mut answer, message_id, code, max_age, &payload)
                .unwrap();
            let _ = socket.send_to(&answer[..m], peer).await;
        }
    });
    End {
        addr,
        store,
        script,
    }
}

impl End {
    /// The next frame gets `scripted`.
    pub fn then(&self, scripted: Scripted) {
        self.script.lock().unwrap().push(scripted);
    }
}
