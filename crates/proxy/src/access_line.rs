//! The text of an access line, written by hand rather than through `tracing`'s formatter,
//! which spent about a sixth of the gateway's own work per proxied request on it (timestamp,
//! `Debug` escaping, float formatting). The line looks as `tracing`'s text or JSON output
//! does, so one log reads the same throughout; where it goes is an [`AccessSink`].

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The shape of access lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessFormat {
    /// `2026-12-04T17:24:55.854311Z  INFO access: method=GET path="/x" …`
    Text,
    /// `{"timestamp":"…","level":"INFO","method":"GET",…,"target":"access"}`
    Json,
}

/// Where complete access lines go (the process's log, batched).
pub trait AccessSink: Send + Sync + fmt::Debug {
    /// The shape the sink wants.
    fn format(&self) -> AccessFormat;
    /// Takes one line, ending in `\n`; `urgent` lines (server errors) should not wait.
    fn write_line(&self, line: &[u8], urgent: bool);
}

/// What one access line says.
pub(crate) struct AccessFields<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub route: Option<&'a str>,
    pub status: u16,
    pub upstream: Option<Duration>,
    pub duration: Duration,
    pub bytes: u64,
    pub complete: bool,
    pub peer: IpAddr,
    pub error: Option<(&'a str, &'a str)>,
}

impl AccessFields<'_> {
    /// The whole line, timestamp and level included, as `format` has it.
    pub(crate) fn line(&self, format: AccessFormat, warn: bool, out: &mut Vec<u8>) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        match format {
            AccessFormat::Text => {
                push_timestamp(out, now);
                out.extend_from_slice(if warn { b"  WARN " } else { b"  INFO " });
                out.extend_from_slice(b"access: ");
                self.text_fields(out);
            }
            AccessFormat::Json => {
                out.extend_from_slice(b"{\"timestamp\":\"");
                push_timestamp(out, now);
                out.extend_from_slice(if warn {
                    b"\",\"level\":\"WARN\""
                } else {
                    b"\",\"level\":\"INFO\""
                });
                self.json_fields(out);
                out.extend_from_slice(b",\"target\":\"access\"}");
            }
        }
        out.push(b'\n');
    }

    /// `method=GET path="/x" …`: the fields alone, as `tracing`'s text format writes them.
    pub(crate) fn text_fields(&self, out: &mut Vec<u8>) {
        self.fields(out, false);
    }

    fn json_fields(&self, out: &mut Vec<u8>) {
        self.fields(out, true);
    }

    /// The fields in one order for both shapes: text writes ` name=value` (the first
    /// without its space) and leaves the method, peer and detail unquoted as `tracing`
    /// does; JSON writes `,"name":value` and quotes every string.
    fn fields(&self, out: &mut Vec<u8>, json: bool) {
        let key = |out: &mut Vec<u8>, name: &str| {
            if json {
                out.extend_from_slice(b",\"");
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"\":");
            } else {
                if name != "method" {
                    out.push(b' ');
                }
                out.extend_from_slice(name.as_bytes());
                out.push(b'=');
            }
        };
        let text = |out: &mut Vec<u8>, value: &str| {
            if json {
                push_quoted(out, value);
            } else {
                out.extend_from_slice(value.as_bytes());
            }
        };
        key(out, "method");
        text(out, self.method);
        key(out, "path");
        push_quoted(out, self.path);
        if let Some(route) = self.route {
            key(out, "route");
            push_quoted(out, route);
        }
        key(out, "status");
        push_u64(out, u64::from(self.status));
        if let Some(upstream) = self.upstream {
            key(out, "upstream_ms");
            push_millis(out, upstream);
        }
        key(out, "duration_ms");
        push_millis(out, self.duration);
        key(out, "bytes");
        push_u64(out, self.bytes);
        key(out, "complete");
        out.extend_from_slice(if self.complete { b"true" } else { b"false" });
        key(out, "peer");
        if json {
            out.push(b'"');
        }
        push_ip(out, self.peer);
        if json {
            out.push(b'"');
        }
        if let Some((code, detail)) = self.error {
            key(out, "error");
            push_quoted(out, code);
            key(out, "detail");
            text(out, detail);
        }
    }
}

