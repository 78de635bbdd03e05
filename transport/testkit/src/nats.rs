//! The server's end over NATS (feature `nats`).

use std::sync::{Arc, Mutex};

use async_nats::ConnectOptions;
use futures_util::StreamExt;
use telemark_nats::Subjects;
use telemark_server::{MemoryStore, Server};

use crate::{keyring, unix_ms};

/// The server's end: `telemark-server` over a memory store, subscribed
/// to every device's uplink under `prefix`, answering on each device's
/// downlink subject after the commit.
pub async fn serve(url: &str, prefix: &str) -> Arc<Mutex<MemoryStore>> {
    let store = Arc::new(Mutex::new(MemoryStore::new()));
    let shared = store.clone();
    let client = ConnectOptions::new()
        .retain_servers_order()
        .connect(url)
        .await
        .unwrap();
    let mut uplinks = client.subscribe(Subjects::uplinks(prefix)).await.unwrap();
    client.flush().await.unwrap();
    let prefix = prefix.to_string();
    tokio::spawn(async move {
        let mut server = Server::new(keyring());
        // The client reconnects by itself and subscribes again.
        while let Some(message) = uplinks.next().await {
            let Some(device) = Subjects::device_of(&prefix, &message.subject) else {
                continue;
            };
            let received = {
                let mut store = shared.lock().unwrap();
                server.receive(&mut *store, &message.payload, unix_ms())
            };
            if let Ok(received) = received {
                let down = Subjects::new(&prefix, device).unwrap();
                let _ = client
                    .publish(down.down().to_string(), received.response.into())
                    .await;
            }
        }
    });
    store
}
