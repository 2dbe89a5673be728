//! The two packet loops. Each owns its buffers (allocated once) and blocks in its system call;
//! they only route and batch: the per-packet work is in [`crate::packet::pipeline`], the TAP's offloads
//! behind [`TapReader`] and [`TapWriter`], the grouping of datagrams into GSO sends in
//! [`Train`]. Nothing here logs, but for one line when the path to a VTEP is learned to be
//! narrower: every failure is a counter, reported periodically by the drop summary.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result};

use quinn_udp::RecvMeta;

use super::group::{Members, SocketGroup};
use super::sys;
use super::tap::Tap;
use super::tap_reader::{Read, SuperFrame, TapReader};
use super::tap_writer::{TapReplier, TapWriter};
use super::udp::{Sent, UdpIo, Underlay, MAX_GSO_BYTES};
use super::wg::{Count, Outgoing, TxBuffers, WgDevice};
use crate::packet::dsfield;
use crate::packet::pipeline::{Demux, Destinations, Encapsulated, Network};
use crate::packet::pmtu::{self, icmp, Recut, Refused, TooBig};
use crate::packet::train::{Train, Transmit};
use crate::state::stats::DropReason;
use crate::wire::frame::Frame;

/// Room for the segments of one super-frame: 64 KB of payload cut at an MSS as small as 88
/// bytes, each segment with up to 398 bytes of headers, still fits.
const SEGMENT_BUF: usize = 512 << 10;
/// Messages per receive system call.
const RECV_BATCH: usize = 32;
/// Bytes per received message: a whole GRO train (at most 64 KiB).
const RECV_MSG: usize = 64 << 10;
/// Back-off after a TAP read error, which may repeat at once (e.g. a device being removed).
const ERROR_PAUSE: Duration = Duration::from_millis(10);

/// The TAP-to-underlay side of one queue of a network: read a frame, encapsulate it in place (or
/// cut a super-frame into a train of datagrams), send to its VTEP or the flood list. Reads do not
/// block: datagrams for one VTEP and flow collect in a [`Train`] that leaves in one GSO send once
/// the queue is drained (or the train is full), so small packets share system calls too; nothing
/// waits for more traffic.
struct TxSide<'a> {
    net: &'a Network,
    reader: TapReader<'a>,
    segments: Vec<u8>,
    train: Train,
    out: Sender<'a>,
}

/// What draining a side did.
#[derive(PartialEq, Eq)]
enum Drained {
    /// Nothing more is waiting.
    Empty,
    /// The budget ran out with more waiting.
    More,
    /// The descriptor failed (counted); the caller pauses.
    Failed,
}

impl<'a> TxSide<'a> {
    fn new(
        net: &'a Network,
        tap: &'a Tap,
        q: usize,
        underlay: &'a Underlay,
        wg: Option<&'a WgDevice>,
    ) -> TxSide<'a> {
        let reader = TapReader::new(tap, q);
        // A blocking queue still works, one frame per readiness, but loses the batching.
        let _ = reader.set_nonblocking();
        let segments = if tap.offloads().tso { vec![0u8; SEGMENT_BUF] } else { Vec::new() };
        let train = Train::new(underlay.gso_segments(), MAX_GSO_BYTES);
        let wg = wg.map(|d| (d, TxBuffers::new()));
        let out = Sender { net, underlay, tap: TapReplier::new(tap, q), reply: Vec::new(), wg };
        TxSide { net, reader, segments, train, out }
    }

    /// Reads and sends up to `budget` frames; what the train holds leaves before this returns.
    fn drain(&mut self, budget: usize) -> Drained {
        let net = self.net;
        for _ in 0..budget {
            match self.reader.read() {
                Ok(Read::Empty) => {
                    self.out.flush(&mut self.train);
                    return Drained::Empty;
                }
                Ok(Read::Frame { buf, len }) => {
                    net.counters.tx_syscalls(1);
                    if net.proxy && super::suppress::answer(net, &self.out.tap, &mut self.out.reply, buf, len)
                    {
                        continue;
                    }
                    if let Some(e) = net.encapsulate(buf, len) {
                        self.out.frame(&mut self.train, &buf[e.datagram.clone()], &e);
                    }
                }
                Ok(Read::Super(frame)) => {
                    net.counters.tx_syscalls(1);
                    self.out.flush(&mut self.train);
                    net.counters.tx_segmented();
                    self.out.super_frame(&frame, &mut self.segments);
                }
                Ok(Read::Dropped(reason)) => {
                    net.counters.tx_syscalls(1);
                    net.counters.drop(reason);
                }
                Err(_) => {
                    // Counted and reported by the periodic drop summary.
                    net.counters.drop(DropReason::TapRead);
                    self.out.flush(&mut self.train);
                    return Drained::Failed;
                }
            }
        }
        self.out.flush(&mut self.train);
        Drained::More
    }
}

