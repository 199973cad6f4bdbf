//! The one definition of a configuration key: name, type, default, accepted range and
//! meaning. Each controller crate lists the keys of its settings as [`KeySpec`]s beside the
//! settings' struct; its `validate()` checks the struct against the same ranges, and the
//! daemon's reader and configuration reference take the keys from there, so a range or a
//! default is written once.

use std::fmt;

use crate::error::ModelError;

/// The accepted values of a numeric key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    pub min: f64,
    /// The minimum itself is refused (`(min, …`).
    pub min_open: bool,
    pub max: f64,
    /// The maximum itself is refused (`…, max)`).
    pub max_open: bool,
}

impl Bounds {
    /// `[min, max]`.
    pub const fn closed(min: f64, max: f64) -> Bounds {
        Bounds {
            min,
            min_open: false,
            max,
            max_open: false,
        }
    }

    /// `(min, max]`.
    pub const fn above(min: f64, max: f64) -> Bounds {
        Bounds {
            min,
            min_open: true,
            max,
            max_open: false,
        }
    }

    /// `[min, max)`.
    pub const fn below(min: f64, max: f64) -> Bounds {
        Bounds {
            min,
            min_open: false,
            max,
            max_open: true,
        }
    }

    /// `(min, max)`.
    pub const fn open(min: f64, max: f64) -> Bounds {
        Bounds {
            min,
            min_open: true,
            max,
            max_open: true,
        }
    }

    /// `[0, 86400]`: a duration in seconds that may be zero, up to a day.
    pub const DURATION_S: Bounds = Bounds::closed(0.0, 86_400.0);

    /// `(0, 86400]`: a period or horizon in seconds, up to a day.
    pub const PERIOD_S: Bounds = Bounds::above(0.0, 86_400.0);

    /// `(0, 3600]`: a time limit in seconds, up to an hour.
    pub const TIMEOUT_S: Bounds = Bounds::above(0.0, 3_600.0);

    /// `[1, 3600]`: seconds of arrivals averaged into one figure.
    pub const AVERAGING_S: Bounds = Bounds::closed(1.0, 3_600.0);

    /// `[1, 100000]`: a count of replicas or cores.
    pub const COUNT: Bounds = Bounds::closed(1.0, 100_000.0);

    /// `[0, 1e9]`: a weight or cost of the objective, or an amount of memory.
    pub const AMOUNT: Bounds = Bounds::closed(0.0, 1_000_000_000.0);

    /// Whether `value` is in the range (never NaN).
    pub fn contains(&self, value: f64) -> bool {
        let above = if self.min_open {
            value > self.min
        } else {
            value >= self.min
        };
        let below = if self.max_open {
            value < self.max
        } else {
            value <= self.max
        };
        above && below
    }
}

impl fmt::Display for Bounds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}, {}{}",
            if self.min_open { "(" } else { "[" },
            self.min,
            self.max,
            if self.max_open { ")" } else { "]" }
        )
    }
}

/// A key's default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KeyDefault {
    /// A number the settings' `Default` holds.
    Number(f64),
    /// A flag the settings' `Default` holds.
    Flag(bool),
    /// Described in words (`required`, `no limit`, a name in backquotes).
    Text(&'static str),
}

impl fmt::Display for KeyDefault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyDefault::Number(v) => write!(f, "{v}"),
            KeyDefault::Flag(b) => write!(f, "{b}"),
            KeyDefault::Text(text) => f.write_str(text),
        }
    }
}

/// One key of a settings table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeySpec {
    /// The key's name in its table (`stabilization_window_s`).
    pub name: &'static str,
    /// The value's type as the reference shows it (`number (s)`, `` `max` or `min` ``).
    pub kind: &'static str,
    /// Whether the value is an integer (numbers with `bounds` only).
    pub integer: bool,
    pub default: KeyDefault,
    /// The accepted range of a number; every number has one.
    pub bounds: Option<Bounds>,
    pub doc: &'static str,
}

impl KeySpec {
    /// `Ok` when `value` is in the key's range (or the key has none), else the message
    /// every reader and validator gives: `must be in [0, 86400], got -1`.
    pub fn check(&self, value: f64) -> Result<(), ModelError> {
        match self.bounds {
            Some(bounds) if !bounds.contains(value) => {
                Err(ModelError::OutOfRange { bounds, value })
            }
            _ => Ok(()),
        }
    }

