//! The cluster control plane: VTEPs that find each other through etcd (docs/clusters.md).
//!
//! Each process registers, under a lease, one record per network ([`member`]) at a key of
//! [`key`]'s layout, lists and watches the others, and turns them into its tables: flood list,
//! FDB entries (member TAP MAC -> member VTEP), allowlist and neighbour table. This module is
//! split like the rest of vxtap:
//! - pure, tested without etcd: [`key`], [`member`], [`reconcile`] (records in, table changes
//!   out), [`settings`] (the `[etcd]` table and flags), [`status`] (counters for `vxtap stats`);
//! - with the `etcd` feature, `etcd`: the one tokio task that talks to etcd (connect, lease,
//!   register, keep alive, list, watch, resynchronise, revoke on exit). It reaches the tables
//!   only through the [`Tables`] trait, which the dataplane implements, so this module never
//!   depends on the dataplane.

pub mod key;
pub mod member;
pub mod reconcile;
pub mod status;

use std::net::{IpAddr, SocketAddr};

pub use key::NetKey;
pub use member::Member;
pub use reconcile::{Change, NetSpec};
pub use status::Status;

use crate::wire::mac::MacAddr;

/// Whether this build can run a cluster (`cargo build --features etcd`).
pub const SUPPORTED: bool = cfg!(feature = "etcd");

/// The error `vxtap run` gives for cluster options in a build without the feature.
pub const UNSUPPORTED: &str = "this vxtap was built without etcd support: cargo build --features etcd";

/// Why the cluster could not start: the process must not run (a second process with this node
/// name is alive, the TLS files cannot be read, etcd refused the user and password, or this
/// build has no etcd support).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// A network this process runs, as the cluster task follows it: the dataplane sends the whole
/// list at start and again after every reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalNet {
    pub key: NetKey,
    /// Whether its underlay is IPv6 (members of the other family are refused).
    pub v6: bool,
    /// Changes whenever the network's tables are new (opened at start, or by a reload that added
    /// or restarted it), so that the members are applied to them again.
    pub incarnation: u64,
}

/// What this process publishes about itself in one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalRecord {
    /// Where the other members send: the network's local address and port.
    pub vtep: SocketAddr,
    /// The TAP's MAC.
    pub mac: MacAddr,
    /// The TAP's addresses now.
    pub overlay: Vec<IpAddr>,
}

/// The tables of the running networks, as the cluster task sees them. Implemented by the
/// dataplane; every call is quick and synchronous (no I/O but reading the TAP's addresses), so
/// the task never holds anything across an await.
pub trait Tables: Send + Sync + 'static {
    /// This process's record for network `net`, as of now.
    fn local(&self, net: NetKey) -> LocalRecord;
    /// Applies one network's change: flood list, FDB entries, learned MACs behind members that
    /// left, neighbour table, allowlist. A network that no longer runs ignores it.
    fn apply(&self, net: NetKey, change: &Change);
}
