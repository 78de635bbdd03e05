//! Encode and decode speed of telemark's codec and lz4_flex on the same
//! batches of real recordings (256 readings each).
//!
//! `cargo bench -p telemark-benches --bench codec`

use std::hint::black_box;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use telemark_benches::{load_csv, postcard_bytes};
use telemark_core::codec::{raw_len, BlockCodec, CompactCodec};

const BATCH: usize = 256;
const FILES: [&str; 3] = [
    "weather-greensboro-hourly.csv",
    "motion-basicmotions-10hz.csv",
    "ecg-mitdb-360hz.csv",
];

fn codecs(c: &mut Criterion) {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    for file in FILES {
        let Ok(rec) = load_csv(&data.join(file)) else {
            eprintln!("cannot read {file}; skipped");
            continue;
        };
        let batches: Vec<_> = rec.readings.chunks(BATCH).collect();
        let mut group = c.benchmark_group(file.trim_end_matches(".csv"));
        group.throughput(Throughput::Elements(rec.readings.len() as u64));

        let mut buf = vec![0u8; raw_len(BATCH)];
        let mut codec = CompactCodec;
        group.bench_function("telemark encode", |b| {
            b.iter(|| {
                for batch in &batches {
                    black_box(codec.encode(batch, &mut buf).ok());
                }
            })
        });
        let encoded: Vec<Vec<u8>> = batches
            .iter()
            .map(|batch| {
                let n = codec.encode(batch, &mut buf).unwrap_or(0);
                buf[..n].to_vec()
            })
            .collect();
        let mut out = Vec::with_capacity(BATCH);
        group.bench_function("telemark decode", |b| {
            b.iter(|| {
                for block in &encoded {
                    out.clear();
                    black_box(CompactCodec.decode(block, &mut out).ok());
                }
            })
        });

        let plain: Vec<Vec<u8>> = batches.iter().map(|b| postcard_bytes(b)).collect();
        let longest = plain.iter().map(Vec::len).max().unwrap_or(0);
        let mut lz4_buf = vec![0u8; lz4_flex::block::get_maximum_output_size(longest)];
        group.bench_function("lz4_flex compress", |b| {
            b.iter(|| {
                for p in &plain {
                    black_box(lz4_flex::block::compress_into(p, &mut lz4_buf).ok());
                }
            })
        });
        let compressed: Vec<Vec<u8>> = plain.iter().map(|p| lz4_flex::block::compress(p)).collect();
        let mut raw = vec![0u8; longest];
        group.bench_function("lz4_flex decompress", |b| {
            b.iter(|| {
                for (c, p) in compressed.iter().zip(&plain) {
                    black_box(lz4_flex::block::decompress_into(c, &mut raw[..p.len()]).ok());
                }
            })
        });
        group.finish();
    }
}

criterion_group!(benches, codecs);
criterion_main!(benches);
