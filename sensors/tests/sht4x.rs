//! The SHT4x driver against exact I2C transactions, the datasheet's CRC
//! example and conversion formulas, and the failure paths.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use embedded_hal::i2c::{ErrorKind, NoAcknowledgeSource};
use embedded_hal_mock::eh1::delay::NoopDelay;
use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};
use telemark_core::model::{ChannelId, Reading, Value};
use telemark_core::sensor::{Sensor, SensorError, SensorErrorKind};
use telemark_core::time::Instant;
use telemark_sensors::sht4x::{centi_celsius, centi_percent, crc8, Sht4x, ADDRESS as A};

const IDS: [ChannelId; 2] = [ChannelId(4), ChannelId(5)];

fn answer(a: u16, b: u16) -> Vec<u8> {
    let [a0, a1] = a.to_be_bytes();
    let [b0, b1] = b.to_be_bytes();
    vec![a0, a1, crc8([a0, a1]), b0, b1, crc8([b0, b1])]
}

#[test]
fn crc_matches_the_datasheet_example() {
    assert_eq!(crc8([0xBE, 0xEF]), 0x92);
}

#[test]
fn conversions_follow_the_datasheet_formulas() {
    assert_eq!(centi_celsius(0), -4500);
    assert_eq!(centi_celsius(65535), 13000);
    // 0x6666 = 26214: -45 + 175 * 26214 / 65535 = 24.9995 °C.
    assert_eq!(centi_celsius(0x6666), 2500);
    assert_eq!(centi_percent(0), 0, "clipped at 0 %RH");
    assert_eq!(centi_percent(65535), 10000, "clipped at 100 %RH");
    assert_eq!(centi_percent(0x8000), 5650); // -6 + 125 * 32768 / 65535
}

#[test]
fn a_measurement_gives_temperature_and_humidity() {
    let expectations = [T::write(A, vec![0xFD]), T::read(A, answer(0x6666, 0x8000))];
    let mut i2c = Mock::new(&expectations);
    let mut sensor = Sht4x::new(&mut i2c, NoopDelay, A, IDS);
    let mut out: Vec<Reading> = Vec::new();
    sensor.sample(Instant::from_millis(7), &mut out).unwrap();
    assert_eq!(
        out.iter().map(|r| (r.channel, r.value)).collect::<Vec<_>>(),
        [
            (ChannelId(4), Value::Scaled(2500)),
            (ChannelId(5), Value::Scaled(5650))
        ]
    );
    let _ = sensor.release();
    i2c.done();
}

#[test]
fn the_serial_number_is_read_and_checked() {
    let expectations = [T::write(A, vec![0x89]), T::read(A, answer(0x1234, 0x5678))];
    let mut i2c = Mock::new(&expectations);
    let mut sensor = Sht4x::new(&mut i2c, NoopDelay, A, IDS);
    assert_eq!(sensor.serial_number().unwrap(), 0x1234_5678);
    let _ = sensor.release();
    i2c.done();
}

#[test]
fn a_crc_mismatch_is_an_error_not_a_reading() {
    let mut bad = answer(0x6666, 0x8000);
    bad[4] ^= 0x01; // a bit flipped on the bus
    let expectations = [T::write(A, vec![0xFD]), T::read(A, bad)];
    let mut i2c = Mock::new(&expectations);
    let mut sensor = Sht4x::new(&mut i2c, NoopDelay, A, IDS);
    let mut out: Vec<Reading> = Vec::new();
    let err = sensor.sample(Instant::ZERO, &mut out).unwrap_err();
    assert_eq!(err.kind(), SensorErrorKind::Crc);
    assert!(out.is_empty());
    let _ = sensor.release();
    i2c.done();
}

#[test]
fn a_nack_is_reported_and_the_bus_recovers() {
    let nack = ErrorKind::NoAcknowledge(NoAcknowledgeSource::Address);
    let expectations = [
        T::write(A, vec![0xFD]).with_error(nack),
        T::write(A, vec![0xFD]),
        T::read(A, answer(0x6666, 0x8000)),
    ];
    let mut i2c = Mock::new(&expectations);
    let mut sensor = Sht4x::new(&mut i2c, NoopDelay, A, IDS);
    let mut out: Vec<Reading> = Vec::new();
    assert_eq!(
        sensor.sample(Instant::ZERO, &mut out).unwrap_err().kind(),
        SensorErrorKind::Nack
    );
    sensor.sample(Instant::ZERO, &mut out).unwrap();
    assert_eq!(out.len(), 2);
    let _ = sensor.release();
    i2c.done();
}
