//! Decapsulated frames written to a TAP queue. With the virtio-net header on, consecutive TCP
//! segments of one flow (and UDP datagrams, for a TAP that took USO) are merged into one
//! super-frame for one write ([`crate::packet::offload::gro`]): the caller hands over plain frames and
//! says when a batch ends (the shape of wireguard-go's `tun.Device.Write`).

use super::tap::{Tap, TapQueue};
use crate::packet::offload::gro::{Coalescer, Offer};
use crate::packet::offload::vnet;
use crate::state::stats::{Counters, DropReason};

/// Writes frames to one queue of a TAP, counting on the network's counters.
pub(crate) struct TapWriter<'t> {
    queue: &'t TapQueue,
    counters: &'t Counters,
    vnet_hdr: bool,
    /// UDP datagrams merge only for a TAP that takes UDP super-frames back (USO).
    uso: bool,
    /// Created on the first frame: a receive thread serves every network of its socket, and
    /// most of them may never send it anything.
    gro: Option<Coalescer>,
    /// Inner bytes of the frames `gro` holds.
    pending_bytes: usize,
}

/// The header written before a frame that was not merged: no offload, nothing to finish.
const PLAIN: [u8; vnet::LEN] = [0; vnet::LEN];

impl<'t> TapWriter<'t> {
    /// A writer to queue `q` of `tap`, counting on `counters`.
    pub(crate) fn new(tap: &'t Tap, q: usize, counters: &'t Counters) -> TapWriter<'t> {
        let o = tap.offloads();
        TapWriter {
            queue: tap.queue(q),
            counters,
            vnet_hdr: o.vnet_hdr,
            uso: o.uso,
            gro: None,
            pending_bytes: 0,
        }
    }

    /// Writes `frame`, or holds it to merge with the segments that follow it.
    #[inline]
    pub(crate) fn write(&mut self, frame: &[u8]) {
        if !self.vnet_hdr {
            self.counters.rx_syscalls(1);
            self.account(self.queue.write(frame).is_ok(), 1, frame.len(), false);
            return;
        }
        loop {
            let uso = self.uso;
            let gro = self.gro.get_or_insert_with(|| {
                let mut c = Coalescer::new();
                c.set_udp(uso);
                c
            });
            match gro.offer(frame) {
                Offer::Merged | Offer::Held => {
                    self.pending_bytes += frame.len();
                    return;
                }
                Offer::Flush => self.flush(),
                Offer::Pass => {
                    self.flush();
                    self.counters.rx_syscalls(1);
                    self.account(self.queue.write2(&PLAIN, frame).is_ok(), 1, frame.len(), false);
                    return;
                }
            }
        }
    }

    /// Writes the frames held for merging, if any: at the end of every receive batch.
    #[inline]
    pub(crate) fn flush(&mut self) {
        let Some(gro) = self.gro.as_mut() else { return };
        let segments = gro.segments();
        let Some(frame) = gro.take() else { return };
        let bytes = std::mem::take(&mut self.pending_bytes);
        self.counters.rx_syscalls(1);
        let ok = self.queue.write(frame).is_ok();
        self.account(ok, segments, bytes, segments > 1);
    }

    fn account(&self, ok: bool, frames: usize, bytes: usize, merged: bool) {
        match (ok, merged) {
            (true, true) => self.counters.rx_coalesced(frames, bytes),
            (true, false) => self.counters.rx(bytes),
            (false, _) => (0..frames).for_each(|_| self.counters.drop(DropReason::TapWrite)),
        }
    }
}

/// Writes frames vxtap makes itself (ICMP replies to an inner sender) into a TAP queue, from the
/// thread that reads that queue: one frame per write, never merged.
pub(crate) struct TapReplier<'t> {
    queue: &'t TapQueue,
    vnet_hdr: bool,
}

impl<'t> TapReplier<'t> {
    pub(crate) fn new(tap: &'t Tap, q: usize) -> TapReplier<'t> {
        TapReplier { queue: tap.queue(q), vnet_hdr: tap.offloads().vnet_hdr }
    }

    /// Writes `frame`; false if the TAP refused it.
    pub(crate) fn write(&self, frame: &[u8]) -> bool {
        if self.vnet_hdr {
            self.queue.write2(&PLAIN, frame).is_ok()
        } else {
            self.queue.write(frame).is_ok()
        }
    }
}
