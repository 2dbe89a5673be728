//! VTEP processes (`vxtap run` inside a namespace, owned by a guard) and helpers that talk to
//! their control sockets through the vxtap CLI.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::{lock, run_checked, Netns};

/// How long [`Vtep::spawn`] waits for the `ready` line: a debug build on a busy 2-core machine
/// can take a few seconds to start.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// A `vxtap run` process inside a namespace, killed (SIGKILL, by PID) on drop. Its stdout and
/// stderr are collected into a log for readiness checks and failure messages.
///
/// It is started through `ip netns exec`, which execs the program in place, so the PID we hold
/// is vxtap's own and signals reach it directly.
pub struct Vtep {
    child: Child,
    log: Arc<Mutex<String>>,
    pumps: Vec<JoinHandle<()>>,
    status: Option<ExitStatus>,
}

impl Vtep {
    /// Runs `ip netns exec NS <bin> run <args...>` and waits (up to [`READY_TIMEOUT`]) for a log
    /// line with the word `ready`. Early exit or timeout is an error that includes the log.
    pub fn spawn(ns: &Netns, bin: &Path, args: &[String]) -> Result<Vtep> {
        Vtep::spawn_env(ns, bin, args, &[])
    }

    /// [`Vtep::spawn`] with `env` added to the environment (a password, say: never a flag).
    pub fn spawn_env(ns: &Netns, bin: &Path, args: &[String], env: &[(String, String)]) -> Result<Vtep> {
        let mut vtep = Vtep::spawn_unready_env(ns, bin, args, env)?;
        vtep.wait_for_word("ready", READY_TIMEOUT)
            .with_context(|| format!("vxtap run {}", args.join(" ")))?;
        Ok(vtep)
    }

    /// Like [`Vtep::spawn`], without waiting for `ready`: for a process expected to fail.
    pub fn spawn_unready(ns: &Netns, bin: &Path, args: &[String]) -> Result<Vtep> {
        Vtep::spawn_unready_env(ns, bin, args, &[])
    }

    /// [`Vtep::spawn_unready`] with `env` added to the environment.
    pub fn spawn_unready_env(
        ns: &Netns,
        bin: &Path,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<Vtep> {
        Vtep::spawn_command(ns, bin, "run", args, env)
    }

    /// Runs `ip netns exec NS <bin> <command> <args...>` (`vxtap flannel`, say) and waits for
    /// `ready` as [`Vtep::spawn`] does.
    pub fn spawn_ready(
        ns: &Netns,
        bin: &Path,
        command: &str,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<Vtep> {
        let mut vtep = Vtep::spawn_command(ns, bin, command, args, env)?;
        vtep.wait_for_word("ready", READY_TIMEOUT)
            .with_context(|| format!("vxtap {command} {}", args.join(" ")))?;
        Ok(vtep)
    }

    /// Runs `ip netns exec NS <bin> <command> <args...>` without waiting for anything.
    pub fn spawn_command(
        ns: &Netns,
        bin: &Path,
        command: &str,
        args: &[String],
        env: &[(String, String)],
    ) -> Result<Vtep> {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns.name()])
            .arg(bin)
            .arg(command)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawning {} in {}", bin.display(), ns.name()))?;
        let log = Arc::new(Mutex::new(String::new()));
        let mut pumps = Vec::new();
        if let Some(out) = child.stdout.take() {
            pumps.push(pump(out, log.clone()));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(pump(err, log.clone()));
        }
        Ok(Vtep { child, log, pumps, status: None })
    }

    /// Waits up to `timeout` for the process to exit; its status, or an error with the log.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait()? {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                bail!("still running after {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The resident set size in kB (VmRSS of /proc/PID/status), while it runs.
    pub fn rss_kb(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS in /proc/{}/status", self.child.id()))
    }

    /// The process id (vxtap's own, see the type docs).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote so far, stdout and stderr interleaved by line.
    pub fn log(&self) -> String {
        lock(&self.log).clone()
    }

