//! Bosch BME280: temperature, pressure and humidity over I2C.
//!
//! The driver checks the chip id, reads the factory calibration once, and
//! then takes each sample in forced mode (one measurement, then the chip
//! sleeps), compensated with the datasheet's integer formulas. It produces
//! three channels: temperature in 0.01 °C, pressure in 0.01 hPa (1 Pa) and
//! humidity in 0.01 %RH.
//!
//! Bus errors, a missing acknowledge and a skipped measurement become
//! typed errors ([`Bme280Error`]), which the core's fault rules count. The
//! driver needs no reset to recover: the next sample simply talks to the
//! chip again.
//!
//! ```
//! use embedded_hal_mock::eh1::delay::NoopDelay;
//! use embedded_hal_mock::eh1::i2c::{Mock, Transaction};
//! use telemark_core::model::ChannelId;
//! use telemark_sensors::bme280::{Bme280, ADDRESS_PRIMARY};
//!
//! let mut calib = vec![0u8; 26];
//! calib[0] = 0x70; calib[1] = 0x6B; // dig_T1 = 27504
//! let expectations = [
//!     Transaction::write_read(ADDRESS_PRIMARY, vec![0xD0], vec![0x60]),
//!     Transaction::write_read(ADDRESS_PRIMARY, vec![0x88], calib),
//!     Transaction::write_read(ADDRESS_PRIMARY, vec![0xE1], vec![0; 7]),
//! ];
//! let mut i2c = Mock::new(&expectations);
//! let sensor = Bme280::new(&mut i2c, NoopDelay, ADDRESS_PRIMARY, [ChannelId(1), ChannelId(2), ChannelId(3)]).unwrap();
//! assert_eq!(sensor.calibration().t1, 27504);
//! let _ = sensor.release();
//! i2c.done();
//! ```

use core::fmt;

use embedded_hal::delay::DelayNs;
use embedded_hal::i2c::{ErrorKind, I2c};
use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
use telemark_core::model::{ChannelId, Reading, ReadingSink, Severity, Value};
use telemark_core::rules::Rules;
use telemark_core::sensor::{Sensor, SensorError, SensorErrorKind};
use telemark_core::time::{Duration, Instant};

/// I2C address with SDO to ground.
pub const ADDRESS_PRIMARY: u8 = 0x76;
/// I2C address with SDO to VDDIO.
pub const ADDRESS_SECONDARY: u8 = 0x77;
/// What the chip id register holds on a BME280.
pub const CHIP_ID: u8 = 0x60;

const REG_CHIP_ID: u8 = 0xD0;
const REG_CALIB_TP: u8 = 0x88;
const REG_CALIB_H: u8 = 0xE1;
const REG_CTRL_HUM: u8 = 0xF2;
const REG_CTRL_MEAS: u8 = 0xF4;
const REG_DATA: u8 = 0xF7;
/// Oversampling ×1 for humidity.
const CTRL_HUM: u8 = 0b001;
/// Oversampling ×1 for temperature and pressure, forced mode.
const CTRL_MEAS_FORCED: u8 = 0b001 << 5 | 0b001 << 2 | 0b01;
/// Longest measurement at ×1 oversampling (datasheet 9.1: 9.3 ms), rounded up.
const MEASURE_US: u32 = 10_000;
/// What the chip reports for a measurement it skipped.
const SKIPPED: i32 = 0x80000;

/// Why a BME280 sample failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Bme280Error {
    /// The I2C bus failed, or the chip did not acknowledge.
    Bus(ErrorKind),
    /// The chip id is not a BME280's.
    WrongChip(u8),
    /// The chip skipped the measurement.
    NotReady,
    /// The compensated value is outside what the chip can measure.
    OutOfRange,
    /// The sink had no room for the readings.
    SinkFull,
}

impl fmt::Display for Bme280Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bme280Error::Bus(e) => write!(f, "I2C: {e}"),
            Bme280Error::WrongChip(id) => write!(f, "chip id {id:#04x} is not a BME280's"),
            Bme280Error::NotReady => f.write_str("measurement skipped"),
            Bme280Error::OutOfRange => f.write_str("value outside the sensor's range"),
            Bme280Error::SinkFull => f.write_str("reading sink full"),
        }
    }
}

