//! The two packet loops. Each owns its buffers (allocated once) and blocks in its system call;
//! they only route and batch: the per-packet work is in [`crate::pipeline`], the TAP's offloads
//! behind [`TapReader`] and [`TapWriter`], the grouping of datagrams into GSO sends in
//! [`Train`]. Nothing here logs: every failure is a counter, reported periodically by the drop
//! summary.

use std::io::{self, IoSliceMut};
use std::sync::Arc;
use std::time::Duration;

use quinn_udp::RecvMeta;

use super::tap::Tap;
use super::tap_reader::{Read, SuperFrame, TapReader};
use super::tap_writer::TapWriter;
use super::udp::{Sent, Underlay, MAX_GSO_BYTES};
use crate::pipeline::{Demux, Destinations, Encapsulated, Network};
use crate::stats::DropReason;
use crate::train::{Train, Transmit};

/// Room for the segments of one super-frame: 64 KB of payload cut at an MSS as small as 88
/// bytes, each segment with up to 398 bytes of headers, still fits.
const SEGMENT_BUF: usize = 512 << 10;
/// Messages per receive system call.
const RECV_BATCH: usize = 32;
/// Bytes per received message: a whole GRO train (at most 64 KiB).
const RECV_MSG: usize = 64 << 10;
/// Back-off after a TAP read error, which may repeat at once (e.g. a device being removed).
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// TAP queue `q` -> underlay: read a frame, encapsulate it in place (or cut a super-frame into
/// a train of datagrams), send to its VTEP or the flood list. Reads do not block while frames
/// are queued: datagrams for one VTEP and flow collect in a [`Train`] that leaves in one GSO
/// send once the queue is drained (or the train is full), so small packets share system calls
/// too; nothing waits for more traffic.
pub(crate) fn tap_to_underlay(net: Arc<Network>, tap: Arc<Tap>, q: usize, underlay: Arc<Underlay>) {
    let mut reader = TapReader::new(&tap, q);
    let mut segments = if tap.offloads().tso { vec![0u8; SEGMENT_BUF] } else { Vec::new() };
    // Without a non-blocking queue (or GSO), a train would wait for the next frame: send each now.
    let batching = underlay.gso_segments() > 1 && reader.set_nonblocking().is_ok();
    let mut train = Train::new(if batching { underlay.gso_segments() } else { 1 }, MAX_GSO_BYTES);
    let out = Sender { net: &net, underlay: &underlay };
    loop {
        match reader.read() {
            Ok(Read::Empty) => {
                out.flush(&mut train);
                if reader.wait().is_err() {
                    std::thread::sleep(ERROR_PAUSE);
                }
            }
            Ok(Read::Frame { buf, len }) => {
                net.counters.tx_syscalls(1);
                if let Some(e) = net.encapsulate(buf, len) {
                    out.frame(&mut train, &buf[e.datagram.clone()], &e);
                }
            }
            Ok(Read::Super(frame)) => {
                net.counters.tx_syscalls(1);
                out.flush(&mut train);
                net.counters.tx_segmented();
                out.super_frame(&frame, &mut segments);
            }
            Ok(Read::Dropped(reason)) => {
                net.counters.tx_syscalls(1);
                net.counters.drop(reason);
            }
            Err(_) => {
                // Counted and reported by the periodic drop summary; pause so a persistent error
                // cannot spin a core.
                net.counters.drop(DropReason::TapRead);
                out.flush(&mut train);
                std::thread::sleep(ERROR_PAUSE);
            }
        }
    }
}

/// Sends a network's datagrams on its underlay and counts what happened.
struct Sender<'a> {
    net: &'a Network,
    underlay: &'a Underlay,
}

