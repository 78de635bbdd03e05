//! Rules: application logic the service runs as readings are stored.
//! A rule watches one channel of one device and, when its readings stay
//! above (or below) a threshold for a time, commands a device, the same
//! or another:
//!
//! ```toml
//! [[rule]]
//! name = "boiler-hot"
//! when = { device = 4171937491208237, channel = 1, above = 85.0, for_s = 300 }
//! then = { device = 4171937491208238, command = "set_output", output = 2, value = 0 }
//! ```
//!
//! Rules are judged on the readings' own Unix times, not on when they
//! arrive: each stored block is judged with the stored readings around
//! it, so a block that arrives late after an outage counts where it
//! belongs, and a run of readings that a late block completes fires then.
//! A run fires once: a run that overlaps one that fired is the same run.
//! A rule that fires queues its command and keeps a `rule` event on the
//! device it watches.
//!
//! ```
//! use telemark_cloud::rules::{runs, Condition};
//! // (Unix ms, value): above 85 from 60 s to 420 s, a gap below, above again.
//! let readings = [(0, 80.0), (60_000, 86.0), (420_000, 90.0), (480_000, 70.0), (540_000, 88.0)];
//! let held = runs(&readings, Condition::Above(85.0));
//! assert_eq!(held, [(60_000, 420_000), (540_000, 540_000)]);
//! ```

use serde::{Deserialize, Serialize};
use telemark_core::wire::frame::Command;

use crate::store::{command_columns, command_of};

/// What the readings must do.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Condition {
    /// Stay above the threshold.
    Above(f64),
    /// Stay below it.
    Below(f64),
}

impl Condition {
    /// True if `value` meets it.
    pub fn holds(self, value: f64) -> bool {
        match self {
            Condition::Above(t) => value > t,
            Condition::Below(t) => value < t,
        }
    }
}

/// A rule as kept.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// Its id.
    pub id: i64,
    /// Its name, unique.
    pub name: String,
    /// The device it watches.
    pub device: u64,
    /// The channel it watches.
    pub channel: u16,
    /// What the readings must do.
    pub condition: Condition,
    /// For how long, ms.
    pub for_ms: u64,
    /// The device it commands.
    pub target: u64,
    /// The command.
    pub command: Command,
}

/// The runs in `readings` (Unix ms, value; in time order) where
/// `condition` holds at every reading: first and last time of each.
pub fn runs(readings: &[(i64, f64)], condition: Condition) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    let mut open: Option<(i64, i64)> = None;
    for &(t, v) in readings {
        if condition.holds(v) {
            open = Some(open.map_or((t, t), |(s, _)| (s, t)));
        } else if let Some(run) = open.take() {
            out.push(run);
        }
    }
    out.extend(open);
    out
}

/// A command as the API and the config file name it: `ping`, `flush`,
/// `reboot`, or `set_output` with `output` and `value`.
pub fn parse_command(
    name: &str,
    output: Option<u8>,
    value: Option<u32>,
) -> Result<Command, String> {
    let operands = output.is_some() || value.is_some();
    Ok(match name {
        "ping" | "flush" | "reboot" if operands => {
            return Err(format!("{name} takes no output or value"))
        }
        "ping" => Command::Ping,
        "flush" => Command::FlushNow,
        "reboot" => Command::Reboot,
        "set_output" => Command::SetOutput {
            output: output.ok_or("set_output needs an output (0 to 255)")?,
            value: value.ok_or("set_output needs a value")?,
        },
        other => {
            return Err(format!(
                "unknown command {other:?}: ping, flush, reboot or set_output"
            ))
        }
    })
}

/// A rule as the API and the config file write it.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSpec {
    /// Its name: 1 to 64 printable characters, unique.
    pub name: String,
    /// What it watches.
    pub when: When,
    /// What it does.
    pub then: Then,
}

/// What a rule watches.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// The device.
    pub device: u64,
    /// Its channel.
    pub channel: u16,
    /// Readings above this; or
    #[serde(skip_serializing_if = "Option::is_none")]
    pub above: Option<f64>,
    /// readings below this.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub below: Option<f64>,
    /// For this many seconds (0: one reading is enough).
    pub for_s: u64,
}

/// What a rule does.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Then {
    /// The device it commands.
    pub device: u64,
    /// `ping`, `flush`, `reboot` or `set_output`.
    pub command: String,
    /// For `set_output`: the output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<u8>,
    /// For `set_output`: the value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<u32>,
}

/// The longest a rule may wait: a week, s.
pub const MAX_FOR_S: u64 = 7 * 24 * 3600;

