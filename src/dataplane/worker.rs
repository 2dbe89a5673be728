//! The two packet loops. Each owns its buffers (allocated once, with headroom for the tunnel
//! header) and blocks in its system call; the per-packet work is in [`crate::pipeline`] and
//! [`crate::offload`]. Nothing here logs: every failure is a counter, reported periodically by
//! the drop summary.
//!
//! With offloads on, a TAP read may return a TCP super-frame of up to 64 KB: it is segmented
//! straight into a train of tunnel datagrams that leaves in one UDP GSO send. A receive returns
//! up to [`RECV_BATCH`] messages, each possibly a UDP GRO train; consecutive segments of one
//! inner TCP flow are merged back into one super-frame for one TAP write.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn_udp::RecvMeta;

use super::tap::{Tap, TapQueue};
use super::udp::{Sent, Underlay, MAX_GSO_BYTES};
use crate::offload::gro::{Coalescer, Offer};
use crate::offload::tso;
use crate::offload::vnet::{self, VnetHdr};
use crate::pipeline::{Demux, Destinations, Network, HEADROOM};
use crate::stats::DropReason;

/// Largest frame a TAP hands over, and largest UDP payload.
const MAX_PACKET: usize = 65535;
/// Room for the segments of one super-frame: 64 KB of payload cut at an MSS as small as 88
/// bytes, each segment with up to 398 bytes of headers, still fits.
const SEGMENT_BUF: usize = 512 << 10;
/// Messages per receive system call.
const RECV_BATCH: usize = 32;
/// Bytes per received message: a whole GRO train (at most 64 KiB).
const RECV_MSG: usize = 64 << 10;
/// Back-off after a TAP read error, which may repeat at once (e.g. a device being removed).
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// TAP queue `q` -> underlay: read a frame, encapsulate it in place (or segment a super-frame
/// into a train of datagrams), send to its VTEP or the flood list. Reads do not block while
/// frames are queued: datagrams for one VTEP and flow collect in a [`Train`] that leaves in one
/// GSO send once the queue is drained (or the train is full), so small packets share system
/// calls too; nothing waits for more traffic.
pub fn tap_to_underlay(net: Arc<Network>, tap: Arc<Tap>, q: usize, underlay: Arc<Underlay>) {
    let queue = tap.queue(q);
    let hlen = tap.offloads().header_len();
    let mut buf = vec![0u8; HEADROOM + MAX_PACKET];
    let mut segments = if tap.offloads().tso { vec![0u8; SEGMENT_BUF] } else { Vec::new() };
    // Without a non-blocking queue (or GSO), a train would wait for the next frame: send each now.
    let batching = underlay.gso_segments() > 1 && queue.set_nonblocking().is_ok();
    let mut train = Train::new(if batching { underlay.gso_segments() } else { 1 });
    loop {
        let n = match queue.read(&mut buf[HEADROOM - hlen..]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                train.send(&net, &underlay);
                if queue.wait_readable().is_err() {
                    std::thread::sleep(ERROR_PAUSE);
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                // Counted and reported by the periodic drop summary; pause so a persistent error
                // cannot spin a core.
                net.counters.drop(DropReason::TapRead);
                train.send(&net, &underlay);
                std::thread::sleep(ERROR_PAUSE);
                continue;
            }
        };
        net.counters.tx_syscalls(1);
        let Some(frame_len) = n.checked_sub(hlen) else {
            net.counters.drop(DropReason::ShortFrame);
            continue;
        };
        if hlen > 0 {
            let hdr = VnetHdr::parse(&buf[HEADROOM - hlen..]).expect("header read");
            if hdr.gso() != vnet::GSO_NONE {
                train.send(&net, &underlay);
                net.counters.tx_segmented();
                send_segmented(&net, &underlay, &buf[HEADROOM..][..frame_len], &hdr, &mut segments);
                continue;
            }
            if hdr.flags & vnet::F_NEEDS_CSUM != 0
                && tso::complete_checksum(&mut buf[HEADROOM..][..frame_len], &hdr).is_err()
            {
                net.counters.drop(DropReason::Offload);
                continue;
            }
        }
        let Some(out) = net.encapsulate(&mut buf, frame_len) else { continue };
        let datagram = &buf[out.datagram];
        let socket = underlay.send.index(out.flow_hash);
        match &out.to {
            Destinations::One(to) => train.push(&net, &underlay, datagram, underlay.peer(*to), socket),
            Destinations::Flood(list) => {
                train.send(&net, &underlay);
                for &to in list.iter() {
                    net.counters.tx_syscalls(1);
                    match underlay.send.get(socket).send(underlay.peer(to), datagram, None) {
                        Ok(()) => net.counters.tx(datagram.len()),
                        Err(e) => send_failed(&net, &e, 1),
                    }
                }
            }
        }
    }
}

