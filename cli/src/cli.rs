//! Command-line interface: every flag and command, documented in docs/usage.md.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use vxtap::config::etcd::{self as settings, EtcdConfig, Settings};
use vxtap::config::wireguard::{self, PeerConfig, WireGuardConfig};
use vxtap::config::{self, parse_proto, Endpoint, NetworkConfig, DEFAULT_DEV};
use vxtap::wire::mac::MacAddr;
use vxtap::wire::Proto;

#[derive(Parser, Debug)]
#[command(
    name = "vxtap",
    version,
    about = "Userspace VXLAN (RFC 7348) and Geneve (RFC 8926) VTEP over a Linux TAP device",
    long_about = "vxtap bridges a TAP device onto a VXLAN or Geneve overlay: frames read from the TAP are \
encapsulated and sent over UDP to the VTEP that owns the destination MAC (broadcast, multicast and \
unknown unicast go to every --remote and, with --etcd, every cluster member); datagrams received are \
checked, decapsulated and written to the TAP.\n\n\
Logging goes to stderr; set RUST_LOG (e.g. RUST_LOG=debug) to change its level."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a VTEP in the foreground (needs root or CAP_NET_ADMIN)
    Run(Box<RunArgs>),
    /// Show or change the forwarding table of a running VTEP
    #[command(subcommand)]
    Fdb(FdbCommand),
    /// Show packet and drop counters of a running VTEP
    Stats {
        #[command(flatten)]
        target: Target,
        /// Print a JSON object instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Show the remote VTEPs of a running VTEP: how each is known, the path MTU towards it, when
    /// it was last heard from
    Peers {
        #[command(flatten)]
        target: Target,
        /// Print a JSON array of {"dst","port","vni","source","node","pmtu","last_seen_secs"}
        #[arg(long)]
        json: bool,
    },
    /// Re-read the configuration file of a running VTEP and apply it, as SIGHUP does
    #[command(
        long_about = "Re-read the configuration file (--config) of a running VTEP and apply it, as SIGHUP \
does. Networks added or removed, remotes, static entries, allow_from, strict_reserved, learning, ageing, \
max_fdb, df, mss_clamp and tos change in place, without disturbing the networks that did not change. A \
change to any other setting of a network (its TAP, VNI, protocol, address, port, MTU, queues...) restarts \
that network alone (or, when the socket it shares with others must change as a whole, the networks on that \
socket). A file that does not parse or validate is refused with the reason, and nothing changes. \
Prints what happened to each network; exits non-zero if the file was refused or a network could not be \
set up. Any network's control socket reaches the process."
    )]
    Reload {
        #[command(flatten)]
        target: Target,
        /// Print a JSON object {"networks": [{"dev","vni","action","details","error"}], "notes": [...]}
        #[arg(long)]
        json: bool,
    },
    /// Benchmark the encapsulation/decapsulation pipeline in process (no root, no devices)
    Bench {
        /// Seconds per case, direction and frame size
        #[arg(long, default_value_t = 1.0)]
        duration: f64,
        /// Frame size in bytes (repeatable) [default: 64, 512 and 1450]
        #[arg(long = "size", value_name = "BYTES")]
        sizes: Vec<usize>,
        /// Print JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Demo: two network namespaces, a VTEP in each, traffic across, then everything removed (root)
    Demo {
        /// Tunnel protocol of the demo
        #[arg(long, default_value = "vxlan", value_parser = parse_proto)]
        proto: Proto,
        /// Megabytes to send through the overlay for the throughput figure
        #[arg(long, default_value_t = 100)]
        megabytes: usize,
        /// Three VTEPs and a throw-away etcd instead: they find each other with no --remote
        /// (needs a build with --features etcd, and etcd installed)
        #[arg(long)]
        cluster: bool,
    },
    /// Show or change the neighbour table (ARP/ND suppression, --proxy) of a running VTEP
    #[command(subcommand)]
    Neigh(NeighCommand),
    /// Print a shell completion script, e.g. `vxtap completions bash > /etc/bash_completion.d/vxtap`
    Completions {
        /// bash, zsh or fish (also elvish, powershell)
        shell: clap_complete::Shell,
    },
    /// Print the manual page vxtap(1) in roff, e.g. `vxtap man > /usr/share/man/man1/vxtap.1`
    Man,
    /// Print a new WireGuard private key, as `wg genkey` does: `(umask 077; vxtap genkey > wg.key)`
    Genkey,
    /// Read a WireGuard private key on stdin and print its public key, as `wg pubkey` does:
    /// `vxtap pubkey < wg.key`
    Pubkey,
    /// Be a flannel host (etcd subnet manager, vxlan backend): what flanneld and the kernel's
    /// flannel.<VNI> device do, on a host without the vxlan module (docs/flannel.md)
    #[command(
        long_about = "Be one host of a flannel cluster (etcd subnet manager, vxlan backend), doing what \
flanneld and the kernel's flannel.<VNI> device do there, on a host without the vxlan module: hold a \
subnet lease in etcd (reused across restarts), open the TAP flannel.<VNI> (MAC = the lease's VtepMAC, \
address = the subnet's .0/32, MTU = the underlay's - 50), write the subnet file flannel's CNI plugin \
reads, and route to every other vxlan host's subnet (route via its .0 onlink, a permanent neighbour \
entry, an FDB entry towards its PublicIP), following the leases as they come and go. The other hosts \
keep running flannel. Needs a build with the etcd feature (docs/flannel.md)."
    )]
    Flannel(Box<FlannelArgs>),
}