impl RuleSpec {
    /// The rule it describes (id 0 until kept), or what is wrong with it.
    pub fn rule(&self) -> Result<Rule, String> {
        let name =
            crate::name_of(&self.name).ok_or("a rule name is 1 to 64 printable characters")?;
        let condition = match (self.when.above, self.when.below) {
            (Some(t), None) if t.is_finite() => Condition::Above(t),
            (None, Some(t)) if t.is_finite() => Condition::Below(t),
            (Some(_), Some(_)) | (None, None) => {
                return Err(format!("rule {name}: when needs one of above or below"))
            }
            _ => {
                return Err(format!(
                    "rule {name}: the threshold must be a finite number"
                ))
            }
        };
        if self.when.for_s > MAX_FOR_S {
            return Err(format!(
                "rule {name}: for_s is 0 to {MAX_FOR_S} seconds, not {}",
                self.when.for_s
            ));
        }
        let then = &self.then;
        let command = parse_command(&then.command, then.output, then.value)
            .map_err(|e| format!("rule {name}: {e}"))?;
        Ok(Rule {
            id: 0,
            name: name.to_string(),
            device: self.when.device,
            channel: self.when.channel,
            condition,
            for_ms: self.when.for_s * 1000,
            target: then.device,
            command,
        })
    }
}

impl Rule {
    /// The rule as the API shows it.
    pub fn spec(&self) -> RuleSpec {
        let (above, below) = match self.condition {
            Condition::Above(t) => (Some(t), None),
            Condition::Below(t) => (None, Some(t)),
        };
        let (command, output, value) = match self.command {
            Command::Ping => ("ping", None, None),
            Command::FlushNow => ("flush", None, None),
            Command::Reboot => ("reboot", None, None),
            Command::SetOutput { output, value } => ("set_output", Some(output), Some(value)),
            _ => ("unknown", None, None),
        };
        RuleSpec {
            name: self.name.clone(),
            when: When {
                device: self.device,
                channel: self.channel,
                above,
                below,
                for_s: self.for_ms / 1000,
            },
            then: Then {
                device: self.target,
                command: command.to_string(),
                output,
                value,
            },
        }
    }

    /// The condition's columns: `above` or `below`, and the threshold.
    pub fn condition_columns(&self) -> (&'static str, f64) {
        match self.condition {
            Condition::Above(t) => ("above", t),
            Condition::Below(t) => ("below", t),
        }
    }

    /// The command's columns: its code, output and value.
    pub fn command_columns(&self) -> (u8, u8, u32) {
        command_columns(self.command)
    }

    /// A rule of its columns; `None` if a column holds what this build
    /// does not know.
    #[allow(clippy::too_many_arguments)]
    pub fn of_columns(
        id: i64,
        name: String,
        (device, channel): (u64, u16),
        (op, threshold): (&str, f64),
        for_ms: u64,
        target: u64,
        (code, output, value): (u8, u8, u32),
    ) -> Option<Rule> {
        let condition = match op {
            "above" => Condition::Above(threshold),
            "below" => Condition::Below(threshold),
            _ => return None,
        };
        Some(Rule {
            id,
            name,
            device,
            channel,
            condition,
            for_ms,
            target,
            command: command_of(code, output, value)?,
        })
    }

    /// The runs of `readings` that fire the rule: held for its time.
    pub fn firing_runs(&self, readings: &[(i64, f64)]) -> Vec<(i64, i64)> {
        let need = i64::try_from(self.for_ms).unwrap_or(i64::MAX);
        runs(readings, self.condition)
            .into_iter()
            .filter(|(s, e)| e.saturating_sub(*s) >= need)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(when: &str, then: &str) -> Result<Rule, String> {
        let text = format!("name = \"r\"\nwhen = {when}\nthen = {then}\n");
        let spec: RuleSpec = toml::from_str(&text).map_err(|e| e.to_string())?;
        spec.rule()
    }

    #[test]
    fn a_rule_fires_on_runs_held_long_enough() {
        let rule = spec(
            "{ device = 1, channel = 1, above = 85.0, for_s = 300 }",
            "{ device = 2, command = \"set_output\", output = 2, value = 0 }",
        )
        .unwrap();
        let minute = |m: i64, v: f64| (m * 60_000, v);
        let readings = [
            minute(0, 86.0),
            minute(4, 87.0),
            minute(5, 70.0),
            minute(6, 90.0),
            minute(11, 91.0),
            minute(12, 92.0),
        ];
        assert_eq!(rule.firing_runs(&readings), [(360_000, 720_000)]);
        assert_eq!(rule.spec().rule(), Ok(rule));
    }

    #[test]
    fn bad_rules_say_what_is_wrong() {
        let then = "{ device = 2, command = \"ping\" }";
        let both = spec(
            "{ device = 1, channel = 1, above = 1.0, below = 0.0, for_s = 0 }",
            then,
        );
        assert!(both.unwrap_err().contains("one of above or below"));
        let long = spec(
            "{ device = 1, channel = 1, above = 1.0, for_s = 99999999 }",
            then,
        );
        assert!(long.unwrap_err().contains("for_s"));
        let bad = spec(
            "{ device = 1, channel = 1, above = 1.0, for_s = 0 }",
            "{ device = 2, command = \"explode\" }",
        );
        assert!(bad.unwrap_err().contains("unknown command"));
        let nan = RuleSpec {
            name: "n".into(),
            when: When {
                device: 1,
                channel: 1,
                above: Some(f64::NAN),
                below: None,
                for_s: 0,
            },
            then: Then {
                device: 1,
                command: "ping".into(),
                output: None,
                value: None,
            },
        };
        assert!(nan.rule().unwrap_err().contains("finite"));
    }
}
