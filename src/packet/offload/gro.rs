//! Receive coalescing (software GRO): consecutive segments of one TCP flow, as a UDP-GRO train of
//! VXLAN datagrams delivers them, become one super-frame with a virtio-net header, so the TAP
//! takes up to 64 KB per write instead of one segment.
//!
//! The merge rules follow the kernel's `tcp_gro_receive`, so the stack gets what a GRO-capable NIC
//! would give it. Every segment's checksums are verified first: the super-frame's TCP checksum is
//! left partial, so a corrupt segment merged into it would reach the stack unchecked.
//!
//! When the TAP accepted USO (Linux 6.2+), same-size UDP datagrams of one flow are merged the same
//! way into a `GSO_UDP_L4` super-frame, which the kernel splits back into the datagrams, as
//! `udp_gro_receive` would have built it (without the fraglist variant).

use std::ops::Range;

use super::checksum::{pseudo_v4, pseudo_v6, Sum};
#[cfg(test)]
use super::l3_offset; // the tests find their headers with it
use super::vnet::{self, VnetHdr};
use super::IpVersion;
use crate::wire::frame::{self, Frame};
use crate::wire::ip::protocol;
use crate::wire::tcp::{ACK, CWR, FIN, PSH, RST, SYN, URG};
use crate::wire::{ipv4, ipv6, tcp, udp};

/// Largest merged IP packet. Both length fields are 16 bits; for IPv6 the fixed header counts too
/// (as in the kernel's GRO without BIG TCP), which keeps every frame within the buffer.
const MAX_IP: usize = 65535;
/// Most segments per super-frame: bounds the work and the delay one write carries. Also the
/// kernel's UDP_MAX_SEGMENTS, past which it refuses a UDP GSO frame.
const MAX_SEGS: usize = 64;
/// Ethernet header with as many VLAN tags as the frame view walks.
const MAX_L2: usize = frame::MAX_L2_LEN;
/// Source and destination port, where TCP and UDP both keep them.
const PORTS: Range<usize> = tcp::field::SRC_PORT.start..tcp::field::DST_PORT.end;
const _: () = assert!(PORTS.start == udp::field::SRC_PORT.start && PORTS.end == udp::field::DST_PORT.end);
const BUF_LEN: usize = vnet::LEN + MAX_L2 + MAX_IP;

/// What became of an offered frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Appended to the pending super-frame.
    Merged,
    /// Nothing was pending; the frame now starts the pending super-frame.
    Held,
    /// Something is pending and the frame does not continue it: take() the pending frame, then
    /// offer again.
    Flush,
    /// Not a coalescing candidate: write it as it is (after taking what is pending, to keep
    /// order). Pending state is unchanged.
    Pass,
}

/// Where a candidate segment's parts are in its frame.
#[derive(Clone, Copy, Debug)]
struct Seg {
    v: IpVersion,
    /// A UDP datagram; otherwise a TCP segment.
    udp: bool,
    l3: usize,
    l4: usize,
    /// TCP header length, or the UDP header's 8.
    thl: usize,
    /// End of the IP packet; Ethernet padding may follow.
    end: usize,
    /// TCP only (0 for UDP).
    seq: u32,
    /// TCP only (0 for UDP).
    flags: u8,
}

impl Seg {
    fn hdr_len(&self) -> usize {
        self.l4 + self.thl
    }

    fn payload_len(&self) -> usize {
        self.end - self.hdr_len()
    }
}

/// The super-frame being built. Its headers in the buffer stay the first segment's until take().
#[derive(Clone, Copy, Debug)]
struct Pending {
    head: Seg,
    /// Frame bytes in the buffer after the virtio-net header space.
    len: usize,
    segs: usize,
    next_seq: u32,
    gso_size: usize,
    /// No segment may follow: one with PSH or FIN, or one shorter than gso_size, is in. For UDP
    /// the short one is also what the kernel's segmentation can only put last.
    closed: bool,
    /// PSH and FIN of the merged segments, carried into the super-frame's flags.
    push_fin: u8,
    /// The latest segment's window, as on the wire: with equal acks TCP would end up using it
    /// after processing the segments one by one, so the super-frame should advertise it.
    window: [u8; 2],
}

