//! Builds whole frames byte by byte: Ethernet (with VLAN tags), IPv4, IPv6, ARP, TCP, UDP and
//! ICMP, with every length and checksum right. The fixtures of the tests and benchmarks, and
//! the frames `vxtap bench` times, come from here.
//!
//! ```
//! use vxtap::wire::build::{Ethernet, Ipv4, Tcp};
//! use vxtap::wire::tcp;
//! use vxtap::MacAddr;
//!
//! let (a, b) = (MacAddr([2, 0, 0, 0, 0, 1]), MacAddr([2, 0, 0, 0, 0, 2]));
//! let syn = Ethernet::new(b, a)
//!     .vlan(42)
//!     .ipv4(Ipv4::new([198, 19, 0, 1], [198, 19, 0, 2]).ttl(61))
//!     .tcp(Tcp::new(40000, 5201).seq(1).flags(tcp::SYN).mss(1460))
//!     .build();
//! assert_eq!(syn.len(), 18 + 20 + 24);
//! ```
//!
//! Each layer is a plain value with public fields and chainable setters, so a test can also
//! change a field after the fact (`ip.ttl = 1`) before handing the layer to [`Ethernet`]. What the
//! builder computes — lengths, IHL and data offset, the IP protocol, checksums — is written
//! when [`Ethernet::build`] runs; a test that wants one of them wrong edits the built bytes.
//!
//! Pure and independent of the rest of vxtap: its checksum is the plain RFC 1071 sum, not the
//! vectorised one of the offloads, so that a test of that code has an independent reference.
//! The other way round, reading a frame's headers, is [`super::frame::Frame`], the view the
//! packet path parses once per frame.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::ethernet::{ETHERTYPE_ARP, ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_QINQ, ETHERTYPE_VLAN};
use super::ip::protocol;
use super::ipv4::FLAG_DF;
use super::mac::MacAddr;

/// IEEE 802 Local Experimental EtherType 1: the EtherType of a frame with no network layer set.
pub const ETHERTYPE_EXPERIMENTAL: u16 = 0x88b5;
/// The shortest Ethernet frame without its FCS, what [`Ethernet::pad_to`] is usually given.
pub const MIN_FRAME_LEN: usize = 60;
/// The IP protocol written for a payload with no transport header and no protocol set: 253,
/// reserved for experiments (RFC 3692).
pub const PROTOCOL_EXPERIMENTAL: u8 = 253;
/// IPv6's "No Next Header" (RFC 8200 §4.7), written after an IPv6 header whose payload has no
/// transport header and no protocol set.
pub const IPV6_NO_NEXT_HEADER: u8 = 59;

/// A VLAN tag: the TPID that announces it and the tag control information (priority, DEI and
/// VLAN ID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tag {
    pub tpid: u16,
    pub tci: u16,
}

/// What follows the Ethernet header (and its tags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Net {
    /// Only the EtherType: the frame's payload follows the header as it is.
    Raw(u16),
    Ipv4(Ipv4),
    Ipv6(Ipv6),
    Arp(Arp),
}

/// The transport header after the IP header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    Tcp(Tcp),
    Udp(Udp),
    /// ICMP after IPv4, ICMPv6 after IPv6.
    Icmp(Icmp),
}

/// A whole Ethernet frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ethernet {
    pub dst: MacAddr,
    pub src: MacAddr,
    /// VLAN tags, outermost first.
    pub tags: Vec<Tag>,
    pub net: Net,
    pub transport: Option<Transport>,
    /// The innermost payload: after the transport header, or after the network header if there
    /// is none, or after the EtherType for [`Net::Raw`].
    pub payload: Vec<u8>,
    /// The frame is padded with zeros to this length when shorter (Ethernet padding, not counted
    /// in any length field).
    pub min_len: usize,
}

