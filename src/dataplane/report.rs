//! The periodic drop summary: one WARN line per network and per shared socket whose drops rose,
//! with the counts by reason, so bad input is never logged once per packet however much arrives.

use std::sync::Arc;

use tracing::warn;

use super::udp::Underlay;
use super::Dataplane;
use crate::pipeline::Demux;
use crate::stats::{DropReason, Snapshot};

/// Logs what was dropped since the last call, one line per network and per socket that dropped
/// anything: bad input is never logged once per packet, however much of it arrives.
pub struct DropReporter {
    /// Per network: its counters and the TAP's kernel drops at the last report.
    networks: Vec<(Snapshot, u64)>,
    sockets: Vec<SocketDrops>,
}

/// A shared socket's counters and kernel drops at the last report.
struct SocketDrops {
    last: Snapshot,
    kernel: u64,
    demux: Arc<Demux>,
    underlay: Arc<Underlay>,
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

impl DropReporter {
    /// A reporter of `dataplane`'s drops, starting from now.
    pub(crate) fn new(dataplane: &Dataplane) -> DropReporter {
        let mut sockets: Vec<(Arc<Demux>, Arc<Underlay>)> = Vec::new();
        for n in &dataplane.networks {
            if !sockets.iter().any(|(d, _)| Arc::ptr_eq(d, &n.demux)) {
                sockets.push((n.demux.clone(), n.underlay.clone()));
            }
        }
        let networks =
            dataplane.networks.iter().map(|n| (n.net.counters.snapshot(), n.tap_drops())).collect();
        let sockets = sockets
            .into_iter()
            .map(|(d, u)| SocketDrops {
                last: d.counters.snapshot(),
                kernel: u.kernel_drops(),
                demux: d,
                underlay: u,
            })
            .collect();
        DropReporter { networks, sockets }
    }

    pub fn report(&mut self, dataplane: &Dataplane, period: std::time::Duration) {
        let secs = period.as_secs();
        for (n, (last, last_tap)) in dataplane.networks.iter().zip(&mut self.networks) {
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
            let now = s.demux.counters.snapshot();
            let kernel = s.underlay.kernel_drops();
            if let Some(d) =
                summary(now.drops_since(&s.last), "kernel_socket", kernel.saturating_sub(s.kernel))
            {
                let vnis: Vec<u32> = s.demux.networks().iter().map(|n| n.vni).collect();
                warn!(?vnis, "socket dropped in the last {secs} s: {d}");
            }
            s.last = now;
            s.kernel = kernel;
        }
    }
}
