//! The cluster task: the one tokio task (on the control thread's runtime) that talks to etcd.
//!
//! A session is: a lease (granted once, kept alive every ttl/3), this process's records put
//! under it with a create-only transaction, a listing of the prefix, then a watch from the
//! listed revision + 1. Anything that breaks the session (a stream error or end, a cancelled
//! watch, a compaction, a lost lease, a reconnect) ends it; the next one lists again and
//! applies the difference, so no event missed in between is lost. Failures back off with
//! jitter. The tables stay as they were while etcd is away: forwarding never waits for etcd.
//!
//! Liveness: HTTP/2 keep-alive (5 s, etcd's minimum) notices a stalled etcd, which would
//! otherwise leave the streams silent forever; `require_leader` makes a member without a leader
//! refuse rather than hang; every request has a connect timeout and a timeout.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::config::etcd::Settings;
use crate::control::cluster::key::{self, NetKey};
use crate::control::cluster::member::{self, Member, View};
use crate::control::cluster::reconcile::{Batch, Event, NetSpec, Own, Reconciler};
use crate::control::cluster::{LocalNet, StartError, Status, Tables};
use crate::state::ratelimit::TokenBucket;

/// TCP (and TLS) connect timeout of every request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Timeout of every request (until the response headers, for streams).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 keep-alive: etcd refuses pings more often than every 5 s (`--grpc-keepalive-min-time`).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a SIGTERM waits for the lease to be revoked.
const REVOKE_TIMEOUT: Duration = Duration::from_millis(800);
/// Backoff between failed sessions: from the first to the last, doubling, with ±50 % jitter;
/// never longer than a third of the lease's ttl (see [`Task::backoff_max`]).
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often the TAP's addresses are read again (and the records updated when they changed).
/// Largest listing or watch response accepted from etcd. gRPC's default, 4 MiB, is less than a
/// watch catching up after a compaction in a busy cluster (a 4.6 MB response was seen in a test),
/// which lost the session; each record is bounded by etcd's request limit (1.5 MiB by default),
/// so this bounds the memory one response may take, not the cluster's size.
pub(crate) const MAX_MESSAGE: usize = 64 << 20;
const REFRESH: Duration = Duration::from_secs(1);
/// Bad-record warnings: a burst, then one per 10 s (the rest are counted in the next line).
const WARN_BURST: u64 = 5;
const WARN_PER_10S: u64 = 1;
/// A resync that changes more members than this logs one summary line (and DEBUG lines).
const LOG_EACH_MAX: usize = 16;

/// The running task: stop it with [`Handle::shutdown`] (revokes the lease).
pub struct Handle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Handle {
    /// Revokes the lease (so the other members drop this one at once) and ends the task,
    /// within about a second whatever etcd does.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if tokio::time::timeout(REVOKE_TIMEOUT + Duration::from_millis(200), self.task).await.is_err() {
            warn!("cluster task did not stop in time");
        }
    }
}

/// Starts the cluster for the networks `nets` sends (now, and after every reload). Registers
/// once before returning: a live process with the same node name, or a user and password etcd
/// refuses, is a [`StartError`]; etcd being unreachable is not (the task keeps trying, logging
/// in too, the TAPs are up meanwhile). Must run inside the tokio runtime that will drive the
/// task.
pub async fn start(
    settings: Settings,
    mut nets: watch::Receiver<Vec<LocalNet>>,
    tables: Arc<dyn Tables>,
    status: Arc<Status>,
) -> Result<Handle, StartError> {
    // Members spread over the endpoints by node name, rather than all starting on the first.
    let endpoint = first_endpoint(&settings.node, settings.endpoints.len());
    let client = connect(&settings, endpoint).await?;
    let instance = member::new_instance_id();
    let now = nets.borrow_and_update().clone();
    let mut task = Task {
        reconciler: Reconciler::new(&settings.prefix, &instance, Vec::new()),
        published: Vec::new(),
        keys: Vec::new(),
        nets: Vec::new(),
        nets_rx: nets,
        following: true,
        retired: Vec::new(),
        settings,
        instance,
        client,
        endpoint,
        tables,
        status,
        lease: None,
        listed: false,
        warnings: TokenBucket::new(WARN_PER_10S, WARN_BURST),
        suppressed: 0,
        clock: Instant::now(),
        conflicts_logged: TokenBucket::new(WARN_PER_10S, WARN_BURST),
    };
    task.set_networks(now);
    info!(node = task.settings.node, endpoints = ?task.settings.endpoints, prefix = task.settings.prefix,
          ttl = task.settings.ttl, instance = task.instance, "joining the cluster");
    match task.first_registration().await {
        Ok(()) => info!(node = task.settings.node, "registered in etcd"),
        Err(Failure::Fatal(e)) => return Err(StartError(e)),
        Err(e) => {
            warn!("etcd not reachable yet ({e}): forwarding with the static configuration, joining when it answers");
            task.next_endpoint().await;
        }
    }
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(task.run(stopped));
    Ok(Handle { stop, task })
}