impl Ethernet {
    /// A frame from `src` to `dst`, untagged, of EtherType [`ETHERTYPE_EXPERIMENTAL`], empty.
    pub fn new(dst: MacAddr, src: MacAddr) -> Ethernet {
        Ethernet {
            dst,
            src,
            tags: Vec::new(),
            net: Net::Raw(ETHERTYPE_EXPERIMENTAL),
            transport: None,
            payload: Vec::new(),
            min_len: 0,
        }
    }

    /// Adds an 802.1Q tag with VLAN ID `vid` (priority 0) inside the tags already there.
    pub fn vlan(self, vid: u16) -> Ethernet {
        self.tag(ETHERTYPE_VLAN, vid)
    }

    /// Adds Q-in-Q tags: an 802.1ad service tag with `service_vid`, then an 802.1Q customer tag
    /// with `customer_vid`.
    pub fn qinq(self, service_vid: u16, customer_vid: u16) -> Ethernet {
        self.tag(ETHERTYPE_QINQ, service_vid).tag(ETHERTYPE_VLAN, customer_vid)
    }

    /// Adds a tag of any TPID and TCI inside the tags already there.
    pub fn tag(mut self, tpid: u16, tci: u16) -> Ethernet {
        self.tags.push(Tag { tpid, tci });
        self
    }

    /// No network layer: `ethertype`, then the payload as it is.
    pub fn ethertype(mut self, ethertype: u16) -> Ethernet {
        self.net = Net::Raw(ethertype);
        self
    }

    pub fn ipv4(mut self, ip: Ipv4) -> Ethernet {
        self.net = Net::Ipv4(ip);
        self
    }

    pub fn ipv6(mut self, ip: Ipv6) -> Ethernet {
        self.net = Net::Ipv6(ip);
        self
    }

    pub fn arp(mut self, arp: Arp) -> Ethernet {
        self.net = Net::Arp(arp);
        self
    }

    pub fn tcp(mut self, tcp: Tcp) -> Ethernet {
        self.transport = Some(Transport::Tcp(tcp));
        self
    }

    pub fn udp(mut self, udp: Udp) -> Ethernet {
        self.transport = Some(Transport::Udp(udp));
        self
    }

    pub fn icmp(mut self, icmp: Icmp) -> Ethernet {
        self.transport = Some(Transport::Icmp(icmp));
        self
    }

    /// The innermost payload (see [`Ethernet::payload`](Ethernet#structfield.payload)).
    pub fn payload(mut self, payload: &[u8]) -> Ethernet {
        self.payload = payload.to_vec();
        self
    }

    /// Pads the built frame with zeros to at least `len` bytes ([`MIN_FRAME_LEN`] for a frame
    /// as it is on the wire).
    pub fn pad_to(mut self, len: usize) -> Ethernet {
        self.min_len = len;
        self
    }

