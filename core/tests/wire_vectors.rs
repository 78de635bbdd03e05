//! The checked-in test vectors of `docs/test-vectors/`: each file holds the
//! bytes of a block or frame and what they contain. Every vector is decoded
//! and compared; blocks are also re-encoded and must give the same bytes, so
//! the format cannot drift unnoticed.
//!
//! `TELEMARK_WRITE_VECTORS=1 cargo test -p telemark-core --features std --test wire_vectors`
//! rewrites the files from the cases below (after a deliberate format change).
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::expect_used)]

use std::fmt::Write as _;
use std::path::PathBuf;

use telemark_core::codec::{raw_len, BlockCodec, CompactCodec};
use telemark_core::frame::{FrameWriter, RecordsFrame};
use telemark_core::model::{ChannelId, Quality, Reading, Severity, Value};
use telemark_core::store::{Lane, Record, RecordMeta, Seq};
use telemark_core::time::Instant;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/test-vectors")
}

fn r(ch: u16, t: u64, v: Value) -> Reading {
    Reading::new(ChannelId(ch), Instant::from_millis(t), v)
}

/// The block cases: name, what they show, readings.
fn block_cases() -> Vec<(&'static str, &'static str, Vec<Reading>)> {
    let rows = (0..6u64)
        .flat_map(|i| {
            let t = 1_700_000_000_000 + i * 60_000;
            [
                r(1, t, Value::Scaled(2150 + i as i32 * 3)),
                r(2, t, Value::Scaled(6120 - i as i32)),
                r(3, t, Value::Counter(1000 + 7 * i as u32)),
            ]
        })
        .collect();
    let ecg = (0..12u64)
        .map(|i| {
            r(
                9,
                (i * 1000 + 180) / 360,
                Value::Scaled(-195 + 5 * (i as i32 % 4)),
            )
        })
        .collect();
    let mixed = vec![
        r(4, 5_000, Value::Float(21.25)),
        r(5, 5_000, Value::Bool(true)),
        r(4, 6_000, Value::Float(21.5)).with_quality(Quality::ESTIMATED),
        r(5, 4_000, Value::Bool(false)),
        r(4, 7_000, Value::Float(f32::from_bits(0x7fc0_0001))),
    ];
    let wide = (0..20u16)
        .map(|c| r(c, 1_000, Value::Scaled(i32::from(c) * 1000)))
        .collect();
    vec![
        (
            "block-rows",
            "3 channels sampled together each minute: shared timestamps, delta values",
            rows,
        ),
        (
            "block-jittered-clock",
            "360 Hz rounded to ms: a fitted linear clock, values with a common factor of 5",
            ecg,
        ),
        (
            "block-mixed",
            "float, bool, quality flags and out-of-order time: explicit order column",
            mixed,
        ),
        (
            "block-many-channels",
            "20 channels: more than column mode holds, so lz4 or raw",
            wide,
        ),
    ]
}

