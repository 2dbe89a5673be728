//! The control socket's server side: a Unix stream socket per network, mode 0600, one request
//! per connection, bounded in size and time.

#![allow(unsafe_code)]

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tracing::{debug, warn};

use crate::config;
use crate::control::message::{parse_request, Reply, Request, Response, MAX_REQUEST};

/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves requests on a listener from [`bind`] until the task is dropped.
pub async fn serve<H>(listener: UnixListener, handler: H)
where
    H: Fn(&Request) -> Result<Reply, String> + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!("control socket accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            if let Err(e) = answer(stream, &*handler).await {
                debug!("control client: {e}");
            }
        });
    }
}

async fn answer<H>(stream: tokio::net::UnixStream, handler: &H) -> Result<()>
where
    H: Fn(&Request) -> Result<Reply, String>,
{
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST as u64 + 1));
    let mut line = String::new();
    let read = tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line)).await;
    let response = match read {
        Err(_) => {
            Response { ok: false, error: Some("timed out reading the request".into()), result: Reply::Done }
        }
        Ok(Err(e)) => Response { ok: false, error: Some(format!("bad request: {e}")), result: Reply::Done },
        Ok(Ok(_)) if line.len() > MAX_REQUEST => Response {
            ok: false,
            error: Some(format!("request over {MAX_REQUEST} bytes")),
            result: Reply::Done,
        },
        Ok(Ok(_)) => match parse_request(&line).and_then(|r| handler(&r)) {
            Ok(result) => Response { ok: true, error: None, result },
            Err(e) => Response { ok: false, error: Some(e), result: Reply::Done },
        },
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    Ok(())
}

/// Binds the control socket, replacing a stale socket file but never a live one. It is created
/// mode 0600, so only its owner (and root) can read or change the FDB. Needs a tokio runtime.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            bail!("control socket {} is in use by a running vxtap", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("removing stale {}", path.display()))?;
    }
    // Create the socket with no group/other bits from the start, then make the mode explicit.
    // SAFETY: umask only changes this process's file-creation mask.
    let old = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    // SAFETY: as above; restores the previous mask.
    unsafe { libc::umask(old) };
    let listener = listener.with_context(|| format!("binding control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// [`bind`], then gives the socket to `owner` (uid, gid) if given, as `--user` needs, and sees to
/// the directory the socket is in: a directory created here for the socket is given to `owner`
/// too, so that the unprivileged process can remove its socket on exit; and the default
/// per-namespace directory ([`config::default_control_dir`]), if it already existed but belongs
/// to another user while no running vxtap has a socket in it (left behind by an earlier
/// namespace with the same inode number), is taken back for whoever runs this VTEP. A shared
/// directory such as `/run/vxtap` itself is never given away.
pub fn bind_for(path: &Path, owner: Option<(u32, u32)>) -> Result<UnixListener> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
    let dir_existed = dir.is_none_or(Path::exists);
    let listener = bind(path)?;
    let give = |p: &Path, (uid, gid): (u32, u32)| {
        std::os::unix::fs::chown(p, Some(uid), Some(gid))
            .with_context(|| format!("giving {} to uid {uid}", p.display()))
    };
    if let Some(owner) = owner {
        give(path, owner)?;
    }
    let Some(dir) = dir else { return Ok(listener) };
    if !dir_existed {
        if let Some(owner) = owner {
            give(dir, owner)?;
        }
    } else if dir == config::default_control_dir() {
        // The socket was created by this process: its owner is who we are now.
        let me = std::fs::metadata(path).map(|m| (m.uid(), m.gid()))?;
        let want = owner.unwrap_or(me);
        let has = std::fs::metadata(dir).map(|m| (m.uid(), m.gid()))?;
        if has != want && !live_socket_besides(dir, path) {
            // Best effort: the socket is bound already; a process without CAP_CHOWN keeps going.
            if let Err(e) = give(dir, want) {
                warn!("{e:#}");
            }
        }
    }
    Ok(listener)
}

/// Whether a socket in `dir` other than `ours` answers: another vxtap is using the directory.
fn live_socket_besides(dir: &Path, ours: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else { return true };
    entries.flatten().any(|e| {
        let p = e.path();
        p != ours && e.file_type().is_ok_and(|t| t.is_socket()) && UnixStream::connect(&p).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};

    use super::*;
    use crate::control::message::Stats;
    use crate::node::control_client::request;

    #[test]
    fn server_answers_refuses_oversized_and_is_private() {
        let dir = std::env::temp_dir().join(format!("vxtap-ctl-test-{}", std::process::id()));
        let path = dir.join("t.sock");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let listener = rt.block_on(async { bind(&path) }).unwrap();
        let server = rt.spawn(serve(listener, |r: &Request| match r {
            Request::Stats => Ok(Reply::Stats(Stats(vec![("rx_packets".into(), 7)]))),
            _ => Err("nope".into()),
        }));
        std::thread::spawn(move || rt.block_on(async { tokio::time::sleep(Duration::from_secs(30)).await }));
        let t0 = std::time::Instant::now();
        while !path.exists() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let stats: Stats = request(&path, &Request::Stats).unwrap();
        assert_eq!(stats.get("rx_packets"), Some(7));
        assert_eq!(request::<()>(&path, &Request::FdbShow).unwrap_err().to_string(), "nope");
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(&vec![b'x'; MAX_REQUEST * 2]).unwrap();
        let mut reply = String::new();
        BufReader::new(s).read_line(&mut reply).unwrap();
        assert!(reply.contains("over 4096 bytes"), "{reply}");
        assert!(bind(&path).unwrap_err().to_string().contains("in use"));
        server.abort();
        let _ = std::fs::remove_dir_all(dir);
    }
}