    /// The frame's bytes.
    ///
    /// Panics if a transport header is set without an IP header under it.
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(18 + 60 + 60 + self.payload.len());
        f.extend(self.dst.0);
        f.extend(self.src.0);
        for t in &self.tags {
            f.extend(t.tpid.to_be_bytes());
            f.extend(t.tci.to_be_bytes());
        }
        let ethertype = match &self.net {
            Net::Raw(t) => *t,
            Net::Ipv4(_) => ETHERTYPE_IPV4,
            Net::Ipv6(_) => ETHERTYPE_IPV6,
            Net::Arp(_) => ETHERTYPE_ARP,
        };
        f.extend(ethertype.to_be_bytes());
        match &self.net {
            Net::Raw(_) | Net::Arp(_) => {
                assert!(self.transport.is_none(), "a transport header needs an IP header under it");
                if let Net::Arp(a) = &self.net {
                    a.emit(&mut f);
                }
                f.extend(&self.payload);
            }
            Net::Ipv4(ip) => {
                let (proto, upper) = self.upper(|proto, len| pseudo_v4(ip.src, ip.dst, proto, len), false);
                ip.emit(&mut f, ip.protocol.or(proto).unwrap_or(PROTOCOL_EXPERIMENTAL), &upper);
            }
            Net::Ipv6(ip) => {
                let (proto, upper) = self.upper(|proto, len| pseudo_v6(ip.src, ip.dst, proto, len), true);
                ip.emit(&mut f, ip.protocol.or(proto).unwrap_or(IPV6_NO_NEXT_HEADER), &upper);
            }
        }
        if f.len() < self.min_len {
            f.resize(self.min_len, 0);
        }
        f
    }

    /// The transport header and payload, checksummed, and the transport's protocol number;
    /// `pseudo` sums the pseudo-header of a protocol and upper-layer length.
    fn upper(&self, pseudo: impl Fn(u8, usize) -> u32, v6: bool) -> (Option<u8>, Vec<u8>) {
        let mut out = Vec::with_capacity(60 + self.payload.len());
        let (proto, checksum_at) = match &self.transport {
            None => {
                out.extend(&self.payload);
                return (None, out);
            }
            Some(Transport::Tcp(t)) => {
                t.emit(&mut out);
                (protocol::TCP, TCP_CHECKSUM)
            }
            Some(Transport::Udp(u)) => {
                out.extend(u.src_port.to_be_bytes());
                out.extend(u.dst_port.to_be_bytes());
                out.extend(length_field(8 + self.payload.len()).to_be_bytes());
                out.extend([0, 0]);
                (protocol::UDP, UDP_CHECKSUM)
            }
            Some(Transport::Icmp(i)) => {
                out.extend([i.kind, i.code, 0, 0]);
                out.extend(&i.body);
                (if v6 { protocol::ICMPV6 } else { protocol::ICMP }, ICMP_CHECKSUM)
            }
        };
        out.extend(&self.payload);
        // ICMP for IPv4 sums the message alone; ICMPv6, TCP and UDP add a pseudo-header.
        let sum = if proto == protocol::ICMP { 0 } else { pseudo(proto, out.len()) };
        let mut checksum = finish(add_bytes(sum, &out));
        if proto == protocol::UDP && checksum == 0 {
            checksum = 0xffff; // RFC 768: a computed 0 is sent as all ones; 0 means "none".
        }
        out[checksum_at..checksum_at + 2].copy_from_slice(&checksum.to_be_bytes());
        (Some(proto), out)
    }
}

/// Where the checksum sits in each transport header.
const TCP_CHECKSUM: usize = 16;
const UDP_CHECKSUM: usize = 6;
const ICMP_CHECKSUM: usize = 2;

/// An IPv4 header (RFC 791).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv4 {
    pub src: [u8; 4],
    pub dst: [u8; 4],
    /// DSCP (high six bits) and ECN (low two bits).
    pub tos: u8,
    pub ident: u16,
    /// The flags and the fragment offset, as on the wire ([`super::ipv4::FLAG_DF`] and the
    /// others).
    pub flags_frag: u16,
    pub ttl: u8,
    /// The Protocol field; by default the transport's, or [`PROTOCOL_EXPERIMENTAL`].
    pub protocol: Option<u8>,
    /// Options, padded with zeros (End of Option List) to a multiple of 4 bytes.
    pub options: Vec<u8>,
}

impl Ipv4 {
    /// A header from `src` to `dst` as Linux sends one over TCP: DF set, TTL 64, ID 0, TOS 0.
    pub fn new(src: impl Into<Ipv4Addr>, dst: impl Into<Ipv4Addr>) -> Ipv4 {
        Ipv4 {
            src: src.into().octets(),
            dst: dst.into().octets(),
            tos: 0,
            ident: 0,
            flags_frag: FLAG_DF,
            ttl: 64,
            protocol: None,
            options: Vec::new(),
        }
    }

    /// The whole DS byte: DSCP and ECN.
    pub fn tos(mut self, tos: u8) -> Ipv4 {
        self.tos = tos;
        self
    }

    pub fn ident(mut self, ident: u16) -> Ipv4 {
        self.ident = ident;
        self
    }

