//! What the cloud reports share: the frames a bench device sends
//! ([`frames`]), the processes a report starts and watches and the MQTT
//! clients its devices are ([`services`]), and [`percentile_ms`].

use std::time::Duration;

pub mod frames;
pub mod services;

/// The `p` percentile (0 to 1) of `sorted`, in milliseconds; NaN for none.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_read_from_the_sorted_latencies() {
        let ms: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&ms, 0.5), 51.0);
        assert_eq!(percentile_ms(&ms, 0.99), 99.0);
        assert!(percentile_ms(&[], 0.5).is_nan());
    }
}
