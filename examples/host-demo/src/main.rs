//! telemark end to end on one machine.
//!
//! Three simulated boilers run the real engine over the flash store (in
//! RAM-backed NOR flash that can lose power) and talk to telemark-cloud's
//! hub over serial framing on TCP sockets; it stores what they send in
//! SQLite and acknowledges it. Six hours of device time pass in seconds.
//! Along the way device 102 gets a new config, device 101 loses its link
//! for an hour, and device 103 loses power and comes back from flash.
//!
//! `cargo run -p telemark-host-demo`

use std::net::{TcpListener, TcpStream};
use std::thread;

use telemark_cloud::{line, unix_ms, Hub, SqliteStore, Stored};
use telemark_core::engine::Boot;
use telemark_core::model::Value;
use telemark_core::store::{Blocking, FlashLayout, FlashStore, RecordStore, SimFlash};
use telemark_core::time::{Duration, Instant};
use telemark_core::transport::{step, NoLink};
use telemark_core::wire::report::{Report, ResetReason};
use telemark_core::wire::seal::{Key, Sealing};
use telemark_qemu_app::{device, Boiler, Device, MTU};
use telemark_serial::{SerialTransport, TcpLine};

type Flash = SimFlash<1024, 32>;
type Store = FlashStore<Blocking<Flash>, 512>;
type Engine = Device<Store, 64>;
type Link = SerialTransport<TcpLine, 512>;

const HOURS: u64 = 6;

/// What happens to a device on the way.
#[derive(Clone, Copy)]
enum Trouble {
    None,
    /// The link is down between these hours.
    LinkCut(u64, u64),
    /// The power goes at this minute; RAM is lost, flash is not.
    PowerCut(u64),
}

/// The key device `id` is provisioned with: a demo key, the same on both
/// ends. A real fleet keeps one random key per device.
fn key(id: u64) -> Key {
    let mut key = *b"telemark host demo key, device ?";
    key[31] = id as u8;
    Key::from_bytes(key)
}

fn boot(id: u64, flash: Flash, reset: ResetReason) -> Engine {
    let layout = FlashLayout::split(0..32 * 1024, 1024, 4);
    let mut store = Store::new(flash, layout).expect("the layout fits the flash");
    store.mount_or_format().expect("the flash store mounts");
    // A board's random number generator would give these bits; the demo
    // takes them from the host.
    let entropy = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        ^ id;
    let epoch = store
        .start_boot(entropy)
        .expect("the flash store saves the epoch");
    let boot = Boot {
        reset_reason: reset,
        epoch,
        sealing: Sealing::key(1, key(id)),
    };
    device(id, store, boot).expect("the demo's config is valid")
}

fn connect(port: u16) -> Link {
    SerialTransport::new(TcpLine::new(
        TcpStream::connect(("127.0.0.1", port)).expect("the service listens"),
    ))
}

/// Runs device `id` for `HOURS` of device time; returns the readings it took.
fn run_device(id: u64, port: u16, trouble: Trouble) -> u32 {
    let mut engine = boot(id, Flash::new(), ResetReason::PowerOn);
    let mut boiler = Boiler::new(id);
    let mut link = Some(connect(port));
    let mut now = Instant::ZERO;
    let end = Instant::from_millis(HOURS * 3_600_000);
    let mut sampled = 0;
    let mut powered = true;
    while now < end {
        let hour = now.as_millis() / 3_600_000;
        let wake = match trouble {
            Trouble::LinkCut(from, to) if (from..to).contains(&hour) => {
                if let Some(l) = link.take() {
                    println!("   {}  device {id}: link cut", clock(now));
                    drop(l.release());
                }
                step(&mut engine, &mut NoLink { mtu: MTU }, now, &mut boiler)
            }
            Trouble::PowerCut(at) if powered && now.as_millis() >= at * 60_000 => {
                powered = false;
                sampled += engine.counters().sampled;
                let staged = engine.staged();
                let flash = engine.into_store().release().0;
                engine = boot(id, flash, ResetReason::BrownOut);
                println!(
                    "   {}  device {id}: power cut: {staged} staged readings lost with RAM; \
                     {} records and config v{} back from flash",
                    clock(now),
                    engine.store().len(),
                    engine.config().version
                );
                continue;
            }
            _ => {
                let l = link.get_or_insert_with(|| {
                    println!("   {}  device {id}: link back", clock(now));
                    connect(port)
                });
                let mut wake = step(&mut engine, l, now, &mut boiler);
                // While a frame awaits its acknowledgement, give the
                // service real time to answer before device time moves on.
                for _ in 0..200 {
                    if !engine.uplink().radio_on() {
                        break;
                    }
                    thread::sleep(std::time::Duration::from_millis(1));
                    wake = step(&mut engine, l, now, &mut boiler);
                }
                wake
            }
        };
        now = wake.max(now + Duration::from_millis(1));
    }
    // Drain: seal the open block and send until everything is acknowledged.
    let l = link.get_or_insert_with(|| connect(port));
    for _ in 0..1000 {
        if engine.store().is_empty() && engine.staged() == 0 {
            break;
        }
        engine.flush_now(now);
        step(&mut engine, l, now, &mut boiler);
        thread::sleep(std::time::Duration::from_millis(2));
        now = now + Duration::from_secs(1);
    }
    sampled + engine.counters().sampled
}

