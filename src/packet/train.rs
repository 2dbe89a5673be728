//! Grouping outgoing datagrams into UDP GSO trains, without I/O.
//!
//! One GSO send carries datagrams of one size (the last may be shorter) to one destination from
//! one socket. The reader of a TAP queue encapsulates frames one by one; [`Train`] collects those
//! that can leave together and hands back a [`Transmit`] — what to send, in the manner of
//! quinn-udp's `Transmit` — whenever the next datagram cannot join. Nothing waits for more
//! traffic: the caller flushes whenever its queue is drained.

use std::net::SocketAddr;

/// One send: `contents` is one datagram, or datagrams of `segment_size` bytes back to back
/// (the last may be shorter) for one GSO send, to `destination` from send socket `socket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    pub destination: SocketAddr,
    /// Index of the send socket (which fixes the outer source port).
    pub socket: usize,
    pub contents: &'a [u8],
    pub segment_size: usize,
    /// The outer DS byte (DSCP and ECN).
    pub tos: u8,
}

impl Transmit<'_> {
    /// Datagrams in this send.
    pub fn datagrams(&self) -> usize {
        self.contents.len().div_ceil(self.segment_size.max(1))
    }
}

/// Datagrams waiting to leave together: same destination, same socket, same outer DS byte, all of
/// one size but the last (a shorter one closes the train).
pub struct Train {
    buf: Box<[u8]>,
    len: usize,
    stride: usize,
    count: usize,
    max_count: usize,
    destination: Option<SocketAddr>,
    socket: usize,
    tos: u8,
}

impl Train {
    /// A train of at most `max_count` datagrams and `max_bytes` bytes. With `max_count` 1 (no
    /// GSO) it holds nothing: every datagram is sent as is.
    pub fn new(max_count: usize, max_bytes: usize) -> Train {
        let buf = if max_count > 1 { vec![0u8; max_bytes].into_boxed_slice() } else { Box::default() };
        Train { buf, len: 0, stride: 0, count: 0, max_count, destination: None, socket: 0, tos: 0 }
    }

    /// Whether a datagram of `len` bytes can wait in a train at all; if not, the caller sends it
    /// alone (after flushing, to keep the order) without copying it.
    #[inline]
    pub fn holds(&self, len: usize) -> bool {
        self.max_count > 1 && len <= self.buf.len()
    }

    /// Whether a datagram of `len` bytes for `destination` from `socket` with outer DS byte `tos`
    /// joins the waiting datagrams. When it does not, [`Train::flush`] must come before
    /// [`Train::push`].
    #[inline]
    pub fn joins(&self, len: usize, destination: SocketAddr, socket: usize, tos: u8) -> bool {
        self.count == 0
            || (self.destination == Some(destination)
                && self.socket == socket
                && self.tos == tos
                && len <= self.stride
                && self.len == self.count * self.stride
                && self.count < self.max_count
                && self.len + len <= self.buf.len())
    }

    /// Appends a datagram. The caller has checked [`Train::holds`] and [`Train::joins`]
    /// (flushing first when it did not join).
    #[inline]
    pub fn push(&mut self, datagram: &[u8], destination: SocketAddr, socket: usize, tos: u8) {
        debug_assert!(self.holds(datagram.len()) && self.joins(datagram.len(), destination, socket, tos));
        if self.count == 0 {
            self.destination = Some(destination);
            self.socket = socket;
            self.tos = tos;
            self.stride = datagram.len();
        }
        self.buf[self.len..self.len + datagram.len()].copy_from_slice(datagram);
        self.len += datagram.len();
        self.count += 1;
    }

    /// What the train holds, as one send; None when empty. Leaves the train empty.
    #[inline]
    pub fn flush(&mut self) -> Option<Transmit<'_>> {
        if self.count == 0 {
            return None;
        }
        let t = Transmit {
            destination: self.destination.take()?,
            socket: self.socket,
            contents: &self.buf[..self.len],
            segment_size: self.stride,
            tos: self.tos,
        };
        self.len = 0;
        self.count = 0;
        Some(t)
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(last: u8) -> SocketAddr {
        SocketAddr::from(([198, 18, 0, last], 4789))
    }

    /// Offers each datagram (length, destination, socket; DS byte 0) as the worker does; returns
    /// every send as (destination, socket, segment size, datagram count, bytes).
    fn run(
        train: &mut Train,
        datagrams: &[(usize, u8, usize)],
    ) -> Vec<(SocketAddr, usize, usize, usize, usize)> {
        let with_tos: Vec<_> = datagrams.iter().map(|&(l, d, s)| (l, d, s, 0)).collect();
        run_tos(train, &with_tos).into_iter().map(|(d, s, z, n, b, _)| (d, s, z, n, b)).collect()
    }