/// The client of endpoint `endpoint` (an index into the settings' list), with the options
/// above. One endpoint per client: with all of them, the client's balancer keeps sending a
/// share of the requests to an endpoint that refuses connections, and sessions keep failing;
/// instead a session that fails moves to the next endpoint ([`Task::next_endpoint`]).
/// Connecting is lazy: nothing is sent before the first request, so a down etcd is not an
/// error here; unreadable TLS files are. The user is not given here: etcd-client would log in
/// at once, and fail while etcd is down; each session logs in instead ([`authenticate`]). A
/// token refused later (expired) is renewed and the request sent again, so a long session does
/// not end for it.
pub(super) async fn connect(s: &Settings, endpoint: usize) -> Result<Client, StartError> {
    let mut opts = ConnectOptions::default()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(REQUEST_TIMEOUT)
        .with_keep_alive(KEEPALIVE_INTERVAL, KEEPALIVE_TIMEOUT)
        .with_keep_alive_while_idle(false)
        .with_require_leader(true)
        .with_auto_token_refresh(true);
    if let Some(tls) = &s.tls {
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| StartError(format!("etcd TLS: reading {}: {e}", p.display())))
        };
        let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(read(&tls.ca)?));
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            t = t.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        opts = opts.with_tls(t);
    }
    Client::connect([&s.endpoints[endpoint]], Some(opts))
        .await
        .map_err(|e| StartError(format!("etcd client: {e}")))
}

/// Where node `node` starts among `n` endpoints: a hash of its name (FNV-1a), so that the
/// members of a cluster spread over etcd's members.
pub fn first_endpoint(node: &str, n: usize) -> usize {
    let h =
        node.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    (h % n.max(1) as u64) as usize
}

/// Logs in as the configured user, at the start of every session: a token from before may be
/// gone (etcd forgets its simple tokens when it restarts). Wrong credentials are
/// [`Failure::Fatal`]: the process stops at the first registration, and retries later on.
pub(super) async fn authenticate(client: &mut Client, s: &Settings) -> Result<(), Failure> {
    let Some(auth) = &s.auth else { return Ok(()) };
    let Err(e) = client.update_user(Some((auth.user.clone(), auth.password.clone()))).await else {
        return Ok(());
    };
    let refused =
        |what: &str| matches!(&e, etcd_client::Error::GRpcStatus(st) if st.message().contains(what));
    if refused("authentication failed") {
        return Err(Failure::Fatal(format!(
            "etcd refused user {:?}: wrong user name or password (the password comes from [etcd] or {})",
            auth.user,
            crate::config::etcd::PASSWORD_ENV
        )));
    }
    if refused("authentication is not enabled") {
        // Every request is allowed then: carry on, and log in again if it is turned on later.
        warn!(user = auth.user, "etcd user set but etcd has authentication off: continuing without");
        return Ok(());
    }
    Err(Failure::Etcd(format!("logging in to etcd as {:?}: {e}", auth.user)))
}

