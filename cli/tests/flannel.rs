//! `vxtap flannel` end to end, against the kernel: a flannel cluster (etcd subnet manager,
//! vxlan backend) of a "kernel node", set up by the test exactly as flanneld would (a kernel
//! `vxlan` device flannel.1, its lease written into etcd, routes, neighbours and `bridge fdb`
//! entries from the other leases), and vxtap nodes. Pods are network namespaces made by Debian's
//! CNI `bridge` and `host-local` plugins, configured as flannel's CNI plugin does from the
//! subnet file. Pod-to-pod ping and TCP both ways, a third node joining, a lease deleted, a
//! restart that gets its subnet back; and the refusals (etcd down, a backend vxtap does not
//! speak, bad leases).
//!
//! Needs the `etcd` feature, root, etcd and /usr/lib/cni (containernetworking-plugins); without
//! them the tests skip, or fail under `VXTAP_REQUIRE_NETNS=1`. Addresses: underlay
//! 198.18.0.0/24, flannel Network 198.19.0.0/16.

#![cfg(feature = "etcd")]

mod common;

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use vxtap_testbed::{etcd_installed, netns_test, tcp_transfer, Etcd, Netns, TempDir, Underlay, Vtep};

const PREFIX: &str = "/coreos.com/network";
const CONFIG: &str = r#"{"Network":"198.19.0.0/16","SubnetLen":24,"Backend":{"Type":"vxlan","VNI":1}}"#;
const CNI_PATH: &str = "/usr/lib/cni";
/// Generous: debug builds on a loaded 2-core machine.
const CONVERGE: Duration = Duration::from_secs(20);
/// A joining node must be reachable within this (the issue: "within seconds").
const JOIN_BOUND: Duration = Duration::from_secs(10);
/// The kernel node's subnet and VtepMAC.
const KERNEL_SUBNET: &str = "198.19.10.0";
const KERNEL_MAC: &str = "0e:00:00:00:0a:01";

fn requirements() -> Result<(), String> {
    etcd_installed()?;
    for p in ["bridge", "host-local"] {
        if !Path::new(CNI_PATH).join(p).exists() {
            return Err(format!("{CNI_PATH}/{p} missing: apt-get install containernetworking-plugins"));
        }
    }
    Ok(())
}

/// A lease as this test reads it from etcd.
#[derive(Debug, Clone, PartialEq)]
struct LeaseView {
    subnet: Ipv4Addr,
    public_ip: Ipv4Addr,
    mac: String,
}

fn leases(etcd: &Etcd) -> Vec<LeaseView> {
    etcd.get_prefix(&format!("{PREFIX}/subnets/"))
        .expect("listing leases")
        .into_iter()
        .filter_map(|(k, v)| {
            let tail = k.rsplit('/').next()?.split_once('-')?.0.parse().ok()?;
            let v: Value = serde_json::from_slice(&v).ok()?;
            Some(LeaseView {
                subnet: tail,
                public_ip: v["PublicIP"].as_str()?.parse().ok()?,
                mac: v["BackendData"]["VtepMAC"].as_str()?.to_string(),
            })
        })
        .collect()
}

fn lease_of(etcd: &Etcd, ip: Ipv4Addr) -> LeaseView {
    leases(etcd).into_iter().find(|l| l.public_ip == ip).unwrap_or_else(|| panic!("no lease of {ip}"))
}

fn v4(ip: std::net::IpAddr) -> Ipv4Addr {
    match ip {
        std::net::IpAddr::V4(v) => v,
        _ => panic!("IPv4 underlay"),
    }
}

