//! TCP MSS clamping (`--mss-clamp`): the MSS option of a TCP SYN crossing the tunnel is lowered
//! so that the connection's segments fit the underlay path, whatever ICMP the path drops — what
//! iptables' TCPMSS target does on routers in front of tunnels.

use crate::packet::offload::checksum::{self, Sum};
use crate::wire::frame::{Frame, Ip, IpVersion};
use crate::wire::ip::protocol;
use crate::wire::{ipv4, ipv6, read_u16, tcp};

/// TCP option kinds (RFC 9293 §3.2).
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;

/// Where the TCP segment of a frame the clamp may rewrite lies: TCP right after the IP header
/// (IPv4 options allowed, IPv6 extension headers not), not a fragment, its length field
/// consistent with the frame: the IP header, and where the segment starts and ends.
#[inline]
fn tcp_segment(view: &Frame) -> Option<(Ip, usize, usize)> {
    let ip = *view.ip()?;
    if ip.proto() != protocol::TCP || ip.is_fragment() {
        return None;
    }
    Some((ip, ip.l4(), ip.exact_end()?))
}

/// Whether `frame` (its headers parsed into `view`) is a TCP SYN or SYN-ACK that [`clamp`] may
/// rewrite: what the packet path checks before it works out the limit.
#[inline]
pub fn is_syn(frame: &[u8], view: &Frame) -> bool {
    tcp_segment(view).is_some_and(|(_, l4, end)| {
        end >= l4 + tcp::HEADER_LEN && tcp::flags(&frame[l4..end]) & tcp::SYN != 0
    })
}