/// How to reach a secured etcd: TLS and a user, the same flags for `vxtap run` and `vxtap flannel`.
#[derive(Args, Debug, Clone, Default)]
pub struct EtcdAccess {
    /// CA certificate (PEM) that signed etcd's certificate: TLS to etcd (https:// endpoints)
    #[arg(long, value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate (PEM) for etcd, with --etcd-key
    #[arg(long, value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,
    /// Key (PEM) of --etcd-cert
    #[arg(long, value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,
    /// etcd user; the password comes from the VXTAP_ETCD_PASSWORD environment variable (for
    /// `vxtap run`, also the config file's [etcd] table), never from a flag
    #[arg(long, value_name = "USER")]
    pub etcd_user: Option<String>,
}

/// `vxtap flannel`'s flags.
#[derive(Args, Debug)]
pub struct FlannelArgs {
    /// etcd endpoints, comma-separated (http://HOST:PORT, or https:// with --etcd-ca)
    #[arg(long, value_name = "URL[,URL...]", value_delimiter = ',', required = true)]
    pub etcd: Vec<String>,
    /// flannel's key prefix in etcd
    #[arg(long, value_name = "PREFIX", default_value = vxtap::control::flannel::DEFAULT_PREFIX)]
    pub etcd_prefix: String,
    #[command(flatten)]
    pub etcd_access: EtcdAccess,
    /// This host's address, published in its lease as PublicIP [default: the first IPv4 address
    /// of --iface, or of the interface of the default route]
    #[arg(long, value_name = "IPV4")]
    pub public_ip: Option<std::net::Ipv4Addr>,
    /// The underlay interface (its MTU sets the TAP's) [default: the one holding --public-ip, or
    /// the interface of the default route]
    #[arg(long, value_name = "IFACE")]
    pub iface: Option<String>,
    /// Where to write FLANNEL_NETWORK, FLANNEL_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ for the CNI plugin
    #[arg(long, value_name = "FILE", default_value = vxtap::control::flannel::DEFAULT_SUBNET_FILE)]
    pub subnet_file: PathBuf,
    /// The TAP's name [default: flannel.<VNI>]
    #[arg(long, value_name = "NAME")]
    pub dev: Option<String>,
    /// Write FLANNEL_IPMASQ=true in the subnet file (vxtap itself sets up no masquerading)
    #[arg(long)]
    pub ip_masq: bool,
    /// Control socket path [default: /run/vxtap/<NETNS>/<TAP>.sock]
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics [default: off]
    #[arg(long, value_name = "ADDR:PORT", value_parser = config::parse_metrics_addr)]
    pub metrics: Option<SocketAddr>,
    /// Log format on stderr: text, or json (one object per line, for log collectors)
    #[arg(long, value_name = "text|json", default_value = "text")]
    pub log_format: LogFormat,
}

