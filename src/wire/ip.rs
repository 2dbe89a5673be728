//! What IPv4 and IPv6 share: the version nibble that starts either header, and the IANA protocol
//! numbers found in IPv4's Protocol and IPv6's Next Header fields.

/// IANA "Assigned Internet Protocol Numbers", the ones vxtap looks at.
pub mod protocol {
    /// ICMP for IPv4 (RFC 792).
    pub const ICMP: u8 = 1;
    /// TCP (RFC 9293).
    pub const TCP: u8 = 6;
    /// UDP (RFC 768).
    pub const UDP: u8 = 17;
    /// ICMPv6 (RFC 4443).
    pub const ICMPV6: u8 = 58;
}

/// The version in the high nibble of an IP header's first byte: 4 or 6 for a valid header.
#[inline]
pub fn version(b: &[u8]) -> u8 {
    b[0] >> 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_the_high_nibble() {
        assert_eq!(version(&[0x45, 0x00]), 4);
        assert_eq!(version(&[0x60, 0x0a]), 6);
        assert_eq!(version(&[0xf0]), 15);
    }
}
