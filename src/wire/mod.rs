//! Wire formats: zero-copy views over byte slices, no I/O, no allocation.
//!
//! The tunnel headers ([`vxlan`], [`geneve`]) each have a checked `Packet<T: AsRef<[u8]>>` view
//! and a plain `Repr` (the style of smoltcp's wire module). On top of them:
//! - [`EncapHeader`]: a network's header, emitted once and then prepended into the headroom in
//!   front of each frame, so encapsulation never copies the frame;
//! - [`decapsulate`]: the receive policy the dataplane applies to each datagram, with one error
//!   variant per drop reason.
//!
//! The inner frame's headers ([`ethernet`], [`ipv4`], [`ipv6`], [`tcp`], [`udp`], and what IPv4
//! and IPv6 share in [`ip`]) are lighter: a `field` module of byte offsets, named constants, and
//! a few inline accessors over a slice the caller has already checked is long enough.
//!
//! [`wg`] is the encrypted underlay's part: the IP and UDP headers a tunnel datagram carries
//! inside a WireGuard transport message, written in front of it and checked on receipt, and
//! what WireGuard adds on the path.

pub mod build;
pub mod cidr;
pub mod ethernet;
pub mod frame;
pub mod geneve;
pub mod ip;
pub mod ipv4;
pub mod ipv6;
pub mod mac;
pub mod tcp;
pub mod udp;
pub mod vxlan;
pub mod wg;

use std::fmt;
use std::ops::Range;
use std::str::FromStr;

/// Largest 24-bit VNI.
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// An Ethernet header without VLAN tag: the least an inner frame must hold.
pub const ETHERNET_HEADER_LEN: usize = ethernet::HEADER_LEN;
/// Headroom that fits any tunnel header vxtap emits (Geneve with a full option area).
pub const MAX_HEADER_LEN: usize = geneve::MAX_HEADER_LEN;

/// Bytes the underlay adds in front of an inner frame: the outer IPv4 or IPv6 header (without
/// options or extension headers), the UDP header and a tunnel header of `tunnel_header` bytes (0
/// for the room a path leaves for the UDP payload). The inner Ethernet header is the frame's.
#[inline]
pub const fn outer_overhead(underlay_v6: bool, tunnel_header: usize) -> usize {
    (if underlay_v6 { ipv6::HEADER_LEN } else { ipv4::HEADER_LEN }) + udp::HEADER_LEN + tunnel_header
}

/// The big-endian 16-bit field at `r` (its first two bytes) of `b`.
#[inline]
pub(crate) fn read_u16(b: &[u8], r: Range<usize>) -> u16 {
    u16::from_be_bytes([b[r.start], b[r.start + 1]])
}

/// The big-endian 32-bit field at `r` (its first four bytes) of `b`.
#[inline]
pub(crate) fn read_u32(b: &[u8], r: Range<usize>) -> u32 {
    u32::from_be_bytes([b[r.start], b[r.start + 1], b[r.start + 2], b[r.start + 3]])
}

/// Writes `v` big-endian into the 16-bit field at `r` (its first two bytes) of `b`.
#[inline]
pub(crate) fn write_u16(b: &mut [u8], r: Range<usize>, v: u16) {
    b[r.start..r.start + 2].copy_from_slice(&v.to_be_bytes());
}

/// Why a datagram was rejected or a header could not be emitted. Each receive error has its own
/// variant, so the dataplane counts drops by reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("datagram shorter than the tunnel header")]
    Truncated,
    #[error("inner frame shorter than an Ethernet header")]
    ShortFrame,
    #[error("VXLAN header without the I flag")]
    VxlanNoIFlag,
    #[error("VXLAN reserved bits set (strict mode)")]
    VxlanReservedBits,
    #[error("Geneve version {0} (only 0 is defined)")]
    GeneveVersion(u8),
    #[error("Geneve option length runs past the packet")]
    GeneveOptionsOverrun,
    #[error("Geneve control (OAM) packet")]
    GeneveOam,
    #[error("Geneve critical option class {class:#06x} type {kind:#04x} not understood")]
    GeneveCriticalOption { class: u16, kind: u8 },
    #[error("Geneve protocol type {0:#06x} is not Ethernet")]
    GeneveProtocol(u16),
    #[error("Geneve option not encodable (data not a multiple of 4 bytes, over 124 bytes, or area over 252 bytes)")]
    GeneveBadOption,
    #[error("VNI {0} is over 24 bits")]
    VniOutOfRange(u32),
    #[error("buffer too small for the header")]
    NoRoom,
}

/// The tunnel protocol of a network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    #[default]
    Vxlan,
    Geneve,
}

impl Proto {
    /// IANA ports: 4789 for VXLAN (RFC 7348), 6081 for Geneve (RFC 8926).
    pub const fn default_port(self) -> u16 {
        match self {
            Proto::Vxlan => 4789,
            Proto::Geneve => 6081,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Vxlan => "vxlan",
            Proto::Geneve => "geneve",
        })
    }
}

impl FromStr for Proto {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "vxlan" => Ok(Proto::Vxlan),
            "geneve" => Ok(Proto::Geneve),
            _ => Err(format!("unknown protocol {s:?}: expected vxlan or geneve")),
        }
    }
}

/// A network's tunnel header, emitted once and prepended to every frame.
///
/// The dataplane reads each frame at offset [`MAX_HEADER_LEN`] of its buffer; [`prepend`]
/// writes the header into the bytes just before it, and the datagram is the slice from there.
///
/// [`prepend`]: EncapHeader::prepend
#[derive(Clone)]
pub struct EncapHeader {
    bytes: [u8; MAX_HEADER_LEN],
    len: usize,
}

