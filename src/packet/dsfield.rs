//! The outer DS field (DSCP and ECN, RFC 2474 and RFC 3168) of the tunnel, and ECN across the
//! tunnel per RFC 6040 (normal mode), pure.
//!
//! On encapsulation the outer DSCP is a configured value (`--tos N`) or the inner packet's
//! (`--tos inherit`), and the outer ECN field is the inner one, copied, so that congestion marks
//! set on the underlay can reach the inner endpoints. On decapsulation a CE mark on the outer
//! header is carried into an ECN-capable inner packet (its IPv4 header checksum fixed); an inner
//! packet that is not ECN-capable under an outer CE is dropped, as RFC 6040 §4.2 requires.

use std::fmt;
use std::str::FromStr;

use crate::wire::frame::{Frame, IpVersion};
use crate::wire::ipv4;

/// The ECN field's bits in the DS byte.
pub const ECN_MASK: u8 = 0x03;
/// Congestion Experienced.
pub const ECN_CE: u8 = 0x03;
/// Not ECN-Capable Transport.
pub const ECN_NOT_ECT: u8 = 0x00;

/// `--tos`: where the outer DSCP comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tos {
    /// This DS byte's DSCP (its ECN bits are ignored: ECN always follows the inner packet).
    Fixed(u8),
    /// The inner IPv4/IPv6 packet's DSCP (0 for anything else).
    Inherit,
}

impl Default for Tos {
    fn default() -> Tos {
        Tos::Fixed(0)
    }
}

impl FromStr for Tos {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("inherit") {
            return Ok(Tos::Inherit);
        }
        let v = match s.strip_prefix("0x") {
            Some(hex) => u8::from_str_radix(hex, 16),
            None => s.parse::<u8>(),
        };
        v.map(Tos::Fixed).map_err(|_| format!("invalid tos {s:?}: expected 0..=255 (or 0xNN) or inherit"))
    }
}

impl fmt::Display for Tos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Tos::Fixed(v) => write!(f, "{v}"),
            Tos::Inherit => f.write_str("inherit"),
        }
    }
}

/// The outer DS byte for the frame `view` describes: DSCP per `tos`, ECN copied from the inner
/// packet (RFC 6040 normal mode; a non-IP frame is Not-ECT).
#[inline]
pub fn encap(tos: Tos, view: &Frame) -> u8 {
    let inner = view.ip().map_or(0, |ip| ip.ds());
    let dscp = match tos {
        Tos::Fixed(v) => v,
        Tos::Inherit => inner,
    };
    (dscp & !ECN_MASK) | (inner & ECN_MASK)
}

/// What decapsulation did with the outer ECN field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decap {
    /// Nothing to carry over (no CE outside, or not IP inside).
    Unchanged,
    /// The inner packet is now marked CE.
    MarkedCe,
    /// Outer CE over a Not-ECT inner packet: it must be dropped (RFC 6040 §4.2).
    Drop,
}

