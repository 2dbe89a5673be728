//! ICMP "too big" replies to an inner sender: ICMPv4 Destination Unreachable / Fragmentation
//! Needed (RFC 792, RFC 1191) and ICMPv6 Packet Too Big (RFC 4443 §3.2), built the way the
//! kernel builds them for a bridged tunnel (`iptunnel_pmtud_build_icmp{,v6}` in
//! net/ipv4/ip_tunnel_core.c): Ethernet addresses swapped, the reply sent "from" the original
//! destination, the original packet quoted, so that the sender's stack accepts it and lowers
//! its path MTU.
//!
//! A reply is only made when the kernel would make one: never for a frame to a group MAC or a
//! multicast/broadcast address, from an address that cannot be answered, for a fragment (or an
//! IPv4 packet that allows fragmentation), or for an ICMP error itself.

use crate::packet::offload::checksum::{self, Sum};
use crate::wire::frame::{self, Frame, Ip, IpVersion};
use crate::wire::ip::protocol;
use crate::wire::{ethernet, ipv4, ipv6, read_u16};

/// Smallest MTU an ICMPv4 reply may announce (RFC 791's 576-byte datagram).
pub const MIN_MTU_V4: u32 = 576;
/// Smallest MTU an ICMPv6 reply may announce (RFC 8200's minimum link MTU).
pub const MIN_MTU_V6: u32 = 1280;
/// Most bytes of the original IPv4 packet quoted: the reply stays within 576 bytes.
const QUOTE_V4: usize = 576 - 20 - 8;
/// Most bytes of the original IPv6 packet quoted: the reply stays within 1280 bytes.
const QUOTE_V6: usize = 1280 - 40 - 8;
/// Largest reply: Ethernet with as many VLAN tags as a frame may have, IPv6, ICMPv6, quote.
pub const MAX_REPLY_LEN: usize = frame::MAX_L2_LEN + 1280;

/// Why no reply is made for a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoReply {
    /// Not IPv4 or IPv6, or the headers are cut short.
    NotIp,
    /// The sender may be fragmented for (IPv4 without DF), or the packet is a fragment.
    MayFragment,
    /// Group destination MAC, multicast or broadcast destination, or a source that cannot be
    /// answered (unspecified, loopback, multicast, broadcast).
    NotAnswerable,
    /// The packet is an ICMP error: errors are never answered with errors.
    IcmpError,
    /// The MTU to announce is below the protocol's minimum: the packet has to be fragmented on
    /// the underlay instead.
    BelowMinimum,
    /// `out` is too small.
    NoRoom,
}

/// Builds into `out` the reply telling the sender of `frame` (its headers parsed into `view`)
/// to send IP packets of at most `mtu` bytes; returns its length.
pub fn too_big_reply(frame: &[u8], view: &Frame, mtu: u32, out: &mut [u8]) -> Result<usize, NoReply> {
    let ip = check(frame, view, mtu)?;
    match ip.version() {
        IpVersion::V4 => build_v4(frame, &ip, mtu, out),
        IpVersion::V6 => build_v6(frame, &ip, mtu, out),
    }
}

/// Whether the kernel would answer `frame` (its headers parsed into `view`) with a reply
/// announcing `mtu`, and if not, why: what [`too_big_reply`] decides before it builds. Returns
/// the IP header to answer.
pub fn check(frame: &[u8], view: &Frame, mtu: u32) -> Result<Ip, NoReply> {
    if frame.first().is_none_or(|b| b & 1 != 0) {
        return Err(NoReply::NotAnswerable); // group destination MAC (RFC 1122 §3.2.2)
    }
    let ip = *view.ip().ok_or(NoReply::NotIp)?;
    match ip.version() {
        IpVersion::V4 => check_v4(frame, &ip, mtu)?,
        IpVersion::V6 => check_v6(frame, &ip, mtu)?,
    }
    Ok(ip)
}

/// The Ethernet header of a reply: addresses swapped, the VLAN tags kept.
fn reply_l2(frame: &[u8], l3: usize, out: &mut [u8]) {
    out[ethernet::field::DST].copy_from_slice(&frame[ethernet::field::SRC]);
    out[ethernet::field::SRC].copy_from_slice(&frame[ethernet::field::DST]);
    out[ethernet::field::ETHERTYPE.start..l3].copy_from_slice(&frame[ethernet::field::ETHERTYPE.start..l3]);
}

