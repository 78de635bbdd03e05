//! Home Assistant MQTT discovery (`--home-assistant`): each device's
//! channels appear in Home Assistant, and in openHAB's MQTT binding, by
//! themselves.
//!
//! On the devices' broker (or the one `--home-assistant-broker` names) the
//! service publishes, retained, at QoS 1:
//!
//! - a discovery config per channel on
//!   `homeassistant/sensor/telemark_ID_CH/config`, its `device_class`,
//!   `state_class` and `unit_of_measurement` taken from the unit the
//!   device reported for the channel ([`classes`]): gas in m³ counts in
//!   the Energy dashboard;
//! - a `binary_sensor` per channel, `telemark_ID_CH_alert`, on while the
//!   channel's last alert is raised and not cleared;
//! - the device's states on `P/v1/ID/ha/state`, one JSON object with the
//!   latest value of each channel in its unit (`ch1`, `ch1_alert`, …),
//!   published on every stored block;
//! - its availability on `P/v1/ID/ha/availability`: `online` or `offline`,
//!   from the silent-device rule;
//! - a `switch` per output the operator named (`PUT
//!   /v1/devices/{id}/outputs`), `telemark_ID_outN`: Home Assistant's `ON`
//!   or `OFF` on `P/v1/ID/ha/output/N/set` becomes a `set_output` command,
//!   and the switch's state on `P/v1/ID/ha/output/N/state` follows the
//!   device's result, not the request (a refusal sets it back).
//!
//! When Home Assistant says `online` on `homeassistant/status` (its birth
//! message, after every restart) everything is published again. A revoked
//! device's configs are published empty, which removes its entities.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event};
use serde_json::{json, Value as Json};
use telemark_core::channel::{Unit, ValueKind};
use telemark_core::model::{AlertKind, Value};
use telemark_core::wire::report::Report;
use tokio::sync::{mpsc, watch};

use crate::hub::{HubHandle, Stored};
use crate::mqtt::Broker;
use crate::store::{ChannelRow, Device, OutputRow};
use telemark_core::wire::frame::Command;

/// How often device states are read for availability and new channels.
const POLL: Duration = Duration::from_secs(2);

/// What Home Assistant needs to place a channel: its device class, state
/// class and unit of measurement.
///
/// ```
/// use telemark_cloud::home_assistant::classes;
/// use telemark_core::channel::{Unit, ValueKind};
/// let gas = classes(Unit::CubicMetre, ValueKind::Scaled { decimals: 3 });
/// assert_eq!(gas, (Some("gas"), "total_increasing", Some("m³")));
/// let temperature = classes(Unit::Celsius, ValueKind::Scaled { decimals: 2 });
/// assert_eq!(temperature, (Some("temperature"), "measurement", Some("°C")));
/// ```
pub fn classes(
    unit: Unit,
    kind: ValueKind,
) -> (Option<&'static str>, &'static str, Option<&'static str>) {
    let class = match unit {
        Unit::Celsius => Some("temperature"),
        Unit::Percent => Some("humidity"),
        Unit::Pascal | Unit::Hectopascal => Some("pressure"),
        Unit::CubicMetre => Some("gas"),
        Unit::Litre => Some("water"),
        Unit::LitrePerMinute | Unit::CubicMetrePerHour => Some("volume_flow_rate"),
        Unit::Volt | Unit::Millivolt => Some("voltage"),
        Unit::Milliampere => Some("current"),
        Unit::MetrePerSecond => Some("wind_speed"),
        Unit::WattPerSquareMetre => Some("irradiance"),
        _ => None,
    };
    // Meters and counters only grow: their totals count in the Energy
    // dashboard's sums.
    let total = matches!(unit, Unit::CubicMetre | Unit::Litre) || kind == ValueKind::Counter;
    let state = if total {
        "total_increasing"
    } else {
        "measurement"
    };
    let symbol = Some(unit.symbol()).filter(|s| !s.is_empty());
    (class, state, symbol)
}

/// A name for a channel in Home Assistant.
fn label(unit: Unit, channel: u16) -> String {
    let what = match unit {
        Unit::Celsius => "Temperature",
        Unit::Percent => "Humidity",
        Unit::Pascal | Unit::Hectopascal => "Pressure",
        Unit::CubicMetre => "Gas",
        Unit::Litre => "Water",
        Unit::Volt | Unit::Millivolt => "Voltage",
        Unit::Milliampere => "Current",
        Unit::Count => "Count",
        _ => "Channel",
    };
    format!("{what} {channel}")
}

