//! Interpreting one variable's text; every error names the variable, the value and what
//! was expected.

use std::net::IpAddr;
use std::time::Duration;

use super::ConfigError;

/// The longest duration any setting takes: a day. Longer ones are typos, and would overflow
/// the arithmetic of timers.
const MAX_MILLIS: u64 = 24 * 3600 * 1000;

/// A variable's name and its (trimmed, non-empty) value, if set.
#[derive(Debug, Clone, Copy)]
pub struct Value<'a> {
    /// The variable the value was read from (an alias, where that was the one set).
    pub var: &'static str,
    /// The text, or `None` when unset.
    pub text: Option<&'a str>,
}

impl<'a> Value<'a> {
    /// The value of `var`.
    pub fn of(var: &'static str, text: &'a Option<String>) -> Self {
        Self {
            var,
            text: text.as_deref(),
        }
    }

    /// The value of `primary`, or of its alias when only that is set; both set to different
    /// values is an error.
    pub fn either(
        primary: (&'static str, &'a Option<String>),
        alias: (&'static str, &'a Option<String>),
    ) -> Result<Self, ConfigError> {
        match (primary.1.as_deref(), alias.1.as_deref()) {
            (Some(a), Some(b)) if a != b => Err(ConfigError::Conflict {
                first: primary.0,
                first_value: a.to_owned(),
                second: alias.0,
                second_value: b.to_owned(),
            }),
            (Some(text), _) => Ok(Self {
                var: primary.0,
                text: Some(text),
            }),
            (None, Some(text)) => Ok(Self {
                var: alias.0,
                text: Some(text),
            }),
            (None, None) => Ok(Self {
                var: primary.0,
                text: None,
            }),
        }
    }

