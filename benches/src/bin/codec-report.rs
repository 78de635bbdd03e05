//! Bytes per reading of telemark's codec and its baselines, side by side,
//! on real recordings cut into batches; and encode/decode throughput.
//!
//! ```text
//! cargo run --release -p telemark-benches --bin codec-report -- [--batch N]... [--json] FILE.csv...
//! ```
//!
//! Without files it reads the recordings in `benches/data/`. Without
//! `--batch` it uses 64, 256 and 1024. Every telemark batch is decoded and
//! compared with its input; the tool exits non-zero if one differs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use telemark_benches::{load_csv, postcard_bytes, Baseline, Recording};
use telemark_core::codec::{raw_len, BlockCodec, CompactCodec, DeviceCodec};
use telemark_core::model::Reading;

const USAGE: &str = "usage: codec-report [--batch N]... [--json] [FILE.csv...]";
/// Each throughput is the best of `ROUNDS` windows of `WINDOW`: the machine's
/// noise only ever slows a window down.
const WINDOW: Duration = Duration::from_millis(100);
const ROUNDS: usize = 7;

struct Args {
    batches: Vec<usize>,
    json: bool,
    files: Vec<PathBuf>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        batches: Vec::new(),
        json: false,
        files: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--batch" => {
                let n = it.next().ok_or("--batch needs a number")?;
                let n: usize = n
                    .parse()
                    .map_err(|_| format!("--batch {n}: not a number"))?;
                if n == 0 || n > usize::from(u16::MAX) {
                    return Err(format!("--batch {n}: must be 1..=65535"));
                }
                args.batches.push(n);
            }
            "--json" => args.json = true,
            "-h" | "--help" => return Err(USAGE.into()),
            f if f.starts_with("--") => return Err(format!("unknown option {f}\n{USAGE}")),
            f => args.files.push(PathBuf::from(f)),
        }
    }
    if args.batches.is_empty() {
        args.batches = vec![64, 256, 1024];
    }
    if args.files.is_empty() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
        for name in [
            "weather-greensboro-hourly.csv",
            "motion-basicmotions-10hz.csv",
            "ecg-mitdb-360hz.csv",
        ] {
            args.files.push(data.join(name));
        }
    }
    Ok(args)
}

/// Results for one file at one batch size.
struct Row {
    file: String,
    readings: usize,
    batch: usize,
    roundtrip_ok: bool,
    telemark: usize,
    /// Bytes of the device profile's encoder ([`DeviceCodec`]).
    device: usize,
    baselines: Vec<(Baseline, usize)>,
    /// Readings per second: telemark encode, decode; lz4_flex compress,
    /// decompress; postcard serialisation plus lz4_flex compress.
    speed: [f64; 5],
}

fn per_reading(bytes: usize, readings: usize) -> f64 {
    bytes as f64 / readings.max(1) as f64
}

/// Runs `work` (which handles `per_round` readings) in windows; returns the
/// best window's readings per second.
fn throughput(per_round: usize, mut work: impl FnMut()) -> f64 {
    (0..ROUNDS)
        .map(|_| {
            let start = Instant::now();
            let mut rounds = 0u64;
            while rounds == 0 || start.elapsed() < WINDOW {
                work();
                rounds += 1;
            }
            (rounds as f64 * per_round as f64) / start.elapsed().as_secs_f64()
        })
        .fold(0.0, f64::max)
}

fn same(a: &[Reading], b: &[Reading]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.channel == y.channel
                && x.time == y.time
                && x.quality == y.quality
                && x.value.same_as(y.value)
        })
}