/// A kernel node as flanneld leaves it: flannel.1 (kernel vxlan, nolearning), its lease in etcd.
fn kernel_node(ns: &Netns, etcd: &Etcd, local: Ipv4Addr) {
    let local = local.to_string();
    // As testbed's KernelVxlan: the kernel leaves the inner checksum to the NIC, which a veth
    // never fills in; a real NIC does, so the wire looks like a real one with tx offload off.
    let out = ns.exec(&["ethtool", "-K", "ul0", "tx", "off"]).unwrap();
    assert!(out.status.success(), "ethtool: {}", String::from_utf8_lossy(&out.stderr));
    ns.ip(&[
        "link",
        "add",
        "flannel.1",
        "type",
        "vxlan",
        "id",
        "1",
        "dstport",
        "8472",
        "local",
        &local,
        "dev",
        "ul0",
        "nolearning",
    ])
    .expect("kernel vxlan");
    ns.ip(&["link", "set", "flannel.1", "address", KERNEL_MAC]).unwrap();
    ns.ip(&["link", "set", "flannel.1", "mtu", "1450"]).unwrap();
    ns.ip(&["addr", "add", &format!("{KERNEL_SUBNET}/32"), "dev", "flannel.1"]).unwrap();
    ns.ip(&["link", "set", "flannel.1", "up"]).unwrap();
    ns.sysctl("net/ipv4/ip_forward", "1").unwrap();
    let value = format!(
        r#"{{"PublicIP":"{local}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{KERNEL_MAC}"}}}}"#
    );
    etcd.put(&format!("{PREFIX}/subnets/{KERNEL_SUBNET}-24"), value.as_bytes()).unwrap();
}

/// On the kernel node, what flanneld sets for another node's lease.
fn kernel_route_to(ns: &Netns, l: &LeaseView) {
    let (s, mac, ip) = (l.subnet.to_string(), l.mac.as_str(), l.public_ip.to_string());
    ns.ip(&["route", "replace", &format!("{s}/24"), "via", &s, "dev", "flannel.1", "onlink"]).unwrap();
    ns.ip(&["neigh", "replace", &s, "lladdr", mac, "dev", "flannel.1", "nud", "permanent"]).unwrap();
    let out = Command::new("bridge")
        .args(["-n", ns.name(), "fdb", "replace", mac, "dev", "flannel.1", "dst", &ip, "self", "permanent"])
        .output()
        .unwrap();
    assert!(out.status.success(), "bridge fdb: {}", String::from_utf8_lossy(&out.stderr));
}

/// A pod: a namespace given an address by the CNI bridge and host-local plugins, run inside the
/// node's namespace with the configuration flannel's CNI plugin generates. Its host-local state
/// directory is removed on drop (the namespace goes with [`Netns`]'s drop).
struct Pod {
    ns: Netns,
    ip: Ipv4Addr,
    _state: StateDir,
}

/// host-local's state directory of one network name, removed on drop.
struct StateDir(PathBuf);

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pod(node: &Netns, subnet: Ipv4Addr, mtu: u32, tag: &str) -> Pod {
    let ns = Netns::new(tag).expect("pod namespace");
    let name = format!("vxtap-flannel-{}-{}", std::process::id(), ns.name());
    let state = StateDir(PathBuf::from("/var/lib/cni/networks").join(&name));
    let config = format!(
        r#"{{"cniVersion":"0.3.1","name":"{name}","type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":false,"mtu":{mtu},"ipam":{{"type":"host-local","ranges":[[{{"subnet":"{subnet}/24"}}]],"routes":[{{"dst":"198.19.0.0/16"}}]}}}}"#
    );
    let mut child = Command::new("ip")
        .args(["netns", "exec", node.name(), &format!("{CNI_PATH}/bridge")])
        .env("CNI_COMMAND", "ADD")
        .env("CNI_CONTAINERID", ns.name())
        .env("CNI_NETNS", format!("/var/run/netns/{}", ns.name()))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", CNI_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the CNI bridge plugin");
    child.stdin.take().unwrap().write_all(config.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "CNI ADD: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_slice(&out.stdout).expect("CNI result");
    let addr = result["ips"][0]["address"].as_str().expect("an address").split('/').next().unwrap();
    Pod { ns, ip: addr.parse().unwrap(), _state: state }
}

fn ping(from: &Pod, to: Ipv4Addr) -> bool {
    let out = from.ns.exec(&["ping", "-c", "1", "-W", "1", &to.to_string()]).unwrap();
    out.status.success()
}

