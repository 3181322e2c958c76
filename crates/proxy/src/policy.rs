//! Where upstreams may point: networks in CIDR notation (`ROUTER__UPSTREAM__ALLOW_CIDRS`).
//!
//! Task addresses are user input: a task could point its endpoint at a cloud metadata
//! service (169.254.169.254) and have the gateway fetch credentials for it. By default every
//! address is allowed except link-local ones, where those services live.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};

/// The networks upstream addresses may lie in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPolicy {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
}

impl Default for AddressPolicy {
    /// Everything but link-local (`169.254.0.0/16`, `fe80::/10`).
    fn default() -> Self {
        Self {
            allow: vec![Cidr::ANY_V4, Cidr::ANY_V6],
            deny: vec![Cidr::LINK_LOCAL_V4, Cidr::LINK_LOCAL_V6],
        }
    }
}

impl AddressPolicy {
    /// Only the networks of `allow` (and nothing denied besides).
    pub fn allowing(allow: Vec<Cidr>) -> Self {
        Self {
            allow,
            deny: Vec::new(),
        }
    }

    /// Whether `ip` may be connected to.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let denied = |ip: IpAddr| self.deny.iter().any(|net| net.contains(ip));
        self.allow.iter().any(|net| net.contains(ip))
            && !denied(ip)
            && !embedded_v4(ip).is_some_and(|v4| denied(IpAddr::V4(v4)))
    }
}

/// The IPv4 address an IPv6 address carries in its last 32 bits where the network may
/// deliver it to that IPv4 host: IPv4-compatible (`::a.b.c.d`, deprecated but still
/// routed by some stacks) and the NAT64 well-known prefix (`64:ff9b::/96`). A denied IPv4
/// network is denied in these forms too.
fn embedded_v4(ip: IpAddr) -> Option<std::net::Ipv4Addr> {
    let IpAddr::V6(v6) = ip else {
        return None;
    };
    let [a, b, c, d, e, f, _, _] = v6.segments();
    let compatible = [a, b, c, d, e, f] == [0; 6] && !v6.is_loopback() && !v6.is_unspecified();
    let nat64 = [a, b, c, d, e, f] == [0x64, 0xff9b, 0, 0, 0, 0];
    let [.., w, x, y, z] = v6.octets();
    (compatible || nat64).then(|| std::net::Ipv4Addr::new(w, x, y, z))
}

/// An IP network such as `10.0.0.0/8` or `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

/// An upstream name resolved only to addresses the policy keeps out.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to addresses outside ROUTER__UPSTREAM__ALLOW_CIDRS ({addresses:?})")]
pub struct AddressNotAllowed {
    /// The name.
    pub host: String,
    /// What it resolved to.
    pub addresses: Vec<IpAddr>,
}

/// Resolves upstream names with `getaddrinfo` and keeps only the addresses the policy
/// allows: a name cannot lead where an address may not.
#[derive(Clone)]
pub(crate) struct PolicyResolver {
    inner: GaiResolver,
    policy: Arc<AddressPolicy>,
}

impl PolicyResolver {
    pub(crate) fn new(policy: AddressPolicy) -> Self {
        Self {
            inner: GaiResolver::new(),
            policy: Arc::new(policy),
        }
    }
}

type Resolving =
    Pin<Box<dyn Future<Output = Result<std::vec::IntoIter<SocketAddr>, io::Error>> + Send>>;

impl tower_service::Service<Name> for PolicyResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = io::Error;
    type Future = Resolving;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        let resolving = self.inner.call(name);
        let policy = Arc::clone(&self.policy);
        Box::pin(async move {
            let (allowed, refused): (Vec<SocketAddr>, Vec<SocketAddr>) =
                resolving.await?.partition(|addr| policy.permits(addr.ip()));
            if allowed.is_empty() && !refused.is_empty() {
                let addresses = refused.iter().map(SocketAddr::ip).collect();
                return Err(io::Error::other(AddressNotAllowed { host, addresses }));
            }
            Ok(allowed.into_iter())
        })
    }
}

impl Cidr {
    const ANY_V4: Cidr = Cidr {
        network: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        prefix: 0,
    };
    const ANY_V6: Cidr = Cidr {
        network: IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        prefix: 0,
    };
    const LINK_LOCAL_V4: Cidr = Cidr {
        network: IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 0, 0)),
        prefix: 16,
    };
    const LINK_LOCAL_V6: Cidr = Cidr {
        network: IpAddr::V6(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0)),
        prefix: 10,
    };

    /// Whether `ip` lies in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_matches(&net.octets(), &ip.octets(), self.prefix)
            }
            _ => false,
        }
    }
}

fn prefix_matches(net: &[u8], ip: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if net[..full] != ip[..full] {
        return false;
    }
    rest == 0 || {
        let mask = 0xffu8 << (8 - rest);
        net[full] & mask == ip[full] & mask
    }
}

impl FromStr for Cidr {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr.parse().map_err(|_| ())?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.parse::<u8>().map_err(|_| ())?,
            None => max,
        };
        if prefix > max {
            return Err(());
        }
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(text: &str) -> Cidr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        let link_local = cidr("169.254.0.0/16");
        assert!(link_local.contains("169.254.169.254".parse().unwrap()));
        assert!(!link_local.contains("169.255.0.1".parse().unwrap()));
        assert!(link_local.contains("::ffff:169.254.1.1".parse().unwrap()));
        assert!(cidr("fe80::/10").contains("fe80::1".parse().unwrap()));
        assert!(!cidr("fe80::/10").contains("fec0::1".parse().unwrap()));
        assert!(cidr("10.1.2.3").contains("10.1.2.3".parse().unwrap()));
        assert!(cidr("10.0.0.0/13").contains("10.7.255.255".parse().unwrap()));
        assert!(!cidr("10.0.0.0/13").contains("10.8.0.0".parse().unwrap()));
    }

    #[test]
    fn the_default_policy_keeps_out_link_local_only() {
        let policy = AddressPolicy::default();
        for ok in [
            "10.0.0.5",
            "127.0.0.1",
            "8.8.8.8",
            "::1",
            "fd00::1",
            "64:ff9b::a00:5",
        ] {
            assert!(policy.permits(ok.parse().unwrap()), "{ok}");
        }
        let embedding = [
            "::169.254.169.254",
            "::a9fe:a9fe",
            "64:ff9b::169.254.169.254",
        ];
        for bad in ["169.254.169.254", "fe80::1", "::ffff:169.254.169.254"]
            .into_iter()
            .chain(embedding)
        {
            assert!(!policy.permits(bad.parse().unwrap()), "{bad}");
        }
        let private = AddressPolicy::allowing(vec![cidr("10.0.0.0/8")]);
        assert!(private.permits("10.1.1.1".parse().unwrap()));
        assert!(!private.permits("192.168.1.1".parse().unwrap()));
    }

    #[test]
    fn networks_print_as_written() {
        assert_eq!(cidr("169.254.0.0/16").to_string(), "169.254.0.0/16");
        assert_eq!(cidr("fe80::/10").to_string(), "fe80::/10");
        assert_eq!(cidr("10.1.2.3").to_string(), "10.1.2.3/32");
    }

    #[test]
    fn malformed_networks_are_refused() {
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/-1",
            "",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
