//! The software side of the TAP's offloads, pure (byte slices in, byte slices out, no I/O):
//! splitting the kernel's TCP super-frames into wire-sized segments on the way out ([`tso`]),
//! and merging received segments of one TCP flow back into a super-frame on the way in
//! ([`gro`]). This is what lets one system call move 64 KB instead of one 1.5 KB frame.

pub mod checksum;
pub mod gro;
pub mod tso;
pub mod vnet;

/// Where the IP header starts and which version it is, past an Ethernet header with at most
/// one 802.1Q tag. None for anything but IPv4 and IPv6.
#[inline]
pub fn l3_offset(frame: &[u8]) -> Option<(usize, IpVersion)> {
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    if ethertype == 0x8100 {
        off += 4;
        ethertype = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    }
    let v = match ethertype {
        0x0800 => IpVersion::V4,
        0x86dd => IpVersion::V6,
        _ => return None,
    };
    Some((off + 2, v))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpVersion {
    V4,
    V6,
}
