//! The tables and counters the packet path reads and updates: the forwarding table, the
//! neighbour table, the source allowlist, the counters and the token bucket. Pure: no I/O.

pub mod allow;
pub mod fdb;
pub mod neigh;
pub mod ratelimit;
pub mod stats;
