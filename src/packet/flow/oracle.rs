//! The hand-written flow hash against etherparse, the oracle: on arbitrary bytes, on frames
//! built from random valid and invalid layers (VLAN and MACsec tags, IPv4 with options and an
//! Authentication Header, IPv6 extension chains, fragments, TCP and UDP, inconsistent length
//! fields), with truncations and single-byte corruptions, both give the same hash.
//!
//! Where the two differ by design, the oracle is told (see [`reference`]): vxtap's frame view
//! ([`crate::wire::frame`]) treats a MACsec frame as opaque and an IP header whose version
//! disagrees with its EtherType as no IP header, where etherparse walks an integrity-only
//! SecTAG and goes by the version nibble alone.

use super::*;
use crate::wire::ethernet::macsec;
use etherparse::{ether_type, LaxLinkExtSlice, LaxNetSlice, LaxSlicedPacket, LinkSlice, TransportSlice};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{select, Index};

/// The hash as vxtap computed it with etherparse's lax slicing, before the hand parser; but for
/// a frame with a MACsec tag, or whose IP version disagrees with the EtherType before it, only
/// the Ethernet header is hashed (the frame view's rule).
fn reference(frame: &[u8]) -> u32 {
    let Some(macs) = frame.get(..14) else {
        return 0;
    };
    let mut h = Mixer::new();
    h.bytes(macs);
    if let Ok(packet) = LaxSlicedPacket::from_ethernet(frame) {
        let ethertype = match (packet.link_exts.last(), &packet.link) {
            (Some(LaxLinkExtSlice::Vlan(v)), _) => Some(v.ether_type()),
            (None, Some(LinkSlice::Ethernet2(e))) => Some(e.ether_type()),
            _ => None,
        };
        let macsec = packet.link_exts.iter().any(|e| matches!(e, LaxLinkExtSlice::Macsec(_)));
        let agrees = match &packet.net {
            Some(LaxNetSlice::Ipv4(_)) => ethertype == Some(ether_type::IPV4),
            Some(LaxNetSlice::Ipv6(_)) => ethertype == Some(ether_type::IPV6),
            _ => false,
        };
        if macsec || !agrees {
            return h.finish();
        }
        match &packet.net {
            Some(LaxNetSlice::Ipv4(ip)) => {
                let hdr = ip.header();
                h.bytes(&hdr.source());
                h.bytes(&hdr.destination());
                h.word(u64::from(hdr.protocol().0));
            }
            Some(LaxNetSlice::Ipv6(ip)) => {
                let hdr = ip.header();
                h.bytes(&hdr.source());
                h.bytes(&hdr.destination());
                h.word(u64::from(ip.payload().ip_number.0));
            }
            Some(LaxNetSlice::Arp(_)) | None => {}
        }
        match &packet.transport {
            Some(TransportSlice::Tcp(t)) => {
                h.word(u64::from(t.source_port()) << 16 | u64::from(t.destination_port()))
            }
            Some(TransportSlice::Udp(u)) => {
                h.word(u64::from(u.source_port()) << 16 | u64::from(u.destination_port()))
            }
            _ => {}
        }
    }
    h.finish()
}

/// A length field: the value that matches what was built, or any value.
#[derive(Debug, Clone, Copy)]
enum Len {
    Exact,
    Raw(u16),
}

fn len_field() -> impl Strategy<Value = Len> {
    prop_oneof![3 => Just(Len::Exact), 1 => any::<u16>().prop_map(Len::Raw), 1 => (0u16..80).prop_map(Len::Raw)]
}

/// A link-layer tag between the MAC addresses and the IP header.
#[derive(Debug, Clone)]
enum Tag {
    Vlan {
        tpid: u16,
        tci: u16,
    },
    /// TCI/AN byte, short length (None: the exact length when below 48), packet number, SCI.
    Macsec {
        tci_an: u8,
        short_len: Option<u8>,
        pn: [u8; 4],
        sci: [u8; 8],
    },
}

