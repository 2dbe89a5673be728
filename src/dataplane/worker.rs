//! The two packet loops. Each owns its buffers (allocated once) and blocks in its system call;
//! they only route and batch: the per-packet work is in [`crate::pipeline`], the TAP's offloads
//! behind [`TapReader`] and [`TapWriter`], the grouping of datagrams into GSO sends in
//! [`Train`]. Nothing here logs, but for one line when the path to a VTEP is learned to be
//! narrower: every failure is a counter, reported periodically by the drop summary.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use quinn_udp::RecvMeta;

use super::tap::Tap;
use super::tap_reader::{Read, SuperFrame, TapReader};
use super::tap_writer::{TapReplier, TapWriter};
use super::udp::{Sent, Underlay, MAX_GSO_BYTES};
use crate::pipeline::{Demux, Destinations, Encapsulated, Network};
use crate::pmtu::{icmp, Df};
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
    let mut out = Sender { net: &net, underlay: &underlay, tap: TapReplier::new(&tap, q), reply: Vec::new() };
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
                if net.proxy && super::suppress::answer(&net, &out.tap, &mut out.reply, buf, len) {
                    continue;
                }
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

/// Sends a network's datagrams on its underlay and counts what happened; deals with datagrams
/// the path is too narrow for (the cold path: README "Path MTU").
struct Sender<'a> {
    net: &'a Network,
    underlay: &'a Underlay,
    /// Where ICMP "too big" replies for inner senders go.
    tap: TapReplier<'a>,
    /// Room for one such reply, allocated when first needed.
    reply: Vec<u8>,
}

