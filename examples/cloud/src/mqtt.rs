//! Devices that reach the service through an MQTT broker: the embedded
//! one ([`telemark_mqtt_broker`]), or another (`--broker mqtt://HOST:PORT`).
//!
//! The service subscribes to every device's uplink,
//! `{prefix}/v1/+/up`, at QoS 1 with a persistent session of its own (so
//! frames published while it is away wait in the broker), hands each frame
//! to the hub without waiting for the one before (so frames that arrive
//! together are committed together; a frame whose device is not its
//! topic's is refused), and publishes the response (sent only after the
//! commit) on that device's `{prefix}/v1/{device}/down`. A PUBACK is
//! not an acknowledgement: a frame the broker or the service loses is sent
//! again by its device, which frees nothing until the response says so.

use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions};
use rumqttc::NetworkOptions;
use telemark_mqtt::Topics;
use tokio::sync::watch;

use crate::hub::{Arrival, HubHandle, NotAcknowledged};

/// Where the service meets its devices.
#[derive(Clone, Debug)]
pub struct Broker {
    /// The broker's host name or address.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The devices' topic prefix (`telemark` by default).
    pub prefix: String,
    /// The service's MQTT client id: keep it from one run to the next, so
    /// the broker keeps the service's session.
    pub client_id: String,
    /// User name and password, if the broker asks for them.
    pub credentials: Option<(String, String)>,
}

impl Broker {
    /// A broker at `host:port`, prefix `telemark`, client id
    /// `telemark-cloud`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Broker {
            host: host.into(),
            port,
            prefix: "telemark".into(),
            client_id: "telemark-cloud".into(),
            credentials: None,
        }
    }

    fn options(&self) -> MqttOptions {
        self.options_as(&self.client_id)
    }

    /// The options of a client of the service named `client_id`: its
    /// session kept a week, the broker's credentials, no Nagle delay.
    pub(crate) fn options_as(&self, client_id: &str) -> MqttOptions {
        let mut options = MqttOptions::new(client_id, &self.host, self.port);
        options
            .set_clean_start(false)
            .set_session_expiry_interval(Some(7 * 24 * 3600))
            .set_keep_alive(Duration::from_secs(15))
            // Responses to many devices go out at once; past this many
            // unacknowledged the client queues them. Its default, 65,535,
            // costs a slot each from the start: an instance's RSS was
            // 45 MiB with it, 26 MiB without.
            .set_outgoing_inflight_upper_limit(1024);
        if let Some((user, password)) = &self.credentials {
            options.set_credentials(user, password);
        }
        // A response goes out as soon as it is committed, not when Nagle
        // lets it.
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        options.set_network_options(network);
        options
    }
}

/// Why serving a broker stopped.
#[derive(Debug)]
pub enum MqttError {
    /// The broker refused the service's connection for good (its
    /// credentials or its client id); dialling again would not help.
    Refused(ConnectReturnCode),
    /// The MQTT client's request queue closed.
    Closed,
}

impl std::fmt::Display for MqttError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MqttError::Refused(code) => write!(f, "the broker refused the service: {code:?}"),
            MqttError::Closed => f.write_str("the MQTT client closed"),
        }
    }
}

impl std::error::Error for MqttError {}

/// Return codes that say the same CONNECT will be refused again.
fn refused_for_good(code: ConnectReturnCode) -> bool {
    matches!(
        code,
        ConnectReturnCode::BadUserNamePassword
            | ConnectReturnCode::NotAuthorized
            | ConnectReturnCode::Banned
            | ConnectReturnCode::BadAuthenticationMethod
            | ConnectReturnCode::ClientIdentifierNotValid
    )
}

/// Serves devices through `broker` until `stop` turns true, dialling it
/// again whenever it goes away. `clock` gives Unix milliseconds. Returns
/// an error only when the broker refuses the service's credentials.
pub async fn serve(
    hub: HubHandle,
    broker: Broker,
    clock: fn() -> u64,
    mut stop: watch::Receiver<bool>,
) -> Result<(), MqttError> {
    let (client, mut events) = AsyncClient::new(broker.options(), 1024);
    let uplinks = format!("{}/v1/+/up", broker.prefix);
    let mut away = false;
    loop {
        let event = tokio::select! {
            event = events.poll() => event,
            _ = stop.wait_for(|&stop| stop) => return Ok(()),
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                if away {
                    tracing::info!(host = %broker.host, port = broker.port, "broker connected again");
                    away = false;
                }
                // A new session knows no subscription.
                if !ack.session_present {
                    client
                        .subscribe(uplinks.as_str(), QoS::AtLeastOnce)
                        .await
                        .map_err(|_| MqttError::Closed)?;
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let topic = String::from_utf8_lossy(&publish.topic);
                let Some(topics) = Topics::device_of(&broker.prefix, &topic)
                    .and_then(|d| Topics::new(&broker.prefix, d))
                else {
                    continue;
                };
                let arrival = Arrival {
                    device: Topics::device_of(&broker.prefix, &topic),
                    frame: publish.payload.to_vec(),
                    received_unix_ms: clock(),
                };
                let (hub, client) = (hub.clone(), client.clone());
                tokio::spawn(async move {
                    match hub.receive(arrival).await {
                        // A response the broker loses is lost like any
                        // other: the device sends the frame again.
                        Ok(response) if !response.is_empty() => {
                            let _ = client
                                .publish(topics.down(), QoS::AtLeastOnce, false, response)
                                .await;
                        }
                        Err(NotAcknowledged::Unstored(e)) => {
                            tracing::warn!(error = %e, "frame not stored, not acknowledged (the device sends it again)")
                        }
                        _ => {}
                    }
                });
            }
            Ok(_) => {}
            Err(ConnectionError::ConnectionRefused(code)) if refused_for_good(code) => {
                return Err(MqttError::Refused(code));
            }
            Err(e) => {
                if !away {
                    tracing::warn!(
                        host = %broker.host,
                        port = broker.port,
                        error = %e,
                        "broker not reached; dialling again"
                    );
                    away = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}