fn ping_within(from: &Pod, to: Ipv4Addr, timeout: Duration) -> bool {
    wait_until(timeout, || ping(from, to))
}

fn route_of(ns: &Netns, subnet: Ipv4Addr) -> String {
    ns.ip_out(&["route", "show", &format!("{subnet}/24")]).unwrap().trim().to_string()
}

/// `vxtap flannel` in `ns`, its subnet file and control socket in `tmp`.
struct FlannelNode {
    vtep: Vtep,
    control: PathBuf,
    subnet_file: PathBuf,
}

fn start_flannel(
    ns: &Netns,
    tmp: &TempDir,
    name: &str,
    etcd: &Etcd,
    extra: &[&str],
) -> anyhow::Result<FlannelNode> {
    let control = tmp.join(&format!("{name}.sock"));
    let subnet_file = tmp.join(&format!("{name}/subnet.env"));
    let mut args = strings(&["--etcd", &etcd.endpoint()]);
    args.extend(["--control".into(), control.display().to_string()]);
    args.extend(["--subnet-file".into(), subnet_file.display().to_string()]);
    args.extend(strings(extra));
    let vtep = Vtep::spawn_ready(ns, bin(), "flannel", &args, &[])?;
    Ok(FlannelNode { vtep, control, subnet_file })
}

fn cmd_json(control: &Path, args: &[&str]) -> Value {
    let out = vxtap_testbed::vtep_cmd(bin(), control, args).expect("vxtap command");
    serde_json::from_str(&out).unwrap()
}