impl SensorError for Bme280Error {
    fn kind(&self) -> SensorErrorKind {
        match self {
            Bme280Error::Bus(kind) => crate::i2c_fault(*kind),
            Bme280Error::WrongChip(_) => SensorErrorKind::WrongDevice,
            Bme280Error::NotReady => SensorErrorKind::NotReady,
            Bme280Error::OutOfRange => SensorErrorKind::OutOfRange,
            Bme280Error::SinkFull => SensorErrorKind::SinkFull,
        }
    }
}

fn bus<E: embedded_hal::i2c::Error>(e: E) -> Bme280Error {
    Bme280Error::Bus(e.kind())
}

/// The factory calibration, as the datasheet names it (section 4.2.2).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Calibration {
    pub t1: u16,
    pub t2: i16,
    pub t3: i16,
    pub p1: u16,
    pub p2: i16,
    pub p3: i16,
    pub p4: i16,
    pub p5: i16,
    pub p6: i16,
    pub p7: i16,
    pub p8: i16,
    pub p9: i16,
    pub h1: u8,
    pub h2: i16,
    pub h3: u8,
    pub h4: i16,
    pub h5: i16,
    pub h6: i8,
}

impl Calibration {
    /// From registers 0x88..=0xA1 (26 bytes) and 0xE1..=0xE7 (7 bytes).
    pub fn parse(tp: &[u8; 26], h: &[u8; 7]) -> Self {
        let u = |i: usize| u16::from_le_bytes([tp[i], tp[i + 1]]);
        let s = |i: usize| i16::from_le_bytes([tp[i], tp[i + 1]]);
        Calibration {
            t1: u(0),
            t2: s(2),
            t3: s(4),
            p1: u(6),
            p2: s(8),
            p3: s(10),
            p4: s(12),
            p5: s(14),
            p6: s(16),
            p7: s(18),
            p8: s(20),
            p9: s(22),
            h1: tp[25],
            h2: i16::from_le_bytes([h[0], h[1]]),
            h3: h[2],
            // 12-bit values packed across three registers, signed.
            h4: (i16::from(h[3] as i8) << 4) | i16::from(h[4] & 0x0F),
            h5: (i16::from(h[5] as i8) << 4) | i16::from(h[4] >> 4),
            h6: h[6] as i8,
        }
    }

    /// Temperature in 0.01 °C and `t_fine` (datasheet 4.2.3, 32-bit integer).
    pub fn temperature(&self, adc_t: i32) -> (i32, i32) {
        let t1 = i32::from(self.t1);
        let var1 = (((adc_t >> 3) - (t1 << 1)) * i32::from(self.t2)) >> 11;
        let d = (adc_t >> 4) - t1;
        let var2 = (((d * d) >> 12) * i32::from(self.t3)) >> 14;
        let t_fine = var1 + var2;
        ((t_fine * 5 + 128) >> 8, t_fine)
    }

    /// Pressure in Pa × 256 (datasheet 4.2.3, 64-bit integer), or `None`
    /// when the calibration would divide by zero.
    pub fn pressure(&self, adc_p: i32, t_fine: i32) -> Option<u32> {
        let mut var1 = i64::from(t_fine) - 128_000;
        let mut var2 = var1 * var1 * i64::from(self.p6);
        var2 += (var1 * i64::from(self.p5)) << 17;
        var2 += i64::from(self.p4) << 35;
        var1 = ((var1 * var1 * i64::from(self.p3)) >> 8) + ((var1 * i64::from(self.p2)) << 12);
        var1 = (((1i64 << 47) + var1) * i64::from(self.p1)) >> 33;
        if var1 == 0 {
            return None;
        }
        let mut p = 1_048_576 - i64::from(adc_p);
        p = (((p << 31) - var2) * 3125) / var1;
        let var1 = (i64::from(self.p9) * (p >> 13) * (p >> 13)) >> 25;
        let var2 = (i64::from(self.p8) * p) >> 19;
        p = ((p + var1 + var2) >> 8) + (i64::from(self.p7) << 4);
        u32::try_from(p).ok()
    }

