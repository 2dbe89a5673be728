//! IPv4 header (RFC 791 §3.1).
//!
//! ```text
//! |Version|  IHL  |   DSCP    |ECN|          Total Length         |
//! |         Identification        |Flags|     Fragment Offset     |
//! |  Time to Live |    Protocol   |         Header Checksum       |
//! |                       Source Address                          |
//! |                    Destination Address                        |
//! |                    Options (IHL > 5)                          |
//! ```
//! Accessors take the header from its first byte and panic if it is shorter than
//! [`HEADER_LEN`].

use super::read_u16;

/// Byte offsets and ranges of the fixed header's fields.
pub(crate) mod field {
    use std::ops::Range;

    /// Version (high nibble) and IHL, the header length in 4-byte words (low nibble).
    pub(crate) const VER_IHL: usize = 0;
    /// DSCP (high six bits) and ECN (low two bits), the former TOS byte.
    pub(crate) const DSCP_ECN: usize = 1;
    /// Length of the whole packet, header included.
    pub(crate) const TOTAL_LEN: Range<usize> = 2..4;
    /// Identification, shared by the fragments of one datagram.
    pub(crate) const IDENT: Range<usize> = 4..6;
    /// Flags (high three bits) and fragment offset in 8-byte units (low 13 bits).
    pub(crate) const FLAGS_FRAG: Range<usize> = 6..8;
    pub(crate) const TTL: usize = 8;
    pub(crate) const PROTOCOL: usize = 9;
    pub(crate) const CHECKSUM: Range<usize> = 10..12;
    pub(crate) const SRC: Range<usize> = 12..16;
    pub(crate) const DST: Range<usize> = 16..20;
}

/// Length of a header without options, the least IHL allows.
pub const HEADER_LEN: usize = 20;
/// The version field of an IPv4 header.
pub const VERSION: u8 = 4;

/// In the flags and fragment offset ([`flags_frag`]): the reserved bit, which must be zero.
pub const FLAG_RESERVED: u16 = 0x8000;
/// In the flags and fragment offset: Don't Fragment.
pub const FLAG_DF: u16 = 0x4000;
/// In the flags and fragment offset: More Fragments.
pub const FLAG_MF: u16 = 0x2000;
/// In the flags and fragment offset: the fragment offset.
pub const FRAG_OFFSET_MASK: u16 = 0x1fff;

/// ECN in the DSCP/ECN byte.
pub const ECN_MASK: u8 = 0x03;

/// The version field (4 for IPv4).
#[inline]
pub fn version(b: &[u8]) -> u8 {
    b[field::VER_IHL] >> 4
}

/// The header length in bytes, options included, from IHL.
#[inline]
pub fn header_len(b: &[u8]) -> usize {
    usize::from(b[field::VER_IHL] & 0x0f) * 4
}

/// The total length field: header and payload, in bytes.
#[inline]
pub fn total_len(b: &[u8]) -> u16 {
    read_u16(b, field::TOTAL_LEN)
}

/// The identification field.
#[inline]
pub fn ident(b: &[u8]) -> u16 {
    read_u16(b, field::IDENT)
}

/// The flags and the fragment offset as one 16-bit word (see [`FLAG_DF`] and the others).
#[inline]
pub fn flags_frag(b: &[u8]) -> u16 {
    read_u16(b, field::FLAGS_FRAG)
}

/// True for a fragment: More Fragments set or a non-zero offset.
#[inline]
pub fn is_fragment(b: &[u8]) -> bool {
    flags_frag(b) & (FLAG_MF | FRAG_OFFSET_MASK) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ip::protocol;

    /// A SYN's header as Linux sends it: 192.0.2.1 -> 198.51.100.7, TCP, DF, TTL 64, ID 0x1c46,
    /// ECT(0), 60 bytes in all, header checksum 0x3238.
    const HEADER: [u8; 20] = [
        0x45, 0x02, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x32, 0x38, 192, 0, 2, 1, 198, 51, 100, 7,
    ];

    #[test]
    fn reads_a_real_header() {
        let b = &HEADER;
        assert_eq!(version(b), VERSION);
        assert_eq!(header_len(b), HEADER_LEN);
        assert_eq!(b[field::DSCP_ECN] & ECN_MASK, 0b10);
        assert_eq!(total_len(b), 60);
        assert_eq!(ident(b), 0x1c46);
        assert_eq!(flags_frag(b), FLAG_DF);
        assert!(!is_fragment(b));
        assert_eq!(b[field::TTL], 64);
        assert_eq!(b[field::PROTOCOL], protocol::TCP);
        assert_eq!(read_u16(b, field::CHECKSUM), 0x3238);
        assert_eq!(&b[field::SRC], &[192, 0, 2, 1]);
        assert_eq!(&b[field::DST], &[198, 51, 100, 7]);
        // RFC 1071: the 16-bit words, checksum included, sum to all ones.
        let sum = b.chunks(2).fold(0u32, |s, w| s + u32::from(u16::from_be_bytes([w[0], w[1]])));
        assert_eq!((sum & 0xffff) + (sum >> 16), 0xffff, "the checksum verifies");
    }

    #[test]
    fn options_and_fragments() {
        let mut b = HEADER;
        b[field::VER_IHL] = 0x46;
        assert_eq!(header_len(&b), 24);
        b[field::FLAGS_FRAG].copy_from_slice(&(FLAG_DF | FLAG_MF).to_be_bytes());
        assert!(is_fragment(&b), "first fragment");
        b[field::FLAGS_FRAG].copy_from_slice(&185u16.to_be_bytes());
        assert!(is_fragment(&b), "last fragment, at offset 1480");
        assert_eq!(flags_frag(&b) & FRAG_OFFSET_MASK, 185);
        b[field::FLAGS_FRAG].copy_from_slice(&FLAG_RESERVED.to_be_bytes());
        assert!(!is_fragment(&b), "the reserved bit is not a fragment bit");
    }
}
