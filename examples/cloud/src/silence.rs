//! Silent devices. A device not heard for N times its report interval is
//! marked offline, with an `offline` event, and sent a ping; when it is
//! heard again it gets a `recovered` event. The interval is the one its
//! desired config sets (the shorter of the report and heartbeat
//! intervals, keys 1 and 2), else the service's default. N is the one its
//! group sets, or the nearest group above it (written once for a site or
//! a customer), else the service's; 0 means never.
//!
//! A device never heard is not offline: it has not started. The mark is
//! kept in the store, so a restarted service neither forgets a device is
//! offline nor raises the event twice.
//!
//! ```
//! use telemark_cloud::silence::Rule;
//! let rule = Rule { intervals: 3, default_interval_ms: 3_600_000 };
//! // {0: 4, 1: 900}: version 4 reports every 15 minutes.
//! let cbor = [0xa2, 0x00, 0x04, 0x01, 0x19, 0x03, 0x84];
//! assert_eq!(rule.interval_ms(Some(&cbor)), 900_000);
//! assert_eq!(rule.interval_ms(None), 3_600_000);
//! assert_eq!(rule.limit_ms(900_000), Some(2_700_000));
//! ```

use std::collections::{HashMap, HashSet};

use telemark_core::config::ConfigUpdate;

use crate::access::Group;
use crate::store::{CloudStore, StoreError};

/// When a device counts as silent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Report intervals of silence that make a device offline; 0 turns
    /// the rule off.
    pub intervals: u32,
    /// The interval of a device whose config sets none, ms.
    pub default_interval_ms: u64,
}

impl Default for Rule {
    /// Three intervals, of an hour where the config sets none.
    fn default() -> Self {
        Rule {
            intervals: 3,
            default_interval_ms: 3_600_000,
        }
    }
}

impl Rule {
    /// The interval a device of desired config `cbor` reports at, ms.
    pub fn interval_ms(&self, cbor: Option<&[u8]>) -> u64 {
        let update = cbor.and_then(|c| ConfigUpdate::parse(c).ok());
        let set = update.and_then(|u| match (u.report_interval(), u.heartbeat()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        });
        set.map(|d| d.as_millis())
            .filter(|&ms| ms > 0)
            .unwrap_or(self.default_interval_ms)
    }

    /// How long a device of that interval may be silent, ms; `None` with
    /// the rule off.
    pub fn limit_ms(&self, interval_ms: u64) -> Option<u64> {
        (self.intervals > 0).then(|| interval_ms.saturating_mul(u64::from(self.intervals)))
    }

    /// How often to look for silent devices: a quarter of the default
    /// limit, from 200 ms to 10 s.
    pub fn period_ms(&self) -> u64 {
        self.limit_ms(self.default_interval_ms)
            .map_or(10_000, |l| (l / 4).clamp(200, 10_000))
    }
}

/// The intervals `group` sets, or the nearest group above it; `None` if
/// none of them does.
fn intervals_of(groups: &[Group], own: &HashMap<i64, u32>, group: Option<i64>) -> Option<u32> {
    let mut at = group;
    // Groups nest a few deep; a loop in damaged rows ends here.
    for _ in 0..64 {
        let g = at?;
        if let Some(&n) = own.get(&g) {
            return Some(n);
        }
        at = groups.iter().find(|x| x.id == g).and_then(|x| x.parent);
    }
    None
}

/// The devices the service holds offline, and each one's interval.
pub struct Watch {
    rule: Rule,
    offline: HashSet<u64>,
    shared: bool,
    /// Interval by device, from its desired config; forgotten when that
    /// changes.
    intervals: HashMap<u64, u64>,
}

impl Watch {
    /// The watch over `store`'s devices, those it marks offline already
    /// held offline.
    pub fn load(rule: Rule, store: &mut dyn CloudStore) -> Result<Watch, StoreError> {
        let offline = store
            .devices()?
            .into_iter()
            .filter(|d| d.offline_ms.is_some())
            .map(|d| d.id)
            .collect();
        Ok(Watch {
            rule,
            offline,
            intervals: HashMap::new(),
            shared: false,
        })
    }

