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

/// The extension headers that share one layout (RFC 8200 §4.3, §4.4, §4.6: Hop-by-Hop
/// Options, Routing, Destination Options), what the flow hash walks past to reach the transport.
///
/// ```text
/// |  Next Header  |  Hdr Ext Len  |        (options or routing data, 6 + 8n bytes)
/// ```
pub mod ext {
    /// Byte offsets of the fields every such header starts with.
    pub(crate) mod field {
        /// The protocol of what follows: another extension header or the transport.
        pub(crate) const NEXT_HEADER: usize = 0;
        /// The length in 8-byte units, not counting the first 8 bytes.
        pub(crate) const LEN: usize = 1;
    }

    /// The shortest extension header.
    pub const MIN_LEN: usize = 8;

    /// The header's length in bytes, from Hdr Ext Len.
    #[inline]
    pub fn header_len(b: &[u8]) -> usize {
        (usize::from(b[field::LEN]) + 1) * 8
    }
}

/// The Fragment header (RFC 8200 §4.5).
///
/// ```text
/// |  Next Header  |   Reserved    |      Fragment Offset    |Res|M|
/// |                         Identification                        |
/// ```
pub mod frag {
    use super::read_u16;

    /// Byte offsets and ranges of the header's fields.
    pub(crate) mod field {
        use std::ops::Range;

        /// The protocol of the fragmented part's first header.
        pub(crate) const NEXT_HEADER: usize = 0;
        /// Offset in 8-byte units (high 13 bits), two reserved bits, More Fragments (low bit).
        pub(crate) const OFFSET_FLAGS: Range<usize> = 2..4;
        #[allow(dead_code)] // Part of the map; nothing reads it.
        pub(crate) const IDENT: Range<usize> = 4..8;
    }

    /// Length of the header.
    pub const HEADER_LEN: usize = 8;
    /// In the offset and flags: the fragment offset.
    pub const OFFSET_MASK: u16 = 0xfff8;
    /// In the offset and flags: More Fragments.
    pub const FLAG_M: u16 = 0x0001;

    /// True for a real fragment: More Fragments set or a non-zero offset (a header with
    /// neither, an "atomic fragment", carries the whole packet).
    #[inline]
    pub fn is_fragment(b: &[u8]) -> bool {
        read_u16(b, field::OFFSET_FLAGS) & (OFFSET_MASK | FLAG_M) != 0
    }
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

    #[test]
    fn extension_and_fragment_headers() {
        // Hop-by-Hop with a Router Alert option (RFC 2711), as MLD sends it: 8 bytes.
        let hop = [protocol::ICMPV6, 0, 0x05, 0x02, 0, 0, 0x01, 0x00];
        assert_eq!(hop[ext::field::NEXT_HEADER], protocol::ICMPV6);
        assert_eq!(ext::header_len(&hop), ext::MIN_LEN);
        assert_eq!(ext::header_len(&[protocol::TCP, 2]), 24);
        // A first fragment (offset 0, M), a middle one at 1448 bytes, an atomic fragment.
        let mut f = [protocol::UDP, 0, 0x00, 0x01, 0xde, 0xad, 0xbe, 0xef];
        assert_eq!(f[frag::field::NEXT_HEADER], protocol::UDP);
        assert!(frag::is_fragment(&f));
        f[frag::field::OFFSET_FLAGS].copy_from_slice(&(181u16 << 3 | frag::FLAG_M).to_be_bytes());
        assert!(frag::is_fragment(&f));
        f[frag::field::OFFSET_FLAGS].copy_from_slice(&0x0006u16.to_be_bytes());
        assert!(!frag::is_fragment(&f), "reserved bits only: an atomic fragment");
    }
}
