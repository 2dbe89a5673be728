//! What to do with datagrams the kernel refused as over the path MTU (EMSGSIZE: it learned a
//! narrower path from an ICMP error), decided without I/O. The node's sender carries the
//! decision out: it sends, writes the ICMP reply ([`super::icmp`]) into the TAP, and counts.
//!
//! For one refused datagram ([`Refused`]), as the kernel does for a bridged tunnel
//! (`skb_tunnel_check_pmtu`): one that fits the path as now known goes again; one whose inner
//! packet may be fragmented (`--df`, [`Df::may_fragment`]) goes from the fragmenting socket, so
//! the underlay fragments it; any other is dropped and its sender told with an ICMP "too big"
//! announcing the inner MTU that fits — or, when that MTU is below what the inner protocol may
//! be told (576 bytes for IPv4, as the kernel's `iptunnel_pmtud_check_icmp`; 1280 for IPv6),
//! fragmented on the underlay instead (RFC 2473 §7.1) unless `--df set` forbids it.
//!
//! For a super-frame's train refused whole ([`recut`]): cut it again for the path just learned,
//! unless that path is no narrower than the one it was cut for.

use super::icmp::{self, NoReply};
use super::{datagram_room, inner_mtu, Df};
use crate::wire::frame::Frame;

/// What to do with one refused datagram (in the manner of boringtun's `TunnResult`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TooBig {
    /// It fits the path as now known: send it again, from the same socket.
    Resend,
    /// Its inner packet may be fragmented: send it again from the fragmenting socket of the same
    /// port, and let the underlay fragment it.
    ResendFragmenting,
    /// The path is too narrow for the inner protocol's minimum MTU, so no ICMP reply can help:
    /// send it from the fragmenting socket (RFC 2473 §7.1).
    FragmentBelowMinimum,
    /// Write an ICMP "too big" reply announcing `mtu` (the largest inner IP packet that fits the
    /// path) to its sender, then drop it.
    ReplyTooBig { mtu: u32 },
    /// Drop it.
    Drop,
}

/// One datagram the kernel refused as too big, and what the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Refused<'a> {
    /// The datagram: the tunnel header, then the frame.
    datagram: &'a [u8],
    /// The frame and its headers; None if the datagram is shorter than a tunnel header and an
    /// Ethernet header (vxtap never sends one: the packet path drops runt frames).
    frame: Option<(&'a [u8], Frame)>,
    tunnel_header: usize,
    path_mtu: Option<u32>,
    underlay_v6: bool,
    df: Df,
    fragmenting: bool,
}

impl<'a> Refused<'a> {
    /// `datagram` (a tunnel header of `tunnel_header` bytes, then the frame) was refused towards
    /// a VTEP on an IPv6 underlay or not (`underlay_v6`), whose path MTU the kernel now says is
    /// `path_mtu` (None if it does not know); the network's `--df` is `df`, and the send pool
    /// has fragmenting sockets or not (`fragmenting`). Parses the frame's headers, once.
    pub fn new(
        datagram: &'a [u8],
        tunnel_header: usize,
        path_mtu: Option<u32>,
        underlay_v6: bool,
        df: Df,
        fragmenting: bool,
    ) -> Refused<'a> {
        let frame = datagram.get(tunnel_header..).and_then(|f| Some((f, Frame::parse(f)?)));
        Refused { datagram, frame, tunnel_header, path_mtu, underlay_v6, df, fragmenting }
    }

    /// The frame the datagram carries, and its headers.
    pub fn frame(&self) -> Option<(&'a [u8], &Frame)> {
        self.frame.as_ref().map(|(f, v)| (*f, v))
    }

    /// What to do first.
    pub fn decide(&self) -> TooBig {
        let Some((_, view)) = &self.frame else { return TooBig::Drop };
        let fits = self.path_mtu.is_some_and(|m| self.datagram.len() <= datagram_room(m, self.underlay_v6));
        if fits {
            TooBig::Resend
        } else if self.fragmenting && self.df.may_fragment(view) {
            TooBig::ResendFragmenting
        } else {
            self.reply()
        }
    }

    /// What to do when the resend `tried` (a [`TooBig::Resend`] or one of the fragmenting
    /// ones) did not go: refused again, or failed. A plain or fragmenting resend falls back on
    /// the reply; fragmenting below the minimum MTU was the last resort.
    pub fn after_failed(&self, tried: TooBig) -> TooBig {
        match tried {
            TooBig::Resend | TooBig::ResendFragmenting => self.reply(),
            _ => TooBig::Drop,
        }
    }

    /// Tell the sender, if the path is known and the kernel would; fragment if the path is below
    /// the inner minimum and `--df` allows; else drop.
    fn reply(&self) -> TooBig {
        let (Some(path_mtu), Some((frame, view))) = (self.path_mtu, &self.frame) else {
            return TooBig::Drop;
        };
        let mtu = inner_mtu(path_mtu, self.underlay_v6, self.tunnel_header, view.l2_len());
        match icmp::check(frame, view, mtu) {
            Ok(_) => TooBig::ReplyTooBig { mtu },
            Err(NoReply::BelowMinimum) if self.fragmenting && self.df != Df::Set => {
                TooBig::FragmentBelowMinimum
            }
            Err(_) => TooBig::Drop,
        }
    }
}