    /// The flags and fragment offset word, as on the wire.
    pub fn flags_frag(mut self, flags_frag: u16) -> Ipv4 {
        self.flags_frag = flags_frag;
        self
    }

    /// Clears Don't Fragment.
    pub fn may_fragment(mut self) -> Ipv4 {
        self.flags_frag &= !FLAG_DF;
        self
    }

    pub fn ttl(mut self, ttl: u8) -> Ipv4 {
        self.ttl = ttl;
        self
    }

    /// The Protocol field, whatever the transport.
    pub fn protocol(mut self, protocol: u8) -> Ipv4 {
        self.protocol = Some(protocol);
        self
    }

    pub fn options(mut self, options: &[u8]) -> Ipv4 {
        self.options = options.to_vec();
        self
    }

    fn emit(&self, f: &mut Vec<u8>, protocol: u8, upper: &[u8]) {
        let start = f.len();
        let options = self.options.len().next_multiple_of(4);
        let header_len = 20 + options;
        f.push(0x40 | (header_len / 4) as u8);
        f.push(self.tos);
        f.extend(length_field(header_len + upper.len()).to_be_bytes());
        f.extend(self.ident.to_be_bytes());
        f.extend(self.flags_frag.to_be_bytes());
        f.extend([self.ttl, protocol, 0, 0]);
        f.extend(self.src);
        f.extend(self.dst);
        f.extend(&self.options);
        f.resize(start + header_len, 0);
        let checksum = finish(add_bytes(0, &f[start..]));
        f[start + 10..start + 12].copy_from_slice(&checksum.to_be_bytes());
        f.extend(upper);
    }
}

/// An IPv6 header (RFC 8200) and its extension headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ipv6 {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub traffic_class: u8,
    /// The low 20 bits are written.
    pub flow_label: u32,
    pub hop_limit: u8,
    /// The protocol after the extension headers; by default the transport's, or
    /// [`IPV6_NO_NEXT_HEADER`].
    pub protocol: Option<u8>,
    /// Extension headers, in order; each names the next.
    pub extensions: Vec<Extension>,
}

/// An IPv6 extension header of the common layout (Hop-by-Hop, Routing, Destination Options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// Its protocol number ([`protocol::IPV6_HOP_BY_HOP`] and the others).
    pub kind: u8,
    /// What follows the Next Header and Hdr Ext Len bytes, padded with zeros (Pad1 options) to
    /// a whole number of 8-byte units.
    pub data: Vec<u8>,
}

impl Ipv6 {
    /// A header from `src` to `dst`: hop limit 64, traffic class and flow label 0.
    pub fn new(src: impl Into<Ipv6Addr>, dst: impl Into<Ipv6Addr>) -> Ipv6 {
        Ipv6 {
            src: src.into().octets(),
            dst: dst.into().octets(),
            traffic_class: 0,
            flow_label: 0,
            hop_limit: 64,
            protocol: None,
            extensions: Vec::new(),
        }
    }

    pub fn traffic_class(mut self, traffic_class: u8) -> Ipv6 {
        self.traffic_class = traffic_class;
        self
    }

    pub fn flow_label(mut self, flow_label: u32) -> Ipv6 {
        self.flow_label = flow_label;
        self
    }

    pub fn hop_limit(mut self, hop_limit: u8) -> Ipv6 {
        self.hop_limit = hop_limit;
        self
    }

    /// The protocol after the extension headers, whatever the transport.
    pub fn protocol(mut self, protocol: u8) -> Ipv6 {
        self.protocol = Some(protocol);
        self
    }

    /// Adds an extension header of protocol number `kind` after those already there.
    pub fn extension(mut self, kind: u8, data: &[u8]) -> Ipv6 {
        self.extensions.push(Extension { kind, data: data.to_vec() });
        self
    }

