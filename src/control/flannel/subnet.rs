//! IPv4 subnets as flannel hands them out, and the lease keys that name them.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 network: an address with its host bits clear and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub len: u8,
}

impl Subnet {
    /// `addr/len`, refused when `len` is over 32 or `addr` has host bits set.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Subnet, String> {
        if len > 32 {
            return Err(format!("prefix length {len} is over 32"));
        }
        let s = Subnet { addr, len };
        if u32::from(addr) & !s.mask() != 0 {
            return Err(format!("{addr}/{len} has host bits set"));
        }
        Ok(s)
    }

    fn mask(&self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len))
        }
    }

    /// How many addresses it holds.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.len))
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }

    /// Whether `other` lies wholly inside this one.
    pub fn covers(&self, other: &Subnet) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }

    /// Its `n`th address (`.0` is 0, `.1` is 1).
    pub fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr).wrapping_add(n))
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Subnet {
    type Err = String;

    /// `A.B.C.D/NN`, host bits clear.
    fn from_str(s: &str) -> Result<Subnet, String> {
        let (a, l) = s.split_once('/').ok_or_else(|| format!("{s:?} is not A.B.C.D/NN"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| format!("{s:?}: {a:?} is not an IPv4 address"))?;
        let len: u8 = l.parse().map_err(|_| format!("{s:?}: {l:?} is not a prefix length"))?;
        Subnet::new(addr, len)
    }
}

/// The IPv6 half of a dual-stack lease key (parsed, not used: vxtap's flannel mode is IPv4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Subnet6 {
    pub addr: Ipv6Addr,
    pub len: u8,
}

/// The name of a lease, the last part of its key: `198.19.1.0-24`, or in a dual-stack network
/// `198.19.1.0-24&fc00:0:0:1::-64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubnetKey {
    pub v4: Subnet,
    pub v6: Option<Subnet6>,
}

impl SubnetKey {
    pub fn v4(v4: Subnet) -> SubnetKey {
        SubnetKey { v4, v6: None }
    }
}

impl fmt::Display for SubnetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.v4.addr, self.v4.len)?;
        if let Some(v6) = self.v6 {
            write!(f, "&{}-{}", v6.addr, v6.len)?;
        }
        Ok(())
    }
}

impl FromStr for SubnetKey {
    type Err = String;

    fn from_str(s: &str) -> Result<SubnetKey, String> {
        let (v4, v6) = match s.split_once('&') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let (a, l) = v4.rsplit_once('-').ok_or_else(|| format!("{s:?} is not a subnet key (A.B.C.D-NN)"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| format!("{s:?}: {a:?} is not an IPv4 address"))?;
        let len: u8 = digits(l).ok_or_else(|| format!("{s:?}: {l:?} is not a prefix length"))?;
        let v4 = Subnet::new(addr, len).map_err(|e| format!("{s:?}: {e}"))?;
        let v6 = match v6 {
            None => None,
            Some(b) => {
                let (a, l) = b.rsplit_once('-').ok_or_else(|| format!("{s:?}: {b:?} is not ADDR-NN"))?;
                let addr: Ipv6Addr = a.parse().map_err(|_| format!("{s:?}: {a:?} is not an IPv6 address"))?;
                let len = digits(l).filter(|l| *l <= 128);
                let len = len.ok_or_else(|| format!("{s:?}: {l:?} is not an IPv6 prefix length"))?;
                Some(Subnet6 { addr, len })
            }
        };
        Ok(SubnetKey { v4, v6 })
    }
}

/// A number of one to three decimal digits (no sign, no spaces, as flannel's key pattern).
fn digits(s: &str) -> Option<u8> {
    (!s.is_empty() && s.len() <= 3 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let n: Subnet = "198.19.0.0/16".parse().unwrap();
        assert_eq!(n.size(), 65536);
        assert!(n.contains(Ipv4Addr::new(198, 19, 200, 1)));
        assert!(!n.contains(Ipv4Addr::new(198, 18, 0, 1)));
        let s: Subnet = "198.19.7.0/24".parse().unwrap();
        assert!(n.covers(&s) && !s.covers(&n));
        assert_eq!((s.host(0), s.host(1)), (Ipv4Addr::new(198, 19, 7, 0), Ipv4Addr::new(198, 19, 7, 1)));
        assert_eq!(s.to_string(), "198.19.7.0/24");
        for bad in ["198.19.7.1/24", "198.19.7.0/33", "198.19.7.0", "x/24", "198.19.7.0/x"] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
        assert_eq!("0.0.0.0/0".parse::<Subnet>().unwrap().size(), 1 << 32);
    }

    #[test]
    fn keys_round_trip() {
        let k: SubnetKey = "198.19.1.0-24".parse().unwrap();
        assert_eq!(k, SubnetKey::v4("198.19.1.0/24".parse().unwrap()));
        assert_eq!(k.to_string(), "198.19.1.0-24");
        let d: SubnetKey = "198.19.1.0-24&fc00:0:0:1::-64".parse().unwrap();
        assert_eq!(d.v4, k.v4);
        assert_eq!(d.v6, Some(Subnet6 { addr: "fc00:0:0:1::".parse().unwrap(), len: 64 }));
        assert_eq!(d.to_string(), "198.19.1.0-24&fc00:0:0:1::-64");
        assert_eq!(d.to_string().parse::<SubnetKey>(), Ok(d));
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "",
            "198.19.1.0",
            "198.19.1.0-",
            "198.19.1.0-x",
            "198.19.1.0--24",
            "198.19.1.0-+24",
            "198.19.1.0-33",
            "198.19.1.1-24",
            "198.19.1-24",
            "198.19.1.0/24",
            "198.19.1.0-24&",
            "198.19.1.0-24&fc00::",
            "198.19.1.0-24&fc00::-129",
            "198.19.1.0-24&198.19.2.0-24",
            "198.19.1.0-0024",
        ] {
            assert!(bad.parse::<SubnetKey>().is_err(), "{bad:?}");
        }
    }
}
