//! The route table: an immutable snapshot of every routed endpoint, swapped atomically.
//!
//! Requests read the current snapshot without taking a lock (`arc-swap`); whoever builds a
//! new table (the standalone routes file, the ClearML sync) does so off to the side and
//! publishes it with one pointer swap.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::HeaderValue;
use http::uri::Authority;

/// The prefix under which every routed endpoint is served.
pub const SERVICE_PREFIX: &str = "/service/";

/// Whether `key` may name a route: one or more of `[A-Za-z0-9_-]`.
///
/// `{task_id}` and `{task_id}__{name}` both fit, since `_` is in the set.
pub fn is_valid_route_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Where a route's requests go: a plain-HTTP `host:port`.
#[derive(Clone, PartialEq, Eq)]
pub struct Upstream {
    authority: Authority,
    /// The host, when it is an IP address (names are checked when resolved).
    ip: Option<std::net::IpAddr>,
}

/// Why a string cannot be used as an upstream.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidUpstream {
    /// The text is not `http://host[:port]`.
    #[error("expected http://host:port, got {0:?}")]
    NotHttpUrl(String),
    /// The host is neither an IP address nor a DNS name.
    #[error("invalid host {0:?}: expected an IP address or a host name")]
    BadHost(String),
    /// The port is 0.
    #[error("invalid port 0")]
    PortZero,
}

impl Upstream {
    /// Parses `http://host[:port]` (port 80 when absent; a trailing `/` is allowed).
    pub fn parse_url(url: &str) -> Result<Self, InvalidUpstream> {
        let not_http = || InvalidUpstream::NotHttpUrl(url.to_owned());
        let rest = url.strip_prefix("http://").ok_or_else(not_http)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return Err(not_http());
        }
        let (host, port) = split_host_port(rest).ok_or_else(not_http)?;
        Self::from_host_port(host, port.unwrap_or(80))
    }

    /// Builds an upstream from a host (IP address or DNS name) and a port.
    pub fn from_host_port(host: &str, port: u16) -> Result<Self, InvalidUpstream> {
        if port == 0 {
            return Err(InvalidUpstream::PortZero);
        }
        let ip = host.parse::<std::net::IpAddr>().ok();
        let host_part = if host.parse::<std::net::Ipv6Addr>().is_ok() {
            format!("[{host}]")
        } else if host.parse::<std::net::Ipv4Addr>().is_ok() || is_dns_name(host) {
            host.to_owned()
        } else {
            return Err(InvalidUpstream::BadHost(host.to_owned()));
        };
        let authority = Authority::try_from(format!("{host_part}:{port}"))
            .map_err(|_| InvalidUpstream::BadHost(host.to_owned()))?;
        Ok(Self { authority, ip })
    }

    /// The `host:port` requests are sent to.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The host, when it is an IP address rather than a name.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.ip
    }
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority)
    }
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Splits `host[:port]` or `[v6][:port]`; `None` when the port is not a number.
fn split_host_port(text: &str) -> Option<(&str, Option<u16>)> {
    if let Some(v6) = text.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        return match after {
            "" => Some((host, None)),
            _ => Some((host, Some(after.strip_prefix(':')?.parse().ok()?))),
        };
    }
    match text.rsplit_once(':') {
        Some((host, port)) => Some((host, Some(port.parse().ok()?))),
        None => Some((text, None)),
    }
}

/// A DNS name: dot-separated labels of `[A-Za-z0-9-]`, not starting or ending with `-`,
/// whose last label is not a number. Resolvers read `2852039166`, `0xA9FEA9FE` or
/// `169.254.43518` as IPv4 addresses (169.254.169.254 in each case); such a "name" would slip
/// past the checks made on addresses.
fn is_dns_name(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or_default();
    let numeric = last.bytes().all(|b| b.is_ascii_digit())
        || last
            .strip_prefix("0x")
            .or_else(|| last.strip_prefix("0X"))
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()));
    !numeric
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// One routed endpoint: the key it is served under and where its requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    key: Box<str>,
    upstream: Upstream,
    task_id: Box<str>,
    owner: Option<Box<str>>,
    prefix: HeaderValue,
}

impl Route {
    /// A route served at `/service/{key}/`, for the task the key's `{task_id}` part names.
    ///
    /// Returns `None` when the key is not a valid route key, or when its task id or its
    /// name is empty (`__x`, `abc__`).
    pub fn new(key: &str, upstream: Upstream) -> Option<Self> {
        if !is_valid_route_key(key) {
            return None;
        }
        let task_id = match key.split_once("__") {
            Some((task, name)) if !task.is_empty() && !name.is_empty() => task,
            Some(_) => return None,
            None => key,
        };
        // Valid keys are visible ASCII, so the header value always builds.
        let prefix = HeaderValue::from_str(&format!("/service/{key}")).ok()?;
        Some(Self {
            key: key.into(),
            upstream,
            task_id: task_id.into(),
            owner: None,
            prefix,
        })
    }

    /// Records the ClearML user who owns the task behind this route.
    pub fn with_owner(mut self, owner: impl Into<Box<str>>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// The path segment after `/service/`: `{task_id}` or `{task_id}__{name}`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Where requests to this route are forwarded.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// The id of the task this route belongs to.
    pub fn task_id(&self) -> &str {
        &self.task_id
    }

    /// The ClearML user id of the task's owner, where known.
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// `/service/{key}`, as sent to the upstream in `X-Forwarded-Prefix`.
    pub(crate) fn prefix_header(&self) -> &HeaderValue {
        &self.prefix
    }
}

/// An immutable set of routes, looked up by key in O(1).
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: HashMap<Box<str>, Arc<Route>>,
}

