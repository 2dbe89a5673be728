//! Path MTU handling, pure: which frames may be fragmented on the underlay (the outer DF bit),
//! the ICMP "too big" replies that tell an inner sender to send smaller packets ([`icmp`]), the
//! TCP MSS clamp ([`mss`]), and the table of path MTUs learned towards remote VTEPs.
//!
//! What vxtap does with them (docs/design.md "Path MTU"): a frame that does not fit the path towards its
//! VTEP is, by the inner packet's own DF bit (`--df inherit`), either fragmented on the underlay
//! or dropped with an ICMP reply written back into the TAP, as the kernel does for bridged VXLAN
//! (`skb_tunnel_check_pmtu`); TAP super-frames are cut at the size that fits.

pub mod icmp;
pub mod mss;
mod too_big;

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::wire::frame::{Frame, IpVersion};
use crate::wire::outer_overhead;
pub use too_big::{recut, Recut, Refused, TooBig};

/// The outer IPv4 header's Don't Fragment bit (the kernel vxlan device's `df` option); on an
/// IPv6 underlay, whether vxtap may fragment a datagram at the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Df {
    /// Never fragment: a datagram over the path MTU is dropped (and the inner sender told, when
    /// its packet allowed no fragmentation either).
    Set,
    /// Always allow fragmentation (the kernel's default).
    Unset,
    /// Copy the inner IPv4 packet's DF bit; an inner IPv6 packet counts as DF, and a non-IP
    /// frame may be fragmented (as the kernel does).
    #[default]
    Inherit,
}

impl Df {
    /// Whether the datagram carrying the frame `view` describes may be fragmented on the
    /// underlay.
    #[inline]
    pub fn may_fragment(self, view: &Frame) -> bool {
        match self {
            Df::Set => false,
            Df::Unset => true,
            Df::Inherit => match view.ip() {
                Some(ip) => ip.version() == IpVersion::V4 && !ip.df(),
                None => true,
            },
        }
    }
}

impl FromStr for Df {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "set" => Ok(Df::Set),
            "unset" => Ok(Df::Unset),
            "inherit" => Ok(Df::Inherit),
            _ => Err(format!("invalid df {s:?}: expected set, unset or inherit")),
        }
    }
}

impl fmt::Display for Df {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Df::Set => "set",
            Df::Unset => "unset",
            Df::Inherit => "inherit",
        })
    }
}

/// `--mss-clamp`: rewrite the MSS option of TCP SYNs crossing the tunnel so that segments fit
/// the underlay path without relying on ICMP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MssClamp {
    /// Fit the path MTU towards each VTEP as the kernel knows it (at most the TAP's MTU).
    Auto,
    /// Fit an underlay path MTU of this many bytes, for paths that drop ICMP.
    PathMtu(u16),
}

impl FromStr for MssClamp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("auto") || s.eq_ignore_ascii_case("true") {
            return Ok(MssClamp::Auto);
        }
        match s.parse::<u16>() {
            Ok(m) if m >= MIN_PATH_MTU => Ok(MssClamp::PathMtu(m)),
            _ => Err(format!(
                "invalid --mss-clamp {s:?}: expected auto or an underlay path MTU of {MIN_PATH_MTU} to 65535 bytes"
            )),
        }
    }
}

/// Smallest underlay path MTU vxtap accepts in `--mss-clamp`: the IPv4 minimum (RFC 791).
pub const MIN_PATH_MTU: u16 = 576;

/// The largest UDP payload (tunnel header and frame) that fits a path of `path_mtu` bytes: the
/// outer IP and UDP headers come off.
#[inline]
pub fn datagram_room(path_mtu: u32, underlay_v6: bool) -> usize {
    (path_mtu as usize).saturating_sub(outer_overhead(underlay_v6, 0))
}

/// The largest inner IP packet that fits a path of `path_mtu` bytes, in a frame with `l2_len`
/// bytes of Ethernet header behind a tunnel header of `tunnel_header` bytes.
#[inline]
pub fn inner_mtu(path_mtu: u32, underlay_v6: bool, tunnel_header: usize, l2_len: usize) -> u32 {
    path_mtu.saturating_sub((outer_overhead(underlay_v6, tunnel_header) + l2_len) as u32)
}

