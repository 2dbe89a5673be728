//! Geneve header and options (RFC 8926 §3).
//!
//! ```text
//! |Ver|  Opt Len  |O|C|    Rsvd.  |          Protocol Type        |
//! |        Virtual Network Identifier (VNI)       |    Reserved   |
//! |                    Variable-Length Options                    |
//! ```
//! Each option is a TLV: `Option Class (16) | Type (8) | R R R | Length (5)` followed by
//! `Length` 4-byte words of data. The high bit of Type marks an option critical: a receiver that
//! does not understand it must drop the packet.

use super::{Error, MAX_VNI};

/// Length of the fixed part of the header.
pub const BASE_LEN: usize = 8;
/// Opt Len is six bits of 4-byte words.
pub const MAX_OPTIONS_LEN: usize = 63 * 4;
/// Longest possible header: base plus a full option area.
pub const MAX_HEADER_LEN: usize = BASE_LEN + MAX_OPTIONS_LEN;
/// Length of an option's own header.
pub const OPTION_HEADER_LEN: usize = 4;
/// An option's Length is five bits of 4-byte words.
pub const MAX_OPTION_DATA_LEN: usize = 31 * 4;
/// Protocol Type for an Ethernet payload ("Transparent Ethernet Bridging").
pub const PROTO_ETHERNET: u16 = 0x6558;

const FLAG_OAM: u8 = 0x80;
const FLAG_CRITICAL: u8 = 0x40;
const OPTION_TYPE_CRITICAL: u8 = 0x80;

/// A checked view of a Geneve header at the start of `buffer`: the base header and the option area
/// that Opt Len announces are both inside the buffer.
#[derive(Debug, Clone)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps `buffer` without checks; accessors panic if it is shorter than they need.
    pub const fn new_unchecked(buffer: T) -> Packet<T> {
        Packet { buffer }
    }

    /// Wraps `buffer`, checking the base header is whole, the version is 0 (a later version may
    /// lay the rest out differently, so nothing else is read) and the option area fits.
    pub fn new_checked(buffer: T) -> Result<Packet<T>, Error> {
        let len = buffer.as_ref().len();
        if len < BASE_LEN {
            return Err(Error::Truncated);
        }
        let p = Packet { buffer };
        if p.version() != 0 {
            return Err(Error::GeneveVersion(p.version()));
        }
        if len < p.header_len() {
            return Err(Error::GeneveOptionsOverrun);
        }
        Ok(p)
    }

    pub fn into_inner(self) -> T {
        self.buffer
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 6
    }

    /// Length of the option area in bytes.
    #[inline]
    pub fn options_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[0] & 0x3f) * 4
    }

    /// Base header plus options: where the payload starts.
    #[inline]
    pub fn header_len(&self) -> usize {
        BASE_LEN + self.options_len()
    }

    /// O: a control (OAM) packet, never delivered as a tenant frame.
    #[inline]
    pub fn oam(&self) -> bool {
        self.buffer.as_ref()[1] & FLAG_OAM != 0
    }

    /// C: critical options are present.
    #[inline]
    pub fn critical(&self) -> bool {
        self.buffer.as_ref()[1] & FLAG_CRITICAL != 0
    }

    #[inline]
    pub fn protocol(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[2], b[3]])
    }

    #[inline]
    pub fn vni(&self) -> u32 {
        let b = self.buffer.as_ref();
        u32::from_be_bytes([0, b[4], b[5], b[6]])
    }

    /// The option TLVs; the iterator never reads past the option area.
    #[inline]
    pub fn options(&self) -> Options<'_> {
        Options::new(&self.buffer.as_ref()[BASE_LEN..self.header_len()])
    }

    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Writes byte 0: version 0 and the option length in bytes (a multiple of 4, at most 252).
    #[inline]
    fn set_version_and_options_len(&mut self, options_len: usize) {
        debug_assert!(options_len.is_multiple_of(4) && options_len <= MAX_OPTIONS_LEN);
        self.buffer.as_mut()[0] = (options_len / 4) as u8;
    }

    /// Writes byte 1: O and C, reserved bits zero.
    #[inline]
    fn set_flags(&mut self, oam: bool, critical: bool) {
        let mut f = 0;
        if oam {
            f |= FLAG_OAM;
        }
        if critical {
            f |= FLAG_CRITICAL;
        }
        self.buffer.as_mut()[1] = f;
    }

    #[inline]
    pub fn set_protocol(&mut self, proto: u16) {
        self.buffer.as_mut()[2..4].copy_from_slice(&proto.to_be_bytes());
    }

    /// Sets the VNI (low 24 bits) and zeroes the reserved octet after it.
    #[inline]
    pub fn set_vni(&mut self, vni: u32) {
        let v = vni.to_be_bytes();
        let b = self.buffer.as_mut();
        b[4..7].copy_from_slice(&v[1..4]);
        b[7] = 0;
    }
}

