//! The SSRF guard. Targets must be HTTPS unless `[security] allow_http`, and every address the
//! client connects to must be public unless `[security] allow_private_networks`. The check runs
//! on the resolved addresses, at connect time (a resolver that filters what DNS returned, and a
//! connector that checks IP-literal hosts), so DNS rebinding does not get around it.
//! IPv4-mapped, IPv4-compatible, NAT64 and 6to4 IPv6 addresses are judged by the IPv4 address
//! inside them. Cloud metadata, unspecified, multicast and reserved addresses are always blocked.
//!
//! A host is an address literal when the WHATWG URL parser (what browsers do) or `inet_aton`
//! (what the system resolver does) would read it as one: besides `127.0.0.1`, the decimal
//! `2130706433`, hex `0x7f000001`, octal `0177.0.0.1` and short forms `127.1`. Those are judged
//! here, before any connection, the same for `http` and `https` (for `https` the TLS library
//! refuses such a host as a server name, which would otherwise hide the verdict behind a TLS
//! error).

use futures_util::future::BoxFuture;
use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use ipnet::{Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::task::{Context, Poll};

/// What `[security]` allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Policy {
    /// Plain `http://` targets.
    pub allow_http: bool,
    /// Loopback, RFC 1918, link-local, CGNAT and ULA targets.
    pub allow_private_networks: bool,
}

/// A target refused by the policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Blocked {
    /// `http://` without `allow_http`.
    #[error("plain http:// targets are blocked (set [security] allow_http = true in hookrelay.toml to allow them)")]
    Http,
    /// Not http or https.
    #[error("unsupported URL scheme {0:?} (use https://)")]
    Scheme(String),
    /// A private address without `allow_private_networks`.
    #[error(
        "requests to {0} are blocked: it is a private, loopback or link-local address (see [security] allow_private_networks)"
    )]
    Private(IpAddr),
    /// Never allowed.
    #[error("requests to {0} are always blocked (cloud metadata, unspecified, multicast or reserved address)")]
    Forbidden(IpAddr),
    /// DNS gave only blocked addresses.
    #[error("{host} resolves only to blocked addresses ({first})")]
    Resolved {
        /// The name looked up.
        host: String,
        /// Why the first address was refused.
        first: Box<Blocked>,
    },
}

const METADATA: [IpAddr; 5] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V4(Ipv4Addr::new(192, 0, 0, 192)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];

fn v4net(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(a, b, c, d), len).expect("valid prefix")
}

/// The IPv4 address inside a mapped, compatible, NAT64 or 6to4 IPv6 address.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let nat64: Ipv6Net = "64:ff9b::/96".parse().expect("valid");
    if nat64.contains(&ip) || (s[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified()) {
        return Some(Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8));
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    None
}

impl Policy {
    /// Judges one address.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), Blocked> {
        if METADATA.contains(&ip) {
            return Err(Blocked::Forbidden(ip));
        }
        match ip {
            IpAddr::V6(v6) => {
                if let Some(v4) = embedded_v4(v6) {
                    return self.check_ip(IpAddr::V4(v4));
                }
                if v6.is_unspecified() || v6.is_multicast() {
                    return Err(Blocked::Forbidden(ip));
                }
                let private = v6.is_loopback()
                    || v6.is_unicast_link_local()
                    || v6.is_unique_local()
                    || "fec0::/10".parse::<Ipv6Net>().expect("valid").contains(&v6);
                self.private(ip, private)
            }
            IpAddr::V4(v4) => {
                let forbidden = v4.is_unspecified()
                    || v4.is_broadcast()
                    || v4.is_multicast()
                    || v4net(0, 0, 0, 0, 8).contains(&v4)
                    || v4net(240, 0, 0, 0, 4).contains(&v4);
                if forbidden {
                    return Err(Blocked::Forbidden(ip));
                }
                let private = v4.is_loopback()
                    || v4.is_private()
                    || v4.is_link_local()
                    || v4net(100, 64, 0, 0, 10).contains(&v4)
                    || v4net(192, 0, 0, 0, 24).contains(&v4)
                    || v4net(198, 18, 0, 0, 15).contains(&v4);
                self.private(ip, private)
            }
        }
    }

    fn private(&self, ip: IpAddr, private: bool) -> Result<(), Blocked> {
        if private && !self.allow_private_networks { Err(Blocked::Private(ip)) } else { Ok(()) }
    }

    /// Judges a URL's scheme and, for an IP-literal host, its address. Host names are judged
    /// when they are resolved, at connect time.
    pub fn check_url(&self, url: &Uri) -> Result<(), Blocked> {
        match url.scheme_str() {
            Some("https") => {}
            Some("http") if self.allow_http => {}
            Some("http") => return Err(Blocked::Http),
            other => return Err(Blocked::Scheme(other.unwrap_or("").to_string())),
        }
        match literal_ip(url) {
            Some(ip) => self.check_ip(ip),
            None => Ok(()),
        }
    }
}