fn tag() -> impl Strategy<Value = Tag> {
    let tci_an = prop_oneof![
        4 => select(vec![0x00u8, 0x20, 0x01, 0x22, 0x10, 0x40]),
        1 => select(vec![0x08u8, 0x04, 0x2c, 0x80]),
        1 => any::<u8>(),
    ];
    let short_len =
        prop_oneof![2 => Just(None), 1 => (0u8..64).prop_map(Some), 1 => any::<u8>().prop_map(Some)];
    prop_oneof![
        4 => (select(vec![0x8100u16, 0x88a8, 0x9100]), any::<u16>()).prop_map(|(tpid, tci)| Tag::Vlan { tpid, tci }),
        1 => (tci_an, short_len, any::<[u8; 4]>(), any::<[u8; 8]>())
            .prop_map(|(tci_an, short_len, pn, sci)| Tag::Macsec { tci_an, short_len, pn, sci }),
    ]
}

/// An extension header after the IP header (IPv4: only AH).
#[derive(Debug, Clone)]
enum Ext {
    /// Hop-by-Hop, Routing or Destination Options with this Hdr Ext Len.
    Raw {
        kind: u8,
        units: u8,
    },
    Frag {
        offset_flags: u16,
    },
    Auth {
        payload_len: u8,
    },
}

fn ext() -> impl Strategy<Value = Ext> {
    prop_oneof![
        (select(vec![protocol::IPV6_HOP_BY_HOP, protocol::IPV6_ROUTE, protocol::IPV6_DEST_OPTS]), 0u8..4)
            .prop_map(|(kind, units)| Ext::Raw { kind, units }),
        prop_oneof![select(vec![0u16, 1, 8, 9, 6, 0xfff8]), any::<u16>()]
            .prop_map(|offset_flags| Ext::Frag { offset_flags }),
        prop_oneof![3 => 1u8..6, 1 => Just(0u8)].prop_map(|payload_len| Ext::Auth { payload_len }),
    ]
}

impl Ext {
    fn kind(&self) -> u8 {
        match self {
            Ext::Raw { kind, .. } => *kind,
            Ext::Frag { .. } => protocol::IPV6_FRAG,
            Ext::Auth { .. } => protocol::AUTH,
        }
    }

    fn emit(&self, next: u8, fill: u8, out: &mut Vec<u8>) {
        let start = out.len();
        match *self {
            Ext::Raw { units, .. } => {
                out.extend([next, units]);
                out.resize(start + (usize::from(units) + 1) * 8, fill);
            }
            Ext::Frag { offset_flags } => {
                out.extend([next, 0]);
                out.extend(offset_flags.to_be_bytes());
                out.extend([fill; 4]);
            }
            Ext::Auth { payload_len } => {
                out.extend([next, payload_len, 0, 0]);
                out.resize(start + (usize::from(payload_len.max(1)) + 2) * 4, fill);
            }
        }
    }
}

/// The IP layer (or what stands in its place).
#[derive(Debug, Clone)]
enum L3 {
    V4 {
        ihl: u8,
        header: [u8; 20],
        options: Vec<u8>,
        total_len: Len,
        flags_frag: u16,
        auth: Option<Ext>,
    },
    V6 {
        header: [u8; 40],
        payload_len: Len,
        exts: Vec<Ext>,
    },
    /// Any bytes after an EtherType, first byte's version nibble 4 or 6 or anything.
    Raw {
        ethertype: u16,
        bytes: Vec<u8>,
    },
}

fn l3() -> impl Strategy<Value = L3> {
    let v4 = (
        prop_oneof![6 => Just(5u8), 2 => 6u8..16, 1 => 0u8..5],
        any::<[u8; 20]>(),
        vec(any::<u8>(), 40),
        len_field(),
        prop_oneof![select(vec![0u16, 0x4000, 0x2000, 0x0001, 0x2001, 0x00b9, 0x8000]), any::<u16>()],
        prop_oneof![3 => Just(None), 1 => (prop_oneof![3 => 1u8..6, 1 => Just(0u8)])
            .prop_map(|payload_len| Some(Ext::Auth { payload_len }))],
    )
        .prop_map(|(ihl, header, options, total_len, flags_frag, auth)| L3::V4 {
            ihl,
            header,
            options,
            total_len,
            flags_frag,
            auth,
        });
    let v6 = (any::<[u8; 40]>(), len_field(), prop_oneof![2 => Just(vec![]), 3 => vec(ext(), 1..5)])
        .prop_map(|(header, payload_len, exts)| L3::V6 { header, payload_len, exts });
    let raw = (
        prop_oneof![select(vec![0x0800u16, 0x86dd, 0x0806, 0x8100, 0x88e5]), any::<u16>()],
        vec(any::<u8>(), 0..64),
        select(vec![0x40u8, 0x60, 0x00, 0xf0]),
    )
        .prop_map(|(ethertype, mut bytes, nibble)| {
            if let Some(b) = bytes.first_mut() {
                *b = nibble | (*b & 0x0f);
            }
            L3::Raw { ethertype, bytes }
        });
    prop_oneof![4 => v4, 4 => v6, 1 => raw]
}

