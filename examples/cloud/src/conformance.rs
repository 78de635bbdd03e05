//! The conformance suite every [`CloudStore`] backend runs: the
//! protocol's ([`telemark_server::conformance`]) and the service's own,
//! through a real [`Hub`] and sealed frames: devices and keys, revocation,
//! range queries over blocks kept compressed, commands and config,
//! alerts, groups and tokens, silent devices.
//!
//! ```
//! use telemark_cloud::{conformance, SqliteStore};
//! conformance::run(|| Box::new(SqliteStore::in_memory().expect("SQLite in memory")));
//! ```
//!
//! Each check panics with what the backend got wrong.

use telemark_core::codec::{BlockCodec, CompactCodec};
use telemark_core::model::{Alert, AlertKind, ChannelId, Reading, Severity, Value};
use telemark_core::time::Instant;
use telemark_core::wire::frame::{Command, FrameWriter};
use telemark_core::wire::report::Report;
use telemark_core::wire::seal::{FrameKind, Header, Sealing};
use telemark_core::wire::{Epoch, Record, RecordMeta, Seq};

use crate::access::Role;
use crate::hub::{Hub, Provisioned};
use crate::rules::{RuleSpec, Then, When};
use crate::silence::{Rule, Watch};
use crate::store::{CloudStore, DeliveryRow, Device, DeviceKey, ReadingQuery, StoreError};

const ADDED: i64 = 1_600_000_000_000;
/// When the frames arrive; each was sent at uptime 100 s.
const RECEIVED: u64 = 1_700_000_000_000;
const UPTIME_MS: u64 = 100_000;

/// Runs every check, each on a fresh store from `fresh`.
pub fn run(mut fresh: impl FnMut() -> Box<dyn CloudStore>) {
    telemark_server::conformance::run(&mut fresh);
    devices_are_named_once(fresh());
    revoked_devices_are_refused(fresh());
    readings_are_queried_by_channel_and_time(fresh());
    commands_and_config_are_listed(fresh());
    alerts_are_listed_latest_first(fresh());
    groups_and_tokens_are_kept(fresh());
    silent_devices_go_offline_and_recover(fresh());
    commands_are_sent_answered_or_expire(fresh());
    notifications_are_kept_and_delivered_in_order(fresh());
    rules_fire_on_runs_in_their_unix_time(fresh());
    channels_are_kept_as_reported(fresh());
    health_is_the_latest_heartbeat(fresh());
}

/// A device's health is its latest heartbeat, in the Unix time it was
/// sent.
pub fn health_is_the_latest_heartbeat(store: Box<dyn CloudStore>) {
    use telemark_core::wire::report::{Heartbeat, ResetReason};
    let mut hub = hub(store);
    let p = add(&mut hub, "beating");
    assert_eq!(ok(hub.store().health(p.device.id)), None);
    let beat = |uptime_s, queue_depth| Heartbeat {
        uptime_s,
        sampled: 120,
        sent_readings: 100,
        bytes_on_air: 2_000,
        retries: 3,
        evicted: 0,
        decimated: 0,
        sensor_faults: 1,
        queue_depth,
        reset_reason: ResetReason::PowerOn,
        wakeups: 9,
    };
    for (counter, b) in [(1u32, beat(60, 7)), (2, beat(90, 2))] {
        let frame = report_frame(
            &p,
            counter,
            counter - 1,
            Report::Heartbeat(b),
            Severity::Info,
        );
        assert!(hub.receive(&frame, RECEIVED).is_some());
    }
    let health = ok(hub.store().health(p.device.id));
    assert_eq!(health.map(|h| h.heartbeat), Some(beat(90, 2)));
}