fn check_v4(frame: &[u8], ip: &Ip, mtu: u32) -> Result<(), NoReply> {
    use ipv4::field;
    let (l3, ihl) = (ip.l3(), ip.header_len());
    // Exactly DF: no MF, no offset (the kernel's `frag_off != htons(IP_DF)` test).
    if ip.flags_frag() != ipv4::FLAG_DF {
        return Err(NoReply::MayFragment);
    }
    let hdr = &frame[l3..ip.l4()];
    let (src, dst) = (&hdr[field::SRC], &hdr[field::DST]);
    let bad_dst = dst == [255; 4] || dst[0] & 0xf0 == 0xe0;
    let bad_src = src[0] == 0 || src[0] == 127 || src == [255; 4] || src[0] & 0xf0 == 0xe0;
    if bad_dst || bad_src {
        return Err(NoReply::NotAnswerable);
    }
    if ip.proto() == protocol::ICMP {
        // An error message (or one too short to tell) is not answered.
        match frame.get(l3 + ihl) {
            Some(0 | 8 | 13 | 14 | 15 | 16 | 17 | 18) => {}
            _ => return Err(NoReply::IcmpError),
        }
    }
    if mtu < MIN_MTU_V4 {
        return Err(NoReply::BelowMinimum);
    }
    Ok(())
}

fn build_v4(frame: &[u8], ip: &Ip, mtu: u32, out: &mut [u8]) -> Result<usize, NoReply> {
    use ipv4::field;
    let l3 = ip.l3();
    let ip = &frame[l3..];
    let (src, dst) = (&ip[field::SRC], &ip[field::DST]);
    let quote = &ip[..ip.len().min(QUOTE_V4)];
    let len = l3 + ipv4::HEADER_LEN + 8 + quote.len();
    let out = out.get_mut(..len).ok_or(NoReply::NoRoom)?;
    out.fill(0);
    reply_l2(frame, l3, out);
    let (hdr, rest) = out[l3..].split_at_mut(ipv4::HEADER_LEN);
    hdr[field::VER_IHL] = 0x45;
    hdr[field::TOTAL_LEN].copy_from_slice(&((ipv4::HEADER_LEN + 8 + quote.len()) as u16).to_be_bytes());
    hdr[field::FLAGS_FRAG].copy_from_slice(&ipv4::FLAG_DF.to_be_bytes());
    hdr[field::TTL] = ip[field::TTL];
    hdr[field::PROTOCOL] = protocol::ICMP;
    hdr[field::SRC].copy_from_slice(dst);
    hdr[field::DST].copy_from_slice(src);
    let sum = Sum::ZERO.add_bytes(hdr).finish();
    hdr[field::CHECKSUM].copy_from_slice(&sum);
    // ICMP: type 3 (destination unreachable), code 4 (fragmentation needed), unused, next-hop MTU.
    rest[0] = 3;
    rest[1] = 4;
    rest[6..8].copy_from_slice(&(mtu.min(u32::from(u16::MAX)) as u16).to_be_bytes());
    rest[8..].copy_from_slice(quote);
    let sum = Sum::ZERO.add_bytes(rest).finish();
    rest[2..4].copy_from_slice(&sum);
    Ok(len)
}

/// ICMPv6 error types are below 128; a redirect (137) is not answered either.
fn is_icmpv6_error(kind: u8) -> bool {
    kind < 128 || kind == 137
}

/// Next-header values of the extension headers walked to find the upper layer.
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DEST_OPTS: u8 = 60;

fn check_v6(frame: &[u8], ip: &Ip, mtu: u32) -> Result<(), NoReply> {
    use ipv6::field;
    let ip = &frame[ip.l3()..];
    let (src, dst) = (&ip[field::SRC], &ip[field::DST]);
    let unspecified = src.iter().all(|b| *b == 0);
    let loopback = src[..15].iter().all(|b| *b == 0) && src[15] == 1;
    if unspecified || loopback || src[0] == 0xff || dst[0] == 0xff {
        return Err(NoReply::NotAnswerable);
    }
    // Walk the extension headers: a non-first fragment or an ICMPv6 error gets no reply.
    let (mut next, mut at) = (ip[field::NEXT_HEADER], ipv6::HEADER_LEN);
    for _ in 0..8 {
        match next {
            HOP_BY_HOP | ROUTING | DEST_OPTS => {
                let h = ip.get(at..at + 2).ok_or(NoReply::NotIp)?;
                next = h[0];
                at += (usize::from(h[1]) + 1) * 8;
            }
            FRAGMENT => {
                let h = ip.get(at..at + 8).ok_or(NoReply::NotIp)?;
                if read_u16(h, 2..4) & !0x7 != 0 {
                    return Err(NoReply::MayFragment);
                }
                next = h[0];
                at += 8;
            }
            protocol::ICMPV6 => {
                if ip.get(at).is_none_or(|t| is_icmpv6_error(*t)) {
                    return Err(NoReply::IcmpError);
                }
                break;
            }
            _ => break,
        }
    }
    if mtu < MIN_MTU_V6 {
        return Err(NoReply::BelowMinimum);
    }
    Ok(())
}