    fn emit(&self, f: &mut Vec<u8>, protocol: u8, upper: &[u8]) {
        let mut exts = Vec::new();
        for (i, e) in self.extensions.iter().enumerate() {
            let next = self.extensions.get(i + 1).map_or(protocol, |n| n.kind);
            let len = (2 + e.data.len()).next_multiple_of(8);
            let start = exts.len();
            exts.extend([next, (len / 8 - 1) as u8]);
            exts.extend(&e.data);
            exts.resize(start + len, 0);
        }
        let first = self.extensions.first().map_or(protocol, |e| e.kind);
        let word = 6 << 28 | u32::from(self.traffic_class) << 20 | (self.flow_label & 0x000f_ffff);
        f.extend(word.to_be_bytes());
        f.extend(length_field(exts.len() + upper.len()).to_be_bytes());
        f.extend([first, self.hop_limit]);
        f.extend(self.src);
        f.extend(self.dst);
        f.extend(exts);
        f.extend(upper);
    }
}

/// A TCP header (RFC 9293).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tcp {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    /// The flag bits ([`super::tcp::SYN`] and the others).
    pub flags: u8,
    /// The lowest reserved bit, once RFC 3540's NS.
    pub ns: bool,
    pub window: u16,
    pub urgent: u16,
    /// Options, padded with zeros (End of Option List) to a multiple of 4 bytes.
    pub options: Vec<u8>,
}

impl Tcp {
    /// A header from `src_port` to `dst_port`: no flags, sequence and acknowledgment numbers 0,
    /// window 65535, no options.
    pub fn new(src_port: u16, dst_port: u16) -> Tcp {
        Tcp {
            src_port,
            dst_port,
            seq: 0,
            ack: 0,
            flags: 0,
            ns: false,
            window: 65535,
            urgent: 0,
            options: Vec::new(),
        }
    }

    pub fn seq(mut self, seq: u32) -> Tcp {
        self.seq = seq;
        self
    }

    /// The acknowledgment number, and the ACK flag.
    pub fn ack(mut self, ack: u32) -> Tcp {
        self.ack = ack;
        self.flags |= super::tcp::ACK;
        self
    }

    /// Sets exactly these flags.
    pub fn flags(mut self, flags: u8) -> Tcp {
        self.flags = flags;
        self
    }

    pub fn window(mut self, window: u16) -> Tcp {
        self.window = window;
        self
    }

    /// Appends option bytes as they are.
    pub fn options(mut self, options: &[u8]) -> Tcp {
        self.options.extend_from_slice(options);
        self
    }

    /// Appends a Maximum Segment Size option.
    pub fn mss(self, mss: u16) -> Tcp {
        let [hi, lo] = mss.to_be_bytes();
        self.options(&[2, 4, hi, lo])
    }

    /// Appends two NOPs and a Timestamps option (RFC 7323), as Linux puts them on every segment.
    pub fn timestamps(self, value: u32, echo_reply: u32) -> Tcp {
        let mut o = vec![1, 1, 8, 10];
        o.extend(value.to_be_bytes());
        o.extend(echo_reply.to_be_bytes());
        self.options(&o)
    }

    /// The header, with its checksum field zero.
    fn emit(&self, out: &mut Vec<u8>) {
        let header_len = 20 + self.options.len().next_multiple_of(4);
        out.extend(self.src_port.to_be_bytes());
        out.extend(self.dst_port.to_be_bytes());
        out.extend(self.seq.to_be_bytes());
        out.extend(self.ack.to_be_bytes());
        out.extend([((header_len / 4) as u8) << 4 | u8::from(self.ns), self.flags]);
        out.extend(self.window.to_be_bytes());
        out.extend([0, 0]);
        out.extend(self.urgent.to_be_bytes());
        out.extend(&self.options);
        out.resize(header_len, 0);
    }
}

/// A UDP header (RFC 768).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Udp {
    pub src_port: u16,
    pub dst_port: u16,
}

impl Udp {
    pub fn new(src_port: u16, dst_port: u16) -> Udp {
        Udp { src_port, dst_port }
    }
}