/// A reading's value in its channel's unit.
pub fn in_unit(value: Value, kind: ValueKind) -> f64 {
    match (value, kind) {
        (Value::Scaled(x), ValueKind::Scaled { decimals }) => {
            f64::from(x) / 10f64.powi(i32::from(decimals))
        }
        (v, _) => crate::store::number(v),
    }
}

/// The topics of one device.
struct Topics {
    state: String,
    availability: String,
}

impl Topics {
    fn of(prefix: &str, device: u64) -> Topics {
        let base = format!("{prefix}/v1/{device}/ha");
        Topics {
            state: format!("{base}/state"),
            availability: format!("{base}/availability"),
        }
    }
}

/// The `device` block of a device's entities: one device in Home
/// Assistant for all of them. The wire carries no firmware version, so
/// `sw_version` names the protocol.
fn device_block(device: &Device) -> Json {
    json!({
        "identifiers": [format!("telemark_{}", device.id)],
        "name": device.name,
        "manufacturer": "telemark",
        "model": "telemark device",
        "sw_version": "telemark protocol 2",
    })
}

/// Who published the config.
fn origin() -> Json {
    json!({ "name": "telemark-cloud", "sw_version": env!("CARGO_PKG_VERSION") })
}

/// The discovery configs of `device`'s `channel`: (topic, payload) of its
/// sensor and of its alert's binary sensor.
pub fn discovery(
    discovery_prefix: &str,
    prefix: &str,
    device: &Device,
    channel: &ChannelRow,
) -> [(String, Json); 2] {
    let topics = Topics::of(prefix, device.id);
    let (id, ch) = (device.id, channel.channel);
    let (block, origin) = (device_block(device), origin());
    let (class, state_class, unit) = classes(channel.unit, channel.kind);
    let mut sensor = json!({
        "name": label(channel.unit, ch),
        "unique_id": format!("telemark_{id}_{ch}"),
        "object_id": format!("telemark_{id}_{ch}"),
        "state_topic": topics.state,
        "value_template": format!("{{{{ value_json.ch{ch} }}}}"),
        "availability_topic": topics.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
        "state_class": state_class,
        "device": block,
        "origin": origin,
    });
    if let Some(fields) = sensor.as_object_mut() {
        if let Some(class) = class {
            fields.insert("device_class".into(), class.into());
        }
        if let Some(unit) = unit {
            fields.insert("unit_of_measurement".into(), unit.into());
        }
    }
    let alert = json!({
        "name": format!("{} alert", label(channel.unit, ch)),
        "unique_id": format!("telemark_{id}_{ch}_alert"),
        "object_id": format!("telemark_{id}_{ch}_alert"),
        "state_topic": topics.state,
        "value_template": format!("{{{{ value_json.ch{ch}_alert }}}}"),
        "payload_on": "ON",
        "payload_off": "OFF",
        "device_class": "problem",
        "availability_topic": topics.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": block,
        "origin": origin,
    });
    [
        (
            format!("{discovery_prefix}/sensor/telemark_{id}_{ch}/config"),
            sensor,
        ),
        (
            format!("{discovery_prefix}/binary_sensor/telemark_{id}_{ch}_alert/config"),
            alert,
        ),
    ]
}

/// The topic an output's state goes on, and the one its commands come on.
fn output_topics(prefix: &str, device: u64, output: u8) -> (String, String) {
    let base = format!("{prefix}/v1/{device}/ha/output/{output}");
    (format!("{base}/state"), format!("{base}/set"))
}

/// The discovery config of `device`'s `output`: (topic, payload).
pub fn switch(
    discovery_prefix: &str,
    prefix: &str,
    device: &Device,
    output: &OutputRow,
) -> (String, Json) {
    let (id, n) = (device.id, output.output);
    let (state, set) = output_topics(prefix, id, n);
    let config = json!({
        "name": output.name,
        "unique_id": format!("telemark_{id}_out{n}"),
        "object_id": format!("telemark_{id}_out{n}"),
        "command_topic": set,
        "state_topic": state,
        "payload_on": "ON",
        "payload_off": "OFF",
        "state_on": "ON",
        "state_off": "OFF",
        "optimistic": false,
        "availability_topic": Topics::of(prefix, id).availability,
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": device_block(device),
        "origin": origin(),
    });
    (
        format!("{discovery_prefix}/switch/telemark_{id}_out{n}/config"),
        config,
    )
}

