//! TCP header (RFC 9293 §3.1; ECE and CWR from RFC 3168 §6.1).
//!
//! ```text
//! |          Source Port          |       Destination Port        |
//! |                        Sequence Number                        |
//! |                    Acknowledgment Number                      |
//! |  Data |       |C|E|U|A|P|R|S|F|                               |
//! | Offset| Rsrvd |W|C|R|C|S|S|Y|I|            Window             |
//! |           Checksum            |         Urgent Pointer        |
//! |                    Options (Data Offset > 5)                  |
//! ```
//! Accessors take the header from its first byte and panic if it is shorter than
//! [`HEADER_LEN`].

use super::{read_u16, read_u32};

/// Byte offsets and ranges of the fixed header's fields.
pub(crate) mod field {
    use std::ops::Range;

    pub(crate) const SRC_PORT: Range<usize> = 0..2;
    pub(crate) const DST_PORT: Range<usize> = 2..4;
    pub(crate) const SEQ: Range<usize> = 4..8;
    /// Acknowledgment number.
    pub(crate) const ACK: Range<usize> = 8..12;
    /// Data offset, the header length in 4-byte words (high nibble), then reserved bits (the
    /// lowest once RFC 3540's NS).
    pub(crate) const DATA_OFF: usize = 12;
    /// The flag bits ([`super::FIN`] and the others).
    pub(crate) const FLAGS: usize = 13;
    pub(crate) const WINDOW: Range<usize> = 14..16;
    pub(crate) const CHECKSUM: Range<usize> = 16..18;
    #[allow(dead_code)] // Part of the map; nothing reads it (URG segments are never merged).
    pub(crate) const URGENT: Range<usize> = 18..20;
    /// Where options start, when the data offset leaves room for them.
    pub(crate) const OPTIONS: usize = 20;
}

/// Length of a header without options, the least the data offset allows.
pub const HEADER_LEN: usize = 20;
/// Length of the longest header (data offset 15).
pub const MAX_HEADER_LEN: usize = 60;

/// Flag: no more data from the sender.
pub const FIN: u8 = 0x01;
/// Flag: synchronize sequence numbers.
pub const SYN: u8 = 0x02;
/// Flag: reset the connection.
pub const RST: u8 = 0x04;
/// Flag: push the data to the application.
pub const PSH: u8 = 0x08;
/// Flag: the acknowledgment number is valid.
pub const ACK: u8 = 0x10;
/// Flag: the urgent pointer is valid.
pub const URG: u8 = 0x20;
/// Flag: ECN echo (RFC 3168).
pub const ECE: u8 = 0x40;
/// Flag: congestion window reduced (RFC 3168).
pub const CWR: u8 = 0x80;

/// The header length in bytes, options included, from the data offset.
#[inline]
pub fn header_len(b: &[u8]) -> usize {
    usize::from(b[field::DATA_OFF] >> 4) * 4
}

/// The sequence number.
#[inline]
pub fn seq_number(b: &[u8]) -> u32 {
    read_u32(b, field::SEQ)
}

/// The acknowledgment number.
#[inline]
pub fn ack_number(b: &[u8]) -> u32 {
    read_u32(b, field::ACK)
}

/// The flag bits.
#[inline]
pub fn flags(b: &[u8]) -> u8 {
    b[field::FLAGS]
}

/// The receive window (unscaled).
#[inline]
pub fn window(b: &[u8]) -> u16 {
    read_u16(b, field::WINDOW)
}

/// The source and destination ports.
#[inline]
pub fn ports(b: &[u8]) -> (u16, u16) {
    (read_u16(b, field::SRC_PORT), read_u16(b, field::DST_PORT))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A SYN/ACK as Linux builds one, 5201 -> 40000: seq 0x5d8a1f03, ack 0x01020305, window
    /// 65160, ECE, and 20 bytes of options in Linux's order (MSS 1460, SACK permitted,
    /// timestamps, NOP, window scale 7); the checksum is a placeholder, 0xbeef.
    const HEADER: [u8; 40] = [
        0x14, 0x51, 0x9c, 0x40, 0x5d, 0x8a, 0x1f, 0x03, 0x01, 0x02, 0x03, 0x05, 0xa0, 0x52, 0xfe, 0x88, 0xbe,
        0xef, 0x00, 0x00, // fixed header
        0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x00, 0x12, 0x34, 0x00, 0x00, 0x56, 0x78, 0x01,
        0x03, 0x03, 0x07, // options
    ];

    #[test]
    fn reads_a_real_header() {
        let b = &HEADER;
        assert_eq!(ports(b), (5201, 40000));
        assert_eq!(seq_number(b), 0x5d8a_1f03);
        assert_eq!(ack_number(b), 0x0102_0305);
        assert_eq!(header_len(b), 40);
        assert_eq!(flags(b), SYN | ACK | ECE);
        assert_eq!(flags(b) & (FIN | RST | PSH | URG | CWR), 0);
        assert_eq!(window(b), 65160);
        assert_eq!(read_u16(b, field::CHECKSUM), 0xbeef);
        assert_eq!(read_u16(b, field::URGENT), 0);
        assert_eq!(&b[field::OPTIONS..field::OPTIONS + 4], &[2, 4, 0x05, 0xb4], "MSS 1460 first");
    }

    #[test]
    fn data_offset_bounds() {
        let mut b = HEADER;
        b[field::DATA_OFF] = 0x50;
        assert_eq!(header_len(&b), HEADER_LEN);
        b[field::DATA_OFF] = 0xf1; // the NS bit is not part of the length
        assert_eq!(header_len(&b), MAX_HEADER_LEN);
    }
}