/// A device's channels are kept as it reports them, the latest report of
/// each channel winning, apart from every other device's; its outputs as
/// last named.
pub fn channels_are_kept_as_reported(store: Box<dyn CloudStore>) {
    use telemark_core::channel::{Unit, ValueKind};
    let mut hub = hub(store);
    let p = add(&mut hub, "meter");
    let other = add(&mut hub, "other");
    let report = |channel, unit, kind| Report::Channel {
        channel: ChannelId(channel),
        unit,
        kind,
    };
    let gas = report(2, Unit::CubicMetre, ValueKind::Scaled { decimals: 3 });
    let frames = [
        report_frame(
            &p,
            1,
            0,
            report(1, Unit::Celsius, ValueKind::Scaled { decimals: 2 }),
            Severity::Info,
        ),
        report_frame(&p, 2, 1, gas, Severity::Info),
        report_frame(
            &p,
            3,
            2,
            report(1, Unit::Celsius, ValueKind::Scaled { decimals: 1 }),
            Severity::Info,
        ),
    ];
    for frame in &frames {
        assert!(hub.receive(frame, RECEIVED).is_some());
    }
    let row = |channel, unit, kind| crate::ChannelRow {
        channel,
        unit,
        kind,
    };
    assert_eq!(
        ok(hub.store().channels(p.device.id)),
        [
            row(1, Unit::Celsius, ValueKind::Scaled { decimals: 1 }),
            row(2, Unit::CubicMetre, ValueKind::Scaled { decimals: 3 }),
        ]
    );
    assert!(ok(hub.store().channels(other.device.id)).is_empty());
    // Outputs are named by the operator, a new list in place of the old.
    let output = |output, name: &str| crate::OutputRow {
        output,
        name: name.into(),
    };
    assert!(ok(hub.store().outputs(p.device.id)).is_empty());
    let both = [output(1, "burner"), output(2, "pump")];
    ok(hub.store().set_outputs(p.device.id, &both));
    assert_eq!(ok(hub.store().outputs(p.device.id)), both);
    ok(hub.store().set_outputs(p.device.id, &both[1..]));
    assert_eq!(ok(hub.store().outputs(p.device.id)), both[1..]);
    assert!(ok(hub.store().outputs(other.device.id)).is_empty());
}

fn hub(store: Box<dyn CloudStore>) -> Hub {
    match Hub::new(store) {
        Ok(hub) => hub,
        Err(e) => panic!("the hub does not start: {e}"),
    }
}

fn add(hub: &mut Hub, name: &str) -> Provisioned {
    match hub.add_device(name, ADDED) {
        Ok(p) => p,
        Err(e) => panic!("device {name} not added: {e}"),
    }
}

fn ok<T>(r: Result<T, StoreError>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("the store failed: {e}"),
    }
}

/// Readings of two channels, 1 s apart from uptime `first_s`: channel 1
/// counts from 100, channel 2 from -100.
fn readings(first_s: u64, n: u64) -> Vec<Reading> {
    (0..n)
        .map(|k| {
            let t = Instant::from_millis((first_s + k) * 1000);
            let (channel, value) = if k % 2 == 0 {
                (1, 100 + k as i32)
            } else {
                (2, -100 - k as i32)
            };
            Reading::new(ChannelId(channel), t, Value::Scaled(value))
        })
        .collect()
}

/// A records frame of `p`, counter `counter`, holding one record: `seq`,
/// `meta`, `payload`; sent at uptime [`UPTIME_MS`].
fn sealed(p: &Provisioned, counter: u32, seq: u32, meta: RecordMeta, payload: &[u8]) -> Vec<u8> {
    let sealing = Sealing::key(p.key_id, p.key.clone());
    let header = Header::new(FrameKind::Records, p.device.id, Epoch(7), counter, &sealing);
    let mut buf = vec![0u8; payload.len() + 256];
    let uptime = Instant::from_millis(UPTIME_MS);
    let Ok(mut w) = FrameWriter::new(&mut buf, &header, uptime, &sealing) else {
        panic!("frame header does not fit");
    };
    let record = Record {
        seq: Seq(seq),
        meta,
        payload,
    };
    assert!(w.push(&record, None).is_ok(), "record does not fit");
    let n = w.finish(&sealing).unwrap_or(0);
    buf.truncate(n);
    buf
}

/// A frame with one block of `readings` as record `seq`.
fn frame(p: &Provisioned, counter: u32, seq: u32, readings: &[Reading]) -> Vec<u8> {
    let mut block = vec![0u8; 4096];
    let len = CompactCodec.encode(readings, &mut block).unwrap_or(0);
    block.truncate(len);
    let n = u16::try_from(readings.len()).unwrap_or(u16::MAX);
    sealed(p, counter, seq, RecordMeta::routine(n), &block)
}

/// A frame with one alert report as record `seq`.
fn alert_frame(p: &Provisioned, counter: u32, seq: u32, alert: Alert) -> Vec<u8> {
    report_frame(p, counter, seq, Report::Alert(alert), alert.severity)
}

/// A frame with one report of `severity` as record `seq`.
fn report_frame(
    p: &Provisioned,
    counter: u32,
    seq: u32,
    report: Report,
    severity: Severity,
) -> Vec<u8> {
    let mut payload = [0u8; 64];
    let len = report.encode(&mut payload).unwrap_or(0);
    let meta = RecordMeta::alert(severity, 1);
    sealed(
        p,
        counter,
        seq,
        meta,
        payload.get(..len).unwrap_or_default(),
    )
}