/// What the publisher knows of a device.
#[derive(Default)]
struct Known {
    device: Option<Device>,
    channels: BTreeMap<u16, ChannelRow>,
    /// Latest value of each channel, in its unit; alerts raised.
    values: BTreeMap<u16, f64>,
    alerts: BTreeMap<u16, bool>,
    /// Its named outputs, and what the device last said each is set to.
    outputs: Vec<OutputRow>,
    switched: BTreeMap<u8, bool>,
    announced_outputs: Vec<OutputRow>,
    /// What was published: the channels announced, the availability.
    announced: Vec<u16>,
    available: Option<&'static str>,
    removed: bool,
}

impl Known {
    fn state(&self) -> Json {
        let mut state = serde_json::Map::new();
        for (ch, v) in &self.values {
            state.insert(format!("ch{ch}"), json!(v));
        }
        for ch in self.channels.keys() {
            let raised = self.alerts.get(ch).copied().unwrap_or(false);
            state.insert(format!("ch{ch}_alert"), json!(on_off(raised)));
        }
        Json::Object(state)
    }
}

fn on_off(on: bool) -> &'static str {
    if on {
        "ON"
    } else {
        "OFF"
    }
}

/// Where the publisher sends, and what it knows.
struct Publisher {
    client: AsyncClient,
    discovery_prefix: String,
    prefix: String,
    devices: HashMap<u64, Known>,
}

impl Publisher {
    async fn publish(&self, topic: String, payload: String) {
        if let Err(e) = self
            .client
            .publish(topic, QoS::AtLeastOnce, true, payload)
            .await
        {
            tracing::warn!(error = %e, "home assistant: not published");
        }
    }

    /// Announces every channel of `id` not yet announced (all, if `again`),
    /// and its availability if it changed (or `again`).
    async fn announce(&mut self, id: u64, again: bool) {
        let Some(known) = self.devices.get(&id) else {
            return;
        };
        let Some(device) = known.device.clone() else {
            return;
        };
        let topics = Topics::of(&self.prefix, id);
        if device.revoked_ms.is_some() {
            if known.removed {
                return;
            }
            for channel in known.channels.values() {
                for (topic, _) in discovery(&self.discovery_prefix, &self.prefix, &device, channel)
                {
                    self.publish(topic, String::new()).await;
                }
            }
            for output in &known.announced_outputs {
                let (topic, _) = switch(&self.discovery_prefix, &self.prefix, &device, output);
                self.publish(topic, String::new()).await;
            }
            if let Some(k) = self.devices.get_mut(&id) {
                k.removed = true;
            }
            return;
        }
        let fresh: Vec<ChannelRow> = known
            .channels
            .values()
            .filter(|c| again || !known.announced.contains(&c.channel))
            .copied()
            .collect();
        for channel in &fresh {
            for (topic, config) in discovery(&self.discovery_prefix, &self.prefix, &device, channel)
            {
                self.publish(topic, config.to_string()).await;
            }
        }
        if again || known.outputs != known.announced_outputs {
            let (outputs, before) = (known.outputs.clone(), known.announced_outputs.clone());
            let switched = known.switched.clone();
            for gone in before
                .iter()
                .filter(|o| !outputs.iter().any(|n| n.output == o.output))
            {
                let (topic, _) = switch(&self.discovery_prefix, &self.prefix, &device, gone);
                self.publish(topic, String::new()).await;
            }
            for output in &outputs {
                let (topic, config) = switch(&self.discovery_prefix, &self.prefix, &device, output);
                self.publish(topic, config.to_string()).await;
                if let Some(on) = switched.get(&output.output) {
                    let (state, _) = output_topics(&self.prefix, id, output.output);
                    self.publish(state, on_off(*on).into()).await;
                }
            }
            if let Some(k) = self.devices.get_mut(&id) {
                k.announced_outputs = outputs;
            }
        }
        let Some(known) = self.devices.get(&id) else {
            return;
        };
        let available = if device.state() == "online" {
            "online"
        } else {
            "offline"
        };
        let changed = known.available != Some(available);
        let state = known.state().to_string();
        let has_values = !known.values.is_empty();
        if changed || again {
            self.publish(topics.availability, available.into()).await;
        }
        // New entities get their state at once, not at the next block.
        if (again || !fresh.is_empty()) && has_values {
            self.publish(topics.state, state).await;
        }
        if let Some(k) = self.devices.get_mut(&id) {
            k.announced.extend(fresh.iter().map(|c| c.channel));
            k.available = Some(available);
        }
    }

