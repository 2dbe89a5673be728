//! The `vxtap` binary: argument parsing and dispatch.

mod bench;
mod cli;
mod demo;
mod flannel;
mod ops;
mod privileges;
mod service;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use tracing::info;

use cli::{Cli, Command, FdbCommand, NeighCommand, RunArgs, RunPlan, Target};
use privileges::User;
use service::Service;
use vxtap::control::{FdbKind, FdbRow, NeighRow, PeerRow, Reloaded, Request, Stats};
use vxtap::node::{control_client, Dataplane};
use vxtap::state::fdb::MonotonicClock;

/// How often drops are summarised in the log.
const DROP_REPORT_PERIOD: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => return run(&args),
        Command::Fdb(FdbCommand::Show { target, json }) => show(&target, &Request::FdbShow, json, print_fdb),
        Command::Fdb(FdbCommand::Add { mac, dst, target }) => {
            control_client::request(&target.path(), &Request::FdbAdd { mac, dst })
        }
        Command::Fdb(FdbCommand::Del { mac, dst, target }) => {
            control_client::request(&target.path(), &Request::FdbDel { mac, dst })
        }
        Command::Stats { target, json } => show(&target, &Request::Stats, json, print_stats),
        Command::Peers { target, json } => show(&target, &Request::Peers, json, print_peers),
        Command::Reload { target, json } => reload(&target, json),
        Command::Bench { duration, sizes, json } => bench(duration, &sizes, json),
        Command::Demo { proto, cluster: true, .. } => demo::cluster(proto),
        Command::Demo { proto, megabytes, .. } => demo::run(proto, megabytes),
        Command::Neigh(NeighCommand::Show { target, json }) => {
            show(&target, &Request::NeighShow, json, print_neigh)
        }
        Command::Neigh(NeighCommand::Add { ip, mac, target }) => {
            control_client::request(&target.path(), &Request::NeighAdd { ip, mac })
        }
        Command::Neigh(NeighCommand::Del { ip, target }) => {
            control_client::request(&target.path(), &Request::NeighDel { ip })
        }
        Command::Completions { shell } => ops::completions(shell),
        Command::Man => ops::man(),
        Command::Genkey => genkey(),
        Command::Pubkey => pubkey(),
        Command::Flannel(args) => return flannel::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `vxtap run`: start the dataplane, serve the control sockets, age the FDB, exit on a signal.
fn run(args: &RunArgs) -> ExitCode {
    ops::init_logging(args.log_format);
    let plan = match args.plan() {
        Ok(p) if p.cluster.is_some() && !vxtap::control::cluster::SUPPORTED => {
            eprintln!("error: {}", vxtap::control::cluster::UNSUPPORTED);
            return ExitCode::from(2);
        }
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let user = match args.user.as_deref().map(User::lookup).transpose() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    match serve(plan, user.as_ref(), args.config.clone(), args.metrics.is_some()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the VTEP until SIGTERM or SIGINT. `config` is the file the networks came from, which a
/// reload re-reads; `metrics_from_flag` says `--metrics` overrides the file's `metrics`.
fn serve(
    plan: RunPlan,
    user: Option<&User>,
    config: Option<std::path::PathBuf>,
    metrics_from_flag: bool,
) -> Result<()> {
    let RunPlan { networks, metrics, cluster, etcd_at_start, wireguard, wireguard_at_start } = plan;
    let dataplane =
        Arc::new(Dataplane::start(&networks, Arc::new(MonotonicClock::default()), wireguard.as_ref())?);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut signals = Signals::install()?;
        let owner = user.map(|u| (u.uid, u.gid));
        let service = Service::start(
            dataplane.clone(),
            config,
            etcd_at_start,
            service::WireGuardPlan { table_at_start: wireguard_at_start, settings: wireguard },
            owner,
            metrics,
            metrics_from_flag,
        )?;
        spawn_housekeeping(&dataplane);
        if let Some(addr) = metrics {
            serve_metrics(&dataplane, addr).await?;
        }
        // Joining may wait out a crashed predecessor's lease: a signal meanwhile stops here.
        let cluster = tokio::select! {
            c = join_cluster(&dataplane, cluster) => c?,
            _ = signals.wait(&service) => {
                info!("shutting down before joining the cluster");
                service.close();
                return Ok(());
            }
        };
        if let Some(user) = user {
            user.become_user()?;
            info!(user = user.name, uid = user.uid, "dropped root: running without capabilities");
        }
        // Names only: a handle kept here would keep a TAP open after a reload removed it.
        let devs: Vec<String> = dataplane.networks().iter().map(|n| n.config.dev.clone()).collect();
        info!(networks = ?devs, "ready");
        ops::notify_ready(&format!("forwarding on {}", devs.join(", ")));
        signals.wait(&service).await;
        info!("shutting down");
        ops::notify_stopping();
        if let Some(cluster) = cluster {
            cluster.shutdown().await;
        }
        service.close();
        Ok::<(), anyhow::Error>(())
    })?;
    // The packet threads block in read/recv; exiting closes the TAPs, which removes the ones we
    // created (they are not persistent).
    std::process::exit(0)
}

/// Serves `/metrics` at `addr` on this (the control side's) runtime; bound before `ready`.
async fn serve_metrics(dataplane: &Arc<Dataplane>, addr: SocketAddr) -> Result<()> {
    use vxtap::control::metrics::Metrics;
    use vxtap::node::metrics_http as http;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("metrics on {addr}"))?;
    let metrics = Arc::new(Metrics::new(dataplane.clone()));
    tokio::spawn(http::serve(listener, metrics, http::Limits::default()));
    info!(%addr, "serving metrics at http://{addr}/metrics");
    Ok(())
}

