//! vxtap: a userspace VXLAN (RFC 7348) and Geneve (RFC 8926) dataplane over a Linux TAP device.
//!
//! The crate is in tiers, one folder each, lowest first (docs/design.md "The library";
//! `tests/layering.rs` checks that a file imports only its tier and those below):
//! - [`wire`]: zero-copy parse/emit of the tunnel headers, the inner headers and the frame view
//!   every decision reads, MAC addresses and prefixes;
//! - [`state`]: the forwarding and neighbour tables, the allowlist, counters, rate limits;
//! - [`packet`]: the per-packet work without I/O: encapsulate, decapsulate, learn, the flow
//!   hash, the TAP's offloads, path MTU, the outer DS field, ARP/ND suppression;
//! - [`config`]: what a VTEP runs (flags and config file) and the pure plan of a reload;
//! - [`control`]: control messages, metrics encoding, the cluster's and flannel's pure plans;
//! - [`node`]: the I/O tier: devices, sockets, threads, the control socket, `/metrics`, etcd.
//!
//! The `vxtap` binary is its own package (`cli/`) on top. The test bed (network namespaces with
//! VTEPs in them, for the demo and the end-to-end tests) is another crate of this workspace,
//! `vxtap-testbed` in `testbed/`, and not part of this library's API.

#![deny(unsafe_code)]
#![warn(unreachable_pub)]

pub mod config;
pub mod control;
pub mod node;
pub mod packet;
pub mod state;
pub mod wire;

pub use wire::mac::MacAddr;