/// Merges consecutive TCP segments (and, with set_udp, UDP datagrams) of one flow into one
/// super-frame. Owns one buffer, allocated in new().
pub struct Coalescer {
    /// Output layout: virtio-net header space, then the frame, so take() needs no copy.
    buf: Box<[u8]>,
    pending: Option<Pending>,
    /// UDP datagrams are candidates too.
    udp: bool,
}

impl Default for Coalescer {
    fn default() -> Coalescer {
        Coalescer::new()
    }
}

impl std::fmt::Debug for Coalescer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer").field("pending", &self.pending).field("udp", &self.udp).finish()
    }
}

impl Coalescer {
    pub fn new() -> Coalescer {
        Coalescer { buf: vec![0u8; BUF_LEN].into_boxed_slice(), pending: None, udp: false }
    }

    /// Also merges UDP datagrams (for a TAP that accepted USO); off by default, as a TAP without
    /// it rejects GSO_UDP_L4 frames.
    pub fn set_udp(&mut self, on: bool) {
        self.udp = on;
    }

    pub fn offer(&mut self, frame: &[u8]) -> Offer {
        let Some(seg) = parse(frame, self.udp) else {
            return Offer::Pass;
        };
        let Some(p) = &mut self.pending else {
            self.buf[vnet::LEN..vnet::LEN + seg.end].copy_from_slice(&frame[..seg.end]);
            // Read only for TCP: a short UDP datagram may end before the window.
            let window = if seg.udp { [0; 2] } else { tcp::window(&frame[seg.l4..]).to_be_bytes() };
            self.pending = Some(Pending {
                head: seg,
                len: seg.end,
                segs: 1,
                next_seq: seg.seq.wrapping_add(seg.payload_len() as u32),
                gso_size: seg.payload_len(),
                closed: seg.flags & (PSH | FIN) != 0,
                push_fin: 0,
                window,
            });
            return Offer::Held;
        };
        if !continues(p, &self.buf[vnet::LEN..vnet::LEN + p.len], &seg, frame) {
            return Offer::Flush;
        }
        let n = seg.payload_len();
        let at = vnet::LEN + p.len;
        self.buf[at..at + n].copy_from_slice(&frame[seg.hdr_len()..seg.end]);
        p.len += n;
        p.segs += 1;
        p.next_seq = p.next_seq.wrapping_add(n as u32);
        p.push_fin |= seg.flags & (PSH | FIN);
        p.closed = seg.flags & (PSH | FIN) != 0 || n < p.gso_size;
        if !seg.udp {
            p.window = tcp::window(&frame[seg.l4..]).to_be_bytes();
        }
        Offer::Merged
    }

    /// The pending super-frame with its 10-byte virtio-net header in front, ready for one TAP
    /// write; None when nothing is pending. Leaves the coalescer empty.
    pub fn take(&mut self) -> Option<&[u8]> {
        let p = self.pending.take()?;
        let hdr = if p.segs == 1 {
            // As received, and already verified: spare the kernel checking it again.
            VnetHdr { flags: vnet::F_DATA_VALID, ..VnetHdr::default() }
        } else {
            finish_headers(&mut self.buf[vnet::LEN..vnet::LEN + p.len], &p)
        };
        self.buf[..vnet::LEN].copy_from_slice(&hdr.to_bytes());
        Some(&self.buf[..vnet::LEN + p.len])
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_none()
    }

    /// Segments merged into the pending super-frame so far (0 when empty).
    pub fn segments(&self) -> usize {
        self.pending.map_or(0, |p| p.segs)
    }
}