/// Why a session ended.
#[derive(Debug)]
pub(super) enum Failure {
    /// etcd could not be reached or answered an error: back off and try again.
    Etcd(String),
    /// The session must start over at once (lease lost, watch cancelled or compacted).
    Restart(String),
    /// At startup only: another live process has this node name, or etcd refused the user.
    Fatal(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Etcd(s) | Failure::Restart(s) | Failure::Fatal(s) => f.write_str(s),
        }
    }
}

impl From<etcd_client::Error> for Failure {
    fn from(e: etcd_client::Error) -> Failure {
        Failure::Etcd(e.to_string())
    }
}

/// What registering one network's record found.
enum Registered {
    Yes,
    /// Another process's record holds the key: its instance id and lease.
    Taken {
        instance: Option<String>,
        vtep: Option<String>,
        lease: i64,
    },
}

struct Task {
    settings: Settings,
    instance: String,
    client: Client,
    /// The endpoint `client` talks to (index into the settings' list).
    endpoint: usize,
    tables: Arc<dyn Tables>,
    status: Arc<Status>,
    reconciler: Reconciler,
    /// The networks as the reconciler knows them, in its order.
    nets: Vec<LocalNet>,
    /// The networks as the dataplane runs them now (a reload sends a new list).
    nets_rx: watch::Receiver<Vec<LocalNet>>,
    /// Whether `nets_rx` still has a sender (the dataplane lives as long as the process).
    following: bool,
    /// Keys of networks a reload removed, still to delete (they go with the lease anyway).
    retired: Vec<String>,
    /// This process's key in each network.
    keys: Vec<String>,
    /// The value put in each network under the current lease; None: not registered.
    published: Vec<Option<String>>,
    lease: Option<i64>,
    /// A listing was applied once (later ones are resyncs).
    listed: bool,
    warnings: TokenBucket,
    /// Bad records not logged because of the rate limit, since the last warning.
    suppressed: u64,
    clock: Instant,
    conflicts_logged: TokenBucket,
}

impl Task {
    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// This process's record for network `i`, as of now.
    fn record(&self, i: usize) -> String {
        let local = self.tables.local(self.nets[i].key);
        Member {
            node: self.settings.node.clone(),
            vtep: local.vtep,
            mac: local.mac,
            overlay: local.overlay,
            instance: self.instance.clone(),
        }
        .to_json()
    }