/// Datagrams waiting to leave together in one GSO send: same VTEP, same source socket, all of
/// one size but the last (which closes the train if it is shorter).
struct Train {
    buf: Vec<u8>,
    len: usize,
    stride: usize,
    count: usize,
    max_count: usize,
    to: Option<SocketAddr>,
    socket: usize,
}

impl Train {
    fn new(max_count: usize) -> Train {
        let buf = if max_count > 1 { vec![0u8; MAX_GSO_BYTES] } else { Vec::new() };
        Train { buf, len: 0, stride: 0, count: 0, max_count, to: None, socket: 0 }
    }

    /// Adds a datagram, sending the train first if the datagram cannot join it. Without trains
    /// (no GSO), or for a datagram too big for one, sends it at once without copying.
    #[inline]
    fn push(&mut self, net: &Network, underlay: &Underlay, datagram: &[u8], to: SocketAddr, socket: usize) {
        if self.max_count == 1 || datagram.len() > self.buf.len() {
            self.send(net, underlay);
            net.counters.tx_syscalls(1);
            match underlay.send.get(socket).send(to, datagram, None) {
                Ok(()) => net.counters.tx(datagram.len()),
                Err(e) => send_failed(net, &e, 1),
            }
            return;
        }
        let joins = self.count > 0
            && self.to == Some(to)
            && self.socket == socket
            && datagram.len() <= self.stride
            && self.len == self.count * self.stride
            && self.count < self.max_count
            && self.len + datagram.len() <= self.buf.len();
        if !joins {
            self.send(net, underlay);
            self.to = Some(to);
            self.socket = socket;
            self.stride = datagram.len();
        }
        self.buf[self.len..self.len + datagram.len()].copy_from_slice(datagram);
        self.len += datagram.len();
        self.count += 1;
    }

    /// Sends what the train holds, if anything.
    fn send(&mut self, net: &Network, underlay: &Underlay) {
        let Some(to) = self.to.take() else { return };
        let sent =
            underlay.send.get(self.socket).send_train(to, &self.buf[..self.len], self.stride, self.count);
        account(net, &sent);
        self.len = 0;
        self.count = 0;
    }
}

/// Segments a TAP super-frame into `out` and sends the train to each destination, in as few
/// GSO sends as the kernel's limits allow (one datagram per send without GSO).
fn send_segmented(net: &Network, underlay: &Underlay, frame: &[u8], hdr: &VnetHdr, out: &mut [u8]) {
    let Some((to, flow_hash)) = net.route(frame) else { return };
    let segs = match tso::segment(frame, hdr, net.header().as_bytes(), out) {
        Ok(s) => s,
        Err(_) => {
            net.counters.drop(DropReason::Offload);
            return;
        }
    };
    let socket = underlay.send.pick(flow_hash);
    for &dst in to.as_slice() {
        let sent =
            socket.send_train(underlay.peer(dst), &out[..segs.len], segs.stride, underlay.gso_segments());
        account(net, &sent);
    }
}

/// Counts what a train send did.
fn account(net: &Network, sent: &Sent) {
    net.counters.tx_syscalls(sent.syscalls as u64);
    if sent.datagrams > 0 {
        net.counters.tx_many(sent.datagrams, sent.bytes);
    }
    if let Some(e) = &sent.error {
        send_failed(net, e, sent.failed);
    }
}

fn send_failed(net: &Network, e: &io::Error, datagrams: usize) {
    for _ in 0..datagrams {
        match send_drop_reason(e) {
            DropReason::TooBig => net.counters.drop(DropReason::TooBig),
            _ => net.counters.send_failed(e.raw_os_error().unwrap_or(0)),
        }
    }
}

