//! UDP header (RFC 768).
//!
//! ```text
//! |          Source Port          |       Destination Port        |
//! |             Length            |            Checksum           |
//! ```
//! Accessors take the header from its first byte and panic if it is shorter than
//! [`HEADER_LEN`].

use super::read_u16;

/// Byte ranges of the header's fields.
pub(crate) mod field {
    use std::ops::Range;

    pub(crate) const SRC_PORT: Range<usize> = 0..2;
    pub(crate) const DST_PORT: Range<usize> = 2..4;
    /// Header and payload, in bytes.
    pub(crate) const LENGTH: Range<usize> = 4..6;
    /// Zero when none was computed (IPv4 only).
    pub(crate) const CHECKSUM: Range<usize> = 6..8;
}

/// Length of the header.
pub const HEADER_LEN: usize = 8;

/// The length field: header and payload, in bytes.
#[inline]
pub fn length(b: &[u8]) -> u16 {
    read_u16(b, field::LENGTH)
}

/// The source and destination ports.
#[inline]
pub fn ports(b: &[u8]) -> (u16, u16) {
    (read_u16(b, field::SRC_PORT), read_u16(b, field::DST_PORT))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A VXLAN datagram's header: 49152 -> 4789, 58 bytes, checksum 0x1c2d.
    const HEADER: [u8; 8] = [0xc0, 0x00, 0x12, 0xb5, 0x00, 0x3a, 0x1c, 0x2d];

    #[test]
    fn reads_a_real_header() {
        assert_eq!(ports(&HEADER), (49152, 4789));
        assert_eq!(length(&HEADER), 58);
        assert_eq!(read_u16(&HEADER, field::CHECKSUM), 0x1c2d);
        assert_eq!(field::CHECKSUM.end, HEADER_LEN);
    }
}