    /// Relative humidity in %RH × 1024 (datasheet 4.2.3, 32-bit integer).
    pub fn humidity(&self, adc_h: i32, t_fine: i32) -> u32 {
        let mut v = t_fine - 76_800;
        v = ((((adc_h << 14) - (i32::from(self.h4) << 20) - (i32::from(self.h5) * v)) + 16_384)
            >> 15)
            * (((((((v * i32::from(self.h6)) >> 10)
                * (((v * i32::from(self.h3)) >> 11) + 32_768))
                >> 10)
                + 2_097_152)
                * i32::from(self.h2)
                + 8192)
                >> 14);
        v -= ((((v >> 15) * (v >> 15)) >> 7) * i32::from(self.h1)) >> 4;
        v = v.clamp(0, 419_430_400);
        (v >> 12) as u32
    }
}

/// The channel specs of a BME280 with the given channel ids.
pub const fn channels(ids: [ChannelId; 3]) -> [ChannelSpec; 3] {
    let period = Duration::from_mins(1);
    [
        ChannelSpec::new(
            ids[0],
            Unit::Celsius,
            ValueKind::Scaled { decimals: 2 },
            Range::new(-40.0, 85.0),
            period,
            // A reading identical to 0.01 °C for an hour is a frozen sensor.
            Rules::NONE
                .fault(3, Severity::Warning)
                .stuck(60, Severity::Warning),
        ),
        ChannelSpec::new(
            ids[1],
            Unit::Hectopascal,
            ValueKind::Scaled { decimals: 2 },
            Range::new(300.0, 1100.0),
            period,
            Rules::NONE.fault(3, Severity::Warning),
        ),
        ChannelSpec::new(
            ids[2],
            Unit::Percent,
            ValueKind::Scaled { decimals: 2 },
            Range::new(0.0, 100.0),
            period,
            Rules::NONE.fault(3, Severity::Warning),
        ),
    ]
}

/// Compensates a raw 8-byte data burst (0xF7..=0xFE) into readings.
pub fn compensate(cal: &Calibration, data: &[u8; 8]) -> Result<(i32, u32, u32), Bme280Error> {
    let adc_p = (i32::from(data[0]) << 12) | (i32::from(data[1]) << 4) | (i32::from(data[2]) >> 4);
    let adc_t = (i32::from(data[3]) << 12) | (i32::from(data[4]) << 4) | (i32::from(data[5]) >> 4);
    let adc_h = (i32::from(data[6]) << 8) | i32::from(data[7]);
    if adc_t == SKIPPED || adc_p == SKIPPED || adc_h == 0x8000 {
        return Err(Bme280Error::NotReady);
    }
    let (t, t_fine) = cal.temperature(adc_t);
    let p = cal.pressure(adc_p, t_fine).ok_or(Bme280Error::OutOfRange)?;
    let h = cal.humidity(adc_h, t_fine);
    // Outside the operating range (datasheet 1): a broken chip or bus.
    let pa = p / 256;
    if !(-4000..=8500).contains(&t) || !(30_000..=110_000).contains(&pa) {
        return Err(Bme280Error::OutOfRange);
    }
    // 0.01 °C, 0.01 hPa (= Pa), 0.01 %RH.
    Ok((t, pa, (h * 100 + 512) / 1024))
}

fn push(
    sink: &mut dyn ReadingSink,
    ids: [ChannelId; 3],
    now: Instant,
    (t, p, h): (i32, u32, u32),
) -> Result<(), Bme280Error> {
    let values = [
        Value::Scaled(t),
        Value::Scaled(p as i32),
        Value::Scaled(h as i32),
    ];
    for (id, value) in ids.into_iter().zip(values) {
        sink.push_reading(Reading::new(id, now, value))
            .map_err(|_| Bme280Error::SinkFull)?;
    }
    Ok(())
}

/// A BME280 on a blocking I2C bus.
pub struct Bme280<I2C, D> {
    i2c: I2C,
    delay: D,
    address: u8,
    calibration: Calibration,
    specs: [ChannelSpec; 3],
}

impl<I2C: I2c, D: DelayNs> Bme280<I2C, D> {
    /// Checks the chip id and reads the calibration. `ids` name the
    /// temperature, pressure and humidity channels.
    pub fn new(
        mut i2c: I2C,
        delay: D,
        address: u8,
        ids: [ChannelId; 3],
    ) -> Result<Self, Bme280Error> {
        let mut id = [0u8];
        i2c.write_read(address, &[REG_CHIP_ID], &mut id)
            .map_err(bus)?;
        if id[0] != CHIP_ID {
            return Err(Bme280Error::WrongChip(id[0]));
        }
        let (mut tp, mut h) = ([0u8; 26], [0u8; 7]);
        i2c.write_read(address, &[REG_CALIB_TP], &mut tp)
            .map_err(bus)?;
        i2c.write_read(address, &[REG_CALIB_H], &mut h)
            .map_err(bus)?;
        Ok(Bme280 {
            i2c,
            delay,
            address,
            calibration: Calibration::parse(&tp, &h),
            specs: channels(ids),
        })
    }

