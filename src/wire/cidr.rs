//! IP networks written `ADDR/PREFIX`: TAP addresses (`--address`) and allowed sources
//! (`--allow-from`). A leaf module: the config, the allowlist and the TAP setup all use it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

/// An interface address with its prefix length, like `198.19.0.1/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// A single host: /32 or /128.
    pub fn host(addr: IpAddr) -> Cidr {
        Cidr { addr, prefix: if addr.is_ipv4() { 32 } else { 128 } }
    }

    /// Whether `ip` lies in this network (address families must match).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = v4_mask(self.prefix);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// The IPv4 netmask of this prefix (255.255.255.0 for /24); None for IPv6.
    pub fn v4_netmask(&self) -> Option<Ipv4Addr> {
        self.addr.is_ipv4().then(|| Ipv4Addr::from(v4_mask(self.prefix)))
    }
}

/// The IPv4 mask with the top `prefix` bits set (`prefix` at most 32).
fn v4_mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix.min(32))).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err =
            || format!("invalid address {s:?}: expected IP/PREFIX, like 198.19.0.1/24 or 2001:db8::1/64");
        let (a, p) = s.split_once('/').ok_or_else(err)?;
        let addr: IpAddr = a.parse().map_err(|_| err())?;
        let prefix: u8 = p.parse().map_err(|_| err())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("invalid address {s:?}: prefix over {max}"));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        assert_eq!("198.19.0.1/24".parse::<Cidr>().unwrap().prefix, 24);
        assert!("198.19.0.1/33".parse::<Cidr>().is_err());
        assert!("198.19.0.1".parse::<Cidr>().is_err());
        assert!("2001:db8::1/129".parse::<Cidr>().is_err());
        assert_eq!("2001:db8::1/64".parse::<Cidr>().unwrap().to_string(), "2001:db8::1/64");
    }

    #[test]
    fn membership_and_masks() {
        let c: Cidr = "198.18.0.0/24".parse().unwrap();
        assert!(c.contains("198.18.0.77".parse().unwrap()));
        assert!(!c.contains("198.19.0.1".parse().unwrap()));
        assert!(!c.contains("2001:db8::1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("198.19.0.1".parse().unwrap()));
        let v6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(
            v6.contains("2001:db8:1::5".parse().unwrap()) && !v6.contains("2001:db9::1".parse().unwrap())
        );
        assert_eq!(c.v4_netmask(), Some(Ipv4Addr::new(255, 255, 255, 0)));
        assert_eq!(all.v4_netmask(), Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!("198.18.0.9/32".parse::<Cidr>().unwrap().v4_netmask(), Some(Ipv4Addr::BROADCAST));
        assert_eq!(v6.v4_netmask(), None);
        let h = Cidr::host("198.18.0.9".parse().unwrap());
        assert!(h.contains("198.18.0.9".parse().unwrap()) && !h.contains("198.18.0.8".parse().unwrap()));
    }
}
