//! The async drivers issue the same transactions as the blocking ones.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use embedded_hal_mock::eh1::delay::NoopDelay;
use embedded_hal_mock::eh1::i2c::{Mock, Transaction as T};
use telemark_core::model::{ChannelId, Reading, Value};
use telemark_core::sensor::AsyncSensor;
use telemark_core::time::Instant;
use telemark_sensors::sht4x::{crc8, Sht4xAsync, ADDRESS};

/// Runs a future whose every step is ready at once, as the mocks' are.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

#[test]
fn the_async_sht4x_measures_like_the_blocking_one() {
    let [a0, a1] = 0x6666u16.to_be_bytes();
    let [b0, b1] = 0x8000u16.to_be_bytes();
    let answer = vec![a0, a1, crc8([a0, a1]), b0, b1, crc8([b0, b1])];
    let expectations = [T::write(ADDRESS, vec![0xFD]), T::read(ADDRESS, answer)];
    let mut i2c = Mock::new(&expectations);
    let mut out: Vec<Reading> = Vec::new();
    {
        let mut sensor =
            Sht4xAsync::new(&mut i2c, NoopDelay, ADDRESS, [ChannelId(4), ChannelId(5)]);
        block_on(sensor.sample(Instant::ZERO, &mut out)).unwrap();
    }
    assert_eq!(
        out.iter().map(|r| r.value).collect::<Vec<_>>(),
        [Value::Scaled(2500), Value::Scaled(5650)]
    );
    i2c.done();
}