    /// The registration at startup: a record of another process is waited out for as long as
    /// its lease could run if that process were dead; if it is still there, that process is
    /// alive and this one must not run.
    async fn first_registration(&mut self) -> Result<(), Failure> {
        authenticate(&mut self.client, &self.settings).await?;
        self.grant().await?;
        for i in 0..self.nets.len() {
            let mut deadline = None;
            loop {
                match self.register(i).await? {
                    Registered::Yes => break,
                    Registered::Taken { instance, vtep, lease } => {
                        let until = match deadline {
                            Some(d) => d,
                            None => {
                                let ttl = self.lease_ttl(lease).await.unwrap_or(self.settings.ttl as i64);
                                let d = Instant::now() + Duration::from_secs(ttl.max(1) as u64 + 2);
                                info!(node = self.settings.node, key = self.keys[i],
                                      "this node name is registered by another process (instance {}): waiting up to {} s for its lease to expire",
                                      instance.as_deref().unwrap_or("?"), ttl + 2);
                                deadline = Some(d);
                                d
                            }
                        };
                        if Instant::now() >= until {
                            return Err(Failure::Fatal(format!(
                                "node name {:?} is already registered in etcd by another running vxtap \
                                 (instance {}, VTEP {}) at {}: give each process its own --node",
                                self.settings.node,
                                instance.as_deref().unwrap_or("?"),
                                vtep.as_deref().unwrap_or("?"),
                                self.keys[i]
                            )));
                        }
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                }
            }
        }
        Ok(())
    }

    /// The granted time to live of another process's lease (0: gone).
    async fn lease_ttl(&mut self, lease: i64) -> Option<i64> {
        if lease == 0 {
            return None;
        }
        let r = self.client.lease_time_to_live(lease, None).await.ok()?;
        Some(r.granted_ttl().max(r.ttl()))
    }

    /// A fresh lease, unless this session already has one.
    async fn grant(&mut self) -> Result<i64, Failure> {
        if let Some(id) = self.lease {
            return Ok(id);
        }
        let r = self.client.lease_grant(self.settings.ttl as i64, None).await?;
        self.lease = Some(r.id());
        self.published.iter_mut().for_each(|p| *p = None);
        debug!(lease = r.id(), ttl = r.ttl(), "etcd lease granted");
        Ok(r.id())
    }

    /// Puts network `i`'s record under the lease if no other process holds the key (a
    /// create-only transaction; a record of this very instance, left from an earlier lease, is
    /// taken over).
    async fn register(&mut self, i: usize) -> Result<Registered, Failure> {
        let lease = self.grant().await?;
        let key = self.keys[i].clone();
        let value = self.record(i);
        let put = TxnOp::put(key.clone(), value.clone(), Some(PutOptions::new().with_lease(lease)));
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([put.clone()])
            .or_else([TxnOp::get(key.clone(), None)]);
        let r = self.client.txn(txn).await?;
        if r.succeeded() {
            self.published[i] = Some(value);
            return Ok(Registered::Yes);
        }
        let existing = r.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => {
                g.kvs().first().map(|kv| (kv.value().to_vec(), kv.mod_revision(), kv.lease()))
            }
            _ => None,
        });
        let Some((old, mod_rev, old_lease)) = existing else {
            return Err(Failure::Restart("the record vanished during registration".into()));
        };
        let instance = member::instance_of(&old);
        if instance.as_deref() == Some(self.instance.as_str()) {
            let txn =
                Txn::new().when([Compare::mod_revision(key, CompareOp::Equal, mod_rev)]).and_then([put]);
            if self.client.txn(txn).await?.succeeded() {
                self.published[i] = Some(value);
                return Ok(Registered::Yes);
            }
            return Err(Failure::Restart("the record changed during registration".into()));
        }
        #[derive(serde::Deserialize)]
        struct Vtep {
            addr: Option<IpAddr>,
            port: Option<u16>,
        }
        let vtep = serde_json::from_slice::<Vtep>(&old)
            .ok()
            .and_then(|v| Some(std::net::SocketAddr::new(v.addr?, v.port?).to_string()));
        Ok(Registered::Taken { instance, vtep, lease: old_lease })
    }

    /// Registers the networks that are not, and puts the records that changed (the TAP's
    /// addresses). Another process holding a key is logged (rate-limited), not fatal.
    async fn publish(&mut self) -> Result<(), Failure> {
        for i in 0..self.nets.len() {
            match self.published[i].clone() {
                None => {
                    if let Registered::Taken { instance, vtep, .. } = self.register(i).await? {
                        if self.conflicts_logged.allow(self.now_ms()) {
                            error!(
                                key = self.keys[i],
                                instance = instance.as_deref().unwrap_or("?"),
                                vtep = vtep.as_deref().unwrap_or("?"),
                                "another vxtap holds this node name: not registered (retrying)"
                            );
                        }
                    }
                }
                Some(old) => {
                    let value = self.record(i);
                    if value == old {
                        continue;
                    }
                    let lease = self.grant().await?;
                    let key = self.keys[i].clone();
                    let put =
                        TxnOp::put(key.clone(), value.clone(), Some(PutOptions::new().with_lease(lease)));
                    let txn = Txn::new().when([Compare::lease(key, CompareOp::Equal, lease)]).and_then([put]);
                    if self.client.txn(txn).await?.succeeded() {
                        info!(key = self.keys[i], record = value, "record updated");
                        self.published[i] = Some(value);
                    } else {
                        self.published[i] = None; // not ours any more: register again
                    }
                }
            }
        }
        Ok(())
    }

    /// Sessions until stopped, then the lease revoked.
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = BACKOFF_FIRST;
        loop {
            let ended = tokio::select! {
                r = self.session() => r,
                _ = stop.changed() => break,
            };
            self.status.set_connected(false);
            let pause = match ended {
                Failure::Restart(why) => {
                    info!("etcd session restarts: {why}");
                    // At once, give or take the jitter (never a tight loop if it keeps happening).
                    backoff = BACKOFF_FIRST;
                    jitter(BACKOFF_FIRST)
                }
                Failure::Etcd(why) | Failure::Fatal(why) => {
                    warn!(
                        "etcd session lost: {why}; retrying in about {} ms (the tables are kept)",
                        backoff.as_millis()
                    );
                    self.next_endpoint().await;
                    let p = jitter(backoff);
                    backoff = (backoff * 2).min(self.backoff_max());
                    p
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => break,
            }
        }
        self.revoke().await;
    }

    /// After a failed session: the next endpoint, if there are several (the lease and the
    /// records are etcd's, valid through any of its members).
    async fn next_endpoint(&mut self) {
        let n = self.settings.endpoints.len();
        if n < 2 {
            return;
        }
        let next = (self.endpoint + 1) % n;
        match connect(&self.settings, next).await {
            Ok(client) => {
                (self.client, self.endpoint) = (client, next);
                info!(endpoint = self.settings.endpoints[next], "trying the next etcd endpoint");
            }
            Err(e) => warn!(endpoint = self.settings.endpoints[next], "etcd endpoint skipped: {e}"),
        }
    }

    /// The longest pause between two tries: [`BACKOFF_MAX`], or a third of the ttl if shorter
    /// (as often as the keep-alives), so that once etcd answers again this process is back
    /// within its lease's time and the others do not drop it meanwhile (etcd gives every lease
    /// its whole ttl again when it restarts or elects a leader).
    fn backoff_max(&self) -> Duration {
        BACKOFF_MAX.min(Duration::from_millis(self.settings.ttl * 1000 / 3))
    }

    /// Revokes the lease: every record of this process is deleted with it, and the other
    /// members drop this one at once.
    async fn revoke(&mut self) {
        let Some(lease) = self.lease.take() else { return };
        match tokio::time::timeout(REVOKE_TIMEOUT, self.client.lease_revoke(lease)).await {
            Ok(Ok(_)) => info!("left the cluster (lease revoked)"),
            Ok(Err(e)) => warn!("revoking the etcd lease: {e}: the others drop this node when it expires"),
            Err(_) => warn!("revoking the etcd lease timed out: the others drop this node when it expires"),
        }
    }

    /// One session: lease and records, listing, then keep-alive and watch until something
    /// breaks. Never returns Ok.
    async fn session(&mut self) -> Failure {
        match self.session_inner().await {
            Ok(never) => match never {},
            // The lease is gone from etcd (expired while it was away): a new one, at once.
            Err(Failure::Etcd(why)) if why.contains("lease not found") => {
                self.lease = None;
                Failure::Restart(format!("{why}: registering again with a new lease"))
            }
            Err(f) => f,
        }
    }

    async fn session_inner(&mut self) -> Result<std::convert::Infallible, Failure> {
        // (A change seen by the watch below ended the last session: `changed` marked it seen.)
        let now = self.nets_rx.borrow_and_update().clone();
        self.set_networks(now);
        authenticate(&mut self.client, &self.settings).await?;
        let lease = self.grant().await?;
        self.retire(lease).await?;
        let (mut keeper, mut keepalives) = self.client.lease_keep_alive(lease).await?;
        self.publish().await?;
        let prefix = key::watch_prefix(&self.settings.prefix);
        let listing = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE)
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await?;
        let revision = listing.header().map_or(0, |h| h.revision());
        let batch =
            self.reconciler.list(listing.kvs().iter().map(|kv| (kv.key(), kv.value(), kv.create_revision())));
        if self.listed {
            self.status.resynced();
        }
        self.listed = true;
        self.handle(batch, true);
        self.status.set_revision(revision);
        let opts = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
        let mut stream = self
            .client
            .watch_client()
            .max_decoding_message_size(MAX_MESSAGE)
            .watch(prefix, Some(opts))
            .await?;
        self.status.set_connected(true);
        info!(revision, members = self.member_count(), "etcd: listed and watching");
        let period = Duration::from_millis(self.settings.ttl * 1000 / 3);
        let mut keepalive = tokio::time::interval(period);
        let mut refresh = tokio::time::interval(REFRESH);
        let mut answered = Instant::now();
        loop {
            tokio::select! {
                _ = keepalive.tick() => {
                    if answered.elapsed() > Duration::from_secs(self.settings.ttl) {
                        return Err(Failure::Etcd("no keep-alive answer for a whole lease time".into()));
                    }
                    keeper.keep_alive().await?;
                }
                msg = keepalives.message() => match msg? {
                    Some(r) if r.ttl() > 0 => answered = Instant::now(),
                    Some(_) => {
                        self.lease = None;
                        return Err(Failure::Restart("the lease expired (etcd away too long?): registering again".into()));
                    }
                    None => return Err(Failure::Etcd("keep-alive stream closed".into())),
                },
                msg = stream.message() => {
                    let Some(resp) = msg? else { return Err(Failure::Etcd("watch stream closed".into())) };
                    if resp.canceled() {
                        let why = if resp.compact_revision() > 0 {
                            format!("the watch fell behind a compaction (revision {}): listing again", resp.compact_revision())
                        } else {
                            format!("the watch was cancelled ({}): listing again", resp.cancel_reason())
                        };
                        return Err(Failure::Restart(why));
                    }
                    if resp.events().is_empty() {
                        continue; // created, or progress
                    }
                    let events = resp.events().iter().filter_map(|e| {
                        let kv = e.kv()?;
                        Some(match e.event_type() {
                            EventType::Put => Event::Put((kv.key(), kv.value(), kv.create_revision())),
                            EventType::Delete => Event::Delete { key: kv.key() },
                        })
                    });
                    let batch = self.reconciler.events(events);
                    let reregister = self.handle(batch, false);
                    if let Some(h) = resp.header() {
                        self.status.set_revision(h.revision());
                    }
                    if reregister {
                        self.publish().await?;
                    }
                }
                _ = refresh.tick() => self.publish().await?,
                changed = self.nets_rx.changed(), if self.following => match changed {
                    Ok(()) => return Err(Failure::Restart("the networks changed (reload): listing again".into())),
                    Err(_) => self.following = false,
                },
            }
        }
    }

    /// Takes the networks the dataplane runs now: the reconciler keeps what it applied to the
    /// networks that stayed the same, starts afresh for new or restarted ones, and the keys of
    /// removed ones are retired. The next listing applies the difference.
    fn set_networks(&mut self, nets: Vec<LocalNet>) {
        if nets == self.nets {
            return;
        }
        let mut specs = Vec::with_capacity(nets.len());
        let mut keys = Vec::with_capacity(nets.len());
        let mut published = Vec::with_capacity(nets.len());
        for n in &nets {
            let was = self.nets.iter().position(|o| o.key == n.key);
            let fresh = was.is_none_or(|i| self.nets[i] != *n);
            let mac = Some(self.tables.local(n.key).mac);
            specs.push((
                NetSpec { net: n.key, view: View { node: self.settings.node.clone(), v6: n.v6, mac } },
                fresh,
            ));
            keys.push(key::member_key(&self.settings.prefix, n.key, &self.settings.node));
            // A record kept is put again by `publish` if the network's VTEP or MAC changed.
            published.push(was.and_then(|i| self.published[i].clone()));
        }
        for (i, n) in self.nets.iter().enumerate() {
            if !nets.iter().any(|m| m.key == n.key) && self.published[i].is_some() {
                self.retired.push(self.keys[i].clone());
            }
        }
        if !self.nets.is_empty() {
            let show = |l: &[LocalNet]| {
                l.iter().map(|n| format!("{}/{}", n.key.proto, n.key.vni)).collect::<Vec<_>>()
            };
            info!(before = ?show(&self.nets), after = ?show(&nets), "cluster: the networks changed");
        }
        // Removed, then added back before the session could delete it: it stays.
        self.retired.retain(|k| !keys.contains(k));
        let keep: Vec<NetKey> = nets.iter().map(|n| n.key).collect();
        self.status.retain(&keep);
        self.reconciler.set_networks(specs);
        (self.nets, self.keys, self.published) = (nets, keys, published);
    }

    /// Deletes this process's records of the networks a reload removed (only while they are
    /// still under `lease`: a record of an earlier lease is gone already).
    async fn retire(&mut self, lease: i64) -> Result<(), Failure> {
        while let Some(key) = self.retired.last().cloned() {
            let txn = Txn::new()
                .when([Compare::lease(key.clone(), CompareOp::Equal, lease)])
                .and_then([TxnOp::delete(key.clone(), None)]);
            if self.client.txn(txn).await?.succeeded() {
                info!(key, "left a network the reload removed");
            }
            self.retired.pop();
        }
        Ok(())
    }

    fn member_count(&self) -> usize {
        (0..self.nets.len()).map(|i| self.reconciler.members(i).count()).sum()
    }

    /// Applies a batch to the tables, logs joins and leaves, counts and logs bad records;
    /// true when this process's own record must be put again.
    fn handle(&mut self, batch: Batch, listing: bool) -> bool {
        let changed: usize =
            batch.changes.iter().map(|c| c.joined.len() + c.left.len() + c.updated.len()).sum();
        let each = !listing || changed <= LOG_EACH_MAX;
        for c in &batch.changes {
            let net = self.nets[c.net].key;
            self.tables.apply(net, c);
            self.status.set_members(net, c.members.len());
            let vni = net.vni;
            for m in &c.joined {
                log_member(each, "cluster member joined", vni, m);
            }
            for m in &c.left {
                log_member(each, "cluster member left", vni, m);
            }
            for (_, m) in &c.updated {
                log_member(each, "cluster member changed", vni, m);
            }
        }
        if !each {
            info!(changed, members = self.member_count(), "cluster resynchronised");
        }
        if !batch.bad.is_empty() {
            self.status.bad_values(batch.bad.len());
            for (key, why) in &batch.bad {
                if self.warnings.allow(self.now_ms()) {
                    let more = std::mem::take(&mut self.suppressed);
                    warn!(key, more_not_logged = more, "ignoring a bad record in etcd: {why}");
                } else {
                    self.suppressed += 1;
                }
            }
        }
        let mut reregister = false;
        for own in batch.own {
            match own {
                Own::Missing { net } => {
                    if self.published[net].take().is_some() {
                        info!(key = self.keys[net], "this node's record disappeared: registering again");
                    }
                    reregister = true;
                }
                Own::Foreign { net, instance } => {
                    if self.conflicts_logged.allow(self.now_ms()) {
                        error!(
                            key = self.keys[net],
                            instance = instance.as_deref().unwrap_or("?"),
                            "another vxtap wrote a record under this node's name"
                        );
                    }
                    // Not ours any more: register again once that record is gone.
                    self.published[net] = None;
                }
            }
        }
        reregister
    }
}