/// Underlay receive socket `q` -> TAP: receive a batch of messages, check each datagram,
/// demultiplex by VNI, learn, and write the frames (merged where they continue one TCP flow).
/// Frames from the underlay only ever go to a TAP (split horizon: never re-flooded).
pub fn underlay_to_tap(demux: Arc<Demux>, taps: Vec<Arc<Tap>>, q: usize, underlay: Arc<Underlay>) {
    let socket = &underlay.recv[q];
    let mut storage = vec![0u8; RECV_BATCH * RECV_MSG];
    let mut meta = [RecvMeta::default(); RECV_BATCH];
    let mut out = Delivery::new(&demux, &taps, q);
    loop {
        let received = {
            let mut chunks = storage.chunks_mut(RECV_MSG);
            let mut bufs: [IoSliceMut<'_>; RECV_BATCH] =
                std::array::from_fn(|_| IoSliceMut::new(chunks.next().expect("RECV_BATCH chunks")));
            socket.recv(&mut bufs, &mut meta)
        };
        let n = match received {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if socket.wait_readable().is_err() {
                    std::thread::sleep(ERROR_PAUSE);
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                // ICMP errors queued on the socket surface here; they are not fatal.
                demux.counters.drop(DropReason::Recv);
                continue;
            }
        };
        demux.counters.rx_syscalls(1);
        for (m, msg) in meta[..n].iter().zip(storage.chunks(RECV_MSG)) {
            let data = &msg[..m.len.min(RECV_MSG)];
            let stride = if m.stride == 0 { data.len().max(1) } else { m.stride };
            for datagram in data.chunks(stride) {
                if let Some((index, frame)) = demux.decapsulate(datagram, m.addr.ip()) {
                    out.deliver(index, frame);
                }
            }
        }
        out.flush();
        // A short batch emptied the socket: wait for more rather than spend a receive call on
        // EAGAIN (poll returns at once if datagrams arrived meanwhile).
        if n < RECV_BATCH && socket.wait_readable().is_err() {
            std::thread::sleep(ERROR_PAUSE);
        }
    }
}

/// Writes decapsulated frames to the TAPs of one receive thread, merging TCP segments for TAPs
/// with offloads.
struct Delivery<'a> {
    demux: &'a Demux,
    taps: &'a [Arc<Tap>],
    q: usize,
    gro: Coalescer,
    /// The network whose segments `gro` holds, and their inner bytes.
    pending: Option<(usize, usize)>,
}

impl<'a> Delivery<'a> {
    fn new(demux: &'a Demux, taps: &'a [Arc<Tap>], q: usize) -> Delivery<'a> {
        Delivery { demux, taps, q, gro: Coalescer::new(), pending: None }
    }

    #[inline]
    fn deliver(&mut self, index: usize, frame: &[u8]) {
        let tap = &self.taps[index];
        if !tap.offloads().vnet_hdr {
            self.write(index, frame.len(), 1, |queue| queue.write(frame));
            return;
        }
        if self.pending.is_some_and(|(i, _)| i != index) {
            self.flush();
        }
        // UDP datagrams merge only for a TAP that takes UDP super-frames back (USO).
        self.gro.set_udp(tap.offloads().uso);
        loop {
            match self.gro.offer(frame) {
                Offer::Merged | Offer::Held => {
                    let bytes = self.pending.map_or(0, |(_, b)| b) + frame.len();
                    self.pending = Some((index, bytes));
                    return;
                }
                Offer::Flush => self.flush(),
                Offer::Pass => {
                    self.flush();
                    const PLAIN: [u8; vnet::LEN] = [0; vnet::LEN];
                    self.write(index, frame.len(), 1, |queue| queue.write2(&PLAIN, frame));
                    return;
                }
            }
        }
    }

    /// Writes the pending super-frame, if any.
    fn flush(&mut self) {
        let Some((index, bytes)) = self.pending.take() else { return };
        let segments = self.gro.segments();
        let Some(frame) = self.gro.take() else { return };
        let queue = self.taps[index].queue(self.q);
        let net = &self.demux.networks()[index];
        net.counters.rx_syscalls(1);
        match queue.write(frame) {
            Ok(_) if segments > 1 => net.counters.rx_coalesced(segments, bytes),
            Ok(_) => net.counters.rx(bytes),
            Err(_) => (0..segments).for_each(|_| net.counters.drop(DropReason::TapWrite)),
        }
    }

    #[inline]
    fn write(
        &self,
        index: usize,
        bytes: usize,
        frames: usize,
        f: impl FnOnce(&TapQueue) -> io::Result<usize>,
    ) {
        let net = &self.demux.networks()[index];
        net.counters.rx_syscalls(1);
        match f(self.taps[index].queue(self.q)) {
            Ok(_) => net.counters.rx(bytes),
            Err(_) => (0..frames).for_each(|_| net.counters.drop(DropReason::TapWrite)),
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
