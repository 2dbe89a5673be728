//! The two packet loops. Each owns its buffer (allocated once, with headroom for the tunnel
//! header) and blocks in its system call; the per-packet work is in [`crate::pipeline`].

use std::io;
use std::sync::Arc;

use tracing::{debug, warn};

use super::tap::Tap;
use super::udp::Underlay;
use crate::pipeline::{Demux, Network, HEADROOM};
use crate::stats::DropReason;

/// Largest frame a TAP hands over, and largest UDP payload.
const MAX_PACKET: usize = 65535;

/// TAP -> underlay: read a frame, encapsulate it in place, send to its VTEP or the flood list.
pub fn tap_to_underlay(net: Arc<Network>, tap: Arc<Tap>, underlay: Arc<Underlay>) {
    let mut buf = vec![0u8; HEADROOM + MAX_PACKET];
    loop {
        let n = match tap.read(&mut buf[HEADROOM..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                net.counters.drop(DropReason::TapRead);
                warn!(dev = tap.name(), "reading the TAP failed: {e}");
                if e.raw_os_error() == Some(libc::EBADFD) {
                    return;
                }
                continue;
            }
        };
        let Some(out) = net.encapsulate(&mut buf, n) else { continue };
        let datagram = &buf[out.datagram];
        let socket = underlay.send.pick(out.flow_hash);
        for &to in out.to.as_slice() {
            match socket.send_to(datagram, underlay.peer(to)) {
                Ok(_) => net.counters.tx(datagram.len()),
                Err(e) if e.raw_os_error() == Some(libc::EMSGSIZE) => net.counters.drop(DropReason::TooBig),
                Err(e) => {
                    net.counters.drop(DropReason::Send);
                    debug!(vni = net.vni, %to, "send failed: {e}");
                }
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
            Err(e) => {
                // ICMP errors queued on the socket surface here; they are not fatal.
                demux.counters.drop(DropReason::Recv);
                debug!("receive failed: {e}");
                continue;
            }
        };
        let Some((index, frame)) = demux.decapsulate(&buf[..n], from.ip()) else { continue };
        let net = &demux.networks()[index];
        match taps[index].write(frame) {
            Ok(_) => net.counters.rx(frame.len()),
            Err(e) => {
                net.counters.drop(DropReason::TapWrite);
                debug!(dev = taps[index].name(), "TAP write failed: {e}");
            }
        }
    }
}
