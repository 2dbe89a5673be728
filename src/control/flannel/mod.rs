//! flannel's etcd data model and the plan of a flannel host (docs/flannel.md): what `vxtap
//! flannel` reads from and writes to etcd, and what it makes of it. Pure: no etcd, no devices.
//!
//! - [`subnet`]: IPv4 subnets, their arithmetic, and lease keys (`198.19.1.0-24`, with the
//!   dual-stack form `198.19.1.0-24&fc00::-64` parsed);
//! - [`key`]: where the configuration and the leases are in etcd;
//! - [`config`]: `<prefix>/config`, read case-insensitively as Go's encoding/json does, with
//!   flannel's defaults and checks;
//! - [`lease`]: a lease's value (`{"PublicIP":…,"BackendType":"vxlan","BackendData":{…}}`);
//! - [`alloc`]: which subnet this host takes, as flanneld chooses it;
//! - [`plan`]: the other leases turned into the peers the host routes to, and the steps between
//!   what is applied and what should be;
//! - [`env`]: `/run/flannel/subnet.env`, written and read back;
//! - [`status`]: counters for `vxtap stats`.
//!
//! The node's side (the etcd task, netlink) is `node::flannel` (feature `etcd`).

pub mod alloc;
pub mod config;
pub mod env;
pub mod key;
pub mod lease;
pub mod plan;
pub mod status;
pub mod subnet;

pub use config::FlannelConfig;
pub use lease::Lease;
pub use status::Status;
pub use subnet::{Subnet, SubnetKey};

/// flanneld's default etcd prefix.
pub const DEFAULT_PREFIX: &str = "/coreos.com/network";
/// flanneld's default subnet file.
pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";
/// The etcd lease time of a subnet lease (flannel: 24 h), and how long before its end it is
/// renewed (flannel: an hour).
pub const LEASE_TTL_SECS: i64 = 24 * 3600;
pub const RENEW_MARGIN_SECS: i64 = 3600;
/// The overhead of the vxlan backend, which the TAP's MTU leaves room for (as flannel's
/// `flannel.<VNI>`: underlay MTU - 50).
pub const VXLAN_OVERHEAD: u32 = 50;
