//! The config parser on any bytes, applied to a config with channels: a
//! refusal with a reason, or a config the device accepts. An accepted config
//! is checked again by its own encoding: written as the device saves it and
//! parsed back onto the same base, it is the same config.
#![no_main]

use libfuzzer_sys::fuzz_target;
use telemark_core::channel::{ChannelSpec, Range, Unit, ValueKind};
use telemark_core::config::{ConfigUpdate, DeviceConfig, EngineConfig};
use telemark_core::model::{ChannelId, Severity};
use telemark_core::rules::Rules;
use telemark_core::stager::StagerConfig;
use telemark_core::store::FullPolicy;
use telemark_core::time::Duration;
use telemark_core::uplink::UplinkConfig;

const TEMP: ChannelSpec = ChannelSpec::new(
    ChannelId(1),
    Unit::Celsius,
    ValueKind::Scaled { decimals: 2 },
    Range::new(-40.0, 125.0),
    Duration::from_secs(10),
    Rules::NONE.high(90.0, 2.0, Severity::Critical),
);
const DOOR: ChannelSpec = ChannelSpec::new(
    ChannelId(2),
    Unit::None,
    ValueKind::Bool,
    Range::new(0.0, 1.0),
    Duration::from_secs(60),
    Rules::NONE,
);

fuzz_target!(|data: &[u8]| {
    let mut channels = heapless::Vec::new();
    let _ = channels.push(TEMP);
    let _ = channels.push(DOOR);
    let base: DeviceConfig<4> = DeviceConfig {
        version: 3,
        engine: EngineConfig {
            uplink: UplinkConfig::new(9, 256, Duration::from_mins(60)),
            stager: StagerConfig::new(128, 190, Duration::from_mins(60)),
            heartbeat: Duration::from_mins(360),
        },
        store_policy: FullPolicy::Refuse,
        channels,
    };
    let Ok(update) = ConfigUpdate::parse(data) else {
        return;
    };
    let Ok(next) = update.apply(&base) else {
        return;
    };
    let mut buf = [0u8; 512];
    let n = next
        .encode(&mut buf)
        .expect("an accepted config fits 512 bytes");
    let again = ConfigUpdate::parse(&buf[..n])
        .expect("a saved config parses")
        .apply(&base)
        .expect("a saved config applies");
    let mut buf2 = [0u8; 512];
    let n2 = again.encode(&mut buf2).expect("fits");
    assert_eq!(
        &buf[..n],
        &buf2[..n2],
        "config changed through its own encoding"
    );
});