impl Sender<'_> {
    /// An encapsulated frame: joins the train towards its VTEP, or is copied to every flood-list
    /// remote (after the train, to keep the order).
    #[inline]
    fn frame(&self, train: &mut Train, datagram: &[u8], e: &Encapsulated) {
        let socket = self.underlay.send.index(e.flow_hash);
        match &e.to {
            Destinations::One(to) => {
                let to = self.underlay.peer(*to);
                if !train.joins(datagram.len(), to, socket) {
                    self.flush(train);
                }
                if train.holds(datagram.len()) {
                    train.push(datagram, to, socket);
                } else {
                    self.flush(train);
                    self.send(Transmit {
                        destination: to,
                        socket,
                        contents: datagram,
                        segment_size: datagram.len(),
                    });
                }
            }
            Destinations::Flood(list) => {
                self.flush(train);
                for &to in list.iter() {
                    let destination = self.underlay.peer(to);
                    self.send(Transmit {
                        destination,
                        socket,
                        contents: datagram,
                        segment_size: datagram.len(),
                    });
                }
            }
        }
    }

    /// Cuts a super-frame into a train of datagrams in `out` and sends it to each destination, in
    /// as few GSO sends as the kernel's limits allow.
    fn super_frame(&self, frame: &SuperFrame<'_>, out: &mut [u8]) {
        let Some((to, flow_hash)) = self.net.route(frame.frame()) else { return };
        let segs = match frame.segment(self.net.header().as_bytes(), out) {
            Ok(s) => s,
            Err(_) => {
                self.net.counters.drop(DropReason::Offload);
                return;
            }
        };
        let socket = self.underlay.send.index(flow_hash);
        for &dst in to.as_slice() {
            let destination = self.underlay.peer(dst);
            self.send(Transmit {
                destination,
                socket,
                contents: &out[..segs.len],
                segment_size: segs.stride,
            });
        }
    }

    /// Sends what the train holds, if anything.
    #[inline]
    fn flush(&self, train: &mut Train) {
        if let Some(t) = train.flush() {
            self.send(t);
        }
    }

    #[inline]
    fn send(&self, t: Transmit<'_>) {
        let socket = self.underlay.send.get(t.socket);
        let sent = socket.send_train(t.destination, t.contents, t.segment_size, self.underlay.gso_segments());
        self.account(&sent);
    }

    /// Counts what a send did.
    fn account(&self, sent: &Sent) {
        let c = &self.net.counters;
        c.tx_syscalls(sent.syscalls as u64);
        if sent.datagrams > 0 {
            c.tx_many(sent.datagrams, sent.bytes);
        }
        if let Some(e) = &sent.error {
            for _ in 0..sent.failed {
                match send_drop_reason(e) {
                    DropReason::TooBig => c.drop(DropReason::TooBig),
                    _ => c.send_failed(e.raw_os_error().unwrap_or(0)),
                }
            }
        }
    }
}

/// Underlay receive socket `q` -> TAP: receive a batch of messages, check each datagram,
/// demultiplex by VNI, learn, and hand the frames to the TAPs' writers, which merge those that
/// continue one TCP flow. Frames from the underlay only ever go to a TAP (split horizon: never
/// re-flooded).
pub(crate) fn underlay_to_tap(demux: Arc<Demux>, taps: Vec<Arc<Tap>>, q: usize, underlay: Arc<Underlay>) {
    let socket = &underlay.recv[q];
    let mut storage = vec![0u8; RECV_BATCH * RECV_MSG];
    let mut meta = [RecvMeta::default(); RECV_BATCH];
    let mut writers: Vec<TapWriter<'_>> =
        taps.iter().zip(demux.networks()).map(|(tap, net)| TapWriter::new(tap, q, &net.counters)).collect();
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
                    writers[index].write(frame);
                }
            }
        }
        writers.iter_mut().for_each(TapWriter::flush);
        // A short batch emptied the socket: wait for more rather than spend a receive call on
        // EAGAIN (poll returns at once if datagrams arrived meanwhile).
        if n < RECV_BATCH && socket.wait_readable().is_err() {
            std::thread::sleep(ERROR_PAUSE);
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
