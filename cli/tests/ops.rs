//! Operations: `/metrics` scraped during traffic and under hostile clients, control sockets per
//! network namespace, systemd's readiness protocol and SIGHUP, JSON logs, shell completions and
//! the manual page. The netns tests follow tests/e2e.rs (node i: underlay 198.18.0.(i+1),
//! overlay 198.19.0.(i+1)/24 on `vxt0`).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use vxtap_testbed::{netns_test, udp_send, Family, Netns, TempDir, Underlay};

/// `vxtap <args>`'s stdout; it must succeed.
fn vxtap_out(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().expect("running vxtap");
    assert!(out.status.success(), "vxtap {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

const SUBCOMMANDS: &[&str] =
    &["run", "fdb", "stats", "peers", "reload", "bench", "demo", "completions", "man"];

#[test]
fn completion_scripts_are_valid_and_know_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let script = vxtap_out(&["completions", shell]);
        for sub in SUBCOMMANDS {
            assert!(script.contains(sub), "{shell} script does not mention {sub}");
        }
        assert!(script.contains("metrics") && script.contains("log-format"), "{shell}: run flags");
    }
    // bash parses its script without running it.
    let dir = std::env::temp_dir().join(format!("vxtap-completions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("vxtap.bash");
    std::fs::write(&file, vxtap_out(&["completions", "bash"])).expect("write");
    let check = Command::new("bash").arg("-n").arg(&file).output().expect("running bash");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(check.status.success(), "bash -n: {}", String::from_utf8_lossy(&check.stderr));
    // Unknown shells are a usage error.
    let bad = Command::new(bin()).args(["completions", "tcsh"]).output().expect("running vxtap");
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn man_page_documents_every_subcommand_and_the_run_flags() {
    let page = vxtap_out(&["man"]);
    assert!(page.lines().any(|l| l.starts_with(".TH vxtap 1 ")), "{}", &page[..page.len().min(200)]);
    for sub in SUBCOMMANDS {
        assert!(page.contains(&format!(".SH \"VXTAP {}", sub.to_uppercase())), "no section for {sub}");
    }
    for flag in ["dev", "vni", "proto", "local", "remote", "static", "control", "config", "user", "metrics"] {
        assert!(page.contains(&format!("\\-\\-{flag}")), "--{flag} not in the man page");
    }
    assert!(page.contains("log\\-format"), "--log-format not in the man page");
    // Help texts reach roff as they are: keep them ASCII, which every man viewer renders.
    if let Some(l) = page.lines().find(|l| !l.is_ascii()) {
        panic!("non-ASCII in the man page: {l}");
    }
    // groff, when present, renders it without a warning.
    if let Ok(out) = Command::new("groff").args(["-man", "-Tutf8", "-ww", "-z"]).arg("-").stdin_pipe(&page) {
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "groff: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Runs a command with `input` on its stdin.
trait StdinPipe {
    fn stdin_pipe(&mut self, input: &str) -> std::io::Result<std::process::Output>;
}

impl StdinPipe for Command {
    fn stdin_pipe(&mut self, input: &str) -> std::io::Result<std::process::Output> {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = self.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
        child.stdin.take().expect("stdin").write_all(input.as_bytes())?;
        child.wait_with_output()
    }
}

// ---------------------------------------------------------------------------------------------
// /metrics
// ---------------------------------------------------------------------------------------------

/// Where node 0 serves metrics: its underlay address, inside its namespace.
const METRICS: &str = "198.18.0.1:9477";

fn metrics_addr() -> SocketAddr {
    METRICS.parse().expect("address")
}

fn promtool_installed() -> Result<(), String> {
    match Command::new("promtool").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("promtool is not installed (Debian package prometheus)".into()),
    }
}

/// A response: status code, head (status line and headers), body.
struct Response {
    status: u16,
    head: String,
    body: String,
}

/// Sends `request` to `to` from a thread in `ns` and reads the response until the server
/// closes the connection.
fn http(ns: &Netns, to: SocketAddr, request: &str) -> std::io::Result<Response> {
    let request = request.to_string();
    ns.run(move || -> std::io::Result<Response> {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(request.as_bytes())?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        Ok(Response { status, head: head.to_string(), body: body.to_string() })
    })
    .map_err(std::io::Error::other)?
}

/// `GET /metrics` from node 0's namespace; must answer 200.
fn scrape(bed: &Bed) -> String {
    let r = http(bed.ul.node(0), metrics_addr(), "GET /metrics HTTP/1.1\r\nHost: vxtap\r\n\r\n");
    let r = bed.check(r.map_err(anyhow::Error::from), "scraping /metrics");
    assert_eq!(r.status, 200, "{}\n{}", r.head, bed.logs());
    r.body
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn series(name: &str, extra: &str) -> String {
    format!("{name}{{dev=\"vxt0\",vni=\"42\",proto=\"vxlan\"{extra}}}")
}

/// Node 0 with `--metrics` on its underlay address, node 1 without.
fn metrics_bed() -> Bed {
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    bed.start_with(0, Proto::Vxlan, &[1], &["--metrics", METRICS]);
    bed.start(1, Proto::Vxlan);
    bed
}

// Scraped during traffic: the counters move, a drop shows up with its reason, the FDB and peers
// are there, promtool accepts the text; OpenMetrics on request; other paths and methods refused.
netns_test!(metrics_scrape_during_traffic, requires = promtool_installed, {
    let bed = metrics_bed();
    let _servers = bed.echo_servers();
    bed.echo_pair();
    let rx = series("vxtap_rx_packets_total", "");
    let first = scrape(&bed);
    let rx0 = sample(&first, &rx).unwrap_or_else(|| panic!("no {rx} in\n{first}"));
    assert!(rx0 > 0, "{first}");
    bed.blast(1, overlay(0, ECHO_PORT), b"counted", 50);
    bed.wait_counter(&bed.control(0), "rx_packets", rx0 + 50);
    // A datagram shorter than a VXLAN header: a known drop, by reason.
    let target = SocketAddr::new(bed.ul.addr(0), 4789);
    bed.check(udp_send(bed.ul.node(1), target, &[&[0x08, 0, 0, 0]]), "send truncated");
    bed.wait_counter(&bed.control(0), "drop_truncated", 1);

    let text = scrape(&bed);
    assert!(sample(&text, &rx).unwrap() >= rx0 + 50, "rx did not move:\n{text}");
    assert!(sample(&text, &series("vxtap_tx_packets_total", "")).unwrap() > 0, "{text}");
    assert_eq!(sample(&text, &series("vxtap_drops_total", ",reason=\"truncated\"")), Some(1), "{text}");
    assert_eq!(sample(&text, &series("vxtap_drops_total", ",reason=\"not_allowed\"")), Some(0), "{text}");
    assert!(sample(&text, &series("vxtap_fdb_entries", ",kind=\"learned\"")).unwrap() >= 1, "{text}");
    assert_eq!(sample(&text, &series("vxtap_fdb_entries", ",kind=\"flood\"")), Some(1), "{text}");
    assert_eq!(sample(&text, &series("vxtap_peers", "")), Some(1), "{text}");
    assert!(sample(&text, &series("vxtap_rx_syscalls_total", "")).is_some(), "offload counters: {text}");
    assert!(text.contains("vxtap_build_info{version=\""), "{text}");

    let dir = TempDir::new("promtool").expect("temp dir");
    let file = dir.join("metrics.txt");
    std::fs::write(&file, &text).expect("write");
    let check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).expect("open"))
        .output()
        .expect("running promtool");
    let said =
        format!("{}{}", String::from_utf8_lossy(&check.stdout), String::from_utf8_lossy(&check.stderr));
    assert!(check.status.success() && said.trim().is_empty(), "promtool check metrics: {said}\n{text}");

    let om = http(
        bed.ul.node(0),
        metrics_addr(),
        "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;q=0.5\r\n\r\n",
    )
    .expect("OpenMetrics scrape");
    assert!(om.head.contains("Content-Type: application/openmetrics-text; version=1.0.0"), "{}", om.head);
    assert!(om.body.ends_with("# EOF\n"), "{}", om.body);
    let not_found = http(bed.ul.node(0), metrics_addr(), "GET / HTTP/1.1\r\n\r\n").expect("GET /");
    assert_eq!(not_found.status, 404);
    let post = http(bed.ul.node(0), metrics_addr(), "POST /metrics HTTP/1.1\r\n\r\n").expect("POST");
    assert_eq!(post.status, 405);
});

/// Resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|v| v.parse().ok()).expect("VmRSS value")
}

/// Lets this process hold `n` more descriptors.
fn raise_fd_limit(n: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the struct it is given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    if lim.rlim_cur < lim.rlim_max && lim.rlim_cur < n + 1024 {
        lim.rlim_cur = lim.rlim_max.min(n + 4096);
        // SAFETY: setrlimit reads the struct it is given.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
    }
}

/// How much node 0's RSS may grow over the whole attack. Without the connection limit, 1000
/// connections with an 8 KiB request buffer each would take 8 MiB and more.
const RSS_BOUND_KIB: u64 = 2048;

// Hostile clients: one that sends nothing, one that sends a huge request, 1000 connections at
// once. Forwarding goes on during the attack, memory stays bounded, and the endpoint answers
// again afterwards.
netns_test!(metrics_endpoint_survives_hostile_clients, {
    const FLOOD: usize = 1000;
    raise_fd_limit(FLOOD as u64);
    let mut bed = metrics_bed();
    let _servers = bed.echo_servers();
    bed.echo_pair();
    // Once before measuring: the first scrape sets up what every later one reuses.
    for _ in 0..3 {
        scrape(&bed);
    }
    let pid = bed.vtep(0).pid();
    let rss0 = rss_kib(pid);
    let to = metrics_addr();

    // 1. Connects and sends nothing: closed by the server once its time is up (5 s).
    let silent = bed.ul.node(1).spawn(move || -> std::io::Result<usize> {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.read(&mut [0u8; 64])
    });
    // 2. A 1 MiB request head, never finished: refused with 431 after 8 KiB, or reset.
    let huge = bed.ul.node(1).spawn(move || -> std::io::Result<String> {
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        s.set_write_timeout(Some(Duration::from_secs(60)))?;
        let mut head = b"GET /metrics HTTP/1.1\r\n".to_vec();
        while head.len() < 1 << 20 {
            head.extend_from_slice(
                b"X-Fill: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        let _ = s.write_all(&head); // the server stops reading at 8 KiB and closes
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        Ok(answer)
    });
    // 3. 1000 connections at once, held until told to let go.
    let (opened_tx, opened_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let flood = bed.ul.node(1).spawn(move || {
        let held: Vec<TcpStream> =
            (0..FLOOD).filter_map(|_| TcpStream::connect_timeout(&to, Duration::from_secs(5)).ok()).collect();
        let _ = opened_tx.send(held.len());
        let _ = release_rx.recv_timeout(Duration::from_secs(120));
        drop(held);
    });
    let opened = opened_rx.recv_timeout(Duration::from_secs(120)).expect("the flood thread did not report");
    eprintln!("{opened} of {FLOOD} flood connections were established");
    // Forwarding goes on while all of it is in flight.
    bed.echo_pair();
    bed.assert_running(0);
    let rss_attack = rss_kib(pid);
    release_tx.send(()).expect("release");
    flood.expect("flood thread").join().expect("flood thread panicked").expect("entering the namespace");

    let closed = silent.expect("silent thread").join().expect("silent client panicked");
    assert!(matches!(closed, Ok(Ok(0))), "the silent client was not closed by the server: {closed:?}");
    let answer = huge.expect("huge thread").join().expect("huge client panicked");
    let answer = answer.expect("entering the namespace").expect("huge client");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431 "), "answer to the huge request: {answer}");

    // The endpoint answers again (the server times out what it still held within 5 s).
    let again = wait_until(Duration::from_secs(30), || {
        http(bed.ul.node(0), to, "GET /metrics HTTP/1.1\r\n\r\n").is_ok_and(|r| r.status == 200)
    });
    assert!(again, "/metrics does not answer after the attack\n{}", bed.logs());
    bed.echo_pair();
    let rss1 = rss_kib(pid);
    eprintln!("node 0 RSS: {rss0} KiB before, {rss_attack} KiB during, {rss1} KiB after the attack");
    assert!(
        rss_attack.max(rss1) <= rss0 + RSS_BOUND_KIB,
        "RSS grew from {rss0} KiB to {rss_attack} KiB during and {rss1} KiB after the attack"
    );
});

// ---------------------------------------------------------------------------------------------
// Control sockets per network namespace
// ---------------------------------------------------------------------------------------------

/// `vxtap <args>` run inside `ns`, as root; must succeed.
fn vxtap_in(bed: &Bed, ns: &Netns, args: &[&str]) -> String {
    let bin = bin().to_string_lossy().into_owned();
    let out = bed.check(ns.exec(&[&[bin.as_str()][..], args].concat()), "ip netns exec vxtap");
    assert!(
        out.status.success(),
        "vxtap {args:?} in {}: {}\n{}",
        ns.name(),
        String::from_utf8_lossy(&out.stderr),
        bed.logs()
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

fn owner(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).uid()
}

// Two `vxtap run --dev vxt0` in two namespaces at once with the default control path (the
// second one dropping root with --user): each has its own socket, and `ip netns exec NS vxtap
// ... --dev vxt0` reaches the one in NS. On SIGTERM both remove their sockets.
netns_test!(default_control_paths_are_per_namespace, {
    let mut bed = Bed::new(Underlay::pair(Family::V4).expect("underlay"));
    let marker = |i: usize| format!("02:00:00:00:0a:{:02x}", i + 1);
    for i in 0..2 {
        let (me, peer) = (bed.ul.addr(i).to_string(), bed.ul.addr(1 - i).to_string());
        let mut args = strings(&["--dev", "vxt0", "--vni", "42", "--local", &me, "--remote", &peer]);
        args.extend(strings(&["--static", &format!("{}={peer}", marker(i)), "--mac", &mac(i)]));
        if i == 1 {
            args.extend(strings(&["--user", "nobody"]));
        }
        bed.spawn(i, &args);
    }
    let mut sockets = Vec::new();
    for (i, uid) in [(0, 0), (1, 65534)] {
        let ns = bed.ul.node(i);
        let ino = owner_ino(&format!("/run/netns/{}", ns.name()));
        let sock = std::path::PathBuf::from(format!("/run/vxtap/{ino}/vxt0.sock"));
        let meta =
            std::fs::metadata(&sock).unwrap_or_else(|e| panic!("{}: {e}\n{}", sock.display(), bed.logs()));
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{}", sock.display());
        assert_eq!(
            (meta.uid(), owner(sock.parent().unwrap())),
            (uid, uid),
            "owner of {} and its directory",
            sock.display()
        );
        let fdb: serde_json::Value =
            serde_json::from_str(&vxtap_in(&bed, ns, &["fdb", "show", "--dev", "vxt0", "--json"]))
                .expect("JSON");
        assert!(fdb_entry(&fdb, &marker(i)).is_some(), "node {i}'s own static entry missing: {fdb}");
        assert!(fdb_entry(&fdb, &marker(1 - i)).is_none(), "node {i} reached the other VTEP: {fdb}");
        let stats = vxtap_in(&bed, ns, &["stats", "--dev", "vxt0", "--json"]);
        assert!(stats.contains("rx_packets"), "{stats}");
        sockets.push(sock);
    }
    assert_ne!(sockets[0], sockets[1]);
    for (i, sock) in sockets.iter().enumerate() {
        let status = bed.vtep(i).terminate(Duration::from_secs(5));
        assert!(bed.check(status, "terminate").success(), "node {i}\n{}", bed.logs());
        assert!(!sock.exists(), "{} survived SIGTERM", sock.display());
    }
});

/// The inode of a file (a namespace's bind mount under /run/netns: its namespace's inode).
fn owner_ino(path: &str) -> u64 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}")).ino()
}

// ---------------------------------------------------------------------------------------------
// systemd notifications, SIGHUP, JSON logs
// ---------------------------------------------------------------------------------------------

/// A `vxtap run` started with a chosen environment, killed by PID on drop; stderr collected.
struct Process {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    fn spawn(ns: &Netns, args: &[&str], env: &[(&str, &std::path::Path)]) -> Process {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns.name()]).arg(bin()).arg("run").args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning vxtap");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (stderr, sink) = (child.stderr.take().expect("stderr"), log.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        Process { child, log }
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn wait_for_line(&self, what: &str) -> String {
        let found = wait_until(Duration::from_secs(30), || self.lines().iter().any(|l| l.contains(what)));
        assert!(found, "no log line with {what:?}:\n{}", self.lines().join("\n"));
        self.lines().into_iter().find(|l| l.contains(what)).unwrap()
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child, not reaped yet (Drop is the only place that reaps).
        assert_eq!(unsafe { libc::kill(self.child.id() as libc::pid_t, sig) }, 0);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// Under systemd (NOTIFY_SOCKET): READY=1 once ready, RELOADING=1 then READY=1 around a reload
// (SIGHUP; without a config file it is refused, logged, and changes nothing), STOPPING=1 on
// SIGTERM; with --log-format json every log line is a JSON object.
netns_test!(systemd_notify_sighup_and_json_logs, {
    let ul = Underlay::pair(Family::V4).expect("underlay");
    let tmp = TempDir::new("notify").expect("temp dir");
    let notify_path = tmp.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).expect("notify socket");
    notify.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let control = tmp.join("n0.sock");
    let (me, peer) = (ul.addr(0).to_string(), ul.addr(1).to_string());
    let args = ["--dev", "vxt0", "--vni", "42", "--local", &me, "--remote", &peer, "--log-format", "json"];
    let mut vxtap = Process::spawn(
        ul.node(0),
        &[&args[..], &["--control", &control.to_string_lossy()]].concat(),
        &[("NOTIFY_SOCKET", &notify_path)],
    );
    let mut buf = [0u8; 4096];
    let n = notify
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notification: {e}\n{}", vxtap.lines().join("\n")));
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(ready.lines().any(|l| l == "STATUS=forwarding on vxt0"), "{ready}");

    let line = vxtap.wait_for_line("\"ready\"");
    let ready_log: serde_json::Value = serde_json::from_str(&line).expect("the ready line is JSON");
    assert_eq!(
        (ready_log["level"].as_str(), ready_log["message"].as_str()),
        (Some("INFO"), Some("ready")),
        "{line}"
    );
    assert!(ready_log["timestamp"].is_string() && ready_log["networks"].is_string(), "{line}");

    // SIGHUP reloads, which a VTEP started from flags cannot do: it says so and runs on; systemd
    // hears RELOADING=1 (with the time) and READY=1 again.
    vxtap.signal(libc::SIGHUP);
    let warned = vxtap.wait_for_line("reload refused");
    let warned: serde_json::Value = serde_json::from_str(&warned).expect("JSON");
    assert_eq!(warned["level"], "WARN", "{warned}");
    assert!(warned["message"].as_str().is_some_and(|m| m.contains("without --config")), "{warned}");
    let n = notify.recv(&mut buf).expect("no RELOADING notification");
    let reloading = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(reloading.lines().any(|l| l == "RELOADING=1"), "{reloading}");
    assert!(reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")), "{reloading}");
    let n = notify.recv(&mut buf).expect("no READY notification after the reload");
    let ready = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(vxtap.child.try_wait().expect("wait").is_none(), "SIGHUP killed vxtap");
    let stats = Command::new(bin()).args(["stats", "--control"]).arg(&control).output().expect("vxtap stats");
    assert!(
        stats.status.success(),
        "control socket after SIGHUP: {}",
        String::from_utf8_lossy(&stats.stderr)
    );

    vxtap.signal(libc::SIGTERM);
    let n = notify.recv(&mut buf).expect("no STOPPING notification");
    assert_eq!(String::from_utf8_lossy(&buf[..n]), "STOPPING=1\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = vxtap.child.try_wait().expect("wait") {
            break st;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    for line in vxtap.lines() {
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v["level"].is_string() && v["message"].is_string() && v["target"].is_string(), "{line}");
    }
});