/// The timers of the control side: FDB ageing every second, the drop summary every 5 s, the
/// WireGuard timers (handshakes, keepalives, the rate limiter) every 250 ms.
fn spawn_housekeeping(dataplane: &Arc<Dataplane>) {
    if dataplane.wireguard() {
        let dp = dataplane.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(vxtap::node::WG_TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                dp.wg_tick();
            }
        });
    }
    let dp = dataplane.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            dp.refresh_path_mtus();
            let n = dp.expire();
            if n > 0 {
                tracing::debug!(expired = n, "fdb entries aged out");
            }
        }
    });
    let dp = dataplane.clone();
    tokio::spawn(async move {
        let mut reporter = dp.drop_reporter();
        let mut tick = tokio::time::interval(DROP_REPORT_PERIOD);
        tick.tick().await;
        loop {
            tick.tick().await;
            reporter.report(&dp, DROP_REPORT_PERIOD);
        }
    });
}

/// Joins the cluster (`--etcd`) once the TAPs are up: registers (a live process with the same
/// node name is an error), then keeps the tables in step with etcd on this runtime. etcd being
/// down is not an error: the networks run with their static configuration meanwhile.
async fn join_cluster(
    dataplane: &Arc<Dataplane>,
    settings: Option<vxtap::config::etcd::Settings>,
) -> Result<Option<vxtap::node::ClusterHandle>> {
    let Some(settings) = settings else { return Ok(None) };
    let status = Arc::new(vxtap::control::cluster::Status::new());
    let nets = dataplane.attach_cluster(status.clone());
    let tables: Arc<dyn vxtap::control::cluster::Tables> = dataplane.clone();
    Ok(Some(vxtap::node::start_cluster(settings, nets, tables, status).await?))
}

/// SIGTERM and SIGINT, installed before `ready` is logged so that a signal sent right after it
/// takes the clean path rather than the default action; and SIGHUP (systemd's ExecReload), which
/// reloads the configuration file.
pub(crate) struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// Waits for SIGTERM or SIGINT; on SIGHUP, `service` reloads its configuration.
    async fn wait(&mut self, service: &Arc<Service>) {
        loop {
            tokio::select! {
                _ = self.term.recv() => return,
                _ = self.int.recv() => return,
                _ = self.hup.recv() => service.reload_on_signal(),
            }
        }
    }
}

/// `vxtap genkey`: a new WireGuard private key on stdout, as `wg genkey` prints it. Like `wg`,
/// warns when stdout is a file others may read.
fn genkey() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata("/proc/self/fd/1") {
        if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "warning: writing a private key to a file its group or others may read; \
                 consider `umask 077` first, or `chmod 600` it"
            );
        }
    }
    let key = vxtap::config::wireguard::PrivateKey::generate().map_err(anyhow::Error::msg)?;
    println!("{}", key.to_base64());
    Ok(())
}

