//! One view of an inner Ethernet frame's headers, parsed once per frame: where its L3 header
//! starts, what it is, and for IPv4/IPv6 the fields the packet path decides on (the flow hash,
//! the outer DF bit and DS field, the MSS clamp, segmentation, ICMP "too big" replies). Every
//! one of them reads the frame through this view, so they all agree on what the frame is.
//!
//! # Where L3 starts: the one rule
//!
//! The Ethernet header, then up to [`MAX_TAGS`] VLAN tags, each 802.1Q ([`ETHERTYPE_VLAN`]),
//! 802.1ad ([`ETHERTYPE_QINQ`]) or the pre-standard Q-in-Q TPID
//! ([`ETHERTYPE_VLAN_DOUBLE`](ethernet::ETHERTYPE_VLAN_DOUBLE)), in
//! any order; the EtherType after them says what the payload is. Three tags cover Q-in-Q with
//! room to spare, and are what the flow hash always walked (etherparse's `LINK_EXTS_CAP`, its
//! oracle). A frame with a fourth tag, or one cut short inside a tag, is not IP to vxtap: it is
//! forwarded as it is, like any non-IP frame.
//!
//! A MACsec frame ([`ETHERTYPE_MACSEC`](ethernet::ETHERTYPE_MACSEC), IEEE 802.1AE) is opaque: the walk stops at its SecTAG,
//! whatever follows. Its user data is encrypted, or, integrity-only, covered by the ICV, so vxtap
//! may not rewrite it (a clamped MSS or a CE mark would make the receiver drop it) nor answer for
//! it (an ICMP reply would arrive unprotected), and all frames of one secure channel must stay in
//! order for its replay protection, so they are hashed on their Ethernet header alone, as
//! encrypted ones always were. (The flow hash used to look through an integrity-only SecTAG at
//! the inner 5-tuple, which could spread one channel over several underlay paths.)
//!
//! # When the payload is IP
//!
//! When the EtherType is IPv4 or IPv6, the version nibble agrees with it (what the receiving
//! stack checks first), and the fixed header, with IPv4's options, is in the frame. The length
//! field bounds the packet, Ethernet padding excluded, when it is consistent with the header and
//! the frame; otherwise the packet runs to the end of the frame ([`Ip::end`]).

use super::ethernet::{self, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN};
pub use super::ip::IpVersion;
use super::{ipv4, ipv6};

/// Most VLAN tags walked before the EtherType of the payload.
pub const MAX_TAGS: usize = 3;
/// The longest Ethernet header an IP packet follows: [`MAX_TAGS`] tags.
pub const MAX_L2_LEN: usize = ethernet::HEADER_LEN + MAX_TAGS * ethernet::VLAN_TAG_LEN;

/// The headers of one inner Ethernet frame: a small `Copy` value, parsed once by [`Frame::parse`]
/// and handed to whatever decides on the frame. Offsets are from the frame's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// The Ethernet header with its tags: where the payload starts (at most [`MAX_L2_LEN`]).
    l2_len: u8,
    ethertype: u16,
    ip: Option<Ip>,
}

/// The IPv4 or IPv6 header of a [`Frame`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ip {
    version: IpVersion,
    l3: u8,
    /// Right after the fixed header (IPv4: with its options). IPv6 extension headers are not
    /// walked: those who need the transport behind them walk on from here.
    l4: u8,
    /// IPv4 Protocol, IPv6 Next Header: what follows the header.
    proto: u8,
    /// DSCP and ECN: IPv4's DS byte, IPv6's traffic class.
    ds: u8,
    /// IPv4's flags and fragment offset word; 0 for IPv6.
    flags_frag: u16,
    /// The length field is consistent with the header and the frame, so `end` is exact.
    len_ok: bool,
    end: usize,
}

/// True for a TPID that [`Frame::parse`] walks past.
#[inline]
fn is_vlan_tag(ethertype: u16) -> bool {
    matches!(ethertype, ETHERTYPE_VLAN | ETHERTYPE_QINQ | ethernet::ETHERTYPE_VLAN_DOUBLE)
}

