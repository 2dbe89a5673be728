//! The virtio-net header the kernel's TAP driver puts before every frame once IFF_VNET_HDR is
//! set (struct virtio_net_hdr, include/uapi/linux/virtio_net.h): it says whether the frame is a
//! TCP super-frame to segment (GSO) and whether its checksum is left partial.

/// Size of the legacy header the TAP uses by default (TUNSETVNETHDRSZ not called).
pub const LEN: usize = 10;

/// `flags`: the checksum from `csum_start` on is partial and must be completed.
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum was checked already (receive direction).
pub const F_DATA_VALID: u8 = 2;

pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
/// Bit or'ed into `gso_type`: the super-frame carries ECN CWR, to be set on the first segment.
pub const GSO_ECN: u8 = 0x80;

/// A virtio-net header. Fields are in host order: the TAP uses the host's byte order unless
/// told otherwise (TUNSETVNETLE/BE), which vxtap never does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    /// Length of the headers (Ethernet to TCP); only a hint, never trusted.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads the header at the start of `buf`; None when it is shorter than [`LEN`].
    #[inline]
    pub fn parse(buf: &[u8]) -> Option<VnetHdr> {
        let b = buf.get(..LEN)?;
        let u16_at = |i: usize| u16::from_ne_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    #[inline]
    pub fn to_bytes(self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// The GSO type without the ECN bit.
    #[inline]
    pub fn gso(&self) -> u8 {
        self.gso_type & !GSO_ECN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_short_input() {
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV6 | GSO_ECN,
            hdr_len: 74,
            gso_size: 1428,
            csum_start: 54,
            csum_offset: 16,
        };
        assert_eq!(VnetHdr::parse(&h.to_bytes()), Some(h));
        assert_eq!(h.gso(), GSO_TCPV6);
        assert_eq!(VnetHdr::parse(&[0u8; LEN - 1]), None);
    }
}
