//! `allow_from`: the networks API callers may come from, for `[api]` and for each
//! `[[api.keys]]` entry. Parsed (and refused, with the entry's place in the file) at config
//! load; checked per request by `crate::api::access` and `crate::api::auth`.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;

/// One network of an `allow_from` list: `10.0.0.0/8`, `fd00::/8`, or a single address
/// (`192.0.2.7`, the same as `/32`). A network with host bits set (`10.1.2.3/8`) is refused: it
/// is more often a mistyped single address than a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(ipnet::IpNet);

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let net = match s.parse::<ipnet::IpNet>() {
            Ok(net) => net,
            Err(_) => match s.parse::<IpAddr>() {
                Ok(ip) => ipnet::IpNet::from(ip),
                Err(_) => {
                    return Err(format!(
                        "{s:?} is not a network: write an address with a prefix length (\"10.0.0.0/8\", \
                         \"fd00::/8\") or a single address (\"192.0.2.7\")"
                    ));
                }
            },
        };
        if net.network() != net.addr() {
            return Err(format!(
                "{s:?} has bits set past its /{} prefix: write the network {:?}, or {:?} for that single address",
                net.prefix_len(),
                net.trunc().to_string(),
                ipnet::IpNet::from(net.addr()).to_string(),
            ));
        }
        Ok(Self(net))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `allow_from`: the networks callers may come from. Absent: everyone who can reach the listen
/// address. Never empty (an empty list would refuse every caller; leave the key out instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowFrom(Vec<Cidr>);

impl AllowFrom {
    /// Whether `ip` is inside one of the networks (an IPv4 caller on a dual-stack socket, seen
    /// as `::ffff:a.b.c.d`, is compared as the IPv4 address it is).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|c| c.0.contains(&ip))
    }

    /// The networks, as written.
    pub fn networks(&self) -> Vec<String> {
        self.0.iter().map(Cidr::to_string).collect()
    }
}

impl std::str::FromStr for AllowFrom {
    type Err = String;

    /// A comma-separated list (what a test or a command line would write).
    fn from_str(s: &str) -> Result<Self, String> {
        Self::new(s.split(',').map(|n| n.trim().parse()).collect::<Result<_, _>>()?)
    }
}

impl AllowFrom {
    fn new(networks: Vec<Cidr>) -> Result<Self, String> {
        if networks.is_empty() {
            return Err("allow_from = [] would refuse every caller: list networks, or leave allow_from out to \
                        allow everyone who can reach the listen address"
                .into());
        }
        Ok(Self(networks))
    }
}

impl<'de> Deserialize<'de> for AllowFrom {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// One entry, so that a bad one is reported at its own place in the file.
        struct Entry(Cidr);
        impl<'de> Deserialize<'de> for Entry {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map(Entry).map_err(serde::de::Error::custom)
            }
        }
        let entries = Vec::<Entry>::deserialize(d)?;
        Self::new(entries.into_iter().map(|e| e.0).collect()).map_err(serde::de::Error::custom)
    }
}

impl Serialize for AllowFrom {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(Cidr::to_string))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_parse_and_refuse_what_is_likely_a_typo() {
        let a: AllowFrom = "10.0.0.0/8, 192.0.2.7, fd00::/8".parse().unwrap();
        assert_eq!(a.networks(), ["10.0.0.0/8", "192.0.2.7/32", "fd00::/8"]);
        assert!(a.allows("10.200.1.1".parse().unwrap()));
        assert!(a.allows("::ffff:10.1.1.1".parse().unwrap()), "IPv4-mapped callers are their IPv4 address");
        assert!(a.allows("192.0.2.7".parse().unwrap()));
        assert!(!a.allows("192.0.2.8".parse().unwrap()));
        assert!(!a.allows("127.0.0.1".parse().unwrap()));
        let typo = "10.1.2.3/8".parse::<Cidr>().unwrap_err();
        assert!(typo.contains("\"10.0.0.0/8\"") && typo.contains("\"10.1.2.3/32\""), "{typo}");
        assert!("10.0.0/8".parse::<Cidr>().unwrap_err().contains("not a network"));
        assert!("".parse::<AllowFrom>().is_err());
    }
}
