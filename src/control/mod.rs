//! The control socket: how `vxtap fdb`, `vxtap stats` (and the tests) talk to a running VTEP.
//! A Unix stream socket per network, one JSON request per line and one JSON response per line;
//! the messages are typed in [`message`], the dataplane answers them in `dataplane::api`.

pub mod cluster;
pub mod flannel;
pub mod message;
pub mod metrics;

pub use message::{
    parse_request, FdbKind, FdbRow, NeighRow, PeerRow, PeerSource, ReloadAction, ReloadRow, Reloaded, Reply,
    Request, Stats, WgPeerRow,
};
