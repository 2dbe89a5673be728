//! The control socket's client side: what `vxtap fdb`, `vxtap stats` and the tests use.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::de::DeserializeOwned;

use crate::control::message::{Request, Response};

/// How long to wait for the reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends one request to the control socket at `path` and returns its result, typed: `()` for
/// changes, `Vec<FdbRow>` for `fdb show`, `Stats` for `stats` (see [`crate::control::message`]).
pub fn request<R: DeserializeOwned>(path: &Path, req: &Request) -> Result<R> {
    request_timeout(path, req, REPLY_TIMEOUT)
}

/// [`request`], waiting up to `timeout` for the reply (a reload takes longer than a lookup).
pub fn request_timeout<R: DeserializeOwned>(path: &Path, req: &Request, timeout: Duration) -> Result<R> {
    let mut stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            anyhow!("no vxtap is running with control socket {} ({e})", path.display())
        }
        std::io::ErrorKind::PermissionDenied => {
            anyhow!("permission denied on {}: run as the user that started vxtap", path.display())
        }
        _ => anyhow!("connecting to {}: {e}", path.display()),
    })?;
    stream.set_read_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).context("reading the reply")?;
    let r: Response<serde_json::Value> = serde_json::from_str(&reply).context("malformed reply")?;
    if !r.ok {
        return Err(anyhow!(r.error.unwrap_or_else(|| "request failed".into())));
    }
    serde_json::from_value(r.result).context("unexpected reply")
}
