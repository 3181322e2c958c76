//! Reading a request path: which route it names, what is forwarded, and what is refused.

use crate::routes::{SERVICE_PREFIX, is_valid_route_key};

/// The prefix of the gateway's own paths (health, readiness, …).
pub const GATEWAY_PREFIX: &str = "/_gateway/";

/// What a request path asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// `/service/{key}/{rest}`: forward `/{rest}` to the route `key`.
    Service {
        /// The routed segment.
        key: &'a str,
        /// The path the upstream sees, starting with `/`.
        forwarded_path: &'a str,
    },
    /// `/service/{key}` without the trailing slash: redirected to `/service/{key}/`.
    ServiceRoot {
        /// The routed segment.
        key: &'a str,
    },
    /// `/_gateway/{name}`: one of the gateway's own paths.
    Gateway(&'a str),
    /// Anything else: not routed.
    Unrouted,
}

/// Why a path is refused before any lookup.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The routed segment holds a percent-encoded `/`.
    #[error("percent-encoded '/' in the routed segment")]
    EncodedSlash,
    /// The forwarded path holds a `.` or `..` segment (plain or percent-encoded).
    #[error("'.' or '..' segment in the path")]
    DotSegment,
    /// The routed segment is not `[A-Za-z0-9_-]+`: no route can match it.
    #[error("the routed segment is not a route key")]
    NotARouteKey,
    /// The target could not be rebuilt for the upstream.
    #[error("the target cannot be forwarded")]
    Unforwardable,
}

impl<'a> Target<'a> {
    /// Classifies a request path (the path only, without the query).
    pub fn parse(path: &'a str) -> Result<Self, TargetError> {
        if let Some(name) = path.strip_prefix(GATEWAY_PREFIX) {
            return Ok(Target::Gateway(name));
        }
        let Some(after) = path.strip_prefix(SERVICE_PREFIX) else {
            return Ok(Target::Unrouted);
        };
        let (key, forwarded_path) = match after.find('/') {
            Some(slash) => after.split_at(slash),
            None => (after, ""),
        };
        if contains_encoded_slash(key) {
            return Err(TargetError::EncodedSlash);
        }
        if !is_valid_route_key(key) {
            return Err(TargetError::NotARouteKey);
        }
        if forwarded_path.is_empty() {
            return Ok(Target::ServiceRoot { key });
        }
        if has_dot_segment(forwarded_path) {
            return Err(TargetError::DotSegment);
        }
        Ok(Target::Service {
            key,
            forwarded_path,
        })
    }
}

fn contains_encoded_slash(segment: &str) -> bool {
    segment
        .as_bytes()
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'2' && (w[2] == b'f' || w[2] == b'F'))
}

/// Whether any segment is `.` or `..`, where `%2e` counts as a dot, a `;parameter` is
/// ignored (`..;x`, as Tomcat and Jetty read it), and segments are also separated by `%2f`,
/// `\` and `%5c` (`..%2f`, `..\`): an upstream that decodes, or reads `\` as `/`, before it
/// resolves would otherwise climb out of its prefix.
fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|segment| {
        let segment = segment.split_once(';').map_or(segment, |(name, _)| name);
        // Dots in the part read so far; `None` once it holds anything else.
        let mut dots = Some(0u8);
        let mut rest = segment.as_bytes();
        loop {
            let (unit, tail) = next_unit(rest);
            match unit {
                Unit::Dot => dots = dots.map(|d| d.saturating_add(1)),
                Unit::Other => dots = None,
                Unit::Separator | Unit::End if matches!(dots, Some(1 | 2)) => return true,
                Unit::Separator => dots = Some(0),
                Unit::End => return false,
            }
            rest = tail;
        }
    })
}

/// What a path byte, or a percent-escape, stands for when looking for dot segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Dot,
    Separator,
    Other,
    End,
}

/// The first unit of `path` and what follows it.
fn next_unit(path: &[u8]) -> (Unit, &[u8]) {
    match path {
        [] => (Unit::End, path),
        [b'.', rest @ ..] => (Unit::Dot, rest),
        [b'\\', rest @ ..] => (Unit::Separator, rest),
        [b'%', b'2', e, rest @ ..] if e | 0x20 == b'e' => (Unit::Dot, rest),
        [b'%', b'2', f, rest @ ..] if f | 0x20 == b'f' => (Unit::Separator, rest),
        [b'%', b'5', c, rest @ ..] if c | 0x20 == b'c' => (Unit::Separator, rest),
        [_, rest @ ..] => (Unit::Other, rest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service<'a>(key: &'a str, forwarded_path: &'a str) -> Result<Target<'a>, TargetError> {
        Ok(Target::Service {
            key,
            forwarded_path,
        })
    }

    #[test]
    fn routed_paths_split_into_key_and_forwarded_path() {
        assert_eq!(Target::parse("/service/abc/"), service("abc", "/"));
        assert_eq!(
            Target::parse("/service/abc__lab/v1/models"),
            service("abc__lab", "/v1/models")
        );
        assert_eq!(
            Target::parse("/service/abc//x"),
            service("abc", "//x"),
            "empty segments are the upstream's business"
        );
        assert_eq!(
            Target::parse("/service/abc/a.b/...//.x"),
            service("abc", "/a.b/...//.x")
        );
        assert_eq!(
            Target::parse("/service/abc/api/contents/dir%2Ffile.ipynb"),
            service("abc", "/api/contents/dir%2Ffile.ipynb"),
            "an encoded '/' in the forwarded path is the app's business"
        );
        assert_eq!(
            Target::parse("/service/abc"),
            Ok(Target::ServiceRoot { key: "abc" })
        );
    }

    #[test]
    fn other_paths_are_gateway_or_unrouted() {
        assert_eq!(
            Target::parse("/_gateway/health"),
            Ok(Target::Gateway("health"))
        );
        assert_eq!(Target::parse("/"), Ok(Target::Unrouted));
        assert_eq!(Target::parse("/service"), Ok(Target::Unrouted));
        assert_eq!(Target::parse("*"), Ok(Target::Unrouted));
    }

    #[test]
    fn refused_paths_say_why() {
        assert_eq!(
            Target::parse("/service/a%2Fb/x"),
            Err(TargetError::EncodedSlash)
        );
        assert_eq!(
            Target::parse("/service/a%2fb"),
            Err(TargetError::EncodedSlash)
        );
        assert_eq!(
            Target::parse("/service/a.b/x"),
            Err(TargetError::NotARouteKey)
        );
        assert_eq!(Target::parse("/service//x"), Err(TargetError::NotARouteKey));
        assert_eq!(Target::parse("/service/"), Err(TargetError::NotARouteKey));
        for path in [
            "/service/abc/..",
            "/service/abc/../x",
            "/service/abc/./x",
            "/service/abc/x/%2e%2E/y",
            "/service/abc/%2e",
            "/service/abc/.%2e/",
            "/service/abc/..;jsessionid=1/x",
            "/service/abc/..%2fx",
            "/service/abc/x%2F%2e%2e%2Fy",
            "/service/abc/..\\x",
            "/service/abc/x\\.",
            "/service/abc/x%5c..%5Cy",
        ] {
            assert_eq!(Target::parse(path), Err(TargetError::DotSegment), "{path}");
        }
    }
}
