//! `vxtap flannel` (feature `etcd`): one host of a flannel cluster (etcd subnet manager, vxlan
//! backend), doing what flanneld and the kernel's `flannel.<VNI>` device do there
//! (docs/flannel.md).
//!
//! [`join`] reads the network's configuration, finds the underlay and holds a subnet lease, as
//! flanneld acquires one ([`crate::control::flannel::alloc`]); the caller starts the dataplane
//! with the network it returns (the TAP `flannel.<VNI>`: MAC = the lease's VtepMAC, address =
//! the subnet's .0/32, MTU = underlay - 50, no learning) and hands it to [`Joined::start`],
//! which writes the subnet file, applies the other leases (route via `.0` onlink, permanent
//! neighbour entry, FDB entry) and then follows them: a watch from the listed revision + 1,
//! listed again after a compaction or any error. The lease is renewed an hour before its 24 h
//! run out, and left in place on exit so that a restart gets the same subnet back.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use etcd_client::{Client, Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, WatchOptions};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::etcd::{authenticate, connect, jitter, Failure};
use super::netlink::{tap_mtu, Link, Netlink};
use super::{Dataplane, NetworkHandle};
use crate::config::etcd::Settings;
use crate::config::NetworkConfig;
use crate::control::flannel::alloc::{self, Choice};
use crate::control::flannel::env::{previous_subnet, SubnetEnv};
use crate::control::flannel::key::{config_key, lease_key, parse_lease_key, subnets_prefix};
use crate::control::flannel::plan::{diff, Batch, Own, Reconciler, Route, Skip, Step};
use crate::control::flannel::{
    FlannelConfig, Lease, Status, Subnet, SubnetKey, LEASE_TTL_SECS, RENEW_MARGIN_SECS, VXLAN_OVERHEAD,
};
use crate::state::ratelimit::TokenBucket;
use crate::wire::cidr::Cidr;

/// How many times acquisition starts over when another host takes the chosen subnet first.
const ACQUIRE_TRIES: usize = 10;
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Skipped-lease warnings: a burst, then one per 10 s.
const WARN_BURST: u64 = 5;
const WARN_PER_10S: u64 = 1;
/// The applied state is compared with etcd's again this often (a failed route is retried).
const RESYNC: Duration = Duration::from_secs(60);
const PERIODIC: &str = "periodic resynchronisation";

/// What `vxtap flannel` was told.
#[derive(Debug, Clone)]
pub struct Options {
    /// Endpoints, TLS and login; `prefix` is flannel's (`/coreos.com/network`).
    pub etcd: Settings,
    pub public_ip: Option<Ipv4Addr>,
    pub iface: Option<String>,
    pub subnet_file: PathBuf,
    /// The TAP's name (default `flannel.<VNI>`).
    pub dev: Option<String>,
    pub ip_masq: bool,
    /// The control socket (default: the TAP's).
    pub control: Option<PathBuf>,
}

/// A held lease, and the network to start for it.
pub struct Joined {
    /// The network to start (one TAP), then to give to [`Joined::start`].
    pub network: NetworkConfig,
    pub subnet: Subnet,
    pub public_ip: Ipv4Addr,
    session: Session,
}

