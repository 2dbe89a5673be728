//! vxtap: a userspace VXLAN (RFC 7348) and Geneve (RFC 8926) dataplane over a Linux TAP device.
//!
//! The crate is layered so that everything about the protocols can be tested without devices:
//! - [`wire`]: zero-copy parse/emit of the VXLAN and Geneve headers and their receive policies;
//! - [`flow`]: the outer UDP source port derived from the inner flow;
//! - [`fdb`]: the MAC-to-VTEP forwarding table with learning, ageing and flood lists;
//! - [`offload`]: TCP segmentation and receive coalescing for the TAP's offloads, also pure;
//! - [`reload`]: what a reload of the configuration changes, network by network, also pure;
//! - [`pipeline`]: the per-packet work (encapsulate, decapsulate, learn) with no I/O, and [`stats`];
//! - [`dataplane`]: the part that owns devices, sockets and threads;
//! - [`metrics`]: the Prometheus exporter, reading the dataplane's counters at scrape time.
//!
//! The `vxtap` binary adds the command line, `vxtap bench` and `vxtap demo` on top. The test bed
//! (network namespaces with VTEPs in them, for the demo and the end-to-end tests) is a separate
//! crate of this workspace, `vxtap-testbed` in `testbed/`, and not part of this library's API.

#![deny(unsafe_code)]
#![warn(unreachable_pub)]

pub mod allow;
pub mod cidr;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod dsfield;
pub mod fdb;
pub mod flow;
pub mod ifname;
pub mod mac;
pub mod metrics;
pub mod offload;
pub mod pipeline;
pub mod pmtu;
pub mod privileges;
pub mod ratelimit;
pub mod reload;
pub mod stats;
pub mod train;
pub mod wire;

pub use mac::MacAddr;