/// Lowers the MSS option of `frame` (its headers parsed into `view`), if it is a TCP SYN (or
/// SYN-ACK) whose MSS lets IP packets grow beyond `max_ip_len` bytes, and fixes the TCP
/// checksum. Returns the new MSS when it changed the frame.
pub fn clamp(frame: &mut [u8], view: &Frame, max_ip_len: u32) -> Option<u16> {
    let (ip, l4, l4_end) = tcp_segment(view)?;
    let l3 = ip.l3();
    let ip_header = match ip.version() {
        IpVersion::V4 => ipv4::HEADER_LEN,
        IpVersion::V6 => ipv6::HEADER_LEN,
    };
    let seg = frame.get(l4..l4_end)?;
    if seg.len() < tcp::HEADER_LEN || tcp::flags(seg) & tcp::SYN == 0 {
        return None;
    }
    let hlen = tcp::header_len(seg);
    if hlen < tcp::HEADER_LEN || hlen > seg.len() {
        return None;
    }
    let limit =
        u16::try_from(max_ip_len.checked_sub((ip_header + tcp::HEADER_LEN) as u32)?).unwrap_or(u16::MAX);
    // Find the MSS option's value.
    let mut at = tcp::HEADER_LEN;
    let value_at = loop {
        let kind = *seg.get(at).filter(|_| at < hlen)?;
        match kind {
            OPT_END => return None,
            OPT_NOP => at += 1,
            _ => {
                let len = usize::from(*seg.get(at + 1).filter(|_| at + 1 < hlen)?);
                if len < 2 || at + len > hlen {
                    return None;
                }
                if kind == OPT_MSS && len == 4 {
                    break l4 + at + 2;
                }
                at += len;
            }
        }
    };
    if read_u16(frame, value_at..value_at + 2) <= limit {
        return None;
    }
    frame[value_at..value_at + 2].copy_from_slice(&limit.to_be_bytes());
    // Recompute the checksum over the pseudo-header and the segment (a SYN is short).
    let (ck, len) = (l4 + tcp::field::CHECKSUM.start, (l4_end - l4) as u32);
    frame[ck..ck + 2].fill(0);
    let pseudo = match ip.version() {
        IpVersion::V4 => {
            let ip = &frame[l3..l3 + ipv4::HEADER_LEN];
            checksum::pseudo_v4(&ip[ipv4::field::SRC], &ip[ipv4::field::DST], protocol::TCP, len as u16)
        }
        IpVersion::V6 => {
            let ip = &frame[l3..l3 + ipv6::HEADER_LEN];
            checksum::pseudo_v6(&ip[ipv6::field::SRC], &ip[ipv6::field::DST], protocol::TCP, len)
        }
    };
    let sum = pseudo.combine(Sum::ZERO.add_bytes(&frame[l4..l4_end])).finish();
    frame[ck..ck + 2].copy_from_slice(&sum);
    Some(limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`super::clamp`] with the frame parsed for it, as the packet path does once.
    fn clamp(frame: &mut [u8], max_ip_len: u32) -> Option<u16> {
        let view = Frame::parse(frame)?;
        super::clamp(frame, &view, max_ip_len)
    }

    /// A TCP SYN 198.19.0.1:40000 -> 198.19.0.2:5201 with `options`, checksummed.
    fn syn_v4(flags: u8, options: &[u8]) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let tcp_len = 20 + options.len();
        let mut ip = vec![0x45, 0];
        ip.extend(((20 + tcp_len) as u16).to_be_bytes());
        ip.extend([0, 0, 0x40, 0, 64, 6, 0, 0, 198, 19, 0, 1, 198, 19, 0, 2]);
        let mut t = vec![0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 0];
        t.push(((tcp_len / 4) as u8) << 4);
        t.extend([flags, 0xff, 0xff, 0, 0, 0, 0]);
        t.extend_from_slice(options);
        let sum = checksum::pseudo_v4(&ip[12..16], &ip[16..20], 6, tcp_len as u16)
            .combine(Sum::ZERO.add_bytes(&t))
            .finish();
        t[16..18].copy_from_slice(&sum);
        f.extend(ip);
        f.extend(t);
        f
    }

    fn verifies(f: &[u8]) -> bool {
        let tcp_seg = &f[34..];
        checksum::pseudo_v4(&f[26..30], &f[30..34], 6, tcp_seg.len() as u16)
            .combine(Sum::ZERO.add_bytes(tcp_seg))
            .verifies()
    }

    /// MSS 1460 after a NOP (so the value is not word-aligned), window scale, SACK permitted.
    const OPTS: [u8; 12] = [1, 2, 4, 0x05, 0xb4, 3, 3, 7, 4, 2, 0, 0];

    #[test]
    fn a_syn_is_clamped_and_its_checksum_fixed() {
        let mut f = syn_v4(tcp::SYN, &OPTS);
        assert!(verifies(&f));
        assert_eq!(clamp(&mut f, 1350), Some(1310), "1350 - 20 - 20");
        assert_eq!(read_u16(&f, 34 + 23..34 + 25), 1310);
        assert!(verifies(&f), "checksum fixed");
        assert_eq!(clamp(&mut f, 1350), None, "already small enough");
        let mut syn_ack = syn_v4(tcp::SYN | tcp::ACK, &OPTS);
        assert_eq!(clamp(&mut syn_ack, 1400), Some(1360));
        assert!(verifies(&syn_ack));
    }

    #[test]
    fn other_segments_and_odd_options_are_left_alone() {
        let mut ack = syn_v4(tcp::ACK, &OPTS);
        let before = ack.clone();
        assert_eq!(clamp(&mut ack, 1000), None);
        assert_eq!(ack, before);
        let mut no_mss = syn_v4(tcp::SYN, &[1, 1, 1, 0]);
        assert_eq!(clamp(&mut no_mss, 1000), None);
        let mut bad_len = syn_v4(tcp::SYN, &[2, 9, 5, 0xb4]);
        assert_eq!(clamp(&mut bad_len, 1000), None, "option length past the header");
        let mut zero_len = syn_v4(tcp::SYN, &[3, 0, 0, 0]);
        assert_eq!(clamp(&mut zero_len, 1000), None, "a zero-length option ends the walk");
        let mut short = syn_v4(tcp::SYN, &OPTS);
        short.truncate(40);
        assert_eq!(clamp(&mut short, 1000), None);
        assert_eq!(clamp(&mut syn_v4(tcp::SYN, &OPTS), 30), None, "no room for any MSS");
    }

    #[test]
    fn syns_are_told_apart_before_the_limit_is_worked_out() {
        let is = |f: &[u8]| is_syn(f, &Frame::parse(f).unwrap());
        assert!(is(&syn_v4(tcp::SYN, &OPTS)) && is(&syn_v4(tcp::SYN | tcp::ACK, &OPTS)));
        assert!(!is(&syn_v4(tcp::ACK, &OPTS)));
        let mut fragment = syn_v4(tcp::SYN, &OPTS);
        fragment[20] = 0x20; // More Fragments
        assert!(!is(&fragment));
        assert!(!is(&syn_v4(tcp::SYN, &OPTS)[..40]), "cut short");
    }
}