/// The transport layer: its IP protocol number is right most of the time.
#[derive(Debug, Clone)]
enum L4 {
    Tcp { header: [u8; 20], data_offset: u8, options: Vec<u8> },
    Udp { header: [u8; 8] },
    Other { proto: u8, bytes: Vec<u8> },
}

fn l4() -> impl Strategy<Value = L4> {
    prop_oneof![
        3 => (any::<[u8; 20]>(), prop_oneof![4 => 5u8..9, 1 => 0u8..16], vec(any::<u8>(), 40))
            .prop_map(|(header, data_offset, options)| L4::Tcp { header, data_offset, options }),
        3 => any::<[u8; 8]>().prop_map(|header| L4::Udp { header }),
        1 => (prop_oneof![select(vec![protocol::ICMP, protocol::ICMPV6, 2, 0, 44, 51]), any::<u8>()],
              vec(any::<u8>(), 0..24))
            .prop_map(|(proto, bytes)| L4::Other { proto, bytes }),
    ]
}

impl L4 {
    fn proto(&self) -> u8 {
        match self {
            L4::Tcp { .. } => protocol::TCP,
            L4::Udp { .. } => protocol::UDP,
            L4::Other { proto, .. } => *proto,
        }
    }

    fn emit(&self, out: &mut Vec<u8>) {
        match self {
            L4::Tcp { header, data_offset, options } => {
                let start = out.len();
                out.extend(header);
                out[start + tcp::field::DATA_OFF] = data_offset << 4 | (header[12] & 0x0f);
                let opts = (usize::from(*data_offset) * 4).saturating_sub(tcp::HEADER_LEN);
                out.extend(&options[..opts]);
            }
            L4::Udp { header } => out.extend(header),
            L4::Other { bytes, .. } => out.extend(bytes),
        }
    }
}

#[derive(Debug, Clone)]
struct Spec {
    macs: [u8; 12],
    tags: Vec<Tag>,
    l3: L3,
    l4: L4,
    /// The IP protocol of the transport when it should not match `l4`.
    wrong_proto: Option<u8>,
    payload: Vec<u8>,
    /// Bytes after the IP packet (Ethernet padding).
    trailer: Vec<u8>,
    /// Where to cut the frame, if at all.
    cut: Option<Index>,
    /// A byte to overwrite, if any.
    corrupt: Option<(Index, u8)>,
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        any::<[u8; 12]>(),
        prop_oneof![3 => Just(vec![]), 2 => vec(tag(), 1..3), 1 => vec(tag(), 3..6)],
        l3(),
        l4(),
        prop_oneof![6 => Just(None), 1 => any::<u8>().prop_map(Some)],
        vec(any::<u8>(), 0..48),
        prop_oneof![3 => Just(vec![]), 1 => vec(any::<u8>(), 1..12)],
        prop_oneof![1 => Just(None), 1 => any::<Index>().prop_map(Some)],
        prop_oneof![2 => Just(None), 1 => any::<(Index, u8)>().prop_map(Some)],
    )
        .prop_map(|(macs, tags, l3, l4, wrong_proto, payload, trailer, cut, corrupt)| Spec {
            macs,
            tags,
            l3,
            l4,
            wrong_proto,
            payload,
            trailer,
            cut,
            corrupt,
        })
}

/// Writes the chain of extension headers, each naming the next, then the transport and payload.
fn emit_chain(exts: &[Ext], transport: u8, l4: &L4, payload: &[u8], out: &mut Vec<u8>) {
    for (i, e) in exts.iter().enumerate() {
        let next = exts.get(i + 1).map_or(transport, Ext::kind);
        e.emit(next, 0xa0 | i as u8, out);
    }
    l4.emit(out);
    out.extend(payload);
}

