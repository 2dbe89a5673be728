//! The values a setting can take, each with the `FromStr` that flags and the config file share:
//! remotes, static entries, allowed sources, port ranges, the outer TTL and flow label, VNIs,
//! protocols and the metrics address.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use serde::Deserialize;

use crate::packet::dsfield::Tos;
use crate::packet::flow::PortRange;
use crate::packet::pmtu::{Df, MssClamp};
use crate::wire::cidr::Cidr;
use crate::wire::mac::MacAddr;
use crate::wire::{Proto, MAX_VNI};

/// A source allowed to send to the tunnel: a network (a bare IP is a host), or anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowFrom {
    Any,
    Net(Cidr),
}

impl FromStr for AllowFrom {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("any") {
            return Ok(AllowFrom::Any);
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(AllowFrom::Net(Cidr::host(ip)));
        }
        s.parse()
            .map(AllowFrom::Net)
            .map_err(|_| format!("invalid --allow-from {s:?}: expected a CIDR, an IP or \"any\""))
    }
}

/// A remote VTEP: `IP`, `IP:PORT` or `[IPv6]:PORT`. Without a port, the network's port is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl Endpoint {
    pub fn with_default_port(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip, self.port.unwrap_or(port))
    }
}

impl FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Endpoint { ip, port: None });
        }
        match s.parse::<SocketAddr>() {
            Ok(sa) if sa.port() != 0 => Ok(Endpoint { ip: sa.ip(), port: Some(sa.port()) }),
            _ => Err(format!("invalid remote {s:?}: expected IP, IP:PORT or [IPv6]:PORT")),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}", SocketAddr::new(self.ip, p)),
            None => write!(f, "{}", self.ip),
        }
    }
}

/// A static FDB entry `MAC=IP[:PORT]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticEntry {
    pub mac: MacAddr,
    pub dst: Endpoint,
}

impl FromStr for StaticEntry {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (m, d) = s.split_once('=').ok_or_else(|| {
            format!("invalid static entry {s:?}: expected MAC=IP, like 02:00:00:00:00:02=198.18.0.2")
        })?;
        let mac: MacAddr = m.parse().map_err(|e| format!("{e}"))?;
        if !mac.is_learnable() {
            return Err(format!("invalid static entry {s:?}: {mac} is not a unicast MAC"));
        }
        Ok(StaticEntry { mac, dst: d.parse()? })
    }
}

/// A source-port range `MIN-MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRangeArg(pub PortRange);

impl FromStr for PortRangeArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || format!("invalid port range {s:?}: expected MIN-MAX with 1 <= MIN <= MAX <= 65535");
        let (a, b) = s.split_once('-').ok_or_else(err)?;
        let (a, b) = (a.trim().parse().map_err(|_| err())?, b.trim().parse().map_err(|_| err())?);
        PortRange::new(a, b).map(PortRangeArg).ok_or_else(err)
    }
}

/// `--ttl`: the outer TTL (IPv4) or hop limit (IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ttl {
    /// The route's default for unicast, 1 for a multicast group (the kernel's behaviour).
    #[default]
    Auto,
    Hops(u8),
}

impl FromStr for Ttl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Ttl::Auto);
        }
        match s.parse::<u8>() {
            Ok(n) if n > 0 => Ok(Ttl::Hops(n)),
            _ => Err(format!("invalid ttl {s:?}: expected 1..=255 or auto")),
        }
    }
}

/// `--flowlabel`: the outer IPv6 flow label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlowLabel {
    /// A hash of the flow, per outer source port (so per inner flow): the kernel's automatic
    /// flow labels.
    #[default]
    Inherit,
    /// This label on every datagram (0: none).
    Fixed(u32),
}

impl FromStr for FlowLabel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("inherit") {
            return Ok(FlowLabel::Inherit);
        }
        let v = match s.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => s.parse::<u32>().ok(),
        };
        v.filter(|v| *v <= 0xfffff)
            .map(FlowLabel::Fixed)
            .ok_or_else(|| format!("invalid flowlabel {s:?}: expected 0..=1048575 (20 bits) or inherit"))
    }
}