fn literal_ip(url: &Uri) -> Option<IpAddr> {
    let host = url.host()?;
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse().ok();
    }
    numeric_ipv4(host).map(IpAddr::V4)
}

/// `url` with a host written as numbers (`2130706433`, `0x7f.1`) rewritten as the dotted
/// address it names (`127.0.0.1`), as a browser's URL parser does: TLS then checks the
/// receiver's certificate for that address, instead of refusing the host as a server name.
pub fn canonical(url: Uri) -> Uri {
    let Some(host) = url.host() else { return url };
    let Some(v4) = numeric_ipv4(host).map(|a| a.to_string()).filter(|a| a != host) else { return url };
    let Some(auth) = url.authority().map(|a| a.as_str()) else { return url };
    let (userinfo, hostport) = match auth.rfind('@') {
        Some(i) => auth.split_at(i + 1),
        None => ("", auth),
    };
    let port = hostport.get(host.len()..).unwrap_or("");
    let mut parts = url.clone().into_parts();
    parts.authority = format!("{userinfo}{v4}{port}").parse().ok();
    Uri::from_parts(parts).unwrap_or(url)
}

/// The IPv4 address a host names when it is written as numbers, read as the WHATWG URL
/// standard's IPv4 parser and `inet_aton` read it: one to four dot-separated parts (one trailing
/// dot allowed), each decimal, hex (`0x`) or octal (leading `0`), the last part filling the
/// remaining bytes (`127.1` is `127.0.0.1`, `2130706433` is `127.0.0.1`). Percent-encoded
/// hosts are decoded first. `None` for a name, or for numbers that do not make an address.
pub fn numeric_ipv4(host: &str) -> Option<Ipv4Addr> {
    let decoded;
    let host = if host.contains('%') {
        decoded = percent_decode(host)?;
        decoded.as_str()
    } else {
        host
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    // Without allocating: every request's URL is checked (`client.rs`), names included.
    let mut parsed = [0u64; 4];
    let mut count = 0;
    for part in host.split('.') {
        *parsed.get_mut(count)? = parse_part(part)?;
        count += 1;
    }
    let numbers = &parsed[..count];
    let (last, init) = numbers.split_last()?;
    if init.iter().any(|n| *n > 255) || *last >= 1u64 << (8 * (5 - numbers.len())) {
        return None;
    }
    let mut addr = *last;
    for (i, n) in init.iter().enumerate() {
        addr += n << (8 * (3 - i));
    }
    Some(Ipv4Addr::from(u32::try_from(addr).ok()?))
}

fn parse_part(p: &str) -> Option<u64> {
    let (digits, radix) = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        (h, 16)
    } else if p.len() > 1 && p.starts_with('0') {
        (&p[1..], 8)
    } else {
        (p, 10)
    };
    if digits.is_empty() {
        // `0x` alone is zero for WHATWG; an empty part (`1..2`) is not a number.
        return (radix == 16).then_some(0);
    }
    if digits.len() > 32 || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A resolver error: DNS failed, or it gave only blocked addresses.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The lookup failed.
    #[error("DNS lookup failed: {0}")]
    Io(#[from] std::io::Error),
    /// Every address was refused by the policy.
    #[error(transparent)]
    Blocked(#[from] Blocked),
}

/// Resolves names with the system resolver and drops every address the policy refuses.
#[derive(Debug, Clone, Copy)]
pub struct GuardedResolver(pub Policy);

impl tower_service::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = ResolveError;
    type Future = BoxFuture<'static, Result<Self::Response, ResolveError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), ResolveError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let policy = self.0;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut first = None;
            let allowed: Vec<SocketAddr> = addrs
                .into_iter()
                .filter(|a| match policy.check_ip(a.ip()) {
                    Ok(()) => true,
                    Err(e) => {
                        first.get_or_insert(e);
                        false
                    }
                })
                .collect();
            match (allowed.is_empty(), first) {
                (true, Some(first)) => Err(Blocked::Resolved { host, first: Box::new(first) }.into()),
                _ => Ok(allowed.into_iter()),
            }
        })
    }
}

