//! Software segmentation: the TAP hands over TCP (and UDP) super-frames of up to 64 KB with one
//! set of headers; the wire wants frames no larger than the MTU. Each segment gets a copy of the
//! headers fixed up for its slice of the payload (lengths, IPv4 ID, TCP sequence and flags,
//! checksums), as the kernel's tcp_gso_segment/__udp_gso_segment would do.

use super::checksum::{self, pseudo_v4, pseudo_v6, Sum};
#[cfg(test)]
use super::l3_offset; // the tests find their headers with it
use super::vnet::{VnetHdr, F_NEEDS_CSUM, GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4};
use super::IpVersion;
use crate::wire::frame::Frame;
use crate::wire::ip::protocol;
use crate::wire::{ipv4, ipv6, tcp, udp, write_u16};

/// Why a super-frame could not be segmented (the caller counts a drop by reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// A GSO type or header layout vxtap does not segment (e.g. IPv6 extension headers, UFO);
    /// IPv4 options are fine.
    Unsupported,
    /// Offsets or lengths in the virtio-net header or the IP/TCP/UDP headers disagree with the frame.
    Malformed,
    /// `out` is too small for the segments.
    NoRoom,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Error::Unsupported => "unsupported gso type or header layout",
            Error::Malformed => "malformed super-frame",
            Error::NoRoom => "no room for the segments",
        })
    }
}

impl std::error::Error for Error {}

/// Where the segments of one super-frame lie in the output buffer: `count` back-to-back
/// segments, each `stride` bytes long except the last, which may be shorter; `len` bytes in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    pub stride: usize,
    pub count: usize,
    pub len: usize,
}

/// Header offsets of a validated super-frame: `l3 + ipv4::HEADER_LEN <= l4` (v4) or
/// `l3 + ipv6::HEADER_LEN == l4` (v6), `l4 + tcp::HEADER_LEN <= end` (TCP) or
/// `l4 + udp::HEADER_LEN == end` (UDP), and `end < frame.len()`.
struct Layout {
    l3: usize,
    l4: usize,
    /// End of the headers, where the payload starts.
    end: usize,
    v: IpVersion,
    tcp: bool,
}

/// Checks the headers (parsed into `view`) against the virtio-net header. Nothing in `hdr` but
/// the GSO type, the segment size and csum_start is used: hdr_len is the kernel's linear head,
/// not the headers.
fn parse(frame: &[u8], view: &Frame, hdr: &VnetHdr) -> Result<Layout, Error> {
    let (want, tcp) = match hdr.gso() {
        GSO_TCPV4 => (Some(IpVersion::V4), true),
        GSO_TCPV6 => (Some(IpVersion::V6), true),
        GSO_UDP_L4 => (None, false),
        _ => return Err(Error::Unsupported),
    };
    if hdr.gso_size == 0 {
        return Err(Error::Malformed);
    }
    let ip = view.ip().ok_or(Error::Malformed)?;
    let (l3, v, l4) = (ip.l3(), ip.version(), ip.l4());
    if want.is_some_and(|w| w != v) {
        return Err(Error::Malformed);
    }
    let proto = if tcp { protocol::TCP } else { protocol::UDP };
    match v {
        // A fragment cannot be cut further: every segment would claim the same offset.
        IpVersion::V4 if ip.proto() != proto || ip.is_fragment() => return Err(Error::Malformed),
        IpVersion::V4 => {}
        IpVersion::V6 => match ip.proto() {
            p if p == proto => {}
            protocol::TCP | protocol::UDP => return Err(Error::Malformed),
            _ => return Err(Error::Unsupported),
        },
    }
    if hdr.flags & F_NEEDS_CSUM != 0 && usize::from(hdr.csum_start) != l4 {
        return Err(Error::Malformed);
    }
    let end = if tcp {
        let th = frame.get(l4..l4 + tcp::HEADER_LEN).ok_or(Error::Malformed)?;
        let thl = tcp::header_len(th);
        if thl < tcp::HEADER_LEN {
            return Err(Error::Malformed);
        }
        l4 + thl
    } else {
        l4 + udp::HEADER_LEN
    };
    // Also rejects an empty payload: there is nothing to segment.
    if end >= frame.len() {
        return Err(Error::Malformed);
    }
    Ok(Layout { l3, l4, end, v, tcp })
}

/// The Ethernet, IP and TCP/UDP headers of a super-frame (parsed into `view`): what every
/// segment repeats. None unless IP and then TCP or UDP.
#[inline]
pub fn headers_len(frame: &[u8], view: &Frame) -> Option<usize> {
    let ip = view.ip()?;
    let l4 = ip.l4();
    match ip.proto() {
        protocol::TCP => Some(l4 + tcp::header_len(frame.get(l4..l4 + tcp::HEADER_LEN)?)),
        protocol::UDP => Some(l4 + udp::HEADER_LEN),
        _ => None,
    }
}

/// Splits the super-frame `frame` (an Ethernet frame that followed the virtio-net header `hdr`
/// on a TAP read) into segments of at most `hdr.gso_size` payload bytes. Each segment is written
/// into `out` as `prefix` (the tunnel header; may be empty) followed by a complete Ethernet frame.
/// Parses the frame's headers: the packet path, which parsed them already, calls
/// [`segment_parsed`].
pub fn segment(frame: &[u8], hdr: &VnetHdr, prefix: &[u8], out: &mut [u8]) -> Result<Segments, Error> {
    let view = Frame::parse(frame).ok_or(Error::Malformed)?;
    segment_parsed(frame, &view, hdr, prefix, out)
}

