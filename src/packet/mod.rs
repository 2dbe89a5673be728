//! The per-packet work between a read and a write, without I/O: encapsulation and
//! decapsulation ([`pipeline`]), the TAP's offloads, the flow hash, the outer DS field, path MTU
//! handling, ARP/ND suppression and the grouping of datagrams into GSO trains.

pub mod dsfield;
pub mod flow;
pub mod offload;
pub mod pipeline;
pub mod pmtu;
pub mod proxy;
pub mod train;
