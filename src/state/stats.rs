//! Packet and drop counters. Every drop has a reason, and every reason has a counter.
//!
//! Counters are relaxed atomics: each is written by the thread that owns that direction, and the
//! receive side, the transmit side and the drops sit on separate cache lines so the two
//! directions do not slow each other down through false sharing.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering::Relaxed};

use crate::wire;

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// Why a frame or datagram was not delivered.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum DropReason {
            $(#[doc = $doc] $variant,)*
        }

        impl DropReason {
            /// Every reason, in the order `vxtap stats` prints them.
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];

            /// The counter's name without the `drop_` prefix.
            pub const fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }
        }
    };
}

drop_reasons! {
    NotAllowed => "not_allowed", "Source address is neither a configured VTEP nor in --allow-from.";
    Truncated => "truncated", "Datagram shorter than the tunnel header.";
    ShortFrame => "short_frame", "Inner frame (or a frame read from the TAP) shorter than an Ethernet header.";
    BadHeader => "bad_header", "VXLAN header without the I flag.";
    ReservedBits => "reserved_bits", "VXLAN reserved bits set while strict mode is on.";
    GeneveVersion => "geneve_version", "Geneve version other than 0.";
    GeneveOptLen => "geneve_opt_len", "Geneve Opt Len or an option length runs past the packet.";
    GeneveOam => "geneve_oam", "Geneve control (O bit) packet: never delivered as a frame.";
    GeneveCriticalOption => "geneve_critical_option", "Geneve critical option this endpoint does not understand.";
    GeneveProtocol => "geneve_protocol", "Geneve Protocol Type other than Ethernet (0x6558).";
    UnknownVni => "unknown_vni", "VNI of no network on this socket.";
    LocalMacLoop => "local_mac_loop", "Frame from the underlay carrying this TAP's own MAC as source: a loop.";
    StaticMismatch => "static_mismatch", "Source MAC is a static entry behind another VTEP (spoofed or misconfigured).";
    NoDestination => "no_destination", "Unknown unicast, broadcast or multicast with an empty flood list.";
    TooBig => "too_big", "Frame that does not fit the path MTU towards its VTEP and may not be fragmented (see tx_icmp_too_big).";
    Send => "send", "Underlay send failed (other than too big).";
    TapRead => "tap_read", "Reading the TAP failed.";
    TapWrite => "tap_write", "Writing the decapsulated frame to the TAP failed.";
    Offload => "offload", "TAP super-frame that could not be segmented (malformed or unsupported virtio-net header).";
    Recv => "recv", "Receiving from the underlay socket failed.";
    EcnNotEct => "ecn_not_ect", "Congestion-marked (CE) datagram whose inner packet is not ECN-capable (RFC 6040 §4.2).";
}

impl DropReason {
    /// The counter for a datagram the receive policy rejected.
    pub fn from_wire(e: &wire::Error) -> DropReason {
        match e {
            wire::Error::Truncated => DropReason::Truncated,
            wire::Error::ShortFrame => DropReason::ShortFrame,
            wire::Error::VxlanNoIFlag => DropReason::BadHeader,
            wire::Error::VxlanReservedBits => DropReason::ReservedBits,
            wire::Error::GeneveVersion(_) => DropReason::GeneveVersion,
            wire::Error::GeneveOptionsOverrun => DropReason::GeneveOptLen,
            wire::Error::GeneveOam => DropReason::GeneveOam,
            wire::Error::GeneveCriticalOption { .. } => DropReason::GeneveCriticalOption,
            wire::Error::GeneveProtocol(_) => DropReason::GeneveProtocol,
            // Emit-side errors never come out of decapsulation; count them as a bad header.
            wire::Error::GeneveBadOption | wire::Error::VniOutOfRange(_) | wire::Error::NoRoom => {
                DropReason::BadHeader
            }
        }
    }
}

const N_REASONS: usize = DropReason::ALL.len();

#[derive(Default)]
#[repr(align(64))]
struct Direction {
    packets: AtomicU64,
    bytes: AtomicU64,
    /// Super-frames: coalesced for a TAP write (rx), or read from the TAP and segmented (tx).
    offloaded: AtomicU64,
    /// System calls that moved packets (TAP reads and writes, socket sends and receives).
    syscalls: AtomicU64,
}

#[repr(align(64))]
struct Drops([AtomicU64; N_REASONS]);

/// What vxtap itself wrote back into the TAP (cold path): ICMP "too big" replies, and those the
/// rate limit held back; ARP replies and neighbour advertisements of `--proxy`.
#[derive(Default)]
struct Replies {
    icmp_too_big: AtomicU64,
    icmp_ratelimited: AtomicU64,
    arp_suppressed: AtomicU64,
    nd_suppressed: AtomicU64,
}

/// Counters of one network or one socket.
pub struct Counters {
    rx: Direction,
    tx: Direction,
    drops: Drops,
    replies: Replies,
    /// errno of the latest failed underlay send, 0 if none: reported with the drop summary.
    last_send_errno: AtomicI32,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            rx: Direction::default(),
            tx: Direction::default(),
            drops: Drops(std::array::from_fn(|_| AtomicU64::new(0))),
            replies: Replies::default(),
            last_send_errno: AtomicI32::new(0),
        }
    }
}