/// Carries an outer CE mark (`outer_ds` is the outer DS byte) into the inner packet of `frame`,
/// whose headers `view` describes (it stays valid: only the DS field and IPv4's header checksum
/// change).
#[inline]
pub fn decap(outer_ds: u8, frame: &mut [u8], view: &Frame) -> Decap {
    if outer_ds & ECN_MASK != ECN_CE {
        return Decap::Unchanged;
    }
    let Some(ip) = view.ip() else { return Decap::Unchanged };
    let l3 = ip.l3();
    match ip.ds() & ECN_MASK {
        ECN_CE => Decap::Unchanged,
        ECN_NOT_ECT => Decap::Drop,
        _ if ip.version() == IpVersion::V6 => {
            // The traffic class spans the low nibble of byte 0 and the high nibble of byte 1:
            // its ECN bits are bits 5 and 4 of byte 1.
            frame[l3 + 1] |= ECN_CE << 4;
            Decap::MarkedCe
        }
        _ => {
            let old = u16::from_be_bytes([frame[l3], frame[l3 + 1]]);
            frame[l3 + ipv4::field::DSCP_ECN] |= ECN_CE;
            let new = u16::from_be_bytes([frame[l3], frame[l3 + 1]]);
            // RFC 1624: HC' = ~(~HC + ~m + m').
            let ck = ipv4::field::CHECKSUM;
            let hc = u16::from_be_bytes([frame[l3 + ck.start], frame[l3 + ck.start + 1]]);
            let mut sum = u32::from(!hc) + u32::from(!old) + u32::from(new);
            sum = (sum & 0xffff) + (sum >> 16);
            sum = (sum & 0xffff) + (sum >> 16);
            frame[l3 + ck.start..l3 + ck.end].copy_from_slice(&(!(sum as u16)).to_be_bytes());
            Decap::MarkedCe
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::offload::checksum::Sum;
    use crate::wire::ipv6;

    // The functions under test with the frame parsed for them, as the packet path does once.
    fn encap(tos: Tos, frame: &[u8]) -> u8 {
        super::encap(tos, &Frame::parse(frame).unwrap())
    }

    /// A runt has no view: the receive path drops it before (nothing to carry).
    fn decap(outer_ds: u8, frame: &mut [u8]) -> Decap {
        Frame::parse(frame).map_or(Decap::Unchanged, |view| super::decap(outer_ds, frame, &view))
    }

    fn v4(ds: u8) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
        let mut ip = vec![0x45, ds, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0, 198, 19, 0, 1, 198, 19, 0, 2];
        let ck = Sum::ZERO.add_bytes(&ip).finish();
        ip[10..12].copy_from_slice(&ck);
        f.extend(ip);
        f.extend([0u8; 8]);
        f
    }

    fn v6(tc: u8) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x86, 0xdd];
        f.extend([0x60 | tc >> 4, (tc & 0xf) << 4 | 0x0a, 0xbc, 0xde, 0, 0, 17, 64]);
        f.extend([0u8; 32]);
        f
    }

    #[test]
    fn encap_takes_dscp_from_the_option_and_ecn_from_inside() {
        let af41_ect0 = (34 << 2) | 0b10;
        assert_eq!(encap(Tos::Inherit, &v4(af41_ect0)), af41_ect0);
        assert_eq!(encap(Tos::Fixed(46 << 2), &v4(af41_ect0)), (46 << 2) | 0b10);
        assert_eq!(encap(Tos::Fixed(0xff), &v4(0)), 0xfc, "the option's ECN bits never leak out");
        assert_eq!(encap(Tos::Inherit, &v4(ECN_CE)), ECN_CE, "CE is copied (RFC 6040 normal mode)");
        assert_eq!(encap(Tos::Inherit, &v6(af41_ect0)), af41_ect0);
        let arp = [&[0xffu8; 12][..], &[0x08, 0x06], &[0; 28]].concat();
        assert_eq!((encap(Tos::Inherit, &arp), encap(Tos::Fixed(8), &arp)), (0, 8));
    }

    #[test]
    fn outer_ce_marks_an_ect_packet_and_keeps_its_checksum_right() {
        let mut f = v4(0b10);
        assert_eq!(decap(ECN_CE, &mut f), Decap::MarkedCe);
        assert_eq!(f[15] & ECN_MASK, ECN_CE);
        assert!(Sum::ZERO.add_bytes(&f[14..34]).verifies(), "IPv4 header checksum fixed");
        let mut g = v6(0b01);
        assert_eq!(decap(0xb8 | ECN_CE, &mut g), Decap::MarkedCe);
        assert_eq!(ipv6::traffic_class(&g[14..]) & ECN_MASK, ECN_CE);
        assert_eq!(&g[15..18], &[0x3a, 0xbc, 0xde], "the flow label untouched");
    }

    #[test]
    fn the_rest_of_rfc_6040s_table() {
        let mut not_ect = v4(0);
        assert_eq!(decap(ECN_CE, &mut not_ect), Decap::Drop);
        let mut ect = v4(0b10);
        let before = ect.clone();
        for outer in [0b00, 0b01, 0b10, 0xb8] {
            assert_eq!(decap(outer, &mut ect), Decap::Unchanged, "outer {outer:#x}");
        }
        assert_eq!(ect, before);
        let mut ce = v4(ECN_CE);
        assert_eq!(decap(ECN_CE, &mut ce), Decap::Unchanged);
        let mut arp = [&[0xffu8; 12][..], &[0x08, 0x06], &[0; 28]].concat();
        assert_eq!(decap(ECN_CE, &mut arp), Decap::Unchanged, "not IP: nothing to carry");
        assert_eq!(decap(ECN_CE, &mut [0u8; 10]), Decap::Unchanged);
    }

    #[test]
    fn tos_parses() {
        assert_eq!("inherit".parse(), Ok(Tos::Inherit));
        assert_eq!("184".parse(), Ok(Tos::Fixed(184)));
        assert_eq!("0xb8".parse(), Ok(Tos::Fixed(0xb8)));
        assert!("256".parse::<Tos>().is_err());
        assert_eq!(Tos::default(), Tos::Fixed(0));
    }
}
