//! vxtap: a userspace VXLAN (RFC 7348) and Geneve (RFC 8926) dataplane over a Linux TAP device.
//!
//! The crate is layered so that everything about the protocols can be tested without devices:
//! - [`wire`]: zero-copy parse/emit of the VXLAN and Geneve headers and their receive policies;
//! - [`flow`]: the outer UDP source port derived from the inner flow;
//! - [`fdb`]: the MAC-to-VTEP forwarding table with learning, ageing and flood lists;
//! - [`offload`]: TCP segmentation and receive coalescing for the TAP's offloads, also pure;
//! - [`reload`]: what a reload of the configuration changes, network by network, also pure;
//! - [`pipeline`]: the per-packet work (encapsulate, decapsulate, learn) with no I/O, and [`stats`];
//! - [`pmtu`] and [`dsfield`]: path MTU handling and the outer DS field, also pure;
//! - [`neigh`] and [`proxy`]: the neighbour table and ARP/ND suppression, also pure;
//! - [`cluster`]: the cluster control plane on etcd: its pure part (keys, member records,
//!   reconciliation) and, with the `etcd` feature, the task that talks to etcd;
//! - [`metrics`]: the Prometheus exporter, reading the dataplane's counters at scrape time;
//! - [`dataplane`]: the part that owns devices, sockets and threads.
//!
//! The `vxtap` binary adds the command line, `vxtap bench` and `vxtap demo` on top. The test bed
//! (network namespaces with VTEPs in them, for the demo and the end-to-end tests) is a separate
//! crate of this workspace, `vxtap-testbed` in `testbed/`, and not part of this library's API.

#![deny(unsafe_code)]
#![warn(unreachable_pub)]

pub mod config;
pub mod control;
pub mod node;
pub mod packet;
pub mod state;
pub mod wire;

pub use wire::mac::MacAddr;