impl Counters {
    /// A frame decapsulated and written to the TAP.
    #[inline]
    pub fn rx(&self, bytes: usize) {
        self.rx.packets.fetch_add(1, Relaxed);
        self.rx.bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// Frames decapsulated and written to the TAP in one super-frame.
    #[inline]
    pub fn rx_coalesced(&self, frames: usize, bytes: usize) {
        self.rx.packets.fetch_add(frames as u64, Relaxed);
        self.rx.bytes.fetch_add(bytes as u64, Relaxed);
        self.rx.offloaded.fetch_add(1, Relaxed);
    }

    /// A datagram sent to the underlay (each flood copy counts).
    #[inline]
    pub fn tx(&self, bytes: usize) {
        self.tx_many(1, bytes);
    }

    /// Datagrams sent to the underlay in one GSO send.
    #[inline]
    pub fn tx_many(&self, datagrams: usize, bytes: usize) {
        self.tx.packets.fetch_add(datagrams as u64, Relaxed);
        self.tx.bytes.fetch_add(bytes as u64, Relaxed);
    }

    /// A super-frame read from the TAP, to be segmented.
    #[inline]
    pub fn tx_segmented(&self) {
        self.tx.offloaded.fetch_add(1, Relaxed);
    }

    /// System calls of the receive path (socket receives, TAP writes).
    #[inline]
    pub fn rx_syscalls(&self, n: u64) {
        self.rx.syscalls.fetch_add(n, Relaxed);
    }

    /// System calls of the transmit path (TAP reads, socket sends).
    #[inline]
    pub fn tx_syscalls(&self, n: u64) {
        self.tx.syscalls.fetch_add(n, Relaxed);
    }

    /// An ICMP "too big" reply written to the TAP for the inner sender.
    pub fn icmp_too_big(&self) {
        self.replies.icmp_too_big.fetch_add(1, Relaxed);
    }

    /// An ICMP "too big" reply the rate limit held back.
    pub fn icmp_ratelimited(&self) {
        self.replies.icmp_ratelimited.fetch_add(1, Relaxed);
    }

    /// An ARP request answered from the neighbour table instead of crossing the tunnel.
    pub fn arp_suppressed(&self) {
        self.replies.arp_suppressed.fetch_add(1, Relaxed);
    }

    /// A neighbour solicitation answered from the neighbour table instead of crossing the tunnel.
    pub fn nd_suppressed(&self) {
        self.replies.nd_suppressed.fetch_add(1, Relaxed);
    }

    #[inline]
    pub fn drop(&self, reason: DropReason) {
        self.drops.0[reason as usize].fetch_add(1, Relaxed);
    }

    /// A send failed (other than too big): counted, and its error kept for the next summary.
    #[inline]
    pub fn send_failed(&self, errno: i32) {
        self.drop(DropReason::Send);
        self.last_send_errno.store(errno, Relaxed);
    }

    /// The latest send error, if any send ever failed.
    pub fn last_send_error(&self) -> Option<std::io::Error> {
        match self.last_send_errno.load(Relaxed) {
            0 => None,
            e => Some(std::io::Error::from_raw_os_error(e)),
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            rx_packets: self.rx.packets.load(Relaxed),
            rx_bytes: self.rx.bytes.load(Relaxed),
            tx_packets: self.tx.packets.load(Relaxed),
            tx_bytes: self.tx.bytes.load(Relaxed),
            rx_coalesced: self.rx.offloaded.load(Relaxed),
            tx_segmented: self.tx.offloaded.load(Relaxed),
            rx_syscalls: self.rx.syscalls.load(Relaxed),
            tx_syscalls: self.tx.syscalls.load(Relaxed),
            tx_icmp_too_big: self.replies.icmp_too_big.load(Relaxed),
            tx_icmp_ratelimited: self.replies.icmp_ratelimited.load(Relaxed),
            drops: std::array::from_fn(|i| self.drops.0[i].load(Relaxed)),
            arp_suppressed: self.replies.arp_suppressed.load(Relaxed),
            nd_suppressed: self.replies.nd_suppressed.load(Relaxed),
        }
    }
}

/// Plain copy of [`Counters`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_coalesced: u64,
    pub tx_segmented: u64,
    pub rx_syscalls: u64,
    pub tx_syscalls: u64,
    pub tx_icmp_too_big: u64,
    pub tx_icmp_ratelimited: u64,
    pub drops: [u64; N_REASONS],
    pub arp_suppressed: u64,
    pub nd_suppressed: u64,
}

