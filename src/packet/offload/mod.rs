//! The software side of the TAP's offloads, pure (byte slices in, byte slices out, no I/O):
//! splitting the kernel's TCP super-frames into wire-sized segments on the way out ([`tso`]),
//! and merging received segments of one TCP flow back into a super-frame on the way in
//! ([`gro`]). This is what lets one system call move 64 KB instead of one 1.5 KB frame.

pub mod checksum;
pub mod gro;
pub mod tso;
pub mod vnet;

use crate::wire::frame::Frame;
pub use crate::wire::frame::IpVersion;

/// Where the IP header starts and which version it is, by the frame view's rule
/// ([`crate::wire::frame`]). None for anything but IPv4 and IPv6. For tests: the packet path
/// parses a frame once and reads its offsets from the [`Frame`].
#[inline]
pub fn l3_offset(frame: &[u8]) -> Option<(usize, IpVersion)> {
    let ip = *Frame::parse(frame)?.ip()?;
    Some((ip.l3(), ip.version()))
}