fn measure(file: &str, rec: &Recording, batch: usize) -> Row {
    let batches: Vec<&[Reading]> = rec.readings.chunks(batch).collect();
    let float_batches: Vec<&[f64]> = rec.floats.chunks(batch).collect();
    let mut buf = vec![0u8; raw_len(batch)];
    let mut codec = CompactCodec;

    let mut encoded: Vec<Vec<u8>> = Vec::with_capacity(batches.len());
    for b in &batches {
        let n = codec.encode(b, &mut buf).unwrap_or(usize::MAX);
        encoded.push(buf.get(..n).unwrap_or_default().to_vec());
    }
    let telemark = encoded.iter().map(Vec::len).sum();
    let mut decoded = Vec::with_capacity(batch);
    let roundtrip_ok = batches.iter().zip(&encoded).all(|(b, e)| {
        decoded.clear();
        CompactCodec.decode(e, &mut decoded).is_ok() && same(b, &decoded)
    });
    // The device profile's encoder, on the same batches, decoded by the
    // server's decoder.
    let mut device = 0;
    let mut device_ok = true;
    for b in &batches {
        let n = DeviceCodec.encode(b, &mut buf).unwrap_or(usize::MAX);
        let block = buf.get(..n).unwrap_or_default();
        device += block.len();
        decoded.clear();
        device_ok &= CompactCodec.decode(block, &mut decoded).is_ok() && same(b, &decoded);
    }

    let baselines = Baseline::ALL
        .iter()
        .map(|&base| {
            let bytes = batches
                .iter()
                .zip(&float_batches)
                .map(|(b, f)| base.encoded_len(b, f))
                .sum();
            (base, bytes)
        })
        .collect();

    let n = rec.readings.len();
    let enc = throughput(n, || {
        for b in &batches {
            let _ = std::hint::black_box(codec.encode(b, &mut buf));
        }
    });
    let dec = throughput(n, || {
        for e in &encoded {
            decoded.clear();
            let _ = std::hint::black_box(CompactCodec.decode(e, &mut decoded));
        }
    });
    let plain: Vec<Vec<u8>> = batches.iter().map(|b| postcard_bytes(b)).collect();
    let mut lz4_buf =
        vec![
            0u8;
            lz4_flex::block::get_maximum_output_size(plain.iter().map(Vec::len).max().unwrap_or(0))
        ];
    let lz4: Vec<Vec<u8>> = plain.iter().map(|p| lz4_flex::block::compress(p)).collect();
    let lz4_enc = throughput(n, || {
        for p in &plain {
            let _ = std::hint::black_box(lz4_flex::block::compress_into(p, &mut lz4_buf));
        }
    });
    let mut scratch = vec![0u8; raw_len(batch) * 2];
    let pipeline = throughput(n, || {
        for b in &batches {
            if let Ok(bytes) = postcard::to_slice(b, &mut scratch) {
                let _ = std::hint::black_box(lz4_flex::block::compress_into(bytes, &mut lz4_buf));
            }
        }
    });
    let mut out = vec![0u8; plain.iter().map(Vec::len).max().unwrap_or(0)];
    let lz4_dec = throughput(n, || {
        for (c, p) in lz4.iter().zip(&plain) {
            let _ = std::hint::black_box(lz4_flex::block::decompress_into(c, &mut out[..p.len()]));
        }
    });

    Row {
        file: file.to_string(),
        readings: n,
        batch,
        roundtrip_ok: roundtrip_ok && device_ok,
        telemark,
        device,
        baselines,
        speed: [enc, dec, lz4_enc, lz4_dec, pipeline],
    }
}

fn json(row: &Row) -> String {
    let mut codecs = vec![
        format!(
            "\"telemark\": {{\"bytes\": {}, \"bytes_per_reading\": {:.4}}}",
            row.telemark,
            per_reading(row.telemark, row.readings)
        ),
        format!(
            "\"telemark_device\": {{\"bytes\": {}, \"bytes_per_reading\": {:.4}}}",
            row.device,
            per_reading(row.device, row.readings)
        ),
    ];
    for (base, bytes) in &row.baselines {
        codecs.push(format!(
            "\"{}\": {{\"bytes\": {bytes}, \"bytes_per_reading\": {:.4}}}",
            base.name(),
            per_reading(*bytes, row.readings)
        ));
    }
    let [enc, dec, lz4_enc, lz4_dec, pipeline] = row.speed;
    format!(
        "{{\"file\": \"{}\", \"readings\": {}, \"batch\": {}, \"roundtrip_ok\": {}, \"codecs\": {{{}}}, \
         \"readings_per_sec\": {{\"telemark_encode\": {enc:.0}, \"telemark_decode\": {dec:.0}, \
         \"lz4_flex_compress\": {lz4_enc:.0}, \"lz4_flex_decompress\": {lz4_dec:.0}, \
         \"postcard_lz4_flex_encode\": {pipeline:.0}}}}}",
        row.file.replace('\\', "\\\\").replace('"', "\\\""),
        row.readings,
        row.batch,
        row.roundtrip_ok,
        codecs.join(", ")
    )
}

fn bytes_of(row: &Row, base: Baseline) -> usize {
    row.baselines
        .iter()
        .find(|(b, _)| *b == base)
        .map_or(usize::MAX, |(_, n)| *n)
}

