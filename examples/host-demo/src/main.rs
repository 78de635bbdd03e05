//! The telemark core at work on the host.
//!
//! Two simulated channels, a boiler flow temperature every 10 s and a gas
//! meter every minute, are sampled for three hours of simulated time. The
//! boiler overheats once and its sensor drops out once, so rules fire; routine
//! readings are sealed into blocks; everything lands in a two-lane RAM store,
//! whose contents and counters are printed at the end. Then a server
//! acknowledgement frees what was delivered.
//!
//! Run it with `cargo run -p telemark-host-demo`.

use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
use telemark_core::codec::{BlockCodec, CompactCodec};
use telemark_core::model::{Alert, ChannelId, Reading, Severity};
use telemark_core::rules::{RuleState, Rules};
use telemark_core::sensor::{Sensor, SensorErrorKind};
use telemark_core::stager::{SealedBlock, Stager, StagerConfig};
use telemark_core::store::{FullPolicy, Lane, RamStore, RecordMeta, RecordStore, SeqRange};
use telemark_core::time::{Duration, Instant};
use telemark_sensors::synthetic::{Episode, Signal, Synthetic};

const BOILER: ChannelSpec = ChannelSpec::new(
    ChannelId(1),
    Unit::Celsius,
    ValueKind::Scaled { decimals: 2 },
    Range::new(0.0, 95.0),
    Duration::from_secs(10),
    Rules::NONE
        .high(75.0, 3.0, Severity::Critical)
        .rate(0.5, Severity::Warning)
        .fault(3, Severity::Warning),
);

const GAS: ChannelSpec = ChannelSpec::new(
    ChannelId(2),
    Unit::Count,
    ValueKind::Counter,
    Range::new(0.0, 4.0e9),
    Duration::from_mins(1),
    Rules::NONE,
);

const BLOCKS: StagerConfig = StagerConfig::new(256, 480, Duration::from_mins(30));
const HOURS: u64 = 3;

fn minutes(m: u64) -> Instant {
    Instant::from_millis(m * 60_000)
}