/// One option TLV as found in a packet, or as given to [`emit_options`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneveOption<'a> {
    pub class: u16,
    /// The full Type octet; its high bit is the critical bit.
    pub kind: u8,
    /// The option data; a multiple of 4 bytes, at most 124.
    pub data: &'a [u8],
}

impl GeneveOption<'_> {
    #[inline]
    pub fn is_critical(&self) -> bool {
        self.kind & OPTION_TYPE_CRITICAL != 0
    }

    /// Bytes this option occupies on the wire.
    #[inline]
    pub fn wire_len(&self) -> usize {
        OPTION_HEADER_LEN + self.data.len()
    }
}

/// Iterator over the option TLVs of an option area. It yields `Err(GeneveOptionsOverrun)` once
/// and stops if an option's length runs past the area.
#[derive(Debug, Clone)]
pub struct Options<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> Options<'a> {
    pub fn new(area: &'a [u8]) -> Options<'a> {
        Options { rest: area, failed: false }
    }
}

impl<'a> Iterator for Options<'a> {
    type Item = Result<GeneveOption<'a>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let r = self.rest;
        if r.len() < OPTION_HEADER_LEN {
            self.failed = true;
            return Some(Err(Error::GeneveOptionsOverrun));
        }
        let data_len = usize::from(r[3] & 0x1f) * 4;
        let Some(data) = r.get(OPTION_HEADER_LEN..OPTION_HEADER_LEN + data_len) else {
            self.failed = true;
            return Some(Err(Error::GeneveOptionsOverrun));
        };
        self.rest = &r[OPTION_HEADER_LEN + data_len..];
        Some(Ok(GeneveOption { class: u16::from_be_bytes([r[0], r[1]]), kind: r[2], data }))
    }
}

/// Writes `options` into the start of `buf` and returns the bytes written. Reserved bits are zero.
pub fn emit_options(options: &[GeneveOption<'_>], buf: &mut [u8]) -> Result<usize, Error> {
    let total = options_wire_len(options)?;
    if buf.len() < total {
        return Err(Error::NoRoom);
    }
    let mut at = 0;
    for o in options {
        buf[at..at + 2].copy_from_slice(&o.class.to_be_bytes());
        buf[at + 2] = o.kind;
        buf[at + 3] = (o.data.len() / 4) as u8;
        buf[at + 4..at + o.wire_len()].copy_from_slice(o.data);
        at += o.wire_len();
    }
    Ok(at)
}

/// Checks every option is encodable and returns the option area's length.
fn options_wire_len(options: &[GeneveOption<'_>]) -> Result<usize, Error> {
    let mut total = 0usize;
    for o in options {
        if o.data.len() % 4 != 0 || o.data.len() > MAX_OPTION_DATA_LEN {
            return Err(Error::GeneveBadOption);
        }
        total += o.wire_len();
    }
    if total > MAX_OPTIONS_LEN {
        return Err(Error::GeneveBadOption);
    }
    Ok(total)
}

/// The options this endpoint understands, by (class, type). Starts empty: then every critical
/// option is unknown and its packet is dropped, as RFC 8926 §3.5 requires.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KnownOptions {
    known: Vec<(u16, u8)>,
}

impl KnownOptions {
    pub fn insert(&mut self, class: u16, kind: u8) {
        if !self.understands(class, kind) {
            self.known.push((class, kind));
        }
    }

    #[inline]
    pub fn understands(&self, class: u16, kind: u8) -> bool {
        self.known.contains(&(class, kind))
    }
}

/// What a receiver accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxPolicy {
    /// Options whose critical bit does not make the packet undeliverable.
    pub known_options: KnownOptions,
    /// The Protocol Type of the network's payload (Ethernet for vxtap).
    pub protocol: u16,
}