fn log_member(info_level: bool, what: &str, vni: u32, m: &Member) {
    if info_level {
        info!(node = m.node, vtep = %m.vtep, mac = %m.mac, overlay = ?m.overlay, vni, "{what}");
    } else {
        debug!(node = m.node, vtep = %m.vtep, mac = %m.mac, vni, "{what}");
    }
}

/// `d` scaled by a random factor in [0.5, 1.5), so that VTEPs that lost etcd together do not
/// come back in step.
pub(super) fn jitter(d: Duration) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    let f = 0.5 + (h.finish() % 1000) as f64 / 1000.0;
    d.mul_f64(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_spread_over_the_endpoints() {
        assert_eq!(first_endpoint("n0", 1), 0);
        let mut seen = [0usize; 3];
        for i in 0..30 {
            seen[first_endpoint(&format!("host-{i}"), 3)] += 1;
        }
        assert!(seen.iter().all(|&k| k >= 3), "{seen:?}");
        assert_eq!(first_endpoint("a", 3), first_endpoint("a", 3), "the same node, the same start");
    }

    #[test]
    fn jitter_stays_within_half_either_way() {
        for _ in 0..100 {
            let j = jitter(Duration::from_secs(2));
            assert!(j >= Duration::from_secs(1) && j < Duration::from_secs(3), "{j:?}");
        }
    }
}
