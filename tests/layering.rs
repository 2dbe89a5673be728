//! The crate's layering, checked from the source: the top-level modules form no import cycle,
//! and no module but `dataplane` itself (and the binary, `main.rs`) reaches `dataplane`, even
//! indirectly — the protocol code stays pure, testable and fuzzable without devices.
//! Run alone: `cargo test --test layering`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module name -> the top-level modules its files name as `crate::<module>`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = Vec::new();
    collect(&src, &mut files);
    for file in files {
        let rel = file.strip_prefix(&src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        if ["lib", "main", "cli", "bench", "demo", "ops", "service"].contains(&top.as_str()) {
            continue; // crate roots and the binary's own modules
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let deps = g.entry(top.clone()).or_default();
        for code in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            let mut rest = code;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() && name != top {
                    deps.insert(name);
                }
            }
        }
    }
    g
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn reaches(g: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        for next in g.get(path.last().unwrap()).into_iter().flatten() {
            let mut p = path.clone();
            p.push(next.clone());
            if next == to {
                return Some(p);
            }
            if seen.insert(next.clone()) {
                stack.push(p);
            }
        }
    }
    None
}

#[test]
fn no_module_but_the_dataplane_reaches_it() {
    let g = graph();
    assert!(g.contains_key("dataplane") && g.contains_key("wire"), "modules found: {:?}", g.keys());
    for m in g.keys().filter(|m| *m != "dataplane") {
        if let Some(path) = reaches(&g, m, "dataplane") {
            panic!("{m} reaches dataplane: {}", path.join(" -> "));
        }
    }
}

#[test]
fn top_level_modules_have_no_import_cycle() {
    let g = graph();
    for m in g.keys() {
        if let Some(path) = reaches(&g, m, m) {
            panic!("import cycle: {}", path.join(" -> "));
        }
    }
}
