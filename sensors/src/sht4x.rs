//! Sensirion SHT4x (SHT40, SHT41, SHT45): temperature and humidity over I2C.
//!
//! Each sample is one high-precision measurement (command `0xFD`, 10 ms);
//! both words of the answer are checked with the datasheet's CRC-8
//! (polynomial `0x31`, initial value `0xFF`), and a mismatch is an error,
//! never a reading. Temperature comes out in 0.01 °C, humidity in 0.01 %RH.
//!
//! ```
//! use telemark_sensors::sht4x::crc8;
//! // The datasheet's example: CRC(0xBEEF) = 0x92.
//! assert_eq!(crc8([0xBE, 0xEF]), 0x92);
//! ```

use core::fmt;

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::{ErrorKind, I2c};
use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
use telemark_core::model::{ChannelId, Reading, ReadingSink, Severity, Value};
use telemark_core::rules::Rules;
use telemark_core::sensor::{Sensor, SensorError, SensorErrorKind};
use telemark_core::time::{Duration, Instant};

/// The usual I2C address (SHT40-AD1B and most parts).
pub const ADDRESS: u8 = 0x44;
const CMD_MEASURE_HIGH: u8 = 0xFD;
const CMD_SERIAL: u8 = 0x89;
/// High-precision measurement time (datasheet: 8.3 ms max), rounded up.
const MEASURE_US: u32 = 10_000;

/// Why an SHT4x operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Sht4xError {
    /// The I2C bus failed, or the chip did not acknowledge.
    Bus(ErrorKind),
    /// A word's CRC did not match: corrupted on the bus.
    Crc,
    /// The sink had no room for the readings.
    SinkFull,
}

impl fmt::Display for Sht4xError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Sht4xError::Bus(e) => write!(f, "I2C: {e}"),
            Sht4xError::Crc => f.write_str("CRC mismatch"),
            Sht4xError::SinkFull => f.write_str("reading sink full"),
        }
    }
}

impl SensorError for Sht4xError {
    fn kind(&self) -> SensorErrorKind {
        match self {
            Sht4xError::Bus(kind) => crate::i2c_fault(*kind),
            Sht4xError::Crc => SensorErrorKind::Crc,
            Sht4xError::SinkFull => SensorErrorKind::SinkFull,
        }
    }
}

fn bus<E: embedded_hal::i2c::Error>(e: E) -> Sht4xError {
    Sht4xError::Bus(e.kind())
}

