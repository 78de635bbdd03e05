//! A build without the `service` feature: no device reports to a running
//! telemark-cloud, so there is no remote device to hold.

use std::convert::Infallible;
use std::marker::PhantomData;

use telemark_core::wire::seal::Sealing;

/// A device reporting to a running service, which this build cannot have.
pub struct Remote<'s, 'b>(Infallible, PhantomData<(&'s (), &'b ())>);

impl Remote<'_, '_> {
    /// Never called: no value of the type exists.
    pub fn never(&self) -> ! {
        match self.0 {}
    }

    /// Never called: no value of the type exists.
    pub fn sealing(&self) -> Sealing {
        self.never()
    }
}

/// Where a running service's devices send, which this build cannot name.
#[derive(Clone, Debug)]
pub enum Endpoint {}

impl Endpoint {
    /// Refuses: `--server` needs the `service` feature.
    pub fn parse(url: &str) -> Result<Endpoint, String> {
        Err(format!(
            "--server {url}: telemark-sim was built without its `service` feature"
        ))
    }

    /// Never called: no value of the type exists.
    pub fn scheme(&self) -> &'static str {
        match *self {}
    }
}
