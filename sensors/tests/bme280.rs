//! The BME280 driver against exact I2C transactions, the datasheet's
//! compensation example, and the failure paths.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
use embedded_hal_mock::eh1::delay::NoopDelay;
use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};
use telemark_core::model::{ChannelId, Reading, Value};
use telemark_core::sensor::{Sensor, SensorError, SensorErrorKind};
use telemark_core::time::Instant;
use telemark_sensors::bme280::{
    compensate, Bme280, Bme280Error, Calibration, ADDRESS_PRIMARY as A,
};

const IDS: [ChannelId; 3] = [ChannelId(1), ChannelId(2), ChannelId(3)];

/// The calibration of the datasheet's example (BMP280 datasheet 3.12,
/// same formulas), with humidity coefficients of a typical part.
fn datasheet_registers() -> ([u8; 26], [u8; 7]) {
    let mut tp = [0u8; 26];
    let words: [u16; 12] = [
        27504,
        26435,
        (-1000i16) as u16,
        36477,
        (-10685i16) as u16,
        3024,
        2855,
        140,
        (-7i16) as u16,
        15500,
        (-14600i16) as u16,
        6000,
    ];
    for (i, w) in words.iter().enumerate() {
        tp[2 * i..2 * i + 2].copy_from_slice(&w.to_le_bytes());
    }
    tp[25] = 75; // dig_H1
                 // dig_H2 = 370, dig_H3 = 0, dig_H4 = 313, dig_H5 = 50, dig_H6 = 30
    let h = [0x72, 0x01, 0x00, 0x13, 0x29, 0x03, 0x1e];
    (tp, h)
}

fn adc_bytes(adc_p: u32, adc_t: u32, adc_h: u16) -> [u8; 8] {
    [
        (adc_p >> 12) as u8,
        (adc_p >> 4) as u8,
        ((adc_p & 0xF) << 4) as u8,
        (adc_t >> 12) as u8,
        (adc_t >> 4) as u8,
        ((adc_t & 0xF) << 4) as u8,
        (adc_h >> 8) as u8,
        adc_h as u8,
    ]
}

#[test]
fn calibration_parses_the_packed_humidity_coefficients() {
    let (tp, h) = datasheet_registers();
    let c = Calibration::parse(&tp, &h);
    assert_eq!((c.t1, c.t2, c.t3), (27504, 26435, -1000));
    assert_eq!((c.p1, c.p2, c.p9), (36477, -10685, 6000));
    assert_eq!(
        (c.h1, c.h2, c.h3, c.h4, c.h5, c.h6),
        (75, 370, 0, 313, 50, 30)
    );
}

#[test]
fn compensation_matches_the_datasheet_example() {
    let (tp, h) = datasheet_registers();
    let c = Calibration::parse(&tp, &h);
    // adc_T = 519888 gives t_fine = 128422 and 25.08 °C.
    assert_eq!(c.temperature(519_888), (2508, 128_422));
    // adc_P = 415148: the datasheet prints 25767236 (100653.27 Pa, its
    // floating-point result); its 64-bit integer formula, run as published,
    // gives 25767233 = 100653.25 Pa, as other implementations find too.
    let p = c.pressure(415_148, 128_422).unwrap();
    assert_eq!(p, 25_767_233);
    assert!((f64::from(p) / 256.0 - 100_653.27).abs() < 0.05);
}

/// The datasheet's floating-point humidity formula (4.2.3, double precision).
fn humidity_reference(c: &Calibration, adc_h: f64, t_fine: f64) -> f64 {
    let mut h = t_fine - 76800.0;
    h = (adc_h - (f64::from(c.h4) * 64.0 + f64::from(c.h5) / 16384.0 * h))
        * (f64::from(c.h2) / 65536.0
            * (1.0 + f64::from(c.h6) / 67108864.0 * h * (1.0 + f64::from(c.h3) / 67108864.0 * h)));
    h *= 1.0 - f64::from(c.h1) * h / 524288.0;
    h.clamp(0.0, 100.0)
}