/// Sends a network's datagrams on its underlay and counts what happened; deals with datagrams
/// the path is too narrow for (the cold path: docs/design.md "Path MTU").
struct Sender<'a> {
    net: &'a Network,
    underlay: &'a Underlay,
    /// Where ICMP "too big" replies for inner senders go.
    tap: TapReplier<'a>,
    /// Room for one such reply, allocated when first needed.
    reply: Vec<u8>,
    /// In WireGuard mode, the device every datagram goes through and this thread's buffers.
    wg: Option<(&'a WgDevice, TxBuffers)>,
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
                if !train.joins(datagram.len(), to, socket, e.tos) {
                    self.flush(train);
                }
                if train.holds(datagram.len()) {
                    train.push(datagram, to, socket, e.tos);
                } else {
                    self.flush(train);
                    self.send(Transmit {
                        destination: to,
                        socket,
                        contents: datagram,
                        segment_size: datagram.len(),
                        tos: e.tos,
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
                        tos: e.tos,
                    });
                }
            }
        }
    }

    /// Cuts a super-frame into a train of datagrams in `out` and sends it to each destination, in
    /// as few GSO sends as the kernel's limits allow. Segments are cut to fit the narrowest known
    /// path among the destinations, and the inner sender is told about that path.
    fn super_frame(&mut self, frame: &SuperFrame<'_>, out: &mut [u8]) {
        let Some(d) = self.net.decide(frame.frame()) else { return };
        let path_mtus = &self.net.path_mtus;
        let mut narrowest = d.to.as_slice().iter().filter_map(|v| Some((path_mtus.get(v.ip())?, *v))).min();
        let socket = self.underlay.send.index(d.flow_hash, d.fragment);
        let header = self.net.header();
        for attempt in 0..2 {
            let max_datagram = narrowest.map_or(usize::MAX, |(m, v)| pmtu::datagram_room(m, is_v6(v.ip())));
            let segs = match frame.segment(&d.view, header.as_bytes(), out, max_datagram) {
                Ok(s) => s,
                Err(_) => {
                    self.net.counters.drop(DropReason::Offload);
                    return;
                }
            };
            if let Some((m, dst)) =
                narrowest.filter(|_| header.len() + frame.segment_len(&d.view) > max_datagram)
            {
                // Cut smaller than the sender asked: tell it the path too (rate-limited).
                let mtu = self.net.inner_mtu(dst.ip(), m, d.view.l2_len());
                let _ = self.reply_too_big(frame.frame(), &d.view, mtu);
            }
            let mut refused = None;
            for &dst in d.to.as_slice() {
                let destination = self.underlay.peer(dst);
                let t = Transmit {
                    destination,
                    socket,
                    contents: &out[..segs.len],
                    segment_size: segs.stride,
                    tos: d.tos,
                };
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
            match pmtu::recut(narrowest.map(|(m, _)| m), self.learn_path_mtu(dst.ip())) {
                // Narrower than every known path (else DropAll): the new narrowest.
                Recut::Again { path_mtu } => narrowest = Some((path_mtu, dst)),
                Recut::DropAll => {
                    // The path did not narrow: something else refuses these datagrams.
                    (0..segs.count).for_each(|_| self.net.counters.drop(DropReason::TooBig));
                    return;
                }
                Recut::Drop => {
                    self.net.counters.drop(DropReason::TooBig);
                    return;
                }
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
    fn send_counted(&mut self, t: &Transmit<'_>) -> Sent {
        let sent = match &mut self.wg {
            Some((wg, bufs)) => send_wg(wg, bufs, self.underlay, t),
            None => {
                let socket = self.underlay.send.get(t.socket);
                socket.send_train(
                    t.destination,
                    t.contents,
                    t.segment_size,
                    self.underlay.gso_segments(),
                    t.tos,
                )
            }
        };
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
    /// learned a narrower path from an ICMP error). Learn that path, then carry out for each
    /// datagram what [`Refused`] decides (docs/design.md "Path MTU"): send it again, from the
    /// fragmenting socket or not, or drop it with an ICMP "too big" to its sender
    /// (rate-limited); a resend that does not go falls back on what comes next.
    #[cold]
    fn too_big(&mut self, t: &Transmit<'_>, at: usize) {
        let dst = t.destination.ip();
        let path_mtu = self.learn_path_mtu(dst);
        let hlen = self.net.header().len();
        let df = self.net.policies().df;
        let fragmenting = self.underlay.send.fragmenting();
        for datagram in t.contents[at..].chunks(t.segment_size.max(1)) {
            let refused = Refused::new(datagram, hlen, path_mtu, is_v6(dst), df, fragmenting);
            let mut action = refused.decide();
            loop {
                let socket = match action {
                    TooBig::Resend => t.socket,
                    TooBig::ResendFragmenting | TooBig::FragmentBelowMinimum => {
                        self.underlay.send.fragmenting_twin(t.socket)
                    }
                    TooBig::ReplyTooBig { mtu } => {
                        if let Some((frame, view)) = refused.frame() {
                            let _ = self.reply_too_big(frame, view, mtu);
                        }
                        self.net.counters.drop(DropReason::TooBig);
                        break;
                    }
                    TooBig::Drop => {
                        self.net.counters.drop(DropReason::TooBig);
                        break;
                    }
                };
                if self.resend(t, socket, datagram) {
                    break;
                }
                action = refused.after_failed(action);
            }
        }
    }

    /// Sends one datagram of `t` again, alone, from send socket `socket`; true if it went.
    #[cold]
    fn resend(&mut self, t: &Transmit<'_>, socket: usize, datagram: &[u8]) -> bool {
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
        let table = &self.net.path_mtus;
        if table.get(dst) != Some(m) {
            table.set(dst, Some(m));
            tracing::info!(vtep = %dst, path_mtu = m, "the path to a VTEP is narrower than the frames sent to it");
        }
        Some(m)
    }

    /// Writes into the TAP an ICMP "too big" reply to the sender of `frame` (its headers parsed
    /// into `view`), announcing `mtu` (the largest inner IP packet that fits the path), if the
    /// kernel would answer this frame; the rate limit may hold it back (counted). Err says why
    /// no reply fits this frame (not IP, fragmentable, below the protocol's minimum MTU...).
    #[cold]
    fn reply_too_big(&mut self, frame: &[u8], view: &Frame, mtu: u32) -> Result<(), icmp::NoReply> {
        self.reply.resize(icmp::MAX_REPLY_LEN, 0);
        let n = icmp::too_big_reply(frame, view, mtu, &mut self.reply)?;
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

/// WireGuard mode: the datagrams of `t` through the WireGuard device, wrapped and encrypted, in
/// GSO sends of same-size messages, never from the network's own sockets: nothing leaves in
/// clear. A datagram waiting for a handshake (queued by boringtun) or dropped by the device
/// counts as not sent; the device counts why.
fn send_wg(wg: &WgDevice, bufs: &mut TxBuffers, underlay: &Underlay, t: &Transmit<'_>) -> Sent {
    let fragmenting = underlay.send.fragmenting() && t.socket % 2 == 1;
    // The send socket's slot stands for the flow hash: one source port per slot, as the plain
    // underlay's pool gives.
    let src_port = 49152 | ((t.socket / 2) as u16 & 0x3fff);
    let o = Outgoing {
        vtep: t.destination.ip().to_canonical(),
        dst_port: t.destination.port(),
        src_port,
        tos: t.tos,
        df: !fragmenting,
    };
    let (datagrams, bytes) = wg.send_train(bufs, t.contents, t.segment_size, &o);
    Sent { datagrams, bytes, syscalls: 1, ..Sent::default() }
}

/// Whether the underlay towards `dst` is IPv6 (a v4-mapped address is IPv4).
fn is_v6(dst: IpAddr) -> bool {
    !dst.to_canonical().is_ipv4()
}

/// The underlay-to-TAP side of one receive socket: receive a batch of messages, check each
/// datagram, demultiplex by VNI, learn, and hand the frames to the TAPs' writers, which merge
/// those that continue one TCP flow. Frames from the underlay only ever go to a TAP (split
/// horizon: never re-flooded).
struct RxSide<'a> {
    demux: &'a Demux,
    socket: &'a UdpIo,
    /// The thread's receive buffers, kept from one set of networks to the next.
    storage: &'a mut [u8],
    meta: [RecvMeta; RECV_BATCH],
    writers: Vec<TapWriter<'a>>,
    /// WireGuard mode: datagrams arriving in clear are dropped and counted here.
    cleartext: Option<&'a WgDevice>,
}

impl<'a> RxSide<'a> {
    /// Receives on socket `s` of `underlay` into `storage` ([`RECV_BATCH`] messages of
    /// [`RECV_MSG`] bytes) and writes to queue `q` of each TAP.
    fn new(
        demux: &'a Demux,
        taps: &'a [Arc<Tap>],
        q: usize,
        underlay: &'a Underlay,
        s: usize,
        storage: &'a mut [u8],
    ) -> RxSide<'a> {
        let writers = taps
            .iter()
            .zip(demux.networks())
            .map(|(tap, net)| TapWriter::new(tap, q, &net.counters))
            .collect();
        RxSide {
            demux,
            socket: &underlay.recv[s],
            storage,
            meta: [RecvMeta::default(); RECV_BATCH],
            writers,
            cleartext: None,
        }
    }

    /// Receives and delivers up to `budget` batches.
    fn drain(&mut self, budget: usize) -> Drained {
        for _ in 0..budget {
            let received = {
                let mut chunks = self.storage.chunks_mut(RECV_MSG);
                let mut bufs: [IoSliceMut<'_>; RECV_BATCH] =
                    std::array::from_fn(|_| IoSliceMut::new(chunks.next().expect("RECV_BATCH chunks")));
                self.socket.recv(&mut bufs, &mut self.meta)
            };
            let n = match received {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Drained::Empty,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    // ICMP errors queued on the socket surface here; they are not fatal.
                    self.demux.counters.drop(DropReason::Recv);
                    continue;
                }
            };
            self.demux.counters.rx_syscalls(1);
            self.deliver(n);
            // A short batch emptied the socket: wait for more rather than spend a receive call
            // on EAGAIN (poll returns at once if datagrams arrived meanwhile).
            if n < RECV_BATCH {
                return Drained::Empty;
            }
        }
        Drained::More
    }

    fn deliver(&mut self, n: usize) {
        if let Some(wg) = self.cleartext {
            // Over WireGuard, nothing is accepted in clear.
            for m in &self.meta[..n] {
                let stride = if m.stride == 0 { m.len.max(1) } else { m.stride };
                (0..m.len.div_ceil(stride)).for_each(|_| wg.counters.add(Count::DropCleartext));
            }
            return;
        }
        let demux = self.demux;
        // One clock read for the batch's learning, not one per datagram.
        let now = demux.now_ms();
        for (m, msg) in self.meta[..n].iter().zip(self.storage.chunks_mut(RECV_MSG)) {
            let data = &mut msg[..m.len.min(RECV_MSG)];
            let stride = if m.stride == 0 { data.len().max(1) } else { m.stride };
            let outer_ce = m.ecn == Some(quinn_udp::EcnCodepoint::Ce);
            for datagram in data.chunks_mut(stride) {
                let Some((index, frame)) = demux.decapsulate_at(datagram, m.addr.ip(), now) else { continue };
                // The frame is the datagram's tail; ECN and --mss-clamp may rewrite it in place.
                let at = datagram.len() - frame.len();
                let net = &demux.networks()[index];
                let clamp = net.policies().mss_clamp;
                if outer_ce || clamp.is_some() {
                    // One parse for both (decapsulation let no runt through).
                    let frame = &mut datagram[at..];
                    let Some(view) = Frame::parse(frame) else { continue };
                    if outer_ce && dsfield::decap(dsfield::ECN_CE, frame, &view) == dsfield::Decap::Drop {
                        net.counters.drop(DropReason::EcnNotEct);
                        continue;
                    }
                    if let Some(clamp) = clamp {
                        // The CE mark left the view true: only the DS field changed.
                        let vtep = SocketAddr::new(m.addr.ip(), net.peer_port);
                        net.clamp_mss(clamp, frame, &view, &[vtep]);
                    }
                }
                self.writers[index].write(&datagram[at..]);
            }
        }
        self.writers.iter_mut().for_each(TapWriter::flush);
    }
}

/// TAP frames read per turn, and receive batches, before the other descriptors get theirs.
const TX_BUDGET: usize = 256;
const RX_BUDGET: usize = 8;

/// Starts the threads of `group`: one per queue for both directions ([`serve_queue`]), one more
/// per multicast group socket ([`serve_receive`]).
pub(super) fn spawn_threads(group: &Arc<SocketGroup>) -> Result<Vec<JoinHandle<()>>> {
    let port = group.bind.port();
    (0..group.underlay.recv.len())
        .map(|q| {
            let group = group.clone();
            if q < group.underlay.queues() {
                spawn(format!("q{q}-{port}"), move || serve_queue(group, q))
            } else {
                spawn(format!("group{q}-{port}"), move || serve_receive(group, q))
            }
        })
        .collect()
}

fn spawn(name: String, f: impl FnOnce() + Send + 'static) -> Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name.clone()).spawn(f).with_context(|| format!("starting thread {name}"))
}

/// Queue `q` of a socket group, both directions in one thread: the TAP queue `q` of every
/// network on the socket and receive socket `q`, waited on together. A reply the inner stack
/// queues on the TAP while this thread writes a frame to it (the kernel's flow steering puts it
/// on the queue the request came in on) is read and sent by this same thread, without waking
/// another one — on these VMs a wake-up across CPUs costs tens of microseconds. With CPU
/// pinning (the default), the thread stays on the CPUs of its queue, the TAP steers a frame to
/// the queue of the CPU it is sent on, and the socket gets the datagrams received there: a
/// round trip through the tunnel stays on the CPU it started on, as the kernel's own VXLAN
/// does.
///
/// The networks on the socket change with a reload (`group`): the thread serves one set of them
/// at a time and takes the next between two poll turns, keeping its receive buffers.
fn serve_queue(group: Arc<SocketGroup>, q: usize) {
    let underlay = &*group.underlay;
    if underlay.cpu_pinning() {
        // The CPUs whose frames the TAP's steering program puts on queue q (CPU id modulo the
        // queue count), and the socket the kernel picks for datagrams received there.
        let mine: Vec<usize> =
            sys::allowed_cpus().into_iter().filter(|c| c % underlay.queues() == q).collect();
        if let Some(&first) = mine.first() {
            let _ = sys::pin_thread(&mine);
            let _ = sys::set_incoming_cpu(underlay.recv[q].socket.as_raw_fd(), first);
        }
    }
    let mut storage = vec![0u8; RECV_BATCH * RECV_MSG];
    while let Some((generation, members)) = group.enter(q) {
        serve_queue_members(&group, &members, generation, q, &mut storage);
    }
}

/// [`serve_queue`] for one set of networks, until the set changes. Everything it holds (each
/// network's reader and sender, the writers) is flushed at the end of every turn, so dropping
/// it loses nothing.
fn serve_queue_members(
    group: &SocketGroup,
    members: &Members,
    generation: u64,
    q: usize,
    storage: &mut [u8],
) {
    let (underlay, taps) = (&*group.underlay, &members.taps);
    let mut tx: Vec<TxSide<'_>> = taps
        .iter()
        .zip(members.demux.networks())
        .filter(|(tap, _)| q < tap.queues().len())
        .map(|(tap, net)| TxSide::new(net, tap, q, underlay, group.wg.as_deref()))
        .collect();
    let mut rx = RxSide::new(&members.demux, taps, q, underlay, q, storage);
    rx.cleartext = group.wg.as_deref();
    let mut fds: Vec<RawFd> =
        taps.iter().filter(|t| q < t.queues().len()).map(|t| t.queue(q).as_raw_fd()).collect();
    let (socket, wake) = (fds.len(), fds.len() + 1);
    fds.push(underlay.recv[q].socket.as_raw_fd());
    fds.push(group.wake_fd(q));
    let mut ready = vec![false; fds.len()];
    while !group.changed(generation) {
        if sys::wait_any(&fds, &mut ready).is_err() {
            std::thread::sleep(ERROR_PAUSE);
            continue;
        }
        if ready[wake] {
            group.woken(q);
        }
        let mut failed = false;
        for (side, _) in tx.iter_mut().zip(&ready).filter(|(_, r)| **r) {
            failed |= side.drain(TX_BUDGET) == Drained::Failed;
        }
        if ready[socket] {
            rx.drain(RX_BUDGET);
        }
        if failed {
            // A failing TAP (being removed, say) would make poll return at once, forever.
            std::thread::sleep(ERROR_PAUSE);
        }
    }
}

/// A receive-only thread, for a multicast group's socket `s` (datagrams to the group go to queue
/// `s` of the TAPs, wrapped to their queue count).
fn serve_receive(group: Arc<SocketGroup>, s: usize) {
    let mut storage = vec![0u8; RECV_BATCH * RECV_MSG];
    while let Some((generation, members)) = group.enter(s) {
        let mut rx = RxSide::new(&members.demux, &members.taps, s, &group.underlay, s, &mut storage);
        rx.cleartext = group.wg.as_deref();
        let fds = [group.underlay.recv[s].socket.as_raw_fd(), group.wake_fd(s)];
        let mut ready = [false; 2];
        while !group.changed(generation) {
            if sys::wait_any(&fds, &mut ready).is_err() {
                std::thread::sleep(ERROR_PAUSE);
                continue;
            }
            if ready[1] {
                group.woken(s);
            }
            if ready[0] {
                rx.drain(RX_BUDGET);
            }
        }
    }
}
