//! The running VTEP as the binary serves it: one control socket per network, which follow the
//! networks as a reload adds and removes them, and live reload itself (`vxtap reload` on any of
//! the control sockets, or SIGHUP): re-read `--config`, refuse it whole if it does not parse or
//! validate, else hand it to `Dataplane::reload` and tell systemd around it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use anyhow::Result;
use tracing::{info, warn};

use crate::ops;
use vxtap::config;
use vxtap::config::wireguard::WireGuardConfig;
use vxtap::control::{ReloadAction, Reloaded, Reply, Request};
use vxtap::node::Dataplane;

/// Why a VTEP started from flags refuses to reload.
pub const NOTHING_TO_RELOAD: &str =
    "vxtap was started from command-line flags, without --config: there is no \
     file to reload from (restart it with new flags instead)";

/// The control sockets and the reload of a running dataplane.
pub struct Service {
    dataplane: Arc<Dataplane>,
    /// The file the networks came from (`--config`); None when they came from flags.
    config: Option<PathBuf>,
    /// `--user`: who the control sockets belong to.
    owner: Option<(u32, u32)>,
    /// Where `/metrics` is served, and whether `--metrics` said so (then the file has no say).
    metrics: Option<SocketAddr>,
    metrics_from_flag: bool,
    /// The file's `[etcd]` table at start: a reload that changes it says it waits for a restart.
    etcd_at_start: Option<vxtap::config::etcd::EtcdConfig>,
    /// The file's `[wireguard]` table at start: a reload that changes it is refused.
    wireguard_at_start: Option<WireGuardConfig>,
    /// The WireGuard settings in force (file and flags): applied to every reloaded network.
    wireguard: Option<vxtap::config::wireguard::Settings>,
    /// The control socket of each network, by TAP name.
    sockets: Mutex<BTreeMap<String, Served>>,
}

/// A bound control socket and the task that serves it.
struct Served {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

/// The WireGuard side of a [`Service`]: what a reload compares and applies.
#[derive(Default)]
pub struct WireGuardPlan {
    /// The file's `[wireguard]` table at start: a reload that changes it is refused.
    pub table_at_start: Option<WireGuardConfig>,
    /// The settings in force (file and flags), applied to every reloaded network.
    pub settings: Option<vxtap::config::wireguard::Settings>,
}

impl Service {
    /// Binds a control socket for every network and serves them (on the caller's tokio
    /// runtime). With `owner` (`--user`), the sockets are given to that user.
    pub fn start(
        dataplane: Arc<Dataplane>,
        config: Option<PathBuf>,
        etcd_at_start: Option<vxtap::config::etcd::EtcdConfig>,
        wireguard: WireGuardPlan,
        owner: Option<(u32, u32)>,
        metrics: Option<SocketAddr>,
        metrics_from_flag: bool,
    ) -> Result<Arc<Service>> {
        let service = Arc::new(Service {
            dataplane,
            etcd_at_start,
            wireguard_at_start: wireguard.table_at_start,
            wireguard: wireguard.settings,
            config,
            owner,
            metrics,
            metrics_from_flag,
            sockets: Mutex::new(BTreeMap::new()),
        });
        if let Some((dev, e)) = service.follow_networks().into_iter().next() {
            service.close();
            return Err(e.context(format!("network {dev}")));
        }
        Ok(service)
    }

    /// Binds the control sockets of networks that have none, and closes those of networks that
    /// are gone (or whose socket moved). Returns the sockets that could not be bound.
    fn follow_networks(self: &Arc<Self>) -> Vec<(String, anyhow::Error)> {
        let networks = self.dataplane.networks();
        let mut sockets = self.sockets();
        let wanted: BTreeMap<&str, PathBuf> =
            networks.iter().map(|n| (n.config.dev.as_str(), n.config.control_path())).collect();
        let stale: Vec<String> = sockets
            .iter()
            .filter(|(dev, s)| wanted.get(dev.as_str()) != Some(&s.path))
            .map(|(dev, _)| dev.clone())
            .collect();
        for dev in stale {
            if let Some(s) = sockets.remove(&dev) {
                s.task.abort();
                remove(&s.path);
            }
        }
        let mut failed = Vec::new();
        for (dev, path) in wanted {
            if sockets.contains_key(dev) {
                continue;
            }
            match vxtap::node::control_server::bind_for(&path, self.owner) {
                Ok(listener) => {
                    let (me, name) = (Arc::downgrade(self), dev.to_string());
                    let task = tokio::spawn(vxtap::node::control_server::serve(listener, move |req| {
                        answer(&me, &name, req)
                    }));
                    sockets.insert(dev.to_string(), Served { path, task });
                }
                Err(e) => failed.push((dev.to_string(), e)),
            }
        }
        failed
    }

