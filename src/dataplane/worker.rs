//! The two packet loops. Each owns its buffer (allocated once, with headroom for the tunnel
//! header) and blocks in its system call; the per-packet work is in [`crate::pipeline`].
//! Nothing here logs: every failure is a counter, reported periodically by the drop summary.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::tap::Tap;
use super::udp::Underlay;
use crate::pipeline::{Demux, Network, HEADROOM};
use crate::stats::DropReason;

/// Largest frame a TAP hands over, and largest UDP payload.
const MAX_PACKET: usize = 65535;
/// Back-off after a TAP read error, which may repeat at once (e.g. a device being removed).
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// TAP -> underlay: read a frame, encapsulate it in place, send to its VTEP or the flood list.
pub fn tap_to_underlay(net: Arc<Network>, tap: Arc<Tap>, underlay: Arc<Underlay>) {
    let mut buf = vec![0u8; HEADROOM + MAX_PACKET];
    loop {
        let n = match tap.read(&mut buf[HEADROOM..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                // Counted and reported by the periodic drop summary; pause so a persistent error
                // cannot spin a core.
                net.counters.drop(DropReason::TapRead);
                std::thread::sleep(ERROR_PAUSE);
                continue;
            }
        };
        let Some(out) = net.encapsulate(&mut buf, n) else { continue };
        let datagram = &buf[out.datagram];
        let socket = underlay.send.pick(out.flow_hash);
        for &to in out.to.as_slice() {
            match socket.send_to(datagram, underlay.peer(to)) {
                Ok(_) => net.counters.tx(datagram.len()),
                Err(e) => match send_drop_reason(&e) {
                    DropReason::TooBig => net.counters.drop(DropReason::TooBig),
                    _ => net.counters.send_failed(e.raw_os_error().unwrap_or(0)),
                },
            }
        }
    }
}

/// Underlay -> TAP: receive a datagram, check it, demultiplex by VNI, learn, write the frame.
/// Frames from the underlay only ever go to a TAP (split horizon: never re-flooded).
pub fn underlay_to_tap(demux: Arc<Demux>, taps: Vec<Arc<Tap>>, underlay: Arc<Underlay>) {
    let mut buf = vec![0u8; MAX_PACKET];
    loop {
        let (n, from) = match underlay.recv.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                // ICMP errors queued on the socket surface here; they are not fatal.
                demux.counters.drop(DropReason::Recv);
                continue;
            }
        };
        let Some((index, frame)) = demux.decapsulate(&buf[..n], from.ip()) else { continue };
        let net = &demux.networks()[index];
        match taps[index].write(frame) {
            Ok(_) => net.counters.rx(frame.len()),
            Err(_) => net.counters.drop(DropReason::TapWrite),
        }
    }
}

/// What a failed underlay send counts as. None of them is fatal: EMSGSIZE is a datagram over the
/// path MTU (DF is set, vxtap never fragments); anything else (ENOBUFS from a full queue,
/// ENETUNREACH or EADDRNOTAVAIL while the underlay address is gone, ...) is a send drop whose
/// errno the periodic summary reports.
fn send_drop_reason(e: &io::Error) -> DropReason {
    match e.raw_os_error() {
        Some(libc::EMSGSIZE) => DropReason::TooBig,
        _ => DropReason::Send,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_errors_are_classified_never_fatal() {
        let reason = |errno| send_drop_reason(&io::Error::from_raw_os_error(errno));
        assert_eq!(reason(libc::EMSGSIZE), DropReason::TooBig);
        for errno in [libc::ENOBUFS, libc::ENETUNREACH, libc::EADDRNOTAVAIL, libc::EPERM, libc::ECONNREFUSED]
        {
            assert_eq!(reason(errno), DropReason::Send, "errno {errno}");
        }
    }
}