netns_test!(pods_talk_across_kernel_and_vxtap_flannel_nodes, requires = requirements, {
    // Hosts: 0 the kernel node, 1 and 2 vxtap nodes, 3 etcd.
    let ul = Underlay::star(4).expect("underlay");
    let tmp = TempDir::new("flannel").unwrap();
    let ips: Vec<Ipv4Addr> = (0..4).map(|i| v4(ul.addr(i))).collect();
    let mut etcd = Etcd::start(ul.node(3), ul.addr(3)).expect("etcd");
    etcd.wait_healthy(Duration::from_secs(10)).unwrap();
    etcd.put(&format!("{PREFIX}/config"), CONFIG.as_bytes()).unwrap();
    let (kernel, a_ns, b_ns) = (ul.node(0), ul.node(1), ul.node(2));
    kernel_node(kernel, &etcd, ips[0]);

    // Node A finds its underlay by the default route (as flanneld does without --iface).
    a_ns.ip(&["route", "add", "default", "via", &ips[3].to_string()]).unwrap();
    let mut a = start_flannel(a_ns, &tmp, "a", &etcd, &[]).expect("vxtap flannel A");
    let la = lease_of(&etcd, ips[1]);
    assert_eq!(u8::from_str_radix(&la.mac[..2], 16).unwrap() & 3, 2, "a locally administered MAC");
    let env = std::fs::read_to_string(&a.subnet_file).unwrap();
    let a_net = la.subnet.octets();
    assert_eq!(
        env,
        format!(
            "FLANNEL_NETWORK=198.19.0.0/16\nFLANNEL_SUBNET=198.19.{}.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n",
            a_net[2]
        )
    );
    // The TAP as flanneld leaves flannel.1: the lease's MAC, the .0/32, MTU 1500 - 50.
    let link = a_ns.ip_out(&["-d", "addr", "show", "flannel.1"]).unwrap();
    assert!(
        link.contains(&la.mac) && link.contains(&format!("{}/32", la.subnet)) && link.contains("mtu 1450"),
        "{link}"
    );
    // A routes to the kernel node: route via .0 onlink, a permanent neighbour, an FDB entry.
    let r = route_of(a_ns, KERNEL_SUBNET.parse().unwrap());
    assert!(r.contains("via 198.19.10.0 dev flannel.1") && r.contains("onlink"), "{r}");
    let neigh = a_ns.ip_out(&["neigh", "show", "dev", "flannel.1"]).unwrap();
    assert!(neigh.contains(&format!("{KERNEL_SUBNET} lladdr {KERNEL_MAC} PERMANENT")), "{neigh}");
    let fdb = cmd_json(&a.control, &["fdb", "show", "--json"]);
    assert!(
        fdb.as_array()
            .unwrap()
            .iter()
            .any(|e| e["mac"] == KERNEL_MAC && e["dst"] == ips[0].to_string() && e["port"] == 8472),
        "{fdb}"
    );
    let peers = cmd_json(&a.control, &["peers", "--json"]);
    assert_eq!(peers[0]["source"], "flannel", "{peers}");
    assert_eq!(peers[0]["node"], "198.19.10.0/24", "{peers}");
    let stats = cmd_json(&a.control, &["stats", "--json"]);
    assert_eq!(
        (stats["flannel_connected"].as_u64(), stats["flannel_peers"].as_u64()),
        (Some(1), Some(1)),
        "{stats}"
    );

    // The kernel side, from A's lease, as flanneld would.
    kernel_route_to(kernel, &la);
    let pod_k = pod(kernel, KERNEL_SUBNET.parse().unwrap(), 1450, "podk");
    let pod_a = pod(a_ns, la.subnet, 1450, "poda");
    assert!(ping_within(&pod_k, pod_a.ip, CONVERGE), "kernel pod -> vxtap pod; vxtap log:\n{}", a.vtep.log());
    assert!(ping(&pod_a, pod_k.ip), "vxtap pod -> kernel pod");
    for (server, client) in [(&pod_a, &pod_k), (&pod_k, &pod_a)] {
        let r = tcp_transfer(&server.ns, SocketAddr::from((server.ip, 5201)), &client.ns, 4 << 20)
            .unwrap_or_else(|e| panic!("TCP {} -> {}: {e:#}\n{}", client.ip, server.ip, a.vtep.log()));
        assert_eq!(r.bytes, 4 << 20);
    }

    // A third node joins later, its underlay named by --iface: reachable from both within seconds.
    let mut b = start_flannel(b_ns, &tmp, "b", &etcd, &["--iface", "ul0"]).expect("vxtap flannel B");
    let joined = Instant::now();
    let lb = lease_of(&etcd, ips[2]);
    assert_ne!(lb.subnet, la.subnet);
    kernel_route_to(kernel, &lb);
    let pod_b = pod(b_ns, lb.subnet, 1450, "podb");
    assert!(
        ping_within(&pod_a, pod_b.ip, JOIN_BOUND),
        "A -> B; A's log:\n{}\nB's log:\n{}",
        a.vtep.log(),
        b.vtep.log()
    );
    assert!(ping_within(&pod_k, pod_b.ip, JOIN_BOUND), "kernel -> B");
    assert!(ping(&pod_b, pod_a.ip) && ping(&pod_b, pod_k.ip), "B -> A and the kernel node");
    eprintln!("the third node was reachable from both {:?} after it was ready", joined.elapsed());

    // The kernel node's lease deleted: both vxtap nodes drop its route, neighbour and FDB entry.
    etcd.delete(&format!("{PREFIX}/subnets/{KERNEL_SUBNET}-24")).unwrap();
    for (ns, node) in [(a_ns, &a), (b_ns, &b)] {
        assert!(
            wait_until(CONVERGE, || route_of(ns, KERNEL_SUBNET.parse().unwrap()).is_empty()),
            "route still there: {}",
            route_of(ns, KERNEL_SUBNET.parse().unwrap())
        );
        let neigh = ns.ip_out(&["neigh", "show", "dev", "flannel.1"]).unwrap();
        assert!(!neigh.contains(KERNEL_MAC), "{neigh}");
        let fdb = cmd_json(&node.control, &["fdb", "show", "--json"]);
        assert!(!fdb.to_string().contains(KERNEL_MAC), "{fdb}");
    }
    assert!(!ping(&pod_a, pod_k.ip), "no route to a node whose lease is gone");

    // A restarts: the same subnet and VtepMAC; B is routed to again.
    a.vtep.terminate(Duration::from_secs(5)).expect("clean exit");
    assert_eq!(lease_of(&etcd, ips[1]), la, "the lease stays on a clean exit");
    let a2 = start_flannel(a_ns, &tmp, "a", &etcd, &[]).expect("vxtap flannel A again");
    assert_eq!(lease_of(&etcd, ips[1]), la, "the same subnet and MAC after a restart");
    assert!(a2.vtep.log().contains("reused this host's lease"), "{}", a2.vtep.log());
    // CNI's cni0 and the pod stayed: the pod is reachable again once the routes are back.
    assert!(ping_within(&pod_b, pod_a.ip, CONVERGE), "B -> A after A's restart");
    b.vtep.terminate(Duration::from_secs(5)).expect("clean exit");
    drop(a2);
    drop(etcd);
});

