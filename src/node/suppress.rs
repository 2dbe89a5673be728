//! `--proxy` on the TAP reader's path: an ARP request or neighbour solicitation the neighbour
//! table can answer is answered into the TAP, by the thread that read it, and goes no further
//! (the decision and the reply are [`crate::packet::proxy`]'s; this only writes and counts).

use super::tap_writer::TapReplier;
use crate::packet::pipeline::{Network, HEADROOM};
use crate::packet::proxy::{self, Kind};
use crate::state::stats::DropReason;

/// Answers the frame at `buf[HEADROOM..HEADROOM + len]` if it is a request to suppress; true if
/// it was answered (the frame must then not be sent). `reply` is the reader's reply buffer,
/// grown once. A reply the TAP refuses is counted and the request forwarded instead.
#[cold]
pub(super) fn answer(
    net: &Network,
    tap: &TapReplier<'_>,
    reply: &mut Vec<u8>,
    buf: &[u8],
    len: usize,
) -> bool {
    let Some(frame) = buf.get(HEADROOM..HEADROOM + len) else { return false };
    if !proxy::is_candidate(frame) {
        return false;
    }
    if reply.len() < proxy::MAX_REPLY_LEN {
        reply.resize(proxy::MAX_REPLY_LEN, 0);
    }
    let Some(a) = net.proxy_reply(frame, reply) else { return false };
    if !tap.write(&reply[..a.len]) {
        net.counters.drop(DropReason::TapWrite);
        return false;
    }
    match a.kind {
        Kind::Arp => net.counters.arp_suppressed(),
        Kind::Nd => net.counters.nd_suppressed(),
    }
    true
}
