//! The control socket: a Unix stream socket per network, one JSON request per line, one JSON
//! response per line. `vxtap fdb ...` and `vxtap stats` are its clients.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tracing::{debug, warn};

use crate::config::Endpoint;
use crate::mac::MacAddr;

/// Longest request line accepted; anything longer is refused, so a client cannot make us buffer
/// without bound.
pub const MAX_REQUEST: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    FdbShow,
    /// A static entry; the all-zero MAC adds a flood-list remote instead.
    FdbAdd {
        #[serde(with = "as_string")]
        mac: MacAddr,
        #[serde(with = "as_string")]
        dst: Endpoint,
    },
    /// Removes an entry; the all-zero MAC with `dst` removes a flood-list remote.
    FdbDel {
        #[serde(with = "as_string")]
        mac: MacAddr,
        #[serde(default, with = "opt_as_string")]
        dst: Option<Endpoint>,
    },
    Stats,
}

#[derive(Debug, Serialize, Deserialize)]
struct Response {
    ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(default)]
    result: Value,
}

/// Parses one request line.
pub fn parse_request(line: &str) -> Result<Request, String> {
    serde_json::from_str(line.trim()).map_err(|e| format!("bad request: {e}"))
}

/// Serves requests on a listener from [`bind`] until the task is dropped.
pub async fn serve<H>(listener: UnixListener, handler: H)
where
    H: Fn(&Request) -> Result<Value, String> + Send + Sync + 'static,
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
    H: Fn(&Request) -> Result<Value, String>,
{
    let (read, mut write) = stream.into_split();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST as u64 + 1));
    let mut line = String::new();
    let read = tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await;
    let response = match read {
        Err(_) => {
            Response { ok: false, error: Some("timed out reading the request".into()), result: Value::Null }
        }
        Ok(Err(e)) => Response { ok: false, error: Some(format!("bad request: {e}")), result: Value::Null },
        Ok(Ok(_)) if line.len() > MAX_REQUEST => Response {
            ok: false,
            error: Some(format!("request over {MAX_REQUEST} bytes")),
            result: Value::Null,
        },
        Ok(Ok(_)) => match parse_request(&line).and_then(|r| handler(&r)) {
            Ok(result) => Response { ok: true, error: None, result },
            Err(e) => Response { ok: false, error: Some(e), result: Value::Null },
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

/// Sends one request to the control socket at `path` and returns the result.
pub fn request(path: &Path, req: &Request) -> Result<Value> {
    let mut stream = UnixStream::connect(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
            anyhow!("no vxtap is running with control socket {} ({e})", path.display())
        }
        std::io::ErrorKind::PermissionDenied => {
            anyhow!("permission denied on {}: run as the user that started vxtap", path.display())
        }
        _ => anyhow!("connecting to {}: {e}", path.display()),
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut line = serde_json::to_vec(req)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).context("reading the reply")?;
    let r: Response = serde_json::from_str(&reply).context("malformed reply")?;
    if r.ok {
        Ok(r.result)
    } else {
        Err(anyhow!(r.error.unwrap_or_else(|| "request failed".into())))
    }
}

/// (De)serializes through `Display` / `FromStr`, so JSON carries "02:00:..." and "198.18.0.2:4789".
mod as_string {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

mod opt_as_string {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<T: Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        Option::<String>::deserialize(d)?.map(|s| s.parse().map_err(serde::de::Error::custom)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_json_lines() {
        let reqs = [
            Request::FdbShow,
            Request::Stats,
            Request::FdbAdd {
                mac: "02:00:00:00:00:02".parse().unwrap(),
                dst: "198.18.0.2:4789".parse().unwrap(),
            },
            Request::FdbDel { mac: MacAddr::ZERO, dst: Some("198.18.0.3".parse().unwrap()) },
            Request::FdbDel { mac: "02:00:00:00:00:02".parse().unwrap(), dst: None },
        ];
        for r in reqs {
            let line = serde_json::to_string(&r).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(parse_request(&line), Ok(r));
        }
    }

    #[test]
    fn malformed_requests_are_errors_not_panics() {
        for bad in [
            "",
            "{",
            "{\"op\":\"reboot\"}",
            "{\"op\":\"fdb_add\",\"mac\":\"zz\",\"dst\":\"198.18.0.2\"}",
            "[]",
            "null",
        ] {
            assert!(parse_request(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn server_answers_refuses_oversized_and_is_private() {
        let dir = std::env::temp_dir().join(format!("vxtap-ctl-test-{}", std::process::id()));
        let path = dir.join("t.sock");
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let listener = rt.block_on(async { bind(&path) }).unwrap();
        let server = rt.spawn(serve(listener, |r: &Request| match r {
            Request::Stats => Ok(serde_json::json!({"rx_packets": 7})),
            _ => Err("nope".into()),
        }));
        std::thread::spawn(move || rt.block_on(async { tokio::time::sleep(Duration::from_secs(30)).await }));
        let t0 = std::time::Instant::now();
        while !path.exists() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(request(&path, &Request::Stats).unwrap()["rx_packets"], 7);
        assert_eq!(request(&path, &Request::FdbShow).unwrap_err().to_string(), "nope");
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