impl EncapHeader {
    pub fn vxlan(vni: u32) -> Result<EncapHeader, Error> {
        let mut bytes = [0u8; MAX_HEADER_LEN];
        vxlan::Repr { vni }.emit(&mut vxlan::Packet::new_unchecked(&mut bytes[..]))?;
        Ok(EncapHeader { bytes, len: vxlan::HEADER_LEN })
    }

    pub fn geneve(repr: &geneve::Repr<'_>) -> Result<EncapHeader, Error> {
        let mut bytes = [0u8; MAX_HEADER_LEN];
        let len = repr.emit(&mut geneve::Packet::new_unchecked(&mut bytes[..]))?;
        Ok(EncapHeader { bytes, len })
    }

    /// The header for an Ethernet network of `proto` with no Geneve options.
    pub fn for_proto(proto: Proto, vni: u32) -> Result<EncapHeader, Error> {
        match proto {
            Proto::Vxlan => EncapHeader::vxlan(vni),
            Proto::Geneve => EncapHeader::geneve(&geneve::Repr::ethernet(vni, &[])),
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Writes the header into `buf[frame_start - len .. frame_start]` and returns where the
    /// datagram starts. The frame itself is not touched.
    #[inline]
    pub fn prepend(&self, buf: &mut [u8], frame_start: usize) -> Result<usize, Error> {
        let start = frame_start.checked_sub(self.len).ok_or(Error::NoRoom)?;
        buf.get_mut(start..frame_start).ok_or(Error::NoRoom)?.copy_from_slice(self.as_bytes());
        Ok(start)
    }
}

impl fmt::Debug for EncapHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncapHeader({:02x?})", self.as_bytes())
    }
}

/// The receive policy of one socket's protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RxPolicy {
    Vxlan(vxlan::RxPolicy),
    Geneve(geneve::RxPolicy),
}

impl RxPolicy {
    /// The default policy for `proto`: RFC behaviour, no known Geneve options.
    pub fn for_proto(proto: Proto) -> RxPolicy {
        match proto {
            Proto::Vxlan => RxPolicy::Vxlan(vxlan::RxPolicy::default()),
            Proto::Geneve => RxPolicy::Geneve(geneve::RxPolicy::default()),
        }
    }
}

/// A datagram that passed the receive policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapsulated<'a> {
    pub vni: u32,
    /// The inner Ethernet frame, a sub-slice of the datagram.
    pub frame: &'a [u8],
}

/// Checks a received datagram (the UDP payload) and returns its VNI and inner frame.
pub fn decapsulate<'a>(datagram: &'a [u8], policy: &RxPolicy) -> Result<Decapsulated<'a>, Error> {
    let (vni, frame) = match policy {
        RxPolicy::Vxlan(p) => {
            let packet = vxlan::Packet::new_checked(datagram)?;
            let repr = vxlan::Repr::parse(&packet, p)?;
            (repr.vni, &datagram[vxlan::HEADER_LEN..])
        }
        RxPolicy::Geneve(p) => {
            let packet = geneve::Packet::new_checked(datagram)?;
            let vni = geneve::Repr::check(&packet, p)?;
            (vni, &datagram[packet.header_len()..])
        }
    };
    if frame.len() < ETHERNET_HEADER_LEN {
        return Err(Error::ShortFrame);
    }
    Ok(Decapsulated { vni, frame })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepend_writes_only_the_headroom() {
        let h = EncapHeader::vxlan(42).unwrap();
        let mut buf = [0xeeu8; 40];
        let start = h.prepend(&mut buf, 20).unwrap();
        assert_eq!(start, 12);
        assert_eq!(&buf[12..20], &[0x08, 0, 0, 0, 0, 0, 42, 0]);
        assert!(buf[..12].iter().chain(&buf[20..]).all(|&b| b == 0xee), "frame and rest untouched");
        assert_eq!(h.prepend(&mut buf, 7), Err(Error::NoRoom));
        assert_eq!(h.prepend(&mut buf, 41), Err(Error::NoRoom));
    }

    #[test]
    fn decapsulate_rejects_short_inner_frame() {
        let mut d = [0u8; 8 + ETHERNET_HEADER_LEN];
        EncapHeader::vxlan(1).unwrap().prepend(&mut d, 8).unwrap();
        let policy = RxPolicy::for_proto(Proto::Vxlan);
        assert_eq!(decapsulate(&d, &policy).map(|x| x.vni), Ok(1));
        assert_eq!(decapsulate(&d[..d.len() - 1], &policy), Err(Error::ShortFrame));
    }

    #[test]
    fn outer_overhead_is_ip_udp_and_the_tunnel_header() {
        assert_eq!(outer_overhead(false, vxlan::HEADER_LEN), 36);
        assert_eq!(outer_overhead(true, vxlan::HEADER_LEN), 56);
        assert_eq!(outer_overhead(false, 0) + vxlan::HEADER_LEN + ETHERNET_HEADER_LEN, 50, "VXLAN over IPv4");
    }

    #[test]
    fn proto_parses_and_has_iana_ports() {
        assert_eq!("VXLAN".parse::<Proto>(), Ok(Proto::Vxlan));
        assert_eq!("geneve".parse::<Proto>().map(Proto::default_port), Ok(6081));
        assert_eq!(Proto::Vxlan.default_port(), 4789);
        assert!("gre".parse::<Proto>().is_err());
    }
}
