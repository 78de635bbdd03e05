//! Devices that reach the service through an MQTT broker: the embedded
//! one ([`telemark_mqtt_broker`]), or another (`--broker mqtt://HOST:PORT`).
//!
//! The service subscribes to every device's uplink,
//! `{prefix}/v1/+/up`, at QoS 1 with a persistent session of its own (so
//! frames published while it is away wait in the broker), hands each frame
//! to [`Hub::receive_from`] (a frame whose device is not
//! its topic's is refused), and publishes the response (sent only after
//! the commit) on that device's `{prefix}/v1/{device}/down`. A PUBACK is
//! not an acknowledgement: a frame the broker or the service loses is sent
//! again by its device, which frees nothing until the response says so.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{Client, ConnectionError, Event, MqttOptions, RecvTimeoutError};
use telemark_mqtt::Topics;

use crate::hub::Hub;
use crate::lock;

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
        let mut options = MqttOptions::new(&self.client_id, &self.host, self.port);
        options
            .set_clean_start(false)
            .set_session_expiry_interval(Some(7 * 24 * 3600))
            .set_keep_alive(Duration::from_secs(15));
        if let Some((user, password)) = &self.credentials {
            options.set_credentials(user, password);
        }
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

/// Serves devices through `broker` while `running` holds, dialling it
/// again whenever it goes away; each frame takes the hub only while it is
/// handled, so serial lines and the API share it. `clock` gives Unix
/// milliseconds. Returns an error only when the broker refuses the
/// service's credentials.
pub fn serve(
    hub: &Mutex<Hub>,
    broker: &Broker,
    clock: impl Fn() -> u64,
    running: &AtomicBool,
) -> Result<(), MqttError> {
    let (client, mut connection) = Client::new(broker.options(), 256);
    let uplinks = format!("{}/v1/+/up", broker.prefix);
    let mut away = false;
    while running.load(Ordering::Relaxed) {
        let event = match connection.recv_timeout(Duration::from_millis(500)) {
            Ok(event) => event,
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return Err(MqttError::Closed),
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                if away {
                    eprintln!("broker {}:{}: connected again", broker.host, broker.port);
                    away = false;
                }
                // A new session knows no subscription.
                if !ack.session_present {
                    client
                        .try_subscribe(uplinks.as_str(), QoS::AtLeastOnce)
                        .map_err(|_| MqttError::Closed)?;
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                let topic = String::from_utf8_lossy(&publish.topic);
                let Some(device) = Topics::device_of(&broker.prefix, &topic) else {
                    continue;
                };
                let response = lock(hub).receive_from(Some(device), &publish.payload, clock());
                let (Some(response), Some(topics)) =
                    (response, Topics::new(&broker.prefix, device))
                else {
                    continue;
                };
                // A response that does not fit the queue is lost like
                // any other: the device sends the frame again.
                if client
                    .try_publish(topics.down(), QoS::AtLeastOnce, false, response)
                    .is_err()
                {
                    eprintln!("device {device}: response dropped, the MQTT queue is full");
                }
            }
            Ok(_) => {}
            Err(ConnectionError::ConnectionRefused(code)) if refused_for_good(code) => {
                return Err(MqttError::Refused(code));
            }
            Err(e) => {
                if !away {
                    eprintln!(
                        "broker {}:{}: {e}; dialling again",
                        broker.host, broker.port
                    );
                    away = true;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        }
    }
    Ok(())
}
