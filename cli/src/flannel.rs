//! `vxtap flannel`: a flannel host (docs/flannel.md). Holds a lease first (the TAP's MAC and
//! address come from it), then starts the dataplane with that one network, serves its control
//! socket and `/metrics` as `vxtap run` does, applies the other leases, logs "ready" and follows
//! them until SIGTERM or SIGINT; the lease stays in etcd for the next start.

use std::process::ExitCode;

use crate::cli::FlannelArgs;
use crate::ops;

#[cfg(not(feature = "etcd"))]
pub fn run(args: &FlannelArgs) -> ExitCode {
    ops::init_logging(args.log_format);
    eprintln!("error: {}", vxtap::control::cluster::UNSUPPORTED);
    ExitCode::from(2)
}

#[cfg(feature = "etcd")]
pub fn run(args: &FlannelArgs) -> ExitCode {
    ops::init_logging(args.log_format);
    let password = std::env::var(vxtap::config::etcd::PASSWORD_ENV).ok();
    let etcd = match args.etcd_settings(password) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = vxtap::node::flannel::Options {
        etcd,
        public_ip: args.public_ip,
        iface: args.iface.clone(),
        subnet_file: args.subnet_file.clone(),
        dev: args.dev.clone(),
        ip_masq: args.ip_masq,
        control: args.control.clone(),
    };
    match serve(opts, args.metrics) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(feature = "etcd")]
fn serve(opts: vxtap::node::flannel::Options, metrics: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    use std::sync::Arc;
    use tracing::info;
    use vxtap::node::Dataplane;
    use vxtap::state::fdb::MonotonicClock;

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut signals = crate::Signals::install()?;
        let joined = tokio::select! {
            j = vxtap::node::flannel::join(opts) => j?,
            _ = signals.term.recv() => return Ok(()),
            _ = signals.int.recv() => return Ok(()),
        };
        let dev = joined.network.dev.clone();
        let subnet = joined.subnet;
        let dataplane = Arc::new(Dataplane::start(
            std::slice::from_ref(&joined.network),
            Arc::new(MonotonicClock::default()),
            None,
        )?);
        let service = crate::service::Service::start(
            dataplane.clone(),
            None,
            None,
            Default::default(),
            None,
            metrics,
            true,
        )?;
        crate::spawn_housekeeping(&dataplane);
        if let Some(addr) = metrics {
            crate::serve_metrics(&dataplane, addr).await?;
        }
        let handle = match joined.start(dataplane.clone()).await {
            Ok(h) => h,
            Err(e) => {
                service.close();
                return Err(e);
            }
        };
        info!(dev, subnet = %subnet, "ready");
        ops::notify_ready(&format!("flannel subnet {subnet} on {dev}"));
        signals.wait(&service).await;
        info!("shutting down");
        ops::notify_stopping();
        handle.shutdown().await;
        service.close();
        Ok::<(), anyhow::Error>(())
    })?;
    // As `vxtap run`: the packet threads block in read/recv; exiting closes the TAP.
    std::process::exit(0)
}
