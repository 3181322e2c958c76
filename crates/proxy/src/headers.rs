//! Header rewriting at the hop between client and upstream (RFC 9110 §7.6.1).

use std::net::IpAddr;

use http::header::{
    CONNECTION, COOKIE, HOST, HeaderMap, HeaderName, HeaderValue, TE, TRAILER, TRANSFER_ENCODING,
    UPGRADE,
};
use http::uri::Authority;

/// `X-Forwarded-For`: the chain of client addresses, the peer's appended.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Real-IP`: the address of the peer that connected to the gateway.
pub static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
/// `X-Forwarded-Proto`: the scheme the client used.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`: the host the client asked for.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Forwarded-Prefix`: the path prefix the gateway stripped.
pub static X_FORWARDED_PREFIX: HeaderName = HeaderName::from_static("x-forwarded-prefix");

/// `X-ClearML-User`: the ClearML user id of an authenticated request.
pub static X_CLEARML_USER: HeaderName = HeaderName::from_static("x-clearml-user");

/// The names every hop removes (RFC 9110 §7.6.1), besides those `Connection` lists.
static HOP_BY_HOP: [HeaderName; 7] = [
    CONNECTION,
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Headers that tell an app about the client or rewrite its target, which only a proxy may
/// set and which the gateway does not: a client must not be able to forge them.
static FORGEABLE: [HeaderName; 5] = [
    HeaderName::from_static("forwarded"),
    HeaderName::from_static("x-forwarded-port"),
    HeaderName::from_static("x-forwarded-ssl"),
    HeaderName::from_static("x-original-url"),
    HeaderName::from_static("x-rewrite-url"),
];

/// What the upstream is told about the client and the route.
pub(crate) struct ForwardedFor<'a> {
    /// The peer's address as a header value (made once per connection).
    pub(crate) peer: &'a HeaderValue,
    pub(crate) proto: &'static str,
    pub(crate) prefix: &'a HeaderValue,
    /// The authority of the request target (`:authority` in HTTP/2, or an absolute-form
    /// target), which takes precedence over `Host` (RFC 9112 §3.2.2, RFC 9113 §8.3.1).
    pub(crate) request_authority: Option<&'a Authority>,
    /// Used for `Host` when the client named no host at all.
    pub(crate) upstream_authority: &'a Authority,
    /// HTTP/2 clients may split `Cookie` into several fields; HTTP/1.1 apps expect one.
    pub(crate) merge_cookies: bool,
}

/// Readies request headers for the upstream: hop-by-hop headers out, forwarding headers in.
/// `upgrade` is the client's `Upgrade` value when the connection is to be tunnelled.
pub(crate) fn prepare_request(
    headers: &mut HeaderMap,
    forwarded: &ForwardedFor<'_>,
    upgrade: Option<HeaderValue>,
) {
    let host = authority_value(forwarded.request_authority)
        .or_else(|| headers.get(HOST).cloned())
        .or_else(|| authority_value(Some(forwarded.upstream_authority)));
    // Most requests carry none of the names dropped here: one look at each name they do
    // carry is cheaper than a dozen lookups of names they do not.
    if headers
        .keys()
        .any(|name| is_hop_by_hop(name) || FORGEABLE.contains(name))
    {
        remove_hop_by_hop(headers);
        for name in &FORGEABLE {
            headers.remove(name);
        }
    }
    // Room for the headers added below, in one allocation rather than a few.
    headers.reserve(8);
    if forwarded.merge_cookies {
        merge_cookies(headers);
    }
    if let Some(protocol) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol);
    }
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        headers.insert(HOST, host);
    }
    append_to_list(headers, &X_FORWARDED_FOR, forwarded.peer);
    headers.insert(X_REAL_IP.clone(), forwarded.peer.clone());
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(forwarded.proto),
    );
    headers.insert(X_FORWARDED_PREFIX.clone(), forwarded.prefix.clone());
}

/// Tells the upstream who the user is; a value the client sent itself never passes.
pub(crate) fn set_user(headers: &mut HeaderMap, identity: Option<&crate::auth::Identity>) {
    headers.remove(&X_CLEARML_USER);
    if let Some(value) = identity.and_then(|i| HeaderValue::from_str(&i.user).ok()) {
        headers.insert(X_CLEARML_USER.clone(), value);
    }
}