/// Device time as hours and minutes.
fn clock(t: Instant) -> String {
    let minutes = t.as_millis() / 60_000;
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

fn describe(device: u64, stored: &Stored) -> Option<String> {
    match stored {
        Stored::Readings(timed) => {
            let readings: Vec<_> = timed.iter().map(|t| t.reading).collect();
            let last = readings.last()?;
            let flow = readings.iter().rev().find(|r| r.channel.0 == 1);
            let celsius = match flow.map(|r| r.value) {
                Some(Value::Scaled(v)) => format!("{:.2} °C", f64::from(v) / 100.0),
                _ => "-".into(),
            };
            Some(format!(
                "   {}  device {device}: {:>2} readings, flow {celsius}",
                clock(last.time),
                readings.len()
            ))
        }
        Stored::Report(Report::Alert(a)) => Some(format!(
            "   {}  device {device}: ALERT {:?} {:?} on channel {}",
            clock(a.time),
            a.severity,
            a.kind,
            a.channel.0
        )),
        Stored::Report(Report::ConfigStatus {
            version, code: 0, ..
        }) => Some(format!(
            "           device {device}: config v{version} applied"
        )),
        Stored::Report(_) => None,
        Stored::Undecodable => Some(format!("           device {device}: undecodable record")),
    }
}

fn main() {
    let db = std::env::temp_dir().join("telemark-demo.sqlite");
    let _ = std::fs::remove_file(&db);
    let store = SqliteStore::open(&db).expect("open the demo database");
    let mut hub = Hub::new(Box::new(store)).expect("read the demo database");
    for id in [101, 102, 103] {
        hub.import_key(id, 1, key(id), 0)
            .expect("add the demo devices");
    }
    hub.watch(|device, _, _, stored| {
        if let Some(line) = describe(device, stored) {
            println!("{line}");
        }
    });
    // {0: 2, 1: 900}: version 2 reports every 15 minutes.
    hub.queue_config(102, &[0xa2, 0x00, 0x02, 0x01, 0x19, 0x03, 0x84])
        .expect("a valid config update");
    let (hub, _hub_thread) = hub.spawn().expect("the hub's thread");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a local port");
    let port = listener.local_addr().expect("bound").port();
    {
        let hub = hub.clone();
        thread::spawn(move || {
            for mut line in listener.incoming().flatten() {
                let hub = hub.clone();
                thread::spawn(move || {
                    let _ = line::serve(&hub, &mut line, unix_ms);
                });
            }
        });
    }
    println!(
        "serial lines on 127.0.0.1:{port}, storing into {}",
        db.display()
    );
    println!("   time   what the service stored (device time)");
    let devices = [
        (101, Trouble::LinkCut(2, 3)),
        (102, Trouble::None),
        (103, Trouble::PowerCut(4 * 60 + 7)),
    ];
    let runs: Vec<_> = devices
        .iter()
        .map(|&(id, trouble)| (id, thread::spawn(move || run_device(id, port, trouble))))
        .collect();
    let mut taken = Vec::new();
    for (id, run) in runs {
        taken.push((id, run.join().expect("device thread")));
    }

    let (tally, c) = hub
        .call_blocking(move |hub| {
            let tally: Vec<_> = taken
                .into_iter()
                .map(|(id, sampled)| {
                    let stored = hub.store().reading_count(id).unwrap_or(0);
                    let alerts = hub.store().alerts(id, 10_000).map_or(0, |a| a.len());
                    (id, sampled, stored, alerts)
                })
                .collect();
            (tally, hub.counters())
        })
        .expect("the hub is running");
    println!("\nin SQLite ({}):", db.display());
    for (id, sampled, stored, alerts) in tally {
        println!("  device {id}: {stored} readings stored of {sampled} taken, {alerts} alerts");
    }
    println!(
        "  {} frames, {} records, {} received twice and stored once, {} frames refused",
        c.frames,
        c.records,
        c.duplicates,
        c.refused.total()
    );
}
