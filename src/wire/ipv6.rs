//! IPv6 fixed header (RFC 8200 §3).
//!
//! ```text
//! |Version| Traffic Class |           Flow Label                  |
//! |         Payload Length        |  Next Header  |   Hop Limit   |
//! |                     Source Address (16)                       |
//! |                  Destination Address (16)                     |
//! ```
//! Extension headers, if any, follow; vxtap does not walk them. Accessors take the header from
//! its first byte and panic if it is shorter than [`HEADER_LEN`].

use super::read_u16;

/// Byte offsets and ranges of the fixed header's fields.
pub(crate) mod field {
    use std::ops::Range;

    /// Version (4 bits), traffic class (8: DSCP and ECN) and flow label (20).
    pub(crate) const VER_TC_FLOW: Range<usize> = 0..4;
    /// Length of what follows the fixed header, extension headers included.
    pub(crate) const PAYLOAD_LEN: Range<usize> = 4..6;
    /// The protocol of what follows: an extension header or the transport.
    pub(crate) const NEXT_HEADER: usize = 6;
    pub(crate) const HOP_LIMIT: usize = 7;
    pub(crate) const SRC: Range<usize> = 8..24;
    pub(crate) const DST: Range<usize> = 24..40;
}

/// Length of the fixed header.
pub const HEADER_LEN: usize = 40;
/// The version field of an IPv6 header.
pub const VERSION: u8 = 6;
/// The flow label in the first 32-bit word.
pub const FLOW_LABEL_MASK: u32 = 0x000f_ffff;

/// The version field (6 for IPv6).
#[inline]
pub fn version(b: &[u8]) -> u8 {
    b[field::VER_TC_FLOW.start] >> 4
}

/// The traffic class: DSCP in the high six bits, ECN in the low two.
#[inline]
pub fn traffic_class(b: &[u8]) -> u8 {
    (read_u16(b, field::VER_TC_FLOW) >> 4) as u8
}

/// The flow label.
#[inline]
pub fn flow_label(b: &[u8]) -> u32 {
    super::read_u32(b, field::VER_TC_FLOW) & FLOW_LABEL_MASK
}

/// The payload length field: the bytes after the fixed header.
#[inline]
pub fn payload_len(b: &[u8]) -> u16 {
    read_u16(b, field::PAYLOAD_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ip::protocol;

    /// 2001:db8::1 -> 2001:db8::2, TCP, traffic class 0x2e (DSCP 11, ECT(0)), flow label
    /// 0x54321, hop limit 64, 32 bytes of payload.
    const HEADER: [u8; 40] = [
        0x62, 0xe5, 0x43, 0x21, 0x00, 0x20, 0x06, 0x40, // version .. hop limit
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // source
        0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // destination
    ];

    #[test]
    fn reads_a_real_header() {
        let b = &HEADER;
        assert_eq!(version(b), VERSION);
        assert_eq!(traffic_class(b), 0x2e);
        assert_eq!(flow_label(b), 0x5_4321);
        assert_eq!(payload_len(b), 32);
        assert_eq!(b[field::NEXT_HEADER], protocol::TCP);
        assert_eq!(b[field::HOP_LIMIT], 64);
        assert_eq!(b[field::SRC][..4], [0x20, 0x01, 0x0d, 0xb8]);
        assert_eq!(b[field::SRC][15], 1);
        assert_eq!(b[field::DST][15], 2);
        assert_eq!(field::DST.end, HEADER_LEN);
    }
}