/// CRC-8 of the datasheet: polynomial `0x31`, initial value `0xFF`.
pub fn crc8(word: [u8; 2]) -> u8 {
    let mut crc = 0xFFu8;
    for byte in word {
        crc ^= byte;
        for _ in 0..8 {
            crc = if crc & 0x80 != 0 {
                (crc << 1) ^ 0x31
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The two CRC-checked words of a 6-byte answer.
pub fn words(answer: &[u8; 6]) -> Result<(u16, u16), Sht4xError> {
    let [a0, a1, ac, b0, b1, bc] = *answer;
    if crc8([a0, a1]) != ac || crc8([b0, b1]) != bc {
        return Err(Sht4xError::Crc);
    }
    Ok((u16::from_be_bytes([a0, a1]), u16::from_be_bytes([b0, b1])))
}

/// Temperature in 0.01 °C from its raw word: -45 + 175 · S / 65535 °C.
pub fn centi_celsius(raw: u16) -> i32 {
    ((17_500 * i64::from(raw) + 32_767) / 65_535) as i32 - 4_500
}

/// Humidity in 0.01 %RH from its raw word: -6 + 125 · S / 65535 %RH,
/// clipped to 0..=100 % as the datasheet advises.
pub fn centi_percent(raw: u16) -> i32 {
    (((12_500 * i64::from(raw) + 32_767) / 65_535) as i32 - 600).clamp(0, 10_000)
}

/// The channel specs of an SHT4x with the given channel ids.
pub const fn channels(ids: [ChannelId; 2]) -> [ChannelSpec; 2] {
    let period = Duration::from_mins(1);
    [
        ChannelSpec::new(
            ids[0],
            Unit::Celsius,
            ValueKind::Scaled { decimals: 2 },
            Range::new(-40.0, 125.0),
            period,
            // A reading identical to 0.01 °C for an hour is a frozen sensor.
            Rules::NONE
                .fault(3, Severity::Warning)
                .stuck(60, Severity::Warning),
        ),
        ChannelSpec::new(
            ids[1],
            Unit::Percent,
            ValueKind::Scaled { decimals: 2 },
            Range::new(0.0, 100.0),
            period,
            Rules::NONE.fault(3, Severity::Warning),
        ),
    ]
}

/// An SHT4x on a blocking I2C bus.
pub struct Sht4x<I2C, D> {
    i2c: I2C,
    delay: D,
    address: u8,
    specs: [ChannelSpec; 2],
}

impl<I2C: I2c, D: DelayNs> Sht4x<I2C, D> {
    /// A driver for the chip at `address`; `ids` name the temperature and
    /// humidity channels.
    pub fn new(i2c: I2C, delay: D, address: u8, ids: [ChannelId; 2]) -> Self {
        Sht4x {
            i2c,
            delay,
            address,
            specs: channels(ids),
        }
    }

    /// The chip's 32-bit serial number.
    pub fn serial_number(&mut self) -> Result<u32, Sht4xError> {
        let answer = self.command(CMD_SERIAL, 1_000)?;
        let (hi, lo) = words(&answer)?;
        Ok(u32::from(hi) << 16 | u32::from(lo))
    }

    fn command(&mut self, cmd: u8, wait_us: u32) -> Result<[u8; 6], Sht4xError> {
        self.i2c.write(self.address, &[cmd]).map_err(bus)?;
        self.delay.delay_us(wait_us);
        let mut answer = [0u8; 6];
        self.i2c.read(self.address, &mut answer).map_err(bus)?;
        Ok(answer)
    }

    /// Gives the bus and delay back.
    pub fn release(self) -> (I2C, D) {
        (self.i2c, self.delay)
    }
}

impl<I2C: I2c, D: DelayNs> Sensor for Sht4x<I2C, D> {
    type Error = Sht4xError;

    fn channels(&self) -> &[ChannelSpec] {
        &self.specs
    }

    fn sample(&mut self, now: Instant, sink: &mut dyn ReadingSink) -> Result<(), Sht4xError> {
        let answer = self.command(CMD_MEASURE_HIGH, MEASURE_US)?;
        let (t, rh) = words(&answer)?;
        for (spec, value) in self.specs.iter().zip([centi_celsius(t), centi_percent(rh)]) {
            sink.push_reading(Reading::new(spec.id, now, Value::Scaled(value)))
                .map_err(|_| Sht4xError::SinkFull)?;
        }
        Ok(())
    }
}

/// An SHT4x on an async I2C bus.
#[cfg(feature = "async")]
pub struct Sht4xAsync<I2C, D> {
    i2c: I2C,
    delay: D,
    address: u8,
    specs: [ChannelSpec; 2],
}

#[cfg(feature = "async")]
impl<I2C: embedded_hal_async::i2c::I2c, D: embedded_hal_async::delay::DelayNs> Sht4xAsync<I2C, D> {
    /// A driver for the chip at `address`.
    pub fn new(i2c: I2C, delay: D, address: u8, ids: [ChannelId; 2]) -> Self {
        Sht4xAsync {
            i2c,
            delay,
            address,
            specs: channels(ids),
        }
    }
}

#[cfg(feature = "async")]
impl<I2C: embedded_hal_async::i2c::I2c, D: embedded_hal_async::delay::DelayNs>
    telemark_core::sensor::AsyncSensor for Sht4xAsync<I2C, D>
{
    type Error = Sht4xError;

    fn channels(&self) -> &[ChannelSpec] {
        &self.specs
    }

    async fn sample(&mut self, now: Instant, sink: &mut dyn ReadingSink) -> Result<(), Sht4xError> {
        self.i2c
            .write(self.address, &[CMD_MEASURE_HIGH])
            .await
            .map_err(bus)?;
        self.delay.delay_us(MEASURE_US).await;
        let mut answer = [0u8; 6];
        self.i2c
            .read(self.address, &mut answer)
            .await
            .map_err(bus)?;
        let (t, rh) = words(&answer)?;
        for (spec, value) in self.specs.iter().zip([centi_celsius(t), centi_percent(rh)]) {
            sink.push_reading(Reading::new(spec.id, now, Value::Scaled(value)))
                .map_err(|_| Sht4xError::SinkFull)?;
        }
        Ok(())
    }
}
