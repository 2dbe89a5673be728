//! A build without the `etcd` feature still reads the cluster options, and `vxtap run` refuses
//! them with a clear error before it touches any device. Run with plain `cargo test`; a build
//! with the feature (CI's) compiles this file to nothing.

#![cfg(not(feature = "etcd"))]

use std::process::Command;

#[test]
fn cluster_options_are_refused_with_the_way_to_get_them() {
    let dir = std::env::temp_dir().join(format!("vxtap-no-etcd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        "[etcd]\nendpoints = [\"http://198.18.0.9:2379\"]\nnode = \"a\"\n\n\
         [[network]]\ndev = \"vxt9\"\nvni = 9\nlocal = \"198.18.0.1\"\n",
    )
    .unwrap();
    let bin = env!("CARGO_BIN_EXE_vxtap");
    let flags =
        ["run", "--vni", "9", "--local", "198.18.0.1", "--etcd", "http://198.18.0.9:2379", "--node", "a"];
    let file = ["run", "--config", config.to_str().unwrap()];
    for args in [&flags[..], &file[..]] {
        let out = Command::new(bin).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("built without etcd support: cargo build --features etcd"), "{err}");
    }
    let out = Command::new(bin).args(["flannel", "--etcd", "http://198.18.0.9:2379"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "vxtap flannel: {err}");
    assert!(err.contains("built without etcd support"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}