/// A device is added with its key; a name or an id in use is refused and
/// changes nothing.
pub fn devices_are_named_once(store: Box<dyn CloudStore>) {
    let mut hub = hub(store);
    let a = add(&mut hub, "boiler-1");
    let b = add(&mut hub, "boiler-2");
    assert_ne!(a.device.id, b.device.id);
    assert!(
        hub.add_device("boiler-1", ADDED).is_err(),
        "a name taken twice"
    );
    let clash = Device {
        name: "other".into(),
        ..a.device.clone()
    };
    let key = DeviceKey {
        device: a.device.id,
        id: 1,
        key: a.key.clone(),
    };
    assert!(
        matches!(
            hub.store().add_device(&clash, &key),
            Err(StoreError::Taken(_))
        ),
        "an id taken twice"
    );
    let devices = ok(hub.store().devices());
    let mut ids = vec![a.device.id, b.device.id];
    ids.sort_unstable();
    assert_eq!(devices.iter().map(|d| d.id).collect::<Vec<_>>(), ids);
    let stored = ok(hub.store().device(a.device.id));
    assert_eq!(stored.as_ref().map(|d| d.name.as_str()), Some("boiler-1"));
    assert_eq!(stored.and_then(|d| d.last_seen_ms), None);
    let keys = ok(hub.store().keys());
    assert_eq!(keys.len(), 2);
    assert!(keys
        .iter()
        .any(|k| k.device == a.device.id && k.key == a.key));
    // A key added to a device that does not exist is refused.
    let stray = DeviceKey {
        device: 42,
        id: 1,
        key: a.key.clone(),
    };
    assert!(hub.store().add_key(&stray).is_err(), "a key of no device");
}

/// A revoked device's frames are refused, after a restart too; its data
/// stays.
pub fn revoked_devices_are_refused(store: Box<dyn CloudStore>) {
    let mut hub = hub(store);
    let p = add(&mut hub, "meter");
    assert!(hub
        .receive(&frame(&p, 1, 0, &readings(10, 4)), RECEIVED)
        .is_some());
    assert!(hub.revoke(p.device.id, ADDED + 1).is_ok());
    assert!(hub
        .receive(&frame(&p, 2, 1, &readings(20, 4)), RECEIVED)
        .is_none());
    assert!(
        hub.revoke(12345, ADDED).is_err(),
        "revoked a device that is not"
    );
    let device = ok(hub.store().device(p.device.id));
    assert_eq!(device.and_then(|d| d.revoked_ms), Some(ADDED + 1));
    assert!(ok(hub.store().keys()).is_empty(), "a revoked device's key");
    assert_eq!(ok(hub.store().reading_count(p.device.id)), 4);
    assert!(hub.queue_command(p.device.id, Command::Ping).is_err());
}

/// Blocks are stored as sent and decoded on read: a query picks one
/// channel or all, from inclusive to exclusive, in time order, on the
/// server's clock.
pub fn readings_are_queried_by_channel_and_time(store: Box<dyn CloudStore>) {
    let mut hub = hub(store);
    let p = add(&mut hub, "boiler");
    let id = p.device.id;
    // Two blocks, the later one sent first: uptime 10..30 s and 30..50 s.
    assert!(hub
        .receive(&frame(&p, 1, 1, &readings(30, 20)), RECEIVED)
        .is_some());
    assert!(hub
        .receive(&frame(&p, 2, 0, &readings(10, 20)), RECEIVED)
        .is_some());
    // And the first again: acknowledged, not stored twice.
    assert!(hub
        .receive(&frame(&p, 3, 0, &readings(10, 20)), RECEIVED)
        .is_some());
    assert_eq!(ok(hub.store().reading_count(id)), 40);
    let device = ok(hub.store().device(id));
    assert_eq!(device.and_then(|d| d.last_seen_ms), Some(RECEIVED as i64));
    // Uptime 0 was UPTIME_MS before the frames arrived.
    let zero = RECEIVED as i64 - UPTIME_MS as i64;
    let all = |channel| ReadingQuery {
        device: id,
        channel,
        from_ms: i64::MIN,
        to_ms: i64::MAX,
    };
    let every = ok(hub.store().readings(&all(None)));
    assert_eq!(every.len(), 40);
    assert!(every.windows(2).all(|w| w[0].unix_ms < w[1].unix_ms));
    assert_eq!(every.first().map(|r| r.unix_ms), Some(zero + 10_000));
    let ones = ok(hub.store().readings(&all(Some(1))));
    assert_eq!(ones.len(), 20);
    assert!(ones.iter().all(|r| r.channel == 1 && r.value >= 100.0));
    assert_eq!(ones.first().map(|r| r.value), Some(100.0));
    // 25 s to 35 s of uptime: 10 readings, 5 of each channel, across both
    // blocks; the end is exclusive.
    let range = ReadingQuery {
        device: id,
        channel: None,
        from_ms: zero + 25_000,
        to_ms: zero + 35_000,
    };
    let some = ok(hub.store().readings(&range));
    assert_eq!(some.len(), 10, "{some:?}");
    assert_eq!(some.first().map(|r| r.unix_ms), Some(zero + 25_000));
    assert_eq!(some.last().map(|r| r.unix_ms), Some(zero + 34_000));
    let twos = ok(hub.store().readings(&ReadingQuery {
        channel: Some(2),
        ..range
    }));
    assert_eq!(twos.len(), 5);
    // Another device sees none of it.
    let q = add(&mut hub, "other");
    assert!(ok(hub.store().readings(&ReadingQuery {
        device: q.device.id,
        ..range
    }))
    .is_empty());
}