/// Path MTUs below the usual that are known towards remote VTEPs, by underlay address. Read on
/// the packet path (once per TAP super-frame) without a lock; written on the cold path, when a
/// send is refused as too big and when the kernel's cached value is checked again.
#[derive(Default)]
pub struct PathMtus {
    entries: ArcSwap<Vec<(IpAddr, u32)>>,
}

impl PathMtus {
    /// The known path MTU towards `dst`, if one was learned.
    #[inline]
    pub fn get(&self, dst: IpAddr) -> Option<u32> {
        let entries = self.entries.load();
        if entries.is_empty() {
            return None;
        }
        let dst = dst.to_canonical();
        entries.iter().find(|(ip, _)| *ip == dst).map(|(_, m)| *m)
    }

    /// Records `mtu` towards `dst`, or forgets it with None (the path is wide again).
    pub fn set(&self, dst: IpAddr, mtu: Option<u32>) {
        let dst = dst.to_canonical();
        self.entries.rcu(|old| {
            let mut v: Vec<(IpAddr, u32)> = old.iter().filter(|(ip, _)| *ip != dst).copied().collect();
            if let Some(m) = mtu {
                v.push((dst, m));
            }
            v
        });
    }

    /// Every learned entry.
    pub fn snapshot(&self) -> Vec<(IpAddr, u32)> {
        self.entries.load().as_ref().clone()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.load().is_empty()
    }
}

impl fmt::Debug for PathMtus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.entries.load().iter()).finish()
    }
}

/// Shared handle to a table.
pub type SharedPathMtus = Arc<PathMtus>;

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ethertype: u16, l3: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend(ethertype.to_be_bytes());
        f.extend_from_slice(l3);
        f
    }

    #[test]
    fn inherit_copies_the_inner_df_bit() {
        let mut v4 = [0u8; 20];
        v4[0] = 0x45;
        let df0 = frame(0x0800, &v4);
        v4[6] = 0x40;
        let df1 = frame(0x0800, &v4);
        let v6 = frame(0x86dd, &[0x60; 40]);
        let arp = frame(0x0806, &[0; 28]);
        let mut tagged = vec![0u8; 12];
        tagged.extend([0x81, 0, 0, 42, 0x08, 0]);
        tagged.extend_from_slice(&v4);
        let view = |f: &[u8]| Frame::parse(f).unwrap();
        for (f, inherit) in [(&df0, true), (&df1, false), (&v6, false), (&arp, true), (&tagged, false)] {
            assert_eq!(Df::Inherit.may_fragment(&view(f)), inherit);
            assert!(!Df::Set.may_fragment(&view(f)));
            assert!(Df::Unset.may_fragment(&view(f)));
        }
        assert!(Df::Inherit.may_fragment(&view(&frame(0x0800, &[0x45]))), "truncated: nothing forbids it");
    }

    #[test]
    fn df_parses_and_prints() {
        for d in [Df::Set, Df::Unset, Df::Inherit] {
            assert_eq!(d.to_string().parse::<Df>(), Ok(d));
        }
        assert_eq!("SET".parse::<Df>(), Ok(Df::Set));
        assert!("maybe".parse::<Df>().is_err());
        assert_eq!(Df::default(), Df::Inherit);
    }

    #[test]
    fn table_learns_forgets_and_canonicalises() {
        let t = PathMtus::default();
        let b: IpAddr = "198.18.2.2".parse().unwrap();
        assert_eq!(t.get(b), None);
        t.set("::ffff:198.18.2.2".parse().unwrap(), Some(1400));
        assert_eq!(t.get(b), Some(1400), "v4-mapped is the same VTEP");
        t.set(b, Some(1300));
        assert_eq!(t.snapshot(), vec![(b, 1300)]);
        t.set(b, None);
        assert!(t.is_empty());
        assert_eq!(
            (datagram_room(1400, false), datagram_room(1400, true), datagram_room(20, false)),
            (1372, 1352, 0)
        );
        assert_eq!(inner_mtu(1400, false, 8, 14), 1350, "VXLAN over IPv4");
        assert_eq!(inner_mtu(1400, true, 8, 22), 1322, "over IPv6, two VLAN tags");
    }
}
