//! ARP and Neighbor Discovery suppression (`--proxy`, the kernel vxlan device's `proxy` flag):
//! an ARP request or a neighbour solicitation read from the TAP, for an address whose MAC is
//! known behind a remote VTEP, is answered into the TAP instead of being flooded through the
//! tunnel. Pure: a frame in, a reply built into the caller's buffer.
//!
//! The replies are the kernel's (`arp_reduce()` and `neigh_reduce()`/`vxlan_na_create()` in
//! drivers/net/vxlan/vxlan_core.c): an ARP reply from the neighbour's MAC to the requester's
//! hardware address; a Neighbor Advertisement from the target address, hop limit 255, Solicited
//! and Override set, with a target link-layer address option, to the solicitation's source
//! link-layer address (or its Ethernet source).
//!
//! Unlike the kernel, which consumes every ARP frame once `proxy` is on, only what can be
//! answered is answered and everything else goes through the tunnel as before, as EVPN bridges
//! (`neigh_suppress`) and OVN do: unknown targets, ARP replies, gratuitous ARP (sender address
//! equal to the target), probes (sender address 0), duplicate address detection (a solicitation
//! from `::`), a request for the requester's own address or MAC, requests sent unicast (a
//! neighbour cache confirming reachability must hear the real host), VLAN-tagged frames (the
//! table has no VLANs), and anything malformed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::packet::offload::checksum::{self, Sum};
use crate::wire::ip::protocol;
use crate::wire::mac::MacAddr;
use crate::wire::{ethernet, ipv6, read_u16};

/// Length of an ARP packet for IPv4 over Ethernet (RFC 826).
const ARP_LEN: usize = 28;
/// An ARP reply frame: Ethernet header and the ARP packet (not padded: a TAP takes short frames).
pub const ARP_REPLY_LEN: usize = ethernet::HEADER_LEN + ARP_LEN;
/// ICMPv6 Neighbor Solicitation and Advertisement (RFC 4861 §4.3, §4.4).
const ND_NS: u8 = 135;
const ND_NA: u8 = 136;
/// Their fixed part: type, code, checksum, flags/reserved, target address.
const ND_LEN: usize = 24;
/// Option types (RFC 4861 §4.6.1): source and target link-layer address.
const OPT_SOURCE_LL: u8 = 1;
const OPT_TARGET_LL: u8 = 2;
/// Neighbor Advertisement flags: Solicited and Override.
const NA_SOLICITED: u8 = 0x40;
const NA_OVERRIDE: u8 = 0x20;
/// A Neighbor Advertisement frame: Ethernet, IPv6, the message and one 8-byte option.
pub const NA_LEN: usize = ethernet::HEADER_LEN + ipv6::HEADER_LEN + ND_LEN + 8;
/// Room a reply needs.
pub const MAX_REPLY_LEN: usize = NA_LEN;

/// What was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Arp,
    Nd,
}

/// A reply built into the caller's buffer: its length and what it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub len: usize,
    pub kind: Kind,
}

/// Whether `frame` could be a request [`answer`] handles (an ARP or IPv6 frame, untagged): the
/// one check every frame pays when suppression is on.
#[inline]
pub fn is_candidate(frame: &[u8]) -> bool {
    frame.len() >= ethernet::HEADER_LEN
        && matches!(ethernet::ethertype(frame), ethernet::ETHERTYPE_ARP | ethernet::ETHERTYPE_IPV6)
}

/// If `frame` is a request to answer, builds the reply into `out` and returns it. `lookup` gives
/// the MAC to answer with for a target address, or None when the address must not be answered
/// here (unknown, or not behind a remote VTEP).
pub fn answer(
    frame: &[u8],
    lookup: impl FnOnce(IpAddr) -> Option<MacAddr>,
    out: &mut [u8],
) -> Option<Answer> {
    if !is_candidate(frame) {
        return None;
    }
    match ethernet::ethertype(frame) {
        ethernet::ETHERTYPE_ARP => arp(frame, lookup, out).map(|len| Answer { len, kind: Kind::Arp }),
        _ => neighbour_solicitation(frame, lookup, out).map(|len| Answer { len, kind: Kind::Nd }),
    }
}