impl Frame {
    /// Parses the headers of `frame`; None when it is shorter than an Ethernet header (a runt).
    /// Reads each header field once and allocates nothing.
    #[inline]
    pub fn parse(frame: &[u8]) -> Option<Frame> {
        let l2 = frame.get(..ethernet::HEADER_LEN)?;
        let mut ethertype = ethernet::ethertype(l2);
        let mut l2_len = ethernet::HEADER_LEN;
        if is_vlan_tag(ethertype) {
            (ethertype, l2_len) = past_tags(frame, ethertype);
        }
        let ip = match ethertype {
            ETHERTYPE_IPV4 => Ip::v4(frame, l2_len),
            ETHERTYPE_IPV6 => Ip::v6(frame, l2_len),
            _ => None,
        };
        Some(Frame { l2_len: l2_len as u8, ethertype, ip })
    }

    /// The Ethernet header's length with its VLAN tags: where the payload starts.
    #[inline]
    pub fn l2_len(&self) -> usize {
        usize::from(self.l2_len)
    }

    /// The payload's EtherType, past the VLAN tags; a tag's TPID when there were more than
    /// [`MAX_TAGS`] or one was cut short, [`ETHERTYPE_MACSEC`](ethernet::ETHERTYPE_MACSEC) for a MACsec
    /// frame.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        self.ethertype
    }

    /// The IP header, when the payload is IPv4 or IPv6 (see the module's rule).
    #[inline]
    pub fn ip(&self) -> Option<&Ip> {
        self.ip.as_ref()
    }
}

/// The EtherType after the VLAN tags that start at the first EtherType field, and where the
/// payload starts; stops at [`MAX_TAGS`] tags or at a tag cut short (its TPID is returned).
#[cold]
fn past_tags(frame: &[u8], first: u16) -> (u16, usize) {
    let (mut ethertype, mut l2_len) = (first, ethernet::HEADER_LEN);
    for _ in 0..MAX_TAGS {
        if !is_vlan_tag(ethertype) {
            break;
        }
        // TCI (2 bytes), then the next EtherType.
        let Some(next) = frame.get(l2_len + 2..l2_len + ethernet::VLAN_TAG_LEN) else { break };
        ethertype = u16::from_be_bytes([next[0], next[1]]);
        l2_len += ethernet::VLAN_TAG_LEN;
    }
    (ethertype, l2_len)
}

impl Ip {
    #[inline]
    fn v4(frame: &[u8], l3: usize) -> Option<Ip> {
        let ip = frame.get(l3..)?;
        let hdr = ip.get(..ipv4::HEADER_LEN)?;
        let ihl = ipv4::header_len(hdr);
        if ipv4::version(hdr) != ipv4::VERSION || ihl < ipv4::HEADER_LEN || ip.len() < ihl {
            return None;
        }
        let total = usize::from(ipv4::total_len(hdr));
        let len_ok = ihl <= total && total <= ip.len();
        Some(Ip {
            version: IpVersion::V4,
            l3: l3 as u8,
            l4: (l3 + ihl) as u8,
            proto: hdr[ipv4::field::PROTOCOL],
            ds: hdr[ipv4::field::DSCP_ECN],
            flags_frag: ipv4::flags_frag(hdr),
            len_ok,
            end: l3 + if len_ok { total } else { ip.len() },
        })
    }

    #[inline]
    fn v6(frame: &[u8], l3: usize) -> Option<Ip> {
        let ip = frame.get(l3..)?;
        let hdr = ip.get(..ipv6::HEADER_LEN)?;
        if ipv6::version(hdr) != ipv6::VERSION {
            return None;
        }
        // 0 is a jumbogram's (or unset): the packet runs to the end of the frame.
        let payload = usize::from(ipv6::payload_len(hdr));
        let len_ok = payload != 0 && payload <= ip.len() - ipv6::HEADER_LEN;
        Some(Ip {
            version: IpVersion::V6,
            l3: l3 as u8,
            l4: (l3 + ipv6::HEADER_LEN) as u8,
            proto: hdr[ipv6::field::NEXT_HEADER],
            ds: ipv6::traffic_class(hdr),
            flags_frag: 0,
            len_ok,
            end: l3 + if len_ok { ipv6::HEADER_LEN + payload } else { ip.len() },
        })
    }

