//! The dataplane as the source of `/metrics`: each network's `vxtap stats` counters (the same
//! function the control socket answers with), its FDB by kind and its peers, read at scrape time
//! on the control thread.

use std::collections::HashSet;

use super::{Dataplane, NetworkHandle};
use crate::control::metrics::{FdbKinds, NetworkSample, Source};

impl Source for Dataplane {
    fn networks(&self) -> Vec<NetworkSample> {
        self.networks().iter().map(|n| n.sample()).collect()
    }
}

impl NetworkHandle {
    /// The network's values for the metrics exporter.
    fn sample(&self) -> NetworkSample {
        let fdb = &self.net.fdb;
        let flood = fdb.flood_list();
        // The learned count is never below the real one (a learn reserves before it inserts).
        let learned = fdb.learned_len().min(fdb.len());
        let mut peers: HashSet<_> = flood.iter().copied().collect();
        peers.extend(fdb.snapshot().into_iter().map(|e| e.dst));
        NetworkSample {
            dev: self.config.dev.clone(),
            vni: self.config.vni,
            proto: self.config.proto,
            stats: self.stats(),
            fdb: FdbKinds {
                learned: learned as u64,
                statics: (fdb.len() - learned) as u64,
                flood: flood.len() as u64,
            },
            peers: peers.len() as u64,
        }
    }
}