impl RouteTable {
    /// Builds a table; of two routes with one key, the later wins.
    pub fn new(routes: impl IntoIterator<Item = Route>) -> Self {
        let routes = routes
            .into_iter()
            .map(|route| (route.key.clone(), Arc::new(route)))
            .collect();
        Self { routes }
    }

    /// The route served under `key`, if any.
    pub fn lookup(&self, key: &str) -> Option<&Arc<Route>> {
        self.routes.get(key)
    }

    /// How many routes the table holds.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    /// Whether the table holds no route.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// Every route, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Route>> {
        self.routes.values()
    }

    /// Whether `other` serves exactly the same routes.
    pub fn same_routes(&self, other: &RouteTable) -> bool {
        self.len() == other.len()
            && self
                .routes
                .iter()
                .all(|(key, route)| other.lookup(key).is_some_and(|o| o == route))
    }
}

/// The live route table: read by every request without a lock, replaced as a whole.
#[derive(Debug, Default)]
pub struct RouteStore {
    current: ArcSwap<RouteTable>,
}

impl RouteStore {
    /// A store serving `table`.
    pub fn new(table: RouteTable) -> Self {
        Self {
            current: ArcSwap::from_pointee(table),
        }
    }

    /// The route served under `key` in the current table.
    pub fn lookup(&self, key: &str) -> Option<Arc<Route>> {
        self.current.load().lookup(key).cloned()
    }

    /// The current table, for callers that read many routes at once.
    pub fn snapshot(&self) -> Arc<RouteTable> {
        self.current.load_full()
    }

    /// Publishes `table`; requests that already looked up a route keep it.
    ///
    /// The old table is freed on a blocking thread once the last reader lets go of it, not by
    /// whichever request happened to hold the last reference: freeing 100 000 routes is work
    /// no request, and no request thread, should pay for.
    pub async fn replace(&self, table: RouteTable) {
        let mut old = self.current.swap(Arc::new(table));
        // Readers hold the table only for the span of one hash lookup, so this settles at once.
        for _ in 0..1000 {
            match Arc::try_unwrap(old) {
                Ok(table) => {
                    if table.len() > 1000 {
                        tokio::task::spawn_blocking(move || drop(table));
                    }
                    return;
                }
                Err(shared) => {
                    old = shared;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(port: u16) -> Upstream {
        Upstream::from_host_port("127.0.0.1", port).unwrap()
    }

    #[test]
    fn route_keys_follow_the_contract() {
        for key in ["abc", "0123abcdef", "abc__jupyter", "a-b_c", "abc__1"] {
            assert!(is_valid_route_key(key), "{key}");
        }
        for key in ["", "a.b", "a/b", "a%2Fb", "a b", "ä", "a:b"] {
            assert!(!is_valid_route_key(key), "{key}");
        }
    }

    #[test]
    fn route_splits_task_id_from_name() {
        let named = Route::new("abc__jupyter", upstream(1)).unwrap();
        assert_eq!(named.task_id(), "abc");
        assert_eq!(named.prefix_header(), "/service/abc__jupyter");
        let plain = Route::new("abc", upstream(1)).unwrap();
        assert_eq!(plain.task_id(), "abc");
        assert!(Route::new("a/b", upstream(1)).is_none());
        assert!(Route::new("__x", upstream(1)).is_none());
        assert!(Route::new("abc__", upstream(1)).is_none());
    }

    #[test]
    fn upstream_urls_parse_or_say_why_not() {
        let ok = |s: &str| Upstream::parse_url(s).map(|u| u.to_string());
        assert_eq!(
            ok("http://127.0.0.1:8000").unwrap(),
            "http://127.0.0.1:8000"
        );
        assert_eq!(ok("http://host.local:1/").unwrap(), "http://host.local:1");
        assert_eq!(ok("http://example").unwrap(), "http://example:80");
        assert_eq!(ok("http://[::1]:9").unwrap(), "http://[::1]:9");
        for bad in [
            "https://a:1",
            "a:1",
            "http://a:1/path",
            "http://u@a:1",
            "http://a:x",
            "http://a:70000",
            "http://",
        ] {
            assert!(
                matches!(
                    Upstream::parse_url(bad),
                    Err(InvalidUpstream::NotHttpUrl(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            Upstream::parse_url("http://a_b:1"),
            Err(InvalidUpstream::BadHost("a_b".into()))
        );
        assert_eq!(
            Upstream::from_host_port("10.0.0.1", 0),
            Err(InvalidUpstream::PortZero)
        );
        assert!(Upstream::from_host_port("10.0.0.1\r\nX: y", 80).is_err());
        for disguised in [
            "2852039166",
            "0xA9FEA9FE",
            "169.254.43518",
            "0251.0376.0251.0376",
            "1.2.3",
        ] {
            assert!(
                Upstream::from_host_port(disguised, 80).is_err(),
                "{disguised}"
            );
        }
        assert!(Upstream::from_host_port("gpu-7.cluster.local", 80).is_ok());
        assert!(Upstream::from_host_port("node1", 80).is_ok());
    }

    #[tokio::test]
    async fn replace_publishes_the_new_table_and_keeps_routes_already_held() {
        let store = RouteStore::new(RouteTable::new([Route::new("a", upstream(1)).unwrap()]));
        let held = store.lookup("a").unwrap();
        store
            .replace(RouteTable::new([Route::new("b", upstream(2)).unwrap()]))
            .await;
        assert!(store.lookup("a").is_none());
        assert_eq!(store.lookup("b").unwrap().upstream(), &upstream(2));
        assert_eq!(held.upstream(), &upstream(1));
        assert_eq!(store.snapshot().len(), 1);
    }
}