    /// The calibration read from the chip.
    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    /// Gives the bus and delay back.
    pub fn release(self) -> (I2C, D) {
        (self.i2c, self.delay)
    }

    fn measure(&mut self) -> Result<[u8; 8], Bme280Error> {
        self.i2c
            .write(self.address, &[REG_CTRL_HUM, CTRL_HUM])
            .map_err(bus)?;
        self.i2c
            .write(self.address, &[REG_CTRL_MEAS, CTRL_MEAS_FORCED])
            .map_err(bus)?;
        self.delay.delay_us(MEASURE_US);
        let mut data = [0u8; 8];
        self.i2c
            .write_read(self.address, &[REG_DATA], &mut data)
            .map_err(bus)?;
        Ok(data)
    }
}

impl<I2C: I2c, D: DelayNs> Sensor for Bme280<I2C, D> {
    type Error = Bme280Error;

    fn channels(&self) -> &[ChannelSpec] {
        &self.specs
    }

    fn sample(&mut self, now: Instant, sink: &mut dyn ReadingSink) -> Result<(), Bme280Error> {
        let data = self.measure()?;
        let values = compensate(&self.calibration, &data)?;
        push(sink, self.specs.map(|s| s.id), now, values)
    }
}

/// A BME280 on an async I2C bus.
#[cfg(feature = "async")]
pub struct Bme280Async<I2C, D> {
    i2c: I2C,
    delay: D,
    address: u8,
    calibration: Calibration,
    specs: [ChannelSpec; 3],
}

#[cfg(feature = "async")]
impl<I2C: embedded_hal_async::i2c::I2c, D: embedded_hal_async::delay::DelayNs> Bme280Async<I2C, D> {
    /// Checks the chip id and reads the calibration.
    pub async fn new(
        mut i2c: I2C,
        delay: D,
        address: u8,
        ids: [ChannelId; 3],
    ) -> Result<Self, Bme280Error> {
        let mut id = [0u8];
        i2c.write_read(address, &[REG_CHIP_ID], &mut id)
            .await
            .map_err(bus)?;
        if id[0] != CHIP_ID {
            return Err(Bme280Error::WrongChip(id[0]));
        }
        let (mut tp, mut h) = ([0u8; 26], [0u8; 7]);
        i2c.write_read(address, &[REG_CALIB_TP], &mut tp)
            .await
            .map_err(bus)?;
        i2c.write_read(address, &[REG_CALIB_H], &mut h)
            .await
            .map_err(bus)?;
        Ok(Bme280Async {
            i2c,
            delay,
            address,
            calibration: Calibration::parse(&tp, &h),
            specs: channels(ids),
        })
    }
}

#[cfg(feature = "async")]
impl<I2C: embedded_hal_async::i2c::I2c, D: embedded_hal_async::delay::DelayNs>
    telemark_core::sensor::AsyncSensor for Bme280Async<I2C, D>
{
    type Error = Bme280Error;

    fn channels(&self) -> &[ChannelSpec] {
        &self.specs
    }

    async fn sample(
        &mut self,
        now: Instant,
        sink: &mut dyn ReadingSink,
    ) -> Result<(), Bme280Error> {
        self.i2c
            .write(self.address, &[REG_CTRL_HUM, CTRL_HUM])
            .await
            .map_err(bus)?;
        self.i2c
            .write(self.address, &[REG_CTRL_MEAS, CTRL_MEAS_FORCED])
            .await
            .map_err(bus)?;
        self.delay.delay_us(MEASURE_US).await;
        let mut data = [0u8; 8];
        self.i2c
            .write_read(self.address, &[REG_DATA], &mut data)
            .await
            .map_err(bus)?;
        let values = compensate(&self.calibration, &data)?;
        push(sink, self.specs.map(|s| s.id), now, values)
    }
}