#[test]
fn humidity_agrees_with_the_floating_point_formula() {
    let (tp, h) = datasheet_registers();
    let c = Calibration::parse(&tp, &h);
    for adc_h in [20_000i32, 26_000, 30_000, 34_000, 40_000] {
        for adc_t in [480_000, 519_888, 560_000] {
            let (_, t_fine) = c.temperature(adc_t);
            let int = f64::from(c.humidity(adc_h, t_fine)) / 1024.0;
            let float = humidity_reference(&c, f64::from(adc_h), f64::from(t_fine));
            assert!(
                (int - float).abs() < 0.05,
                "adc_h {adc_h}: {int} vs {float}"
            );
        }
    }
}

fn init(then: &[T]) -> Vec<T> {
    let (tp, h) = datasheet_registers();
    let mut t = vec![
        T::write_read(A, vec![0xD0], vec![0x60]),
        T::write_read(A, vec![0x88], tp.to_vec()),
        T::write_read(A, vec![0xE1], h.to_vec()),
    ];
    t.extend_from_slice(then);
    t
}

fn measure(data: [u8; 8]) -> Vec<T> {
    vec![
        T::write(A, vec![0xF2, 0x01]),
        T::write(A, vec![0xF4, 0x25]),
        T::write_read(A, vec![0xF7], data.to_vec()),
    ]
}

#[test]
fn a_forced_measurement_gives_three_readings() {
    let expectations = init(&measure(adc_bytes(415_148, 519_888, 30_000)));
    let mut i2c = Mock::new(&expectations);
    let mut sensor = Bme280::new(&mut i2c, NoopDelay, A, IDS).unwrap();
    let mut out: Vec<Reading> = Vec::new();
    sensor
        .sample(Instant::from_millis(60_000), &mut out)
        .unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(out[0].value, Value::Scaled(2508));
    assert_eq!(out[1].value, Value::Scaled(100_653)); // 1006.53 hPa
    let Value::Scaled(h) = out[2].value else {
        panic!("humidity is scaled")
    };
    assert!((0..=10_000).contains(&h));
    assert_eq!(out.iter().map(|r| r.channel).collect::<Vec<_>>(), IDS);
    // The specs the driver declares give the values their units.
    assert!((sensor.channels()[1].to_units(Value::Scaled(100_653)) - 1006.53).abs() < 1e-3);
    let _ = sensor.release();
    i2c.done();
}

#[test]
fn the_wrong_chip_is_refused() {
    let expectations = [T::write_read(A, vec![0xD0], vec![0x58])];
    let mut i2c = Mock::new(&expectations);
    let err = Bme280::new(&mut i2c, NoopDelay, A, IDS).err().unwrap();
    assert_eq!(err, Bme280Error::WrongChip(0x58));
    assert_eq!(err.kind(), SensorErrorKind::WrongDevice);
    i2c.done();
}

#[test]
fn a_nack_is_a_typed_error_and_the_next_sample_recovers() {
    let nack = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);
    let mut rest = vec![T::write(A, vec![0xF2, 0x01]).with_error(nack)];
    rest.extend(measure(adc_bytes(415_148, 519_888, 30_000)));
    let expectations = init(&rest);
    let mut i2c = Mock::new(&expectations);
    let mut sensor = Bme280::new(&mut i2c, NoopDelay, A, IDS).unwrap();
    let mut out: Vec<Reading> = Vec::new();
    let err = sensor.sample(Instant::ZERO, &mut out).unwrap_err();
    assert_eq!(err.kind(), SensorErrorKind::Nack);
    assert!(out.is_empty());
    sensor.sample(Instant::ZERO, &mut out).unwrap();
    assert_eq!(out.len(), 3);
    let _ = sensor.release();
    i2c.done();
}

#[test]
fn skipped_and_impossible_measurements_are_refused() {
    let (tp, h) = datasheet_registers();
    let c = Calibration::parse(&tp, &h);
    // 0x80000 means the chip skipped the measurement.
    assert_eq!(
        compensate(&c, &adc_bytes(0x80000, 519_888, 30_000)),
        Err(Bme280Error::NotReady)
    );
    // A bus stuck high reads all ones: no real temperature or pressure.
    assert_eq!(
        compensate(&c, &[0xFF; 8]).err().map(|e| e.kind()),
        Some(SensorErrorKind::OutOfRange)
    );
}