fn main() {
    let mut boiler = Synthetic::new(
        [BOILER],
        [Signal::Sine {
            mean: 62.0,
            amplitude: 4.0,
            period: Duration::from_mins(40),
        }],
        7,
    )
    .with_noise(0.2);
    let overheat = Episode::Excursion {
        channel: 0,
        from: minutes(70),
        until: minutes(80),
        offset: 16.0,
    };
    let dropout = Episode::Failure {
        from: minutes(120),
        until: minutes(121),
        error: SensorErrorKind::Nack,
    };
    for episode in [overheat, dropout] {
        boiler
            .schedule(episode)
            .unwrap_or_else(|e| panic!("cannot schedule {e:?}"));
    }
    let mut gas = Synthetic::new([GAS], [Signal::Pulses { per_sample: 3 }], 1);

    let mut boiler_rules = RuleState::new();
    let mut stager: Stager<256> = Stager::new(CompactCodec, BLOCKS);
    let mut store: RamStore<512, 1024> = RamStore::new(FullPolicy::EvictOldest);
    let mut block = [0u8; 512];

    let (mut next_boiler, mut next_gas) = (Instant::ZERO, Instant::ZERO);
    let end = minutes(HOURS * 60);
    let mut sampled = 0u32;
    println!(
        "telemark host demo: {HOURS} h of a boiler (every 10 s) and a gas meter (every 60 s)\n"
    );

    while next_boiler.min(next_gas) < end {
        let now = next_boiler.min(next_gas);
        let mut readings: heapless::Vec<Reading, 2> = heapless::Vec::new();
        if now == next_boiler {
            next_boiler = now + BOILER.period;
            if let Err(e) = boiler.sample(now, &mut readings) {
                println!("{now:>12}  sampling {} failed: {e}", BOILER.id);
                if let Some(alert) = boiler_rules.on_failure(&BOILER, now) {
                    push_alert(&mut store, alert);
                }
            }
        }
        if now == next_gas {
            next_gas = now + GAS.period;
            if let Err(e) = gas.sample(now, &mut readings) {
                println!("{now:>12}  sampling {} failed: {e}", GAS.id);
            }
        }
        for mut reading in readings {
            sampled += 1;
            if reading.channel == BOILER.id {
                for alert in boiler_rules.on_reading(&BOILER, &mut reading) {
                    push_alert(&mut store, alert);
                }
            }
            match stager.push(reading, &mut block) {
                Ok(Some(sealed)) => push_block(&mut store, &block, sealed),
                Ok(None) => {}
                Err(e) => println!("{now:>12}  stager: {e}"),
            }
        }
        match stager.poll(now, &mut block) {
            Ok(Some(sealed)) => push_block(&mut store, &block, sealed),
            Ok(None) => {}
            Err(e) => println!("{now:>12}  stager: {e}"),
        }
    }
    if let Ok(Some(sealed)) = stager.flush(&mut block) {
        push_block(&mut store, &block, sealed);
    }

    println!(
        "\nstore contents, in delivery order (alerts by severity, then age; then routine blocks):"
    );
    for record in store.iter() {
        let what = match record.meta.lane {
            Lane::Alert => match postcard::from_bytes::<Alert>(record.payload) {
                Ok(a) => format!(
                    "{:?} {:?} on {} at {}",
                    a.severity, a.kind, a.channel, a.time
                ),
                Err(e) => format!("undecodable alert: {e}"),
            },
            Lane::Routine => {
                let mut readings = Vec::new();
                match CompactCodec.decode(record.payload, &mut readings) {
                    Ok(n) => format!(
                        "block of {n} readings, {} B ({:.1} B/reading), {} .. {}",
                        record.payload.len(),
                        record.payload.len() as f64 / n.max(1) as f64,
                        readings.first().map_or(Instant::ZERO, |r| r.time),
                        readings.last().map_or(Instant::ZERO, |r| r.time),
                    ),
                    Err(e) => format!("undecodable block: {e}"),
                }
            }
        };
        println!("  {:>5}  {:<7?} {what}", record.seq, record.meta.lane);
    }

    let c = store.counters();
    println!(
        "\nsampled {sampled} readings; {} staged in the open block",
        stager.len()
    );
    for (name, lane, l) in [
        ("alert", Lane::Alert, c.alert),
        ("routine", Lane::Routine, c.routine),
    ] {
        println!(
            "{name:>8} lane: {} records ({} readings) pushed, {} evicted ({} readings), {} refused; {} of {} bytes used",
            l.pushed_records,
            l.pushed_readings,
            l.evicted_records,
            l.evicted_readings,
            l.refused_records,
            store.used(lane),
            store.capacity(lane),
        );
    }

    // The server stored everything durably and acknowledges the whole range.
    let seqs = || store.iter().map(|r| r.seq);
    if let (Some(first), Some(last)) = (seqs().min(), seqs().max()) {
        let acked = store.ack(SeqRange::new(first, last)).unwrap_or_default();
        println!(
            "\nserver acknowledged {first}..={last}: freed {} records ({} readings); {} left",
            acked.records,
            acked.readings,
            store.len()
        );
    }
}

fn push_alert(store: &mut RamStore<512, 1024>, alert: Alert) {
    let mut buf = [0u8; 32];
    let Ok(bytes) = postcard::to_slice(&alert, &mut buf) else {
        println!("alert did not encode: {alert:?}");
        return;
    };
    match store.push(RecordMeta::alert(alert.severity, 1), bytes) {
        Ok(seq) => println!(
            "{:>12}  ALERT {seq}: {:?} {:?} on {}",
            alert.time, alert.severity, alert.kind, alert.channel
        ),
        Err(e) => println!("{:>12}  alert refused: {e}", alert.time),
    }
}

fn push_block(store: &mut RamStore<512, 1024>, block: &[u8], sealed: SealedBlock) {
    let Some(bytes) = block.get(..sealed.len) else {
        return;
    };
    match store.push(RecordMeta::routine(sealed.readings), bytes) {
        Ok(seq) => println!(
            "{:>12}  sealed block {seq}: {} readings in {} bytes ({:?})",
            sealed.last, sealed.readings, sealed.len, sealed.reason
        ),
        Err(e) => println!("{:>12}  block refused: {e}", sealed.last),
    }
}