/// `mss_clamp` in a config file: `true`, `"auto"` or a path MTU in bytes.
pub(super) fn deserialize_mss_clamp<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<MssClamp>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Flag(bool),
        Mtu(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Flag(false) => Ok(None),
        Raw::Flag(true) => Ok(Some(MssClamp::Auto)),
        Raw::Mtu(m) => m.to_string().parse().map(Some).map_err(serde::de::Error::custom),
        Raw::Text(t) => t.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// Lets the TOML loader reuse each type's `FromStr`, so file and flags accept the same syntax.
macro_rules! deserialize_from_str {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
deserialize_from_str!(Cidr, Endpoint, StaticEntry, PortRangeArg, MacAddr, AllowFrom, Df, Ttl, FlowLabel, Tos);

/// Parses `--metrics`: an `ADDR:PORT` (`[v6]:PORT` for IPv6) with a real port.
pub fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    let addr = s.parse().map_err(|_| format!("invalid metrics address {s:?}: expected ADDR:PORT"))?;
    check_metrics_addr(addr).map(|()| addr)
}

pub(super) fn check_metrics_addr(addr: SocketAddr) -> Result<(), String> {
    if addr.port() == 0 {
        return Err(format!("metrics address {addr}: port 0 is not a port"));
    }
    Ok(())
}

/// Parses a VNI: 0..=16777215.
pub fn parse_vni(s: &str) -> Result<u32, String> {
    let v: u64 = s.parse().map_err(|_| format!("{s:?} is not a number"))?;
    u32::try_from(v)
        .ok()
        .filter(|v| *v <= MAX_VNI)
        .ok_or_else(|| format!("VNI {v} is over {MAX_VNI} (24 bits)"))
}

/// Parses a tunnel protocol: `vxlan` or `geneve`.
pub fn parse_proto(s: &str) -> Result<Proto, String> {
    s.parse()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_values() {
        assert_eq!("198.18.0.2".parse::<Endpoint>().unwrap().port, None);
        assert_eq!("198.18.0.2:8472".parse::<Endpoint>().unwrap().port, Some(8472));
        assert_eq!("[2001:db8::2]:6081".parse::<Endpoint>().unwrap().with_default_port(1).port(), 6081);
        assert!("198.18.0.2:0".parse::<Endpoint>().is_err());
        assert!("host.example".parse::<Endpoint>().is_err());
        let s: StaticEntry = "02:00:00:00:00:02=198.18.0.2".parse().unwrap();
        assert_eq!(s.mac.to_string(), "02:00:00:00:00:02");
        assert!("ff:ff:ff:ff:ff:ff=198.18.0.2".parse::<StaticEntry>().is_err());
        assert!("02:00:00:00:00:02".parse::<StaticEntry>().is_err());
        assert_eq!("1000-1010".parse::<PortRangeArg>().unwrap().0.max(), 1010);
        assert!("10-1".parse::<PortRangeArg>().is_err());
    }

    #[test]
    fn allow_from_parses_any_hosts_and_networks() {
        assert_eq!("ANY".parse::<AllowFrom>(), Ok(AllowFrom::Any));
        let AllowFrom::Net(host) = "198.18.0.9".parse::<AllowFrom>().unwrap() else { panic!() };
        assert!(
            host.contains("198.18.0.9".parse().unwrap()) && !host.contains("198.18.0.8".parse().unwrap())
        );
        assert!("198.18.0.0/40".parse::<AllowFrom>().is_err());
        assert!(matches!("198.18.0.0/24".parse::<AllowFrom>(), Ok(AllowFrom::Net(c)) if c.prefix == 24));
    }

    #[test]
    fn vni_and_proto() {
        assert_eq!(parse_vni("16777215"), Ok(MAX_VNI));
        assert!(parse_vni("16777216").unwrap_err().contains("24 bits"));
        assert!(parse_vni("-1").is_err() && parse_vni("x").is_err());
        assert_eq!(parse_proto("geneve"), Ok(Proto::Geneve));
        assert!(parse_proto("gre").is_err());
    }
}
