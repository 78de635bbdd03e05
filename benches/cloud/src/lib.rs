//! What the cloud reports share: the frames a bench device sends
//! ([`frames`]) and the processes a report starts and watches
//! ([`services`]).

pub mod frames;
pub mod services;