impl FlannelArgs {
    /// The etcd connection settings, checked (the password from VXTAP_ETCD_PASSWORD).
    #[cfg_attr(not(feature = "etcd"), allow(dead_code))] // without etcd, `vxtap flannel` refuses first
    pub fn etcd_settings(&self, env_password: Option<String>) -> Result<Settings, String> {
        EtcdConfig {
            endpoints: self.etcd.clone(),
            prefix: Some(self.etcd_prefix.clone()),
            node: None,
            ttl: None,
            ca: self.etcd_access.etcd_ca.clone(),
            cert: self.etcd_access.etcd_cert.clone(),
            key: self.etcd_access.etcd_key.clone(),
            user: self.etcd_access.etcd_user.clone(),
            password: None,
        }
        .settings(env_password, &settings::hostname())
    }
}

/// How `vxtap run` writes its log to stderr.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Lines for people (colours only on a terminal)
    #[default]
    Text,
    /// One JSON object per line: timestamp, level, message, fields, target
    Json,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The network the flags describe: every flag of `config::NetworkConfig`, which is also a
    /// `[[network]]` table of the config file.
    #[command(flatten)]
    pub network: NetworkConfig,
    /// After setup, drop root and run as this user (name or uid), keeping no capability; the
    /// control sockets are given to that user
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,
    /// TOML file with one or more [[network]] tables (docs/usage.md "Several networks in one process"); replaces the flags above
    #[arg(long, value_name = "FILE", conflicts_with = "network")]
    pub config: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR:PORT/metrics, e.g. 127.0.0.1:9477 (overrides the
    /// config file's `metrics`) [default: off]
    #[arg(long, value_name = "ADDR:PORT", value_parser = config::parse_metrics_addr)]
    pub metrics: Option<SocketAddr>,
    /// Log format on stderr: text, or json (one object per line, for log collectors)
    #[arg(long, value_name = "text|json", default_value = "text")]
    pub log_format: LogFormat,
    /// etcd endpoints of a cluster to join, comma-separated (http://HOST:PORT, or https:// with
    /// --etcd-ca): the members find each other there and need no --remote or --static
    /// (docs/clusters.md). Needs --local. With --config, these --etcd* flags override its [etcd] table
    #[arg(long, value_name = "URL[,URL...]", value_delimiter = ',')]
    pub etcd: Vec<String>,
    /// Key prefix of the cluster in etcd [default: /vxtap/v1]
    #[arg(long, value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// This host's name in the cluster, unique among its members [default: the hostname]
    #[arg(long, value_name = "NAME")]
    pub node: Option<String>,
    /// etcd lease time to live: how long a crashed member stays in the others' tables, in seconds
    /// (a clean exit leaves at once) [default: 15]
    #[arg(long, value_name = "SECS")]
    pub etcd_ttl: Option<u64>,
    #[command(flatten)]
    pub etcd_access: EtcdAccess,
    /// WireGuard: this host's private key file, as `wg genkey` (or `vxtap genkey`) writes it;
    /// refused unless only its owner may read it (chmod 600). With --wg-address and --wg-peer,
    /// every network travels encrypted to the peers (docs/usage.md "Encrypted underlay"). With
    /// --config, these --wg-* flags override its [wireguard] table
    #[arg(long, value_name = "FILE")]
    pub wg_private_key: Option<PathBuf>,
    /// WireGuard UDP port [default: 51820]
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub wg_listen_port: Option<u16>,
    /// This host's tunnel address inside WireGuard: datagrams are sent from it, and --remote and
    /// --static name the peers' tunnel addresses
    #[arg(long, value_name = "IP")]
    pub wg_address: Option<IpAddr>,
    /// A WireGuard peer (repeatable): its public key, where its WireGuard listens, its tunnel
    /// address, and optionally a persistent keepalive and a preshared key file (chmod 600)
    #[arg(long, value_name = wireguard::PEER_SYNTAX)]
    pub wg_peer: Vec<PeerConfig>,
}

