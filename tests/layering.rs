//! The library's layering, checked from the source (docs/design.md "The library"). `src/` is
//! in tiers, each a folder, from the bottom:
//!
//!   wire → state → packet → config → control → node
//!
//! `wire` (formats, MACs, prefixes), `state` (tables and counters), `packet` (the per-packet
//! work), `config` (what to run, the reload plan) and `control` (control messages, the cluster's
//! plan, metrics encoding) are pure: no devices, no sockets, no threads. `node` is the I/O tier.
//! The binary is a package of its own (`cli/`), above all of them.
//!
//! The rules: a file imports only from its own tier and the tiers below (so nothing outside
//! `node` and the binary reaches `node`), and no two files import each other, even through
//! others. Imports are every path a file names, however written: `crate::a::b`, `super::x`
//! (inside a folder too), `self::x` and a child module's name. Run alone:
//! `cargo test --test layering`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The tiers, bottom first.
const TIERS: [&str; 6] = ["wire", "state", "packet", "config", "control", "node"];

/// A source file as a module path: `src/packet/pmtu/mss.rs` is `["packet", "pmtu", "mss"]`,
/// `src/node/mod.rs` is `["node"]`, `src/lib.rs` is `[]`.
type Module = Vec<String>;

struct Crate {
    /// Module path -> its file's text, comments removed.
    files: BTreeMap<Module, String>,
}

impl Crate {
    fn read(src: &Path) -> Crate {
        let mut paths = Vec::new();
        collect(src, &mut paths);
        let files = paths
            .into_iter()
            .map(|p| {
                let rel = p.strip_prefix(src).unwrap().with_extension("");
                let mut m: Module =
                    rel.components().map(|c| c.as_os_str().to_string_lossy().into()).collect();
                if matches!(m.last().map(String::as_str), Some("mod" | "lib")) {
                    m.pop();
                }
                (m, code_of(&std::fs::read_to_string(&p).unwrap()))
            })
            .collect();
        Crate { files }
    }

    /// The module of `path` (segments after `crate::`): its longest prefix that is a file.
    fn resolve(&self, path: &[String]) -> Option<Module> {
        (1..=path.len()).rev().map(|n| path[..n].to_vec()).find(|m| self.files.contains_key(m))
    }

    /// The files module `m` imports, however it names them.
    fn imports(&self, m: &Module) -> BTreeSet<Module> {
        let text = &self.files[m];
        let mut out = BTreeSet::new();
        for (start, path) in paths_in(text) {
            let absolute: Option<Vec<String>> = match path[0].as_str() {
                "crate" => Some(path[1..].to_vec()),
                "super" => {
                    let ups = path.iter().take_while(|s| *s == "super").count();
                    // super:: from a file is its parent module; a `mod tests` inside the file
                    // names the file itself with its first super.
                    let in_inline_mod = inline_mod_depth(text, start);
                    let ups = ups.saturating_sub(in_inline_mod);
                    (ups <= m.len())
                        .then(|| [&m[..m.len() - ups], &path[path.len().min(ups + in_inline_mod)..]].concat())
                }
                "self" => Some([&m[..], &path[1..]].concat()),
                child => {
                    let mut c = m.clone();
                    c.push(child.to_string());
                    self.files.contains_key(&c).then(|| [&m[..], &path[..]].concat())
                }
            };
            if let Some(target) = absolute.and_then(|p| self.resolve(&p)) {
                if &target != m {
                    out.insert(target);
                }
            }
        }
        out
    }

    fn graph(&self) -> BTreeMap<Module, BTreeSet<Module>> {
        self.files.keys().map(|m| (m.clone(), self.imports(m))).collect()
    }
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The text without `//` comments (doc comments name modules in prose and links).
fn code_of(text: &str) -> String {
    text.lines().map(|l| l.split_once("//").map_or(l, |(code, _)| code)).collect::<Vec<_>>().join("\n")
}

/// Every `a::b::c` path in `text` (the first segment an identifier not preceded by `::`), with
/// its byte offset; `use a::{b, c::d}` groups are expanded one level.
fn paths_in(text: &str) -> Vec<(usize, Vec<String>)> {
    let bytes = text.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if !ident(bytes[i]) || (i > 0 && (ident(bytes[i - 1]) || bytes[i - 1] == b':')) {
            i += 1;
            continue;
        }
        let start = i;
        let mut segs = Vec::new();
        loop {
            let s = i;
            while i < bytes.len() && ident(bytes[i]) {
                i += 1;
            }
            segs.push(text[s..i].to_string());
            if text[i..].starts_with("::")
                && text[i + 2..].starts_with(|c: char| c.is_alphanumeric() || c == '_')
            {
                i += 2;
            } else {
                break;
            }
        }
        if text[i..].starts_with("::{") {
            // `a::b::{c, d}`: the items, not `a::b` itself.
            let close = text[i..].find('}').map_or(text.len(), |c| i + c);
            for item in text[i + 3..close].split(',') {
                let item: Vec<String> = item.trim().split("::").map(|s| s.trim().to_string()).collect();
                if item.first().is_some_and(|s| !s.is_empty() && s != "self") {
                    out.push((start, [&segs[..], &item[..]].concat()));
                }
            }
        } else if segs.len() > 1 {
            out.push((start, segs));
        }
    }
    out
}

