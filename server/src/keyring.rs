//! The keys the server knows: one or more per device, provisioned with its
//! id, and whether a device may send unauthenticated frames (benches only).

use std::collections::HashMap;

use telemark_core::wire::seal::{Key, Sealing};

/// What the server knows of one device's keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceKeys {
    keys: Vec<(u8, Key)>,
    unauthenticated: bool,
}

impl DeviceKeys {
    /// The sealing for key `id`, if the device has it.
    pub fn sealing(&self, id: u8) -> Option<Sealing> {
        self.keys
            .iter()
            .find(|(k, _)| *k == id)
            .map(|(k, key)| Sealing::key(*k, key.clone()))
    }

    /// True if the device may send unauthenticated frames.
    pub fn allows_unauthenticated(&self) -> bool {
        self.unauthenticated
    }
}

/// The devices the server accepts frames from, with their keys.
///
/// ```
/// use telemark_core::wire::seal::Key;
/// use telemark_server::Keyring;
///
/// let mut keyring = Keyring::new();
/// keyring.insert(0x101, 1, Key::from_bytes([7; 32]));
/// assert!(keyring.device(0x101).and_then(|d| d.sealing(1)).is_some());
/// assert!(keyring.device(0x102).is_none());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    devices: HashMap<u64, DeviceKeys>,
}

impl Keyring {
    /// An empty keyring: every frame is refused as from an unknown device.
    pub fn new() -> Self {
        Keyring::default()
    }

    /// Adds key `id` of `device` (replacing a key of that id). A device
    /// may have several, while a rotation is under way.
    pub fn insert(&mut self, device: u64, id: u8, key: Key) {
        let entry = self.devices.entry(device).or_default();
        entry.keys.retain(|(k, _)| *k != id);
        entry.keys.push((id, key));
    }

    /// Lets `device` send unauthenticated frames: a bench only. The device
    /// must be named; no device is allowed by default.
    pub fn allow_unauthenticated(&mut self, device: u64) {
        self.devices.entry(device).or_default().unauthenticated = true;
    }

    /// Removes key `id` of `device` (a rotation finished, a key revoked).
    pub fn remove_key(&mut self, device: u64, id: u8) {
        if let Some(d) = self.devices.get_mut(&device) {
            d.keys.retain(|(k, _)| *k != id);
        }
    }

    /// Forgets `device` and all its keys (it is revoked): its frames are
    /// refused as from an unknown device.
    pub fn remove_device(&mut self, device: u64) {
        self.devices.remove(&device);
    }

    /// What is known of `device`.
    pub fn device(&self, device: u64) -> Option<&DeviceKeys> {
        self.devices.get(&device)
    }

    /// The devices known.
    pub fn devices(&self) -> impl Iterator<Item = u64> + '_ {
        self.devices.keys().copied()
    }
}
