//! The outer UDP source port, derived from the inner flow (RFC 7348 §5).
//!
//! Underlay routers spread traffic over equal-cost paths by the outer 5-tuple; the only field a
//! VTEP can vary per flow is the UDP source port. Hashing the inner flow into it spreads flows and
//! keeps each flow on one port, so one path, and in order. The dataplane's send pool maps
//! [`flow_hash`] onto its sockets, each bound to one port of the [`PortRange`].

use crate::wire::ethernet;
use crate::wire::frame::{Frame, Ip, IpVersion};
use crate::wire::ip::{auth, protocol};
use crate::wire::{ipv4, ipv6, tcp, udp};

/// The range outer source ports are drawn from (inclusive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    min: u16,
    max: u16,
}

impl PortRange {
    /// The IANA dynamic range 49152–65535, which RFC 7348 recommends.
    pub const DYNAMIC: PortRange = PortRange { min: 49152, max: 65535 };

    /// A range `min..=max`; `None` if it is empty or includes port 0.
    pub const fn new(min: u16, max: u16) -> Option<PortRange> {
        if min == 0 || min > max {
            None
        } else {
            Some(PortRange { min, max })
        }
    }

    pub const fn min(&self) -> u16 {
        self.min
    }

    pub const fn max(&self) -> u16 {
        self.max
    }
}

impl Default for PortRange {
    fn default() -> Self {
        PortRange::DYNAMIC
    }
}

/// A 32-bit hash of the inner frame's flow: the Ethernet header (MAC addresses and the first
/// EtherType or TPID) always; IPv4/IPv6 addresses and protocol when present; TCP/UDP ports when
/// present (never for IP fragments, so every fragment of a datagram hashes alike). Frames too
/// short for an Ethernet header hash to 0.
///
/// [`flow_hash`] parses the frame for this; the packet path hands over the view it parsed once.
/// What is IP is the frame view's rule ([`crate::wire::frame`]): past up to three VLAN tags, a
/// MACsec frame opaque (hashed on its Ethernet header, so that a secure channel keeps to one
/// path), the EtherType and the version nibble agreeing. From the IP header on, the fields are
/// read by hand, with no allocation, exactly as etherparse's lax slicing finds them (the tests
/// keep etherparse as the oracle): IPv6 past its extension headers (the protocol hashed is the
/// transport's) and IPv4 past an Authentication Header (the protocol hashed is the header's
/// own); the transport inside the length the IP header gives, when that length fits the frame;
/// ports only from a complete TCP or UDP header of a packet that is not a fragment and whose
/// extension headers all parsed.
#[inline]
pub fn hash(frame: &[u8], view: &Frame) -> u32 {
    let mut h = Mixer::new();
    h.bytes14(&frame[..ethernet::HEADER_LEN]);
    if let Some(ip) = view.ip() {
        match ip.version() {
            IpVersion::V4 => hash_ipv4(&mut h, frame, ip),
            IpVersion::V6 => hash_ipv6(&mut h, frame, ip),
        }
    }
    h.finish()
}

/// [`hash`] of a frame not parsed yet (0 for a runt).
#[inline]
pub fn flow_hash(frame: &[u8]) -> u32 {
    Frame::parse(frame).map_or(0, |view| hash(frame, &view))
}

#[inline]
fn hash_ipv4(h: &mut Mixer, frame: &[u8], ip: &Ip) {
    let hdr = &frame[ip.l3()..ip.l4()];
    h.bytes4(&hdr[ipv4::field::SRC]);
    h.bytes4(&hdr[ipv4::field::DST]);
    h.word(u64::from(ip.proto()));
    if ip.is_fragment() {
        return;
    }
    let payload = &frame[ip.l4()..ip.end()];
    if ip.proto() == protocol::AUTH {
        if let Some((next, rest)) = past_auth(payload) {
            hash_ports(h, next, rest);
        }
    } else {
        hash_ports(h, ip.proto(), payload);
    }
}

#[inline]
fn hash_ipv6(h: &mut Mixer, frame: &[u8], ip: &Ip) {
    let hdr = &frame[ip.l3()..ip.l4()];
    let payload = &frame[ip.l4()..ip.end()];
    let next = ip.proto();
    let (next, transport) =
        if is_ipv6_extension(next) { past_ipv6_extensions(next, payload) } else { (next, Some(payload)) };
    h.bytes16(&hdr[ipv6::field::SRC]);
    h.bytes16(&hdr[ipv6::field::DST]);
    h.word(u64::from(next));
    if let Some(t) = transport {
        hash_ports(h, next, t);
    }
}