    /// Re-reads the configuration file and applies it: the networks that did not change are not
    /// disturbed. A file that does not parse or validate is refused whole (Err, with the reason)
    /// and nothing changes. Tells systemd (RELOADING=1, then READY=1).
    pub fn reload(self: &Arc<Self>) -> Result<Reloaded, String> {
        ops::notify_reloading();
        let result = self.reload_file();
        let devs: Vec<String> = self.dataplane.networks().iter().map(|n| n.config.dev.clone()).collect();
        ops::notify_ready(&format!("forwarding on {}", devs.join(", ")));
        result
    }

    fn reload_file(self: &Arc<Self>) -> Result<Reloaded, String> {
        let path = self.config.as_ref().ok_or_else(|| NOTHING_TO_RELOAD.to_string())?;
        let mut settings = config::load(path)?;
        if settings.wireguard != self.wireguard_at_start {
            // Refused rather than noted: networks the file now says to encrypt must not go on
            // in clear, nor the other way round, until a restart applies it.
            return Err(format!(
                "{}: the [wireguard] table changed: WireGuard is set up at start only, so the reload is \
                 refused and nothing changes; restart vxtap to apply it",
                path.display()
            ));
        }
        if let Some(wg) = &self.wireguard {
            // The same checks and MTU defaults as at start: every network over WireGuard.
            wg.apply(&mut settings.networks).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        if self.dataplane.in_cluster() {
            config::check_cluster(&settings.networks).map_err(|e| format!("{}: {e}", path.display()))?;
        }
        info!(file = %path.display(), "reloading");
        let mut reloaded =
            Reloaded { networks: self.dataplane.reload(&settings.networks), notes: Vec::new() };
        for (dev, e) in self.follow_networks() {
            warn!(dev, "reload: no control socket: {e:#}");
            if let Some(row) = reloaded.networks.iter_mut().find(|r| r.dev == dev) {
                row.action = ReloadAction::Failed;
                row.error = Some(format!("its control socket: {e:#}"));
            }
        }
        if !self.metrics_from_flag && settings.metrics != self.metrics {
            let show = |m: Option<SocketAddr>| m.map_or_else(|| "off".to_string(), |a| a.to_string());
            reloaded.notes.push(format!(
                "metrics {} -> {}: the metrics address changes at the next start",
                show(self.metrics),
                show(settings.metrics)
            ));
        }
        if settings.etcd != self.etcd_at_start {
            reloaded.notes.push("the [etcd] table changed: it applies at the next start".to_string());
        }
        for note in &reloaded.notes {
            warn!("reload: {note}");
        }
        let count = |a: ReloadAction| reloaded.networks.iter().filter(|r| r.action == a).count();
        info!(
            unchanged = count(ReloadAction::Unchanged),
            changed = count(ReloadAction::Changed),
            restarted = count(ReloadAction::Restarted),
            added = count(ReloadAction::Added),
            removed = count(ReloadAction::Removed),
            failed = count(ReloadAction::Failed),
            "reload done"
        );
        Ok(reloaded)
    }

    /// SIGHUP: [`Service::reload`], its outcome logged.
    pub fn reload_on_signal(self: &Arc<Self>) {
        info!("SIGHUP: reloading the configuration");
        if let Err(e) = self.reload() {
            warn!("reload refused: {e}; the running configuration stays");
        }
    }

    /// Stops serving and removes the control sockets (at exit).
    pub fn close(&self) {
        for (_, s) in std::mem::take(&mut *self.sockets()) {
            s.task.abort();
            remove(&s.path);
        }
    }

    fn sockets(&self) -> MutexGuard<'_, BTreeMap<String, Served>> {
        self.sockets.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A request on the control socket of network `dev`: a reload is the process's, the rest is
/// the network's.
fn answer(service: &Weak<Service>, dev: &str, req: &Request) -> Result<Reply, String> {
    let service = service.upgrade().ok_or("vxtap is shutting down")?;
    match req {
        Request::Reload => {
            let reloaded = service.reload();
            if let Err(e) = &reloaded {
                warn!("reload refused: {e}; the running configuration stays");
            }
            reloaded.map(Reply::Reload)
        }
        _ => match service.dataplane.network(dev) {
            Some(n) => n.handle(req),
            None => Err(format!("network {dev} is not running")),
        },
    }
}

fn remove(path: &std::path::Path) {
    if let Err(e) = std::fs::remove_file(path) {
        warn!("removing {}: {e}", path.display());
    }
}