fn build_v6(frame: &[u8], ip: &Ip, mtu: u32, out: &mut [u8]) -> Result<usize, NoReply> {
    use ipv6::field;
    let l3 = ip.l3();
    let ip = &frame[l3..];
    let (src, dst) = (&ip[field::SRC], &ip[field::DST]);
    let quote = &ip[..ip.len().min(QUOTE_V6)];
    let len = l3 + ipv6::HEADER_LEN + 8 + quote.len();
    let out = out.get_mut(..len).ok_or(NoReply::NoRoom)?;
    out.fill(0);
    reply_l2(frame, l3, out);
    let (hdr, rest) = out[l3..].split_at_mut(ipv6::HEADER_LEN);
    let payload_len = (8 + quote.len()) as u16;
    hdr[0] = 0x60;
    hdr[field::PAYLOAD_LEN].copy_from_slice(&payload_len.to_be_bytes());
    hdr[field::NEXT_HEADER] = protocol::ICMPV6;
    hdr[field::HOP_LIMIT] = ip[field::HOP_LIMIT];
    hdr[field::SRC].copy_from_slice(dst);
    hdr[field::DST].copy_from_slice(src);
    // ICMPv6: type 2 (packet too big), code 0, checksum, MTU.
    rest[0] = 2;
    rest[4..8].copy_from_slice(&mtu.to_be_bytes());
    rest[8..].copy_from_slice(quote);
    let sum = checksum::pseudo_v6(dst, src, protocol::ICMPV6, u32::from(payload_len))
        .combine(Sum::ZERO.add_bytes(rest));
    rest[2..4].copy_from_slice(&sum.finish());
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`super::too_big_reply`] with the frame parsed for it, as the packet path does once.
    fn too_big_reply(frame: &[u8], mtu: u32, out: &mut [u8]) -> Result<usize, NoReply> {
        super::too_big_reply(frame, &Frame::parse(frame).ok_or(NoReply::NotIp)?, mtu, out)
    }

    const A_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B_MAC: [u8; 6] = [2, 0, 0, 0, 0, 2];

    /// An Ethernet frame A -> B holding an IPv4 packet 198.19.0.1 -> 198.19.0.2 with `flags` in
    /// the flags/fragment field, protocol `proto` and `payload`.
    fn v4(flags: u16, proto: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = B_MAC.to_vec();
        f.extend(A_MAC);
        f.extend([0x08, 0x00]);
        let total = (20 + payload.len()) as u16;
        let mut ip = vec![0x45, 0];
        ip.extend(total.to_be_bytes());
        ip.extend([0x12, 0x34]);
        ip.extend(flags.to_be_bytes());
        ip.extend([64, proto, 0, 0, 198, 19, 0, 1, 198, 19, 0, 2]);
        let sum = Sum::ZERO.add_bytes(&ip).finish();
        ip[10..12].copy_from_slice(&sum);
        f.extend(ip);
        f.extend_from_slice(payload);
        f
    }

    fn v6(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = B_MAC.to_vec();
        f.extend(A_MAC);
        f.extend([0x86, 0xdd]);
        f.extend([0x60, 0, 0, 0]);
        f.extend((payload.len() as u16).to_be_bytes());
        f.extend([next, 61]);
        f.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn fragmentation_needed_for_a_df_packet() {
        let frame = v4(0x4000, 6, &[0xab; 1400]);
        let mut out = [0u8; MAX_REPLY_LEN];
        let n = too_big_reply(&frame, 1350, &mut out).unwrap();
        let r = &out[..n];
        assert_eq!((&r[..6], &r[6..12], &r[12..14]), (&A_MAC[..], &B_MAC[..], &[0x08, 0x00][..]));
        let ip = &r[14..34];
        assert_eq!(ip[0], 0x45);
        assert_eq!(read_u16(ip, 2..4) as usize, n - 14, "total length");
        assert_eq!((read_u16(ip, 6..8), ip[8], ip[9]), (0x4000, 64, 1), "DF, the original TTL, ICMP");
        assert_eq!((&ip[12..16], &ip[16..20]), (&[198, 19, 0, 2][..], &[198, 19, 0, 1][..]), "swapped");
        assert!(Sum::ZERO.add_bytes(ip).verifies(), "header checksum");
        let icmp = &r[34..];
        assert_eq!((icmp[0], icmp[1], read_u16(icmp, 6..8)), (3, 4, 1350));
        assert!(Sum::ZERO.add_bytes(icmp).verifies(), "ICMP checksum");
        assert_eq!(&icmp[8..], &frame[14..14 + 548], "the original packet, cut at 548 bytes");
        assert_eq!(n, 14 + 576);
    }

    #[test]
    fn no_reply_when_the_kernel_would_make_none() {
        let mut out = [0u8; MAX_REPLY_LEN];
        let mut r = |f: &[u8], mtu| too_big_reply(f, mtu, &mut out);
        assert_eq!(r(&v4(0, 6, &[0; 100]), 1350), Err(NoReply::MayFragment), "DF clear");
        assert_eq!(r(&v4(0x6000, 6, &[0; 100]), 1350), Err(NoReply::MayFragment), "a first fragment");
        assert_eq!(r(&v4(0x4000, 6, &[0; 100]), 500), Err(NoReply::BelowMinimum));
        assert_eq!(r(&v4(0x4000, 1, &[3, 4, 0, 0]), 1350), Err(NoReply::IcmpError));
        assert!(r(&v4(0x4000, 1, &[8, 0, 0, 0]), 1350).is_ok(), "an echo request is answered");
        let mut multicast = v4(0x4000, 17, &[0; 100]);
        multicast[14 + 16] = 239;
        assert_eq!(r(&multicast, 1350), Err(NoReply::NotAnswerable));
        let mut group_mac = v4(0x4000, 17, &[0; 100]);
        group_mac[0] = 0x01;
        assert_eq!(r(&group_mac, 1350), Err(NoReply::NotAnswerable));
        let mut arp = v4(0x4000, 17, &[0; 100]);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(r(&arp, 1350), Err(NoReply::NotIp));
        assert_eq!(r(&v4(0x4000, 6, &[0; 100])[..20], 1350), Err(NoReply::NotIp), "cut short");
        assert_eq!(too_big_reply(&v4(0x4000, 6, &[0; 600]), 1350, &mut [0u8; 100]), Err(NoReply::NoRoom));
    }

    #[test]
    fn packet_too_big_for_ipv6() {
        let frame = v6(17, &[0xcd; 1400]);
        let mut out = [0u8; MAX_REPLY_LEN];
        let n = too_big_reply(&frame, 1330, &mut out).unwrap();
        let r = &out[..n];
        assert_eq!((&r[..6], &r[12..14]), (&A_MAC[..], &[0x86, 0xdd][..]));
        let ip = &r[14..54];
        assert_eq!((ip[0], ip[6], ip[7]), (0x60, 58, 61), "version, ICMPv6, the original hop limit");
        assert_eq!(&ip[8..24], &frame[14 + 24..14 + 40], "from the original destination");
        assert_eq!(&ip[24..40], &frame[14 + 8..14 + 24], "to the original source");
        assert_eq!(n, 14 + 1280, "quote cut so the reply is 1280 bytes");
        let icmp = &r[54..];
        assert_eq!((icmp[0], icmp[1]), (2, 0));
        assert_eq!(u32::from_be_bytes(icmp[4..8].try_into().unwrap()), 1330);
        let pseudo = checksum::pseudo_v6(&ip[8..24], &ip[24..40], 58, icmp.len() as u32);
        assert!(pseudo.combine(Sum::ZERO.add_bytes(icmp)).verifies(), "ICMPv6 checksum");
    }

    #[test]
    fn ipv6_exceptions() {
        let mut out = [0u8; MAX_REPLY_LEN];
        let mut r = |f: &[u8], mtu| too_big_reply(f, mtu, &mut out);
        assert_eq!(r(&v6(17, &[0; 100]), 1200), Err(NoReply::BelowMinimum));
        assert_eq!(r(&v6(58, &[1, 0, 0, 0]), 1300), Err(NoReply::IcmpError));
        assert!(r(&v6(58, &[128, 0, 0, 0]), 1300).is_ok(), "an echo request is answered");
        let later_fragment = [17, 0, 0x05, 0x00, 0, 0, 0, 1];
        assert_eq!(r(&v6(44, &later_fragment), 1300), Err(NoReply::MayFragment));
        let first_fragment = [17, 0, 0x00, 0x01, 0, 0, 0, 1];
        assert!(r(&v6(44, &first_fragment), 1300).is_ok());
        let hop_by_hop_then_error = [58, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0];
        assert_eq!(r(&v6(0, &hop_by_hop_then_error), 1300), Err(NoReply::IcmpError));
        let mut mcast = v6(17, &[0; 100]);
        mcast[14 + 24] = 0xff;
        assert_eq!(r(&mcast, 1300), Err(NoReply::NotAnswerable));
    }
}
