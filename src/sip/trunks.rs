//! Which trunk a request comes from, by its source address (T2): a PBX or carrier is
//! recognised by an `allowed_ips` entry (an address or a network) or by the source its
//! current registration came from. Pure: the caller loads the trunks.

use std::net::IpAddr;

use crate::crm::model::{TrunkId, TrunkKind};

/// An address or a network such as `192.0.2.0/24` or `2001:db8::/48`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNetwork {
    base: IpAddr,
    prefix: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an IP address or network like 192.0.2.0/24")]
pub struct InvalidNetwork(pub String);

impl IpNetwork {
    pub fn parse(text: &str) -> Result<Self, InvalidNetwork> {
        let invalid = || InvalidNetwork(text.to_owned());
        let (addr, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let base: IpAddr = addr.parse().map_err(|_| invalid())?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(invalid)?,
            None => max,
        };
        Ok(Self { base, prefix })
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        // An IPv4 peer reaching a dual-stack socket shows up as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.base, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u128::from(u32::from(net)), 32, self.prefix)
                    == masked(u128::from(u32::from(ip)), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), 128, self.prefix)
                    == masked(u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn masked(value: u128, bits: u8, prefix: u8) -> u128 {
    let host_bits = u32::from(bits - prefix);
    if host_bits >= 128 {
        0
    } else {
        value >> host_bits
    }
}

/// What recognition needs to know of one trunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkAccess {
    pub id: TrunkId,
    pub kind: TrunkKind,
    pub allowed: Vec<IpNetwork>,
    /// Sources of the trunk's unexpired registrations with us.
    pub registered_from: Vec<IpAddr>,
}

/// The trunk a request from `source` belongs to. A registration's exact source beats any
/// network; among networks the longest prefix wins, so a PBX given a single address
/// inside a carrier's /24 is still told apart.
pub fn recognise(source: IpAddr, trunks: &[TrunkAccess]) -> Option<&TrunkAccess> {
    let registered = trunks
        .iter()
        .find(|t| t.registered_from.iter().any(|ip| same_ip(*ip, source)));
    if registered.is_some() {
        return registered;
    }
    trunks
        .iter()
        .filter_map(|t| {
            t.allowed
                .iter()
                .filter(|n| n.contains(source))
                .map(IpNetwork::prefix)
                .max()
                .map(|prefix| (prefix, t))
        })
        .max_by_key(|(prefix, _)| *prefix)
        .map(|(_, t)| t)
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let unmap = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    unmap(a) == unmap(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trunk(id: &str, kind: TrunkKind, allowed: &[&str], registered: &[&str]) -> TrunkAccess {
        TrunkAccess {
            id: TrunkId(id.to_owned()),
            kind,
            allowed: allowed
                .iter()
                .map(|a| IpNetwork::parse(a).unwrap())
                .collect(),
            registered_from: registered.iter().map(|a| a.parse().unwrap()).collect(),
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn networks_parse_and_contain() {
        let net = IpNetwork::parse("192.0.2.0/24").unwrap();
        assert!(net.contains(ip("192.0.2.77")));
        assert!(!net.contains(ip("192.0.3.1")));
        assert!(
            net.contains(ip("::ffff:192.0.2.9")),
            "v4-mapped peers match"
        );
        let host = IpNetwork::parse("198.51.100.7").unwrap();
        assert_eq!(host.prefix(), 32);
        assert!(host.contains(ip("198.51.100.7")));
        assert!(!host.contains(ip("198.51.100.8")));
        let v6 = IpNetwork::parse("2001:db8::/32").unwrap();
        assert!(v6.contains(ip("2001:db8:1::5")));
        assert!(!v6.contains(ip("192.0.2.1")));
        assert!(
            IpNetwork::parse("0.0.0.0/0")
                .unwrap()
                .contains(ip("203.0.113.1"))
        );
        for bad in [
            "",
            "192.0.2.0/33",
            "2001:db8::/129",
            "example.com",
            "10.0.0.1/x",
        ] {
            assert!(IpNetwork::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn t2_a_trunk_is_recognised_by_its_allowed_ips() {
        let trunks = [
            trunk("carrier", TrunkKind::Carrier, &["192.0.2.0/24"], &[]),
            trunk("pbx", TrunkKind::Pbx, &["198.51.100.7"], &[]),
        ];
        assert_eq!(
            recognise(ip("192.0.2.10"), &trunks).unwrap().id.0,
            "carrier"
        );
        assert_eq!(recognise(ip("198.51.100.7"), &trunks).unwrap().id.0, "pbx");
        assert!(recognise(ip("203.0.113.5"), &trunks).is_none());
    }

    #[test]
    fn t2_the_longest_prefix_wins_and_a_registration_beats_networks() {
        let trunks = [
            trunk("carrier", TrunkKind::Carrier, &["192.0.2.0/24"], &[]),
            trunk("pbx", TrunkKind::Pbx, &["192.0.2.50/32"], &[]),
            trunk("registered", TrunkKind::Pbx, &[], &["192.0.2.60"]),
        ];
        assert_eq!(recognise(ip("192.0.2.50"), &trunks).unwrap().id.0, "pbx");
        assert_eq!(
            recognise(ip("192.0.2.51"), &trunks).unwrap().id.0,
            "carrier"
        );
        assert_eq!(
            recognise(ip("192.0.2.60"), &trunks).unwrap().id.0,
            "registered"
        );
    }
}