impl Default for RxPolicy {
    fn default() -> Self {
        RxPolicy { known_options: KnownOptions::default(), protocol: PROTO_ETHERNET }
    }
}

/// The meaning of a Geneve header. On parse `options` is the raw option area; on emit, the list
/// to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr<'a> {
    pub vni: u32,
    pub oam: bool,
    pub protocol: u16,
    pub options: &'a [GeneveOption<'a>],
}

impl<'a> Repr<'a> {
    /// The receive policy of RFC 8926 §3–4 for an Ethernet network: version 0 (checked by
    /// [`Packet::new_checked`]), options inside the area, no critical option we do not understand,
    /// not a control packet, the expected Protocol Type. Returns the VNI.
    pub fn check<T: AsRef<[u8]>>(packet: &Packet<T>, policy: &RxPolicy) -> Result<u32, Error> {
        for option in packet.options() {
            let option = option?;
            if option.is_critical() && !policy.known_options.understands(option.class, option.kind) {
                return Err(Error::GeneveCriticalOption { class: option.class, kind: option.kind });
            }
        }
        if packet.oam() {
            return Err(Error::GeneveOam);
        }
        if packet.protocol() != policy.protocol {
            return Err(Error::GeneveProtocol(packet.protocol()));
        }
        Ok(packet.vni())
    }