/// How many `mod name {` blocks enclose byte `at` of `text` (a `mod tests` in a file).
fn inline_mod_depth(text: &str, at: usize) -> usize {
    let mut depth = 0;
    let mut opened = Vec::new(); // brace depth at which each inline mod opened
    let mut braces = 0usize;
    let before = &text[..at];
    let mut i = 0;
    while let Some(c) = before[i..].chars().next() {
        if before[i..].starts_with("mod ") {
            let rest = &before[i + 4..];
            let name_end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(rest.len());
            if rest[name_end..].trim_start().starts_with('{') {
                opened.push(braces + 1);
                depth += 1;
            }
        }
        match c {
            '{' => braces += 1,
            '}' => {
                if opened.last() == Some(&braces) {
                    opened.pop();
                    depth -= 1;
                }
                braces = braces.saturating_sub(1);
            }
            _ => {}
        }
        i += c.len_utf8();
    }
    depth
}

fn tier(m: &Module) -> Option<usize> {
    TIERS.iter().position(|t| m.first().is_some_and(|f| f == t))
}

fn library() -> Crate {
    Crate::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "lib".into()
    } else {
        m.join("::")
    }
}

#[test]
fn src_holds_the_tiers_and_nothing_else() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut entries: Vec<String> =
        std::fs::read_dir(&src).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    entries.sort();
    let mut expected: Vec<String> =
        TIERS.iter().map(|t| t.to_string()).chain(["lib.rs".to_string()]).collect();
    expected.sort();
    assert_eq!(entries, expected, "src/ is the crate root and one folder per tier");
}

#[test]
fn every_file_imports_only_its_tier_and_below() {
    let lib = library();
    let graph = lib.graph();
    assert!(graph.len() > 50, "files found: {}", graph.len());
    let mut wrong = Vec::new();
    for (m, deps) in &graph {
        let Some(t) = tier(m) else { continue }; // lib.rs: declarations and re-exports
        for d in deps {
            if tier(d).is_some_and(|u| u > t) {
                wrong.push(format!(
                    "{} ({}) imports {} ({})",
                    name(m),
                    TIERS[t],
                    name(d),
                    TIERS[tier(d).unwrap()]
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "upward imports:\n{}", wrong.join("\n"));
}

/// A path of imports from `from` to a file for which `hit` holds, if there is one.
fn path_to(
    graph: &BTreeMap<Module, BTreeSet<Module>>,
    from: &Module,
    hit: impl Fn(&Module) -> bool,
) -> Option<String> {
    let mut stack = vec![vec![from.clone()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        for next in &graph[path.last().unwrap()] {
            let mut p = path.clone();
            p.push(next.clone());
            if hit(next) {
                return Some(p.iter().map(name).collect::<Vec<_>>().join(" -> "));
            }
            if seen.insert(next.clone()) {
                stack.push(p);
            }
        }
    }
    None
}

#[test]
fn no_file_but_the_io_tier_reaches_it() {
    let graph = library().graph();
    for m in graph.keys().filter(|m| tier(m).is_some_and(|t| TIERS[t] != "node")) {
        if let Some(path) = path_to(&graph, m, |next| next.first().is_some_and(|f| f == "node")) {
            panic!("{} reaches the I/O tier: {path}", name(m));
        }
    }
}

#[test]
fn no_import_cycle_between_files() {
    // A child naming the module that declares it (`super::Item` for an item of its folder's
    // mod.rs) is not an import between peers: the parent holds the child.
    let graph: BTreeMap<Module, BTreeSet<Module>> = library()
        .graph()
        .into_iter()
        .map(|(m, deps)| {
            let deps = deps.into_iter().filter(|d| !m.starts_with(d)).collect();
            (m, deps)
        })
        .collect();
    for start in graph.keys() {
        if let Some(path) = path_to(&graph, start, |next| next == start) {
            panic!("import cycle: {path}");
        }
    }
}

#[test]
fn the_checker_sees_every_way_of_naming_a_module() {
    let text =
        "use super::sys::EventFd;\nuse crate::packet::{flow, pmtu::Df};\nfn f() { worker::spawn(); }\n\
                mod tests { use super::*; fn g() { super::super::tap::x(); } }";
    let lib = Crate {
        files: [
            (vec!["node".into(), "group".into()], code_of(text)),
            (vec!["node".into(), "sys".into()], String::new()),
            (vec!["node".into(), "tap".into()], String::new()),
            (vec!["node".into()], String::new()),
            (vec!["packet".into(), "flow".into()], String::new()),
            (vec!["packet".into(), "pmtu".into()], String::new()),
            (vec!["packet".into()], String::new()),
        ]
        .into_iter()
        .collect(),
    };
    let found: Vec<String> = lib.imports(&vec!["node".into(), "group".into()]).iter().map(name).collect();
    assert_eq!(found, ["node::sys", "node::tap", "packet::flow", "packet::pmtu"]);
}