    fn invalid(&self, expected: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            var: self.var,
            value: self.text.unwrap_or_default().to_owned(),
            expected: expected.into(),
        }
    }

    /// The text, or `default`.
    pub fn string_or(&self, default: &str) -> String {
        self.text.unwrap_or(default).to_owned()
    }

    /// A TCP port in 1..=65535.
    pub fn port(&self) -> Result<Option<u16>, ConfigError> {
        let Some(text) = self.text else {
            return Ok(None);
        };
        match text.parse::<u16>() {
            Ok(port) if port > 0 => Ok(Some(port)),
            _ => Err(self.invalid("a port number in 1..=65535")),
        }
    }

    /// An IP address to listen on.
    pub fn ip(&self) -> Result<Option<IpAddr>, ConfigError> {
        let Some(text) = self.text else {
            return Ok(None);
        };
        text.parse()
            .map(Some)
            .map_err(|_| self.invalid("an IP address such as 0.0.0.0 or ::"))
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`, any case).
    pub fn boolean(&self) -> Result<Option<bool>, ConfigError> {
        let Some(text) = self.text else {
            return Ok(None);
        };
        match text.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Ok(Some(true)),
            "false" | "0" | "no" | "off" => Ok(Some(false)),
            _ => Err(self.invalid("true or false")),
        }
    }

    /// An `http://` or `https://` URL with a host, returned without a trailing `/`.
    pub fn http_url(&self) -> Result<Option<String>, ConfigError> {
        let Some(text) = self.text else {
            return Ok(None);
        };
        let expected = "an http:// or https:// URL such as https://gateway.example.com";
        let uri: http::Uri = text.parse().map_err(|_| self.invalid(expected))?;
        let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
        let host_ok = uri.host().is_some_and(|h| !h.is_empty());
        let plain = uri.query().is_none() && !text.contains('#') && !text.contains('@');
        if !(scheme_ok && host_ok && plain) {
            return Err(self.invalid(expected));
        }
        Ok(Some(text.trim_end_matches('/').to_owned()))
    }

    /// A whole number of milliseconds, at least `min_ms`.
    pub fn millis(&self, default_ms: u64, min_ms: u64) -> Result<Duration, ConfigError> {
        let ms = self.number(default_ms, min_ms, "milliseconds")?;
        if ms > MAX_MILLIS {
            return Err(self.invalid(format!(
                "a whole number of milliseconds, from {min_ms} to {MAX_MILLIS} (a day)"
            )));
        }
        Ok(Duration::from_millis(ms))
    }

    /// A whole number, at least `min`.
    pub fn number(&self, default: u64, min: u64, unit: &str) -> Result<u64, ConfigError> {
        let Some(text) = self.text else {
            return Ok(default);
        };
        match text.parse::<u64>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(self.invalid(format!("a whole number of {unit}, at least {min}"))),
        }
    }

    /// One of `choices`, compared without regard to case.
    pub fn choice(&self, choices: &[&'static str]) -> Result<Option<&'static str>, ConfigError> {
        let Some(text) = self.text else {
            return Ok(None);
        };
        choices
            .iter()
            .find(|c| c.eq_ignore_ascii_case(text))
            .copied()
            .map(Some)
            .ok_or_else(|| self.invalid(format!("one of {}", choices.join(", "))))
    }

    /// A list separated by commas and/or white space.
    pub fn list(&self) -> Vec<String> {
        self.text
            .unwrap_or_default()
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|item| !item.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Rejects the value with `expected`, for checks made by the caller.
    pub fn reject(&self, expected: impl Into<String>) -> ConfigError {
        self.invalid(expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str) -> Value<'_> {
        Value {
            var: "X",
            text: Some(text),
        }
    }

    fn message(err: ConfigError) -> String {
        err.to_string()
    }

    #[test]
    fn ports_must_be_in_range() {
        assert_eq!(value("8010").port().unwrap(), Some(8010));
        for bad in ["0", "65536", "-1", "80x", "8 0"] {
            let err = message(value(bad).port().unwrap_err());
            assert_eq!(
                err,
                format!("X={bad:?}: expected a port number in 1..=65535")
            );
        }
    }

    #[test]
    fn booleans_accept_the_usual_spellings_only() {
        assert_eq!(value("TRUE").boolean().unwrap(), Some(true));
        assert_eq!(value("off").boolean().unwrap(), Some(false));
        assert!(message(value("maybe").boolean().unwrap_err()).contains("expected true or false"));
    }

    #[test]
    fn urls_must_be_http_with_a_host() {
        assert_eq!(
            value("https://gw.example.com/")
                .http_url()
                .unwrap()
                .unwrap(),
            "https://gw.example.com"
        );
        assert_eq!(
            value("http://10.0.0.1:8010/base")
                .http_url()
                .unwrap()
                .unwrap(),
            "http://10.0.0.1:8010/base"
        );
        for bad in [
            "gw.example.com",
            "ftp://x",
            "https://",
            "https://u@x",
            "https://x/?a=b",
        ] {
            assert!(value(bad).http_url().is_err(), "{bad}");
        }
    }

    #[test]
    fn aliases_fill_in_and_conflicts_are_named() {
        let set = Some("a".to_owned());
        let other = Some("b".to_owned());
        let unset = None;
        let v = Value::either(("NEW", &unset), ("OLD", &set)).unwrap();
        assert_eq!((v.var, v.text), ("OLD", Some("a")));
        let v = Value::either(("NEW", &set), ("OLD", &set)).unwrap();
        assert_eq!(v.var, "NEW");
        let err = Value::either(("NEW", &set), ("OLD", &other)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "NEW=\"a\" and OLD=\"b\" disagree: set one of them, or both to the same value"
        );
    }

    #[test]
    fn lists_split_on_commas_and_spaces() {
        assert_eq!(value("queue1, queue2").list(), ["queue1", "queue2"]);
        assert_eq!(value("queue3 queue4").list(), ["queue3", "queue4"]);
    }

    #[test]
    fn numbers_have_a_floor() {
        assert_eq!(
            value("250").millis(1, 100).unwrap(),
            Duration::from_millis(250)
        );
        assert!(message(value("5").millis(1, 100).unwrap_err()).contains("at least 100"));
        assert!(
            message(value("99999999999999999").millis(1, 100).unwrap_err()).contains("(a day)")
        );
        assert_eq!(
            Value {
                var: "X",
                text: None
            }
            .number(7, 0, "bytes")
            .unwrap(),
            7
        );
    }
}