impl Snapshot {
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Field-wise sum: a network's view adds the counters of the socket it shares.
    pub fn merged(mut self, other: &Snapshot) -> Snapshot {
        self.rx_packets += other.rx_packets;
        self.rx_bytes += other.rx_bytes;
        self.tx_packets += other.tx_packets;
        self.tx_bytes += other.tx_bytes;
        self.rx_coalesced += other.rx_coalesced;
        self.tx_segmented += other.tx_segmented;
        self.rx_syscalls += other.rx_syscalls;
        self.tx_syscalls += other.tx_syscalls;
        self.tx_icmp_too_big += other.tx_icmp_too_big;
        self.tx_icmp_ratelimited += other.tx_icmp_ratelimited;
        for (a, b) in self.drops.iter_mut().zip(other.drops) {
            *a += b;
        }
        self.arp_suppressed += other.arp_suppressed;
        self.nd_suppressed += other.nd_suppressed;
        self
    }

    /// What was dropped since `earlier`, as `reason=count` pairs, or `None` if nothing was.
    pub fn drops_since(&self, earlier: &Snapshot) -> Option<String> {
        let parts: Vec<String> = DropReason::ALL
            .iter()
            .filter_map(|r| {
                let n = self.dropped(*r).saturating_sub(earlier.dropped(*r));
                (n > 0).then(|| format!("{}={n}", r.name()))
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    }

    /// `(name, value)` pairs as `vxtap stats` shows them: traffic first, then `drop_<reason>`.
    pub fn fields(&self) -> Vec<(String, u64)> {
        let mut out = vec![
            ("rx_packets".to_string(), self.rx_packets),
            ("rx_bytes".to_string(), self.rx_bytes),
            ("tx_packets".to_string(), self.tx_packets),
            ("tx_bytes".to_string(), self.tx_bytes),
            ("rx_coalesced".to_string(), self.rx_coalesced),
            ("tx_segmented".to_string(), self.tx_segmented),
            ("rx_syscalls".to_string(), self.rx_syscalls),
            ("tx_syscalls".to_string(), self.tx_syscalls),
            ("tx_icmp_too_big".to_string(), self.tx_icmp_too_big),
            ("tx_icmp_ratelimited".to_string(), self.tx_icmp_ratelimited),
        ];
        out.extend(DropReason::ALL.iter().map(|r| (format!("drop_{}", r.name()), self.dropped(*r))));
        out.extend([
            ("arp_suppressed".to_string(), self.arp_suppressed),
            ("nd_suppressed".to_string(), self.nd_suppressed),
        ]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason_and_merges() {
        let c = Counters::default();
        c.rx(100);
        c.tx(50);
        c.tx(50);
        c.drop(DropReason::UnknownVni);
        c.drop(DropReason::UnknownVni);
        let s = c.snapshot();
        assert_eq!((s.rx_packets, s.rx_bytes, s.tx_packets, s.tx_bytes), (1, 100, 2, 100));
        assert_eq!(s.dropped(DropReason::UnknownVni), 2);
        assert_eq!(s.dropped(DropReason::Truncated), 0);
        let m = s.merged(&s);
        assert_eq!((m.rx_packets, m.dropped(DropReason::UnknownVni)), (2, 4));
        c.rx_coalesced(40, 58_000);
        c.tx_many(44, 64_000);
        c.tx_segmented();
        c.rx_syscalls(3);
        let s = c.snapshot();
        assert_eq!((s.rx_packets, s.rx_coalesced, s.tx_packets, s.tx_segmented), (41, 1, 46, 1));
        assert_eq!((s.tx_bytes, s.rx_syscalls, s.tx_syscalls), (64_100, 3, 0));
    }

    #[test]
    fn names_are_unique_and_every_wire_error_maps_to_its_own_reason() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
        let errs = [
            wire::Error::Truncated,
            wire::Error::ShortFrame,
            wire::Error::VxlanNoIFlag,
            wire::Error::VxlanReservedBits,
            wire::Error::GeneveVersion(1),
            wire::Error::GeneveOptionsOverrun,
            wire::Error::GeneveOam,
            wire::Error::GeneveCriticalOption { class: 1, kind: 0x80 },
            wire::Error::GeneveProtocol(0x800),
        ];
        let mut reasons: Vec<_> = errs.iter().map(|e| DropReason::from_wire(e).name()).collect();
        reasons.sort();
        reasons.dedup();
        assert_eq!(reasons.len(), errs.len());
    }

    #[test]
    fn drop_summary_lists_only_what_rose() {
        let c = Counters::default();
        let before = c.snapshot();
        assert_eq!(c.snapshot().drops_since(&before), None);
        c.drop(DropReason::NotAllowed);
        c.drop(DropReason::NotAllowed);
        c.send_failed(libc::ENETUNREACH);
        assert_eq!(c.snapshot().drops_since(&before).as_deref(), Some("not_allowed=2 send=1"));
        assert_eq!(c.last_send_error().map(|e| e.raw_os_error()), Some(Some(libc::ENETUNREACH)));
    }

    #[test]
    fn fields_name_every_counter() {
        let f = Counters::default().snapshot().fields();
        assert_eq!(f.len(), 12 + DropReason::ALL.len());
        assert!(f.iter().any(|(k, _)| k == "arp_suppressed") && f.iter().any(|(k, _)| k == "nd_suppressed"));
        assert!(f.iter().any(|(k, _)| k == "tx_icmp_too_big"));
        assert!(f.iter().any(|(k, _)| k == "drop_geneve_critical_option"));
    }
}
