//! How this gateway knows itself: the name it gives itself in `Via`, and the addresses at
//! which it can be reached, which no route may point at (a route there loops).

use std::net::SocketAddr;

use gateway_proxy::OwnAddresses;

use super::Config;

impl Config {
    /// Where this gateway can be reached: its listen address (every local address when it
    /// listens on all interfaces), `ROUTER_URL`'s host on its own port and on the listen
    /// port, and `TCP_ROUTER_ADDRESS` on the listen port.
    pub fn own_addresses(&self) -> OwnAddresses {
        let mut own = OwnAddresses::listening_on(self.listen);
        let port = self.listen.port();
        if let Some((host, url_port)) = self.router_url.as_deref().and_then(host_and_port) {
            own = own.with_name(&host, url_port).with_name(&host, port);
        }
        if let Some(address) = self.tcp.as_ref().and_then(|t| t.router_address.as_deref()) {
            own = own.with_name(address, port);
        }
        own
    }
}

/// The host and port of an `http://` or `https://` URL (the scheme's port when none is
/// written).
fn host_and_port(url: &str) -> Option<(String, u16)> {
    let uri: http::Uri = url.parse().ok()?;
    let default = if uri.scheme_str() == Some("https") {
        443
    } else {
        80
    };
    Some((uri.host()?.to_owned(), uri.port_u16().unwrap_or(default)))
}

/// The name this gateway gives itself in `Via`: `ROUTER_URL`'s `host[:port]`, lowercased,
/// which names the gateway as its users reach it and is the same on every replica behind it;
/// without `ROUTER_URL` (standalone mode), the machine's host name and the listen port.
pub(super) fn via_pseudonym(router_url: Option<&str>, listen: SocketAddr) -> String {
    let from_url = router_url
        .and_then(|url| url.parse::<http::Uri>().ok())
        .and_then(|uri| uri.authority().map(|a| a.as_str().to_ascii_lowercase()));
    match from_url {
        Some(authority) => authority,
        None => format!("{}:{}", machine_name(), listen.port()),
    }
}

/// The kernel's host name, kept to the characters a `Via` entry may hold.
fn machine_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = name
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
        .collect();
    if name.is_empty() {
        "clearml-gateway".to_owned()
    } else {
        name.to_ascii_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pseudonym_is_router_urls_authority_or_the_machine_and_port() {
        let listen: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(
            via_pseudonym(Some("https://GW.example.com"), listen),
            "gw.example.com"
        );
        assert_eq!(
            via_pseudonym(Some("http://10.0.0.9:8010/base"), listen),
            "10.0.0.9:8010"
        );
        let standalone = via_pseudonym(None, listen);
        assert!(standalone.ends_with(":8080"), "{standalone}");
        assert!(
            http::HeaderValue::from_str(&format!("1.1 {standalone}")).is_ok(),
            "{standalone}"
        );
    }

    #[test]
    fn router_url_names_the_gateway_on_its_port_and_the_listen_port() {
        assert_eq!(
            host_and_port("https://gw.example.com"),
            Some(("gw.example.com".to_owned(), 443))
        );
        assert_eq!(
            host_and_port("http://gw.example.com:8010"),
            Some(("gw.example.com".to_owned(), 8010))
        );
    }
}
