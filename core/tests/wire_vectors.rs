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
use telemark_core::model::{ChannelId, Quality, Reading, Severity, Value};
use telemark_core::time::Instant;
use telemark_core::wire::frame::{
    Command, FrameWriter, Item, RecordsFrame, Response, ResponseWriter,
};
use telemark_core::wire::seal::{open, Direction, FrameError, FrameKind, Header, Key, Sealing};
use telemark_core::wire::{Epoch, Lane, Record, RecordMeta, Seq, SeqRange};

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
        "seq={} lane={:?} severity={:?} readings={} decimated={} payload={}",
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

/// The key of every frame vector: bytes 0x00..=0x1f, key id 1.
fn vector_sealing() -> Sealing {
    let mut key = [0u8; 32];
    for (i, b) in key.iter_mut().enumerate() {
        *b = i as u8;
    }
    Sealing::key(1, Key::from_bytes(key))
}

const VECTOR_EPOCH: Epoch = Epoch(0x0123_4567_89ab_cdef);

/// Writes the vector file `name` in write mode; returns the bytes it holds.
fn vector_bytes(name: &str, title: &str, bytes: &[u8], extra: &[String]) -> (String, Vec<u8>) {
    let path = dir().join(name);
    if write_mode() {
        let mut text = format!("# {title}\n");
        text.push_str(&hex(bytes));
        for line in extra {
            writeln!(text, "{line}").unwrap();
        }
        std::fs::write(&path, text).unwrap();
    }
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let on_file = parse_bytes(&text);
    assert_eq!(
        bytes,
        &on_file[..],
        "{name}: the writer no longer writes the checked-in bytes"
    );
    (text, on_file)
}

fn field<'t>(text: &'t str, name: &str) -> &'t str {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} line"))
}

#[test]
fn records_frame_vectors_open_to_their_records() {
    let (device, records) = frame_case();
    for (name, sealing, title) in [
        (
            "frame-records.txt",
            vector_sealing(),
            "a records frame from device 0xC0FFEE sealed with ChaCha20-Poly1305 (key 00..1f, id 1): \
             epoch 0123456789abcdef, counter 7, uptime 90 s; an alert, then a decimated routine \
             block numbered in the earlier epoch 0123456789abcdee",
        ),
        (
            "frame-records-unauthenticated.txt",
            Sealing::Unauthenticated,
            "the same frame unauthenticated (bench mode): body in clear, CRC-32 at the end",
        ),
    ] {
        let header = Header::new(FrameKind::Records, device, VECTOR_EPOCH, 7, &sealing);
        let mut buf = [0u8; 160];
        let mut w = FrameWriter::new(&mut buf, &header, Instant::from_millis(90_000), &sealing).unwrap();
        w.push(&records[0], None).unwrap();
        w.push(&records[1], Some(Epoch(VECTOR_EPOCH.0 - 1))).unwrap();
        let n = w.finish(&sealing).unwrap();
        let mut extra = vec![
            format!("device: {device}"),
            format!("epoch: {}", VECTOR_EPOCH),
            "counter: 7".to_string(),
            "uptime_ms: 90000".to_string(),
        ];
        extra.push(format!("record: epoch={} {}", VECTOR_EPOCH, record_line(&records[0])));
        extra.push(format!("record: epoch={} {}", Epoch(VECTOR_EPOCH.0 - 1), record_line(&records[1])));
        let (text, mut bytes) = vector_bytes(name, title, &buf[..n], &extra);

        let (header, body) = open(&mut bytes, &sealing, Direction::Up).unwrap();
        assert_eq!(header.device.to_string(), field(&text, "device: "));
        assert_eq!(header.epoch.to_string(), field(&text, "epoch: "));
        assert_eq!(header.counter.to_string(), field(&text, "counter: "));
        let frame = RecordsFrame::parse(&header, body).unwrap();
        assert_eq!(frame.uptime().as_millis().to_string(), field(&text, "uptime_ms: "));
        let lines: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("record: ")).collect();
        assert_eq!(frame.len(), lines.len());
        for (rec, line) in frame.records().zip(lines) {
            assert_eq!(format!("epoch={} {}", rec.epoch, record_line(&rec.record)), line);
        }
    }
}

#[test]
fn response_vector_opens_to_its_ack_and_items() {
    let sealing = vector_sealing();
    let device = 0x00C0_FFEE;
    let header = Header::new(FrameKind::Response, device, VECTOR_EPOCH, 7, &sealing);
    let ranges = [SeqRange::new(Seq(38), Seq(38)), SeqRange::single(Seq(41))];
    let mut buf = [0u8; 128];
    let mut w = ResponseWriter::new(
        &mut buf,
        &header,
        Some(1_700_000_000_000),
        &ranges,
        &sealing,
    )
    .unwrap();
    let config = [0xa2, 0x00, 0x04, 0x01, 0x19, 0x03, 0x84];
    w.push(&Item::Config(&config)).unwrap();
    w.push(&Item::Command {
        id: 9,
        command: Command::SetOutput {
            output: 1,
            value: 1,
        },
    })
    .unwrap();
    let n = w.finish(&sealing).unwrap();
    let extra = vec![
        format!("device: {device}"),
        format!("epoch: {}", VECTOR_EPOCH),
        "counter: 7 (the records frame it answers)".to_string(),
        "server_time: 1700000000000".to_string(),
        "ack: 38..=38, 41..=41".to_string(),
        "item: config a20004011903 84 ({0: 4, 1: 900})".to_string(),
        "item: command id=9 SetOutput { output: 1, value: 1 }".to_string(),
    ];
    let (_, mut bytes) = vector_bytes(
        "frame-response.txt",
        "the response to frame-records.txt, sealed for the way down: acknowledges both records, \
         carries a config update and a command",
        &buf[..n],
        &extra,
    );
    // Sealed for the way down: the device's nonce space for the way up
    // does not open it.
    let mut up = bytes.clone();
    assert_eq!(
        open(&mut up, &sealing, Direction::Up).unwrap_err(),
        FrameError::BadTag
    );
    let (header, body) = open(&mut bytes, &sealing, Direction::Down).unwrap();
    assert_eq!(
        (header.device, header.epoch, header.counter),
        (device, VECTOR_EPOCH, 7)
    );
    let response = Response::parse(&header, body).unwrap();
    assert_eq!(response.server_time(), Some(1_700_000_000_000));
    assert_eq!(response.ranges().collect::<Vec<_>>(), ranges);
    let items: Vec<Item<'_>> = response.items().collect();
    assert_eq!(
        items,
        [
            Item::Config(&config),
            Item::Command {
                id: 9,
                command: Command::SetOutput {
                    output: 1,
                    value: 1
                }
            }
        ]
    );
}

#[test]
fn a_version_1_frame_is_refused_as_unsupported() {
    // The first bytes of a version 1 records frame.
    let mut v1 = parse_bytes("bytes: 01 00 ee ff 83 06 82 80 00 29 09 01 02 01 02 26 02 80 02 04 02 10 20 30 d5 fb 63 d8");
    let err = open(&mut v1, &vector_sealing(), Direction::Up).unwrap_err();
    assert_eq!(err, FrameError::Version(1));
    assert_eq!(err.to_string(), "unsupported frame version 1");
}