    /// The rule it applies.
    pub fn rule(&self) -> Rule {
        self.rule
    }

    /// `device`'s desired config changed: its interval is read again.
    pub fn config_changed(&mut self, device: u64) {
        self.intervals.remove(&device);
    }

    /// Marks offline every device silent past its limit at `now_ms`;
    /// returns them with what their events say, for their pings and
    /// notifications.
    pub fn check(
        &mut self,
        store: &mut dyn CloudStore,
        now_ms: u64,
    ) -> Result<Vec<(u64, String)>, StoreError> {
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let mut gone = Vec::new();
        let groups = store.groups()?;
        let own: HashMap<i64, u32> = store.group_silences()?.into_iter().collect();
        for d in store.devices()? {
            // The store's mark, not this watch's: another instance may
            // have heard the device since (a shared database).
            if d.offline_ms.is_some() {
                self.offline.insert(d.id);
            } else {
                self.offline.remove(&d.id);
            }
            if d.revoked_ms.is_some() || d.offline_ms.is_some() {
                continue;
            }
            let Some(seen) = d.last_seen_ms else {
                continue;
            };
            let interval = match self.intervals.get(&d.id) {
                Some(&ms) => ms,
                None => {
                    let desired = store.desired_config(d.id)?;
                    let ms = self
                        .rule
                        .interval_ms(desired.as_ref().map(|c| c.cbor.as_slice()));
                    self.intervals.insert(d.id, ms);
                    ms
                }
            };
            let intervals = intervals_of(&groups, &own, d.group).unwrap_or(self.rule.intervals);
            let Some(limit) = (Rule {
                intervals,
                ..self.rule
            })
            .limit_ms(interval) else {
                continue;
            };
            let silent = u64::try_from(now.saturating_sub(seen)).unwrap_or(0);
            if silent <= limit {
                continue;
            }
            let detail = format!(
                "not heard for {} s, more than {} times its report interval of {} s",
                silent / 1000,
                intervals,
                interval / 1000
            );
            if store.mark_offline(d.id, now, &detail)? {
                gone.push((d.id, detail));
            }
            self.offline.insert(d.id);
        }
        Ok(gone)
    }

    /// Trusts the store, not this watch, for whether a device is offline:
    /// for instances that share a database, where the one that marked a
    /// device offline need not be the one that hears it again. Each group
    /// of frames then costs one read of its devices' marks
    /// ([`Watch::refresh`]).
    pub fn share(&mut self) {
        self.shared = true;
    }

    /// Of `devices`, a group's, takes from a shared store which are
    /// offline and which are not, before [`Watch::heard`] of each. Alone
    /// on its store the watch knows, and reads nothing.
    pub fn refresh(
        &mut self,
        store: &mut dyn CloudStore,
        devices: &[u64],
    ) -> Result<(), StoreError> {
        if !self.shared || devices.is_empty() {
            return Ok(());
        }
        let offline = store.offline_among(devices)?;
        for d in devices {
            self.offline.remove(d);
        }
        self.offline.extend(offline);
        Ok(())
    }

    /// `device` was heard at `now_ms`: if it was offline, it has
    /// recovered, and what its event says is returned.
    pub fn heard(
        &mut self,
        store: &mut dyn CloudStore,
        device: u64,
        now_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        if !self.offline.contains(&device) {
            return Ok(None);
        }
        let now = i64::try_from(now_ms).unwrap_or(i64::MAX);
        let since = store.device(device)?.and_then(|d| d.offline_ms);
        if since.is_none() {
            // Another instance heard it first.
            self.offline.remove(&device);
            return Ok(None);
        }
        let detail = match since {
            Some(t) => format!(
                "heard again, {} s after it was marked offline",
                (now - t).max(0) / 1000
            ),
            None => "heard again".to_string(),
        };
        let recovered = store.mark_recovered(device, now, &detail)?;
        self.offline.remove(&device);
        Ok(recovered.then_some(detail))
    }

    /// True if `device` is held offline.
    pub fn is_offline(&self, device: u64) -> bool {
        self.offline.contains(&device)
    }
}