/// Commands get ids in order and are listed with their state; a config
/// must raise the version.
pub fn commands_and_config_are_listed(store: Box<dyn CloudStore>) {
    let mut hub = hub(store);
    let p = add(&mut hub, "valve");
    let id = p.device.id;
    let first = hub.queue_command(id, Command::Ping);
    let second = hub.queue_command(
        id,
        Command::SetOutput {
            output: 2,
            value: 0,
        },
    );
    assert_eq!((first.ok(), second.ok()), (Some(1), Some(2)));
    let listed = ok(hub.store().commands(id));
    assert_eq!(listed.iter().map(|c| c.id).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(
        listed.get(1).map(|c| c.command),
        Some(Command::SetOutput {
            output: 2,
            value: 0
        })
    );
    assert!(listed.iter().all(|c| c.result.is_none()));
    assert!(hub.queue_command(0xDEAD, Command::Ping).is_err());
    // {0: 4, 1: 900}: version 4 reports every 15 minutes.
    let update = [0xa2, 0x00, 0x04, 0x01, 0x19, 0x03, 0x84];
    assert_eq!(hub.queue_config(id, &update).ok(), Some(4));
    assert!(
        hub.queue_config(id, &update).is_err(),
        "the same version twice"
    );
    assert!(hub.queue_config(id, &[0xa1, 0x00]).is_err(), "malformed");
    let desired = ok(hub.store().desired_config(id));
    assert_eq!(
        desired.map(|c| (c.version, c.cbor)),
        Some((4, update.to_vec()))
    );
    // What the device reports is kept apart: its latest report wins.
    assert_eq!(ok(hub.store().reported_config(id)), None);
    let status = |version, code, detail| Report::ConfigStatus {
        version,
        code,
        detail,
    };
    for (counter, (report, at)) in [
        (status(0, 0, 0), RECEIVED),
        (status(0, 5, 10), RECEIVED + 1_000),
        (status(4, 0, 0), RECEIVED + 2_000),
    ]
    .into_iter()
    .enumerate()
    {
        let frame = report_frame(
            &p,
            counter as u32 + 1,
            counter as u32,
            report,
            Severity::Info,
        );
        assert!(hub.receive(&frame, at).is_some());
    }
    assert_eq!(
        ok(hub.store().reported_config(id)),
        Some(crate::ReportedConfig {
            version: 4,
            code: 0,
            detail: 0,
            received_ms: RECEIVED as i64 + 2_000,
        })
    );
}

/// Alerts are kept with their kind, severity, value and Unix time, and
/// listed latest first.
pub fn alerts_are_listed_latest_first(store: Box<dyn CloudStore>) {
    let mut hub = hub(store);
    let p = add(&mut hub, "boiler");
    let high = Alert {
        channel: ChannelId(1),
        kind: AlertKind::High,
        severity: Severity::Critical,
        value: Some(Value::Scaled(9_100)),
        time: Instant::from_millis(40_000),
    };
    let cleared = Alert {
        kind: AlertKind::HighCleared,
        severity: Severity::Info,
        value: None,
        time: Instant::from_millis(90_000),
        ..high
    };
    assert!(hub
        .receive(&alert_frame(&p, 1, 0, high), RECEIVED)
        .is_some());
    assert!(hub
        .receive(&alert_frame(&p, 2, 1, cleared), RECEIVED)
        .is_some());
    let alerts = ok(hub.store().alerts(p.device.id, 10));
    let zero = RECEIVED as i64 - UPTIME_MS as i64;
    let seen: Vec<_> = alerts
        .iter()
        .map(|a| (a.kind.as_str(), a.severity.as_str(), a.unix_ms, a.value))
        .collect();
    assert_eq!(
        seen,
        [
            ("HighCleared", "Info", Some(zero + 90_000), None),
            ("High", "Critical", Some(zero + 40_000), Some(9_100.0)),
        ]
    );
    assert_eq!(ok(hub.store().alerts(p.device.id, 1)).len(), 1);
    assert!(ok(hub.store().alerts(p.device.id + 1, 10)).is_empty());
}

/// Groups nest below parents that exist, devices move between them, and
/// tokens are found by their digest until they are revoked.
pub fn groups_and_tokens_are_kept(store: Box<dyn CloudStore>) {
    let mut hub = hub(store);
    let site = ok(hub.store().add_group("site", None));
    let plant = ok(hub.store().add_group("site/plant", Some(site.id)));
    assert_eq!(plant.parent, Some(site.id));
    assert!(
        matches!(
            hub.store().add_group("site", None),
            Err(StoreError::Taken(_))
        ),
        "a group name taken twice"
    );
    assert!(
        hub.store().add_group("stray", Some(site.id + 100)).is_err(),
        "a parent that is not"
    );
    assert_eq!(ok(hub.store().groups()), [site.clone(), plant.clone()]);
    let p = match hub.add_device_in("meter", Some(plant.id), ADDED) {
        Ok(p) => p,
        Err(e) => panic!("device not added: {e}"),
    };
    let group_of = |hub: &mut Hub| ok(hub.store().device(p.device.id)).and_then(|d| d.group);
    assert_eq!(group_of(&mut hub), Some(plant.id));
    ok(hub.store().set_device_group(p.device.id, None));
    assert_eq!(group_of(&mut hub), None);
    assert!(hub
        .store()
        .set_device_group(p.device.id, Some(plant.id + 100))
        .is_err());
    assert_eq!(
        group_of(&mut hub),
        None,
        "a move to no group changed nothing"
    );

    let digest = crate::access::digest("tm_secret");
    let t = ok(hub
        .store()
        .add_token("ops", &digest, Role::Operate, Some(site.id), ADDED));
    assert_eq!(ok(hub.store().token(&digest)).as_ref(), Some(&t));
    assert_eq!(
        ok(hub.store().token(&crate::access::digest("tm_other"))),
        None
    );
    assert!(
        hub.store()
            .add_token("dup", &digest, Role::Read, None, ADDED)
            .is_err(),
        "a digest twice"
    );
    assert!(ok(hub.store().revoke_token(t.id, ADDED + 5)));
    assert_eq!(
        ok(hub.store().token(&digest)),
        None,
        "a revoked token opens nothing"
    );
    let listed = ok(hub.store().tokens());
    assert_eq!(listed.len(), 1);
    assert_eq!(listed.first().and_then(|t| t.revoked_ms), Some(ADDED + 5));
    assert!(!ok(hub.store().revoke_token(t.id + 100, ADDED)));
}

/// A device silent past its limit is marked offline once, with an
/// `offline` event and a ping queued; the mark survives the hub; heard
/// again, it gets a `recovered` event. Its config's interval wins over
/// the default.
pub fn silent_devices_go_offline_and_recover(store: Box<dyn CloudStore>) {
    let mut hub = hub(store);
    let rule = Rule {
        intervals: 2,
        default_interval_ms: 60_000,
    };
    ok(hub.detect_silence(rule));
    let quiet = add(&mut hub, "quiet");
    let unseen = add(&mut hub, "unseen");
    let id = quiet.device.id;
    assert!(hub
        .receive(&frame(&quiet, 1, 0, &readings(10, 4)), RECEIVED)
        .is_some());
    let silent = |hub: &mut Hub, after_ms: u64| match hub.check_silence(RECEIVED + after_ms) {
        Ok(gone) => gone,
        Err(e) => panic!("silence not checked: {e}"),
    };
    assert!(silent(&mut hub, 120_000).is_empty(), "offline at the limit");
    assert_eq!(
        silent(&mut hub, 121_000),
        [id],
        "a device never heard is not offline"
    );
    assert!(silent(&mut hub, 500_000).is_empty(), "offline twice");
    let device = ok(hub.store().device(id));
    assert_eq!(
        device.and_then(|d| d.offline_ms),
        Some((RECEIVED + 121_000) as i64)
    );
    let events = ok(hub.store().events(id, 10));
    assert_eq!(
        events.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>(),
        ["offline"]
    );
    assert!(
        events.iter().all(|e| e.detail.contains("60 s")),
        "{events:?}"
    );
    let pings = ok(hub.store().commands(id));
    assert_eq!(
        pings.iter().map(|c| c.command).collect::<Vec<_>>(),
        [Command::Ping]
    );
    assert!(ok(hub.store().events(unseen.device.id, 10)).is_empty());
    match Watch::load(rule, hub.store()) {
        Ok(watch) => assert!(watch.is_offline(id), "the mark is the store's"),
        Err(e) => panic!("the watch does not load: {e}"),
    }
    assert!(hub
        .receive(&frame(&quiet, 2, 1, &readings(20, 4)), RECEIVED + 600_000)
        .is_some());
    let events = ok(hub.store().events(id, 10));
    assert_eq!(
        events
            .iter()
            .map(|e| (e.kind.as_str(), e.unix_ms))
            .collect::<Vec<_>>(),
        [
            ("recovered", (RECEIVED + 600_000) as i64),
            ("offline", (RECEIVED + 121_000) as i64)
        ]
    );
    assert_eq!(ok(hub.store().device(id)).and_then(|d| d.offline_ms), None);
    // {0: 4, 1: 900}: version 4 reports every 15 minutes.
    assert!(hub
        .queue_config(id, &[0xa2, 0x00, 0x04, 0x01, 0x19, 0x03, 0x84])
        .is_ok());
    assert!(
        silent(&mut hub, 600_000 + 1_800_000).is_empty(),
        "the config's interval"
    );
    assert_eq!(silent(&mut hub, 600_000 + 1_801_000), [id]);

    // Written once for a group: its devices, and those of the groups
    // below it, take its intervals; 0 is never.
    let site = ok(hub.store().add_group("site", None));
    let hall = ok(hub.store().add_group("site/hall", Some(site.id)));
    let patient = add(&mut hub, "patient");
    ok(hub
        .store()
        .set_device_group(patient.device.id, Some(hall.id)));
    ok(hub.store().set_group_silence(site.id, Some(10)));
    assert_eq!(ok(hub.store().group_silences()), [(site.id, 10)]);
    let heard = RECEIVED + 3_000_000;
    assert!(hub
        .receive(&frame(&patient, 1, 0, &readings(10, 4)), heard)
        .is_some());
    let at = |after_ms: u64| 3_000_000 + after_ms;
    assert!(
        silent(&mut hub, at(590_000)).is_empty(),
        "10 intervals of 60 s"
    );
    assert_eq!(silent(&mut hub, at(601_000)), [patient.device.id]);
    ok(hub.store().set_group_silence(hall.id, Some(0)));
    assert!(hub
        .receive(&frame(&patient, 2, 1, &readings(20, 4)), heard + 700_000)
        .is_some());
    assert!(
        silent(&mut hub, at(700_000 + 10_000_000)).is_empty(),
        "0: never"
    );
    ok(hub.store().set_group_silence(hall.id, None));
    assert_eq!(
        silent(&mut hub, at(700_000 + 10_000_000)),
        [patient.device.id],
        "the site's again"
    );
    assert!(
        hub.store().set_group_silence(0xDEAD, Some(1)).is_err(),
        "no such group"
    );

    // Shared with other instances, the hub trusts the store's marks, not
    // its watch's: `quiet` (offline) is heard by another instance first,
    // then marked offline by another; only the second is this hub's to
    // recover.
    hub.share_store();
    let later = (RECEIVED + 20_000_000) as i64;
    assert!(ok(hub.store().mark_recovered(id, later, "heard again")));
    assert!(hub
        .receive(
            &frame(&quiet, 3, 2, &readings(30, 4)),
            RECEIVED + 20_001_000
        )
        .is_some());
    assert!(ok(hub.store().mark_offline(id, later + 2_000, "not heard")));
    assert!(hub
        .receive(
            &frame(&quiet, 4, 3, &readings(40, 4)),
            RECEIVED + 20_003_000
        )
        .is_some());
    let kinds: Vec<String> = ok(hub.store().events(id, 3))
        .into_iter()
        .map(|e| format!("{} {}", e.kind, e.unix_ms))
        .collect();
    assert_eq!(
        kinds,
        [
            format!("recovered {}", RECEIVED + 20_003_000),
            format!("offline {}", later + 2_000),
            format!("recovered {later}"),
        ]
    );
    assert_eq!(ok(hub.store().device(id)).and_then(|d| d.offline_ms), None);
}

/// A command is queued, sent when a response first carries it, answered
/// when the device reports its result, or expired past its time
/// unanswered, and then no longer sent.
pub fn commands_are_sent_answered_or_expire(store: Box<dyn CloudStore>) {
    let mut hub = hub(store);
    let p = add(&mut hub, "relay");
    let id = p.device.id;
    let queued = ADDED;
    let ping = hub.queue_command_at(id, Command::Ping, queued, Some(60_000));
    let reboot = hub.queue_command_at(id, Command::Reboot, queued, None);
    assert_eq!((ping.ok(), reboot.ok()), (Some(1), Some(2)));
    let states = |hub: &mut Hub| -> Vec<(&'static str, Option<i64>, Option<i64>)> {
        ok(hub.store().commands(id))
            .iter()
            .map(|c| (c.state(), c.sent_ms, c.expires_ms))
            .collect()
    };
    assert_eq!(
        states(&mut hub),
        [
            ("queued", None, Some(queued + 60_000)),
            ("queued", None, None)
        ]
    );
    assert!(ok(hub.store().commands(id))
        .iter()
        .all(|c| c.queued_ms == Some(queued)));
    assert!(hub
        .receive(&frame(&p, 1, 0, &readings(10, 4)), RECEIVED)
        .is_some());
    let sent = Some(RECEIVED as i64);
    assert_eq!(
        states(&mut hub),
        [("sent", sent, Some(queued + 60_000)), ("sent", sent, None)]
    );
    assert_eq!(hub.expire_commands((queued + 60_000) as u64).ok(), Some(1));
    assert_eq!(
        hub.expire_commands((queued + 120_000) as u64).ok(),
        Some(0),
        "expired twice"
    );
    let listed = ok(hub.store().commands(id));
    assert_eq!(listed.first().map(|c| c.state()), Some("expired"));
    assert_eq!(
        listed.first().and_then(|c| c.expired_ms),
        Some(queued + 60_000)
    );
    let outbox = ok(hub.store().outbox(id));
    assert_eq!(
        outbox.commands.iter().map(|c| c.id).collect::<Vec<_>>(),
        [2],
        "an expired command is no longer sent"
    );
    let result = Report::CommandResult {
        id: 2,
        status: 0,
        value: 1,
    };
    assert!(hub
        .receive(
            &report_frame(&p, 2, 1, result, Severity::Info),
            RECEIVED + 1_000
        )
        .is_some());
    let listed = ok(hub.store().commands(id));
    assert_eq!(
        listed
            .iter()
            .map(|c| (c.state(), c.result))
            .collect::<Vec<_>>(),
        [("expired", None), ("answered", Some((0, 1)))]
    );
    assert_eq!(
        hub.expire_commands(u64::MAX / 2).ok(),
        Some(0),
        "an answered command"
    );
}

/// Alerts, command results and silence make notifications once they are
/// kept; each sink starts at the latest, and moves past one only when it
/// is delivered; every attempt is logged, latest first.
pub fn notifications_are_kept_and_delivered_in_order(store: Box<dyn CloudStore>) {
    let mut hub = hub(store);
    let p = add(&mut hub, "pump");
    let alert = Alert {
        channel: ChannelId(1),
        kind: AlertKind::High,
        severity: Severity::Critical,
        value: Some(Value::Scaled(9000)),
        time: Instant::from_millis(UPTIME_MS - 5_000),
    };
    assert!(hub
        .receive(&alert_frame(&p, 1, 0, alert), RECEIVED)
        .is_some());
    assert!(
        ok(hub.store().notifications_after(0, 10)).is_empty(),
        "kept before they were asked for"
    );
    let early = ok(hub.store().sink_cursor("early"));
    hub.keep_notifications(true);
    assert!(hub
        .receive(&alert_frame(&p, 2, 1, alert), RECEIVED + 1_000)
        .is_some());
    let result = Report::CommandResult {
        id: 4,
        status: 0,
        value: 7,
    };
    assert!(hub
        .receive(
            &report_frame(&p, 3, 2, result, Severity::Info),
            RECEIVED + 2_000
        )
        .is_some());
    let kept = ok(hub.store().notifications_after(early, 10));
    let bodies: Vec<serde_json::Value> = kept
        .iter()
        .map(|n| serde_json::from_str(&n.body).unwrap_or_default())
        .collect();
    assert_eq!(
        bodies
            .iter()
            .map(|b| b["type"].as_str())
            .collect::<Vec<_>>(),
        [Some("alert"), Some("command_result")]
    );
    assert_eq!(
        bodies.first().map(|b| b["device"].clone()),
        Some(p.device.id.into())
    );
    assert_eq!(
        bodies.first().map(|b| b["severity"].clone()),
        Some("Critical".into())
    );
    assert_eq!(bodies.get(1).map(|b| b["value"].clone()), Some(7.into()));
    assert!(
        kept.windows(2).all(|w| w[0].id < w[1].id),
        "in the order made"
    );
    let (first, second) = match kept.as_slice() {
        [a, b] => (a.id, b.id),
        other => panic!("two notifications expected: {other:?}"),
    };
    assert_eq!(
        ok(hub.store().sink_cursor("late")),
        second,
        "a new sink starts at the latest"
    );
    let attempt = |n: i64, attempt: u32, delivered: bool| DeliveryRow {
        sink: "early".into(),
        notification: n,
        attempt,
        unix_ms: RECEIVED as i64,
        status: Some(if delivered { 204 } else { 503 }),
        error: (!delivered).then(|| "answered 503".to_string()),
        delivered,
    };
    ok(hub.store().log_delivery(&attempt(first, 1, false)));
    assert_eq!(
        ok(hub.store().sink_cursor("early")),
        early,
        "moved by a failure"
    );
    ok(hub.store().log_delivery(&attempt(first, 2, true)));
    assert_eq!(ok(hub.store().sink_cursor("early")), first);
    let log = ok(hub.store().deliveries(10));
    assert_eq!(log, [attempt(first, 2, true), attempt(first, 1, false)]);
}

/// A rule fires once for each run held long enough, judged on the
/// readings' Unix times: a block that arrives late and completes a run
/// fires it then; a block that extends a run that fired does not fire it
/// again. Its command goes to its target, its event to the device it
/// watches.
pub fn rules_fire_on_runs_in_their_unix_time(store: Box<dyn CloudStore>) {
    let mut hub = hub(store);
    let boiler = add(&mut hub, "boiler");
    let valve = add(&mut hub, "valve");
    let spec = RuleSpec {
        name: "boiler-hot".into(),
        when: When {
            device: boiler.device.id,
            channel: 1,
            above: Some(85.0),
            below: None,
            for_s: 5,
        },
        then: Then {
            device: valve.device.id,
            command: "set_output".into(),
            output: Some(2),
            value: Some(0),
        },
    };
    let rule = match hub.add_rule(&spec) {
        Ok(rule) => rule,
        Err(e) => panic!("rule not added: {e}"),
    };
    assert!(hub.add_rule(&spec).is_err(), "a rule name taken twice");
    let mut stranger = spec.clone();
    stranger.name = "stranger".into();
    stranger.then.device = 0xDEAD;
    assert!(
        hub.add_rule(&stranger).is_err(),
        "a rule for a device not known"
    );
    assert_eq!(ok(hub.store().rules()), std::slice::from_ref(&rule));
    // The config file's rule at every start: kept once, replaced if changed.
    assert_eq!(hub.ensure_rule(&spec).ok(), Some(rule.clone()));
    assert_eq!(ok(hub.store().rules()).len(), 1);
    let mut warmer = spec.clone();
    warmer.when.above = Some(80.0);
    let replaced = hub.ensure_rule(&warmer).ok();
    assert_eq!(replaced.as_ref().map(|r| r.spec()), Some(warmer));
    assert_eq!(ok(hub.store().rules()).len(), 1);
    let rule = match hub.ensure_rule(&spec) {
        Ok(rule) => rule,
        Err(e) => panic!("rule not put back: {e}"),
    };
    // Channel 1 every second of uptime `from..=to` at `value`.
    let block = |from: u64, to: u64, value: i32| -> Vec<Reading> {
        (from..=to)
            .map(|s| {
                Reading::new(
                    ChannelId(1),
                    Instant::from_millis(s * 1000),
                    Value::Scaled(value),
                )
            })
            .collect()
    };
    let fired = |hub: &mut Hub| -> Vec<Command> {
        ok(hub.store().commands(valve.device.id))
            .iter()
            .map(|c| c.command)
            .collect()
    };
    let send = |hub: &mut Hub, counter: u32, readings: Vec<Reading>| {
        assert!(hub
            .receive(&frame(&boiler, counter, counter, &readings), RECEIVED)
            .is_some());
    };
    send(&mut hub, 1, block(0, 2, 90));
    send(&mut hub, 2, block(10, 12, 70));
    assert!(fired(&mut hub).is_empty(), "2 s above is not 5");
    // The block between them arrives late: 0 to 9 s above, a run.
    send(&mut hub, 3, block(3, 9, 91));
    let open = Command::SetOutput {
        output: 2,
        value: 0,
    };
    assert_eq!(fired(&mut hub), [open], "the late block completes the run");
    send(&mut hub, 4, block(20, 30, 95));
    send(&mut hub, 5, block(31, 33, 96));
    assert_eq!(fired(&mut hub), [open, open], "a second run fires once");
    let events = ok(hub.store().events(boiler.device.id, 10));
    assert_eq!(
        events.iter().filter(|e| e.kind == "rule").count(),
        2,
        "{events:?}"
    );
    // The first run, in the readings' Unix time: uptime 0 to 9 s.
    let start = RECEIVED as i64 - UPTIME_MS as i64;
    assert!(
        events.iter().any(|e| e
            .detail
            .contains(&format!("from {start} to {}", start + 9_000))),
        "{events:?}"
    );
    assert_eq!(hub.remove_rule(rule.id).ok(), Some(true));
    assert_eq!(hub.remove_rule(rule.id).ok(), Some(false));
    send(&mut hub, 6, block(40, 50, 99));
    assert_eq!(fired(&mut hub).len(), 2, "a removed rule");
    assert!(ok(hub.store().rules()).is_empty());
}