/// Connects, reads the configuration, finds the underlay and holds a lease. Errors are the
/// operator's to fix (etcd unreachable or refusing the login, no or a bad configuration, no free
/// subnet, no underlay address), each with its reason; nothing is configured on the host yet.
pub async fn join(opts: Options) -> Result<Joined> {
    let mut client = connect(&opts.etcd, 0).await.map_err(|e| anyhow!("{e}"))?;
    let unreachable = |e: String| {
        anyhow!("etcd at {} is not reachable or refused the request: {e}", opts.etcd.endpoints.join(","))
    };
    authenticate(&mut client, &opts.etcd).await.map_err(|e| unreachable(e.to_string()))?;
    let prefix = opts.etcd.prefix.clone();
    let ckey = config_key(&prefix);
    let got = client.get(ckey.clone(), None).await.map_err(|e| unreachable(e.to_string()))?;
    let raw = got.kvs().first().map(|kv| kv.value().to_vec()).ok_or_else(|| {
        anyhow!(
            "no flannel configuration at {ckey}: put one first, e.g. \
             {{\"Network\":\"198.19.0.0/16\",\"Backend\":{{\"Type\":\"vxlan\"}}}}"
        )
    })?;
    let cfg = FlannelConfig::parse(&raw).with_context(|| ckey.clone())?;
    let netlink = Netlink::new()?;
    let (link, public_ip) = netlink.underlay(opts.iface.as_deref(), opts.public_ip).await?;
    let mtu = match cfg.mtu {
        Some(m) => m,
        None => tap_mtu(link.mtu, VXLAN_OVERHEAD)?,
    };
    let previous = std::fs::read_to_string(&opts.subnet_file).ok().and_then(|t| previous_subnet(&t));
    info!(network = %cfg.network, subnet_len = cfg.subnet_len, vni = cfg.vni, port = cfg.port,
          direct_routing = cfg.direct_routing, underlay = link.name, %public_ip, mtu,
          previous = ?previous.map(|p| p.to_string()), "flannel: configuration read");
    let mut session = Session {
        client,
        opts,
        cfg,
        link,
        public_ip,
        mtu,
        netlink,
        own: SubnetKey::v4(Subnet { addr: Ipv4Addr::UNSPECIFIED, len: 32 }),
        own_value: String::new(),
        lease: 0,
        expires: Instant::now(),
        tap: None,
        applied: BTreeMap::new(),
        status: Arc::new(Status::new()),
        warnings: TokenBucket::new(WARN_PER_10S, WARN_BURST),
        clock: Instant::now(),
        listed: false,
    };
    let choice = session.acquire(previous).await?;
    let subnet = session.own.v4;
    let dev = session.opts.dev.clone().unwrap_or_else(|| format!("flannel.{}", session.cfg.vni));
    let mut n = NetworkConfig::new(&dev, session.cfg.vni);
    n.local = Some(public_ip.into());
    n.port = Some(session.cfg.port);
    n.address = Some(Cidr { addr: subnet.host(0).into(), prefix: 32 });
    n.mtu = Some(mtu);
    n.mac = Some(choice.mac());
    n.learning = false;
    n.control = session.opts.control.clone();
    crate::config::validate(std::slice::from_ref(&n)).map_err(|e| anyhow!("the flannel network: {e}"))?;
    Ok(Joined { network: n, subnet, public_ip, session })
}

/// The running task: [`Handle::shutdown`] stops it and leaves the lease in etcd.
pub struct Handle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Handle {
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(Duration::from_secs(3), self.task).await.is_err() {
            warn!("flannel task did not stop in time");
        }
    }
}

impl Joined {
    /// Once the dataplane runs [`Joined::network`]: writes the subnet file, applies the other
    /// leases, and follows them from then on. Returns when the host is configured ("ready").
    pub async fn start(self, dataplane: Arc<Dataplane>) -> Result<Handle> {
        let mut s = self.session;
        let dev = self.network.dev.clone();
        let net = dataplane.network(&dev).ok_or_else(|| anyhow!("network {dev} is not running"))?;
        let _ = net.flannel.set(s.status.clone());
        s.tap = Some((s.netlink.index_of(&dev).await?, dataplane.clone(), dev));
        let env = SubnetEnv { network: s.cfg.network, subnet: s.own.v4, mtu: s.mtu, ipmasq: s.opts.ip_masq };
        write_env(&s.opts.subnet_file, &env.render())?;
        info!(file = %s.opts.subnet_file.display(), subnet = %s.own.v4, mtu = s.mtu, "flannel: subnet file written");
        // The first listing: the host is ready once it is applied.
        let (mut reconciler, revision) = match s.listing().await {
            Ok(r) => r,
            Err(e) => bail!("listing the leases: {e}"),
        };
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            s.run(&mut reconciler, revision, stopped).await;
        });
        Ok(Handle { stop, task })
    }
}

