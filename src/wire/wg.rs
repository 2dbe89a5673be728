//! What vxtap puts inside a WireGuard transport message: the VXLAN or Geneve datagram with the
//! IPv4 or IPv6 header and the UDP header that the kernel's `vxlan` device gives it on a host
//! whose route to the remote VTEP is a WireGuard interface — from this VTEP's tunnel address to
//! the peer's, to the network's port, from a source port of the flow hash.
//!
//! The module is `wg` rather than `inner`: in vxtap "inner" is the overlay's frame (the inner
//! Ethernet frame, its inner TCP); these IP and UDP headers are the tunnel's own, the ones a
//! plain underlay gets from the kernel's socket, and here they travel inside WireGuard.
//!
//! - [`Headers`] writes the IP and UDP headers into the headroom in front of a datagram, in
//!   place ([`Headers::prepend`]), the way [`super::EncapHeader`] prepends the tunnel header;
//! - [`padded_len`] is WireGuard's padding of the plaintext, the kernel's rule;
//! - [`check`] is the receive side: a decrypted plaintext, the peer it came from (its tunnel
//!   addresses: cryptokey routing) and the ports listened on, to the UDP payload and its source,
//!   with one [`Error`] per reason;
//! - [`overhead`] and the constants are what WireGuard adds on the path, for the MTU.
//!
//! The UDP checksum of a received plaintext is not verified: the AEAD has authenticated every
//! byte of it, and the kernel marks what WireGuard decrypts `CHECKSUM_UNNECESSARY` for the same
//! reason. The IPv4 header checksum is, as the kernel's `ip_rcv` always does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroU8;
use std::ops::Range;

use super::ip::protocol;
use super::{ipv4, ipv6, udp, write_u16};

/// A transport message's header: type and reserved bytes (4), receiver index (4), counter (8).
pub const MESSAGE_HEADER_LEN: usize = 16;
/// The Poly1305 tag after the encrypted plaintext.
pub const TAG_LEN: usize = 16;
/// What a transport message adds to its plaintext, padding aside.
pub const TRANSPORT_OVERHEAD: usize = MESSAGE_HEADER_LEN + TAG_LEN;
/// WireGuard pads the plaintext with zeros to a multiple of this (capped at the MTU).
pub const PADDING_MULTIPLE: usize = 16;
/// The longest headers [`Headers::prepend`] writes: IPv6 and UDP.
pub const MAX_HEADER_LEN: usize = ipv6::HEADER_LEN + udp::HEADER_LEN;
/// The hop limit of the headers unless told otherwise: Linux's default (`ip_default_ttl`).
pub const DEFAULT_TTL: u8 = 64;

/// Length of an IP header without options or extension headers.
const fn ip_len(v6: bool) -> usize {
    if v6 {
        ipv6::HEADER_LEN
    } else {
        ipv4::HEADER_LEN
    }
}

/// Length of the IP and UDP headers in front of a tunnel datagram: 28 over IPv4, 48 over IPv6.
pub const fn header_len(v6: bool) -> usize {
    ip_len(v6) + udp::HEADER_LEN
}

/// Bytes WireGuard adds on the path around its plaintext: the outer IP and UDP headers towards
/// the peer's endpoint (`outer_v6`: an IPv6 endpoint) and the transport message's 32 bytes.
/// Padding is not counted: it is capped at the WireGuard MTU, so it never makes a message
/// longer than the path. A VXLAN frame's whole overhead is this plus what a plain underlay adds
/// (IP and UDP of the tunnel family, the tunnel header): 60 + 50 = 110 bytes, IPv4 in IPv4.
pub const fn overhead(outer_v6: bool) -> usize {
    ip_len(outer_v6) + udp::HEADER_LEN + TRANSPORT_OVERHEAD
}

/// The plaintext length after WireGuard's padding, computed as the kernel does
/// (`calculate_skb_padding`): rounded up to a multiple of 16 but not past `mtu` (the WireGuard
/// MTU: the largest plaintext the path takes), so padding never makes a message too big for the
/// path. A plaintext longer than `mtu` gets the padding of its length modulo `mtu`, as in the
/// kernel. An `mtu` of 0 means none is known: then only the rounding applies.
pub const fn padded_len(len: usize, mtu: usize) -> usize {
    let last = if mtu != 0 && len > mtu { len % mtu } else { len };
    let mut pad = (PADDING_MULTIPLE - last % PADDING_MULTIPLE) % PADDING_MULTIPLE;
    // `last` is at most `mtu` here.
    if mtu != 0 && pad > mtu - last {
        pad = mtu - last;
    }
    len.saturating_add(pad)
}