    /// Takes in what the hub stored for `id`; publishes the new state.
    async fn stored(&mut self, hub: &HubHandle, id: u64, stored: Stored) {
        if self.devices.get(&id).is_none_or(|k| k.device.is_none()) {
            // A device added since the last look.
            self.refresh(hub, false).await;
        }
        let known = self.devices.entry(id).or_default();
        // Heard: available, without waiting for the next look.
        let heard = known
            .device
            .as_ref()
            .is_some_and(|d| d.revoked_ms.is_none());
        if heard && known.available != Some("online") {
            known.available = Some("online");
            let topic = Topics::of(&self.prefix, id).availability;
            self.publish(topic, "online".into()).await;
        }
        let Some(known) = self.devices.get_mut(&id) else {
            return;
        };
        match stored {
            Stored::Readings(readings) => {
                for r in readings.iter().map(|t| t.reading) {
                    if let Some(c) = known.channels.get(&r.channel.0) {
                        known.values.insert(r.channel.0, in_unit(r.value, c.kind));
                    }
                }
            }
            Stored::Report(Report::Channel {
                channel,
                unit,
                kind,
            }) => {
                known
                    .channels
                    .insert(channel.0, ChannelRow::of_report(channel, unit, kind));
                known.announced.retain(|&c| c != channel.0);
                return self.announce(id, false).await;
            }
            Stored::Report(Report::CommandResult {
                id: command,
                status,
                ..
            }) => {
                return self.answered(hub, id, command, status == 0).await;
            }
            Stored::Report(Report::Alert(a)) => {
                let raised = match a.kind {
                    AlertKind::High
                    | AlertKind::Low
                    | AlertKind::Stuck
                    | AlertKind::SensorFault => Some(true),
                    AlertKind::HighCleared | AlertKind::LowCleared | AlertKind::SensorRecovered => {
                        Some(false)
                    }
                    _ => None,
                };
                if let Some(raised) = raised {
                    known.alerts.insert(a.channel.0, raised);
                }
            }
            _ => return,
        }
        if known
            .device
            .as_ref()
            .is_some_and(|d| d.revoked_ms.is_none())
            && !known.values.is_empty()
        {
            let state = known.state().to_string();
            self.publish(Topics::of(&self.prefix, id).state, state)
                .await;
        }
    }

    /// `command` of device `id` was answered, done or refused: the switch
    /// it set shows what the device did.
    async fn answered(&mut self, hub: &HubHandle, id: u64, command: u32, done: bool) {
        let asked = hub
            .call(move |hub| hub.store().commands(id))
            .await
            .and_then(Result::ok)
            .and_then(|list| list.into_iter().find(|c| c.id == command));
        let Some(Command::SetOutput { output, value }) = asked.map(|c| c.command) else {
            return;
        };
        let Some(known) = self.devices.get_mut(&id) else {
            return;
        };
        if !known.outputs.iter().any(|o| o.output == output) {
            return;
        }
        if done {
            known.switched.insert(output, value != 0);
        }
        // Refused, the switch goes back to what the device last did.
        let on = known.switched.get(&output).copied().unwrap_or(false);
        let (state, _) = output_topics(&self.prefix, id, output);
        self.publish(state, on_off(on).into()).await;
    }

