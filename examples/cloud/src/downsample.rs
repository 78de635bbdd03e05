//! Downsampling for plots: a series of readings in a number of buckets of
//! equal time, each with its mean, least and greatest reading, so that a
//! week at 1 Hz draws as 2,000 points and keeps its peaks.
//!
//! ```
//! use telemark_cloud::downsample::downsample;
//! use telemark_cloud::StoredReading;
//!
//! let day: Vec<StoredReading> = (0..86_400)
//!     .map(|s| StoredReading { channel: 1, unix_ms: s * 1000, value: (s % 60) as f64, quality: 0 })
//!     .collect();
//! let points = downsample(&day, 0, 86_400_000, 24);
//! assert_eq!(points.len(), 24);
//! assert_eq!((points[0].min, points[0].max, points[0].count), (0.0, 59.0, 3600));
//! ```

use crate::store::StoredReading;

/// One bucket of a downsampled series.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct Point {
    /// The channel.
    pub channel: u16,
    /// The bucket's start, Unix ms.
    pub unix_ms: i64,
    /// The mean of its readings.
    pub mean: f64,
    /// The least.
    pub min: f64,
    /// The greatest.
    pub max: f64,
    /// How many readings it holds.
    pub count: u32,
}

/// `readings` (sorted by time) in `points` buckets of equal time over
/// `[from, to)`, each channel on its own.
pub fn downsample(readings: &[StoredReading], from: i64, to: i64, points: usize) -> Vec<Point> {
    // In i128: any two Unix times a query names, however far apart.
    let span = (i128::from(to) - i128::from(from)).max(1);
    // More buckets than 2^32 draw nothing more.
    let n = i128::from(u32::try_from(points).unwrap_or(u32::MAX).max(1));
    let mut out: Vec<Point> = Vec::new();
    let mut channels: Vec<u16> = readings.iter().map(|r| r.channel).collect();
    channels.sort_unstable();
    channels.dedup();
    for c in channels {
        let mut current: Option<(i128, Point)> = None;
        for r in readings.iter().filter(|r| r.channel == c) {
            let bucket = ((i128::from(r.unix_ms) - i128::from(from)) * n / span).clamp(0, n - 1);
            match &mut current {
                Some((b, p)) if *b == bucket => {
                    p.mean += r.value;
                    p.min = p.min.min(r.value);
                    p.max = p.max.max(r.value);
                    p.count += 1;
                }
                _ => {
                    if let Some((_, p)) = current.take() {
                        out.push(p);
                    }
                    let start = i64::try_from(i128::from(from) + bucket * span / n).unwrap_or(from);
                    current = Some((
                        bucket,
                        Point {
                            channel: c,
                            unix_ms: start,
                            mean: r.value,
                            min: r.value,
                            max: r.value,
                            count: 1,
                        },
                    ));
                }
            }
        }
        out.extend(current.map(|(_, p)| p));
    }
    for p in &mut out {
        p.mean /= f64::from(p.count);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(channel: u16, unix_ms: i64, value: f64) -> StoredReading {
        StoredReading {
            channel,
            unix_ms,
            value,
            quality: 0,
        }
    }

    #[test]
    fn the_widest_range_is_no_overflow() {
        let readings = [r(1, i64::MIN, 1.0), r(1, 0, 2.0), r(1, i64::MAX - 1, 3.0)];
        let points = downsample(&readings, i64::MIN, i64::MAX, 3);
        assert_eq!(points.iter().map(|p| p.count).sum::<u32>(), 3);
        assert_eq!(points.first().map(|p| p.unix_ms), Some(i64::MIN));
        let all = downsample(&readings, 5, 5, usize::MAX);
        assert_eq!(all.iter().map(|p| p.count).sum::<u32>(), 3);
    }

    #[test]
    fn downsampling_keeps_each_channel_apart() {
        let readings: Vec<StoredReading> = (0..100)
            .map(|i| r(1 + (i % 2) as u16, i * 10, i as f64))
            .collect();
        let points = downsample(&readings, 0, 1000, 4);
        assert_eq!(points.len(), 8);
        let first = &points[0];
        assert_eq!((first.channel, first.unix_ms, first.count), (1, 0, 13));
        assert_eq!((first.min, first.max), (0.0, 24.0));
        assert_eq!(first.mean, 12.0);
        assert_eq!(points.iter().map(|p| p.count).sum::<u32>(), 100);
        assert!(points[..4].iter().all(|p| p.channel == 1));
    }
}
