//! VXLAN header (RFC 7348 §5).
//!
//! ```text
//!  0                   1                   2                   3
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! ```
//! On transmit the flags are exactly `I` and every reserved bit is zero. On receipt the RFC says
//! reserved bits are ignored; the Linux kernel, Open vSwitch and VPP reject them instead, so
//! [`RxPolicy::strict_reserved`] offers that behaviour as an option.

use super::{Error, MAX_VNI};

/// Length of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The "VNI is valid" flag, the only flag VXLAN defines.
pub const FLAG_I: u8 = 0x08;

/// What a receiver accepts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxPolicy {
    /// Reject packets with any reserved bit set (Linux, OVS and VPP behaviour) instead of ignoring them (RFC 7348).
    pub strict_reserved: bool,
}

/// A checked view of a VXLAN header at the start of `buffer`; accessors cannot go out of bounds.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checking its length; accessors panic if it is shorter than the header.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps `buffer`, checking that it holds a whole header.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Packet { buffer })
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The flags octet.
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// The 24-bit VXLAN Network Identifier.
    #[inline]
    pub fn vni(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[4], b[5], b[6]])
    }

    /// True when any bit other than `I` is set: the seven reserved flag bits, the 24 bits after the
    /// flags or the last octet.
    #[inline]
    pub fn reserved_bits_set(&self) -> bool {
        let b = self.buffer.as_ref();
        b[0] & !FLAG_I != 0 || b[1] | b[2] | b[3] | b[7] != 0
    }

    /// The encapsulated Ethernet frame.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    pub fn set_flags(&mut self, flags: u8) {
        self.buffer.as_mut()[0] = flags;
    }

    /// Sets the VNI; only its low 24 bits are written.
    #[inline]
    pub fn set_vni(&mut self, vni: u32) {
        let v = vni.to_be_bytes();
        self.buffer.as_mut()[4..7].copy_from_slice(&v[1..4]);
    }

    /// Zeroes every reserved field (not the flags).
    #[inline]
    pub fn clear_reserved(&mut self) {
        let b = self.buffer.as_mut();
        b[1..4].fill(0);
        b[7] = 0;
    }

    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buffer.as_mut()[HEADER_LEN..]
    }
}

/// The meaning of a VXLAN header: VXLAN carries nothing but the VNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub vni: u32,
}

impl Repr {
    /// Checks a received header against `policy`.
    pub fn parse<T: AsRef<[u8]>>(packet: &Packet<T>, policy: &RxPolicy) -> Result<Repr, Error> {
        if packet.flags() & FLAG_I == 0 {
            return Err(Error::VxlanNoIFlag);
        }
        if policy.strict_reserved && packet.reserved_bits_set() {
            return Err(Error::VxlanReservedBits);
        }
        Ok(Repr { vni: packet.vni() })
    }

    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header: flags exactly `I`, reserved bits zero. Fails on a VNI over 24 bits.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<(), Error> {
        if self.vni > MAX_VNI {
            return Err(Error::VniOutOfRange(self.vni));
        }
        packet.set_flags(FLAG_I);
        packet.clear_reserved();
        packet.set_vni(self.vni);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LENIENT: RxPolicy = RxPolicy { strict_reserved: false };
    const STRICT: RxPolicy = RxPolicy { strict_reserved: true };

    #[test]
    fn field_accessors() {
        let bytes = [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0, 0xaa];
        let p = Packet::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.flags(), 0x08);
        assert_eq!(p.vni(), 0x123456);
        assert!(!p.reserved_bits_set());
        assert_eq!(p.payload(), &[0xaa]);
    }

    #[test]
    fn emit_sets_exact_flags_and_zero_reserved() {
        let mut buf = [0xffu8; 8];
        let mut p = Packet::new_unchecked(&mut buf[..]);
        Repr { vni: 0xabcdef }.emit(&mut p).unwrap();
        assert_eq!(buf, [0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
    }

    #[test]
    fn emit_rejects_vni_over_24_bits() {
        let mut buf = [0u8; 8];
        let err = Repr { vni: 1 << 24 }.emit(&mut Packet::new_unchecked(&mut buf[..]));
        assert_eq!(err, Err(Error::VniOutOfRange(1 << 24)));
    }

    #[test]
    fn rejects_short_header() {
        for n in 0..HEADER_LEN {
            assert_eq!(Packet::new_checked(&[0x08u8; 8][..n]).err(), Some(Error::Truncated));
        }
    }

    #[test]
    fn rejects_missing_i_flag() {
        let p = Packet::new_checked(&[0x00, 0, 0, 0, 0, 0, 42, 0][..]).unwrap();
        assert_eq!(Repr::parse(&p, &LENIENT), Err(Error::VxlanNoIFlag));
        let p = Packet::new_checked(&[0xf7, 0, 0, 0, 0, 0, 42, 0][..]).unwrap();
        assert_eq!(Repr::parse(&p, &LENIENT), Err(Error::VxlanNoIFlag));
    }

    #[test]
    fn reserved_bits_ignored_by_default_rejected_when_strict() {
        // Each reserved field on its own: a reserved flag bit, the 24 bits after the flags, the last octet.
        for (i, v) in [(0usize, 0x88u8), (1, 0x01), (2, 0x80), (3, 0x10), (7, 0xff)] {
            let mut b = [0x08, 0, 0, 0, 0, 0, 42, 0];
            b[i] = v;
            let p = Packet::new_checked(&b[..]).unwrap();
            assert!(p.reserved_bits_set(), "byte {i}");
            assert_eq!(Repr::parse(&p, &LENIENT), Ok(Repr { vni: 42 }), "byte {i}");
            assert_eq!(Repr::parse(&p, &STRICT), Err(Error::VxlanReservedBits), "byte {i}");
        }
    }
}
