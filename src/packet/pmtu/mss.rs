//! TCP MSS clamping (`--mss-clamp`): the MSS option of a TCP SYN crossing the tunnel is lowered
//! so that the connection's segments fit the underlay path, whatever ICMP the path drops — what
//! iptables' TCPMSS target does on routers in front of tunnels.

use crate::packet::offload::checksum::{self, Sum};
use crate::wire::ip::protocol;
use crate::wire::{ethernet, ipv4, ipv6, read_u16, tcp};

/// TCP option kinds (RFC 9293 §3.2).
const OPT_END: u8 = 0;
const OPT_NOP: u8 = 1;
const OPT_MSS: u8 = 2;

/// Lowers the MSS option of `frame`, if it is a TCP SYN (or SYN-ACK) whose MSS lets IP packets
/// grow beyond `max_ip_len` bytes, and fixes the TCP checksum. Returns the new MSS when it
/// changed the frame.
pub fn clamp(frame: &mut [u8], max_ip_len: u32) -> Option<u16> {
    let (ethertype, l3) = ethernet::payload_type(frame)?;
    let (l4, l4_end, ip_header) = match ethertype {
        ethernet::ETHERTYPE_IPV4 => {
            let ip = frame.get(l3..l3 + ipv4::HEADER_LEN)?;
            let ihl = ipv4::header_len(ip);
            if ip[ipv4::field::PROTOCOL] != protocol::TCP || ipv4::is_fragment(ip) || ihl < ipv4::HEADER_LEN {
                return None;
            }
            (l3 + ihl, l3 + usize::from(ipv4::total_len(ip)), ipv4::HEADER_LEN)
        }
        ethernet::ETHERTYPE_IPV6 => {
            let ip = frame.get(l3..l3 + ipv6::HEADER_LEN)?;
            if ip[ipv6::field::NEXT_HEADER] != protocol::TCP {
                return None;
            }
            (
                l3 + ipv6::HEADER_LEN,
                l3 + ipv6::HEADER_LEN + usize::from(ipv6::payload_len(ip)),
                ipv6::HEADER_LEN,
            )
        }
        _ => return None,
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
    let pseudo = match ethertype {
        ethernet::ETHERTYPE_IPV4 => {
            let ip = &frame[l3..l3 + ipv4::HEADER_LEN];
            checksum::pseudo_v4(&ip[ipv4::field::SRC], &ip[ipv4::field::DST], protocol::TCP, len as u16)
        }
        _ => {
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
    use crate::wire::build::{Ethernet, Ipv4, Tcp};
    use crate::wire::mac::MacAddr;

    /// A TCP segment 198.19.0.1:40000 -> 198.19.0.2:5201 with `flags` and `options`, checksummed.
    fn syn_v4(flags: u8, options: &[u8]) -> Vec<u8> {
        Ethernet::new(MacAddr([2, 0, 0, 0, 0, 2]), MacAddr([2, 0, 0, 0, 0, 1]))
            .ipv4(Ipv4::new([198, 19, 0, 1], [198, 19, 0, 2]))
            .tcp(Tcp::new(40000, 5201).seq(1).flags(flags).options(options))
            .build()
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
}