/// Why headers could not be written, or why a received plaintext was dropped: one variant per
/// reason, so drops are counted by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("tunnel addresses {0} and {1} are not of one family")]
    FamilyMismatch(IpAddr, IpAddr),
    #[error("no room in the buffer for the IP and UDP headers")]
    NoRoom,
    #[error("datagram of {0} bytes too long for one IP packet")]
    TooLong(usize),
    #[error("IP version {0}: neither IPv4 nor IPv6")]
    NotIp(u8),
    #[error("packet shorter than its IP and UDP headers or than its IP length")]
    Truncated,
    #[error("bad IPv4 header checksum")]
    BadIpv4Checksum,
    #[error("IP fragment")]
    Fragment,
    #[error("IP protocol {0}, not UDP")]
    NotUdp(u8),
    #[error("UDP destination port {0} is not listened on")]
    WrongPort(u16),
    #[error("source {0} is not a tunnel address of the peer it came from")]
    SourceNotAllowed(IpAddr),
    #[error("destination {0} is not this VTEP's tunnel address")]
    WrongDestination(IpAddr),
    #[error("bad UDP length")]
    BadUdpLength,
}

/// What varies from one datagram to the next towards the same peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerDatagram {
    /// The UDP source port: from the inner flow's hash (RFC 7348 §5).
    pub src_port: u16,
    /// The DS byte: IPv4's DSCP and ECN, IPv6's traffic class.
    pub ds: u8,
    /// IPv4 Don't Fragment (`--df`); IPv6 has no such bit.
    pub df: bool,
    /// IPv4 identification.
    pub ident: u16,
    /// IPv6 flow label (20 bits; higher bits are ignored).
    pub flow_label: u32,
}

/// The IP and UDP headers towards one peer: from this VTEP's tunnel address to the peer's, to
/// the network's port, fixed for as long as the peer is configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Headers {
    src: IpAddr,
    dst: IpAddr,
    dst_port: u16,
    ttl: u8,
    ipv4_udp_csum: bool,
}

impl Headers {
    /// Headers from `src` to `dst` (one family), to UDP port `dst_port`: hop limit
    /// [`DEFAULT_TTL`], UDP checksum computed.
    pub fn new(src: IpAddr, dst: IpAddr, dst_port: u16) -> Result<Headers, Error> {
        if src.is_ipv6() != dst.is_ipv6() {
            return Err(Error::FamilyMismatch(src, dst));
        }
        Ok(Headers { src, dst, dst_port, ttl: DEFAULT_TTL, ipv4_udp_csum: true })
    }

    /// With this TTL (IPv4) or hop limit (IPv6).
    pub fn with_ttl(self, ttl: NonZeroU8) -> Headers {
        Headers { ttl: ttl.get(), ..self }
    }

    /// With a zero UDP checksum over IPv4 (`--no-udp-csum`), which RFC 768 allows. Over IPv6 the
    /// checksum is mandatory (RFC 8200 §8.1) and still computed.
    pub fn without_ipv4_udp_checksum(self) -> Headers {
        Headers { ipv4_udp_csum: false, ..self }
    }

    pub fn src(&self) -> IpAddr {
        self.src
    }

    pub fn dst(&self) -> IpAddr {
        self.dst
    }

    pub fn is_ipv6(&self) -> bool {
        self.dst.is_ipv6()
    }

    /// Bytes [`Headers::prepend`] writes: 28 (IPv4) or 48 (IPv6).
    #[allow(clippy::len_without_is_empty)] // Never empty.
    pub fn len(&self) -> usize {
        header_len(self.is_ipv6())
    }

