//! Profiles: what the engine carries besides its core, chosen by a type.
//!
//! The engine's last type parameter picks one. [`Full`], the default, is
//! the engine as the server's tests and the simulator run it. [`Device`] is
//! the build for the smallest parts (16 to 64 KiB of flash): it encodes
//! blocks with [`DeviceCodec`], one coding per column, and does not
//! decimate old blocks when the routine lane fills, so it links no block
//! decoder. Both speak the same protocol and their blocks decode the same
//! on the server; `docs/footprint.md` has the flash each one takes and what
//! the device profile costs in bytes a reading.
//!
//! A profile is a type rather than a Cargo feature so that the two build
//! side by side in one program (the codec report, the tests) and so that a
//! dependency cannot switch one on for the whole build.
//!
//! ```
//! use telemark_core::engine::Engine;
//! use telemark_core::profile;
//! use telemark_core::store::RamStore;
//!
//! /// The full engine: the default.
//! type Gateway = Engine<RamStore<512, 8192>, 4, 64, 256>;
//! /// The same engine in the device profile.
//! type Sensor = Engine<RamStore<256, 1536>, 2, 16, 256, profile::Device>;
//! ```

use crate::codec::{BlockCodec, CompactCodec, DeviceCodec, Estimate};

/// What an engine carries besides its core. Implemented by [`Full`] and
/// [`Device`]; sealed, because the engine relies on what each one means.
pub trait Profile: sealed::Sealed {
    /// The codec blocks are sealed with.
    type Codec: BlockCodec<Estimate = Estimate> + Default;
    /// Whether, while the routine lane is past its high-water mark, the
    /// oldest unsent blocks are decoded and stored again at half their time
    /// resolution before any is evicted.
    const DECIMATE: bool;
}

/// The full engine: blocks in the cheapest of the codings their format has
/// ([`CompactCodec`]), and offline decimation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Full;

/// The device profile: blocks in one coding per column ([`DeviceCodec`]),
/// and no decimation, so no block decoder on the device: a full routine
/// lane goes by its [`FullPolicy`](crate::store::FullPolicy) alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct Device;

impl Profile for Full {
    type Codec = CompactCodec;
    const DECIMATE: bool = true;
}

impl Profile for Device {
    type Codec = DeviceCodec;
    const DECIMATE: bool = false;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Full {}
    impl Sealed for super::Device {}
}