/// The segment's layout if it is a coalescing candidate with valid checksums; UDP datagrams are
/// candidates only when `udp` is set.
fn parse(frame: &[u8], udp: bool) -> Option<Seg> {
    let ip = *Frame::parse(frame)?.ip()?;
    let (l3, v) = (ip.l3(), ip.version());
    let is_udp = |proto: u8| match proto {
        protocol::TCP => Some(false),
        protocol::UDP if udp => Some(true),
        _ => None,
    };
    // The smallest transport part worth merging: a header and at least one payload byte (a
    // TCP header without payload is left out below, after its length is known).
    let min_l4 = |is_udp: bool| if is_udp { udp::HEADER_LEN + 1 } else { tcp::HEADER_LEN };
    let (is_udp, l4, end, pseudo) = match v {
        IpVersion::V4 => {
            let ip = frame.get(l3..l3 + ipv4::HEADER_LEN)?;
            let total = usize::from(ipv4::total_len(ip));
            let proto = ip[ipv4::field::PROTOCOL];
            let is_udp = is_udp(proto)?;
            // No options, and nothing but DF among the fragment bits (MF, offset and the
            // reserved bit all stop the kernel's inet_gro_receive too).
            if ipv4::version(ip) != ipv4::VERSION
                || ipv4::header_len(ip) != ipv4::HEADER_LEN
                || ipv4::flags_frag(ip) & !ipv4::FLAG_DF != 0
                || total < ipv4::HEADER_LEN + min_l4(is_udp)
            {
                return None;
            }
            if l3 + total > frame.len() || !Sum::ZERO.add_bytes(ip).verifies() {
                return None;
            }
            let l4_len = (total - ipv4::HEADER_LEN) as u16;
            let pseudo = pseudo_v4(&ip[ipv4::field::SRC], &ip[ipv4::field::DST], proto, l4_len);
            (is_udp, l3 + ipv4::HEADER_LEN, l3 + total, pseudo)
        }
        IpVersion::V6 => {
            let ip = frame.get(l3..l3 + ipv6::HEADER_LEN)?;
            let plen = usize::from(ipv6::payload_len(ip));
            // The transport header right after the fixed header: extension headers are left to
            // the kernel.
            let proto = ip[ipv6::field::NEXT_HEADER];
            let is_udp = is_udp(proto)?;
            if ipv6::version(ip) != ipv6::VERSION || plen < min_l4(is_udp) || ipv6::HEADER_LEN + plen > MAX_IP
            {
                return None;
            }
            let l4 = l3 + ipv6::HEADER_LEN;
            if l4 + plen > frame.len() {
                return None;
            }
            let pseudo = pseudo_v6(&ip[ipv6::field::SRC], &ip[ipv6::field::DST], proto, plen as u32);
            (is_udp, l4, l4 + plen, pseudo)
        }
    };
    let l4_bytes = &frame[l4..end];
    if is_udp {
        let len = usize::from(udp::length(l4_bytes));
        // A zero checksum means none was sent (IPv4): merging would make one up for the whole.
        if len != l4_bytes.len()
            || l4_bytes[udp::field::CHECKSUM] == [0, 0]
            || !pseudo.add_bytes(l4_bytes).verifies()
        {
            return None;
        }
        return Some(Seg { v, udp: true, l3, l4, thl: udp::HEADER_LEN, end, seq: 0, flags: 0 });
    }
    let th = l4_bytes;
    let thl = tcp::header_len(th);
    let flags = tcp::flags(th);
    // A header that leaves no payload is a pure ACK (or malformed): nothing to merge.
    if thl < tcp::HEADER_LEN || thl >= th.len() || flags & (SYN | RST | URG | CWR) != 0 || flags & ACK == 0 {
        return None;
    }
    if !pseudo.add_bytes(th).verifies() {
        return None;
    }
    Some(Seg { v, udp: false, l3, l4, thl, end, seq: tcp::seq_number(th), flags })
}