/// [`segment`] of a frame whose headers are parsed into `view`.
pub fn segment_parsed(
    frame: &[u8],
    view: &Frame,
    hdr: &VnetHdr,
    prefix: &[u8],
    out: &mut [u8],
) -> Result<Segments, Error> {
    let lay = parse(frame, view, hdr)?;
    let gso = usize::from(hdr.gso_size);
    let (headers, payload) = frame.split_at(lay.end);
    let l4_hdr_len = lay.end - lay.l4;

    // The largest segment's lengths must fit the 16-bit length fields (no jumbograms).
    let max_chunk = gso.min(payload.len());
    let widest = match lay.v {
        IpVersion::V4 => lay.end - lay.l3 + max_chunk,
        IpVersion::V6 => l4_hdr_len + max_chunk,
    };
    if widest > usize::from(u16::MAX) {
        return Err(Error::Malformed);
    }

    let head = prefix.len() + lay.end;
    let count = payload.len().div_ceil(gso);
    let stride = head.checked_add(gso).ok_or(Error::NoRoom)?;
    let len = head.checked_mul(count).and_then(|h| h.checked_add(payload.len())).ok_or(Error::NoRoom)?;
    let out = out.get_mut(..len).ok_or(Error::NoRoom)?;

    // The pseudo-header without its length (added per segment: only the last one differs).
    let proto = if lay.tcp { protocol::TCP } else { protocol::UDP };
    let ip = &headers[lay.l3..lay.l4];
    let (pseudo, mut id) = match lay.v {
        IpVersion::V4 => (pseudo_v4(&ip[ipv4::field::SRC], &ip[ipv4::field::DST], proto, 0), ipv4::ident(ip)),
        IpVersion::V6 => (pseudo_v6(&ip[ipv6::field::SRC], &ip[ipv6::field::DST], proto, 0), 0),
    };
    let mut seq = 0;
    let mut flags = 0;
    if lay.tcp {
        let th = &headers[lay.l4..lay.end];
        seq = tcp::seq_number(th);
        flags = tcp::flags(th);
    }
    let step = u32::from(hdr.gso_size);

    // chunks_mut(stride) yields exactly `count` pieces: head + gso bytes each, and head plus the
    // short remainder for the last, matching payload.chunks(gso) piece by piece.
    for (i, (seg, chunk)) in out.chunks_mut(stride).zip(payload.chunks(gso)).enumerate() {
        let (pre, rest) = seg.split_at_mut(prefix.len());
        pre.copy_from_slice(prefix);
        let (h, body) = rest.split_at_mut(lay.end);
        h.copy_from_slice(headers);
        body.copy_from_slice(chunk);
        let data = Sum::ZERO.add_bytes(chunk);

        // Fits in u16: checked against `widest` above.
        let l4_len = (l4_hdr_len + chunk.len()) as u16;
        let ip = &mut h[lay.l3..lay.l4];
        match lay.v {
            IpVersion::V4 => {
                let total = (lay.l4 - lay.l3) as u16 + l4_len;
                ip[ipv4::field::TOTAL_LEN].copy_from_slice(&total.to_be_bytes());
                ip[ipv4::field::IDENT].copy_from_slice(&id.to_be_bytes());
                ip[ipv4::field::CHECKSUM].fill(0);
                let c = Sum::ZERO.add_bytes(ip).finish();
                ip[ipv4::field::CHECKSUM].copy_from_slice(&c);
                id = id.wrapping_add(1);
            }
            IpVersion::V6 => ip[ipv6::field::PAYLOAD_LEN].copy_from_slice(&l4_len.to_be_bytes()),
        }

        let l4 = &mut h[lay.l4..];
        let csum = if lay.tcp {
            l4[tcp::field::SEQ].copy_from_slice(&seq.to_be_bytes());
            seq = seq.wrapping_add(step);
            let mut f = flags;
            if i + 1 != count {
                f &= !(tcp::FIN | tcp::PSH);
            }
            if i != 0 {
                f &= !tcp::CWR;
            }
            l4[tcp::field::FLAGS] = f;
            tcp::field::CHECKSUM
        } else {
            l4[udp::field::LENGTH].copy_from_slice(&l4_len.to_be_bytes());
            udp::field::CHECKSUM
        };
        // A two-byte write whichever field it is (a range chosen at run time would cost a memset).
        write_u16(l4, csum.clone(), 0);
        let sum = pseudo.add_u16(l4_len).add_bytes(l4).combine(data);
        write_u16(l4, csum, u16::from_be_bytes(sum.finish()));
    }
    Ok(Segments { stride, count, len })
}

/// Completes the partial checksum of a non-GSO frame the TAP handed over with F_NEEDS_CSUM.
/// Malformed when csum_start/csum_offset do not fit the frame.
pub fn complete_checksum(frame: &mut [u8], hdr: &VnetHdr) -> Result<(), Error> {
    if hdr.flags & F_NEEDS_CSUM == 0 {
        return Ok(());
    }
    if checksum::complete(frame, usize::from(hdr.csum_start), usize::from(hdr.csum_offset)) {
        Ok(())
    } else {
        Err(Error::Malformed)
    }
}

#[cfg(test)]
mod tests;