/// Readies upstream response headers for the client. A `101` keeps `Connection: upgrade`
/// and `Upgrade`, which the tunnel needs.
pub(crate) fn prepare_response(headers: &mut HeaderMap, switching_protocols: bool) {
    let upgrade = switching_protocols
        .then(|| headers.get(UPGRADE).cloned())
        .flatten();
    if headers.keys().any(is_hop_by_hop) {
        remove_hop_by_hop(headers);
    }
    if let Some(protocol) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol);
    }
}

/// The protocols a request offers to switch to, when the gateway tunnels them: an HTTP/1.1
/// `Upgrade` announced in `Connection`, unless `h2c` is among them, which would let a
/// client speak HTTP/2 straight to the upstream past the gateway's request handling.
pub(crate) fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let upgrade = headers.get(UPGRADE)?;
    let announced = connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"));
    let protocols = upgrade.to_str().ok()?;
    let h2c = protocols
        .split(',')
        .any(|p| p.trim().eq_ignore_ascii_case("h2c"));
    (announced && !h2c).then(|| upgrade.clone())
}

/// Removes `Connection` and every header it names, `Keep-Alive`, `Proxy-*`, `TE`,
/// `Trailer`, `Transfer-Encoding` and `Upgrade`.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // Most requests name only the standard options, which need no list of their own.
    let names_others = connection_tokens(headers).any(|t| {
        !(t.eq_ignore_ascii_case("keep-alive")
            || t.eq_ignore_ascii_case("close")
            || t.eq_ignore_ascii_case("upgrade"))
    });
    if names_others {
        let listed: Vec<HeaderName> = connection_tokens(headers)
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in listed {
            headers.remove(name);
        }
    }
    // Removing a name costs a lookup even when it is absent: find the ones present first.
    let mut present = [false; HOP_BY_HOP.len()];
    let mut proxy_named = false;
    for name in headers.keys() {
        match HOP_BY_HOP.iter().position(|hop| hop == name) {
            Some(at) => present[at] = true,
            None => proxy_named |= name.as_str().starts_with("proxy-"),
        }
    }
    for (name, present) in HOP_BY_HOP.iter().zip(present) {
        if present {
            headers.remove(name);
        }
    }
    if proxy_named {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for name in names {
            headers.remove(name);
        }
    }
}

/// Whether `remove_hop_by_hop` would remove `name` whatever `Connection` lists (and
/// `Connection` itself, which is what lists the others).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || name.as_str().starts_with("proxy-")
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Joins several `Cookie` fields into one, `; `-separated (RFC 9113 §8.2.3).
fn merge_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for value in headers.get_all(COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(value.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(COOKIE, value);
    }
}

/// Appends `entry` to the comma-separated list `name` holds, joining the fields a client
/// split it into, so that the upstream finds the whole chain in one field.
pub(crate) fn append_to_list(headers: &mut HeaderMap, name: &HeaderName, entry: &HeaderValue) {
    let mut chain = Vec::new();
    for value in headers.get_all(name) {
        let text = value.as_bytes().trim_ascii();
        if !text.is_empty() {
            chain.extend_from_slice(text);
            chain.extend_from_slice(b", ");
        }
    }
    let value = if chain.is_empty() {
        entry.clone()
    } else {
        chain.extend_from_slice(entry.as_bytes());
        HeaderValue::from_bytes(&chain).unwrap_or_else(|_| entry.clone())
    };
    headers.insert(name.clone(), value);
}

