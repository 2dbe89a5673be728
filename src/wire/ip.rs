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
    /// IPv6 Hop-by-Hop Options, an extension header (RFC 8200 §4.3).
    pub const IPV6_HOP_BY_HOP: u8 = 0;
    /// IPv6 Routing header (RFC 8200 §4.4).
    pub const IPV6_ROUTE: u8 = 43;
    /// IPv6 Fragment header (RFC 8200 §4.5).
    pub const IPV6_FRAG: u8 = 44;
    /// Authentication Header, after IPv4 or as an IPv6 extension header (RFC 4302).
    pub const AUTH: u8 = 51;
    /// IPv6 Destination Options (RFC 8200 §4.6).
    pub const IPV6_DEST_OPTS: u8 = 60;
}

/// The Authentication Header (RFC 4302 §2), which may sit between an IP header and the transport.
///
/// ```text
/// |  Next Header  |  Payload Len  |          RESERVED             |
/// |                 Security Parameters Index (SPI)               |
/// |                    Sequence Number Field                      |
/// |                Integrity Check Value (variable)               |
/// ```
pub mod auth {
    /// Byte offsets and ranges of the header's fields.
    pub(crate) mod field {
        use std::ops::Range;

        /// The protocol of what follows the header.
        pub(crate) const NEXT_HEADER: usize = 0;
        /// The header's length in 4-byte words, minus 2.
        pub(crate) const PAYLOAD_LEN: usize = 1;
        #[allow(dead_code)] // Part of the map; nothing reads it.
        pub(crate) const SPI: Range<usize> = 4..8;
        #[allow(dead_code)] // Part of the map; nothing reads it.
        pub(crate) const SEQ: Range<usize> = 8..12;
    }

    /// Length of the fixed part: the shortest header a valid Payload Len describes.
    pub const MIN_LEN: usize = 12;

    /// The header's length in bytes, from Payload Len; None for 0, which cannot cover the
    /// fixed part. Needs [`field::PAYLOAD_LEN`] present.
    #[inline]
    pub fn header_len(b: &[u8]) -> Option<usize> {
        match b[field::PAYLOAD_LEN] {
            0 => None,
            n => Some((usize::from(n) + 2) * 4),
        }
    }
}

/// The version in the high nibble of an IP header's first byte: 4 or 6 for a valid header.
#[inline]
pub fn version(b: &[u8]) -> u8 {
    b[0] >> 4
}

/// Which IP an inner packet is (see [`super::frame::Ip`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpVersion {
    V4,
    V6,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_header_length_counts_words_minus_two() {
        // RFC 4302 §2.2: 96 bits of ICV with IPv4 make Payload Len 4, 24 bytes in all.
        assert_eq!(auth::header_len(&[protocol::TCP, 4]), Some(24));
        assert_eq!(auth::header_len(&[protocol::TCP, 1]), Some(auth::MIN_LEN));
        assert_eq!(auth::header_len(&[protocol::TCP, 0]), None);
        assert_eq!(auth::field::NEXT_HEADER, 0);
    }

    #[test]
    fn version_is_the_high_nibble() {
        assert_eq!(version(&[0x45, 0x00]), 4);
        assert_eq!(version(&[0x60, 0x0a]), 6);
        assert_eq!(version(&[0xf0]), 15);
    }
}
