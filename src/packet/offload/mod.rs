//! The software side of the TAP's offloads, pure (byte slices in, byte slices out, no I/O):
//! splitting the kernel's TCP super-frames into wire-sized segments on the way out ([`tso`]),
//! and merging received segments of one TCP flow back into a super-frame on the way in
//! ([`gro`]). This is what lets one system call move 64 KB instead of one 1.5 KB frame.

pub mod checksum;
pub mod gro;
pub mod tso;
pub mod vnet;

use crate::wire::ethernet;

/// Where the IP header starts and which version it is, past an Ethernet header with at most
/// one 802.1Q tag. None for anything but IPv4 and IPv6.
#[inline]
pub fn l3_offset(frame: &[u8]) -> Option<(usize, IpVersion)> {
    let (ethertype, off) = ethernet::payload_type(frame)?;
    let v = match ethertype {
        ethernet::ETHERTYPE_IPV4 => IpVersion::V4,
        ethernet::ETHERTYPE_IPV6 => IpVersion::V6,
        _ => return None,
    };
    Some((off, v))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpVersion {
    V4,
    V6,
}
