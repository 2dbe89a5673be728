//! The outer UDP source port, derived from the inner flow (RFC 7348 §5).
//!
//! Underlay routers spread traffic over equal-cost paths by the outer 5-tuple; the only field a
//! VTEP can vary per flow is the UDP source port. Hashing the inner flow into it spreads flows and
//! keeps each flow on one port, so one path, and in order. The dataplane's send pool maps
//! [`flow_hash`] onto its sockets, each bound to one port of the [`PortRange`].

use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};

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

/// A 32-bit hash of the inner frame's flow: MAC addresses and EtherType always; IPv4/IPv6
/// addresses and protocol when present; TCP/UDP ports when present (never for IP fragments, so
/// every fragment of a datagram hashes alike). Frames too short for an Ethernet header hash to 0.
#[inline]
pub fn flow_hash(frame: &[u8]) -> u32 {
    let Some(macs) = frame.get(..14) else {
        return 0;
    };
    let mut h = Mixer::new();
    h.bytes(macs);
    if let Ok(packet) = LaxSlicedPacket::from_ethernet(frame) {
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

/// A small multiply-rotate hash with a murmur3 finaliser: fast, allocation-free and
/// well spread in the low and high bits (the mapping uses the high bits).
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

    #[inline]
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
