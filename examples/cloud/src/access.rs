//! Who may do what through the API: bearer tokens with a role, each
//! perhaps scoped to a group of devices (a site, a customer); groups nest.
//!
//! | role | may |
//! | --- | --- |
//! | `read` | read devices, readings, alerts, commands and config |
//! | `operate` | also send commands and config |
//! | `admin` | also add, revoke and rotate devices, and move them between groups; unscoped, also groups and tokens |
//!
//! A scoped token sees the devices of its group and of the groups below
//! it, and no others: another device is answered as one that does not
//! exist. The admin token of the settings is an unscoped `admin`.
//!
//! Tokens are kept as their SHA-256 digest; the secret is shown once, when
//! the token is made.
//!
//! ```
//! use telemark_cloud::access::{in_scope, Group, Role};
//!
//! let groups = [
//!     Group { id: 1, name: "acme".into(), parent: None },
//!     Group { id: 2, name: "acme/plant-2".into(), parent: Some(1) },
//! ];
//! assert!(in_scope(&groups, Some(2), 1), "a group below the scope");
//! assert!(!in_scope(&groups, Some(1), 2), "a group above it");
//! assert!(!in_scope(&groups, None, 1), "a device in no group");
//! assert!(Role::Operate.allows(Role::Read) && !Role::Read.allows(Role::Operate));
//! ```

use std::fmt;

use sha2::{Digest, Sha256};

/// What a token may do; each role may do what the ones before it may.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Read only.
    Read,
    /// Read, and send commands and config.
    Operate,
    /// Everything.
    Admin,
}

impl Role {
    /// True if this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }

    /// Its name, as stored and as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
            Role::Admin => "admin",
        }
    }

    /// The role of a stored name.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "read" => Role::Read,
            "operate" => Role::Operate,
            "admin" => Role::Admin,
            _ => return None,
        })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A group of devices.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Group {
    /// Its id.
    pub id: i64,
    /// Its name, unique.
    pub name: String,
    /// The group it is in, if any.
    pub parent: Option<i64>,
}

/// An API token, without its secret.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Token {
    /// Its id.
    pub id: i64,
    /// What it is for.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The group it is scoped to, if any.
    pub group: Option<i64>,
    /// When it was made, Unix ms.
    pub created_ms: i64,
    /// When it was revoked, Unix ms.
    pub revoked_ms: Option<i64>,
}

/// Who is calling: a role, perhaps scoped to a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caller {
    /// What it may do.
    pub role: Role,
    /// The group it is scoped to; `None` sees every device.
    pub scope: Option<i64>,
}

impl Caller {
    /// The admin token of the settings: everything, everywhere.
    pub const ROOT: Caller = Caller {
        role: Role::Admin,
        scope: None,
    };

    /// True if it may see a device in `group`.
    pub fn sees(&self, groups: &[Group], group: Option<i64>) -> bool {
        match self.scope {
            None => true,
            Some(scope) => in_scope(groups, group, scope),
        }
    }
}

/// True if `group` is `scope` or a group below it.
pub fn in_scope(groups: &[Group], group: Option<i64>, scope: i64) -> bool {
    let mut at = group;
    // Parents are set when a group is made, so there is no cycle; the
    // bound keeps a damaged table from looping.
    for _ in 0..=groups.len() {
        match at {
            Some(g) if g == scope => return true,
            Some(g) => at = groups.iter().find(|x| x.id == g).and_then(|x| x.parent),
            None => return false,
        }
    }
    false
}

/// The stored form of a token's secret: its SHA-256 digest, in hex.
pub fn digest(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A new secret: `tm_` and 48 hex digits from the operating system's
/// random source.
pub fn new_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 24];
    getrandom::fill(&mut bytes)?;
    Ok(format!(
        "tm_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}