    /// Writes the IP and UDP headers in front of the datagram at `buf[datagram]`, into
    /// `buf[datagram.start - len .. datagram.start]`, and returns where the IP packet starts
    /// (it ends at `datagram.end`). The datagram itself is only read, for the UDP checksum.
    pub fn prepend(&self, buf: &mut [u8], datagram: Range<usize>, d: &PerDatagram) -> Result<usize, Error> {
        if datagram.start > datagram.end || datagram.end > buf.len() {
            return Err(Error::NoRoom);
        }
        let start = datagram.start.checked_sub(self.len()).ok_or(Error::NoRoom)?;
        let udp_len = udp::HEADER_LEN + datagram.len();
        let too_long = |total: usize| {
            if total > usize::from(u16::MAX) {
                Err(Error::TooLong(datagram.len()))
            } else {
                Ok(())
            }
        };
        let udp_start = datagram.start - udp::HEADER_LEN;
        let pseudo = match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                too_long(ipv4::HEADER_LEN + udp_len)?;
                write_ipv4(&mut buf[start..udp_start], src, dst, udp_len as u16, self.ttl, d);
                pseudo_sum(&src.octets(), &dst.octets(), udp_len)
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                too_long(udp_len)?;
                write_ipv6(&mut buf[start..udp_start], src, dst, udp_len as u16, self.ttl, d);
                pseudo_sum(&src.octets(), &dst.octets(), udp_len)
            }
            // `new` refuses mixed families.
            _ => return Err(Error::FamilyMismatch(self.src, self.dst)),
        };
        let h = &mut buf[udp_start..datagram.start];
        write_u16(h, udp::field::SRC_PORT, d.src_port);
        write_u16(h, udp::field::DST_PORT, self.dst_port);
        write_u16(h, udp::field::LENGTH, udp_len as u16);
        write_u16(h, udp::field::CHECKSUM, 0);
        if self.ipv4_udp_csum || self.is_ipv6() {
            let sum = fold(add(pseudo, &buf[udp_start..datagram.end]));
            // A computed 0 is sent as 0xffff: 0 means "none" (RFC 768).
            let csum = match !sum {
                0 => 0xffff,
                c => c,
            };
            write_u16(&mut buf[udp_start..], udp::field::CHECKSUM, csum);
        }
        Ok(start)
    }
}

/// Writes an IPv4 header without options, its checksum computed, into `h` (20 bytes).
fn write_ipv4(h: &mut [u8], src: Ipv4Addr, dst: Ipv4Addr, udp_len: u16, ttl: u8, d: &PerDatagram) {
    use ipv4::field;
    h[field::VER_IHL] = ipv4::VERSION << 4 | (ipv4::HEADER_LEN / 4) as u8;
    h[field::DSCP_ECN] = d.ds;
    write_u16(h, field::TOTAL_LEN, ipv4::HEADER_LEN as u16 + udp_len);
    write_u16(h, field::IDENT, d.ident);
    write_u16(h, field::FLAGS_FRAG, if d.df { ipv4::FLAG_DF } else { 0 });
    h[field::TTL] = ttl;
    h[field::PROTOCOL] = protocol::UDP;
    write_u16(h, field::CHECKSUM, 0);
    h[field::SRC].copy_from_slice(&src.octets());
    h[field::DST].copy_from_slice(&dst.octets());
    let csum = !fold(add(0, &h[..ipv4::HEADER_LEN]));
    write_u16(h, field::CHECKSUM, csum);
}

/// Writes an IPv6 header without extension headers into `h` (40 bytes).
fn write_ipv6(h: &mut [u8], src: Ipv6Addr, dst: Ipv6Addr, udp_len: u16, hop_limit: u8, d: &PerDatagram) {
    use ipv6::field;
    let word = u32::from(ipv6::VERSION) << 28 | u32::from(d.ds) << 20 | d.flow_label & ipv6::FLOW_LABEL_MASK;
    h[field::VER_TC_FLOW].copy_from_slice(&word.to_be_bytes());
    write_u16(h, field::PAYLOAD_LEN, udp_len);
    h[field::NEXT_HEADER] = protocol::UDP;
    h[field::HOP_LIMIT] = hop_limit;
    h[field::SRC].copy_from_slice(&src.octets());
    h[field::DST].copy_from_slice(&dst.octets());
}

/// The sum of the UDP pseudo-header (RFC 768; RFC 8200 §8.1): addresses, protocol, length.
fn pseudo_sum(src: &[u8], dst: &[u8], udp_len: usize) -> u64 {
    let s = add(add(0, src), dst);
    s + u64::from(protocol::UDP) + udp_len as u64
}

/// Adds `data` to a one's complement sum in progress as big-endian 16-bit words (RFC 1071), an
/// odd trailing byte padded with zero. Summed as 32-bit words into 64 bits (2^16 ≡ 1 modulo
/// 0xffff, so the fold is the same): no carry is lost under 2^32 words.
fn add(mut acc: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    acc + u64::from(u32::from_be_bytes(tail))
}

