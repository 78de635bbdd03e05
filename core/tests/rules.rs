//! Each alert rule, driven as a sensor would drive it.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use telemark_core::channel::{ChannelSpec, Range, SpecError, Unit, ValueKind};
use telemark_core::model::{AlertKind, ChannelId, Quality, Reading, Severity, Value};
use telemark_core::rules::{RuleError, RuleState, Rules};
use telemark_core::time::{Duration, Instant};

const CH: ChannelId = ChannelId(4);

fn spec(rules: Rules) -> ChannelSpec {
    ChannelSpec::try_new(
        CH,
        Unit::Celsius,
        ValueKind::Scaled { decimals: 1 },
        Range::new(-20.0, 60.0),
        Duration::from_secs(1),
        rules,
    )
    .unwrap()
}

/// Feeds `celsius` readings one second apart; returns the alert kinds per reading.
fn feed(spec: &ChannelSpec, celsius: &[f32]) -> Vec<Vec<AlertKind>> {
    let mut state = RuleState::new();
    celsius
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            let mut r = Reading::new(
                CH,
                Instant::from_millis(i as u64 * 1000),
                spec.quantize(c).unwrap(),
            );
            state
                .on_reading(spec, &mut r)
                .iter()
                .map(|a| a.kind)
                .collect()
        })
        .collect()
}

fn kinds(per_reading: &[Vec<AlertKind>]) -> Vec<AlertKind> {
    per_reading.iter().flatten().copied().collect()
}

#[test]
fn high_threshold_hysteresis_suppresses_chatter() {
    let s = spec(Rules::NONE.high(40.0, 2.0, Severity::Critical));
    // Noise around 40 °C: one alert, no storm.
    let out = feed(
        &s,
        &[
            39.0, 40.1, 39.9, 40.2, 39.5, 40.3, 38.1, 40.5, 37.9, 38.5, 41.0,
        ],
    );
    assert_eq!(
        out,
        vec![
            vec![],
            vec![AlertKind::High],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![],
            vec![AlertKind::HighCleared],
            vec![],
            vec![AlertKind::High],
        ]
    );
}

#[test]
fn low_threshold_fires_and_clears_with_hysteresis() {
    let s = spec(Rules::NONE.low(0.0, 1.0, Severity::Warning));
    let out = feed(&s, &[2.0, -0.1, 0.5, -0.5, 0.9, 1.1, 0.5]);
    assert_eq!(kinds(&out), vec![AlertKind::Low, AlertKind::LowCleared]);
    assert_eq!(out[1], vec![AlertKind::Low]);
    assert_eq!(out[5], vec![AlertKind::LowCleared]);
}

#[test]
fn a_jump_across_both_thresholds_clears_one_and_fires_the_other() {
    let s = spec(
        Rules::NONE
            .high(40.0, 1.0, Severity::Critical)
            .low(0.0, 1.0, Severity::Warning),
    );
    let out = feed(&s, &[45.0, -5.0, 45.0]);
    assert_eq!(out[0], vec![AlertKind::High]);
    assert_eq!(out[1], vec![AlertKind::HighCleared, AlertKind::Low]);
    assert_eq!(out[2], vec![AlertKind::High, AlertKind::LowCleared]);
}

#[test]
fn alerts_carry_channel_value_time_and_severity() {
    let s = spec(Rules::NONE.high(40.0, 1.0, Severity::Critical));
    let mut state = RuleState::new();
    let mut r = Reading::new(CH, Instant::from_millis(7_000), Value::Scaled(412));
    let alerts = state.on_reading(&s, &mut r);
    assert_eq!(alerts.len(), 1);
    let a = alerts[0];
    assert_eq!(
        (a.channel, a.severity, a.value, a.time),
        (CH, Severity::Critical, Some(Value::Scaled(412)), r.time)
    );
}

#[test]
fn rate_of_change_fires_once_per_excursion() {
    // At most 0.5 °C per second.
    let s = spec(Rules::NONE.rate(0.5, Severity::Warning));
    let out = feed(&s, &[20.0, 20.4, 21.5, 23.0, 23.2, 23.6, 25.0]);
    assert_eq!(out[1], vec![]);
    assert_eq!(out[2], vec![AlertKind::RateOfChange]);
    assert_eq!(out[3], vec![], "still too fast, but already reported");
    assert_eq!(out[4], vec![]);
    assert_eq!(
        out[6],
        vec![AlertKind::RateOfChange],
        "a second excursion is reported again"
    );
}

#[test]
fn rate_uses_elapsed_time_between_readings() {
    let s = spec(Rules::NONE.rate(0.5, Severity::Warning));
    let mut state = RuleState::new();
    let mut a = Reading::new(CH, Instant::from_millis(0), s.quantize(20.0).unwrap());
    let mut b = Reading::new(CH, Instant::from_millis(10_000), s.quantize(24.0).unwrap());
    assert!(state.on_reading(&s, &mut a).is_empty());
    // 4 °C in 10 s is 0.4 °C/s: fine.
    assert!(state.on_reading(&s, &mut b).is_empty());
}

#[test]
fn stuck_value_fires_after_n_identical_samples_and_rearms() {
    let s = spec(Rules::NONE.stuck(4, Severity::Warning));
    let out = feed(
        &s,
        &[21.0, 21.0, 21.0, 21.0, 21.0, 21.0, 21.1, 21.1, 21.1, 21.1],
    );
    assert_eq!(out[2], vec![]);
    assert_eq!(out[3], vec![AlertKind::Stuck]);
    assert_eq!(out[4], vec![]);
    assert_eq!(out[9], vec![AlertKind::Stuck]);
    assert_eq!(kinds(&out).len(), 2);
}

