//! The server's end over MQTT (feature `mqtt`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration as RealDuration;

use embedded_io_adapters::tokio_1::FromTokio;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use telemark_mqtt::{Connect, Topics};
use telemark_server::{MemoryStore, Server};
use tokio::net::TcpStream;

use crate::{keyring, unix_ms};

/// The server end: `telemark-server` over a memory store, subscribed to
/// every device's uplink with a persistent session, answering on each
/// device's downlink topic.
pub fn serve(broker: SocketAddr) -> Arc<Mutex<MemoryStore>> {
    let store = Arc::new(Mutex::new(MemoryStore::new()));
    let shared = store.clone();
    let keyring = keyring();
    let mut options = MqttOptions::new(
        "telemark-server-end",
        broker.ip().to_string(),
        broker.port(),
    );
    options.set_clean_session(false);
    options.set_keep_alive(RealDuration::from_secs(5));
    let (client, mut events) = AsyncClient::new(options, 64);
    tokio::spawn(async move {
        let mut server = Server::new(keyring);
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(ack))) if !ack.session_present => {
                    client
                        .subscribe("telemark/v1/+/up", QoS::AtLeastOnce)
                        .await
                        .unwrap();
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    let Some(device) = Topics::device_of("telemark", &publish.topic) else {
                        continue;
                    };
                    let received = {
                        let mut store = shared.lock().unwrap();
                        server.receive(&mut *store, &publish.payload, unix_ms())
                    };
                    if let Ok(received) = received {
                        let topics = Topics::new("telemark", device).unwrap();
                        let _ = client
                            .publish(topics.down(), QoS::AtLeastOnce, false, received.response)
                            .await;
                    }
                }
                Ok(_) => {}
                // The broker is away: rumqttc dials again on the next poll.
                Err(_) => tokio::time::sleep(RealDuration::from_millis(50)).await,
            }
        }
    });
    store
}

/// The device's TCP, as its firmware has it from embassy-net: a tokio
/// socket behind the embedded-io adapter.
pub struct Tcp;

impl Connect for Tcp {
    type Io<'a> = FromTokio<TcpStream>;
    type Error = std::io::Error;

    async fn connect(&mut self, endpoint: SocketAddr) -> Result<Self::Io<'_>, Self::Error> {
        let stream = TcpStream::connect(endpoint).await?;
        stream.set_nodelay(true)?;
        Ok(FromTokio::new(stream))
    }
}
