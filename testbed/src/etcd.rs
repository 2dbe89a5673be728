//! A throw-away etcd server inside a test namespace, on an underlay address and free ports,
//! with its data directory removed after; and a small client over etcd's JSON gateway
//! (`/v3/kv/...`, HTTP/1.0 on the client port), so tests write and compact the store with no
//! gRPC stack and no etcdctl.
//!
//! The server is `etcd` from Debian's etcd-server (3.4), started through `ip netns exec`, so the
//! PID held is etcd's own: [`Etcd::signal`] stops (SIGSTOP), resumes or kills it, and
//! [`Etcd::restart`] starts it again on the same data directory and ports.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::netns::run_in;
use crate::vtep::pump;
use crate::{lock, unique_name, Netns, TempDir};

/// How long [`Etcd::start`] waits for the server to say it is healthy.
pub const ETCD_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Each request to the gateway.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether etcd is installed (for `netns_test!(..., requires = Etcd::installed, ...)`).
pub fn etcd_installed() -> Result<(), String> {
    match Command::new("etcd").arg("--version").stdin(Stdio::null()).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("`etcd --version` failed: {}", String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Err(format!("etcd is not installed (Debian: apt-get install etcd-server): {e}")),
    }
}

/// An etcd server in a namespace, killed (by PID) and its data removed on drop.
pub struct Etcd {
    ns: String,
    ip: IpAddr,
    client_port: u16,
    peer_port: u16,
    name: String,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    // Dropped last: the server is gone by then.
    data: TempDir,
}

impl Etcd {
    /// Starts a one-member cluster listening for clients on `ip` (an address of `ns`) and for
    /// peers on the namespace's own loopback, on ports free in `ns`, and waits until healthy.
    pub fn start(ns: &Netns, ip: IpAddr) -> Result<Etcd> {
        let (client_port, peer_port) = ns.run(move || -> Result<(u16, u16)> {
            let a = TcpListener::bind(SocketAddr::new(ip, 0)).context("a free client port")?;
            let b = TcpListener::bind(("127.0.0.1", 0)).context("a free peer port")?;
            Ok((a.local_addr()?.port(), b.local_addr()?.port()))
        })??;
        let mut etcd = Etcd {
            ns: ns.name().to_string(),
            ip,
            client_port,
            peer_port,
            name: unique_name("etcd", "t"),
            child: None,
            log: Arc::new(Mutex::new(String::new())),
            data: TempDir::new("etcd")?,
        };
        etcd.launch()?;
        Ok(etcd)
    }