#[inline]
fn is_ipv6_extension(next: u8) -> bool {
    matches!(
        next,
        protocol::IPV6_HOP_BY_HOP
            | protocol::IPV6_ROUTE
            | protocol::IPV6_FRAG
            | protocol::AUTH
            | protocol::IPV6_DEST_OPTS
    )
}

/// Walks IPv6 extension headers from `next`: the protocol after them, and the transport
/// header's bytes unless one of them was cut short or malformed (then the protocol is the
/// header that failed) or a Fragment header made this a fragment.
#[cold]
fn past_ipv6_extensions(mut next: u8, mut rest: &[u8]) -> (u8, Option<&[u8]>) {
    let mut fragment = false;
    let mut first = true;
    loop {
        let len = match next {
            // Hop-by-Hop may only come first (RFC 8200 §4.1).
            protocol::IPV6_HOP_BY_HOP if !first => return (next, None),
            protocol::IPV6_HOP_BY_HOP | protocol::IPV6_ROUTE | protocol::IPV6_DEST_OPTS => {
                if rest.len() < ipv6::ext::MIN_LEN {
                    return (next, None);
                }
                ipv6::ext::header_len(rest)
            }
            protocol::IPV6_FRAG => {
                if rest.len() < ipv6::frag::HEADER_LEN {
                    return (next, None);
                }
                fragment |= ipv6::frag::is_fragment(rest);
                ipv6::frag::HEADER_LEN
            }
            protocol::AUTH => match past_auth(rest) {
                Some((n, r)) => {
                    next = n;
                    rest = r;
                    first = false;
                    continue;
                }
                None => return (next, None),
            },
            _ => return (next, (!fragment).then_some(rest)),
        };
        if rest.len() < len {
            return (next, None);
        }
        // Both layouts above start with the next header's protocol.
        const _: () = assert!(ipv6::frag::field::NEXT_HEADER == ipv6::ext::field::NEXT_HEADER);
        next = rest[ipv6::ext::field::NEXT_HEADER];
        rest = &rest[len..];
        first = false;
    }
}

/// The protocol after an Authentication Header and what follows it; None if it is cut short or
/// its length field is 0.
#[inline]
fn past_auth(b: &[u8]) -> Option<(u8, &[u8])> {
    if b.len() < auth::MIN_LEN {
        return None;
    }
    let len = auth::header_len(b)?;
    Some((b[auth::field::NEXT_HEADER], b.get(len..)?))
}

/// Hashes the ports of a complete TCP or UDP header.
#[inline]
fn hash_ports(h: &mut Mixer, proto: u8, l4: &[u8]) {
    let ports = match proto {
        protocol::TCP
            if l4.len() >= tcp::HEADER_LEN && (tcp::HEADER_LEN..=l4.len()).contains(&tcp::header_len(l4)) =>
        {
            tcp::ports(l4)
        }
        protocol::UDP if l4.len() >= udp::HEADER_LEN => udp::ports(l4),
        _ => return,
    };
    h.word(u64::from(ports.0) << 16 | u64::from(ports.1));
}

/// A small multiply-rotate hash with a murmur3 finaliser: fast, allocation-free and
/// well spread in the low and high bits (the mapping uses the high bits).
///
/// Byte strings go in as little-endian 64-bit words, a shorter last word zero-padded and
/// marked with its length ([`Mixer::bytes`]); the fixed-length forms the hash uses compute
/// exactly that with the length known.
struct Mixer(u64);

impl Mixer {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    fn new() -> Mixer {
        Mixer(0x5851_f42d_4c95_7f2d)
    }

    #[inline]
    fn word(&mut self, v: u64) {
        self.0 = (self.0 ^ v).wrapping_mul(Self::K).rotate_left(29);
    }

