//! Encodes the recordings in a loop, for profilers:
//! `cargo run --release -p telemark-benches --example encode_loop -- FILE.csv [SECONDS]`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use telemark_benches::load_csv;
use telemark_core::codec::{raw_len, BlockCodec, CompactCodec};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(file) = args.next().map(PathBuf::from) else {
        eprintln!("usage: encode_loop FILE.csv [SECONDS]");
        std::process::exit(2);
    };
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    let rec = match load_csv(&file) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{}: {e}", file.display());
            std::process::exit(2);
        }
    };
    let mut buf = vec![0u8; raw_len(256)];
    let (start, mut readings, mut bytes) = (Instant::now(), 0u64, 0u64);
    while start.elapsed() < Duration::from_secs(secs) {
        for batch in rec.readings.chunks(256) {
            bytes += CompactCodec.encode(batch, &mut buf).unwrap_or(0) as u64;
            readings += batch.len() as u64;
        }
    }
    let rate = readings as f64 / start.elapsed().as_secs_f64();
    println!(
        "{readings} readings, {:.3} B/reading, {:.1} M readings/s",
        bytes as f64 / readings as f64,
        rate / 1e6
    );
}