/// Writes `text` to `path` whole (a temporary file renamed over it), creating the directory.
fn write_env(path: &std::path::Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("env.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

struct Session {
    client: Client,
    opts: Options,
    cfg: FlannelConfig,
    /// The underlay interface and this host's address on it.
    link: Link,
    public_ip: Ipv4Addr,
    mtu: u32,
    netlink: Netlink,
    own: SubnetKey,
    /// The lease's value as put.
    own_value: String,
    /// The etcd lease it is attached to, and when that runs out.
    lease: i64,
    expires: Instant,
    /// The TAP's interface index, the dataplane, the TAP's name (once started).
    tap: Option<(u32, Arc<Dataplane>, String)>,
    /// The routes in place, by subnet.
    applied: BTreeMap<Subnet, Route>,
    status: Arc<Status>,
    warnings: TokenBucket,
    clock: Instant,
    listed: bool,
}

impl Session {
    fn prefix(&self) -> &str {
        &self.opts.etcd.prefix
    }

    /// Holds a lease as flanneld does ([`alloc::choose`]); sets `own`, `own_value`, `lease`.
    async fn acquire(&mut self, previous: Option<Subnet>) -> Result<Choice> {
        for _ in 0..ACQUIRE_TRIES {
            let prefix = subnets_prefix(self.prefix());
            let listing = self.list(prefix).await?;
            let leases: Vec<(SubnetKey, Option<Lease>)> = listing
                .kvs()
                .iter()
                .filter_map(|kv| {
                    let k = parse_lease_key(self.prefix(), kv.key()).ok()?;
                    Some((k, Lease::parse(kv.value()).ok()))
                })
                .collect();
            let plan = alloc::choose(&self.cfg, &leases, self.public_ip, previous, random())?;
            for stale in &plan.stale {
                info!(lease = %stale, "flannel: deleting this host's lease that no longer fits the configuration");
                self.client.delete(lease_key(self.prefix(), stale), None).await?;
            }
            let key = plan.choice.key();
            let value = Lease::vxlan(self.public_ip, self.cfg.vni, plan.choice.mac()).to_json();
            let etcd_key = lease_key(self.prefix(), &key);
            let granted = self.client.lease_grant(LEASE_TTL_SECS, None).await?;
            let opts = PutOptions::new().with_lease(granted.id());
            let held = match plan.choice {
                Choice::Reuse { .. } => {
                    self.client.put(etcd_key.clone(), value.clone(), Some(opts)).await?;
                    true
                }
                Choice::Create { .. } => {
                    let txn = Txn::new()
                        .when([Compare::version(etcd_key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(etcd_key.clone(), value.clone(), Some(opts))]);
                    self.client.txn(txn).await?.succeeded()
                }
            };
            if !held {
                let _ = self.client.lease_revoke(granted.id()).await;
                info!(lease = %key, "flannel: another host took this subnet first: choosing again");
                continue;
            }
            let how = match plan.choice {
                Choice::Reuse { .. } => "reused this host's lease",
                Choice::Create { from_file: true, .. } => "took the subnet of the previous subnet file",
                Choice::Create { .. } => "took a free subnet",
            };
            info!(subnet = %key.v4, vtep_mac = %plan.choice.mac(), public_ip = %self.public_ip, "flannel: {how}");
            (self.own, self.own_value, self.lease) = (key, value, granted.id());
            self.expires = Instant::now() + Duration::from_secs(granted.ttl().max(1) as u64);
            return Ok(plan.choice);
        }
        bail!("could not hold a subnet lease after {ACQUIRE_TRIES} tries: other hosts kept taking the chosen subnets")
    }

    /// Puts this host's lease again under a fresh etcd lease (renewal, or after it was deleted).
    /// `create_only`: only if the key is absent (someone else may have taken the subnet).
    async fn put_own(&mut self, create_only: bool) -> Result<bool, Failure> {
        let granted = self.client.lease_grant(LEASE_TTL_SECS, None).await?;
        let key = lease_key(self.prefix(), &self.own);
        let opts = PutOptions::new().with_lease(granted.id());
        let mut cmp = vec![Compare::version(key.clone(), CompareOp::Equal, 0)];
        if !create_only {
            // Renewal: the key is still this host's value (or gone).
            cmp = vec![Compare::value(key.clone(), CompareOp::Equal, self.own_value.clone())];
        }
        let txn =
            Txn::new().when(cmp).and_then([TxnOp::put(key.clone(), self.own_value.clone(), Some(opts))]);
        let ok = self.client.txn(txn).await?.succeeded();
        if ok {
            let old = std::mem::replace(&mut self.lease, granted.id());
            self.expires = Instant::now() + Duration::from_secs(granted.ttl().max(1) as u64);
            let _ = self.client.lease_revoke(old).await;
        } else {
            let _ = self.client.lease_revoke(granted.id()).await;
        }
        Ok(ok)
    }

    /// Every key under `prefix`, in a response of up to [`super::etcd::MAX_MESSAGE`] bytes.
    async fn list(&mut self, prefix: String) -> Result<etcd_client::GetResponse, etcd_client::Error> {
        let opts = Some(GetOptions::new().with_prefix());
        self.client.kv_client().max_decoding_message_size(super::etcd::MAX_MESSAGE).get(prefix, opts).await
    }

    /// Lists the leases and applies them: the reconciler and the revision listed.
    async fn listing(&mut self) -> Result<(Reconciler, i64), Failure> {
        let prefix = subnets_prefix(self.prefix());
        let listing = self.list(prefix).await?;
        let revision = listing.header().map_or(0, |h| h.revision());
        let mut r = Reconciler::new(self.prefix(), self.own, self.public_ip);
        let batch = r.list(listing.kvs().iter().map(|kv| (kv.key(), kv.value())));
        if self.listed {
            self.status.resynced();
        }
        self.listed = true;
        self.handle(&r, batch).await?;
        self.status.set_revision(revision);
        info!(revision, peers = self.applied.len(), "flannel: leases listed and applied");
        Ok((r, revision))
    }

    /// Sessions until stopped: watch, and list again after any break.
    async fn run(&mut self, reconciler: &mut Reconciler, mut revision: i64, mut stop: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_FIRST;
        loop {
            let ended = tokio::select! {
                r = self.session(reconciler, revision) => r,
                _ = stop.changed() => break,
            };
            self.status.set_connected(false);
            let pause = match ended {
                Failure::Restart(why) => {
                    if why == PERIODIC {
                        debug!("flannel: {why}: listing again");
                    } else {
                        info!("flannel: {why}: listing again");
                    }
                    backoff = BACKOFF_FIRST;
                    jitter(BACKOFF_FIRST)
                }
                Failure::Etcd(why) | Failure::Fatal(why) => {
                    warn!(
                        "flannel: etcd session lost: {why}; retrying in about {} ms (routes are kept)",
                        backoff.as_millis()
                    );
                    let p = jitter(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    p
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => break,
            }
            match self.relist().await {
                Ok((r, rev)) => (*reconciler, revision) = (r, rev),
                Err(e) => warn!("flannel: listing again failed: {e}"),
            }
        }
        self.remove_direct_routes().await;
        info!(subnet = %self.own.v4, "flannel: stopped; the lease stays in etcd for the next start");
    }

    async fn relist(&mut self) -> Result<(Reconciler, i64), Failure> {
        authenticate(&mut self.client, &self.opts.etcd).await?;
        self.listing().await
    }

    /// Watches from `revision` + 1 until something breaks; renews the lease meanwhile.
    async fn session(&mut self, r: &mut Reconciler, revision: i64) -> Failure {
        match self.session_inner(r, revision).await {
            Ok(never) => match never {},
            Err(f) => f,
        }
    }

    async fn session_inner(
        &mut self,
        r: &mut Reconciler,
        revision: i64,
    ) -> Result<std::convert::Infallible, Failure> {
        let prefix = subnets_prefix(self.prefix());
        let opts = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
        let mut stream = self
            .client
            .watch_client()
            .max_decoding_message_size(super::etcd::MAX_MESSAGE)
            .watch(prefix, Some(opts))
            .await?;
        self.status.set_connected(true);
        let mut resync = tokio::time::interval(RESYNC);
        resync.tick().await;
        loop {
            let renew_at = self
                .expires
                .checked_sub(Duration::from_secs(RENEW_MARGIN_SECS as u64))
                .unwrap_or(self.expires);
            tokio::select! {
                msg = stream.message() => {
                    let Some(resp) = msg? else { return Err(Failure::Etcd("watch stream closed".into())) };
                    if resp.canceled() {
                        return Err(Failure::Restart(if resp.compact_revision() > 0 {
                            format!("the watch fell behind a compaction (revision {})", resp.compact_revision())
                        } else {
                            format!("the watch was cancelled ({})", resp.cancel_reason())
                        }));
                    }
                    if resp.events().is_empty() {
                        continue;
                    }
                    let mut batch = Batch::default();
                    for e in resp.events() {
                        let Some(kv) = e.kv() else { continue };
                        let value = (e.event_type() == EventType::Put).then(|| kv.value());
                        r.event(kv.key(), value, &mut batch);
                    }
                    self.handle(r, batch).await?;
                    if let Some(h) = resp.header() {
                        self.status.set_revision(h.revision());
                    }
                }
                _ = tokio::time::sleep_until(renew_at.into()) => {
                    if self.put_own(false).await? {
                        info!(subnet = %self.own.v4, "flannel: lease renewed for another 24 h");
                    } else {
                        return Err(Failure::Restart("this host's lease changed under it".into()));
                    }
                }
                _ = resync.tick() => return Err(Failure::Restart(PERIODIC.into())),
            }
        }
    }

    /// Applies a batch: logs and counts what was skipped, puts this host's lease back if it
    /// went, and brings routes, neighbours and FDB entries to what the leases say.
    async fn handle(&mut self, r: &Reconciler, batch: Batch) -> Result<(), Failure> {
        for (key, why) in &batch.skipped {
            match why {
                Skip::Bad(e) => {
                    self.status.bad_lease();
                    if self.warnings.allow(self.clock.elapsed().as_millis() as u64) {
                        warn!(key, "flannel: ignoring a malformed lease: {e}");
                    }
                }
                Skip::OtherBackend(b) => {
                    self.status.other_backend();
                    if self.warnings.allow(self.clock.elapsed().as_millis() as u64) {
                        info!(
                            key,
                            backend = b,
                            "flannel: ignoring a lease of another backend: vxtap routes only to vxlan hosts"
                        );
                    }
                }
                Skip::OwnAddress => debug!(key, "flannel: ignoring another lease with this host's address"),
            }
        }
        if batch.own == Some(Own::Missing) {
            warn!(subnet = %self.own.v4, "flannel: this host's lease disappeared from etcd: putting it back");
            if !self.put_own(true).await? {
                error!(subnet = %self.own.v4, "flannel: another host holds this host's subnet now: restart vxtap flannel to take another");
            }
        }
        let desired: BTreeMap<Subnet, Route> = r
            .peers()
            .into_iter()
            .map(|(s, p)| {
                let direct = self.cfg.direct_routing && self.link.on_link(p.public_ip);
                (s, if direct { Route::Direct(p) } else { Route::Vxlan(p) })
            })
            .collect();
        for step in diff(&self.applied, &desired) {
            match step {
                Step::Remove(s, route) => {
                    self.remove(s, route).await;
                    self.applied.remove(&s);
                    info!(subnet = %s, public_ip = %route.peer().public_ip, "flannel: peer removed");
                }
                Step::Add(s, route) => match self.add(s, route).await {
                    Ok(()) => {
                        self.applied.insert(s, route);
                        info!(subnet = %s, public_ip = %route.peer().public_ip, vtep_mac = %route.peer().vtep_mac,
                              direct = matches!(route, Route::Direct(_)), "flannel: peer added");
                    }
                    Err(e) => {
                        self.status.route_error();
                        warn!(subnet = %s, "flannel: could not route to the peer (retried at the next resync): {e:#}");
                        // Whatever part went in comes out: never a half-configured peer.
                        self.remove(s, route).await;
                    }
                },
            }
        }
        self.status.set_peers(self.applied.len());
        self.publish_members();
        Ok(())
    }

    fn network(&self) -> Option<Arc<NetworkHandle>> {
        let (_, dp, dev) = self.tap.as_ref()?;
        dp.network(dev)
    }

    /// The peers for `vxtap peers` (node: the subnet).
    fn publish_members(&self) {
        let Some(n) = self.network() else { return };
        let port = self.cfg.port;
        *n.members.lock().unwrap_or_else(|e| e.into_inner()) = self
            .applied
            .iter()
            .filter(|(_, r)| matches!(r, Route::Vxlan(_)))
            .map(|(s, r)| (SocketAddr::new(r.peer().public_ip.into(), port), s.to_string()))
            .collect();
    }

    async fn add(&self, s: Subnet, route: Route) -> Result<()> {
        let (tap, _, _) = self.tap.as_ref().ok_or_else(|| anyhow!("the TAP is not up"))?;
        match route {
            Route::Direct(p) => self.netlink.replace_route(s, p.public_ip, self.link.index, false).await,
            Route::Vxlan(p) => {
                let n = self.network().ok_or_else(|| anyhow!("the network is not running"))?;
                let dst = SocketAddr::new(p.public_ip.into(), self.cfg.port);
                if !n.net.fdb.set_etcd(p.vtep_mac, dst)? {
                    bail!("an operator's static FDB entry holds {}", p.vtep_mac);
                }
                n.group.refresh_allowlist();
                self.netlink.replace_neigh(*tap, s.host(0), p.vtep_mac).await?;
                self.netlink.replace_route(s, s.host(0), *tap, true).await
            }
        }
    }

    async fn remove(&self, s: Subnet, route: Route) {
        let Some((tap, _, _)) = self.tap.as_ref() else { return };
        let r = match route {
            Route::Direct(p) => self.netlink.del_route(s, p.public_ip, self.link.index, false).await,
            Route::Vxlan(p) => {
                let a = self.netlink.del_route(s, s.host(0), *tap, true).await;
                let b = self.netlink.del_neigh(*tap, s.host(0)).await;
                if let Some(n) = self.network() {
                    n.net.fdb.remove_etcd(&p.vtep_mac);
                    n.net.fdb.remove_learned_at(p.public_ip.into());
                    n.group.refresh_allowlist();
                }
                a.and(b)
            }
        };
        if let Err(e) = r {
            self.status.route_error();
            warn!(subnet = %s, "flannel: removing the peer's route: {e:#}");
        }
    }

    /// At exit: direct routes go through the underlay, which stays; the TAP's routes and
    /// neighbours go with the TAP.
    async fn remove_direct_routes(&mut self) {
        let direct: Vec<(Subnet, Route)> = self
            .applied
            .iter()
            .filter(|(_, r)| matches!(r, Route::Direct(_)))
            .map(|(s, r)| (*s, *r))
            .collect();
        for (s, r) in direct {
            self.remove(s, r).await;
        }
    }
}

/// A random number (the subnet choice and the VtepMAC of a new lease).
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    h.finish()
}