/// A super-frame's train was refused whole (at its first datagram) towards a VTEP: what next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recut {
    /// The path narrowed to `path_mtu`: cut the super-frame again to fit it and send it again.
    Again { path_mtu: u32 },
    /// The path is no narrower than what the segments were cut for: something else refuses
    /// them. Drop every segment.
    DropAll,
    /// The kernel knows no path MTU: drop the super-frame (counted once).
    Drop,
}

/// [`Recut`] for a super-frame cut for a path of `cut_for` bytes (None: cut as the sender asked),
/// given the path MTU the kernel knows now (`learned`).
pub fn recut(cut_for: Option<u32>, learned: Option<u32>) -> Recut {
    match learned {
        None => Recut::Drop,
        Some(m) if cut_for.is_some_and(|old| old <= m) => Recut::DropAll,
        Some(path_mtu) => Recut::Again { path_mtu },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ip::protocol;

    /// The VXLAN header vxtap prepends (the decision only counts its length).
    const VXLAN: [u8; 8] = [0x08, 0, 0, 0, 0, 0, 42, 0];

    /// A VXLAN datagram A -> B over `tags` VLAN tags carrying an IPv4 packet with `flags` and
    /// `len` bytes in all, 198.19.0.1 -> 198.19.0.2, protocol `proto`.
    fn v4(tags: usize, flags: u16, proto: u8, len: usize) -> Vec<u8> {
        let mut d = VXLAN.to_vec();
        d.extend([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
        for _ in 0..tags {
            d.extend([0x81, 0, 0, 42]);
        }
        d.extend([0x08, 0x00, 0x45, 0]);
        d.extend((len as u16).to_be_bytes());
        d.extend([0, 1]);
        d.extend(flags.to_be_bytes());
        d.extend([64, proto, 0, 0, 198, 19, 0, 1, 198, 19, 0, 2]);
        d.resize(d.len() + len - 20, 0xab);
        d
    }

    /// The same over IPv6, `len` bytes of IPv6 packet.
    fn v6(len: usize) -> Vec<u8> {
        let mut d = VXLAN.to_vec();
        d.extend([2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd, 0x60, 0, 0, 0]);
        d.extend(((len - 40) as u16).to_be_bytes());
        d.extend([protocol::UDP, 64]);
        d.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        d.extend([0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        d.resize(d.len() + len - 40, 0xcd);
        d
    }

    const DF: u16 = 0x4000;

    /// The decision for `d` refused towards an IPv4 VTEP whose path is `path_mtu`, with
    /// fragmenting sockets (the default) and `df`.
    fn decide(d: &[u8], path_mtu: Option<u32>, df: Df) -> TooBig {
        Refused::new(d, VXLAN.len(), path_mtu, false, df, true).decide()
    }

    #[test]
    fn a_datagram_that_fits_the_path_now_goes_again() {
        // 1400 - 28 of outer IPv4 and UDP = 1372 bytes of datagram: 1350 of inner IP.
        for df in [Df::Inherit, Df::Set, Df::Unset] {
            assert_eq!(decide(&v4(0, DF, protocol::TCP, 1350), Some(1400), df), TooBig::Resend);
            assert_eq!(decide(&v4(0, 0, protocol::UDP, 1350), Some(1400), df), TooBig::Resend);
        }
        let over_v6 = |d: &[u8]| Refused::new(d, 8, Some(1400), true, Df::Inherit, true).decide();
        assert_eq!(over_v6(&v4(0, DF, protocol::TCP, 1330)), TooBig::Resend, "1400 - 48 over IPv6");
        assert_eq!(over_v6(&v4(0, DF, protocol::TCP, 1331)), TooBig::ReplyTooBig { mtu: 1330 });
    }

    #[test]
    fn too_big_with_df_clear_goes_through_the_fragmenting_socket() {
        let d = v4(0, 0, protocol::UDP, 1400);
        assert_eq!(decide(&d, Some(1400), Df::Inherit), TooBig::ResendFragmenting);
        assert_eq!(decide(&d, None, Df::Inherit), TooBig::ResendFragmenting, "path unknown");
        assert_eq!(
            decide(&v4(2, 0, protocol::UDP, 1400), Some(1400), Df::Inherit),
            TooBig::ResendFragmenting
        );
        // --df unset: whatever the inner packet says (ARP, say, or DF set).
        assert_eq!(decide(&v4(0, DF, protocol::TCP, 1400), Some(1400), Df::Unset), TooBig::ResendFragmenting);
        let mut arp = v4(0, 0, protocol::UDP, 1400);
        arp[8 + 12..8 + 14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(decide(&arp, Some(1400), Df::Inherit), TooBig::ResendFragmenting, "not IP");
        // --df set: never; the inner packet allowed it, so no ICMP reply either.
        assert_eq!(decide(&d, Some(1400), Df::Set), TooBig::Drop);
    }

    #[test]
    fn df_set_inside_gets_an_icmp_reply_with_the_inner_mtu() {
        // 1400 - 20 - 8 - 8 of VXLAN over IPv4 - 14 of Ethernet: the 1350 cli/tests/pmtu.rs sees.
        assert_eq!(
            decide(&v4(0, DF, protocol::TCP, 1400), Some(1400), Df::Inherit),
            TooBig::ReplyTooBig { mtu: 1350 }
        );
        assert_eq!(
            decide(&v4(0, DF, protocol::TCP, 1400), Some(1400), Df::Set),
            TooBig::ReplyTooBig { mtu: 1350 }
        );
        assert_eq!(
            decide(&v4(2, DF, protocol::TCP, 1400), Some(1400), Df::Inherit),
            TooBig::ReplyTooBig { mtu: 1342 },
            "two VLAN tags come off too"
        );
        // IPv6 inside is never fragmented by routers: a Packet Too Big.
        assert_eq!(decide(&v6(1400), Some(1400), Df::Inherit), TooBig::ReplyTooBig { mtu: 1350 });
        // But not for what the kernel would not answer.
        assert_eq!(
            decide(&v4(0, DF, protocol::ICMP, 1400), Some(1400), Df::Inherit),
            TooBig::Drop,
            "an ICMP error"
        );
        let mut group = v4(0, DF, protocol::TCP, 1400);
        group[8] = 0x01;
        assert_eq!(decide(&group, Some(1400), Df::Inherit), TooBig::Drop, "group MAC");
    }

    #[test]
    fn a_path_below_the_inner_minimum_fragments_unless_df_set() {
        // 600 of path leaves 550 of inner IPv4: below the 576 an ICMPv4 reply may announce.
        let d = v4(0, DF, protocol::TCP, 1000);
        assert_eq!(decide(&d, Some(600), Df::Inherit), TooBig::FragmentBelowMinimum);
        assert_eq!(decide(&d, Some(600), Df::Set), TooBig::Drop);
        assert_eq!(
            decide(&d, Some(626), Df::Inherit),
            TooBig::ReplyTooBig { mtu: 576 },
            "just at the minimum"
        );
        // IPv6: 1280.
        assert_eq!(decide(&v6(1400), Some(1329), Df::Inherit), TooBig::FragmentBelowMinimum);
        assert_eq!(decide(&v6(1400), Some(1330), Df::Inherit), TooBig::ReplyTooBig { mtu: 1280 });
        assert_eq!(decide(&v6(1400), Some(1329), Df::Set), TooBig::Drop);
    }

    #[test]
    fn without_fragmenting_sockets_or_a_known_path() {
        let no_frag = |d: &[u8], m, df| Refused::new(d, 8, m, false, df, false).decide();
        assert_eq!(
            no_frag(&v4(0, 0, protocol::UDP, 1400), Some(1400), Df::Inherit),
            TooBig::Drop,
            "DF clear: no reply"
        );
        assert_eq!(
            no_frag(&v4(0, DF, protocol::TCP, 1000), Some(600), Df::Inherit),
            TooBig::Drop,
            "below minimum"
        );
        assert_eq!(
            no_frag(&v4(0, DF, protocol::TCP, 1400), Some(1400), Df::Inherit),
            TooBig::ReplyTooBig { mtu: 1350 }
        );
        assert_eq!(no_frag(&v4(0, DF, protocol::TCP, 100), Some(1400), Df::Inherit), TooBig::Resend, "fits");
        // Unknown path MTU: nothing fits, nothing can be announced.
        assert_eq!(decide(&v4(0, DF, protocol::TCP, 100), None, Df::Inherit), TooBig::Drop);
        assert_eq!(decide(&v6(1400), None, Df::Inherit), TooBig::Drop);
        // No frame to speak of (vxtap sends none): nothing to send again.
        assert_eq!(decide(&VXLAN[..5], Some(1400), Df::Inherit), TooBig::Drop);
        assert_eq!(decide(&v4(0, 0, protocol::UDP, 100)[..8 + 13], Some(1400), Df::Unset), TooBig::Drop);
    }

    #[test]
    fn a_resend_that_did_not_go_falls_back_on_the_reply() {
        let (fits, df_clear, below) =
            (v4(0, DF, protocol::TCP, 1350), v4(0, 0, protocol::UDP, 1400), v4(0, DF, protocol::TCP, 1000));
        let r = Refused::new(&fits, 8, Some(1400), false, Df::Inherit, true);
        assert_eq!(r.decide(), TooBig::Resend);
        assert_eq!(r.after_failed(TooBig::Resend), TooBig::ReplyTooBig { mtu: 1350 });
        let r = Refused::new(&df_clear, 8, Some(1400), false, Df::Inherit, true);
        assert_eq!(r.after_failed(TooBig::ResendFragmenting), TooBig::Drop, "DF clear: no reply");
        let r = Refused::new(&below, 8, Some(600), false, Df::Inherit, true);
        assert_eq!(r.after_failed(TooBig::FragmentBelowMinimum), TooBig::Drop, "the last resort");
        assert_eq!(r.after_failed(TooBig::ReplyTooBig { mtu: 576 }), TooBig::Drop);
        let (frame, view) = r.frame().unwrap();
        assert_eq!((frame.len(), view.l2_len()), (1014, 14));
    }

    #[test]
    fn a_train_refused_whole_is_cut_again_if_the_path_narrowed() {
        assert_eq!(recut(None, Some(1400)), Recut::Again { path_mtu: 1400 });
        assert_eq!(recut(Some(1500), Some(1400)), Recut::Again { path_mtu: 1400 });
        assert_eq!(recut(Some(1400), Some(1400)), Recut::DropAll, "no narrower: something else");
        assert_eq!(recut(Some(1300), Some(1400)), Recut::DropAll);
        assert_eq!(recut(Some(1400), None), Recut::Drop);
        assert_eq!(recut(None, None), Recut::Drop);
    }
}