    #[inline]
    pub fn version(&self) -> IpVersion {
        self.version
    }

    /// Where the IP header starts (the frame's [`Frame::l2_len`]).
    #[inline]
    pub fn l3(&self) -> usize {
        usize::from(self.l3)
    }

    /// Where the IP header ends: past IPv4's options, past IPv6's fixed header (extension
    /// headers, if any, start here: see [`Ip::proto`]).
    #[inline]
    pub fn l4(&self) -> usize {
        usize::from(self.l4)
    }

    /// The IP header's length, options included (IPv6: the fixed header).
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.l4 - self.l3)
    }

    /// What follows the header at [`Ip::l4`]: IPv4's Protocol, IPv6's Next Header (an
    /// extension header's number, if it has any).
    #[inline]
    pub fn proto(&self) -> u8 {
        self.proto
    }

    /// The DS field: DSCP in the high six bits, ECN in the low two.
    #[inline]
    pub fn ds(&self) -> u8 {
        self.ds
    }

    /// IPv4's flags and fragment offset word ([`ipv4::FLAG_DF`] and the others); 0 for IPv6.
    #[inline]
    pub fn flags_frag(&self) -> u16 {
        self.flags_frag
    }

    /// IPv4's Don't Fragment bit (false for IPv6, which has none: see [`IpVersion`]).
    #[inline]
    pub fn df(&self) -> bool {
        self.flags_frag & ipv4::FLAG_DF != 0
    }

    /// An IPv4 fragment: More Fragments set or a non-zero offset. IPv6 fragments are known by
    /// their Fragment header, found by walking from [`Ip::l4`].
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_frag & (ipv4::FLAG_MF | ipv4::FRAG_OFFSET_MASK) != 0
    }

    /// The first IPv4 fragment: More Fragments set at offset 0.
    #[inline]
    pub fn is_first_fragment(&self) -> bool {
        self.flags_frag & (ipv4::FLAG_MF | ipv4::FRAG_OFFSET_MASK) == ipv4::FLAG_MF
    }

    /// Where the packet ends: as its length field says when that is consistent (not below the
    /// header, not past the frame; for IPv6 not 0), else at the end of the frame.
    #[inline]
    pub fn end(&self) -> usize {
        self.end
    }

    /// [`Ip::end`] only when the length field gave it.
    #[inline]
    pub fn exact_end(&self) -> Option<usize> {
        self.len_ok.then_some(self.end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::ETHERTYPE_MACSEC;
    use proptest::collection::vec;
    use proptest::prelude::*;
    use proptest::sample::select;

    /// MACs, the tags (TPID, VLAN ID), then `ethertype` and `payload`.
    fn frame(tags: &[(u16, u16)], ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        for (tpid, vid) in tags {
            f.extend(tpid.to_be_bytes());
            f.extend(vid.to_be_bytes());
        }
        f.extend(ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// An IPv4 header with DS byte `ds`, flags `flags` and total length `total`, then `rest`.
    fn v4(ds: u8, flags: u16, total: u16, rest: &[u8]) -> Vec<u8> {
        let mut ip = vec![0x45, ds];
        ip.extend(total.to_be_bytes());
        ip.extend([0, 1]);
        ip.extend(flags.to_be_bytes());
        ip.extend([64, 6, 0, 0, 198, 19, 0, 1, 198, 19, 0, 2]);
        ip.extend_from_slice(rest);
        ip
    }

    #[test]
    fn untagged_and_up_to_three_tags_of_any_kind() {
        let ip = v4(0, 0, 28, &[0; 8]);
        let plain = Frame::parse(&frame(&[], ETHERTYPE_IPV4, &ip)).unwrap();
        assert_eq!((plain.l2_len(), plain.ethertype()), (14, ETHERTYPE_IPV4));
        assert_eq!(plain.ip().map(|i| (i.l3(), i.l4(), i.end())), Some((14, 34, 42)));
        for tags in [
            &[(ETHERTYPE_VLAN, 42)][..],
            &[(ETHERTYPE_QINQ, 7), (ETHERTYPE_VLAN, 42)],
            &[(ethernet::ETHERTYPE_VLAN_DOUBLE, 7), (ETHERTYPE_VLAN, 42)],
            &[(ETHERTYPE_QINQ, 1), (ETHERTYPE_QINQ, 2), (ETHERTYPE_VLAN, 3)],
        ] {
            let v = Frame::parse(&frame(tags, ETHERTYPE_IPV4, &ip)).unwrap();
            let l3 = 14 + 4 * tags.len();
            assert_eq!((v.l2_len(), v.ethertype()), (l3, ETHERTYPE_IPV4), "{tags:x?}");
            assert_eq!(v.ip().map(|i| (i.l3(), i.l4(), i.end())), Some((l3, l3 + 20, l3 + 28)));
        }
        let four = [(ETHERTYPE_VLAN, 1); 4];
        let v = Frame::parse(&frame(&four, ETHERTYPE_IPV4, &ip)).unwrap();
        assert_eq!((v.l2_len(), v.ethertype(), v.ip()), (MAX_L2_LEN, ETHERTYPE_VLAN, None), "a fourth tag");
    }

    #[test]
    fn runts_cut_tags_macsec_and_other_ethertypes_are_not_ip() {
        assert_eq!(Frame::parse(&[0u8; 13]), None);
        let ip = v4(0, 0, 20, &[]);
        let tagged = frame(&[(ETHERTYPE_QINQ, 7), (ETHERTYPE_VLAN, 42)], ETHERTYPE_IPV4, &ip);
        for cut in [14, 16, 17, 19, 21, 22] {
            let v = Frame::parse(&tagged[..cut]).unwrap();
            assert_eq!(v.ip(), None, "cut at {cut}");
            assert!(is_vlan_tag(v.ethertype()) || cut == 22, "cut at {cut}: {v:?}");
        }
        // An integrity-only SecTAG (TCI 0, no SCI) before an IPv4 packet: still opaque.
        let macsec = [&[0u8, 0, 0, 0, 0, 1][..], &ETHERTYPE_IPV4.to_be_bytes(), &ip].concat();
        let v = Frame::parse(&frame(&[], ETHERTYPE_MACSEC, &macsec)).unwrap();
        assert_eq!((v.l2_len(), v.ethertype(), v.ip()), (14, ETHERTYPE_MACSEC, None));
        let v = Frame::parse(&frame(&[(ETHERTYPE_VLAN, 1)], ETHERTYPE_MACSEC, &macsec)).unwrap();
        assert_eq!((v.l2_len(), v.ethertype(), v.ip()), (18, ETHERTYPE_MACSEC, None));
        let arp = Frame::parse(&frame(&[], ethernet::ETHERTYPE_ARP, &[0; 28])).unwrap();
        assert_eq!((arp.ethertype(), arp.ip()), (ethernet::ETHERTYPE_ARP, None));
    }

    #[test]
    fn the_version_must_agree_and_the_header_fit() {
        let ip = v4(0, 0, 20, &[]);
        assert_eq!(
            Frame::parse(&frame(&[], ETHERTYPE_IPV6, &[&ip[..], &[0; 20]].concat())).unwrap().ip(),
            None
        );
        let mut six = [0u8; 40];
        six[0] = 0x60;
        assert_eq!(Frame::parse(&frame(&[], ETHERTYPE_IPV4, &six)).unwrap().ip(), None);
        assert!(Frame::parse(&frame(&[], ETHERTYPE_IPV6, &six)).unwrap().ip().is_some());
        assert_eq!(Frame::parse(&frame(&[], ETHERTYPE_IPV6, &six[..39])).unwrap().ip(), None);
        assert_eq!(Frame::parse(&frame(&[], ETHERTYPE_IPV4, &ip[..19])).unwrap().ip(), None);
        let mut options = ip.clone();
        options[0] = 0x46;
        assert_eq!(Frame::parse(&frame(&[], ETHERTYPE_IPV4, &options)).unwrap().ip(), None, "options cut");
        options.extend([1; 4]);
        let v = Frame::parse(&frame(&[], ETHERTYPE_IPV4, &options)).unwrap();
        assert_eq!(v.ip().map(|i| (i.l4(), i.header_len())), Some((38, 24)));
        let mut ihl4 = ip;
        ihl4[0] = 0x44;
        assert_eq!(Frame::parse(&frame(&[], ETHERTYPE_IPV4, &ihl4)).unwrap().ip(), None, "IHL below 5");
    }

    #[test]
    fn fields_lengths_and_fragments() {
        let ip = v4(0xb9, ipv4::FLAG_DF, 28, &[0; 8]);
        let padded = frame(&[], ETHERTYPE_IPV4, &[&ip[..], &[0xee; 10]].concat());
        let v = *Frame::parse(&padded).unwrap().ip().unwrap();
        assert_eq!(
            (v.version(), v.proto(), v.ds(), v.df(), v.is_fragment()),
            (IpVersion::V4, 6, 0xb9, true, false)
        );
        assert_eq!((v.end(), v.exact_end()), (42, Some(42)), "padding excluded");
        for total in [19, 200] {
            let f = frame(&[], ETHERTYPE_IPV4, &v4(0, 0, total, &[0; 8]));
            let v = *Frame::parse(&f).unwrap().ip().unwrap();
            assert_eq!((v.end(), v.exact_end()), (f.len(), None), "total length {total}");
        }
        let first =
            *Frame::parse(&frame(&[], ETHERTYPE_IPV4, &v4(0, ipv4::FLAG_MF, 20, &[]))).unwrap().ip().unwrap();
        assert!(first.is_fragment() && first.is_first_fragment() && !first.df());
        let later = *Frame::parse(&frame(&[], ETHERTYPE_IPV4, &v4(0, 185, 20, &[]))).unwrap().ip().unwrap();
        assert!(later.is_fragment() && !later.is_first_fragment());
        let mut six = vec![0x62, 0xe5, 0x43, 0x21, 0, 8, 17, 64];
        six.extend([0; 32]);
        six.extend([0; 8]);
        let v = *Frame::parse(&frame(&[], ETHERTYPE_IPV6, &six)).unwrap().ip().unwrap();
        assert_eq!(
            (v.version(), v.proto(), v.ds(), v.l4(), v.exact_end()),
            (IpVersion::V6, 17, 0x2e, 54, Some(62))
        );
        assert!(!v.df() && !v.is_fragment());
        six[5] = 0;
        let v = *Frame::parse(&frame(&[], ETHERTYPE_IPV6, &six)).unwrap().ip().unwrap();
        assert_eq!((v.end(), v.exact_end()), (62, None), "payload length 0: to the end of the frame");
    }

    proptest! {
        /// Whatever the bytes, what the view says lies inside the frame, in order: its users
        /// slice with it unchecked.
        #[test]
        fn offsets_stay_inside_the_frame(
            mut f in vec(any::<u8>(), 0..120),
            types in vec(select(vec![0x0800u16, 0x86dd, 0x8100, 0x88a8, 0x9100, 0x88e5]), 4),
            nibble in select(vec![0x40u8, 0x60, 0x45, 0x4f]),
        ) {
            // Tag-like and IP-like EtherTypes where the walk may look for them.
            for (i, t) in types.iter().enumerate() {
                if let Some(b) = f.get_mut(12 + 4 * i..14 + 4 * i) {
                    b.copy_from_slice(&t.to_be_bytes());
                }
            }
            if let Some(v) = Frame::parse(&f) {
                prop_assert!(v.l2_len() <= f.len().min(MAX_L2_LEN));
                if let Some(ip) = v.ip() {
                    prop_assert!(ip.l3() == v.l2_len() && ip.l3() + 20 <= ip.l4() && ip.l4() <= ip.end());
                    prop_assert!(ip.end() <= f.len());
                }
            } else {
                prop_assert!(f.len() < 14);
            }
            // An IP header right after the Ethernet header.
            if let Some(b) = f.get_mut(14) {
                *b = nibble;
            }
            if let Some(ip) = Frame::parse(&f).and_then(|v| v.ip().copied()) {
                prop_assert!(ip.l4() <= ip.end() && ip.end() <= f.len());
            }
        }
    }
}