netns_test!(bad_leases_are_skipped_and_counted, requires = requirements, {
    let ul = Underlay::star(2).expect("underlay");
    let tmp = TempDir::new("flannel").unwrap();
    let mut etcd = Etcd::start(ul.node(1), ul.addr(1)).expect("etcd");
    etcd.wait_healthy(Duration::from_secs(10)).unwrap();
    etcd.put(&format!("{PREFIX}/config"), CONFIG.as_bytes()).unwrap();
    let sub = |k: &str| format!("{PREFIX}/subnets/{k}");
    etcd.put(&sub("198.19.20.0-24"), br#"{"PublicIP":"198.18.0.20","BackendType":"host-gw"}"#).unwrap();
    etcd.put(&sub("198.19.21.0-24"), b"not json").unwrap();
    etcd.put(&sub("198.19.22.0"), b"{}").unwrap();
    let good = r#"{"PublicIP":"198.18.0.23","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:17:01"}}"#;
    etcd.put(&sub("198.19.23.0-24"), good.as_bytes()).unwrap();
    let ns = ul.node(0);
    let n = start_flannel(ns, &tmp, "a", &etcd, &["--public-ip", &ul.addr(0).to_string()])
        .expect("vxtap flannel");
    let stats = cmd_json(&n.control, &["stats", "--json"]);
    assert!(stats["flannel_other_backends"].as_u64() >= Some(1), "{stats}");
    assert!(stats["flannel_bad_leases"].as_u64() >= Some(2), "{stats}");
    assert_eq!(stats["flannel_peers"].as_u64(), Some(1), "{stats}");
    assert!(!route_of(ns, "198.19.23.0".parse().unwrap()).is_empty());
    assert!(route_of(ns, "198.19.20.0".parse().unwrap()).is_empty(), "no route to a host-gw host");
    // A good lease turned bad: its routes go, nothing half-configured stays.
    etcd.put(&sub("198.19.23.0-24"), b"{\"PublicIP\":1}").unwrap();
    assert!(wait_until(CONVERGE, || route_of(ns, "198.19.23.0".parse().unwrap()).is_empty()));
    let neigh = ns.ip_out(&["neigh", "show", "dev", "flannel.1"]).unwrap();
    assert!(!neigh.contains("0e:00:00:00:17:01"), "{neigh}");
    // Its own lease deleted by someone: put back.
    let own = leases(&etcd).into_iter().find(|l| l.public_ip == v4(ul.addr(0))).unwrap();
    etcd.delete(&sub(&format!("{}-24", own.subnet))).unwrap();
    assert!(wait_until(CONVERGE, || leases(&etcd).contains(&own)), "own lease put back");
    // Stopped, its lease gone meanwhile (expired, say): the previous subnet file's subnet again.
    let mut v = n.vtep;
    v.terminate(Duration::from_secs(5)).expect("clean exit");
    etcd.delete(&sub(&format!("{}-24", own.subnet))).unwrap();
    let again =
        start_flannel(ns, &tmp, "a", &etcd, &["--public-ip", &ul.addr(0).to_string()]).expect("restart");
    assert!(again.vtep.log().contains("previous subnet file"), "{}", again.vtep.log());
    let now = leases(&etcd).into_iter().find(|l| l.public_ip == v4(ul.addr(0))).unwrap();
    assert_eq!(now.subnet, own.subnet);
    assert_ne!(now.mac, own.mac, "a new lease, a new VtepMAC");
});

netns_test!(refusals_are_clear_errors, requires = requirements, {
    let ul = Underlay::star(2).expect("underlay");
    let tmp = TempDir::new("flannel").unwrap();
    let ns = ul.node(0);
    let me = ul.addr(0).to_string();
    let run = |endpoint: &str| {
        let args = strings(&[
            "--etcd",
            endpoint,
            "--public-ip",
            &me,
            "--subnet-file",
            &tmp.join("s.env").display().to_string(),
        ]);
        let mut v = Vtep::spawn_command(ns, bin(), "flannel", &args, &[]).unwrap();
        let st = v.wait_exit(Duration::from_secs(30)).unwrap();
        (st.code(), v.log())
    };
    // etcd down: a refused connection.
    let (code, log) = run(&format!("http://{me}:9"));
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("not reachable"), "{log}");
    let mut etcd = Etcd::start(ul.node(1), ul.addr(1)).expect("etcd");
    etcd.wait_healthy(Duration::from_secs(10)).unwrap();
    let ep = etcd.endpoint();
    let (code, log) = run(&ep);
    assert_eq!(code, Some(1));
    assert!(log.contains("no flannel configuration"), "{log}");
    for (config, says) in [
        (r#"{"Network":"198.19.0.0/16"}"#, "udp"),
        (r#"{"Network":"198.19.0.0/16","Backend":{"Type":"host-gw"}}"#, "host-gw"),
        ("Network=198.19.0.0/16", "not a JSON object"),
        (
            r#"{"Network":"198.19.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}"#,
            "IPv4 only",
        ),
    ] {
        etcd.put(&format!("{PREFIX}/config"), config.as_bytes()).unwrap();
        let (code, log) = run(&ep);
        assert_eq!(code, Some(1), "{config}: {log}");
        assert!(log.contains(says), "{config}: {log}");
    }
    // An exhausted range: the only subnet is someone else's.
    etcd.put(
        &format!("{PREFIX}/config"),
        br#"{"Network":"198.19.0.0/16","SubnetMin":"198.19.5.0","SubnetMax":"198.19.5.0","Backend":{"Type":"vxlan"}}"#,
    )
    .unwrap();
    etcd.put(
        &format!("{PREFIX}/subnets/198.19.5.0-24"),
        br#"{"PublicIP":"198.18.0.99","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:05:01"}}"#,
    )
    .unwrap();
    let (code, log) = run(&ep);
    assert_eq!(code, Some(1));
    assert!(log.contains("no free subnet"), "{log}");
    assert!(ns.ip_out(&["link", "show", "flannel.1"]).is_err(), "nothing set up on the host");
});

netns_test!(direct_routing_goes_straight_to_peers_on_the_link, requires = requirements, {
    let ul = Underlay::star(2).expect("underlay");
    let tmp = TempDir::new("flannel").unwrap();
    let mut etcd = Etcd::start(ul.node(1), ul.addr(1)).expect("etcd");
    etcd.wait_healthy(Duration::from_secs(10)).unwrap();
    let config = r#"{"Network":"198.19.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}"#;
    etcd.put(&format!("{PREFIX}/config"), config.as_bytes()).unwrap();
    let lease = |ip: &str, mac: &str| {
        format!(r#"{{"PublicIP":"{ip}","BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#)
    };
    // One peer on ul0's 198.18.0.0/24, one behind a router (another network).
    etcd.put(
        &format!("{PREFIX}/subnets/198.19.30.0-24"),
        lease("198.18.0.30", "0e:00:00:00:1e:01").as_bytes(),
    )
    .unwrap();
    etcd.put(
        &format!("{PREFIX}/subnets/198.19.31.0-24"),
        lease("198.18.9.31", "0e:00:00:00:1f:01").as_bytes(),
    )
    .unwrap();
    let ns = ul.node(0);
    let n = start_flannel(ns, &tmp, "a", &etcd, &["--public-ip", &ul.addr(0).to_string()])
        .expect("vxtap flannel");
    let direct = route_of(ns, "198.19.30.0".parse().unwrap());
    assert!(direct.contains("via 198.18.0.30 dev ul0"), "{direct}");
    let neigh = ns.ip_out(&["neigh", "show", "dev", "flannel.1"]).unwrap();
    assert!(!neigh.contains("0e:00:00:00:1e:01"), "no tunnel entries for a direct peer: {neigh}");
    let tunnel = route_of(ns, "198.19.31.0".parse().unwrap());
    assert!(tunnel.contains("via 198.19.31.0 dev flannel.1") && tunnel.contains("onlink"), "{tunnel}");
    // The direct route goes with its lease; and at exit (the underlay stays, so vxtap removes it).
    etcd.delete(&format!("{PREFIX}/subnets/198.19.30.0-24")).unwrap();
    assert!(wait_until(CONVERGE, || route_of(ns, "198.19.30.0".parse().unwrap()).is_empty()));
    etcd.put(
        &format!("{PREFIX}/subnets/198.19.30.0-24"),
        lease("198.18.0.30", "0e:00:00:00:1e:01").as_bytes(),
    )
    .unwrap();
    assert!(wait_until(CONVERGE, || !route_of(ns, "198.19.30.0".parse().unwrap()).is_empty()));
    let mut v = n.vtep;
    v.terminate(Duration::from_secs(5)).expect("clean exit");
    assert!(route_of(ns, "198.19.30.0".parse().unwrap()).is_empty(), "direct route removed at exit");
});

netns_test!(
    tls_and_authentication_as_for_run,
    requires = || requirements().and_then(|()| vxtap_testbed::secure_etcd_installed()),
    {
        let ul = Underlay::star(2).expect("underlay");
        let tmp = TempDir::new("flannel").unwrap();
        let mut etcd = Etcd::start_tls(ul.node(1), ul.addr(1)).expect("etcd over TLS");
        etcd.wait_healthy(Duration::from_secs(10)).unwrap();
        etcd.etcdctl(&["put", &format!("{PREFIX}/config"), CONFIG]).unwrap();
        etcd.enable_auth(&format!("{PREFIX}/"), "flannel", "pods-7c1e").expect("etcd authentication");
        let tls = etcd.tls().unwrap().clone();
        let (ca, cert, key) =
            (tls.ca.display().to_string(), tls.cert.display().to_string(), tls.key.display().to_string());
        let me = ul.addr(0).to_string();
        let args = |control: &str| {
            strings(&[
                "--etcd",
                &etcd.endpoint(),
                "--etcd-ca",
                &ca,
                "--etcd-cert",
                &cert,
                "--etcd-key",
                &key,
                "--etcd-user",
                "flannel",
                "--public-ip",
                &me,
                "--control",
                control,
                "--subnet-file",
                &tmp.join("subnet.env").display().to_string(),
            ])
        };
        let control = tmp.join("a.sock").display().to_string();
        let env = |pw: &str| vec![(vxtap::config::etcd::PASSWORD_ENV.to_string(), pw.to_string())];
        let mut bad =
            Vtep::spawn_command(ul.node(0), bin(), "flannel", &args(&control), &env("wrong")).unwrap();
        let st = bad.wait_exit(Duration::from_secs(30)).unwrap();
        assert_eq!(st.code(), Some(1), "{}", bad.log());
        assert!(bad.log().contains("refused user \"flannel\""), "{}", bad.log());
        let ok = Vtep::spawn_ready(ul.node(0), bin(), "flannel", &args(&control), &env("pods-7c1e"))
            .expect("ready");
        let stats = cmd_json(Path::new(&control), &["stats", "--json"]);
        assert_eq!(stats["flannel_connected"].as_u64(), Some(1), "{stats}\n{}", ok.log());
        drop(ok);
    }
);
