//! Ethernet II header (IEEE 802.3 §3.1.1) and its VLAN tags (IEEE 802.1Q §9).
//!
//! ```text
//! | Destination (6) | Source (6) | EtherType (2) |                      payload
//! | Destination (6) | Source (6) | 0x8100 (2) | TCI (2) | EtherType (2) | payload
//! ```
//! Accessors take the frame from its first byte and panic if it is shorter than the field.
//!
//! Where the payload starts past stacked tags (802.1Q, 802.1ad [`ETHERTYPE_QINQ`]), and that a
//! MACsec frame ([`macsec`]) is opaque, is decided in one place: [`super::frame`].

use super::read_u16;

/// Byte ranges of the header's fields.
pub(crate) mod field {
    use std::ops::Range;

    /// Destination MAC address.
    pub(crate) const DST: Range<usize> = 0..6;
    /// Source MAC address.
    pub(crate) const SRC: Range<usize> = 6..12;
    /// EtherType, or the VLAN tag's TPID ([`super::ETHERTYPE_VLAN`]).
    pub(crate) const ETHERTYPE: Range<usize> = 12..14;
    /// Tag control information of a VLAN tag: priority (3 bits), DEI (1), VLAN ID (12).
    pub(crate) const VLAN_TCI: Range<usize> = 14..16;
    /// The EtherType after one VLAN tag.
    #[allow(dead_code)] // Part of the map; the tags are walked by `wire::frame`.
    pub(crate) const VLAN_ETHERTYPE: Range<usize> = 16..18;
}

/// Length of an untagged header.
pub const HEADER_LEN: usize = 14;
/// Length of one 802.1Q tag (TPID and TCI).
pub const VLAN_TAG_LEN: usize = 4;
/// Length of a header with one VLAN tag.
pub const VLAN_HEADER_LEN: usize = HEADER_LEN + VLAN_TAG_LEN;

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType (TPID) of an 802.1Q VLAN tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType (TPID) of an 802.1ad service tag, the outer tag of Q-in-Q.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;
/// The TPID pre-standard Q-in-Q switches use for the outer tag.
pub const ETHERTYPE_VLAN_DOUBLE: u16 = 0x9100;
/// EtherType of MACsec (IEEE 802.1AE).
pub const ETHERTYPE_MACSEC: u16 = 0x88e5;

/// Mask of the VLAN ID in the tag control information.
pub const VLAN_ID_MASK: u16 = 0x0fff;

/// The EtherType field right after the addresses (a VLAN tag's TPID when tagged).
#[inline]
pub fn ethertype(b: &[u8]) -> u16 {
    read_u16(b, field::ETHERTYPE)
}

/// The VLAN ID of a tagged frame (its header is [`VLAN_HEADER_LEN`] long); None when untagged.
#[inline]
pub fn vlan_id(b: &[u8]) -> Option<u16> {
    (ethertype(b) == ETHERTYPE_VLAN).then(|| read_u16(b, field::VLAN_TCI) & VLAN_ID_MASK)
}

/// The MACsec SecTAG (IEEE 802.1AE §9.3) that follows [`ETHERTYPE_MACSEC`].
///
/// ```text
/// | TCI/AN (1) | SL (1) | Packet Number (4) | SCI (8, when TCI has SC) | user data
/// ```
/// Unless the E or C bit is set the user data is not modified (integrity only) and starts with
/// its own EtherType.
pub mod macsec {
    /// Byte offsets and ranges of the tag's fields.
    pub(crate) mod field {
        use std::ops::Range;

        /// Tag control information (high six bits) and association number (low two).
        #[allow(dead_code)] // Part of the map; nothing reads it: a MACsec frame is opaque.
        pub(crate) const TCI_AN: usize = 0;
        /// Short length: the user data's length (EtherType included) when below 48, else 0.
        #[allow(dead_code)] // Part of the map; nothing reads it.
        pub(crate) const SHORT_LEN: usize = 1;
        #[allow(dead_code)] // Part of the map; nothing reads it.
        pub(crate) const PN: Range<usize> = 2..6;
        /// Secure channel identifier, present when [`super::TCI_SC`] is set.
        #[allow(dead_code)] // Part of the map; nothing reads it.
        pub(crate) const SCI: Range<usize> = 6..14;
    }

    /// Length of the tag without an SCI.
    pub const HEADER_LEN: usize = 6;
    /// Length of the SCI.
    pub const SCI_LEN: usize = 8;
    /// TCI: the version bit, which must be 0.
    pub const TCI_VERSION: u8 = 0x80;
    /// TCI: an SCI follows the packet number.
    pub const TCI_SC: u8 = 0x20;
    /// TCI: the user data is encrypted.
    pub const TCI_E: u8 = 0x08;
    /// TCI: the user data was changed (encrypted, or the ICV is not the default length).
    pub const TCI_C: u8 = 0x04;
    /// The short length in its byte.
    pub const SHORT_LEN_MASK: u8 = 0x3f;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 02:00:00:00:00:0b -> ff:ff:ff:ff:ff:ff, VLAN 42 priority 5, then IPv4.
    const TAGGED: [u8; 18] =
        [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 0x0b, 0x81, 0x00, 0xa0, 0x2a, 0x08, 0x00];

    #[test]
    fn reads_a_tagged_header() {
        assert_eq!(&TAGGED[field::DST], &[0xff; 6]);
        assert_eq!(&TAGGED[field::SRC], &[0x02, 0, 0, 0, 0, 0x0b]);
        assert_eq!(ethertype(&TAGGED), ETHERTYPE_VLAN);
        assert_eq!(vlan_id(&TAGGED), Some(42));
        assert_eq!(read_u16(&TAGGED, field::VLAN_ETHERTYPE), ETHERTYPE_IPV4);
    }

    #[test]
    fn reads_an_untagged_header() {
        // The same frame without its tag, carrying IPv6 and then ARP.
        let mut b = [&TAGGED[..12], &[0x86, 0xdd]].concat();
        assert_eq!(vlan_id(&b), None);
        assert_eq!(ethertype(&b), ETHERTYPE_IPV6);
        b[field::ETHERTYPE].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        assert_eq!(ethertype(&b), ETHERTYPE_ARP);
    }
}