    /// As `run`, with a DS byte per datagram, returned per send too.
    #[allow(clippy::type_complexity)]
    fn run_tos(
        train: &mut Train,
        datagrams: &[(usize, u8, usize, u8)],
    ) -> Vec<(SocketAddr, usize, usize, usize, usize, u8)> {
        let mut sends = Vec::new();
        let mut record = |t: Transmit<'_>| {
            sends.push((t.destination, t.socket, t.segment_size, t.datagrams(), t.contents.len(), t.tos))
        };
        for &(len, dst, socket, tos) in datagrams {
            let d = vec![dst; len];
            if !train.joins(len, to(dst), socket, tos) {
                if let Some(t) = train.flush() {
                    record(t);
                }
            }
            if train.holds(len) {
                train.push(&d, to(dst), socket, tos);
            } else {
                if let Some(t) = train.flush() {
                    record(t);
                }
                record(Transmit { destination: to(dst), socket, contents: &d, segment_size: len, tos });
            }
        }
        if let Some(t) = train.flush() {
            record(t);
        }
        sends
    }

    #[test]
    fn same_size_same_destination_and_socket_leave_together() {
        let mut t = Train::new(64, 65000);
        let sends = run(&mut t, &[(100, 2, 0), (100, 2, 0), (100, 2, 0)]);
        assert_eq!(sends, vec![(to(2), 0, 100, 3, 300)]);
        assert!(t.is_empty());
    }

    #[test]
    fn a_shorter_datagram_closes_the_train_a_longer_one_starts_another() {
        let mut t = Train::new(64, 65000);
        let sends = run(&mut t, &[(100, 2, 0), (100, 2, 0), (60, 2, 0), (100, 2, 0), (120, 2, 0)]);
        assert_eq!(sends, vec![(to(2), 0, 100, 3, 260), (to(2), 0, 100, 1, 100), (to(2), 0, 120, 1, 120)]);
    }

    #[test]
    fn another_destination_or_socket_starts_another_train() {
        let mut t = Train::new(64, 65000);
        let sends = run(&mut t, &[(100, 2, 0), (100, 3, 0), (100, 3, 1), (100, 3, 1)]);
        assert_eq!(sends, vec![(to(2), 0, 100, 1, 100), (to(3), 0, 100, 1, 100), (to(3), 1, 100, 2, 200)]);
    }

    #[test]
    fn another_ds_byte_starts_another_train() {
        let mut t = Train::new(64, 65000);
        let sends = run_tos(&mut t, &[(100, 2, 0, 0), (100, 2, 0, 0), (100, 2, 0, 0xb8), (100, 2, 0, 0xb8)]);
        assert_eq!(sends, vec![(to(2), 0, 100, 2, 200, 0), (to(2), 0, 100, 2, 200, 0xb8)]);
    }

    #[test]
    fn count_and_byte_limits_cut_trains() {
        let mut t = Train::new(3, 65000);
        let sends = run(&mut t, &[(10, 2, 0); 7]);
        assert_eq!(sends.iter().map(|s| s.3).collect::<Vec<_>>(), vec![3, 3, 1]);
        let mut t = Train::new(64, 250);
        let sends = run(&mut t, &[(100, 2, 0); 5]);
        assert_eq!(sends.iter().map(|s| s.3).collect::<Vec<_>>(), vec![2, 2, 1], "250 bytes hold two");
    }

    #[test]
    fn without_gso_or_when_too_big_datagrams_go_alone_in_order() {
        let mut t = Train::new(1, 65000);
        assert!(!t.holds(10));
        assert_eq!(run(&mut t, &[(10, 2, 0), (10, 2, 0)]).len(), 2);
        let mut t = Train::new(64, 150);
        let sends = run(&mut t, &[(100, 2, 0), (200, 2, 0), (100, 2, 0)]);
        assert_eq!(sends, vec![(to(2), 0, 100, 1, 100), (to(2), 0, 200, 1, 200), (to(2), 0, 100, 1, 100)]);
    }

    #[test]
    fn flush_of_an_empty_train_is_none() {
        assert!(Train::new(64, 1000).flush().is_none());
        assert_eq!(
            Transmit { destination: to(2), socket: 0, contents: &[0; 250], segment_size: 100, tos: 0 }
                .datagrams(),
            3
        );
    }
}