/// The sum folded to 16 bits (not complemented).
fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// What a received plaintext must be to be delivered: addressed to this VTEP's tunnel address,
/// from one of the tunnel addresses of the peer whose keys decrypted it, to a port listened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxPolicy<'a> {
    /// This VTEP's tunnel address (`--wg-address`).
    pub local: IpAddr,
    /// The sending peer's tunnel addresses.
    pub allowed: &'a [IpAddr],
    /// The UDP ports of the networks (4789, 6081 or each network's `--port`).
    pub ports: &'a [u16],
}

/// A received plaintext that passed [`check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received<'a> {
    /// The sending VTEP's tunnel address: the VTEP its frames' source MACs are learned behind.
    pub src: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    /// The DS byte (for ECN: a CE mark is carried into the inner packet, RFC 6040).
    pub ds: u8,
    /// The UDP payload: the VXLAN or Geneve datagram, a sub-slice of the plaintext.
    pub payload: &'a [u8],
}

/// Checks a decrypted plaintext: an IPv4 or IPv6 packet (bytes past its IP length, such as
/// WireGuard's padding, are ignored) from one of `policy.allowed`, addressed to `policy.local`,
/// not a fragment, UDP to a port of `policy`; returns the UDP payload and where it came from.
/// The checks run in the order the kernel makes them on a host with a `wg` and a `vxlan`
/// device (WireGuard's allowed IPs, then `ip_rcv`, routing, reassembly, UDP, the socket), so a
/// packet is dropped for the first reason that applies.
pub fn check<'a>(packet: &'a [u8], policy: &RxPolicy<'_>) -> Result<Received<'a>, Error> {
    let version = packet.first().map(|b| b >> 4).ok_or(Error::Truncated)?;
    let ip = match version {
        ipv4::VERSION => Ip::v4(packet)?,
        ipv6::VERSION => Ip::v6(packet)?,
        v => return Err(Error::NotIp(v)),
    };
    if !policy.allowed.contains(&ip.src) {
        return Err(Error::SourceNotAllowed(ip.src));
    }
    if version == ipv4::VERSION && fold(add(0, &packet[..ip.header_len])) != 0xffff {
        return Err(Error::BadIpv4Checksum);
    }
    if ip.dst != policy.local {
        return Err(Error::WrongDestination(ip.dst));
    }
    let next = match version {
        ipv4::VERSION if ipv4::is_fragment(packet) => return Err(Error::Fragment),
        ipv4::VERSION => packet[ipv4::field::PROTOCOL],
        _ => packet[ipv6::field::NEXT_HEADER],
    };
    match next {
        protocol::UDP => {}
        protocol::IPV6_FRAG if version == ipv6::VERSION => return Err(Error::Fragment),
        other => return Err(Error::NotUdp(other)),
    }
    let udp_start = ip.header_len;
    let udp_hdr =
        packet.get(udp_start..udp_start + udp::HEADER_LEN).filter(|_| udp_start + udp::HEADER_LEN <= ip.end);
    let udp_hdr = udp_hdr.ok_or(Error::Truncated)?;
    // As the kernel does: a UDP length past the IP payload is an error, a shorter one trims it.
    let udp_len = usize::from(udp::length(udp_hdr));
    if udp_len < udp::HEADER_LEN || udp_start + udp_len > ip.end {
        return Err(Error::BadUdpLength);
    }
    let (src_port, dst_port) = udp::ports(udp_hdr);
    if !policy.ports.contains(&dst_port) {
        return Err(Error::WrongPort(dst_port));
    }
    let payload = &packet[udp_start + udp::HEADER_LEN..udp_start + udp_len];
    Ok(Received { src: ip.src, src_port, dst_port, ds: ip.ds, payload })
}

/// The fields of a received IP header that [`check`] needs, its lengths checked against the
/// packet.
struct Ip {
    src: IpAddr,
    dst: IpAddr,
    ds: u8,
    /// Where the UDP header starts: after the IPv4 options, or the IPv6 fixed header.
    header_len: usize,
    /// The IP length: bytes after it (padding) are not the packet's.
    end: usize,
}

impl Ip {
    fn v4(p: &[u8]) -> Result<Ip, Error> {
        if p.len() < ipv4::HEADER_LEN {
            return Err(Error::Truncated);
        }
        let (header_len, end) = (ipv4::header_len(p), usize::from(ipv4::total_len(p)));
        if header_len < ipv4::HEADER_LEN || end < header_len || p.len() < end {
            return Err(Error::Truncated);
        }
        let addr = |r: Range<usize>| {
            IpAddr::V4(Ipv4Addr::new(p[r.start], p[r.start + 1], p[r.start + 2], p[r.start + 3]))
        };
        let (src, dst) = (addr(ipv4::field::SRC), addr(ipv4::field::DST));
        Ok(Ip { src, dst, ds: p[ipv4::field::DSCP_ECN], header_len, end })
    }

