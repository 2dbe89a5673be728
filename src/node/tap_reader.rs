//! A TAP queue read as plain frames. The virtio-net header and the kernel's offloads stop here:
//! a partial checksum is completed, and a TCP/UDP super-frame (TSO/USO) is handed over as a
//! [`SuperFrame`] that cuts itself into wire-sized segments ([`crate::packet::offload::tso`]). The reader
//! of a queue only routes and batches (the shape of wireguard-go's `tun.Device.Read`).

use std::io;

use super::tap::{Tap, TapQueue};
use crate::packet::offload::tso::{self, Segments};
use crate::packet::offload::vnet::{self, VnetHdr};
use crate::packet::pipeline::HEADROOM;
use crate::state::stats::DropReason;
use crate::wire::frame::Frame;

/// Largest frame a TAP hands over (a 64 KB super-frame).
const MAX_FRAME: usize = 65535;

/// Reads frames from one queue of a TAP into a buffer of its own, allocated once.
pub(crate) struct TapReader<'t> {
    queue: &'t TapQueue,
    /// Each read starts with a virtio-net header.
    vnet_hdr: bool,
    /// [`HEADROOM`] bytes (the virtio-net header lands at their end), then the frame.
    buf: Box<[u8]>,
}

/// What one read gave.
pub(crate) enum Read<'a> {
    /// Nothing is waiting (only once the queue is non-blocking).
    Empty,
    /// A frame at `buf[HEADROOM..HEADROOM + len]`, with room for a tunnel header in front.
    Frame { buf: &'a mut [u8], len: usize },
    /// A super-frame to cut into segments.
    Super(SuperFrame<'a>),
    /// A frame dropped here, for this reason (a runt, or a checksum that cannot be completed).
    Dropped(DropReason),
}

/// A TCP or UDP super-frame from the TAP, with one set of headers for up to 64 KB of payload.
pub(crate) struct SuperFrame<'a> {
    frame: &'a [u8],
    hdr: VnetHdr,
}

impl SuperFrame<'_> {
    /// The frame as the kernel handed it over (headers of the first segment): for routing.
    pub(crate) fn frame(&self) -> &[u8] {
        self.frame
    }

    /// Cuts the super-frame, whose headers are parsed into `view`, into segments, each
    /// preceded by `prefix` (the tunnel header), back to back in `out`: a train of datagrams
    /// ready for one GSO send. Segments are as large as the kernel asked, or smaller so that no
    /// datagram exceeds `max_datagram` bytes.
    pub(crate) fn segment(
        &self,
        view: &Frame,
        prefix: &[u8],
        out: &mut [u8],
        max_datagram: usize,
    ) -> Result<Segments, tso::Error> {
        let mut hdr = self.hdr;
        if prefix.len() + self.segment_len(view) > max_datagram {
            let headers = tso::headers_len(self.frame, view).ok_or(tso::Error::Malformed)?;
            let room = max_datagram.saturating_sub(prefix.len() + headers);
            hdr.gso_size = u16::try_from(room).unwrap_or(u16::MAX).min(hdr.gso_size);
            if hdr.gso_size == 0 {
                return Err(tso::Error::NoRoom);
            }
        }
        tso::segment_parsed(self.frame, view, &hdr, prefix, out)
    }

    /// The length of a full-size segment as the kernel asked for it: headers and `gso_size`.
    pub(crate) fn segment_len(&self, view: &Frame) -> usize {
        tso::headers_len(self.frame, view).unwrap_or(0) + usize::from(self.hdr.gso_size)
    }
}

impl<'t> TapReader<'t> {
    /// A reader of queue `q` of `tap`.
    pub(crate) fn new(tap: &'t Tap, q: usize) -> TapReader<'t> {
        TapReader {
            queue: tap.queue(q),
            vnet_hdr: tap.offloads().vnet_hdr,
            buf: vec![0u8; HEADROOM + MAX_FRAME].into_boxed_slice(),
        }
    }

    /// Makes [`TapReader::read`] return [`Read::Empty`] instead of waiting, so the caller can
    /// tell when the queue is drained (and send what it batched).
    pub(crate) fn set_nonblocking(&self) -> io::Result<()> {
        self.queue.set_nonblocking()
    }

    /// Reads the next frame. `Err` only for a failed read (e.g. the device going away).
    #[inline]
    pub(crate) fn read(&mut self) -> io::Result<Read<'_>> {
        let hlen = if self.vnet_hdr { vnet::LEN } else { 0 };
        let n = loop {
            match self.queue.read(&mut self.buf[HEADROOM - hlen..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Read::Empty),
                Err(e) => return Err(e),
            }
        };
        let Some(len) = n.checked_sub(hlen) else { return Ok(Read::Dropped(DropReason::ShortFrame)) };
        if !self.vnet_hdr {
            return Ok(Read::Frame { buf: &mut self.buf, len });
        }
        let Some(hdr) = VnetHdr::parse(&self.buf[HEADROOM - hlen..HEADROOM]) else {
            return Ok(Read::Dropped(DropReason::ShortFrame));
        };
        if hdr.gso() != vnet::GSO_NONE {
            return Ok(Read::Super(SuperFrame { frame: &self.buf[HEADROOM..HEADROOM + len], hdr }));
        }
        let frame = &mut self.buf[HEADROOM..HEADROOM + len];
        if hdr.flags & vnet::F_NEEDS_CSUM != 0 && tso::complete_checksum(frame, &hdr).is_err() {
            return Ok(Read::Dropped(DropReason::Offload));
        }
        Ok(Read::Frame { buf: &mut self.buf, len })
    }
}