fn print_table(rows: &[Row]) {
    println!("bytes per reading (lower is better)");
    println!(
        "{:<32} {:>6} {:>9} {:>9} {:>7} {:>9} {:>9} {:>9} {:>8} {:>8}  round trip",
        "file",
        "batch",
        "telemark",
        "device",
        "dev/tm",
        "lz4_flex",
        "gorilla",
        "zstd19",
        "tm/zstd",
        "tm/lz4"
    );
    for r in rows {
        let bpr = |b| per_reading(b, r.readings);
        let tm = bpr(r.telemark);
        println!(
            "{:<32} {:>6} {:>9.3} {:>9.3} {:>7.3} {:>9.3} {:>9.3} {:>9.3} {:>8.3} {:>8.3}  {}",
            r.file,
            r.batch,
            tm,
            bpr(r.device),
            r.device as f64 / r.telemark as f64,
            bpr(bytes_of(r, Baseline::Lz4Flex)),
            bpr(bytes_of(r, Baseline::Gorilla)),
            bpr(bytes_of(r, Baseline::Zstd19)),
            tm / bpr(bytes_of(r, Baseline::Zstd19)),
            tm / bpr(bytes_of(r, Baseline::Lz4Flex)),
            if r.roundtrip_ok { "ok" } else { "FAILED" }
        );
    }
    println!("\nmillion readings per second (higher is better)");
    println!(
        "{:<32} {:>6} {:>10} {:>10} {:>12} {:>10} {:>10} {:>8}",
        "file", "batch", "tm encode", "lz4 comp", "pc+lz4 enc", "tm decode", "lz4 dec", "enc/lz4"
    );
    for r in rows {
        let [enc, dec, lz4_enc, lz4_dec, pipeline] = r.speed.map(|x| x / 1e6);
        println!(
            "{:<32} {:>6} {:>10.1} {:>10.1} {:>12.1} {:>10.1} {:>10.1} {:>8.2}",
            r.file,
            r.batch,
            enc,
            lz4_enc,
            pipeline,
            dec,
            lz4_dec,
            enc / lz4_enc
        );
    }
    println!(
        "\n(lz4 comp: lz4_flex compressing postcard bytes already serialised; pc+lz4 enc: postcard"
    );
    println!(
        " serialisation plus lz4_flex compression, both from the readings, as telemark encodes)\n"
    );
    let mut batches: Vec<usize> = rows.iter().map(|r| r.batch).collect();
    batches.sort_unstable();
    batches.dedup();
    for batch in batches {
        let at: Vec<&Row> = rows.iter().filter(|r| r.batch == batch).collect();
        let ratio = |base| -> Vec<f64> {
            at.iter()
                .map(|r| r.telemark as f64 / bytes_of(r, base) as f64)
                .collect()
        };
        let geo = |v: &[f64]| (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp();
        let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
        let (zstd, lz4) = (ratio(Baseline::Zstd19), ratio(Baseline::Lz4Flex));
        let device: Vec<f64> = at
            .iter()
            .map(|r| r.device as f64 / r.telemark as f64)
            .collect();
        let slowest = |k: usize| {
            at.iter()
                .map(|r| r.speed[0] / r.speed[k])
                .fold(f64::INFINITY, f64::min)
        };
        println!(
            "batch {batch}: telemark/zstd19 geomean {:.3} (max {:.3}); telemark/lz4_flex geomean {:.3} (max {:.3}); \
             encode vs lz4_flex compress, slowest file {:.2}x; vs postcard+lz4_flex {:.2}x; \
             device profile/telemark geomean {:.3} (max {:.3})",
            geo(&zstd),
            max(&zstd),
            geo(&lz4),
            max(&lz4),
            slowest(2),
            slowest(4),
            geo(&device),
            max(&device)
        );
    }
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut rows = Vec::new();
    for path in &args.files {
        let rec = match load_csv(path) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return ExitCode::from(2);
            }
        };
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        for &batch in &args.batches {
            let row = measure(&name, &rec, batch);
            if args.json {
                use std::io::Write as _;
                // A closed pipe (`| head`) ends the report quietly.
                if writeln!(std::io::stdout().lock(), "{}", json(&row)).is_err() {
                    return ExitCode::SUCCESS;
                }
            }
            rows.push(row);
        }
    }
    if !args.json {
        print_table(&rows);
    }
    if rows.iter().all(|r| r.roundtrip_ok) {
        ExitCode::SUCCESS
    } else {
        eprintln!("round trip FAILED: a telemark batch did not decode to its input");
        ExitCode::FAILURE
    }
}
