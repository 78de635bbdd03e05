//! Blocking NOR flash behind the async flash traits that the queue and map
//! of `sequential-storage` are written against, and the loop that drives
//! their futures to completion without an executor.

use core::future::Future;
use core::pin::pin;
use core::task::{Context, Poll, Waker};

use embedded_storage::nor_flash as blocking;
use embedded_storage_async::nor_flash as nb;

/// A blocking [`embedded_storage`] NOR flash seen through the async traits.
///
/// Every operation finishes in the first poll, so the store's futures never
/// wait; [`super::FlashStore::new`] wraps the flash in it.
#[derive(Debug)]
pub struct Blocking<F>(pub F);

impl<F: blocking::ErrorType> blocking::ErrorType for Blocking<F> {
    type Error = F::Error;
}

impl<F: blocking::ReadNorFlash> nb::ReadNorFlash for Blocking<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.0.read(offset, bytes)
    }

    fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl<F: blocking::NorFlash> nb::NorFlash for Blocking<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        self.0.erase(from, to)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.0.write(offset, bytes)
    }
}

impl<F: blocking::MultiwriteNorFlash> nb::MultiwriteNorFlash for Blocking<F> {}

/// Polls `future` until it is ready.
///
/// Over [`Blocking`] flash that is the first poll. Over an async flash it
/// spins: its driver must make progress when polled (drivers that check a
/// status register on each poll do), since no waker will ever be woken.
pub(super) fn run<T>(future: impl Future<Output = T>) -> T {
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
    }
}
