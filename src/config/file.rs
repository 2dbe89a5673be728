//! The config file: `[[network]]` tables and the process-wide settings, read and checked as a
//! whole ([`load`], [`parse`], [`validate`]).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use super::etcd::EtcdConfig;
use super::network::NetworkConfig;
use super::values::{check_metrics_addr, FlowLabel, Ttl};
use super::wireguard::WireGuardConfig;
use crate::wire::Proto;

/// The TOML file: `[[network]]` tables, and the process-wide settings before the first of
/// them: `metrics = "..."`, an `[etcd]` table for a cluster, a `[wireguard]` table (with its
/// `[[wireguard.peer]]` tables) for an encrypted underlay.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    network: Vec<NetworkConfig>,
    /// Where `/metrics` is served (off when absent).
    metrics: Option<SocketAddr>,
    #[serde(default)]
    etcd: Option<EtcdConfig>,
    #[serde(default)]
    wireguard: Option<WireGuardConfig>,
}

/// Everything a config file sets: its networks and the process-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub networks: Vec<NetworkConfig>,
    /// `metrics = "ADDR:PORT"`: serve Prometheus metrics there.
    pub metrics: Option<SocketAddr>,
    /// `[etcd]`: join a cluster (docs/clusters.md).
    pub etcd: Option<EtcdConfig>,
    /// `[wireguard]`: the encrypted underlay, as written (its key files are read when it is
    /// checked, `WireGuardConfig::settings`).
    pub wireguard: Option<WireGuardConfig>,
}

