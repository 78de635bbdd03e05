//! The gas-meter pulse counter (debounced pin, interrupt counter, leak
//! rule) and the calibrated analog channel.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use embedded_hal_mock::eh1::digital::{Mock as PinMock, State, Transaction as Pin};
use embedded_hal_mock::eh1::MockError;
use telemark_core::model::{AlertKind, ChannelId, Reading, Value};
use telemark_core::rules::RuleState;
use telemark_core::sensor::{Sensor, SensorErrorKind};
use telemark_core::time::Instant;
use telemark_sensors::analog::{Adc, AnalogChannel, CalibrationError, TwoPoint};
use telemark_sensors::pulse::{GasMeter, PinPulses, PulseSource, SharedPulses};

const IDS: [ChannelId; 3] = [ChannelId(1), ChannelId(2), ChannelId(3)];

fn at_min(m: u64) -> Instant {
    Instant::from_millis(m * 60_000)
}

#[test]
fn contact_bounce_counts_once() {
    // A bouncing closure, a stable high, a bouncing release, a stable low, another pulse.
    let levels = [0, 1, 0, 1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 1, 1, 1];
    let expectations: Vec<Pin> = levels
        .iter()
        .map(|&l| Pin::get(if l == 1 { State::High } else { State::Low }))
        .collect();
    let mut pin = PinMock::new(&expectations);
    let mut pulses = PinPulses::new(pin.clone(), 3);
    for _ in levels {
        pulses.poll();
    }
    assert_eq!(pulses.total(), Ok(2));
    pin.done();
}

#[test]
fn a_pin_error_is_reported_as_a_bus_fault() {
    let expectations =
        [Pin::get(State::High).with_error(MockError::Io(std::io::ErrorKind::BrokenPipe))];
    let mut pin = PinMock::new(&expectations);
    let mut pulses = PinPulses::new(pin.clone(), 1);
    pulses.poll();
    assert_eq!(pulses.total(), Err(SensorErrorKind::Bus));
    assert_eq!(pulses.total(), Ok(0), "reported once");
    pin.done();
}

#[test]
fn volume_flow_and_a_leak_alert_from_continuous_flow() {
    let pulses = SharedPulses::new();
    // 10 L per pulse; a leak is gas flowing 2 hours without a pause.
    let mut meter = GasMeter::new(&pulses, 10, IDS, 120);
    let specs = meter.channels().to_vec();
    let mut rules = RuleState::new();
    let mut alerts = Vec::new();
    for quarter in 0..12u64 {
        // A small, steady leak: one pulse every quarter of an hour.
        if quarter > 0 {
            pulses.pulse();
        }
        let mut out: Vec<Reading> = Vec::new();
        meter.sample(at_min(quarter * 15), &mut out).unwrap();
        let mut minutes = out[2];
        alerts.extend(
            rules
                .on_reading(&specs[2], &mut minutes)
                .into_iter()
                .map(|a| (quarter, a.kind)),
        );
        if quarter == 4 {
            assert_eq!(out[0].value, Value::Scaled(40), "4 pulses of 10 L");
            assert_eq!(
                out[1].value,
                Value::Scaled(40),
                "10 L a quarter is 0.040 m³/h"
            );
            assert_eq!(out[2].value, Value::Scaled(60), "flowing for an hour");
        }
    }
    // Flowing since minute 0; over 120 minutes at the 9th quarter (135 min).
    assert_eq!(alerts, vec![(9, AlertKind::High)]);
    // The flow stops: the alert clears.
    let mut out: Vec<Reading> = Vec::new();
    meter.sample(at_min(12 * 15), &mut out).unwrap();
    assert_eq!(out[2].value, Value::Scaled(0));
    let cleared: Vec<_> = rules
        .on_reading(&specs[2], &mut out[2])
        .into_iter()
        .map(|a| a.kind)
        .collect();
    assert_eq!(cleared, vec![AlertKind::HighCleared]);
}

#[test]
fn the_counter_wraps_without_a_jump_in_flow() {
    let pulses = SharedPulses::new();
    for _ in 0..3 {
        pulses.pulse();
    }
    let mut meter = GasMeter::new(&pulses, 1, IDS, 60);
    let mut out: Vec<Reading> = Vec::new();
    meter.sample(at_min(0), &mut out).unwrap();
    pulses.pulse();
    meter.sample(at_min(60), &mut out).unwrap();
    assert_eq!(out[4].value, Value::Scaled(1), "1 L in an hour");
}

struct Fixed(Result<u32, ()>);

impl Adc for Fixed {
    type Error = ();
    fn read(&mut self) -> Result<u32, ()> {
        self.0
    }
}

const BAR: telemark_core::channel::ChannelSpec = telemark_core::channel::ChannelSpec::new(
    ChannelId(9),
    telemark_core::channel::Unit::None,
    telemark_core::channel::ValueKind::Scaled { decimals: 2 },
    telemark_core::channel::Range::new(0.0, 10.0),
    telemark_core::time::Duration::from_secs(30),
    telemark_core::rules::Rules::NONE,
);

#[test]
fn a_broken_current_loop_is_an_error_not_a_reading() {
    let cal = TwoPoint::try_new(745, 0.0, 3723, 10.0).unwrap();
    let mut out: Vec<Reading> = Vec::new();
    // 0 mA: the loop is open.
    let mut open = AnalogChannel::new(Fixed(Ok(0)), cal, BAR, (-0.5, 10.5));
    assert_eq!(
        open.sample(Instant::ZERO, &mut out),
        Err(SensorErrorKind::OutOfRange)
    );
    let mut failing = AnalogChannel::new(Fixed(Err(())), cal, BAR, (-0.5, 10.5));
    assert_eq!(
        failing.sample(Instant::ZERO, &mut out),
        Err(SensorErrorKind::Bus)
    );
    let mut full = AnalogChannel::new(Fixed(Ok(3723)), cal, BAR, (-0.5, 10.5));
    full.sample(Instant::ZERO, &mut out).unwrap();
    assert_eq!(
        out,
        vec![Reading::new(
            ChannelId(9),
            Instant::ZERO,
            Value::Scaled(1000)
        )]
    );
}

#[test]
fn a_calibration_needs_two_distinct_points() {
    assert_eq!(
        TwoPoint::try_new(100, 0.0, 100, 1.0),
        Err(CalibrationError::SameRaw)
    );
    assert_eq!(
        TwoPoint::try_new(0, f32::NAN, 100, 1.0),
        Err(CalibrationError::NotFinite)
    );
}