    /// An Ethernet-carrying header with the given VNI and options.
    pub fn ethernet(vni: u32, options: &'a [GeneveOption<'a>]) -> Repr<'a> {
        Repr { vni, oam: false, protocol: PROTO_ETHERNET, options }
    }

    /// Header length on the wire, or an error if the options cannot be encoded.
    pub fn header_len(&self) -> Result<usize, Error> {
        Ok(BASE_LEN + options_wire_len(self.options)?)
    }

    /// Writes the header at the start of the packet buffer: Ver 0, C set exactly when an option is
    /// critical, reserved bits zero. Returns the header length.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut Packet<T>) -> Result<usize, Error> {
        if self.vni > MAX_VNI {
            return Err(Error::VniOutOfRange(self.vni));
        }
        let header_len = self.header_len()?;
        if packet.buffer.as_ref().len() < header_len {
            return Err(Error::NoRoom);
        }
        let options_len = emit_options(self.options, &mut packet.buffer.as_mut()[BASE_LEN..])?;
        packet.set_version_and_options_len(options_len);
        packet.set_flags(self.oam, self.options.iter().any(GeneveOption::is_critical));
        packet.set_protocol(self.protocol);
        packet.set_vni(self.vni);
        Ok(header_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bytes: &[u8]) -> Result<u32, Error> {
        let p = Packet::new_checked(bytes)?;
        Repr::check(&p, &RxPolicy::default())
    }

    #[test]
    fn base_header_fields() {
        let b = [0x02, 0xc0, 0x65, 0x58, 0xab, 0xcd, 0xef, 0x00, 1, 2, 0, 0, 9, 9, 9, 9, 0xee];
        let p = Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 0);
        assert_eq!(p.options_len(), 8);
        assert_eq!(p.header_len(), 16);
        assert!(p.oam());
        assert!(p.critical());
        assert_eq!(p.protocol(), PROTO_ETHERNET);
        assert_eq!(p.vni(), 0xabcdef);
        assert_eq!(p.payload(), &[0xee]);
    }

    #[test]
    fn rejects_truncated_base_header() {
        for n in 0..BASE_LEN {
            assert_eq!(Packet::new_checked(&[0u8; 8][..n]).err(), Some(Error::Truncated));
        }
    }

    #[test]
    fn rejects_nonzero_version() {
        for v in 1..4u8 {
            let b = [v << 6, 0, 0x65, 0x58, 0, 0, 1, 0];
            assert_eq!(check(&b), Err(Error::GeneveVersion(v)));
        }
    }

    #[test]
    fn rejects_opt_len_past_packet() {
        // Opt Len says 4 bytes of options, only 3 present.
        let b = [0x01, 0, 0x65, 0x58, 0, 0, 1, 0, 0, 0, 0];
        assert_eq!(check(&b), Err(Error::GeneveOptionsOverrun));
        // Largest Opt Len, empty area.
        assert_eq!(check(&[0x3f, 0, 0x65, 0x58, 0, 0, 1, 0]), Err(Error::GeneveOptionsOverrun));
    }

    #[test]
    fn rejects_option_length_past_area() {
        // Area of 8 bytes; the option claims 2 words of data (needs 12).
        let b = [0x02, 0, 0x65, 0x58, 0, 0, 1, 0, 0x01, 0x02, 0x01, 0x02, 0, 0, 0, 0, 0xaa];
        assert_eq!(check(&b), Err(Error::GeneveOptionsOverrun));
    }

    #[test]
    fn options_iterator_adversarial_lengths() {
        // Empty area.
        assert_eq!(Options::new(&[]).count(), 0);
        // A partial option header, for every length 1..4.
        for n in 1..OPTION_HEADER_LEN {
            let area = [0xffu8; 3];
            let got: Vec<_> = Options::new(&area[..n]).collect();
            assert_eq!(got, vec![Err(Error::GeneveOptionsOverrun)]);
        }
        // Maximum declared length (31 words) in a short area: one error, then the iterator ends.
        let area = [0x00, 0x01, 0x02, 0x1f, 1, 2, 3, 4];
        let mut it = Options::new(&area);
        assert_eq!(it.next(), Some(Err(Error::GeneveOptionsOverrun)));
        assert_eq!(it.next(), None);
        // Reserved bits of the length octet are ignored; zero-length options are legal.
        let area = [0x00, 0x01, 0x02, 0xe0, 0x00, 0x02, 0x03, 0x01, 9, 9, 9, 9];
        let got: Vec<_> = Options::new(&area).map(Result::unwrap).collect();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].class, got[0].kind, got[0].data.len()), (1, 2, 0));
        assert_eq!((got[1].class, got[1].kind, got[1].data), (2, 3, &[9u8, 9, 9, 9][..]));
        // A valid option followed by a truncated one: the valid one, then one error.
        let area = [0x00, 0x01, 0x02, 0x00, 0x00, 0x02];
        let got: Vec<_> = Options::new(&area).collect();
        assert_eq!(got.len(), 2);
        assert!(got[0].is_ok() && got[1] == Err(Error::GeneveOptionsOverrun));
    }

    #[test]
    fn unknown_critical_option_drops_known_one_passes() {
        let data = [0xde, 0xad, 0xbe, 0xef];
        let opts = [GeneveOption { class: 0x0102, kind: 0x80, data: &data }];
        let mut buf = [0u8; 32];
        let n = Repr::ethernet(5, &opts).emit(&mut Packet::new_unchecked(&mut buf[..])).unwrap();
        let p = Packet::new_checked(&buf[..n + 14]).unwrap();
        assert_eq!(
            Repr::check(&p, &RxPolicy::default()),
            Err(Error::GeneveCriticalOption { class: 0x0102, kind: 0x80 })
        );
        let mut policy = RxPolicy::default();
        policy.known_options.insert(0x0102, 0x80);
        assert_eq!(Repr::check(&p, &policy), Ok(5));
    }

    #[test]
    fn non_critical_unknown_option_is_skipped() {
        let opts = [GeneveOption { class: 0xffff, kind: 0x01, data: &[0; 8] }];
        let mut buf = [0u8; 40];
        let n = Repr::ethernet(9, &opts).emit(&mut Packet::new_unchecked(&mut buf[..])).unwrap();
        assert_eq!(buf[1] & FLAG_CRITICAL, 0, "C clear when no option is critical");
        assert_eq!(check(&buf[..n + 14]), Ok(9));
    }

    #[test]
    fn oam_packet_is_not_delivered() {
        assert_eq!(check(&[0x00, 0x80, 0x65, 0x58, 0, 0, 7, 0]), Err(Error::GeneveOam));
    }

    #[test]
    fn wrong_protocol_type_is_rejected() {
        assert_eq!(check(&[0x00, 0x00, 0x08, 0x00, 0, 0, 7, 0]), Err(Error::GeneveProtocol(0x0800)));
    }

    #[test]
    fn emit_sets_every_field() {
        let opts = [
            GeneveOption { class: 0x0102, kind: 0x80, data: &[0xde, 0xad, 0xbe, 0xef] },
            GeneveOption { class: 0xffff, kind: 0x01, data: &[0, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77] },
        ];
        let mut buf = [0xffu8; 28];
        let repr = Repr { vni: 0x123456, oam: true, protocol: PROTO_ETHERNET, options: &opts };
        assert_eq!(repr.emit(&mut Packet::new_unchecked(&mut buf[..])), Ok(28));
        assert_eq!(buf[0], 5, "Ver 0, Opt Len 5 words");
        assert_eq!(
            buf[1],
            FLAG_OAM | FLAG_CRITICAL,
            "O as asked, C because an option is critical, reserved zero"
        );
        assert_eq!(&buf[2..8], &[0x65, 0x58, 0x12, 0x34, 0x56, 0x00]);
        assert_eq!(&buf[8..12], &[0x01, 0x02, 0x80, 0x01], "option header, reserved bits zero");
    }

    #[test]
    fn emit_rejects_unencodable_options() {
        let mut buf = [0u8; 512];
        let odd = [GeneveOption { class: 1, kind: 1, data: &[0; 3] }];
        assert_eq!(
            Repr::ethernet(1, &odd).emit(&mut Packet::new_unchecked(&mut buf[..])),
            Err(Error::GeneveBadOption)
        );
        let big = [GeneveOption { class: 1, kind: 1, data: &[0; 128] }];
        assert_eq!(
            Repr::ethernet(1, &big).emit(&mut Packet::new_unchecked(&mut buf[..])),
            Err(Error::GeneveBadOption)
        );
        let data = [0u8; 124];
        let three = [GeneveOption { class: 1, kind: 1, data: &data }; 3]; // 3 * 128 > 252
        assert_eq!(
            Repr::ethernet(1, &three).emit(&mut Packet::new_unchecked(&mut buf[..])),
            Err(Error::GeneveBadOption)
        );
        let ok = [GeneveOption { class: 1, kind: 1, data: &data }];
        assert_eq!(
            Repr::ethernet(1, &ok).emit(&mut Packet::new_unchecked(&mut buf[..4])),
            Err(Error::NoRoom)
        );
        assert_eq!(
            Repr::ethernet(1 << 24, &[]).emit(&mut Packet::new_unchecked(&mut buf[..])),
            Err(Error::VniOutOfRange(1 << 24))
        );
    }
}