impl Sender<'_> {
    /// An encapsulated frame: joins the train towards its VTEP, or is copied to every flood-list
    /// remote (after the train, to keep the order).
    #[inline]
    fn frame(&mut self, train: &mut Train, datagram: &[u8], e: &Encapsulated) {
        let socket = self.underlay.send.index(e.flow_hash, e.fragment);
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
    /// as few GSO sends as the kernel's limits allow. Segments are cut to fit the narrowest known
    /// path among the destinations, and the inner sender is told about that path.
    fn super_frame(&mut self, frame: &SuperFrame<'_>, out: &mut [u8]) {
        let Some((to, flow_hash)) = self.net.route(frame.frame()) else { return };
        let path_mtus = &self.net.path.path_mtus;
        let narrowest = to.as_slice().iter().filter_map(|d| Some((path_mtus.get(d.ip())?, *d))).min();
        let fragment = self.net.path.df.may_fragment(frame.frame());
        let socket = self.underlay.send.index(flow_hash, fragment);
        for attempt in 0..2 {
            let max_datagram = narrowest.map_or(usize::MAX, |(m, d)| datagram_room(m, d.ip()));
            let segs = match frame.segment(self.net.header().as_bytes(), out, max_datagram) {
                Ok(s) => s,
                Err(_) => {
                    self.net.counters.drop(DropReason::Offload);
                    return;
                }
            };
            if let Some((m, d)) =
                narrowest.filter(|_| self.net.header().len() + frame.segment_len() > max_datagram)
            {
                // Cut smaller than the sender asked: tell it the path too (rate-limited).
                let _ = self.reply_too_big(frame.frame(), d.ip(), m);
            }
            let mut refused = None;
            for &dst in to.as_slice() {
                let destination = self.underlay.peer(dst);
                let t =
                    Transmit { destination, socket, contents: &out[..segs.len], segment_size: segs.stride };
                let sent = self.send_counted(&t);
                if sent.too_big_at == Some(0) && attempt == 0 {
                    refused = Some(dst);
                    break; // nothing of it left: cut again to the path just learned
                }
                if let Some(at) = sent.too_big_at {
                    self.too_big(&t, at);
                }
            }
            let Some(dst) = refused else { return };
            let Some(m) = self.learn_path_mtu(dst.ip()) else {
                self.net.counters.drop(DropReason::TooBig);
                return;
            };
            if narrowest.is_some_and(|(old, _)| old <= m) {
                // The path did not narrow: something else refuses these datagrams.
                (0..segs.count).for_each(|_| self.net.counters.drop(DropReason::TooBig));
                return;
            }
        }
    }

    /// Sends what the train holds, if anything.
    #[inline]
    fn flush(&mut self, train: &mut Train) {
        if let Some(t) = train.flush() {
            self.send(t);
        }
    }

    #[inline]
    fn send(&mut self, t: Transmit<'_>) {
        let sent = self.send_counted(&t);
        if let Some(at) = sent.too_big_at {
            self.too_big(&t, at);
        }
    }

    /// Sends `t` and counts what went out or failed (not what was refused as too big).
    #[inline]
    fn send_counted(&self, t: &Transmit<'_>) -> Sent {
        let socket = self.underlay.send.get(t.socket);
        let sent = socket.send_train(t.destination, t.contents, t.segment_size, self.underlay.gso_segments());
        let c = &self.net.counters;
        c.tx_syscalls(sent.syscalls as u64);
        if sent.datagrams > 0 {
            c.tx_many(sent.datagrams, sent.bytes);
        }
        if let Some(e) = &sent.error {
            (0..sent.failed).for_each(|_| c.send_failed(e.raw_os_error().unwrap_or(0)));
        }
        sent
    }

    /// The kernel refused the datagrams of `t` from byte `at` on as over the path MTU (it had
    /// learned a narrower path from an ICMP error). Learn that path, then deal with each
    /// datagram as the kernel does for a bridged tunnel: one that fits now goes again; one whose
    /// packet may be fragmented goes through a fragmenting socket; any other is dropped and its
    /// sender told with an ICMP "too big" (rate-limited) — or, when the path is too narrow for
    /// the inner protocol's minimum MTU, fragmented on the underlay (RFC 2473 §7.1) unless
    /// `--df set` forbids it.
    #[cold]
    fn too_big(&mut self, t: &Transmit<'_>, at: usize) {
        let dst = t.destination.ip();
        let path_mtu = self.learn_path_mtu(dst);
        let hlen = self.net.header().len();
        let df = self.net.path.df;
        let fragmenting = self.underlay.send.fragmenting();
        for datagram in t.contents[at..].chunks(t.segment_size.max(1)) {
            let Some(frame) = datagram.get(hlen..) else { continue };
            let fits = path_mtu.is_some_and(|m| datagram.len() <= datagram_room(m, dst));
            let fragment = !fits && fragmenting && df.may_fragment(frame);
            if fits || fragment {
                let socket = if fragment { self.underlay.send.fragmenting_twin(t.socket) } else { t.socket };
                if self.resend(t, socket, datagram) {
                    continue;
                }
            }
            let reply = path_mtu.map(|m| self.reply_too_big(frame, dst, m));
            if reply == Some(Err(icmp::NoReply::BelowMinimum)) && fragmenting && df != Df::Set {
                let twin = self.underlay.send.fragmenting_twin(t.socket);
                if self.resend(t, twin, datagram) {
                    continue;
                }
            }
            self.net.counters.drop(DropReason::TooBig);
        }
    }

    /// Sends one datagram of `t` again, alone, from send socket `socket`; true if it went.
    #[cold]
    fn resend(&self, t: &Transmit<'_>, socket: usize, datagram: &[u8]) -> bool {
        let again = Transmit { socket, contents: datagram, segment_size: datagram.len(), ..*t };
        let sent = self.send_counted(&again);
        sent.too_big_at.is_none() && sent.failed == 0
    }

    /// The path MTU towards `dst` as the kernel knows it now (it refused a send as too big, so
    /// what vxtap had recorded, if anything, is out of date), recorded for the super-frames and
    /// logged when it changed.
    #[cold]
    fn learn_path_mtu(&self, dst: IpAddr) -> Option<u32> {
        let m = self.underlay.path_mtu(dst)?;
        let table = &self.net.path.path_mtus;
        if table.get(dst) != Some(m) {
            table.set(dst, Some(m));
            tracing::info!(vtep = %dst, path_mtu = m, "the path to a VTEP is narrower than the frames sent to it");
        }
        Some(m)
    }

    /// Writes into the TAP an ICMP "too big" reply to the sender of `frame`, announcing the
    /// largest inner packet that fits a path of `path_mtu` bytes towards `dst`, if the kernel
    /// would answer this frame; the rate limit may hold it back (counted). Err says why no
    /// reply fits this frame (not IP, fragmentable, below the protocol's minimum MTU...).
    #[cold]
    fn reply_too_big(&mut self, frame: &[u8], dst: IpAddr, path_mtu: u32) -> Result<(), icmp::NoReply> {
        let (_, l2) = crate::wire::ethernet::payload_type(frame).ok_or(icmp::NoReply::NotIp)?;
        let mtu = self.net.inner_mtu(dst, path_mtu, l2);
        self.reply.resize(icmp::MAX_REPLY_LEN, 0);
        let n = icmp::too_big_reply(frame, mtu, &mut self.reply)?;
        if !self.net.too_big_replies.allow(self.net.fdb.now_ms()) {
            self.net.counters.icmp_ratelimited();
        } else if self.tap.write(&self.reply[..n]) {
            self.net.counters.icmp_too_big();
        } else {
            self.net.counters.drop(DropReason::TapWrite);
        }
        Ok(())
    }
}

/// The largest UDP payload (tunnel header and frame) that fits a path of `path_mtu` bytes
/// towards `dst`: the outer IP and UDP headers come off.
fn datagram_room(path_mtu: u32, dst: IpAddr) -> usize {
    let ip_udp = if dst.to_canonical().is_ipv4() { 20 + 8 } else { 40 + 8 };
    (path_mtu as usize).saturating_sub(ip_udp)
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
        for (m, msg) in meta[..n].iter().zip(storage.chunks_mut(RECV_MSG)) {
            let data = &mut msg[..m.len.min(RECV_MSG)];
            let stride = if m.stride == 0 { data.len().max(1) } else { m.stride };
            for datagram in data.chunks_mut(stride) {
                let Some((index, frame)) = demux.decapsulate(datagram, m.addr.ip()) else { continue };
                // The frame is the datagram's tail; --mss-clamp may rewrite it in place.
                let at = datagram.len() - frame.len();
                let net = &demux.networks()[index];
                if net.path.mss_clamp.is_some() {
                    net.clamp_mss(&mut datagram[at..], &[SocketAddr::new(m.addr.ip(), net.peer_port)]);
                }
                writers[index].write(&datagram[at..]);
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