    /// The general form, which the fixed-length ones must match (tests).
    #[cfg(test)]
    fn bytes(&mut self, b: &[u8]) {
        let mut chunks = b.chunks_exact(8);
        for c in &mut chunks {
            self.word(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut last = [0u8; 8];
            last[..rest.len()].copy_from_slice(rest);
            self.word(u64::from_le_bytes(last) ^ (rest.len() as u64) << 59);
        }
    }

    /// [`Mixer::bytes`] of 4 bytes (an IPv4 address).
    #[inline]
    fn bytes4(&mut self, b: &[u8]) {
        let w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        self.word(u64::from(w) ^ 4 << 59);
    }

    /// [`Mixer::bytes`] of 14 bytes (the Ethernet header).
    #[inline]
    fn bytes14(&mut self, b: &[u8]) {
        let b: &[u8; 14] = b.try_into().unwrap_or(&[0; 14]);
        self.word(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]));
        self.word(u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], 0, 0]) ^ 6 << 59);
    }

    /// [`Mixer::bytes`] of 16 bytes (an IPv6 address).
    #[inline]
    fn bytes16(&mut self, b: &[u8]) {
        let b: &[u8; 16] = b.try_into().unwrap_or(&[0; 16]);
        self.word(u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]));
        self.word(u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]));
    }

    #[inline]
    fn finish(&self) -> u32 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^= x >> 33;
        (x >> 32) as u32
    }
}

#[cfg(test)]
mod oracle;

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn udp_frame(src_ip: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src_ip, [198, 19, 0, 2], 64)
            .udp(sport, dport);
        let mut out = Vec::new();
        b.write(&mut out, b"payload").unwrap();
        out
    }

    fn tcp6_frame(sport: u16) -> Vec<u8> {
        let src = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let mut dst = src;
        dst[15] = 2;
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv6(src, dst, 64)
            .tcp(sport, 80, 1, 1000);
        let mut out = Vec::new();
        b.write(&mut out, b"x").unwrap();
        out
    }

    #[test]
    fn same_flow_same_port_payload_does_not_matter() {
        let mut a = udp_frame([198, 19, 0, 1], 1000, 2000);
        let b = a.clone();
        let n = a.len();
        a[n - 1] ^= 0xff;
        assert_eq!(flow_hash(&a), flow_hash(&b));
    }

    #[test]
    fn each_field_changes_the_hash() {
        let base = flow_hash(&udp_frame([198, 19, 0, 1], 1000, 2000));
        assert_ne!(base, flow_hash(&udp_frame([198, 19, 0, 3], 1000, 2000)), "IP address");
        assert_ne!(base, flow_hash(&udp_frame([198, 19, 0, 1], 1001, 2000)), "source port");
        assert_ne!(base, flow_hash(&udp_frame([198, 19, 0, 1], 1000, 2001)), "destination port");
        let mut other_mac = udp_frame([198, 19, 0, 1], 1000, 2000);
        other_mac[11] = 9;
        assert_ne!(base, flow_hash(&other_mac), "MAC address");
        assert_ne!(flow_hash(&tcp6_frame(1)), flow_hash(&tcp6_frame(2)), "IPv6 TCP port");
    }

    #[test]
    fn flows_spread_over_the_send_pool() {
        // The send pool's mapping (dataplane::udp::SendPool::index): multiply-shift by the socket
        // count, so the high bits of the hash pick the socket; 16 is the pool's size.
        let sockets = 16u64;
        let mut buckets = [0u32; 16];
        for i in 0..4096u32 {
            let h = flow_hash(&udp_frame([198, 19, (i >> 8) as u8, i as u8], 5000 + i as u16, 80));
            buckets[((u64::from(h) * sockets) >> 32) as usize] += 1;
        }
        // 256 expected per bucket; a broken mix puts most flows in a few buckets.
        assert!(buckets.iter().all(|&c| (160..=352).contains(&c)), "{buckets:?}");
    }

    #[test]
    fn port_ranges_are_never_empty_nor_include_zero() {
        let r = PortRange::new(1000, 1003).unwrap();
        assert_eq!((r.min(), r.max()), (1000, 1003));
        assert!(PortRange::new(7, 7).is_some());
        assert_eq!(PortRange::new(0, 10), None);
        assert_eq!(PortRange::new(10, 9), None);
        assert_eq!(PortRange::default(), PortRange::new(49152, 65535).unwrap());
    }

    #[test]
    fn non_ip_and_garbage_frames_hash_without_panicking() {
        assert_eq!(flow_hash(&[1, 2, 3]), 0);
        let arp_like = [0xffu8; 60];
        let _ = flow_hash(&arp_like);
        let mut bad_ip = udp_frame([198, 19, 0, 1], 1, 2);
        bad_ip.truncate(20);
        let _ = flow_hash(&bad_ip);
    }
}
