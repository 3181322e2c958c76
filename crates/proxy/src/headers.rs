//! Header rewriting at the hop between client and upstream (RFC 9110 §7.6.1).

use std::net::IpAddr;

use http::header::{
    CONNECTION, HOST, HeaderMap, HeaderName, HeaderValue, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
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

static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// What the upstream is told about the client and the route.
pub(crate) struct ForwardedFor<'a> {
    pub(crate) peer: IpAddr,
    pub(crate) proto: &'static str,
    pub(crate) prefix: &'a HeaderValue,
    /// The host the client asked for (`:authority` in HTTP/2), used when `Host` is absent.
    pub(crate) request_authority: Option<&'a Authority>,
    /// Used for `Host` when the client sent none at all.
    pub(crate) upstream_authority: &'a Authority,
}

/// Readies request headers for the upstream: hop-by-hop headers out, forwarding headers in.
/// `upgrade` is the client's `Upgrade` value when the connection is to be tunnelled.
pub(crate) fn prepare_request(
    headers: &mut HeaderMap,
    forwarded: &ForwardedFor<'_>,
    upgrade: Option<HeaderValue>,
) {
    let host = headers
        .get(HOST)
        .cloned()
        .or_else(|| authority_value(forwarded.request_authority))
        .or_else(|| authority_value(Some(forwarded.upstream_authority)));
    remove_hop_by_hop(headers);
    if let Some(protocol) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol);
    }
    if let Some(host) = host {
        headers.insert(X_FORWARDED_HOST.clone(), host.clone());
        headers.insert(HOST, host);
    }
    append_forwarded_for(headers, forwarded.peer);
    headers.insert(X_REAL_IP.clone(), ip_value(forwarded.peer));
    headers.insert(
        X_FORWARDED_PROTO.clone(),
        HeaderValue::from_static(forwarded.proto),
    );
    headers.insert(X_FORWARDED_PREFIX.clone(), forwarded.prefix.clone());
}

/// Readies upstream response headers for the client. A `101` keeps `Connection: upgrade`
/// and `Upgrade`, which the tunnel needs.
pub(crate) fn prepare_response(headers: &mut HeaderMap, switching_protocols: bool) {
    let upgrade = switching_protocols
        .then(|| headers.get(UPGRADE).cloned())
        .flatten();
    remove_hop_by_hop(headers);
    if let Some(protocol) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, protocol);
    }
}

/// The protocol a request asks to switch to, when it is one the gateway tunnels: an HTTP/1.1
/// `Upgrade` announced in `Connection`, except `h2c`, which would let a client talk HTTP/2
/// straight to the upstream past the gateway's own request handling.
pub(crate) fn requested_upgrade(headers: &HeaderMap) -> Option<HeaderValue> {
    let upgrade = headers.get(UPGRADE)?;
    let announced = connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"));
    let h2c = upgrade
        .to_str()
        .is_ok_and(|v| v.trim().eq_ignore_ascii_case("h2c"));
    (announced && !h2c).then(|| upgrade.clone())
}

/// Removes `Connection` and every header it names, `Keep-Alive`, `Proxy-*`, `TE`,
/// `Trailer`, `Transfer-Encoding` and `Upgrade`.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = connection_tokens(headers)
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(name);
    }
    for name in [&CONNECTION, &TE, &TRAILER, &TRANSFER_ENCODING, &UPGRADE] {
        headers.remove(name);
    }
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    let proxy_named = headers
        .keys()
        .any(|name| name.as_str().starts_with("proxy-"));
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

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn append_forwarded_for(headers: &mut HeaderMap, peer: IpAddr) {
    let mut chain = String::new();
    for value in headers.get_all(&X_FORWARDED_FOR) {
        if let Ok(text) = value.to_str() {
            let text = text.trim();
            if !text.is_empty() {
                chain.push_str(text);
                chain.push_str(", ");
            }
        }
    }
    let value = if chain.is_empty() {
        ip_value(peer)
    } else {
        chain.push_str(&peer.to_string());
        HeaderValue::from_str(&chain).unwrap_or_else(|_| ip_value(peer))
    };
    headers.insert(X_FORWARDED_FOR.clone(), value);
}

fn ip_value(ip: IpAddr) -> HeaderValue {
    // An IP address prints as ASCII digits, dots and colons: always a valid header value.
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
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
            peer: "192.0.2.7".parse().unwrap(),
            proto: "https",
            prefix: &prefix,
            request_authority: None,
            upstream_authority: &upstream,
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
            peer: "::1".parse().unwrap(),
            proto: "http",
            prefix: &prefix,
            request_authority: Some(&asked),
            upstream_authority: &upstream,
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
