//! Keeping requests from going round in circles.
//!
//! A route that leads back into a gateway — its own address, or another gateway whose
//! route leads back — would have each request forwarded again and again, each hop holding a
//! connection. Two defences: routes are refused when they point at one of the gateway's own
//! addresses ([`OwnAddresses`], checked where routes are made), and every forwarded request
//! carries this gateway's `Via` entry (RFC 9110 §7.6.3), so that one that comes back is
//! answered `508 Loop Detected` instead of forwarded ([`Via`]), whatever address it took.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use http::header::VIA;
use http::{HeaderMap, HeaderValue, Version};

use crate::headers::append_to_list;
use crate::routes::Upstream;

/// This gateway's `Via` entry, `<protocol> <pseudonym>`, and the check for it.
#[derive(Debug)]
pub(crate) struct Via {
    pseudonym: Box<str>,
    /// The entry for each protocol version a request can arrive in: 1.0, 1.1, 2.
    entries: [HeaderValue; 3],
}

impl Via {
    /// The entries for `pseudonym`, which must be a valid header value (config checks it).
    pub(crate) fn new(pseudonym: &str) -> Self {
        let entry = |protocol: &str| {
            HeaderValue::from_str(&format!("{protocol} {pseudonym}"))
                .unwrap_or_else(|_| HeaderValue::from_static("1.1 clearml-gateway"))
        };
        Self {
            pseudonym: pseudonym.into(),
            entries: [entry("1.0"), entry("1.1"), entry("2")],
        }
    }

    /// Whether a `Via` entry of the request names this gateway: it has been here before.
    pub(crate) fn is_in(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(VIA)
            .iter()
            .filter_map(|field| field.to_str().ok())
            .flat_map(|field| field.split(','))
            .filter_map(|entry| entry.split_whitespace().nth(1))
            .any(|received_by| received_by.eq_ignore_ascii_case(&self.pseudonym))
    }

    /// Appends this gateway's entry, with the protocol the request arrived in.
    pub(crate) fn add_to(&self, headers: &mut HeaderMap, version: Version) {
        let entry = match version {
            Version::HTTP_09 | Version::HTTP_10 => &self.entries[0],
            Version::HTTP_11 => &self.entries[1],
            _ => &self.entries[2],
        };
        append_to_list(headers, &VIA, entry);
    }
}

/// Where this gateway can be reached: the address it listens on, and the names it is
/// published under (`ROUTER_URL`'s host, `TCP_ROUTER_ADDRESS`), each with a port.
#[derive(Debug, Clone, Default)]
pub struct OwnAddresses {
    listen: Option<SocketAddr>,
    names: Vec<(String, u16)>,
}

impl OwnAddresses {
    /// A gateway listening on `listen` (its IP may be `0.0.0.0` or `::`).
    pub fn listening_on(listen: SocketAddr) -> Self {
        Self {
            listen: Some(listen),
            names: Vec::new(),
        }
    }

    /// Also reached as `host:port` (a name or an IP address).
    pub fn with_name(mut self, host: &str, port: u16) -> Self {
        self.names.push((normalize(host), port));
        self
    }

    /// Why a route to `upstream` would lead back into this gateway, if it would.
    ///
    /// Names are compared as written, not resolved (a name that resolves here is caught by
    /// `Via` when a request takes it). On a listener on every interface, an address is
    /// this gateway's when it is loopback, unspecified, or bound to one of the host's
    /// interfaces.
    pub fn leads_back(&self, upstream: &Upstream) -> Option<String> {
        let authority = upstream.authority();
        let port = authority.port_u16().unwrap_or(80);
        // Most routes are on no port of the gateway's: decided without a string made.
        let on_listen_port = self.listen.is_some_and(|listen| listen.port() == port);
        if !on_listen_port && !self.names.iter().any(|(_, p)| *p == port) {
            return None;
        }
        let host = normalize(authority.host());
        if self
            .names
            .iter()
            .any(|(name, p)| *p == port && *name == host)
        {
            return Some(format!("{host}:{port} is this gateway's published address"));
        }
        let listen = self.listen?;
        if port != listen.port() {
            return None;
        }
        let ip = match upstream.ip() {
            Some(ip) => ip.to_canonical(),
            None if host == "localhost" || host.ends_with(".localhost") => {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            }
            None => return None,
        };
        reaches(listen.ip().to_canonical(), ip)
            .then(|| format!("{host}:{port} is this gateway's own listen address ({listen})"))
    }
}

