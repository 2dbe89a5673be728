//! Names and places: the default TAP name, and the control socket of a network, keyed by the
//! network namespace it runs in.

use std::path::{Path, PathBuf};

/// Default TAP name.
pub const DEFAULT_DEV: &str = "vxtap0";
/// Where control sockets live unless `--control` says otherwise: one directory per network
/// namespace below it (see [`default_control_path`]).
pub const CONTROL_DIR: &str = "/run/vxtap";

/// The control socket of the network on TAP `dev` when none is configured, for the server and
/// for `vxtap <cmd> --dev <TAP>` alike: `/run/vxtap/<netns>/<dev>.sock`, where `<netns>` is the
/// inode number of the caller's network namespace ([`netns_id`]). TAP names are per namespace,
/// `/run` is not: the key keeps two VTEPs on `vxt0` in two namespaces apart, while a client run
/// in the same namespace (`ip netns exec NS vxtap stats --dev vxt0`) computes the same path.
/// Without a readable `/proc` it falls back to `/run/vxtap/<dev>.sock`, for both sides.
/// This is the one place that decides the default.
pub fn default_control_path(dev: &str) -> PathBuf {
    let file = format!("{dev}.sock");
    match netns_id() {
        Some(ns) => Path::new(CONTROL_DIR).join(ns.to_string()).join(file),
        None => Path::new(CONTROL_DIR).join(file),
    }
}

/// The directory [`default_control_path`] puts sockets in, in the caller's network namespace.
pub fn default_control_dir() -> PathBuf {
    default_control_path("x").parent().map(Path::to_path_buf).unwrap_or_else(|| CONTROL_DIR.into())
}

/// The inode number of the calling thread's network namespace (what `stat -L
/// /proc/self/ns/net` and `ip netns identify` key on, shown as `net:[<inode>]` by `readlink`).
/// Namespaces alive at the same time have different inodes; a number can be reused once its
/// namespace is gone, which leaves at worst a stale socket file, replaced at the next start.
pub fn netns_id() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    // thread-self: a thread may have entered another namespace than the process's first thread.
    ["/proc/thread-self/ns/net", "/proc/self/ns/net"]
        .iter()
        .find_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.ino())
}
