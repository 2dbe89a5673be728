//! WireGuard: `vxtap genkey` and `vxtap pubkey` against `wg genkey` and `wg pubkey`
//! (wireguard-tools), `vxtap run` naming a bad WireGuard setting before it touches any device,
//! and the encrypted data path in network namespaces: vxtap against a kernel VXLAN over
//! wireguard-go, and vxtap against vxtap.
//!
//! Without `wg` the comparison prints why and passes as skipped, unless `VXTAP_REQUIRE_NETNS=1`
//! (CI, which installs wireguard-tools), where that is a failure, as for the netns tests.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};

fn vxtap() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vxtap"))
}

/// Runs `cmd` with `input` on stdin.
fn with_stdin(mut cmd: Command, input: &[u8]) -> Output {
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn");
    child.stdin.take().expect("stdin").write_all(input).expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// stdout of a command that must succeed.
fn out(o: Output, what: &str) -> String {
    assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).expect("text")
}

/// Whether `wg` runs here; else the reason, printed, or a panic under `VXTAP_REQUIRE_NETNS=1`.
fn wg_available(test: &str) -> bool {
    let reason = match Command::new("wg").arg("--version").output() {
        Ok(o) if o.status.success() => return true,
        Ok(o) => format!("`wg --version` failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => format!("no `wg` (wireguard-tools: apt-get install wireguard-tools): {e}"),
    };
    if std::env::var("VXTAP_REQUIRE_NETNS").as_deref() == Ok("1") {
        panic!("{test}: wg required but unavailable: {reason}");
    }
    eprintln!("skipping {test}: {reason}");
    false
}

#[test]
fn genkey_and_pubkey_are_wgs() {
    if !wg_available("genkey_and_pubkey_are_wgs") {
        return;
    }
    for _ in 0..8 {
        // wg's key, vxtap's public key.
        let key = out(wg("genkey").output().expect("wg genkey"), "wg genkey");
        let theirs = out(with_stdin(wg("pubkey"), key.as_bytes()), "wg pubkey");
        let ours = out(with_stdin(vxtap_cmd("pubkey"), key.as_bytes()), "vxtap pubkey");
        assert_eq!(ours, theirs, "the public key of {key}");
        // vxtap's key, wg's public key; printed exactly as wg genkey prints one.
        let key = out(vxtap_cmd("genkey").output().expect("vxtap genkey"), "vxtap genkey");
        assert_eq!((key.len(), key.ends_with("=\n")), (45, true), "{key:?}");
        let theirs = out(with_stdin(wg("pubkey"), key.as_bytes()), "wg pubkey");
        let ours = out(with_stdin(vxtap_cmd("pubkey"), key.as_bytes()), "vxtap pubkey");
        assert_eq!(ours, theirs, "the public key of {key}");
        assert_eq!((theirs.len(), theirs.ends_with("=\n")), (45, true));
    }
}

fn wg(sub: &str) -> Command {
    let mut c = Command::new("wg");
    c.arg(sub);
    c
}

fn vxtap_cmd(sub: &str) -> Command {
    let mut c = vxtap();
    c.arg(sub);
    c
}

#[test]
fn genkey_keys_are_clamped_and_new() {
    let decode = |k: &str| -> Vec<u8> {
        // A small base64 decoder, independent of the one vxtap uses.
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let bits: Vec<u8> = k
            .trim_end()
            .trim_end_matches('=')
            .bytes()
            .map(|c| A.iter().position(|&a| a == c).unwrap() as u8)
            .collect();
        let mut out = Vec::new();
        let (mut acc, mut n) = (0u32, 0);
        for b in bits {
            acc = acc << 6 | u32::from(b);
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((acc >> n) as u8);
            }
        }
        out
    };
    let keys: Vec<String> =
        (0..4).map(|_| out(vxtap_cmd("genkey").output().expect("genkey"), "genkey")).collect();
    for k in &keys {
        let b = decode(k);
        assert_eq!(b.len(), 32, "{k}");
        assert_eq!((b[0] & 7, b[31] & 0xc0), (0, 0x40), "clamped as wg genkey does: {k}");
    }
    assert!(keys.windows(2).all(|w| w[0] != w[1]), "a new key each time");
}

#[test]
fn pubkey_refuses_what_is_not_a_private_key() {
    // RFC 7748 §6.1: Alice's key and its public key, with surrounding space.
    let o = with_stdin(vxtap_cmd("pubkey"), b"  dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=\n\n");
    assert_eq!(out(o, "pubkey"), "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=\n");
    for bad in
        [&b""[..], b"\n", b"not a key\n", b"hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTm==\n", b"\xff\xfe\n"]
    {
        let o = with_stdin(vxtap_cmd("pubkey"), bad);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{bad:?}: {err}");
        assert!(err.starts_with("error: ") && err.contains("stdin"), "{bad:?}: {err}");
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn run_names_a_bad_wireguard_setting_before_starting() {
    let dir = std::env::temp_dir().join(format!("vxtap-wg-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key = dir.join("wg.key");
    std::fs::write(&key, "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=\n").unwrap();
    let k = key.to_str().unwrap();
    let bob = "3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=";
    let peer = format!("{bob},endpoint=198.18.0.2:51820,tunnel=10.77.0.2");
    let flags = [
        "run",
        "--dev",
        "vxt9",
        "--vni",
        "9",
        "--remote",
        "10.77.0.2",
        "--wg-private-key",
        k,
        "--wg-address",
        "10.77.0.1",
        "--wg-peer",
        &peer,
    ];
    // A key file others may read is refused before any device is touched.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = vxtap().args(flags).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("run `chmod 600 {k}`")), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