/// `vxtap pubkey`: the public key of the private key on stdin, as `wg pubkey` prints it.
fn pubkey() -> Result<()> {
    use std::io::Read;
    let mut text = String::new();
    // A key is 44 characters: a bounded read, so a stream on stdin cannot take memory.
    std::io::stdin().take(4096).read_to_string(&mut text).context("reading stdin")?;
    let key = vxtap::config::wireguard::PrivateKey::from_base64(&text)
        .map_err(|e| anyhow::anyhow!("stdin: {e}"))?;
    println!("{}", key.public_key());
    Ok(())
}

fn bench(seconds: f64, sizes: &[usize], json: bool) -> Result<()> {
    if !(seconds > 0.0 && seconds <= 3600.0) {
        anyhow::bail!("--duration must be between 0 and 3600 seconds");
    }
    let sizes = if sizes.is_empty() { &bench::DEFAULT_SIZES[..] } else { sizes };
    let results = bench::run(sizes, Duration::from_secs_f64(seconds), !json)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    } else {
        print!("{}", bench::table(&results));
    }
    Ok(())
}

/// Asks the VTEP behind `target` and prints the typed result: as JSON, or for people.
fn show<R>(target: &Target, req: &Request, json: bool, human: fn(&R)) -> Result<()>
where
    R: serde::de::DeserializeOwned + serde::Serialize,
{
    let reply: R = control_client::request(&target.path(), req)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else {
        human(&reply);
    }
    Ok(())
}

/// `vxtap reload`: asks the VTEP behind `target` to re-read its configuration file, and prints
/// what happened to each network. Fails (non-zero exit) when the file was refused or some
/// network could not be set up.
fn reload(target: &Target, json: bool) -> Result<()> {
    let reloaded: Reloaded =
        control_client::request_timeout(&target.path(), &Request::Reload, RELOAD_TIMEOUT)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reloaded)?);
    } else {
        for r in &reloaded.networks {
            let details =
                if r.details.is_empty() { String::new() } else { format!(": {}", r.details.join("; ")) };
            let error = r.error.as_ref().map(|e| format!(" ({e})")).unwrap_or_default();
            println!("{} vni {} {}{details}{error}", r.dev, r.vni, r.action.as_str());
        }
        for note in &reloaded.notes {
            println!("note: {note}");
        }
    }
    if reloaded.failed() {
        anyhow::bail!("some networks could not be set up as configured");
    }
    Ok(())
}

/// How long `vxtap reload` waits: TAPs are created, sockets bound, threads switched.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(60);

/// One line per entry, in the spirit of `bridge fdb show`.
fn print_fdb(rows: &Vec<FdbRow>) {
    for e in rows {
        let age = if e.kind == FdbKind::Learned { format!(" age {}s", e.age_secs) } else { String::new() };
        println!("{} dst {} port {} vni {} {}{age}", e.mac, e.dst, e.port, e.vni, e.kind.as_str());
    }
}

/// One line per remote VTEP.
fn print_peers(rows: &Vec<PeerRow>) {
    for p in rows {
        let opt = |v: Option<u64>, unit: &str| v.map_or("-".to_string(), |v| format!("{v}{unit}"));
        println!(
            "{} port {} vni {} {}{} pmtu {} last seen {}",
            p.dst,
            p.port,
            p.vni,
            p.source.as_str(),
            p.node.as_ref().map(|n| format!(" node {n}")).unwrap_or_default(),
            opt(p.pmtu.map(u64::from), ""),
            opt(p.last_seen_secs, "s ago"),
        );
    }
}

/// One line per neighbour, in the spirit of `ip neigh show`.
fn print_neigh(rows: &Vec<NeighRow>) {
    for n in rows {
        println!("{} lladdr {} vni {} {}", n.ip, n.mac, n.vni, n.source.as_str());
    }
}

fn print_stats(stats: &Stats) {
    for (k, val) in &stats.0 {
        println!("{k:<28} {val}");
    }
}