    fn launch(&mut self) -> Result<()> {
        let client = format!("http://{}", SocketAddr::new(self.ip, self.client_port));
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let data: PathBuf = self.data.join("data");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "etcd", "--name", &self.name])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("{}={peer}", self.name)])
            .args(["--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning etcd")?;
        if let Some(out) = child.stdout.take() {
            pump(out, self.log.clone());
        }
        if let Some(err) = child.stderr.take() {
            pump(err, self.log.clone());
        }
        self.child = Some(child);
        self.wait_healthy(ETCD_READY_TIMEOUT)
    }

    /// Polls `/health` until it says true.
    pub fn wait_healthy(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("etcd exited ({st}) before it was healthy; log:\n{}", self.log());
            }
            if let Ok(body) = self.http("GET", "/health", None) {
                if body.contains("true") {
                    return Ok(());
                }
            }
            if Instant::now() >= deadline {
                bail!("etcd not healthy within {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://IP:PORT`, for `vxtap run --etcd`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", SocketAddr::new(self.ip, self.client_port))
    }

    /// The server's PID (etcd's own), while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the server logged.
    pub fn log(&self) -> String {
        lock(&self.log).clone()
    }

    /// Sends `sig` to the server by PID (SIGSTOP, SIGCONT, ...); an error if it is not running.
    pub fn signal(&mut self, sig: libc::c_int) -> Result<()> {
        let child = self.child.as_mut().ok_or_else(|| anyhow!("etcd is not running"))?;
        if child.try_wait()?.is_some() {
            bail!("etcd already exited; log:\n{}", self.log());
        }
        // SAFETY: plain kill(2) on a child not reaped yet, so the PID is still its own.
        if unsafe { libc::kill(child.id() as libc::pid_t, sig) } != 0 {
            return Err(std::io::Error::last_os_error()).context("kill");
        }
        Ok(())
    }

    /// SIGKILL (a stopped server dies too) and reaps it; the data directory stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the server if it runs, then starts it again on the same data and ports.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.launch()
    }

    // -----------------------------------------------------------------------------------------
    // The JSON gateway
    // -----------------------------------------------------------------------------------------

    /// One HTTP/1.0 request to the client port from inside the namespace; the body of a 200.
    fn http(&self, method: &str, path: &str, body: Option<&Value>) -> Result<String> {
        let to = SocketAddr::new(self.ip, self.client_port);
        let body = body.map(Value::to_string).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.0\r\nHost: {to}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let response = run_in(&self.ns, move || -> Result<String> {
            let mut s = TcpStream::connect_timeout(&to, HTTP_TIMEOUT)?;
            s.set_read_timeout(Some(HTTP_TIMEOUT))?;
            s.set_write_timeout(Some(HTTP_TIMEOUT))?;
            s.write_all(request.as_bytes())?;
            let mut out = Vec::new();
            s.read_to_end(&mut out)?;
            Ok(String::from_utf8_lossy(&out).into_owned())
        })??;
        let (head, body) = response.split_once("\r\n\r\n").ok_or_else(|| anyhow!("bad HTTP response"))?;
        if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
            bail!("{method} {path}: {head}\n{body}");
        }
        Ok(body.to_string())
    }

    fn call(&self, path: &str, body: Value) -> Result<Value> {
        let text = self.http("POST", path, Some(&body))?;
        serde_json::from_str(&text).with_context(|| format!("{path}: {text}"))
    }

    /// Puts `key` = `value` (with `lease`, if not 0); returns the store revision after it.
    pub fn put_leased(&self, key: &str, value: &[u8], lease: i64) -> Result<i64> {
        let mut body = json!({"key": b64(key.as_bytes()), "value": b64(value)});
        if lease != 0 {
            body["lease"] = json!(lease.to_string());
        }
        revision(&self.call("/v3/kv/put", body)?)
    }

    /// Puts `key` = `value`; returns the store revision after it.
    pub fn put(&self, key: &str, value: &[u8]) -> Result<i64> {
        self.put_leased(key, value, 0)
    }

    /// Deletes every key starting with `prefix`; returns how many.
    pub fn delete_prefix(&self, prefix: &str) -> Result<u64> {
        let body = json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix))});
        let r = self.call("/v3/kv/deleterange", body)?;
        Ok(r["deleted"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0))
    }

    /// Deletes `key`; returns whether it existed.
    pub fn delete(&self, key: &str) -> Result<bool> {
        let r = self.call("/v3/kv/deleterange", json!({"key": b64(key.as_bytes())}))?;
        Ok(r["deleted"].as_str() == Some("1"))
    }

    /// Every key and value under `prefix`.
    pub fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let body = json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix))});
        let r = self.call("/v3/kv/range", body)?;
        let kvs = r["kvs"].as_array().cloned().unwrap_or_default();
        kvs.iter()
            .map(|kv| {
                let k = unb64(kv["key"].as_str().unwrap_or_default())?;
                let v = unb64(kv["value"].as_str().unwrap_or_default())?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v))
            })
            .collect()
    }

    /// The store's current revision.
    pub fn revision(&self) -> Result<i64> {
        revision(&self.call("/v3/kv/range", json!({"key": b64(b"\0")}))?)
    }

    /// Compacts the history up to `rev`, waiting until it is physically applied.
    pub fn compact(&self, rev: i64) -> Result<()> {
        self.call("/v3/kv/compaction", json!({"revision": rev.to_string(), "physical": true})).map(drop)
    }

    /// Grants a lease of `ttl` seconds; returns its id.
    pub fn grant(&self, ttl: i64) -> Result<i64> {
        let r = self.call("/v3/lease/grant", json!({"TTL": ttl.to_string()}))?;
        r["ID"].as_str().and_then(|s| s.parse().ok()).ok_or_else(|| anyhow!("no lease id in {r}"))
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

fn revision(r: &Value) -> Result<i64> {
    r["header"]["revision"].as_str().and_then(|s| s.parse().ok()).ok_or_else(|| anyhow!("no revision in {r}"))
}

/// The end of the range of keys starting with `prefix` (its last byte plus one).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (what the gateway carries bytes as).
fn b64(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unb64(s: &str) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        let v = B64.iter().position(|x| *x == c).ok_or_else(|| anyhow!("bad base64 {s:?}"))? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_known_vectors() {
        // RFC 4648 §10.
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(b64(plain.as_bytes()), enc);
            assert_eq!(unb64(enc).unwrap(), plain.as_bytes());
        }
        assert!(unb64("!!").is_err());
    }

    #[test]
    fn prefix_range_end() {
        assert_eq!(prefix_end("/a/"), b"/a0");
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80");
    }
}