    /// Polls the log until a line contains `word` as a whole word (so "already" is not "ready").
    pub fn wait_for_word(&mut self, word: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if lock(&self.log).lines().any(|l| has_word(l, word)) {
                return Ok(());
            }
            if let Some(status) = self.try_wait()? {
                bail!("exited ({status}) before logging '{word}'; log:\n{}", self.log());
            }
            if Instant::now() >= deadline {
                bail!("no '{word}' within {timeout:?}; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Non-blocking reap; once exited, the pumps are drained so the log is complete.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.child.try_wait().context("waiting for vxtap")?;
            if self.status.is_some() {
                for p in self.pumps.drain(..) {
                    let _ = p.join();
                }
            }
        }
        Ok(self.status)
    }

    /// Sends a signal by PID, unless the process has already been reaped (the PID could be reused).
    pub fn signal(&mut self, sig: libc::c_int) -> Result<()> {
        if self.try_wait()?.is_some() {
            bail!("vxtap already exited; log:\n{}", self.log());
        }
        // SAFETY: plain kill(2) on a child we have not reaped yet.
        if unsafe { libc::kill(self.child.id() as libc::pid_t, sig) } != 0 {
            return Err(std::io::Error::last_os_error()).context("kill");
        }
        Ok(())
    }

    /// SIGTERM, then waits up to `timeout` for the exit status. On timeout the process is killed
    /// and an error (with the log) is returned.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        if let Some(st) = self.try_wait()? {
            return Ok(st);
        }
        self.signal(libc::SIGTERM)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_wait()? {
                return Ok(st);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("vxtap did not exit within {timeout:?} of SIGTERM; log:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Vtep {
    fn drop(&mut self) {
        if self.status.is_none() {
            // Child::kill is a no-op if std already reaped it, so a reused PID is never hit.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Copies lines from a child's pipe into the shared log until EOF (the child exits).
pub(crate) fn pump<R: Read + Send + 'static>(r: R, log: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(r);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let text = String::from_utf8_lossy(&line);
            let mut log = lock(&log);
            log.push_str(&text);
            if !text.ends_with('\n') {
                log.push('\n');
            }
            line.clear();
        }
    })
}

/// Whole-word match: `word` not preceded or followed by an alphanumeric character.
fn has_word(line: &str, word: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
    line.match_indices(word)
        .any(|(i, _)| !alnum(line[..i].chars().next_back()) && !alnum(line[i + word.len()..].chars().next()))
}

// ---------------------------------------------------------------------------------------------
// Control-socket helpers (run the vxtap CLI from the root namespace: the socket is a file)
// ---------------------------------------------------------------------------------------------

/// Runs `<bin> <args...> --control <control>` and returns stdout; non-zero exit is an error with
/// stderr.
pub fn vtep_cmd(bin: &Path, control: &Path, args: &[&str]) -> Result<String> {
    let out = run_checked(Command::new(bin).args(args).arg("--control").arg(control))?;
    String::from_utf8(out.stdout).context("vxtap output is not UTF-8")
}

fn json_cmd(bin: &Path, control: &Path, args: &[&str]) -> Result<serde_json::Value> {
    let out = vtep_cmd(bin, control, args)?;
    serde_json::from_str(&out).with_context(|| format!("parsing output of {args:?}: {out}"))
}

/// `vxtap stats --json`: the counters object.
pub fn stats_json(bin: &Path, control: &Path) -> Result<serde_json::Value> {
    json_cmd(bin, control, &["stats", "--json"])
}

/// `vxtap fdb show --json`: the array of entries.
pub fn fdb_json(bin: &Path, control: &Path) -> Result<serde_json::Value> {
    json_cmd(bin, control, &["fdb", "show", "--json"])
}

/// One counter from a stats object; a missing or non-integer key is an error.
pub fn counter(stats: &serde_json::Value, key: &str) -> Result<u64> {
    stats.get(key).and_then(|v| v.as_u64()).ok_or_else(|| anyhow!("no counter {key} in {stats}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_match_is_whole_word() {
        assert!(has_word("INFO vxtap: ready dev=vxt0", "ready"));
        assert!(has_word("ready", "ready"));
        assert!(has_word("vxt0: ready.", "ready"));
        assert!(!has_word("device vxt0 already exists", "ready"));
        assert!(!has_word("readying", "ready"));
    }
}