/// An ICMP (RFC 792) or ICMPv6 (RFC 4443) message, whichever the IP version under it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Icmp {
    pub kind: u8,
    pub code: u8,
    /// What follows the checksum (the rest of the header, then the body), before the frame's
    /// payload.
    pub body: Vec<u8>,
}

impl Icmp {
    /// A message of type `kind` and `code` with an empty rest of header (four zero bytes).
    pub fn new(kind: u8, code: u8) -> Icmp {
        Icmp { kind, code, body: vec![0; 4] }
    }

    /// What follows the checksum, rest of header included.
    pub fn body(mut self, body: &[u8]) -> Icmp {
        self.body = body.to_vec();
        self
    }

    /// A neighbour solicitation (RFC 4861 §4.3) for `target`, with the source link-layer
    /// address option when `source_ll` is given.
    pub fn neighbour_solicitation(target: Ipv6Addr, source_ll: Option<MacAddr>) -> Icmp {
        let mut body = vec![0; 4];
        body.extend(target.octets());
        if let Some(mac) = source_ll {
            body.extend([1, 1]);
            body.extend(mac.0);
        }
        Icmp { kind: 135, code: 0, body }
    }
}

/// The solicited-node multicast group of `target` (RFC 4291 §2.7.1) and its Ethernet address
/// (RFC 2464 §7): where a neighbour solicitation for `target` goes.
pub fn solicited_node(target: Ipv6Addr) -> (Ipv6Addr, MacAddr) {
    let t = target.octets();
    let group = [0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, t[13], t[14], t[15]];
    (Ipv6Addr::from(group), MacAddr([0x33, 0x33, 0xff, t[13], t[14], t[15]]))
}

/// An ARP packet for IPv4 over Ethernet (RFC 826).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// 1 for a request, 2 for a reply.
    pub op: u16,
    pub sender_mac: MacAddr,
    pub sender_ip: [u8; 4],
    pub target_mac: MacAddr,
    pub target_ip: [u8; 4],
}

impl Arp {
    /// `sender_mac` at `sender_ip` asks who has `target_ip`.
    pub fn request(
        sender_mac: MacAddr,
        sender_ip: impl Into<Ipv4Addr>,
        target_ip: impl Into<Ipv4Addr>,
    ) -> Arp {
        Arp {
            op: 1,
            sender_mac,
            sender_ip: sender_ip.into().octets(),
            target_mac: MacAddr::ZERO,
            target_ip: target_ip.into().octets(),
        }
    }

    fn emit(&self, f: &mut Vec<u8>) {
        f.extend([0, 1, 0x08, 0x00, 6, 4]);
        f.extend(self.op.to_be_bytes());
        f.extend(self.sender_mac.0);
        f.extend(self.sender_ip);
        f.extend(self.target_mac.0);
        f.extend(self.target_ip);
    }
}

/// A length field's value: 0 when the length does not fit in 16 bits (what Linux writes in
/// the IP header of a BIG TCP super-frame).
fn length_field(len: usize) -> u16 {
    u16::try_from(len).unwrap_or(0)
}

/// `sum` plus the 16-bit big-endian words of `data` (an odd last byte padded with zero),
/// unfolded.
fn add_bytes(sum: u32, data: &[u8]) -> u32 {
    let mut s = u64::from(sum);
    for w in data.chunks(2) {
        s += u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u32
}

/// The checksum field's value for a data sum: its ones' complement, folded to 16 bits.
fn finish(sum: u32) -> u16 {
    let mut s = sum;
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: usize) -> u32 {
    let s = add_bytes(add_bytes(0, &src), &dst);
    add_bytes(s, &[0, proto]) + len as u32
}

fn pseudo_v6(src: [u8; 16], dst: [u8; 16], proto: u8, len: usize) -> u32 {
    let s = add_bytes(add_bytes(0, &src), &dst);
    add_bytes(s, &(len as u32).to_be_bytes()) + u32::from(proto)
}

#[cfg(test)]
mod tests;
