//! A new configuration applied to the running networks (`vxtap reload`, SIGHUP): the
//! [`crate::config::reload::Plan`] carried out on the devices, sockets and threads.
//!
//! The order keeps the networks that do not change undisturbed, and frees what the new ones
//! need before they take it:
//! 1. networks that go (removed, or restarted) leave their sockets: a kept socket's threads take
//!    the set without them; a socket closed or rebuilt has its threads stopped and joined;
//! 2. their TAPs close (a TAP vxtap created disappears; a persistent one it reused stays);
//! 3. changes in place: flood list and configured static entries (the difference only, so what
//!    was learned or added with `vxtap fdb add` stays), FDB settings, packet policies;
//! 4. networks added or restarted are opened: on a kept socket they join the others, on a new
//!    or rebuilt one its sockets are bound and its threads started;
//! 5. each kept socket whose networks or receive settings changed takes its new set.
//!
//! A step that fails for one network (its TAP cannot be created, its port is taken) leaves that
//! network out, reported as failed; the rest of the reload stands. The next reload tries again.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::group::{GroupEntry, Members};
use super::network::{fdb_config, policies};
use super::{open_network, raise_fd_limit, start_group, Dataplane, NetworkHandle};
use crate::config::reload::{self, Action, Change, SocketAction};
use crate::config::NetworkConfig;
use crate::control::{ReloadAction, ReloadRow};
use crate::packet::pmtu::PathMtus;

/// How long a restarted network waits for its old TAP to be released by every thread.
const TAP_RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