    /// Home Assistant set a switch: `topic` is `P/v1/ID/ha/output/N/set`.
    async fn set(&mut self, hub: &HubHandle, topic: &str, payload: &[u8]) {
        let prefix = format!("{}/v1/", self.prefix);
        let Some(rest) = topic.strip_prefix(&prefix) else {
            return;
        };
        let parts: Vec<&str> = rest.split('/').collect();
        let [device, "ha", "output", output, "set"] = parts.as_slice() else {
            return;
        };
        let (Ok(id), Ok(output)) = (device.parse::<u64>(), output.parse::<u8>()) else {
            return;
        };
        let value = match payload {
            b"ON" => 1,
            b"OFF" => 0,
            other => {
                let payload = String::from_utf8_lossy(other);
                tracing::warn!(device = id, output, %payload, "home assistant: a switch set neither ON nor OFF");
                return;
            }
        };
        let named = self.devices.get(&id).is_some_and(|k| {
            k.outputs.iter().any(|o| o.output == output)
                && k.device.as_ref().is_some_and(|d| d.revoked_ms.is_none())
        });
        if !named {
            tracing::warn!(
                device = id,
                output,
                "home assistant: a switch of no named output"
            );
            return;
        }
        let command = Command::SetOutput { output, value };
        match hub.call(move |hub| hub.queue_command(id, command)).await {
            Some(Ok(queued)) => {
                tracing::info!(
                    device = id,
                    output,
                    value,
                    command = queued,
                    "home assistant: command queued"
                )
            }
            Some(Err(e)) => {
                tracing::warn!(device = id, output, error = %e, "home assistant: command not queued")
            }
            None => {}
        }
    }

    /// Reads every device, its state and its channels, from the hub.
    async fn refresh(&mut self, hub: &HubHandle, again: bool) {
        let read = hub
            .call(|hub| {
                let devices = hub.store().devices()?;
                let mut out = Vec::with_capacity(devices.len());
                for d in devices {
                    let channels = hub.store().channels(d.id)?;
                    let outputs = hub.store().outputs(d.id)?;
                    out.push((d, channels, outputs));
                }
                Ok::<_, crate::StoreError>(out)
            })
            .await;
        let devices = match read {
            Some(Ok(devices)) => devices,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "home assistant: devices not read");
                return;
            }
            None => return,
        };
        for (device, channels, outputs) in devices {
            let id = device.id;
            let known = self.devices.entry(id).or_default();
            known.device = Some(device);
            known.outputs = outputs;
            for c in channels {
                known.channels.entry(c.channel).or_insert(c);
            }
            self.announce(id, again).await;
        }
    }
}

/// Publishes discovery, states and availability through `broker` until
/// `stop` turns true; `seen` brings what the hub stores (a
/// [`crate::Hub::watch`] that forwards it).
pub async fn serve(
    hub: HubHandle,
    broker: Broker,
    discovery_prefix: String,
    mut seen: mpsc::Receiver<(u64, Stored)>,
    mut stop: watch::Receiver<bool>,
) {
    let options = broker.options_as(&format!("{}-home-assistant", broker.client_id));
    let (client, mut events) = AsyncClient::new(options, 1024);
    let status = format!("{discovery_prefix}/status");
    let sets = format!("{}/v1/+/ha/output/+/set", broker.prefix);
    let mut publisher = Publisher {
        client: client.clone(),
        discovery_prefix,
        prefix: broker.prefix.clone(),
        devices: HashMap::new(),
    };
    let mut poll = tokio::time::interval(POLL);
    let mut away = false;
    loop {
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            changed = stop.changed() => if changed.is_err() {
                return;
            },
            _ = poll.tick() => publisher.refresh(&hub, false).await,
            Some((id, stored)) = seen.recv() => publisher.stored(&hub, id, stored).await,
            event = events.poll() => match event {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    if away {
                        tracing::info!("home assistant: broker connected again");
                        away = false;
                    }
                    for filter in [status.clone(), sets.clone()] {
                        if let Err(e) = client.subscribe(filter, QoS::AtLeastOnce).await {
                            tracing::warn!(error = %e, "home assistant: not subscribed");
                        }
                    }
                    publisher.refresh(&hub, true).await;
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let topic = String::from_utf8_lossy(&p.topic).into_owned();
                    if topic == status {
                        if p.payload.as_ref() == b"online" {
                            tracing::info!("home assistant online: publishing everything again");
                            publisher.refresh(&hub, true).await;
                        }
                    } else {
                        publisher.set(&hub, &topic, &p.payload).await;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    if !away {
                        tracing::warn!(error = %e, "home assistant: broker not reached; dialling again");
                        away = true;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            },
        }
    }
}
