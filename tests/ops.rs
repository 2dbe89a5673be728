//! Operations: shell completions and the manual page.

use std::path::Path;
use std::process::Command;

fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_vxtap"))
}

/// `vxtap <args>`'s stdout; it must succeed.
fn vxtap_out(args: &[&str]) -> String {
    let out = Command::new(bin()).args(args).output().expect("running vxtap");
    assert!(out.status.success(), "vxtap {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

const SUBCOMMANDS: &[&str] = &["run", "fdb", "stats", "peers", "bench", "demo", "completions", "man"];

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