    fn v6(p: &[u8]) -> Result<Ip, Error> {
        if p.len() < ipv6::HEADER_LEN {
            return Err(Error::Truncated);
        }
        let end = ipv6::HEADER_LEN + usize::from(ipv6::payload_len(p));
        if p.len() < end {
            return Err(Error::Truncated);
        }
        let addr = |r: Range<usize>| {
            let mut a = [0u8; 16];
            a.copy_from_slice(&p[r]);
            IpAddr::V6(Ipv6Addr::from(a))
        };
        let (src, dst) = (addr(ipv6::field::SRC), addr(ipv6::field::DST));
        Ok(Ip { src, dst, ds: ipv6::traffic_class(p), header_len: ipv6::HEADER_LEN, end })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IpHeaders, Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder};

    const V4_SRC: [u8; 4] = [10, 77, 0, 1];
    const V4_DST: [u8; 4] = [10, 77, 0, 2];
    const V6_SRC: [u8; 16] = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const V6_DST: [u8; 16] = [0xfd, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    /// A VXLAN datagram: VNI 42 and a 20-byte frame (odd lengths are tested apart).
    const DATAGRAM: [u8; 28] = [
        0x08, 0, 0, 0, 0, 0, 42, 0, 2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x06, 0xaa, 0xbb, 0xcc, 0xdd,
        0xee, 0xff,
    ];
    const HEADROOM: usize = 64;

    fn v4() -> Headers {
        Headers::new(V4_SRC.into(), V4_DST.into(), 4789).unwrap()
    }

    fn v6() -> Headers {
        Headers::new(V6_SRC.into(), V6_DST.into(), 6081).unwrap()
    }

    /// `payload` at [`HEADROOM`] of a buffer with a byte of tailroom, the headers prepended;
    /// returns the IP packet.
    fn wrap(h: &Headers, payload: &[u8], d: &PerDatagram) -> Vec<u8> {
        let mut buf = vec![0xeeu8; HEADROOM + payload.len() + 1];
        buf[HEADROOM..HEADROOM + payload.len()].copy_from_slice(payload);
        let start = h.prepend(&mut buf, HEADROOM..HEADROOM + payload.len(), d).unwrap();
        assert_eq!(start, HEADROOM - h.len());
        assert!(buf[..start].iter().all(|&b| b == 0xee), "nothing written before the headers");
        assert_eq!(&buf[HEADROOM..HEADROOM + payload.len()], payload, "the datagram is not touched");
        assert_eq!(buf[HEADROOM + payload.len()], 0xee, "nor what follows it");
        buf[start..HEADROOM + payload.len()].to_vec()
    }

    /// The same packet built by etherparse: header fields set one by one, lengths and checksums
    /// its own.
    fn etherparse_v4(d: &PerDatagram, ttl: u8, dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let mut ip = Ipv4Header::new(0, ttl, etherparse::IpNumber::UDP, V4_SRC, V4_DST).unwrap();
        ip.dscp = etherparse::IpDscp::try_new(d.ds >> 2).unwrap();
        ip.ecn = etherparse::IpEcn::try_new(d.ds & 3).unwrap();
        ip.identification = d.ident;
        ip.dont_fragment = d.df;
        let b = PacketBuilder::ip(IpHeaders::Ipv4(ip, Default::default())).udp(d.src_port, dst_port);
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    fn etherparse_v6(d: &PerDatagram, hop_limit: u8, dst_port: u16, payload: &[u8]) -> Vec<u8> {
        let ip = Ipv6Header {
            traffic_class: d.ds,
            flow_label: Ipv6FlowLabel::try_new(d.flow_label).unwrap(),
            payload_length: 0,
            next_header: etherparse::IpNumber::UDP,
            hop_limit,
            source: V6_SRC,
            destination: V6_DST,
        };
        let b = PacketBuilder::ip(IpHeaders::Ipv6(ip, Default::default())).udp(d.src_port, dst_port);
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn ipv4_headers_byte_for_byte() {
        let d = PerDatagram { src_port: 51234, ds: 0xb9, df: true, ident: 0x1c46, flow_label: 0 };
        let got = wrap(&v4(), &DATAGRAM, &d);
        assert_eq!(got, etherparse_v4(&d, 64, 4789, &DATAGRAM));
        assert_eq!(got.len(), 28 + DATAGRAM.len());
        assert_eq!(&got[..2], &[0x45, 0xb9]);
        assert_eq!(&got[6..10], &[0x40, 0x00, 64, 17], "DF, TTL 64, UDP");
        // The DF bit, the ID and the TTL follow what they are given; odd payloads sum right.
        let d = PerDatagram { src_port: 1, ds: 0, df: false, ident: 0xffff, flow_label: 0 };
        let ttl9 = v4().with_ttl(NonZeroU8::new(9).unwrap());
        for len in [0, 1, 7, 27] {
            let p = &DATAGRAM[..len];
            assert_eq!(wrap(&ttl9, p, &d), etherparse_v4(&d, 9, 4789, p), "{len} bytes");
        }
    }

    #[test]
    fn ipv4_without_udp_checksum() {
        let d = PerDatagram { src_port: 50000, ..PerDatagram::default() };
        let got = wrap(&v4().without_ipv4_udp_checksum(), &DATAGRAM, &d);
        let mut want = etherparse_v4(&d, 64, 4789, &DATAGRAM);
        want[26..28].copy_from_slice(&[0, 0]);
        assert_eq!(got, want, "only the UDP checksum differs: zero");
    }

    #[test]
    fn ipv6_headers_byte_for_byte() {
        let d = PerDatagram { src_port: 60001, ds: 0x2e, df: true, ident: 7, flow_label: 0x5_4321 };
        let got = wrap(&v6(), &DATAGRAM, &d);
        assert_eq!(got, etherparse_v6(&d, 64, 6081, &DATAGRAM));
        assert_eq!(&got[..4], &[0x62, 0xe5, 0x43, 0x21], "version, traffic class, flow label");
        // The checksum is mandatory over IPv6: not turned off, and the label's high bits ignored.
        let h = v6().without_ipv4_udp_checksum().with_ttl(NonZeroU8::new(1).unwrap());
        let wide = PerDatagram { flow_label: 0xfff0_0001, ..d };
        let got = wrap(&h, &DATAGRAM[..13], &wide);
        assert_eq!(got, etherparse_v6(&PerDatagram { flow_label: 1, ..d }, 1, 6081, &DATAGRAM[..13]));
        assert_ne!(&got[46..48], &[0, 0]);
    }

    #[test]
    fn a_computed_zero_udp_checksum_is_sent_as_ffff() {
        let d = PerDatagram { src_port: 40000, ..PerDatagram::default() };
        for h in [v4(), v6()] {
            let c = h.len() - 2;
            // With a zero word in the payload the checksum is c; that word set to c makes the
            // sum all ones, and the checksum 0, which must go out as 0xffff.
            let first = wrap(&h, &[0, 0], &d);
            let fixed = wrap(&h, &first[c..c + 2], &d);
            assert_eq!(&fixed[c..c + 2], &[0xff, 0xff], "{h:?}");
        }
    }

    #[test]
    fn prepend_refuses_what_does_not_fit() {
        let d = PerDatagram::default();
        let mut buf = [0u8; 100];
        assert_eq!(v4().prepend(&mut buf, 27..40, &d), Err(Error::NoRoom));
        assert_eq!(v4().prepend(&mut buf, 28..40, &d), Ok(0));
        #[allow(clippy::reversed_empty_ranges)] // What a caller's arithmetic gone wrong gives.
        let reversed = 48..40;
        assert_eq!(v6().prepend(&mut buf, reversed, &d), Err(Error::NoRoom), "reversed range");
        assert_eq!(v6().prepend(&mut buf, 48..101, &d), Err(Error::NoRoom), "past the buffer");
        assert_eq!(
            Headers::new(V4_SRC.into(), V6_DST.into(), 4789),
            Err(Error::FamilyMismatch(V4_SRC.into(), V6_DST.into()))
        );
        let mut big = vec![0u8; 70_000];
        // IPv4 counts its header in its 16-bit length, IPv6 only the payload.
        assert_eq!(v4().prepend(&mut big, 48..48 + 65_508, &d), Err(Error::TooLong(65_508)));
        assert!(v4().prepend(&mut big, 48..48 + 65_507, &d).is_ok());
        assert_eq!(v6().prepend(&mut big, 48..48 + 65_528, &d), Err(Error::TooLong(65_528)));
        assert!(v6().prepend(&mut big, 48..48 + 65_527, &d).is_ok());
    }

    #[test]
    fn padding_is_the_kernels() {
        for (len, mtu, want) in [
            (0, 1440, 0), // a keepalive
            (1, 1440, 16),
            (16, 1440, 16),
            (17, 1440, 32),
            (1427, 1440, 1440),
            (1430, 1440, 1440), // capped at the MTU, not 1440 + 16
            (1430, 1436, 1436),
            (1436, 1436, 1436),
            (1437, 1436, 1437 + 15), // over the MTU: 1 byte modulo the MTU, padded to 16
            (2872, 1436, 2872),
            (100, 0, 112), // no MTU known
            (usize::MAX, 0, usize::MAX),
        ] {
            assert_eq!(padded_len(len, mtu), want, "{len} in {mtu}");
        }
        assert_eq!(TRANSPORT_OVERHEAD, 32);
        assert_eq!((overhead(false), overhead(true)), (60, 80));
        assert_eq!((header_len(false), header_len(true), MAX_HEADER_LEN), (28, 48, 48));
        // VXLAN over IPv4 inside WireGuard over IPv4, on a 1500-byte path: the 1390 TAP MTU.
        assert_eq!(1500 - overhead(false) - header_len(false) - 8 - 14, 1390);
    }

    const PORTS: [u16; 2] = [4789, 6081];

    fn policy_v4(allowed: &[IpAddr]) -> RxPolicy<'_> {
        RxPolicy { local: V4_DST.into(), allowed, ports: &PORTS }
    }

    #[test]
    fn check_returns_what_prepend_wrapped() {
        let d = PerDatagram { src_port: 51234, ds: 0x03, df: true, ident: 1, flow_label: 9 };
        let allowed = [IpAddr::from([10, 77, 0, 9]), V4_SRC.into()];
        let packet = wrap(&v4(), &DATAGRAM, &d);
        let got = check(&packet, &policy_v4(&allowed)).unwrap();
        let want =
            Received { src: V4_SRC.into(), src_port: 51234, dst_port: 4789, ds: 0x03, payload: &DATAGRAM };
        assert_eq!(got, want);
        // WireGuard's padding after the IP length is not the datagram's.
        let mut padded = packet.clone();
        padded.resize(padded_len(packet.len(), 1440), 0);
        assert_eq!(padded.len(), 64);
        assert_eq!(check(&padded, &policy_v4(&allowed)), Ok(want));
        let packet = wrap(&v6(), &DATAGRAM, &d);
        let allowed = [V6_SRC.into()];
        let p = RxPolicy { local: V6_DST.into(), allowed: &allowed, ports: &PORTS };
        let got = check(&packet, &p).unwrap();
        assert_eq!((got.src, got.dst_port, got.ds, got.payload), (V6_SRC.into(), 6081, 0x03, &DATAGRAM[..]));
    }

    /// Sets the IPv4 header checksum of `p` right after a change.
    fn refresh_v4_checksum(p: &mut [u8]) {
        let hlen = ipv4::header_len(p);
        write_u16(p, ipv4::field::CHECKSUM, 0);
        let c = !fold(add(0, &p[..hlen]));
        write_u16(p, ipv4::field::CHECKSUM, c);
    }

    #[test]
    fn check_names_each_reason() {
        let d = PerDatagram { src_port: 51234, ..PerDatagram::default() };
        let ok = wrap(&v4(), &DATAGRAM, &d);
        let allowed = [IpAddr::from(V4_SRC)];
        let policy = policy_v4(&allowed);
        let edit = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut p = ok.clone();
            f(&mut p);
            check(&p, &policy).map(|r| r.payload.to_vec())
        };
        assert_eq!(check(&[], &policy), Err(Error::Truncated));
        assert_eq!(edit(&|p| p[0] = 0x55), Err(Error::NotIp(5)));
        assert_eq!(edit(&|p| p.truncate(19)), Err(Error::Truncated));
        assert_eq!(edit(&|p| p.truncate(p.len() - 1)), Err(Error::Truncated), "shorter than its length");
        assert_eq!(edit(&|p| p[0] = 0x44), Err(Error::Truncated), "IHL under 5");
        assert_eq!(
            edit(&|p| {
                p[3] = 19;
                refresh_v4_checksum(p)
            }),
            Err(Error::Truncated),
            "IP length under the header"
        );
        let other = IpAddr::from([10, 77, 0, 3]);
        assert_eq!(
            edit(&|p| {
                p[12..16].copy_from_slice(&[10, 77, 0, 3]);
                refresh_v4_checksum(p)
            }),
            Err(Error::SourceNotAllowed(other))
        );
        assert_eq!(edit(&|p| p[8] = 63), Err(Error::BadIpv4Checksum));
        assert_eq!(
            edit(&|p| {
                p[16..20].copy_from_slice(&[10, 77, 0, 3]);
                refresh_v4_checksum(p)
            }),
            Err(Error::WrongDestination(other))
        );
        for flags in [0x2000u16, 0x0001, 0x4001] {
            let frag = edit(&|p| {
                write_u16(p, ipv4::field::FLAGS_FRAG, flags);
                refresh_v4_checksum(p)
            });
            assert_eq!(frag, Err(Error::Fragment), "{flags:#x}");
        }
        assert_eq!(
            edit(&|p| {
                p[9] = protocol::TCP;
                refresh_v4_checksum(p)
            }),
            Err(Error::NotUdp(6))
        );
        assert_eq!(
            edit(&|p| {
                p.truncate(27);
                p[3] = 27;
                refresh_v4_checksum(p)
            }),
            Err(Error::Truncated),
            "no room for the UDP header"
        );
        for bad in [0u16, 7, DATAGRAM.len() as u16 + 9] {
            let e = edit(&|p| write_u16(&mut p[20..], udp::field::LENGTH, bad));
            assert_eq!(e, Err(Error::BadUdpLength), "UDP length {bad}");
        }
        assert_eq!(
            edit(&|p| write_u16(&mut p[20..], udp::field::DST_PORT, 8472)),
            Err(Error::WrongPort(8472))
        );
        // A UDP length shorter than the IP payload trims it (as the kernel does); the checksum
        // is not checked (the AEAD authenticated the plaintext).
        let short = edit(&|p| {
            write_u16(&mut p[20..], udp::field::LENGTH, 8 + 4);
            write_u16(&mut p[20..], udp::field::CHECKSUM, 0x1234)
        });
        assert_eq!(short, Ok(DATAGRAM[..4].to_vec()));
        // IPv4 options are skipped (vxtap sends none, a kernel may).
        let mut opts = ok[..20].to_vec();
        opts[0] = 0x46;
        opts.extend_from_slice(&[1, 1, 1, 0]); // NOP, NOP, NOP, end of options
        opts.extend_from_slice(&ok[20..]);
        write_u16(&mut opts, ipv4::field::TOTAL_LEN, ok.len() as u16 + 4);
        refresh_v4_checksum(&mut opts);
        assert_eq!(check(&opts, &policy).map(|r| r.payload), Ok(&DATAGRAM[..]));
    }

    #[test]
    fn check_names_each_ipv6_reason() {
        let ok = wrap(&v6(), &DATAGRAM, &PerDatagram { src_port: 40000, ..PerDatagram::default() });
        let allowed = [IpAddr::from(V6_SRC)];
        let policy = RxPolicy { local: V6_DST.into(), allowed: &allowed, ports: &PORTS };
        let edit = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut p = ok.clone();
            f(&mut p);
            check(&p, &policy).map(|r| r.payload.to_vec())
        };
        assert_eq!(edit(&|p| p.truncate(39)), Err(Error::Truncated));
        assert_eq!(edit(&|p| p.truncate(p.len() - 1)), Err(Error::Truncated));
        assert_eq!(edit(&|p| p[23] = 9), Err(Error::SourceNotAllowed("fd77::9".parse().unwrap())));
        assert_eq!(edit(&|p| p[39] = 9), Err(Error::WrongDestination("fd77::9".parse().unwrap())));
        assert_eq!(edit(&|p| p[6] = protocol::IPV6_FRAG), Err(Error::Fragment));
        assert_eq!(edit(&|p| p[6] = protocol::IPV6_HOP_BY_HOP), Err(Error::NotUdp(0)));
        assert_eq!(
            edit(&|p| {
                p.truncate(47);
                p[5] = 7
            }),
            Err(Error::Truncated)
        );
        assert_eq!(edit(&|p| write_u16(&mut p[40..], udp::field::LENGTH, 0)), Err(Error::BadUdpLength));
        assert_eq!(edit(&|p| write_u16(&mut p[40..], udp::field::DST_PORT, 1)), Err(Error::WrongPort(1)));
        // An IPv4 packet is checked against IPv4 addresses: an IPv6 policy allows none of them.
        let v4_packet = wrap(&v4(), &DATAGRAM, &PerDatagram::default());
        assert_eq!(check(&v4_packet, &policy), Err(Error::SourceNotAllowed(V4_SRC.into())));
    }
}