/// A broadcast ARP request for IPv4 over Ethernet, from a real sender for another address.
fn arp(frame: &[u8], lookup: impl FnOnce(IpAddr) -> Option<MacAddr>, out: &mut [u8]) -> Option<usize> {
    let arp = frame.get(ethernet::HEADER_LEN..ethernet::HEADER_LEN + ARP_LEN)?;
    if frame[ethernet::field::DST] != MacAddr::BROADCAST.0 {
        return None;
    }
    // Hardware type Ethernet (1) or IEEE 802 (6), protocol IPv4, lengths 6 and 4, request (1).
    let hardware = read_u16(arp, 0..2);
    if !(hardware == 1 || hardware == 6) || read_u16(arp, 2..4) != ethernet::ETHERTYPE_IPV4 {
        return None;
    }
    if arp[4] != 6 || arp[5] != 4 || read_u16(arp, 6..8) != 1 {
        return None;
    }
    let sha = MacAddr::from_slice(&arp[8..14])?;
    let spa: [u8; 4] = arp[14..18].try_into().ok()?;
    let tpa: [u8; 4] = arp[24..28].try_into().ok()?;
    let (sender, target) = (Ipv4Addr::from(spa), Ipv4Addr::from(tpa));
    if sender.is_unspecified() || sender == target || !sha.is_learnable() {
        return None; // a probe, gratuitous ARP, or no one to answer
    }
    if !crate::state::neigh::is_host_address(IpAddr::V4(target)) {
        return None;
    }
    let mac = lookup(IpAddr::V4(target)).filter(|m| *m != sha)?;
    let out = out.get_mut(..ARP_REPLY_LEN)?;
    out[ethernet::field::DST].copy_from_slice(&sha.0);
    out[ethernet::field::SRC].copy_from_slice(&mac.0);
    out[ethernet::field::ETHERTYPE].copy_from_slice(&ethernet::ETHERTYPE_ARP.to_be_bytes());
    let reply = &mut out[ethernet::HEADER_LEN..];
    reply[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    reply[2..4].copy_from_slice(&ethernet::ETHERTYPE_IPV4.to_be_bytes());
    reply[4] = 6;
    reply[5] = 4;
    reply[6..8].copy_from_slice(&2u16.to_be_bytes()); // reply
    reply[8..14].copy_from_slice(&mac.0);
    reply[14..18].copy_from_slice(&tpa);
    reply[18..24].copy_from_slice(&sha.0);
    reply[24..28].copy_from_slice(&spa);
    Some(ARP_REPLY_LEN)
}

/// A multicast neighbour solicitation (RFC 4861 §7.1.1's checks) from a real sender (not
/// duplicate address detection) for another address.
fn neighbour_solicitation(
    frame: &[u8],
    lookup: impl FnOnce(IpAddr) -> Option<MacAddr>,
    out: &mut [u8],
) -> Option<usize> {
    use ipv6::field;
    if frame[0] & 1 == 0 {
        return None; // sent unicast: a reachability check, for the real host to answer
    }
    let ip = frame.get(ethernet::HEADER_LEN..ethernet::HEADER_LEN + ipv6::HEADER_LEN)?;
    if ipv6::version(ip) != ipv6::VERSION
        || ip[field::NEXT_HEADER] != protocol::ICMPV6
        || ip[field::HOP_LIMIT] != 255
    {
        return None;
    }
    let start = ethernet::HEADER_LEN + ipv6::HEADER_LEN;
    let icmp = frame.get(start..start + usize::from(ipv6::payload_len(ip)))?;
    if icmp.len() < ND_LEN || icmp[0] != ND_NS || icmp[1] != 0 {
        return None;
    }
    let src: [u8; 16] = ip[field::SRC].try_into().ok()?;
    let target: [u8; 16] = icmp[8..24].try_into().ok()?;
    let (src_ip, target_ip) = (Ipv6Addr::from(src), Ipv6Addr::from(target));
    let dst_ip = Ipv6Addr::from(<[u8; 16]>::try_from(&ip[field::DST]).ok()?);
    if src_ip.is_unspecified() || src_ip == target_ip || dst_ip.is_loopback() {
        return None; // duplicate address detection, or a question about itself
    }
    if !crate::state::neigh::is_host_address(IpAddr::V6(target_ip)) {
        return None;
    }
    // Options: each at least 8 bytes; the source link-layer address says where to answer.
    let mut requester = MacAddr::from_slice(&frame[ethernet::field::SRC])?;
    let mut options = &icmp[ND_LEN..];
    while !options.is_empty() {
        let len = usize::from(*options.get(1)?) * 8;
        if len == 0 || len > options.len() {
            return None;
        }
        if options[0] == OPT_SOURCE_LL && len >= 8 {
            requester = MacAddr::from_slice(&options[2..8])?;
        }
        options = &options[len..];
    }
    if !requester.is_learnable() {
        return None;
    }
    let mac = lookup(IpAddr::V6(target_ip)).filter(|m| *m != requester)?;
    let out = out.get_mut(..NA_LEN)?;
    out[ethernet::field::DST].copy_from_slice(&requester.0);
    out[ethernet::field::SRC].copy_from_slice(&mac.0);
    out[ethernet::field::ETHERTYPE].copy_from_slice(&ethernet::ETHERTYPE_IPV6.to_be_bytes());
    let (hdr, na) = out[ethernet::HEADER_LEN..].split_at_mut(ipv6::HEADER_LEN);
    // Version 6, the request's high traffic-class bits (the kernel's `priority`), no flow label.
    hdr[..4].copy_from_slice(&[0x60 | (ip[0] & 0x0f), 0, 0, 0]);
    hdr[field::PAYLOAD_LEN].copy_from_slice(&((ND_LEN + 8) as u16).to_be_bytes());
    hdr[field::NEXT_HEADER] = protocol::ICMPV6;
    hdr[field::HOP_LIMIT] = 255;
    hdr[field::SRC].copy_from_slice(&target);
    hdr[field::DST].copy_from_slice(&src);
    na.fill(0);
    na[0] = ND_NA;
    na[4] = NA_SOLICITED | NA_OVERRIDE;
    na[8..24].copy_from_slice(&target);
    na[24] = OPT_TARGET_LL;
    na[25] = 1; // in units of 8 bytes
    na[26..32].copy_from_slice(&mac.0);
    let sum = checksum::pseudo_v6(&target, &src, protocol::ICMPV6, (ND_LEN + 8) as u32)
        .combine(Sum::ZERO.add_bytes(na));
    na[2..4].copy_from_slice(&sum.finish());
    Some(NA_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::build::{solicited_node, Arp, Ethernet, Icmp, Ipv6};

    const REQUESTER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
    const MEMBER: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x02]);

    /// The requester (02:..:01) at `spa` asks who has `tpa`, as Linux sends it.
    fn arp_request(spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
        let requester = MacAddr(REQUESTER);
        Ethernet::new(MacAddr::BROADCAST, requester).arp(Arp::request(requester, spa, tpa)).build()
    }

    fn known(ip: IpAddr) -> Option<MacAddr> {
        let members: [IpAddr; 2] = ["198.19.0.2".parse().unwrap(), "2001:db8:1::2".parse().unwrap()];
        members.contains(&ip).then_some(MEMBER)
    }

    #[test]
    fn arp_reply_is_the_kernels_byte_for_byte() {
        let req = arp_request([198, 19, 0, 1], [198, 19, 0, 2]);
        let mut out = [0u8; MAX_REPLY_LEN];
        let a = answer(&req, known, &mut out).expect("answered");
        assert_eq!(a, Answer { len: 42, kind: Kind::Arp });
        #[rustfmt::skip]
        let want: [u8; 42] = [
            0x02, 0, 0, 0, 0, 0x01, // to the requester
            0x02, 0, 0, 0, 0, 0x02, // from the member's MAC
            0x08, 0x06,
            0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, // Ethernet, IPv4, 6, 4, reply
            0x02, 0, 0, 0, 0, 0x02, 198, 19, 0, 2, // sender: the member
            0x02, 0, 0, 0, 0, 0x01, 198, 19, 0, 1, // target: the requester
        ];
        assert_eq!(&out[..a.len], &want[..]);
    }

    #[test]
    fn arp_that_is_not_answered() {
        let mut out = [0u8; MAX_REPLY_LEN];
        let mut no = |f: &[u8], why: &str| assert_eq!(answer(f, known, &mut out), None, "{why}");
        no(&arp_request([198, 19, 0, 1], [198, 19, 0, 99]), "unknown target");
        no(&arp_request([198, 19, 0, 2], [198, 19, 0, 2]), "gratuitous ARP");
        no(&arp_request([0, 0, 0, 0], [198, 19, 0, 2]), "probe from 0.0.0.0");
        let mut reply = arp_request([198, 19, 0, 1], [198, 19, 0, 2]);
        reply[21] = 2;
        no(&reply, "an ARP reply");
        let mut unicast = arp_request([198, 19, 0, 1], [198, 19, 0, 2]);
        unicast[..6].copy_from_slice(&MEMBER.0);
        no(&unicast, "a unicast request (reachability check)");
        let mut own_mac = arp_request([198, 19, 0, 1], [198, 19, 0, 2]);
        own_mac[22..28].copy_from_slice(&MEMBER.0);
        no(&own_mac, "the requester asks about its own MAC");
        no(&arp_request([198, 19, 0, 1], [224, 0, 0, 1]), "multicast target");
        let req = arp_request([198, 19, 0, 1], [198, 19, 0, 2]);
        no(&req[..41], "cut short");
        let mut tagged = req[..12].to_vec();
        tagged.extend([0x81, 0x00, 0x00, 0x2a]);
        tagged.extend(&req[12..]);
        no(&tagged, "VLAN-tagged");
        assert_eq!(answer(&req, |_| None, &mut out), None, "lookup refuses (not behind a remote VTEP)");
        assert_eq!(answer(&req, known, &mut [0u8; 41]), None, "no room");
    }

    /// A neighbour solicitation as Linux sends it: `src` asks for `target` at the solicited-node
    /// group, with its source link-layer address option when `slla`.
    fn solicitation(src: [u8; 16], target: [u8; 16], slla: bool) -> Vec<u8> {
        let (group, group_mac) = solicited_node(target.into());
        let ns = Icmp::neighbour_solicitation(target.into(), slla.then_some(MacAddr(REQUESTER)));
        Ethernet::new(group_mac, MacAddr(REQUESTER))
            .ipv6(Ipv6::new(src, group).hop_limit(255))
            .icmp(ns)
            .build()
    }

    const SRC: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const TARGET: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    /// RFC 1071 the slow way, independent of the vectorized code under test.
    fn naive_sum(pseudo_and_msg: &[u8]) -> u16 {
        let mut s: u32 = pseudo_and_msg
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
            .sum();
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn neighbour_advertisement_is_the_kernels_byte_for_byte() {
        let mut out = [0u8; MAX_REPLY_LEN];
        let a = answer(&solicitation(SRC, TARGET, true), known, &mut out).expect("answered");
        assert_eq!(a, Answer { len: 86, kind: Kind::Nd });
        #[rustfmt::skip]
        let want: [u8; 86] = [
            0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x86, 0xdd,
            0x60, 0, 0, 0, 0x00, 0x20, 58, 255, // version 6, 32 bytes of ICMPv6, hop limit 255
            0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // from the target
            0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, // to the requester
            136, 0, 0x8a, 0x6e, 0x60, 0, 0, 0, // NA, checksum, S and O
            0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, // target
            2, 1, 0x02, 0, 0, 0, 0, 0x02, // target link-layer address option
        ];
        assert_eq!(&out[..a.len], &want[..]);
        let mut pseudo = Vec::from(&want[22..54]);
        pseudo.extend([0, 0, 0, 32, 0, 0, 0, 58]);
        pseudo.extend(&want[54..]);
        assert_eq!(naive_sum(&pseudo), 0xffff, "the checksum verifies");
        let b = answer(&solicitation(SRC, TARGET, false), known, &mut out).expect("answered without SLLA");
        assert_eq!(&out[..6], &REQUESTER, "to the Ethernet source when there is no option");
        assert_eq!(b.len, 86);
    }

    #[test]
    fn solicitations_that_are_not_answered() {
        let mut out = [0u8; MAX_REPLY_LEN];
        let mut no = |f: &[u8], why: &str| assert_eq!(answer(f, known, &mut out), None, "{why}");
        no(&solicitation([0; 16], TARGET, false), "duplicate address detection from ::");
        no(&solicitation(TARGET, TARGET, true), "its own address");
        let mut unknown = TARGET;
        unknown[15] = 9;
        no(&solicitation(SRC, unknown, true), "unknown target");
        let mut hop = solicitation(SRC, TARGET, true);
        hop[21] = 64;
        no(&hop, "hop limit not 255 (RFC 4861 7.1.1)");
        let mut code = solicitation(SRC, TARGET, true);
        code[55] = 1;
        no(&code, "code not 0");
        let mut unicast = solicitation(SRC, TARGET, true);
        unicast[..6].copy_from_slice(&MEMBER.0);
        no(&unicast, "unicast (reachability check)");
        let mut zero_opt = solicitation(SRC, TARGET, true);
        zero_opt[79] = 0;
        no(&zero_opt, "an option of length 0");
        let mut advert = solicitation(SRC, TARGET, true);
        advert[54] = 136;
        no(&advert, "an advertisement");
        let ns = solicitation(SRC, TARGET, true);
        no(&ns[..70], "cut short");
        let mut mcast_target = solicitation(SRC, TARGET, false);
        mcast_target[62] = 0xff;
        no(&mcast_target, "multicast target");
        assert!(!is_candidate(&[0u8; 13]));
    }
}
