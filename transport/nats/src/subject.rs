//! The subjects a device publishes and subscribes on.

/// `{prefix}.up.{device}`, where the device publishes its frames, and
/// `{prefix}.down.{device}`, where it hears the responses and what the
/// server pushes. The device id is in decimal; the prefix may have several
/// tokens (`acme.telemark`).
///
/// ```
/// use telemark_nats::Subjects;
/// let subjects = Subjects::new("telemark", 257).unwrap();
/// assert_eq!(subjects.up(), "telemark.up.257");
/// assert_eq!(subjects.down(), "telemark.down.257");
/// assert_eq!(Subjects::uplinks("telemark"), "telemark.up.*");
/// assert_eq!(Subjects::device_of("telemark", "telemark.up.257"), Some(257));
/// assert!(Subjects::new("a.*", 1).is_none()); // no wildcards in a prefix
/// assert!(Subjects::new("a..b", 1).is_none()); // no empty token
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subjects {
    up: String,
    down: String,
}

impl Subjects {
    /// The subjects of `device` under `prefix`; `None` if the prefix is
    /// not one or more tokens free of wildcards and white space.
    pub fn new(prefix: &str, device: u64) -> Option<Subjects> {
        valid_prefix(prefix).then(|| Subjects {
            up: format!("{prefix}.up.{device}"),
            down: format!("{prefix}.down.{device}"),
        })
    }

    /// Where the device publishes.
    pub fn up(&self) -> &str {
        &self.up
    }

    /// Where the device subscribes.
    pub fn down(&self) -> &str {
        &self.down
    }

    /// What the server's end subscribes to: every device's uplink.
    pub fn uplinks(prefix: &str) -> String {
        format!("{prefix}.up.*")
    }

    /// The device an uplink subject under `prefix` names.
    pub fn device_of(prefix: &str, subject: &str) -> Option<u64> {
        let id = subject.strip_prefix(prefix)?.strip_prefix(".up.")?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        id.parse().ok()
    }
}

fn valid_prefix(prefix: &str) -> bool {
    prefix.split('.').all(|token| {
        !token.is_empty()
            && !token
                .chars()
                .any(|c| c == '*' || c == '>' || c.is_whitespace() || c == '\0')
    })
}
