//! Ethernet MAC addresses: the key of the FDB and the part of a frame that decides where it goes.

use std::fmt;
use std::str::FromStr;

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// Reads the address from the first six bytes of `bytes`; `None` when there are fewer.
    #[inline]
    pub fn from_slice(bytes: &[u8]) -> Option<MacAddr> {
        let b: [u8; 6] = bytes.get(..6)?.try_into().ok()?;
        Some(MacAddr(b))
    }

    /// Group (multicast or broadcast) addresses have the I/G bit, the low bit of the first octet, set.
    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    #[inline]
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }

    #[inline]
    pub fn is_zero(&self) -> bool {
        *self == Self::ZERO
    }

    /// A unicast, non-zero address: the only kind a bridge may learn (IEEE 802.1D, and the kernel's vxlan).
    #[inline]
    pub fn is_learnable(&self) -> bool {
        !self.is_multicast() && !self.is_zero()
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {0:?}: expected six hex octets separated by ':' or '-', like 02:00:00:00:00:01")]
pub struct ParseMacError(pub String);

impl FromStr for MacAddr {
    type Err = ParseMacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseMacError(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for byte in out.iter_mut() {
            let p = parts.next().ok_or_else(err)?;
            // from_str_radix alone would accept a sign ("+f"): require hex digits only.
            if p.is_empty() || p.len() > 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(err());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let m: MacAddr = "02:ab:cd:00:ff:01".parse().unwrap();
        assert_eq!(m.0, [0x02, 0xab, 0xcd, 0x00, 0xff, 0x01]);
        assert_eq!(m.to_string(), "02:ab:cd:00:ff:01");
        let m: MacAddr = "02-ab-cd-00-ff-01".parse().unwrap();
        assert_eq!(m.to_string(), "02:ab:cd:00:ff:01");
    }

    #[test]
    fn rejects_malformed() {
        for s in [
            "",
            "02:ab:cd:00:ff",
            "02:ab:cd:00:ff:01:02",
            "02:ab:cd:00:ff:0g",
            "002:ab:cd:00:ff:01",
            "02::cd:00:ff:01",
        ] {
            assert!(s.parse::<MacAddr>().is_err(), "{s:?} must not parse");
        }
    }

    #[test]
    fn classifies() {
        assert!(MacAddr::BROADCAST.is_multicast() && MacAddr::BROADCAST.is_broadcast());
        assert!(MacAddr([0x01, 0, 0x5e, 0, 0, 1]).is_multicast());
        assert!(MacAddr([0x33, 0x33, 0, 0, 0, 1]).is_multicast());
        assert!(!MacAddr::ZERO.is_learnable());
        assert!(!MacAddr::BROADCAST.is_learnable());
        assert!(MacAddr([0x02, 0, 0, 0, 0, 1]).is_learnable());
        assert_eq!(MacAddr::from_slice(&[1, 2, 3, 4, 5]), None);
    }
}