#[test]
fn stuck_detects_identical_nan_floats() {
    let s = ChannelSpec::try_new(
        CH,
        Unit::None,
        ValueKind::Float,
        Range::new(0.0, 1.0),
        Duration::from_secs(1),
        Rules::NONE.stuck(3, Severity::Info),
    )
    .unwrap();
    let mut state = RuleState::new();
    let mut fired = 0;
    for i in 0..3 {
        let mut r = Reading::new(CH, Instant::from_millis(i), Value::Float(f32::NAN));
        fired += state.on_reading(&s, &mut r).len();
    }
    assert_eq!(fired, 1);
}

#[test]
fn sensor_fault_after_n_failures_then_recovery() {
    let s = spec(Rules::NONE.fault(3, Severity::Critical));
    let mut state = RuleState::new();
    let t = Instant::from_millis;
    assert_eq!(state.on_failure(&s, t(1)), None);
    assert_eq!(state.on_failure(&s, t(2)), None);
    let fault = state.on_failure(&s, t(3)).unwrap();
    assert_eq!(
        (fault.kind, fault.severity, fault.value),
        (AlertKind::SensorFault, Severity::Critical, None)
    );
    assert!(state.is_faulted());
    // Further failures while faulted raise nothing more.
    assert_eq!(state.on_failure(&s, t(4)), None);
    let mut r = Reading::new(CH, t(5), Value::Scaled(200));
    let alerts = state.on_reading(&s, &mut r);
    assert_eq!(
        alerts.iter().map(|a| a.kind).collect::<Vec<_>>(),
        vec![AlertKind::SensorRecovered]
    );
    assert!(!state.is_faulted());
    // A good reading resets the count: two failures are not a fault.
    assert_eq!(state.on_failure(&s, t(6)), None);
    assert_eq!(state.on_failure(&s, t(7)), None);
    let mut r = Reading::new(CH, t(8), Value::Scaled(200));
    assert!(state.on_reading(&s, &mut r).is_empty());
    assert_eq!(state.on_failure(&s, t(9)), None);
}

#[test]
fn readings_outside_the_normal_range_are_flagged() {
    let s = spec(Rules::NONE);
    let mut state = RuleState::new();
    let mut inside = Reading::new(CH, Instant::ZERO, s.quantize(25.0).unwrap());
    let mut outside = Reading::new(CH, Instant::ZERO, s.quantize(75.0).unwrap());
    state.on_reading(&s, &mut inside);
    state.on_reading(&s, &mut outside);
    assert!(inside.quality.is_good());
    assert!(outside.quality.contains(Quality::OUT_OF_RANGE));
}

#[test]
fn nonsense_specs_are_refused_with_a_reason() {
    let mk = |kind, range, period, rules| {
        ChannelSpec::try_new(CH, Unit::None, kind, range, period, rules).map(|_| ())
    };
    let scaled = ValueKind::Scaled { decimals: 2 };
    let ok_range = Range::new(0.0, 1.0);
    let sec = Duration::from_secs(1);
    assert_eq!(
        mk(scaled, ok_range, Duration::ZERO, Rules::NONE),
        Err(SpecError::ZeroPeriod)
    );
    assert_eq!(
        mk(scaled, Range::new(1.0, 1.0), sec, Rules::NONE),
        Err(SpecError::EmptyRange)
    );
    assert_eq!(
        mk(scaled, Range::new(f32::NAN, 1.0), sec, Rules::NONE),
        Err(SpecError::EmptyRange)
    );
    assert_eq!(
        mk(
            ValueKind::Scaled { decimals: 10 },
            ok_range,
            sec,
            Rules::NONE
        ),
        Err(SpecError::TooManyDecimals)
    );
    assert_eq!(
        mk(
            ValueKind::Scaled { decimals: 9 },
            Range::new(0.0, 100.0),
            sec,
            Rules::NONE
        ),
        Err(SpecError::RangeTooWide)
    );
    assert_eq!(
        mk(
            scaled,
            ok_range,
            sec,
            Rules::NONE.high(1.0, -1.0, Severity::Info)
        ),
        Err(SpecError::Rule(RuleError::BadThreshold))
    );
    assert_eq!(
        mk(
            scaled,
            ok_range,
            sec,
            Rules::NONE
                .high(1.0, 0.1, Severity::Info)
                .low(1.0, 0.1, Severity::Info)
        ),
        Err(SpecError::Rule(RuleError::ThresholdsCrossed))
    );
    assert_eq!(
        mk(scaled, ok_range, sec, Rules::NONE.rate(0.0, Severity::Info)),
        Err(SpecError::Rule(RuleError::BadRate))
    );
    assert_eq!(
        mk(scaled, ok_range, sec, Rules::NONE.stuck(1, Severity::Info)),
        Err(SpecError::Rule(RuleError::BadCount))
    );
    assert_eq!(
        mk(scaled, ok_range, sec, Rules::NONE.fault(0, Severity::Info)),
        Err(SpecError::Rule(RuleError::BadCount))
    );
}

#[test]
fn quantize_rounds_to_the_resolution_and_refuses_overflow() {
    let s = spec(Rules::NONE);
    assert_eq!(s.quantize(21.44), Ok(Value::Scaled(214)));
    assert_eq!(s.quantize(21.46), Ok(Value::Scaled(215)));
    assert_eq!(s.quantize(-21.46), Ok(Value::Scaled(-215)));
    assert!(s.quantize(f32::INFINITY).is_err());
    assert!(s.quantize(3.0e9).is_err());
    assert!((s.to_units(Value::Scaled(-215)) + 21.5).abs() < 1e-6);
}

#[test]
fn rule_state_is_small() {
    assert_eq!(core::mem::size_of::<RuleState>(), 32);
}
