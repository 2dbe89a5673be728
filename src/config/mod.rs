//! What a VTEP runs: one [`NetworkConfig`] per overlay network, from command-line flags or from a
//! TOML file of `[[network]]` tables. Both paths produce the same struct and pass the same checks.
//!
//! - [`network`]: one network's settings, defaults and checks (and, with the `cli` feature, the
//!   flags of `vxtap run`);
//! - [`file`]: the config file, read once, and the checks of a set of networks;
//! - [`values`]: the value types and parsers that flags and file share;
//! - [`paths`]: the default TAP name and control socket paths;
//! - [`etcd`]: the cluster settings (`[etcd]`, `--etcd*`); [`ifname`]: interface names;
//! - [`wireguard`]: the encrypted underlay's keys and settings (`[wireguard]`, `--wg-*`);
//! - [`reload`]: what a new configuration changes (the plan `node::reload` carries out).

pub mod etcd;
pub mod file;
pub mod ifname;
pub mod network;
pub mod paths;
pub mod reload;
pub mod values;
pub mod wireguard;

pub use file::{check_cluster, load, parse, validate, Settings};
pub use network::{
    default_queues, Encryption, NetworkConfig, DEFAULT_MAX_SRC_PORTS, MAX_QUEUES, MAX_SRC_PORTS,
};
pub use paths::{default_control_dir, default_control_path, netns_id, CONTROL_DIR, DEFAULT_DEV};
pub use values::{
    parse_metrics_addr, parse_proto, parse_vni, AllowFrom, Endpoint, FlowLabel, PortRangeArg, StaticEntry,
    Ttl,
};