    /// The default of a number key, for the settings' `Default`. Meant for constants (the
    /// settings' `DEFAULT`), where a key whose default is not a number does not build.
    pub const fn number_default(&self) -> f64 {
        match self.default {
            KeyDefault::Number(v) => v,
            _ => panic!("the key's default is not a number"),
        }
    }

    /// The default of a boolean key, as [`KeySpec::number_default`] gives a number's.
    pub const fn flag_default(&self) -> bool {
        match self.default {
            KeyDefault::Flag(b) => b,
            _ => panic!("the key's default is not a flag"),
        }
    }

    /// The default of an integer key, as [`KeySpec::number_default`] gives a number's.
    pub const fn count_default(&self) -> u32 {
        if !self.integer {
            panic!("the key is not an integer");
        }
        self.number_default() as u32
    }

    /// The default of a number key that may be unset: `None` when the default is in words
    /// (`no limit`), as [`KeySpec::number_default`] gives a number's.
    pub const fn optional_number_default(&self) -> Option<f64> {
        match self.default {
            KeyDefault::Number(v) => Some(v),
            KeyDefault::Text(_) => None,
            KeyDefault::Flag(_) => panic!("the key's default is a flag"),
        }
    }

    /// The default of an integer key that may be unset, as
    /// [`KeySpec::optional_number_default`] gives a number's.
    pub const fn optional_count_default(&self) -> Option<u32> {
        if !self.integer {
            panic!("the key is not an integer");
        }
        match self.optional_number_default() {
            Some(v) => Some(v as u32),
            None => None,
        }
    }
}

/// The key named `name` in `keys`.
pub fn find_key(keys: &'static [KeySpec], name: &str) -> Option<&'static KeySpec> {
    keys.iter().find(|k| k.name == name)
}

/// A number as a message shows it: plain, or in exponent form when very large or small.
pub fn message_number(value: f64) -> String {
    if value != 0.0 && !(1e-4..1e9).contains(&value.abs()) {
        format!("{value:e}")
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_render_as_intervals_and_refuse_nan() {
        let b = Bounds::above(0.0, 3600.0);
        assert_eq!(b.to_string(), "(0, 3600]");
        assert!(!b.contains(0.0) && b.contains(3600.0) && !b.contains(f64::NAN));
        assert_eq!(Bounds::below(0.0, 1.0).to_string(), "[0, 1)");
        assert_eq!(Bounds::open(0.0, 1.0).to_string(), "(0, 1)");
    }

    #[test]
    fn a_key_names_the_range_a_value_misses() {
        let key = KeySpec {
            name: "grace_s",
            kind: "number (s)",
            integer: false,
            default: KeyDefault::Number(10.0),
            bounds: Some(Bounds::above(0.0, 3600.0)),
            doc: "",
        };
        assert_eq!(
            key.check(1e300).unwrap_err().to_string(),
            "must be in (0, 3600], got 1e300"
        );
        assert_eq!(key.check(10.0), Ok(()));
        assert_eq!(key.default.to_string(), "10");
        assert_eq!(KeyDefault::Number(0.0025).to_string(), "0.0025");
    }

    #[test]
    fn defaults_come_out_as_the_settings_hold_them() {
        const COUNT: KeySpec = KeySpec {
            name: "n",
            kind: "integer",
            integer: true,
            default: KeyDefault::Number(8.0),
            bounds: Some(Bounds::closed(1.0, 100.0)),
            doc: "",
        };
        const UNSET: KeySpec = KeySpec {
            default: KeyDefault::Text("no limit"),
            ..COUNT
        };
        const FLAG: KeySpec = KeySpec {
            default: KeyDefault::Flag(true),
            bounds: None,
            ..COUNT
        };
        const { assert!(COUNT.count_default() == 8 && COUNT.number_default() == 8.0) };
        assert_eq!(COUNT.optional_count_default(), Some(8));
        assert_eq!(UNSET.optional_count_default(), None);
        assert_eq!(UNSET.optional_number_default(), None);
        assert!(FLAG.flag_default());
    }
}