/// Reads and checks a config file: its networks and the process-wide settings.
pub fn load(path: &Path) -> Result<Settings, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    parse(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses and checks the text of a config file.
pub fn parse(text: &str) -> Result<Settings, String> {
    let file: File = toml::from_str(text).map_err(|e| match e.span() {
        // Where: a reload refused for a typo must say which line to look at.
        Some(span) => format!("line {}: {}", text[..span.start].matches('\n').count() + 1, e.message()),
        None => e.message().to_string(),
    })?;
    validate(&file.network)?;
    if let Some(m) = file.metrics {
        check_metrics_addr(m)?;
    }
    Ok(Settings { networks: file.network, metrics: file.metrics, etcd: file.etcd, wireguard: file.wireguard })
}

/// What a cluster (`--etcd`) needs of the networks: a local address to publish (the other
/// members send there; the wildcard is not an address), and one network per protocol and VNI
/// (a node has one record per network: two would overwrite each other's).
pub fn check_cluster(networks: &[NetworkConfig]) -> Result<(), String> {
    let mut seen = HashSet::new();
    for n in networks {
        if !seen.insert((n.proto, n.vni)) {
            return Err(format!(
                "network {} (vni {}): a cluster member runs one network per protocol and VNI, \
                 and another {} network has VNI {}",
                n.dev, n.vni, n.proto, n.vni
            ));
        }
        match n.local {
            Some(ip) if !ip.is_unspecified() => {}
            _ => {
                return Err(format!(
                    "network {} (vni {}): a cluster member needs its underlay address (--local): \
                     the other members send to it",
                    n.dev, n.vni
                ))
            }
        }
    }
    Ok(())
}

/// Checks each network and the whole set: unique TAP names and control sockets, and networks
/// that share a socket (local address and port) agree on the protocol and differ in VNI.
pub fn validate(networks: &[NetworkConfig]) -> Result<(), String> {
    if networks.is_empty() {
        return Err("no network configured".into());
    }
    let mut devs = HashSet::new();
    let mut controls = HashSet::new();
    // What networks on one socket (local address and port) must agree on: the socket's options.
    #[derive(PartialEq)]
    struct Shared<'a> {
        proto: Proto,
        udp_csum: bool,
        offload: bool,
        queues: usize,
        ttl: Ttl,
        flowlabel: FlowLabel,
        underlay_dev: Option<&'a str>,
        cpu_pinning: bool,
    }
    let mut sockets: HashMap<SocketAddr, (Shared<'_>, HashSet<u32>)> = HashMap::new();
    for n in networks {
        n.check()?;
        if !devs.insert(&n.dev) {
            return Err(format!("TAP {} is configured twice", n.dev));
        }
        if !controls.insert(n.control_path()) {
            return Err(format!("control socket {} is configured twice", n.control_path().display()));
        }
        let this = Shared {
            proto: n.proto,
            udp_csum: n.udp_csum,
            offload: n.offload,
            queues: n.queues(),
            ttl: n.ttl,
            flowlabel: n.flowlabel,
            underlay_dev: n.underlay_dev.as_deref(),
            cpu_pinning: n.cpu_pinning,
        };
        let bind = n.bind_addr();
        let (first, vnis) = sockets.entry(bind).or_insert_with(|| (Shared { ..this }, HashSet::new()));
        if first.proto != this.proto {
            return Err(format!("{bind} carries both {} and {}: use different ports", first.proto, n.proto));
        }
        if first.udp_csum != this.udp_csum {
            return Err(format!("networks sharing {bind} disagree on udp_csum"));
        }
        if first.offload != this.offload || first.queues != this.queues {
            return Err(format!("networks sharing {bind} disagree on offload or queues"));
        }
        if *first != this {
            return Err(format!(
                "networks sharing {bind} disagree on ttl, flowlabel, underlay_dev or cpu_pinning"
            ));
        }
        if !vnis.insert(n.vni) {
            return Err(format!("VNI {} is configured twice on {bind}", n.vni));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::config::values::parse_metrics_addr;
    use crate::packet::pmtu::{Df, MssClamp};

    /// The networks of a config file's text.
    fn networks(text: &str) -> Result<Vec<NetworkConfig>, String> {
        parse(text).map(|s| s.networks)
    }

    const TWO_VNIS: &str = r#"
        [[network]]
        dev = "vxt42"
        vni = 42
        local = "198.18.0.1"
        remotes = ["198.18.0.2"]
        address = "198.19.0.1/25"

        [[network]]
        dev = "vxt43"
        vni = 43
        local = "198.18.0.1"
        remotes = ["198.18.0.2:4789"]
        statics = ["02:00:00:00:00:09=198.18.0.2"]
        learning = false
    "#;

    #[test]
    fn loads_several_networks() {
        let nets = networks(TWO_VNIS).unwrap();
        assert_eq!(nets.len(), 2);
        assert_eq!((nets[0].vni, nets[1].vni, nets[1].learning, nets[0].learning), (42, 43, false, true));
        assert_eq!((nets[0].df, nets[0].mss_clamp), (Df::Inherit, None), "defaults");
        let more = TWO_VNIS.replace("learning = false", "learning = false\ndf = \"set\"\nmss_clamp = 1400");
        let nets = networks(&more).unwrap();
        assert_eq!((nets[1].df, nets[1].mss_clamp), (Df::Set, Some(MssClamp::PathMtu(1400))));
        for (text, want) in
            [("true", Some(MssClamp::Auto)), ("\"auto\"", Some(MssClamp::Auto)), ("false", None)]
        {
            let t = TWO_VNIS.replace("learning = false", &format!("mss_clamp = {text}"));
            assert_eq!(networks(&t).unwrap()[1].mss_clamp, want, "{text}");
        }
        assert_eq!(nets[0].bind_addr(), nets[1].bind_addr(), "same socket");
        assert_eq!(nets[1].statics[0].dst.ip, "198.18.0.2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn rejects_conflicts_and_bad_values() {
        let dup_vni = TWO_VNIS.replace("vni = 43", "vni = 42");
        assert!(networks(&dup_vni).unwrap_err().contains("VNI 42 is configured twice"));
        let dup_dev = TWO_VNIS.replace("vxt43", "vxt42");
        assert!(networks(&dup_dev).unwrap_err().contains("configured twice"));
        let mixed = TWO_VNIS.replace("vni = 43", "vni = 43\nproto = \"geneve\"\nport = 4789");
        assert!(networks(&mixed).unwrap_err().contains("both"));
        for bad in ["df = \"maybe\"", "mss_clamp = 100", "mss_clamp = \"lots\""] {
            let text = TWO_VNIS.replace("learning = false", &format!("learning = false\n{bad}"));
            assert!(networks(&text).is_err(), "{bad}");
        }
        let csum = TWO_VNIS.replace("learning = false", "learning = false\nudp_csum = false");
        assert!(networks(&csum).unwrap_err().contains("udp_csum"));
        let off = TWO_VNIS.replace("learning = false", "learning = false\noffload = false");
        assert!(networks(&off).unwrap_err().contains("offload or queues"));
        let q = TWO_VNIS.replace("learning = false", "learning = false\nqueues = 0");
        assert!(networks(&q).unwrap_err().contains("queues must be 1 to 16"));
        let cap = TWO_VNIS.replace("learning = false", "learning = false\nmax_src_ports = 0");
        assert!(networks(&cap).unwrap_err().contains("max_src_ports must be 1 to 65535"));
        assert!(networks(&TWO_VNIS.replace("vni = 43", "vni = 16777216")).unwrap_err().contains("24 bits"));
        assert!(networks(&TWO_VNIS.replace("learning", "lerning")).is_err(), "unknown keys are errors");
        let e = networks(&TWO_VNIS.replace("learning = false", "learning = \"no\"")).unwrap_err();
        assert!(e.starts_with("line 15: invalid type"), "the line is named: {e}");
        assert!(networks(&TWO_VNIS.replace("198.18.0.2:4789", "2001:db8::2"))
            .unwrap_err()
            .contains("not IPv4"));
        assert!(networks(&TWO_VNIS.replace("02:00:00:00:00:09", "zz")).is_err());
        assert!(networks("").is_err());
    }

    #[test]
    fn metrics_address_is_a_top_level_key() {
        let s = parse(&format!("metrics = \"198.18.0.1:9477\"\n{TWO_VNIS}")).unwrap();
        assert_eq!((s.metrics, s.networks.len()), (Some("198.18.0.1:9477".parse().unwrap()), 2));
        assert_eq!(parse(TWO_VNIS).unwrap().metrics, None, "off by default");
        let v6 = parse(&format!("metrics = \"[::1]:9477\"\n{TWO_VNIS}")).unwrap();
        assert!(v6.metrics.unwrap().is_ipv6());
        for bad in ["\"198.18.0.1\"", "\"198.18.0.1:0\"", "9477"] {
            assert!(parse(&format!("metrics = {bad}\n{TWO_VNIS}")).is_err(), "{bad}");
        }
        // After a [[network]] header the key belongs to that network, which has no such key.
        assert!(parse(&format!("{TWO_VNIS}\nmetrics = \"198.18.0.1:9477\"")).is_err());
        assert_eq!(parse_metrics_addr("[2001:db8::1]:9477").unwrap().port(), 9477);
        assert!(parse_metrics_addr("198.18.0.1:0").is_err() && parse_metrics_addr("localhost:1").is_err());
    }

    #[test]
    fn etcd_table_and_proxy() {
        let text = format!(
            "[etcd]\nendpoints = [\"http://198.18.0.9:2379\"]\nnode = \"a\"\nttl = 5\n\n{}",
            TWO_VNIS.replacen("learning = false", "learning = false\nproxy = true", 1)
        );
        let Settings { networks: nets, etcd, .. } = parse(&text).unwrap();
        assert!(nets[1].proxy && !nets[0].proxy);
        let etcd = etcd.expect("[etcd]");
        assert_eq!((etcd.endpoints.len(), etcd.node.as_deref(), etcd.ttl), (1, Some("a"), Some(5)));
        assert!(parse(TWO_VNIS).unwrap().etcd.is_none());
        assert!(parse(&text.replace("ttl = 5", "tll = 5")).is_err(), "unknown keys are errors");
        assert!(check_cluster(&nets).is_ok());
        let mut wild = nets.clone();
        wild[0].local = None;
        assert!(check_cluster(&wild).unwrap_err().contains("--local"));
        // The same VNI on another port is another socket, but the same cluster network.
        let mut twice = nets.clone();
        twice[1].vni = twice[0].vni;
        twice[1].port = Some(4790);
        assert!(validate(&twice).is_ok());
        assert!(check_cluster(&twice).unwrap_err().contains("one network per protocol and VNI"));
        twice[1].proto = Proto::Geneve;
        assert!(check_cluster(&twice).is_ok(), "VXLAN and Geneve with one VNI are two networks");
    }
}
