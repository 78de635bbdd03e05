//! The topics a device publishes and subscribes on.

use core::fmt::Write;

use heapless::String;

/// Longest topic held: a prefix of up to 32 bytes, the version, a 20-digit
/// device id and the direction.
pub const MAX_TOPIC: usize = 64;

/// `{prefix}/v1/{device}/up`, where the device publishes its frames, and
/// `{prefix}/v1/{device}/down`, where it receives the responses and what
/// the server pushes. The device id is in decimal.
///
/// ```
/// use telemark_mqtt::Topics;
/// let topics = Topics::new("telemark", 257).unwrap();
/// assert_eq!(topics.up(), "telemark/v1/257/up");
/// assert_eq!(topics.down(), "telemark/v1/257/down");
/// assert_eq!(Topics::device_of("telemark", "telemark/v1/257/up"), Some(257));
/// assert!(Topics::new("a/+/b", 1).is_none()); // no wildcards in a prefix
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    up: String<MAX_TOPIC>,
    down: String<MAX_TOPIC>,
}

impl Topics {
    /// The topics of `device` under `prefix`; `None` if the prefix is
    /// empty, holds a wildcard or makes a topic too long.
    pub fn new(prefix: &str, device: u64) -> Option<Topics> {
        if prefix.is_empty() || prefix.contains(['+', '#', '\0']) {
            return None;
        }
        let mut up = String::new();
        let mut down = String::new();
        write!(up, "{prefix}/v1/{device}/up").ok()?;
        write!(down, "{prefix}/v1/{device}/down").ok()?;
        Some(Topics { up, down })
    }

    /// Where the device publishes.
    pub fn up(&self) -> &str {
        &self.up
    }

    /// Where the device subscribes.
    pub fn down(&self) -> &str {
        &self.down
    }

    /// The device an uplink topic under `prefix` names, for the server's
    /// end (which subscribes to `{prefix}/v1/+/up`).
    pub fn device_of(prefix: &str, topic: &str) -> Option<u64> {
        let rest = topic.strip_prefix(prefix)?.strip_prefix("/v1/")?;
        let id = rest.strip_suffix("/up")?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        id.parse().ok()
    }
}