/// Whether `seg` (in `frame`) extends the pending super-frame whose bytes are `held`.
fn continues(p: &Pending, held: &[u8], seg: &Seg, frame: &[u8]) -> bool {
    let h = &p.head;
    let n = seg.payload_len();
    // A TCP segment never continues UDP datagrams, nor the other way round.
    if p.closed || p.segs >= MAX_SEGS || n > p.gso_size || seg.udp != h.udp {
        return false;
    }
    if !seg.udp && seg.seq != p.next_seq {
        return false;
    }
    if seg.v != h.v || seg.l3 != h.l3 || seg.thl != h.thl || p.len + n - h.l3 > MAX_IP {
        return false;
    }
    let (l3, l4) = (h.l3, h.l4);
    let same = |from: usize, to: usize| held[from..to] == frame[from..to];
    let same_byte = |at: usize| held[at] == frame[at];
    let same_ip = match h.v {
        // Addresses, TOS, TTL and DF (the whole byte: parse() saw the other bits 0 in both); the
        // ID is free (segmentation offloads vary in setting it).
        IpVersion::V4 => {
            same(l3 + ipv4::field::SRC.start, l3 + ipv4::field::DST.end)
                && same_byte(l3 + ipv4::field::DSCP_ECN)
                && same_byte(l3 + ipv4::field::TTL)
                && same_byte(l3 + ipv4::field::FLAGS_FRAG.start)
        }
        // Version, traffic class and flow label; hop limit; addresses.
        IpVersion::V6 => {
            same(l3 + ipv6::field::VER_TC_FLOW.start, l3 + ipv6::field::VER_TC_FLOW.end)
                && same_byte(l3 + ipv6::field::HOP_LIMIT)
                && same(l3 + ipv6::field::SRC.start, l3 + ipv6::field::DST.end)
        }
    };
    let same_tcp = || {
        // Ack number and data offset; flags but PSH and FIN; options.
        let flags = l4 + tcp::field::FLAGS;
        same(l4 + tcp::field::ACK.start, l4 + tcp::field::DATA_OFF + 1)
            && (held[flags] ^ frame[flags]) & !(PSH | FIN) == 0
            && same(l4 + tcp::field::OPTIONS, l4 + h.thl)
    };
    // Ethernet header; ports.
    same_ip && same(0, l3) && same(l4 + PORTS.start, l4 + PORTS.end) && (h.udp || same_tcp())
}

/// Rewrites the first segment's headers in `frame` to describe the whole super-frame, with the
/// TCP or UDP checksum left partial (pseudo-header only) for the kernel to complete or not need.
fn finish_headers(frame: &mut [u8], p: &Pending) -> VnetHdr {
    let Seg { v, udp, l3, l4, thl, .. } = p.head;
    let l4_len = frame.len() - l4;
    let proto = if udp { protocol::UDP } else { protocol::TCP };
    let (pseudo, gso_type) = match v {
        IpVersion::V4 => {
            let ip_len = (frame.len() - l3) as u16;
            let ip = &mut frame[l3..l3 + ipv4::HEADER_LEN];
            ip[ipv4::field::TOTAL_LEN].copy_from_slice(&ip_len.to_be_bytes());
            ip[ipv4::field::CHECKSUM].fill(0);
            // Not Sum::finish: a header checksum of 0 is stored as 0, as everyone computes it.
            let csum = !Sum::ZERO.add_bytes(ip).fold();
            ip[ipv4::field::CHECKSUM].copy_from_slice(&csum.to_be_bytes());
            let pseudo = pseudo_v4(&ip[ipv4::field::SRC], &ip[ipv4::field::DST], proto, l4_len as u16);
            (pseudo, vnet::GSO_TCPV4)
        }
        IpVersion::V6 => {
            let payload_len = (frame.len() - l3 - ipv6::HEADER_LEN) as u16;
            let ip = &mut frame[l3..l3 + ipv6::HEADER_LEN];
            ip[ipv6::field::PAYLOAD_LEN].copy_from_slice(&payload_len.to_be_bytes());
            let pseudo = pseudo_v6(&ip[ipv6::field::SRC], &ip[ipv6::field::DST], proto, l4_len as u32);
            (pseudo, vnet::GSO_TCPV6)
        }
    };
    // The pseudo-header sum, not complemented: what F_NEEDS_CSUM asks the kernel to complete.
    let partial = pseudo.fold().to_be_bytes();
    let l4_hdr = &mut frame[l4..];
    let (gso_type, csum) = if udp {
        l4_hdr[udp::field::LENGTH].copy_from_slice(&(l4_len as u16).to_be_bytes());
        l4_hdr[udp::field::CHECKSUM].copy_from_slice(&partial);
        (vnet::GSO_UDP_L4, udp::field::CHECKSUM)
    } else {
        l4_hdr[tcp::field::FLAGS] |= p.push_fin;
        l4_hdr[tcp::field::WINDOW].copy_from_slice(&p.window);
        l4_hdr[tcp::field::CHECKSUM].copy_from_slice(&partial);
        (gso_type, tcp::field::CHECKSUM)
    };
    VnetHdr {
        flags: vnet::F_NEEDS_CSUM,
        gso_type,
        hdr_len: (l4 + thl) as u16,
        gso_size: p.gso_size as u16,
        csum_start: l4 as u16,
        csum_offset: csum.start as u16,
    }
}

#[cfg(test)]
mod tests;