/// `"text"`, with `"`, `\` and control characters escaped (valid JSON, and what `Debug`
/// makes of the printable text a path or route holds).
fn push_quoted(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    for &byte in text.as_bytes() {
        match byte {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f | 0x7f => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0xf)]);
            }
            _ => out.push(byte),
        }
    }
    out.push(b'"');
}

fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Milliseconds with three decimals: `11.833`.
fn push_millis(out: &mut Vec<u8>, duration: Duration) {
    let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
    push_u64(out, micros / 1000);
    out.push(b'.');
    let fraction = micros % 1000;
    out.push(b'0' + (fraction / 100) as u8);
    out.push(b'0' + (fraction / 10 % 10) as u8);
    out.push(b'0' + (fraction % 10) as u8);
}

fn push_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_u64(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

/// `2026-12-04T17:24:55.854311Z` (UTC, microseconds).
fn push_timestamp(out: &mut Vec<u8>, since_epoch: Duration) {
    let secs = since_epoch.as_secs();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    push_padded(out, year, 4);
    out.push(b'-');
    push_padded(out, month, 2);
    out.push(b'-');
    push_padded(out, day, 2);
    out.push(b'T');
    push_padded(out, of_day / 3600, 2);
    out.push(b':');
    push_padded(out, of_day / 60 % 60, 2);
    out.push(b':');
    push_padded(out, of_day % 60, 2);
    out.push(b'.');
    push_padded(out, u64::from(since_epoch.subsec_micros()), 6);
    out.push(b'Z');
}

fn push_padded(out: &mut Vec<u8>, n: u64, width: u32) {
    let mut divisor = 10u64.pow(width - 1);
    while divisor > 0 {
        out.push(b'0' + (n / divisor % 10) as u8);
        divisor /= 10;
    }
}

/// Year, month, day of a count of days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields() -> AccessFields<'static> {
        AccessFields {
            method: "GET",
            path: "/service/demo/a\"b",
            route: Some("demo"),
            status: 502,
            upstream: Some(Duration::from_micros(10_822)),
            duration: Duration::from_micros(11_833),
            bytes: 3755,
            complete: true,
            peer: IpAddr::from([10, 0, 0, 7]),
            error: Some(("upstream_unreachable", "connect: refused")),
        }
    }

    #[test]
    fn text_lines_read_like_tracing_text_output() {
        let mut out = Vec::new();
        fields().text_fields(&mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "method=GET path=\"/service/demo/a\\\"b\" route=\"demo\" status=502 upstream_ms=10.822 \
             duration_ms=11.833 bytes=3755 complete=true peer=10.0.0.7 \
             error=\"upstream_unreachable\" detail=connect: refused"
        );
    }

    #[test]
    fn json_lines_are_json_with_every_field() {
        let mut out = Vec::new();
        fields().line(AccessFormat::Json, true, &mut out);
        let line: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["method"], "GET");
        assert_eq!(line["path"], "/service/demo/a\"b");
        assert_eq!(line["route"], "demo");
        assert_eq!(line["duration_ms"], 11.833);
        assert_eq!(line["bytes"], 3755);
        assert_eq!(line["complete"], true);
        assert_eq!(line["error"], "upstream_unreachable");
        assert_eq!(line["upstream_ms"], 10.822);
        assert_eq!(line["status"], 502);
        assert_eq!(line["peer"], "10.0.0.7");
        assert_eq!(line["detail"], "connect: refused");
        assert_eq!(line["target"], "access");
        assert_eq!(out.last(), Some(&b'\n'));
    }

    #[test]
    fn timestamps_are_utc_with_microseconds() {
        let mut out = Vec::new();
        // 2026-12-04T17:24:55.854311Z, and a leap day.
        push_timestamp(&mut out, Duration::new(1_796_405_095, 854_311_000));
        out.push(b' ');
        push_timestamp(&mut out, Duration::new(951_782_400, 5_000));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2026-12-04T17:24:55.854311Z 2000-02-29T00:00:00.000005Z"
        );
    }

    #[test]
    fn control_characters_are_escaped() {
        let mut out = Vec::new();
        push_quoted(&mut out, "a\u{1}\tb\\");
        assert_eq!(String::from_utf8(out).unwrap(), "\"a\\u0001\\tb\\\\\"");
    }
}