/// An address as a header value: IPv4 for an IPv4-mapped IPv6 address.
pub(crate) fn ip_value(ip: IpAddr) -> HeaderValue {
    // An IP address prints as ASCII digits, dots and colons: always a valid header value.
    HeaderValue::from_str(&ip.to_canonical().to_string())
        .unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

fn authority_value(authority: Option<&Authority>) -> Option<HeaderValue> {
    authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_go() {
        let mut map = headers(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "x-other"),
            ("x-secret", "1"),
            ("x-other", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
            ("content-type", "text/plain"),
        ]);
        remove_hop_by_hop(&mut map);
        let mut left: Vec<&str> = map.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-kept"]);
    }

    #[test]
    fn forwarding_headers_are_set_and_the_chain_extended() {
        let mut map = headers(&[
            ("host", "gw.example:8010"),
            ("x-forwarded-for", "10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-real-ip", "6.6.6.6"),
            ("x-forwarded-prefix", "/spoofed"),
        ]);
        let prefix = HeaderValue::from_static("/service/abc");
        let upstream: Authority = "10.1.1.1:8000".parse().unwrap();
        let forwarded = ForwardedFor {
            peer: &ip_value("192.0.2.7".parse().unwrap()),
            proto: "https",
            prefix: &prefix,
            request_authority: None,
            upstream_authority: &upstream,
            merge_cookies: false,
        };
        prepare_request(&mut map, &forwarded, None);
        assert_eq!(map["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 192.0.2.7");
        assert_eq!(map["x-real-ip"], "192.0.2.7");
        assert_eq!(map["x-forwarded-proto"], "https");
        assert_eq!(map["x-forwarded-host"], "gw.example:8010");
        assert_eq!(map["x-forwarded-prefix"], "/service/abc");
        assert_eq!(map["host"], "gw.example:8010");
    }

    #[test]
    fn host_comes_from_the_authority_when_the_client_sent_none() {
        let mut map = HeaderMap::new();
        let prefix = HeaderValue::from_static("/service/abc");
        let upstream: Authority = "10.1.1.1:8000".parse().unwrap();
        let asked: Authority = "gw.example".parse().unwrap();
        let mut forwarded = ForwardedFor {
            peer: &ip_value("::1".parse().unwrap()),
            proto: "http",
            prefix: &prefix,
            request_authority: Some(&asked),
            upstream_authority: &upstream,
            merge_cookies: true,
        };
        prepare_request(&mut map, &forwarded, None);
        assert_eq!(map["host"], "gw.example");
        forwarded.request_authority = None;
        let mut map = HeaderMap::new();
        prepare_request(&mut map, &forwarded, None);
        assert_eq!(map["host"], "10.1.1.1:8000");
        assert_eq!(map["x-forwarded-for"], "::1");
    }

    #[test]
    fn the_target_authority_wins_over_host_and_mapped_addresses_show_as_ipv4() {
        let mut map = headers(&[("host", "spoofed.example"), ("forwarded", "for=6.6.6.6")]);
        let prefix = HeaderValue::from_static("/service/abc");
        let upstream: Authority = "10.1.1.1:8000".parse().unwrap();
        let asked: Authority = "gw.example".parse().unwrap();
        let forwarded = ForwardedFor {
            peer: &ip_value("::ffff:192.0.2.7".parse().unwrap()),
            proto: "http",
            prefix: &prefix,
            request_authority: Some(&asked),
            upstream_authority: &upstream,
            merge_cookies: false,
        };
        prepare_request(&mut map, &forwarded, None);
        assert_eq!(map["host"], "gw.example");
        assert_eq!(map["x-real-ip"], "192.0.2.7");
        assert!(map.get("forwarded").is_none());
    }

    #[test]
    fn split_cookie_fields_are_joined() {
        let mut map = headers(&[("cookie", "a=1"), ("cookie", "b=2"), ("cookie", "c=3")]);
        merge_cookies(&mut map);
        assert_eq!(map.get_all("cookie").iter().count(), 1);
        assert_eq!(map["cookie"], "a=1; b=2; c=3");
    }

    #[test]
    fn upgrades_are_recognised_except_h2c() {
        let ws = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(requested_upgrade(&ws).unwrap(), "websocket");
        let unannounced = headers(&[("upgrade", "websocket")]);
        assert!(requested_upgrade(&unannounced).is_none());
        let h2c = headers(&[
            ("connection", "upgrade, http2-settings"),
            ("upgrade", "h2c"),
        ]);
        assert!(requested_upgrade(&h2c).is_none());
    }

    #[test]
    fn a_switching_response_keeps_its_upgrade_headers() {
        let mut map = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-accept", "x"),
        ]);
        prepare_response(&mut map, true);
        assert_eq!(map["connection"], "upgrade");
        assert_eq!(map["upgrade"], "websocket");
        let mut map = headers(&[("connection", "close"), ("upgrade", "websocket")]);
        prepare_response(&mut map, false);
        assert!(map.is_empty());
    }
}
