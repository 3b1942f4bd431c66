//! Who a request comes from: the client address the per-address bounds
//! count against.
//!
//! Two questions, kept apart:
//!
//! - **Which address.** The TCP peer's, unless the peer is a proxy the
//!   operator trusts (`--trusted-proxy CIDR`), in which case the proxy has
//!   said who its client was in `X-Forwarded-For`. Each proxy appends the
//!   address it was connected from, so the list reads client first, nearest
//!   proxy last, and everything left of the last trusted hop may be made up
//!   by the client. The address taken is therefore the right-most one that
//!   is not itself a trusted proxy ([`client_ip`]). A header from a peer
//!   that is not trusted is never read: anyone can send one.
//! - **Which client.** An IPv4 address (an IPv4-mapped IPv6 one included),
//!   or an IPv6 /64, since one host usually has a whole /64 to pick
//!   addresses from ([`client_of`]). The bound on connections per client and
//!   the per-address rate limit both key on it, so they agree on who one
//!   client is.

use std::net::{IpAddr, Ipv6Addr};

use axum::http::HeaderMap;
use ipnet::IpNet;

/// The header a trusted proxy names its client in.
const FORWARDED_FOR: &str = "x-forwarded-for";

/// The client a peer address stands for: an IPv4 address (an IPv4-mapped
/// IPv6 one included), or the /64 of an IPv6 address.
pub fn client_of(peer: IpAddr) -> IpAddr {
    match canonical(peer) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// `ip`, with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, what a
/// dual-stack listener reports for an IPv4 peer) as the IPv4 one.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The proxies whose `X-Forwarded-For` is believed (`--trusted-proxy`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Trusts the proxies in `nets`.
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies { nets }
    }

    /// Whether no proxy is trusted (every client is its TCP peer).
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// The trusted ranges.
    pub fn nets(&self) -> &[IpNet] {
        &self.nets
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.nets.iter().any(|net| net.contains(&ip))
    }
}

/// One `--trusted-proxy` value: a CIDR range (`10.0.0.0/8`, `fd00::/8`) or
/// a single address (`192.0.2.1`, `::1`), as a clap value parser.
///
/// # Errors
///
/// Text that is neither, with what was expected.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    match text.parse::<IpAddr>() {
        Ok(ip) => Ok(IpNet::from(canonical(ip))),
        Err(_) => Err(format!(
            "{text:?} is not an address range: expected CIDR such as 10.0.0.0/8 or fd00::/8, \
             or a single address"
        )),
    }
}

/// The address a request from `peer` comes from: `peer` itself unless it
/// is a trusted proxy; then, walking `X-Forwarded-For` from the right (all
/// its headers, in order, as one list), the first address that is not a
/// trusted proxy. If every listed address is trusted, the left-most; if an
/// entry is not an address, the hop right of it, which is the last one
/// known to be real.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, proxies: &TrustedProxies) -> IpAddr {
    let peer = canonical(peer);
    if proxies.is_empty() || !proxies.trusts(peer) {
        return peer;
    }
    let mut nearest = peer;
    for value in headers.get_all(FORWARDED_FOR).iter().rev() {
        let Ok(list) = value.to_str() else {
            return nearest;
        };
        for hop in list.rsplit(',') {
            let Some(ip) = parse_hop(hop) else {
                return nearest;
            };
            if !proxies.trusts(ip) {
                return ip;
            }
            nearest = ip;
        }
    }
    nearest
}

/// One `X-Forwarded-For` entry: an address, or an address with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`), as some proxies write it.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn proxies(list: &[&str]) -> TrustedProxies {
        TrustedProxies::new(list.iter().map(|t| parse_cidr(t).unwrap()).collect())
    }

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn an_ipv6_client_is_its_slash_64() {
        let a = ip("2001:db8:1:2:aaaa::1");
        let b = ip("2001:db8:1:2:bbbb::2");
        let other = ip("2001:db8:1:3::1");
        assert_eq!(client_of(a), client_of(b));
        assert_ne!(client_of(a), client_of(other));
        assert_eq!(client_of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_of(ip("192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn cidr_ranges_and_single_addresses() {
        assert_eq!(
            parse_cidr("10.1.2.3/8").unwrap(),
            "10.0.0.0/8".parse().unwrap()
        );
        assert_eq!(
            parse_cidr(" 127.0.0.1 ").unwrap(),
            "127.0.0.1/32".parse().unwrap()
        );
        assert_eq!(parse_cidr("::1").unwrap(), "::1/128".parse().unwrap());
        assert_eq!(parse_cidr("fd00::/8").unwrap(), "fd00::/8".parse().unwrap());
        for bad in [
            "",
            "10.0.0.0/33",
            "fd00::/129",
            "proxy.example",
            "10.0.0/8",
            "1.2.3.4/",
        ] {
            let e = parse_cidr(bad).unwrap_err();
            assert!(e.contains("CIDR"), "{bad}: {e}");
        }
        let trusted = proxies(&["10.0.0.0/8", "fd00::/8"]);
        assert!(trusted.trusts(ip("10.200.0.1")));
        assert!(trusted.trusts(ip("fd12::1")));
        assert!(!trusted.trusts(ip("11.0.0.1")));
        assert!(!trusted.trusts(ip("fe80::1")));
    }

    #[test]
    fn a_header_from_an_untrusted_peer_is_ignored() {
        let forged = forwarded(&["203.0.113.9"]);
        let peer = ip("198.51.100.1");
        assert_eq!(client_ip(peer, &forged, &TrustedProxies::default()), peer);
        assert_eq!(client_ip(peer, &forged, &proxies(&["10.0.0.0/8"])), peer);
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client() {
        let trusted = proxies(&["10.0.0.0/8", "127.0.0.1"]);
        let peer = ip("127.0.0.1");
        // The client forged the first entry; the proxies appended the rest.
        let headers = forwarded(&["6.6.6.6, 203.0.113.9, 10.0.0.2", "10.0.0.1"]);
        assert_eq!(client_ip(peer, &headers, &trusted), ip("203.0.113.9"));
        // A mapped peer is the IPv4 one, and is trusted as such.
        let mapped = ip("::ffff:127.0.0.1");
        assert_eq!(client_ip(mapped, &headers, &trusted), ip("203.0.113.9"));
        // Ports and IPv6 entries.
        let headers = forwarded(&["[2001:db8::7]:4711, 10.0.0.3:80"]);
        assert_eq!(client_ip(peer, &headers, &trusted), ip("2001:db8::7"));
        // No header: the proxy itself.
        assert_eq!(client_ip(peer, &HeaderMap::new(), &trusted), peer);
        // Every hop trusted: the left-most.
        let headers = forwarded(&["10.0.0.9, 10.0.0.8"]);
        assert_eq!(client_ip(peer, &headers, &trusted), ip("10.0.0.9"));
        // Garbage stops the walk at the last real hop.
        let headers = forwarded(&["203.0.113.9, not-an-address, 10.0.0.5"]);
        assert_eq!(client_ip(peer, &headers, &trusted), ip("10.0.0.5"));
        let headers = forwarded(&["203.0.113.9,,"]);
        assert_eq!(client_ip(peer, &headers, &trusted), peer);
    }
}