/// The TCP connector: IP-literal hosts are checked here (they never reach the resolver), names
/// through [`GuardedResolver`].
#[derive(Debug, Clone)]
pub struct GuardedConnector {
    inner: HttpConnector<GuardedResolver>,
    policy: Policy,
}

impl GuardedConnector {
    /// A connector for `policy`, with `connect_timeout` on each TCP connect.
    pub fn new(policy: Policy, connect_timeout: std::time::Duration) -> Self {
        let mut inner = HttpConnector::new_with_resolver(GuardedResolver(policy));
        inner.enforce_http(false);
        inner.set_nodelay(true);
        inner.set_connect_timeout(Some(connect_timeout));
        inner.set_keepalive(Some(std::time::Duration::from_secs(60)));
        Self { inner, policy }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = <HttpConnector<GuardedResolver> as tower_service::Service<Uri>>::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        if let Some(ip) = literal_ip(&uri)
            && let Err(e) = self.policy.check_ip(ip)
        {
            return Box::pin(async move { Err(Box::new(e) as BoxError) });
        }
        let fut = self.inner.call(uri);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

/// Finds a policy refusal in an error's source chain.
pub fn find_blocked(err: &(dyn std::error::Error + 'static)) -> Option<Blocked> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(b) = e.downcast_ref::<Blocked>() {
            return Some(b.clone());
        }
        if let Some(ResolveError::Blocked(b)) = e.downcast_ref::<ResolveError>() {
            return Some(b.clone());
        }
        cur = e.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: Policy = Policy { allow_http: false, allow_private_networks: false };
    const OPEN: Policy = Policy { allow_http: true, allow_private_networks: true };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_addresses_are_blocked_unless_allowed() {
        for a in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.1.1",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd12::1",
        ] {
            assert!(matches!(STRICT.check_ip(ip(a)), Err(Blocked::Private(_))), "{a}");
            assert_eq!(OPEN.check_ip(ip(a)), Ok(()), "{a}");
        }
        assert_eq!(STRICT.check_ip(ip("93.184.216.34")), Ok(()));
        assert_eq!(STRICT.check_ip(ip("2606:2800:220:1::1")), Ok(()));
    }

    #[test]
    fn metadata_and_unspecified_are_always_blocked() {
        for a in ["169.254.169.254", "fd00:ec2::254", "0.0.0.0", "::", "224.0.0.1", "255.255.255.255"] {
            assert!(matches!(OPEN.check_ip(ip(a)), Err(Blocked::Forbidden(_))), "{a}");
        }
    }

    #[test]
    fn ipv6_wrappers_are_judged_by_their_ipv4() {
        for a in ["::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:c0a8:101::1", "::ffff:169.254.169.254"]
        {
            assert!(STRICT.check_ip(ip(a)).is_err(), "{a}");
        }
        assert!(matches!(OPEN.check_ip(ip("::ffff:169.254.169.254")), Err(Blocked::Forbidden(_))));
        assert_eq!(STRICT.check_ip(ip("::ffff:93.184.216.34")), Ok(()));
    }

    #[test]
    fn urls_need_https_and_public_literals() {
        let u = |s: &str| s.parse::<Uri>().unwrap();
        assert_eq!(STRICT.check_url(&u("https://example.com/h")), Ok(()));
        assert_eq!(STRICT.check_url(&u("http://example.com/h")), Err(Blocked::Http));
        assert!(matches!(STRICT.check_url(&u("https://127.0.0.1/h")), Err(Blocked::Private(_))));
        assert!(matches!(STRICT.check_url(&u("https://[::1]:8443/h")), Err(Blocked::Private(_))));
        assert!(matches!(STRICT.check_url(&u("ftp://x/")), Err(Blocked::Scheme(_))));
        assert_eq!(OPEN.check_url(&u("http://127.0.0.1:9/h")), Ok(()));
    }

    /// Regression (issue 13): numeric spellings of an address failed in TLS before the guard
    /// ran on `https://`, so the verdict was a retried TLS error instead of `blocked`.
    #[test]
    fn numeric_spellings_of_addresses_are_judged_as_addresses() {
        let u = |s: &str| s.parse::<Uri>().unwrap();
        for host in [
            "2130706433",
            "0x7f000001",
            "0X7F000001",
            "0177.0.0.1",
            "0177.0.0.01",
            "127.1",
            "127.0.1",
            "0x7f.1",
            "127.0.0.1.",
            "017700000001",
        ] {
            assert_eq!(numeric_ipv4(host), Some(Ipv4Addr::LOCALHOST), "{host}");
            for scheme in ["http", "https"] {
                let url = u(&format!("{scheme}://{host}/hook"));
                let verdict = Policy { allow_http: true, ..STRICT }.check_url(&url);
                assert_eq!(verdict, Err(Blocked::Private(ip("127.0.0.1"))), "{url}");
            }
        }
        // Percent-encoded digits, as a URL parser that accepts them decodes them.
        assert_eq!(numeric_ipv4("%31%32%37.0.0.1"), Some(Ipv4Addr::LOCALHOST));
        assert_eq!(numeric_ipv4("0xa9fea9fe"), Some(Ipv4Addr::new(169, 254, 169, 254)));
        assert!(matches!(OPEN.check_url(&u("https://2852039166/")), Err(Blocked::Forbidden(_))), "metadata");
        assert_eq!(numeric_ipv4("0"), Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(numeric_ipv4("1.2.3.4"), Some(Ipv4Addr::new(1, 2, 3, 4)));
        assert_eq!(numeric_ipv4("4294967295"), Some(Ipv4Addr::BROADCAST));
        for name in
            ["example.com", "1.2.3.4.5", "4294967296", "256.1.1.1", "1.256.1.1", "08.0.0.1", "1..2", "0x1g", "a.1", ""]
        {
            assert_eq!(numeric_ipv4(name), None, "{name}");
        }
        assert_eq!(canonical(u("https://0x7f.1:8443/h?q=1")).to_string(), "https://127.0.0.1:8443/h?q=1");
        assert_eq!(canonical(u("http://u:p@2130706433/")).to_string(), "http://u:p@127.0.0.1/");
        assert_eq!(canonical(u("https://example.com/")).to_string(), "https://example.com/");
        assert_eq!(STRICT.check_url(&u("https://93.184.216.34/")), Ok(()));
        assert_eq!(STRICT.check_url(&u("https://1571322146/")), Ok(()), "93.168.…: public, decimal");
    }

    #[tokio::test]
    async fn resolver_refuses_names_of_private_addresses() {
        use tower_service::Service;
        let mut r = GuardedResolver(STRICT);
        let err = r.call("localhost".parse().unwrap()).await.unwrap_err();
        assert!(matches!(err, ResolveError::Blocked(Blocked::Resolved { .. })), "{err}");
        let mut open = GuardedResolver(OPEN);
        assert!(open.call("localhost".parse().unwrap()).await.unwrap().next().is_some());
    }
}