/// What `vxtap run` is to do, from its flags and its config file (read once).
pub struct RunPlan {
    pub networks: Vec<NetworkConfig>,
    /// Where to serve `/metrics`: `--metrics`, else the config file's `metrics`, else nowhere.
    pub metrics: Option<SocketAddr>,
    /// The cluster to join, checked: the config file's [etcd] table with the --etcd* flags over
    /// it; None when neither names one.
    pub cluster: Option<Settings>,
    /// The config file's [etcd] table as read at start, which a reload compares against.
    pub etcd_at_start: Option<EtcdConfig>,
    /// The encrypted underlay, checked: the config file's [wireguard] table with the --wg-* flags
    /// over it, its keys read; None when neither sets anything. The networks already count it
    /// (`NetworkConfig::encryption`).
    pub wireguard: Option<wireguard::Settings>,
    /// The config file's [wireguard] table as read at start, which a reload compares against.
    pub wireguard_at_start: Option<WireGuardConfig>,
}

impl RunArgs {
    /// Reads the config file, if any, once, and checks what the flags and it say together.
    pub fn plan(&self) -> Result<RunPlan, String> {
        let file = self.config.as_deref().map(config::load).transpose()?;
        let (mut networks, file_metrics, file_etcd, file_wireguard) = match file {
            Some(f) => (f.networks, f.metrics, f.etcd, f.wireguard),
            None => (vec![self.network.clone()], None, None, None),
        };
        config::validate(&networks)?;
        let flags = WireGuardConfig {
            private_key: self.wg_private_key.clone(),
            listen_port: self.wg_listen_port,
            address: self.wg_address,
            peers: self.wg_peer.clone(),
        };
        let wg = file_wireguard.clone().unwrap_or_default().merged(flags);
        let wireguard = if wg.is_empty() {
            None
        } else {
            let s = wg.settings()?;
            s.apply(&mut networks)?;
            Some(s)
        };
        let flags = EtcdConfig {
            endpoints: self.etcd.clone(),
            prefix: self.etcd_prefix.clone(),
            node: self.node.clone(),
            ttl: self.etcd_ttl,
            ca: self.etcd_access.etcd_ca.clone(),
            cert: self.etcd_access.etcd_cert.clone(),
            key: self.etcd_access.etcd_key.clone(),
            user: self.etcd_access.etcd_user.clone(),
            password: None,
        };
        let etcd = file_etcd.clone().unwrap_or_default().merged(flags);
        let cluster = if etcd.is_empty() {
            None
        } else {
            let password = std::env::var(settings::PASSWORD_ENV).ok();
            let s = etcd.settings(password, &settings::hostname())?;
            config::check_cluster(&networks)?;
            Some(s)
        };
        Ok(RunPlan {
            networks,
            metrics: self.metrics.or(file_metrics),
            cluster,
            etcd_at_start: file_etcd,
            wireguard,
            wireguard_at_start: file_wireguard,
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum NeighCommand {
    /// List the neighbour table (overlay IP -> MAC) that --proxy answers from
    Show {
        #[command(flatten)]
        target: Target,
        /// Print a JSON array of {"ip","mac","vni","source"}
        #[arg(long)]
        json: bool,
    },
    /// Add or replace a static neighbour entry IP -> MAC
    Add {
        ip: IpAddr,
        mac: MacAddr,
        #[command(flatten)]
        target: Target,
    },
    /// Delete a static neighbour entry
    Del {
        ip: IpAddr,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand, Debug)]
pub enum FdbCommand {
    /// List learned and static entries and the flood list
    Show {
        #[command(flatten)]
        target: Target,
        /// Print a JSON array of {"mac","dst","port","vni","kind","age_secs"}
        #[arg(long)]
        json: bool,
    },
    /// Add a static entry MAC -> IP[:PORT]; MAC 00:00:00:00:00:00 adds a flood-list remote
    Add {
        mac: MacAddr,
        #[arg(value_name = "IP[:PORT]")]
        dst: Endpoint,
        #[command(flatten)]
        target: Target,
    },
    /// Delete an entry; for a flood-list remote give MAC 00:00:00:00:00:00 and its IP
    Del {
        mac: MacAddr,
        #[arg(value_name = "IP[:PORT]")]
        dst: Option<Endpoint>,
        #[command(flatten)]
        target: Target,
    },
}

/// Which running VTEP a client command talks to.
#[derive(Args, Debug)]
pub struct Target {
    /// TAP of the VTEP; its control socket is /run/vxtap/<NETNS>/<TAP>.sock, NETNS being the
    /// inode of this command's network namespace (run it where the VTEP runs: `ip netns exec NS vxtap ...`)
    #[arg(long, default_value = DEFAULT_DEV)]
    pub dev: String,
    /// Control socket path (overrides --dev)
    #[arg(long, value_name = "PATH")]
    pub control: Option<PathBuf>,
}

impl Target {
    pub fn path(&self) -> PathBuf {
        self.control.clone().unwrap_or_else(|| config::default_control_path(&self.dev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use vxtap::config::{FlowLabel, Ttl};
    use vxtap::packet::dsfield::Tos;
    use vxtap::packet::pmtu::{Df, MssClamp};

    /// The flags and a `[[network]]` table are one definition: the same settings, written
    /// either way, give the same network; and --config refuses every network flag.
    #[test]
    fn flags_and_file_give_the_same_network() {
        let Command::Run(r) = Cli::try_parse_from([
            "vxtap",
            "run",
            "--dev",
            "vxt7",
            "--vni",
            "7",
            "--proto",
            "geneve",
            "--local",
            "198.18.0.1",
            "--remote",
            "198.18.0.2",
            "--static",
            "02:00:00:00:00:09=198.18.0.3:6081",
            "--no-learning",
            "--ageing",
            "10",
            "--no-udp-csum",
            "--no-offload",
            "--queues",
            "2",
            "--df",
            "set",
            "--mss-clamp=1400",
            "--ttl",
            "9",
            "--tos",
            "inherit",
            "--src-ports",
            "50000-50100",
            "--max-src-ports",
            "64",
            "--allow-from",
            "198.18.0.0/24",
            "--cpu-pinning",
            "--proxy",
        ])
        .unwrap()
        .command
        else {
            panic!()
        };
        let from_file = config::parse(
            r#"[[network]]
            dev = "vxt7"
            vni = 7
            proto = "geneve"
            local = "198.18.0.1"
            remotes = ["198.18.0.2"]
            statics = ["02:00:00:00:00:09=198.18.0.3:6081"]
            learning = false
            ageing = 10
            udp_csum = false
            offload = false
            queues = 2
            df = "set"
            mss_clamp = 1400
            ttl = "9"
            tos = "inherit"
            src_ports = "50000-50100"
            max_src_ports = 64
            allow_from = ["198.18.0.0/24"]
            cpu_pinning = true
            proxy = true
            "#,
        )
        .unwrap();
        assert_eq!(r.plan().unwrap().networks, from_file.networks);
        let Command::Run(defaults) = Cli::try_parse_from(["vxtap", "run", "--vni", "7"]).unwrap().command
        else {
            panic!()
        };
        let file_defaults = config::parse("[[network]]\nvni = 7\n").unwrap();
        assert_eq!(defaults.plan().unwrap().networks, file_defaults.networks, "the same defaults");
        for flag in [&["--vni", "7"][..], &["--no-learning"], &["--proxy"], &["--remote", "198.18.0.2"]] {
            let args = [&["vxtap", "run", "--config", "/nonexistent.toml"][..], flag].concat();
            assert_eq!(
                Cli::try_parse_from(args).unwrap_err().kind(),
                clap::error::ErrorKind::ArgumentConflict
            );
        }
    }

    #[test]
    fn flannel_flags() {
        let parse = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Flannel(f)) => Ok(f),
            Ok(c) => panic!("{c:?}"),
            Err(e) => Err(e.exit_code()),
        };
        let f =
            parse(&["vxtap", "flannel", "--etcd", "http://198.18.0.9:2379,http://198.18.0.10:2379"]).unwrap();
        assert_eq!(f.etcd_prefix, "/coreos.com/network");
        assert_eq!(f.subnet_file, PathBuf::from("/run/flannel/subnet.env"));
        assert_eq!((f.dev.as_deref(), f.public_ip, f.ip_masq), (None, None, false));
        let s = f.etcd_settings(None).unwrap();
        assert_eq!(s.endpoints, ["http://198.18.0.9:2379", "http://198.18.0.10:2379"]);
        assert_eq!(s.prefix, "/coreos.com/network");
        assert_eq!(parse(&["vxtap", "flannel"]).unwrap_err(), 2, "--etcd is required");
        assert_eq!(parse(&["vxtap", "flannel", "--etcd", "h:1", "--public-ip", "fc00::1"]).unwrap_err(), 2);
        let f = parse(&[
            "vxtap",
            "flannel",
            "--etcd",
            "h:1",
            "--etcd-user",
            "flannel",
            "--public-ip",
            "198.18.0.1",
            "--iface",
            "eth0",
            "--dev",
            "flannel.7",
            "--ip-masq",
            "--metrics",
            "198.18.0.1:9477",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(f.public_ip, Some(std::net::Ipv4Addr::new(198, 18, 0, 1)));
        assert!(f.etcd_settings(None).unwrap_err().contains("password"), "a user needs the password");
        assert!(f.etcd_settings(Some("pw".into())).unwrap().auth.is_some());
    }

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_values_are_rejected() {
        for args in [
            &["vxtap", "run", "--vni", "16777216"][..],
            &["vxtap", "run", "--vni", "1", "--proto", "gre"],
            &["vxtap", "run", "--vni", "1", "--static", "zz=198.18.0.2"],
            &["vxtap", "run", "--vni", "1", "--remote", "nowhere"],
            &["vxtap", "run", "--vni", "1", "--address", "198.19.0.1"],
            &["vxtap", "run"],
            &["vxtap", "run", "--vni", "1", "--df", "sometimes"],
            &["vxtap", "run", "--vni", "1", "--mss-clamp=100"],
            &["vxtap", "run", "--vni", "1", "--ttl", "0"],
            &["vxtap", "run", "--vni", "1", "--tos", "300"],
            &["vxtap", "run", "--vni", "1", "--flowlabel", "2000000"],
            &["vxtap", "run", "--vni", "1", "--group", "nowhere"],
        ] {
            let e = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
        }
        let ok = Cli::try_parse_from(["vxtap", "run", "--vni", "16777215", "--remote", "198.18.0.2:8472"])
            .unwrap();
        let Command::Run(r) = ok.command else { panic!() };
        let n = r.plan().unwrap().networks;
        assert_eq!((n[0].vni, n[0].remotes[0].port), (16777215, Some(8472)));
        assert_eq!((n[0].df, n[0].mss_clamp), (Df::Inherit, None));
        let parse = |args: &[&str]| {
            let Command::Run(r) = Cli::try_parse_from(args).unwrap().command else { panic!() };
            r.plan().unwrap().networks.remove(0)
        };
        let n = parse(&["vxtap", "run", "--vni", "1", "--df", "unset", "--mss-clamp"]);
        assert_eq!((n.df, n.mss_clamp), (Df::Unset, Some(MssClamp::Auto)));
        let n = parse(&["vxtap", "run", "--vni", "1", "--mss-clamp=1400"]);
        assert_eq!(n.mss_clamp, Some(MssClamp::PathMtu(1400)));
        let n = parse(&[
            "vxtap",
            "run",
            "--vni",
            "1",
            "--ttl",
            "8",
            "--tos",
            "inherit",
            "--local",
            "2001:db8::1",
            "--flowlabel",
            "0x12345",
        ]);
        assert_eq!((n.ttl, n.tos, n.flowlabel), (Ttl::Hops(8), Tos::Inherit, FlowLabel::Fixed(0x12345)));
        let group = ["vxtap", "run", "--vni", "1", "--group", "239.1.1.1", "--underlay-dev", "ul0"];
        let Command::Run(r) = Cli::try_parse_from(group).unwrap().command else { panic!() };
        let e = r.plan().err().unwrap();
        assert!(e.contains("--allow-from"), "group mode without an allowlist: {e}");
        let n = parse(&[&group[..], &["--allow-from", "198.18.0.0/24"]].concat());
        assert_eq!((n.group, n.underlay_dev.as_deref()), ("239.1.1.1".parse().ok(), Some("ul0")));
    }

    #[test]
    fn operations_flags() {
        let run = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Run(r)) => Ok(r),
            Ok(c) => panic!("{c:?}"),
            Err(e) => Err(e.exit_code()),
        };
        let r = run(&["vxtap", "run", "--vni", "1"]).unwrap();
        assert_eq!(
            (r.plan().unwrap().metrics, r.log_format),
            (None, LogFormat::Text),
            "off and text by default"
        );
        let r = run(&["vxtap", "run", "--vni", "1", "--metrics", "198.18.0.1:9477", "--log-format", "json"]);
        let r = r.unwrap();
        assert_eq!(
            (r.plan().unwrap().metrics, r.log_format),
            (Some("198.18.0.1:9477".parse().unwrap()), LogFormat::Json)
        );
        for bad in [&["--metrics", "198.18.0.1"][..], &["--metrics", "[::1]:0"], &["--log-format", "xml"]] {
            assert_eq!(run(&[&["vxtap", "run", "--vni", "1"][..], bad].concat()).unwrap_err(), 2, "{bad:?}");
        }
        let dir = std::env::temp_dir().join(format!("vxtap-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "metrics = \"198.18.0.1:9100\"\n[[network]]\nvni = 42\n").unwrap();
        let f = file.to_str().unwrap();
        let from_file = run(&["vxtap", "run", "--config", f]).unwrap();
        assert_eq!(from_file.plan().unwrap().metrics, Some("198.18.0.1:9100".parse().unwrap()));
        let flag_wins = run(&["vxtap", "run", "--config", f, "--metrics", "198.18.0.1:9200"]).unwrap();
        assert_eq!(flag_wins.plan().unwrap().metrics, Some("198.18.0.1:9200".parse().unwrap()));
        let _ = std::fs::remove_dir_all(dir);
        let Command::Completions { shell } =
            Cli::try_parse_from(["vxtap", "completions", "zsh"]).unwrap().command
        else {
            panic!()
        };
        assert_eq!(shell, clap_complete::Shell::Zsh);
        assert!(Cli::try_parse_from(["vxtap", "completions", "tcsh"]).is_err());
    }

    #[test]
    fn proxy_and_etcd_flags() {
        let parse = |args: &[&str]| {
            let Command::Run(r) = Cli::try_parse_from(args).unwrap().command else { panic!() };
            r.plan().unwrap().networks.remove(0)
        };
        assert!(parse(&["vxtap", "run", "--vni", "1", "--proxy"]).proxy);
        let run = |args: &[&str]| {
            let Command::Run(r) = Cli::try_parse_from(args).unwrap().command else { panic!() };
            r.plan().map(|p| p.cluster)
        };
        assert_eq!(run(&["vxtap", "run", "--vni", "1"]), Ok(None));
        let s = run(&[
            "vxtap",
            "run",
            "--vni",
            "1",
            "--local",
            "198.18.0.1",
            "--etcd",
            "http://198.18.0.9:2379,198.18.0.10:2379",
            "--node",
            "a",
            "--etcd-ttl",
            "3",
            "--etcd-prefix",
            "/lab",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.endpoints, ["http://198.18.0.9:2379", "http://198.18.0.10:2379"]);
        assert_eq!((s.node.as_str(), s.ttl, s.prefix.as_str()), ("a", 3, "/lab"));
        let err = run(&["vxtap", "run", "--vni", "1", "--etcd", "http://198.18.0.9:2379", "--node", "a"]);
        assert!(err.unwrap_err().contains("--local"), "the wildcard cannot be published");
        let err = run(&["vxtap", "run", "--vni", "1", "--local", "198.18.0.1", "--node", "a"]);
        assert!(err.unwrap_err().contains("no endpoint"), "--node alone names no cluster");
        let err =
            run(&["vxtap", "run", "--vni", "1", "--local", "198.18.0.1", "--etcd", "h:1", "--etcd-ttl", "0"]);
        assert!(err.unwrap_err().contains("ttl 0"));
        assert!(
            Cli::try_parse_from(["vxtap", "run", "--vni", "1", "--etcd-password", "x"]).is_err(),
            "no such flag"
        );
        assert!(
            Cli::try_parse_from(["vxtap", "run", "--config", "f.toml", "--proxy"]).is_err(),
            "per network"
        );
        assert!(
            Cli::try_parse_from(["vxtap", "run", "--config", "f.toml", "--etcd", "h:1"]).is_ok(),
            "process-wide"
        );
        assert!(Cli::try_parse_from(["vxtap", "neigh", "add", "198.19.0.2", "02:00:00:00:00:02"]).is_ok());
        assert!(Cli::try_parse_from(["vxtap", "neigh", "del", "nowhere"]).is_err());
    }

    /// The --wg-* flags and a [wireguard] table are the same settings; flags win over the file;
    /// the networks' MTU counts WireGuard; genkey and pubkey are commands.
    #[test]
    fn wireguard_flags_and_table() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("vxtap-cli-wg-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("wg.key");
        // RFC 7748's Alice; Bob's public key.
        std::fs::write(&key, "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=\n").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let bob = "3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=";
        let run = |args: &[&str]| {
            let Command::Run(r) = Cli::try_parse_from(args).unwrap().command else { panic!() };
            r.plan()
        };
        let k = key.to_str().unwrap();
        let peer = format!("{bob},endpoint=198.18.0.2:51820,tunnel=10.77.0.2,keepalive=25");
        let flags = ["vxtap", "run", "--vni", "42", "--remote", "10.77.0.2", "--wg-private-key", k];
        let flags =
            [&flags[..], &["--wg-address", "10.77.0.1", "--wg-peer", &peer, "--wg-listen-port", "51000"]]
                .concat();
        let plan = run(&flags).unwrap();
        let wg = plan.wireguard.as_ref().expect("WireGuard on");
        assert_eq!(wg.public_key.to_string(), "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=");
        assert_eq!((wg.listen_port, wg.peers[0].keepalive), (51000, Some(25)));
        assert_eq!(plan.networks[0].mtu(), 1390, "the MTU default counts WireGuard");
        assert!(plan.wireguard_at_start.is_none(), "no file");
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            format!(
                "[wireguard]\nprivate_key = \"{k}\"\naddress = \"10.77.0.1\"\nlisten_port = 51000\n\
                 [[wireguard.peer]]\npublic_key = \"{bob}\"\nendpoint = \"198.18.0.2:51820\"\n\
                 tunnel = \"10.77.0.2\"\nkeepalive = 25\n\n[[network]]\nvni = 42\nremotes = [\"10.77.0.2\"]\n"
            ),
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let from_file = run(&["vxtap", "run", "--config", f]).unwrap();
        assert_eq!(from_file.wireguard, plan.wireguard, "the same settings");
        assert_eq!(from_file.networks, plan.networks);
        assert_eq!(from_file.wireguard_at_start.map(|t| t.peers.len()), Some(1));
        let over = run(&["vxtap", "run", "--config", f, "--wg-listen-port", "51001"]).unwrap();
        assert_eq!(over.wireguard.unwrap().listen_port, 51001, "flags win");
        let e = run(&["vxtap", "run", "--config", f, "--wg-address", "fd77::1"]).err().unwrap();
        assert!(e.contains("the tunnel is one family"), "{e}");
        assert!(run(&["vxtap", "run", "--vni", "1", "--wg-address", "10.77.0.1"])
            .err()
            .unwrap()
            .contains("private key"));
        let e = run(&[&flags[..], &["--group", "239.1.1.1", "--allow-from", "any"]].concat()).err().unwrap();
        assert!(e.contains("(--group 239.1.1.1) and WireGuard cannot go together"), "{e}");
        for bad in [
            &["--wg-listen-port", "0"][..],
            &["--wg-address", "nowhere"],
            &["--wg-peer", "AAAA,endpoint=198.18.0.2:1,tunnel=10.77.0.2"],
            &["--wg-peer", "3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=,tunnel=10.77.0.2"],
        ] {
            let e = Cli::try_parse_from([&["vxtap", "run", "--vni", "1"][..], bad].concat()).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad:?}");
        }
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(run(&flags).err().unwrap().contains("chmod 600"));
        let _ = std::fs::remove_dir_all(dir);
        assert!(matches!(Cli::try_parse_from(["vxtap", "genkey"]).unwrap().command, Command::Genkey));
        assert!(matches!(Cli::try_parse_from(["vxtap", "pubkey"]).unwrap().command, Command::Pubkey));
        assert!(Cli::try_parse_from(["vxtap", "genkey", "x"]).is_err());
    }
}