/// Whether connecting to `target` on the listen port reaches a listener bound to `listen`.
fn reaches(listen: IpAddr, target: IpAddr) -> bool {
    if target == listen {
        return true;
    }
    if listen.is_unspecified() {
        return target.is_loopback() || target.is_unspecified() || is_local_interface(target);
    }
    // Connecting to `0.0.0.0` or `::` reaches the local host (Linux), its loopback listener.
    listen.is_loopback() && target.is_unspecified()
}

/// Whether `ip` belongs to one of the host's interfaces: only then can a socket bind it.
fn is_local_interface(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Hosts compare without case, brackets or a trailing dot; IP addresses in their plain form.
fn normalize(host: &str) -> String {
    let host = host.trim_matches(['[', ']']).trim_end_matches('.');
    match host.parse::<IpAddr>() {
        Ok(ip) => ip.to_canonical().to_string(),
        Err(_) => host.to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(url: &str) -> Upstream {
        Upstream::parse_url(url).unwrap()
    }

    #[test]
    fn a_request_that_carries_our_entry_has_been_here() {
        let via = Via::new("gw.example.com:8443");
        let mut headers = HeaderMap::new();
        assert!(!via.is_in(&headers));
        headers.append(VIA, HeaderValue::from_static("1.0 fred, 1.1 p.example.net"));
        assert!(!via.is_in(&headers));
        via.add_to(&mut headers, Version::HTTP_2);
        assert_eq!(
            headers[VIA], "1.0 fred, 1.1 p.example.net, 2 gw.example.com:8443",
            "appended to the list, in one field"
        );
        assert!(via.is_in(&headers));
        let mut other = HeaderMap::new();
        other.append(
            VIA,
            HeaderValue::from_static("1.1 GW.example.com:8443 (proxy)"),
        );
        assert!(via.is_in(&other), "names compare without case");
        let mut prefix = HeaderMap::new();
        prefix.append(VIA, HeaderValue::from_static("1.1 gw.example.com"));
        assert!(!via.is_in(&prefix), "another port is another gateway");
    }

    #[test]
    fn routes_to_the_listen_address_lead_back() {
        let own = OwnAddresses::listening_on("127.0.0.1:8080".parse().unwrap());
        for url in [
            "http://127.0.0.1:8080",
            "http://localhost:8080",
            "http://LOCALHOST:8080",
            "http://0.0.0.0:8080",
        ] {
            assert!(own.leads_back(&upstream(url)).is_some(), "{url}");
        }
        for url in [
            "http://127.0.0.1:8081",
            "http://127.0.0.2:8080",
            "http://10.0.0.5:8080",
            "http://gw.example.com:8080",
        ] {
            assert!(own.leads_back(&upstream(url)).is_none(), "{url}");
        }
    }

    #[test]
    fn on_every_interface_loopback_and_local_addresses_lead_back() {
        let own = OwnAddresses::listening_on("0.0.0.0:8080".parse().unwrap());
        for url in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3:8080",
            "http://[::1]:8080",
            "http://[::]:8080",
            "http://localhost:8080",
        ] {
            assert!(own.leads_back(&upstream(url)).is_some(), "{url}");
        }
        // TEST-NET-3 is never bound to an interface of a test machine.
        assert!(
            own.leads_back(&upstream("http://203.0.113.9:8080"))
                .is_none()
        );
    }

    #[test]
    fn published_names_lead_back_on_their_port() {
        let own = OwnAddresses::listening_on("10.0.0.9:8080".parse().unwrap())
            .with_name("GW.example.com", 443)
            .with_name("[::ffff:10.0.0.10]", 8080);
        let reason = own
            .leads_back(&upstream("http://Gw.Example.com:443"))
            .unwrap();
        assert!(reason.contains("published address"), "{reason}");
        assert!(own.leads_back(&upstream("http://10.0.0.10:8080")).is_some());
        assert!(own.leads_back(&upstream("http://10.0.0.9:8080")).is_some());
        assert!(
            own.leads_back(&upstream("http://gw.example.com:80"))
                .is_none()
        );
        assert!(
            OwnAddresses::default()
                .leads_back(&upstream("http://127.0.0.1:8080"))
                .is_none()
        );
    }
}