impl Dataplane {
    /// Replaces the running networks with `configs`, which must have passed
    /// [`crate::config::validate`], and says what happened to each network. Logs one line per
    /// network that changed.
    pub fn reload(&self, configs: &[NetworkConfig]) -> Vec<ReloadRow> {
        let mut state = self.state();
        let running: Vec<Arc<NetworkHandle>> = self.networks().iter().cloned().collect();
        let running_configs: Vec<NetworkConfig> = running.iter().map(|h| h.config.clone()).collect();
        let built: BTreeMap<SocketAddr, reload::SocketShape> =
            state.groups.iter().map(|(b, g)| (*b, g.shape.clone())).collect();
        let plan = reload::plan(&running_configs, &built, configs);
        let new: HashMap<&str, &NetworkConfig> = configs.iter().map(|c| (c.dev.as_str(), c)).collect();
        let mut errors: HashMap<String, String> = HashMap::new();
        if !plan.is_noop() {
            raise_fd_limit(configs);
        }

        // 1. The networks that go leave their sockets.
        let leaving: BTreeSet<&str> = plan
            .networks
            .iter()
            .filter(|n| matches!(n.action, Action::Remove | Action::Restart(_)))
            .map(|n| n.dev.as_str())
            .collect();
        for (bind, action) in &plan.sockets {
            match action {
                SocketAction::Close | SocketAction::Rebuild(_) => {
                    if let Some(entry) = state.groups.remove(bind) {
                        entry.close();
                        match action {
                            SocketAction::Rebuild(why) => {
                                info!(%bind, why = why.join(", "), "reload: rebuilding the socket")
                            }
                            _ => info!(%bind, "reload: socket closed, no network is left on it"),
                        }
                    }
                }
                SocketAction::Keep => {
                    let on_it = |h: &&Arc<NetworkHandle>| h.config.bind_addr() == *bind;
                    if running.iter().filter(on_it).any(|h| leaving.contains(h.config.dev.as_str())) {
                        let entry = &state.groups[bind];
                        let staying =
                            running.iter().filter(on_it).filter(|h| !leaving.contains(h.config.dev.as_str()));
                        let members = Members::build(
                            entry.shape.proto,
                            staying.map(|h| (&h.config, &h.net, &h.tap)),
                            &entry.group.counters,
                        );
                        if let Err(e) = entry.group.publish(members) {
                            warn!("reload: {e}");
                        }
                    }
                }
                SocketAction::Open => {}
            }
        }

        // 2. Their TAPs close.
        let mut handles: HashMap<String, Arc<NetworkHandle>> =
            running.iter().map(|h| (h.config.dev.clone(), h.clone())).collect();
        self.networks.store(Arc::new(
            running.iter().filter(|h| !leaving.contains(h.config.dev.as_str())).cloned().collect(),
        ));
        drop(running);
        let mut closing = Vec::new();
        for dev in &leaving {
            if let Some(h) = handles.remove(*dev) {
                closing.push((dev.to_string(), h.tap.clone()));
            }
        }
        // Every thread has let go of them; whatever still holds a TAP gets the time to let go.
        let deadline = Instant::now() + TAP_RELEASE_TIMEOUT;
        for (dev, tap) in closing {
            while Arc::strong_count(&tap) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            if Arc::strong_count(&tap) > 1 {
                errors.insert(dev.clone(), format!("TAP {dev} is still in use; it was not closed"));
            }
        }

        // 3. Changes in place.
        let mut receive_changed: BTreeSet<SocketAddr> = BTreeSet::new();
        for np in &plan.networks {
            let (Some(h), Some(c)) = (handles.get(&np.dev).cloned(), new.get(np.dev.as_str())) else {
                continue;
            };
            if let Action::Change(changes) = &np.action {
                if let Err(e) = apply(&h, changes, c) {
                    errors.insert(np.dev.clone(), e);
                }
                if changes.iter().any(Change::touches_socket) {
                    receive_changed.insert(c.bind_addr());
                }
            }
            // Also a configuration that differs only in how it says the same thing.
            if h.config != **c {
                let updated = Arc::new(h.with_config((*c).clone()));
                handles.insert(np.dev.clone(), updated);
            }
        }

        // 4. Networks added or restarted are opened, socket by socket.
        for (bind, members) in reload::by_socket(configs) {
            let coming: Vec<&NetworkConfig> = members
                .iter()
                .copied()
                .filter(|c| {
                    matches!(plan.network(&c.dev).map(|n| &n.action), Some(Action::Add | Action::Restart(_)))
                        && !errors.contains_key(&c.dev)
                })
                .collect();
            match (plan.sockets.get(&bind), state.groups.get(&bind)) {
                (Some(SocketAction::Keep), Some(entry)) => {
                    for c in &coming {
                        match open_network(c, &state.clock, &entry.group.path_mtus) {
                            Ok(o) => {
                                let h = NetworkHandle::new(o.config, o.net, o.tap, entry.group.clone());
                                handles.insert(c.dev.clone(), Arc::new(h));
                            }
                            Err(e) => {
                                errors.insert(c.dev.clone(), format!("{e:#}"));
                            }
                        }
                    }
                    // 5. The kept socket takes its new set.
                    if !coming.is_empty() || receive_changed.contains(&bind) {
                        let on_it = members.iter().filter_map(|c| handles.get(&c.dev));
                        let set = Members::build(
                            entry.shape.proto,
                            on_it.map(|h| (&h.config, &h.net, &h.tap)),
                            &entry.group.counters,
                        );
                        if let Err(e) = entry.group.publish(set) {
                            warn!("reload: {e}");
                        }
                    }
                }
                _ => {
                    let path_mtus = Arc::new(PathMtus::default());
                    let mut opened = Vec::new();
                    for c in &coming {
                        match open_network(c, &state.clock, &path_mtus) {
                            Ok(o) => opened.push(o),
                            Err(e) => {
                                errors.insert(c.dev.clone(), format!("{e:#}"));
                            }
                        }
                    }
                    if opened.is_empty() {
                        continue;
                    }
                    let devs: Vec<String> = opened.iter().map(|o| o.config.dev.clone()).collect();
                    match start_group(bind, path_mtus, opened, self.wg.as_ref()) {
                        Ok((entry, started)) => {
                            state.groups.insert(bind, entry);
                            handles.extend(started.into_iter().map(|h| (h.config.dev.clone(), h)));
                        }
                        Err(e) => {
                            for dev in devs {
                                errors.insert(dev, format!("socket {bind}: {e:#}"));
                            }
                        }
                    }
                }
            }
        }
        // Sockets that were to serve networks that all failed to open.
        let unused: Vec<SocketAddr> = state
            .groups
            .keys()
            .filter(|b| !configs.iter().any(|c| c.bind_addr() == **b && handles.contains_key(&c.dev)))
            .copied()
            .collect();
        for bind in unused {
            if let Some(entry) = state.groups.remove(&bind) {
                GroupEntry::close(entry);
            }
        }

        self.networks.store(Arc::new(configs.iter().filter_map(|c| handles.get(&c.dev).cloned()).collect()));
        self.follow_cluster();
        drop(state);
        plan.networks
            .iter()
            .map(|np| {
                let error = errors.remove(&np.dev);
                let action = match (&np.action, &error) {
                    (_, Some(_)) => ReloadAction::Failed,
                    (Action::Unchanged, None) => ReloadAction::Unchanged,
                    (Action::Change(_), None) => ReloadAction::Changed,
                    (Action::Restart(_), None) => ReloadAction::Restarted,
                    (Action::Add, None) => ReloadAction::Added,
                    (Action::Remove, None) => ReloadAction::Removed,
                };
                let details = np.action.details();
                match (&error, &np.action) {
                    (Some(e), _) => {
                        warn!(
                            dev = np.dev,
                            vni = np.vni,
                            planned = np.action.as_str(),
                            ?details,
                            "reload failed: {e}"
                        )
                    }
                    (None, Action::Unchanged) => {}
                    (None, _) => info!(dev = np.dev, vni = np.vni, ?details, "reload: {}", action.as_str()),
                }
                ReloadRow { dev: np.dev.clone(), vni: np.vni, action, details, error }
            })
            .collect()
    }
}

/// Applies the in-place `changes` to a running network, whose configuration becomes `c`. The
/// socket's part (allowlist, receive policy) is the caller's.
fn apply(h: &NetworkHandle, changes: &[Change], c: &NetworkConfig) -> Result<(), String> {
    let fdb = &h.net.fdb;
    let mut failed = Vec::new();
    for change in changes {
        match change {
            Change::Remotes { added, removed } => {
                for r in removed {
                    fdb.remove_flood(r);
                }
                for a in added {
                    fdb.add_flood(*a);
                }
            }
            Change::Statics { added, removed } => {
                for (mac, dst) in removed {
                    fdb.remove_static(mac, *dst);
                }
                for (mac, dst) in added {
                    if let Err(e) = fdb.add_static(*mac, *dst) {
                        failed.push(format!("static entry {mac}: {e}"));
                    }
                }
            }
            Change::Learning(_) | Change::Ageing { .. } | Change::MaxFdb { .. } => {
                fdb.set_config(&fdb_config(c))
            }
            Change::Df { .. } | Change::MssClamp { .. } | Change::Tos { .. } => {
                h.net.set_policies(policies(c))
            }
            Change::AllowFrom { .. } | Change::StrictReserved(_) => {}
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}
