//! The periodic drop summary: one WARN line per network and per shared socket whose drops rose,
//! with the counts by reason, so bad input is never logged once per packet however much arrives.

use std::sync::{Arc, Weak};

use tracing::warn;

use super::group::SocketGroup;
use super::Dataplane;
use crate::packet::pipeline::Network;
use crate::state::stats::{DropReason, Snapshot};

/// Logs what was dropped since the last call, one line per network and per socket that dropped
/// anything: bad input is never logged once per packet, however much of it arrives. Networks
/// and sockets that a reload adds are counted from when the reporter first sees them; those it
/// removes are forgotten (the reporter holds them weakly: it keeps no socket or TAP open).
pub struct DropReporter {
    /// Per network: its counters and the TAP's kernel drops at the last report.
    networks: Vec<(Weak<Network>, Snapshot, u64)>,
    sockets: Vec<SocketDrops>,
}

/// A shared socket's counters and kernel drops at the last report.
struct SocketDrops {
    group: Weak<SocketGroup>,
    last: Snapshot,
    kernel: u64,
}

/// One summary from vxtap's own drop counts (`ours`, as "reason=n ...") and a kernel drop count
/// that rose by `kernel` (shown as `label=n`); None when nothing was dropped.
fn summary(ours: Option<String>, label: &str, kernel: u64) -> Option<String> {
    let kernel = (kernel > 0).then(|| format!("{label}={kernel}"));
    match (ours, kernel) {
        (Some(o), Some(k)) => Some(format!("{o} {k}")),
        (o, k) => o.or(k),
    }
}

/// Whether `weak` points at `strong` (a live `Weak` keeps its allocation, so the address cannot
/// have been reused).
fn same<T>(weak: &Weak<T>, strong: &Arc<T>) -> bool {
    std::ptr::eq(weak.as_ptr(), Arc::as_ptr(strong))
}

impl DropReporter {
    /// A reporter of `dataplane`'s drops, starting from now.
    pub(crate) fn new(dataplane: &Dataplane) -> DropReporter {
        let mut reporter = DropReporter { networks: Vec::new(), sockets: Vec::new() };
        reporter.follow(dataplane);
        reporter
    }

    /// Takes in the networks and sockets running now: new ones from their present counts.
    fn follow(&mut self, dataplane: &Dataplane) {
        let networks = dataplane.networks();
        self.networks.retain(|(w, _, _)| networks.iter().any(|n| same(w, &n.net)));
        self.sockets.retain(|s| networks.iter().any(|n| same(&s.group, &n.group)));
        for n in networks.iter() {
            if !self.networks.iter().any(|(w, _, _)| same(w, &n.net)) {
                self.networks.push((Arc::downgrade(&n.net), n.net.counters.snapshot(), n.tap_drops()));
            }
            if !self.sockets.iter().any(|s| same(&s.group, &n.group)) {
                self.sockets.push(SocketDrops {
                    group: Arc::downgrade(&n.group),
                    last: n.group.counters.snapshot(),
                    kernel: n.underlay.kernel_drops(),
                });
            }
        }
    }

    pub fn report(&mut self, dataplane: &Dataplane, period: std::time::Duration) {
        self.follow(dataplane);
        let secs = period.as_secs();
        for n in dataplane.networks().iter() {
            let Some((_, last, last_tap)) = self.networks.iter_mut().find(|(w, _, _)| same(w, &n.net)) else {
                continue;
            };
            let now = n.net.counters.snapshot();
            let tap = n.tap_drops();
            let d = summary(now.drops_since(last), "kernel_tap", tap.saturating_sub(*last_tap));
            *last_tap = tap;
            if let Some(d) = d {
                let err = match (
                    now.dropped(DropReason::Send) > last.dropped(DropReason::Send),
                    n.net.counters.last_send_error(),
                ) {
                    (true, Some(e)) => format!("; last send error: {e}"),
                    _ => String::new(),
                };
                warn!(dev = n.config.dev, vni = n.net.vni, "dropped in the last {secs} s: {d}{err}");
            }
            *last = now;
        }
        for s in &mut self.sockets {
            let Some(group) = s.group.upgrade() else { continue };
            let now = group.counters.snapshot();
            let kernel = group.underlay.kernel_drops();
            if let Some(d) =
                summary(now.drops_since(&s.last), "kernel_socket", kernel.saturating_sub(s.kernel))
            {
                let vnis: Vec<u32> = group.current().demux.networks().iter().map(|n| n.vni).collect();
                warn!(?vnis, "socket dropped in the last {secs} s: {d}");
            }
            s.last = now;
            s.kernel = kernel;
        }
    }
}