fn frame_case() -> (u64, Vec<Record<'static>>) {
    let records = vec![
        Record {
            seq: Seq(41),
            meta: RecordMeta::alert(Severity::Critical, 1),
            payload: b"\x01\x02",
        },
        Record {
            seq: Seq(38),
            meta: RecordMeta {
                lane: Lane::Routine,
                severity: Severity::Info,
                readings: 256,
                decimated: true,
            },
            payload: b"\x02\x10\x20\x30",
        },
    ];
    (0x00C0_FFEE, records)
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .chunks(32)
        .map(|c| {
            format!(
                "bytes: {}\n",
                c.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        })
        .collect()
}

fn reading_line(r: &Reading) -> String {
    let (kind, value) = match r.value {
        Value::Scaled(v) => ("scaled", v.to_string()),
        Value::Float(f) => ("float", format!("0x{:08x}", f.to_bits())),
        Value::Bool(b) => ("bool", u8::from(b).to_string()),
        Value::Counter(c) => ("counter", c.to_string()),
    };
    format!(
        "reading: {} {} {kind} {value} {}\n",
        r.channel.0,
        r.time.as_millis(),
        r.quality.bits()
    )
}

fn parse_bytes(text: &str) -> Vec<u8> {
    text.lines()
        .filter_map(|l| l.strip_prefix("bytes: "))
        .flat_map(|l| {
            l.split_whitespace()
                .map(|h| u8::from_str_radix(h, 16).expect("hex byte"))
        })
        .collect()
}

fn parse_reading(line: &str) -> Reading {
    let f: Vec<&str> = line.split_whitespace().collect();
    let value = match f[2] {
        "scaled" => Value::Scaled(f[3].parse().unwrap()),
        "float" => Value::Float(f32::from_bits(
            u32::from_str_radix(f[3].trim_start_matches("0x"), 16).unwrap(),
        )),
        "bool" => Value::Bool(f[3] == "1"),
        "counter" => Value::Counter(f[3].parse().unwrap()),
        other => panic!("unknown kind {other}"),
    };
    Reading {
        channel: ChannelId(f[0].parse().unwrap()),
        time: Instant::from_millis(f[1].parse().unwrap()),
        value,
        quality: Quality::from_bits(f[4].parse().unwrap()),
    }
}

fn same(a: &[Reading], b: &[Reading]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same_as(y))
}

fn record_line(rec: &Record<'_>) -> String {
    let m = rec.meta;
    format!(
        "record: seq={} lane={:?} severity={:?} readings={} decimated={} payload={}",
        rec.seq.0,
        m.lane,
        m.severity,
        m.readings,
        m.decimated,
        rec.payload
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

fn write_mode() -> bool {
    std::env::var_os("TELEMARK_WRITE_VECTORS").is_some()
}

#[test]
fn block_vectors_decode_to_their_readings_and_encode_to_their_bytes() {
    for (name, about, readings) in block_cases() {
        let path = dir().join(format!("{name}.txt"));
        let mut buf = vec![0u8; raw_len(readings.len())];
        let n = CompactCodec.encode(&readings, &mut buf).unwrap();
        if write_mode() {
            let mut text = format!(
                "# {about}\n# mode {}, {n} bytes, {} readings\n",
                buf[0],
                readings.len()
            );
            text.push_str(&hex(&buf[..n]));
            readings
                .iter()
                .for_each(|r| text.push_str(&reading_line(r)));
            std::fs::write(&path, text).unwrap();
        }
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let bytes = parse_bytes(&text);
        let expected: Vec<Reading> = text
            .lines()
            .filter_map(|l| l.strip_prefix("reading: "))
            .map(parse_reading)
            .collect();
        let mut decoded = Vec::new();
        CompactCodec
            .decode(&bytes, &mut decoded)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(same(&decoded, &expected), "{name}: decoded {decoded:?}");
        assert_eq!(
            &buf[..n],
            &bytes[..],
            "{name}: the encoder no longer writes the checked-in bytes"
        );
    }
}

#[test]
fn frame_vector_parses_to_its_records() {
    let (device, records) = frame_case();
    let path = dir().join("frame-records.txt");
    let mut buf = [0u8; 128];
    let mut w = FrameWriter::new(&mut buf, device).unwrap();
    for rec in &records {
        w.push(rec).unwrap();
    }
    let n = w.finish().unwrap();
    if write_mode() {
        let mut text = String::from(
            "# a records frame from device 0xC0FFEE: an alert, then a decimated routine block\n",
        );
        text.push_str(&hex(&buf[..n]));
        writeln!(text, "device: {device}").unwrap();
        for rec in &records {
            writeln!(text, "{}", record_line(rec)).unwrap();
        }
        std::fs::write(&path, text).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let bytes = parse_bytes(&text);
    assert_eq!(&buf[..n], &bytes[..]);
    let frame = RecordsFrame::parse(&bytes).unwrap();
    let want_device: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("device: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(frame.device(), want_device);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("record: ")).collect();
    assert_eq!(frame.len(), lines.len());
    for (rec, line) in frame.records().zip(lines) {
        assert_eq!(record_line(&rec), line);
    }
}