impl Spec {
    fn frame(&self) -> Vec<u8> {
        let mut f = self.macs.to_vec();
        // Short lengths to fill in once the frame is complete: (offset of the SL byte, offset
        // of the EtherType the user data starts with).
        let mut short_lens = Vec::new();
        for t in &self.tags {
            match t {
                Tag::Vlan { tpid, tci } => {
                    f.extend(tpid.to_be_bytes());
                    f.extend(tci.to_be_bytes());
                }
                Tag::Macsec { tci_an, short_len, pn, sci } => {
                    f.extend(ethernet::ETHERTYPE_MACSEC.to_be_bytes());
                    f.push(*tci_an);
                    match short_len {
                        Some(sl) => f.push(*sl),
                        None => {
                            short_lens.push(f.len());
                            f.push(0);
                        }
                    }
                    f.extend(pn);
                    if tci_an & macsec::TCI_SC != 0 {
                        f.extend(sci);
                    }
                }
            }
        }
        let transport = self.wrong_proto.unwrap_or(self.l4.proto());
        match &self.l3 {
            L3::V4 { ihl, header, options, total_len, flags_frag, auth } => {
                f.extend(ethernet::ETHERTYPE_IPV4.to_be_bytes());
                let start = f.len();
                f.extend(header);
                f[start] = 0x40 | ihl;
                f[start + ipv4::field::FLAGS_FRAG.start..start + ipv4::field::FLAGS_FRAG.end]
                    .copy_from_slice(&flags_frag.to_be_bytes());
                f.extend(&options[..(usize::from(*ihl) * 4).saturating_sub(ipv4::HEADER_LEN)]);
                let exts: Vec<Ext> = auth.iter().cloned().collect();
                f[start + ipv4::field::PROTOCOL] = exts.first().map_or(transport, Ext::kind);
                emit_chain(&exts, transport, &self.l4, &self.payload, &mut f);
                let len = match total_len {
                    Len::Exact => (f.len() - start) as u16,
                    Len::Raw(v) => *v,
                };
                f[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
            }
            L3::V6 { header, payload_len, exts } => {
                f.extend(ethernet::ETHERTYPE_IPV6.to_be_bytes());
                let start = f.len();
                f.extend(header);
                f[start] = 0x60 | (header[0] & 0x0f);
                f[start + ipv6::field::NEXT_HEADER] = exts.first().map_or(transport, Ext::kind);
                emit_chain(exts, transport, &self.l4, &self.payload, &mut f);
                let len = match payload_len {
                    Len::Exact => (f.len() - start - ipv6::HEADER_LEN) as u16,
                    Len::Raw(v) => *v,
                };
                f[start + 4..start + 6].copy_from_slice(&len.to_be_bytes());
            }
            L3::Raw { ethertype, bytes } => {
                f.extend(ethertype.to_be_bytes());
                f.extend(bytes);
            }
        }
        f.extend(&self.trailer);
        for at in short_lens {
            // The user data from the EtherType after this tag's SecTAG to the end.
            let sci = if f[at - 1] & macsec::TCI_SC != 0 { macsec::SCI_LEN } else { 0 };
            let data = f.len() - (at + 5 + sci);
            f[at] = if data < 48 { data as u8 } else { 0 };
        }
        if let Some((i, v)) = self.corrupt {
            let i = i.index(f.len());
            f[i] = v;
        }
        if let Some(cut) = self.cut {
            f.truncate(cut.index(f.len() + 1));
        }
        f
    }
}

/// Frames that exercise every branch, built by hand, and whether their ports count.
fn fixed_specs() -> Vec<(Spec, bool)> {
    let udp = L4::Udp { header: [0x9c, 0x40, 0x12, 0xb5, 0, 16, 0, 0] };
    let tcp = L4::Tcp { header: [7; 20], data_offset: 8, options: vec![1; 40] };
    let base = |tags: Vec<Tag>, l3: L3, l4: L4| Spec {
        macs: [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1],
        tags,
        l3,
        l4,
        wrong_proto: None,
        payload: b"payload!".to_vec(),
        trailer: vec![],
        cut: None,
        corrupt: None,
    };
    let v4 = |auth, flags_frag| L3::V4 {
        ihl: 6,
        header: [0x45; 20],
        options: vec![1; 40],
        total_len: Len::Exact,
        flags_frag,
        auth,
    };
    let v6 = |exts| L3::V6 { header: [0x11; 40], payload_len: Len::Exact, exts };
    let vlan = Tag::Vlan { tpid: 0x8100, tci: 42 };
    let macsec = Tag::Macsec { tci_an: 0x20, short_len: None, pn: [0, 0, 0, 1], sci: [9; 8] };
    let chain = vec![
        Ext::Raw { kind: protocol::IPV6_HOP_BY_HOP, units: 0 },
        Ext::Raw { kind: protocol::IPV6_ROUTE, units: 1 },
        Ext::Frag { offset_flags: 0 },
        Ext::Auth { payload_len: 4 },
        Ext::Raw { kind: protocol::IPV6_DEST_OPTS, units: 0 },
    ];
    let mut with_trailer = base(vec![], v4(None, 0), udp.clone());
    with_trailer.trailer = vec![0xee; 6];
    vec![
        (base(vec![], v4(None, 0x4000), tcp.clone()), true),
        (base(vec![vlan.clone()], v4(Some(Ext::Auth { payload_len: 4 }), 0), udp.clone()), true),
        (base(vec![Tag::Vlan { tpid: 0x88a8, tci: 7 }, vlan.clone()], v6(vec![]), tcp.clone()), true),
        (base(vec![vlan.clone(), Tag::Vlan { tpid: 0x9100, tci: 9 }], v6(chain.clone()), udp.clone()), true),
        // MACsec is opaque: a secure channel's frames are hashed on their Ethernet header.
        (base(vec![macsec.clone(), vlan.clone()], v6(chain), udp.clone()), false),
        (base(vec![macsec], v4(None, 0), udp.clone()), false),
        (with_trailer, true),
        (base(vec![], v4(None, 0x2000), udp.clone()), false),
        (base(vec![], v6(vec![Ext::Frag { offset_flags: 1 }]), tcp.clone()), false),
        (base(vec![vlan.clone(), vlan.clone(), vlan.clone(), vlan], v4(None, 0), tcp), false),
    ]
}

#[test]
fn fixed_frames_and_every_truncation_agree_with_etherparse() {
    for (s, _) in fixed_specs() {
        let f = s.frame();
        for len in 0..=f.len() {
            assert_eq!(flow_hash(&f[..len]), reference(&f[..len]), "{:02x?}", &f[..len]);
        }
    }
}

#[test]
fn fixed_frames_hash_their_ports_unless_fragments_or_too_deep() {
    // Agreeing with the oracle is not enough if neither looked at the transport.
    for (s, counted) in fixed_specs() {
        let mut other = s.clone();
        match &mut other.l4 {
            L4::Tcp { header, .. } => header[1] ^= 1,
            L4::Udp { header } => header[3] ^= 1,
            L4::Other { .. } => unreachable!(),
        }
        let (a, b) = (s.frame(), other.frame());
        assert_eq!(flow_hash(&a) != flow_hash(&b), counted, "{s:?}");
    }
}

#[test]
fn the_fixed_length_mixes_match_the_general_one() {
    let b: Vec<u8> = (0..16u8).map(|i| i.wrapping_mul(37) ^ 0x5a).collect();
    for (len, f) in [(4, Mixer::bytes4 as fn(&mut Mixer, &[u8])), (14, Mixer::bytes14), (16, Mixer::bytes16)]
    {
        let (mut a, mut r) = (Mixer::new(), Mixer::new());
        f(&mut a, &b[..len]);
        r.bytes(&b[..len]);
        assert_eq!(a.0, r.0, "{len} bytes");
    }
}

/// Cases per property: what a debug build checks in about two seconds, more when optimised
/// (CI runs the tests in release).
const CASES: u32 = if cfg!(debug_assertions) { 8_000 } else { 100_000 };

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn agrees_with_etherparse_on_arbitrary_bytes(f in vec(any::<u8>(), 0..160)) {
        prop_assert_eq!(flow_hash(&f), reference(&f));
    }

    #[test]
    fn agrees_with_etherparse_on_ip_like_frames(
        mut f in vec(any::<u8>(), 14..160),
        ethertype in select(vec![0x0800u16, 0x86dd, 0x8100, 0x88a8, 0x9100, 0x88e5]),
        nibble in select(vec![0x40u8, 0x60]),
    ) {
        f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        if let Some(b) = f.get_mut(14) {
            *b = nibble | (*b & 0x0f);
        }
        prop_assert_eq!(flow_hash(&f), reference(&f));
    }

    #[test]
    fn agrees_with_etherparse_on_structured_frames(s in spec()) {
        let f = s.frame();
        prop_assert_eq!(flow_hash(&f), reference(&f), "{:02x?}", f);
    }
}
