//! What a VTEP runs: one [`NetworkConfig`] per overlay network, from command-line flags or from a
//! TOML file of `[[network]]` tables. Both paths produce the same struct and pass the same checks.

pub mod etcd;
pub mod ifname;
pub mod reload;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;

use crate::config::etcd::EtcdConfig;
use crate::packet::dsfield::Tos;
use crate::packet::flow::PortRange;
use crate::packet::pmtu::{Df, MssClamp};
use crate::state::fdb::{DEFAULT_AGEING, DEFAULT_MAX_LEARNED};
use crate::wire::cidr::Cidr;
use crate::wire::mac::MacAddr;
use crate::wire::{self, Proto, MAX_VNI};

/// Default TAP name.
pub const DEFAULT_DEV: &str = "vxtap0";
/// Where control sockets live unless `--control` says otherwise: one directory per network
/// namespace below it (see [`default_control_path`]).
pub const CONTROL_DIR: &str = "/run/vxtap";

/// A source allowed to send to the tunnel: a network (a bare IP is a host), or anyone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllowFrom {
    Any,
    Net(Cidr),
}

impl FromStr for AllowFrom {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("any") {
            return Ok(AllowFrom::Any);
        }
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(AllowFrom::Net(Cidr::host(ip)));
        }
        s.parse()
            .map(AllowFrom::Net)
            .map_err(|_| format!("invalid --allow-from {s:?}: expected a CIDR, an IP or \"any\""))
    }
}

/// A remote VTEP: `IP`, `IP:PORT` or `[IPv6]:PORT`. Without a port, the network's port is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl Endpoint {
    pub fn with_default_port(&self, port: u16) -> SocketAddr {
        SocketAddr::new(self.ip, self.port.unwrap_or(port))
    }
}

impl FromStr for Endpoint {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Endpoint { ip, port: None });
        }
        match s.parse::<SocketAddr>() {
            Ok(sa) if sa.port() != 0 => Ok(Endpoint { ip: sa.ip(), port: Some(sa.port()) }),
            _ => Err(format!("invalid remote {s:?}: expected IP, IP:PORT or [IPv6]:PORT")),
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}", SocketAddr::new(self.ip, p)),
            None => write!(f, "{}", self.ip),
        }
    }
}

/// A static FDB entry `MAC=IP[:PORT]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticEntry {
    pub mac: MacAddr,
    pub dst: Endpoint,
}

impl FromStr for StaticEntry {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (m, d) = s.split_once('=').ok_or_else(|| {
            format!("invalid static entry {s:?}: expected MAC=IP, like 02:00:00:00:00:02=198.18.0.2")
        })?;
        let mac: MacAddr = m.parse().map_err(|e| format!("{e}"))?;
        if !mac.is_learnable() {
            return Err(format!("invalid static entry {s:?}: {mac} is not a unicast MAC"));
        }
        Ok(StaticEntry { mac, dst: d.parse()? })
    }
}

/// A source-port range `MIN-MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRangeArg(pub PortRange);

impl FromStr for PortRangeArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let err = || format!("invalid port range {s:?}: expected MIN-MAX with 1 <= MIN <= MAX <= 65535");
        let (a, b) = s.split_once('-').ok_or_else(err)?;
        let (a, b) = (a.trim().parse().map_err(|_| err())?, b.trim().parse().map_err(|_| err())?);
        PortRange::new(a, b).map(PortRangeArg).ok_or_else(err)
    }
}

/// `--ttl`: the outer TTL (IPv4) or hop limit (IPv6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ttl {
    /// The route's default for unicast, 1 for a multicast group (the kernel's behaviour).
    #[default]
    Auto,
    Hops(u8),
}

impl FromStr for Ttl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Ttl::Auto);
        }
        match s.parse::<u8>() {
            Ok(n) if n > 0 => Ok(Ttl::Hops(n)),
            _ => Err(format!("invalid ttl {s:?}: expected 1..=255 or auto")),
        }
    }
}

/// `--flowlabel`: the outer IPv6 flow label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlowLabel {
    /// A hash of the flow, per outer source port (so per inner flow): the kernel's automatic
    /// flow labels.
    #[default]
    Inherit,
    /// This label on every datagram (0: none).
    Fixed(u32),
}

impl FromStr for FlowLabel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("inherit") {
            return Ok(FlowLabel::Inherit);
        }
        let v = match s.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => s.parse::<u32>().ok(),
        };
        v.filter(|v| *v <= 0xfffff)
            .map(FlowLabel::Fixed)
            .ok_or_else(|| format!("invalid flowlabel {s:?}: expected 0..=1048575 (20 bits) or inherit"))
    }
}

/// `mss_clamp` in a config file: `true`, `"auto"` or a path MTU in bytes.
fn deserialize_mss_clamp<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<MssClamp>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Flag(bool),
        Mtu(u64),
        Text(String),
    }
    match Raw::deserialize(d)? {
        Raw::Flag(false) => Ok(None),
        Raw::Flag(true) => Ok(Some(MssClamp::Auto)),
        Raw::Mtu(m) => m.to_string().parse().map(Some).map_err(serde::de::Error::custom),
        Raw::Text(t) => t.parse().map(Some).map_err(serde::de::Error::custom),
    }
}

/// Lets the TOML loader reuse each type's `FromStr`, so file and flags accept the same syntax.
macro_rules! deserialize_from_str {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    )*};
}
deserialize_from_str!(Cidr, Endpoint, StaticEntry, PortRangeArg, MacAddr, AllowFrom, Df, Ttl, FlowLabel, Tos);

/// One overlay network: a TAP, a VNI and its remotes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    #[serde(default = "default_dev")]
    pub dev: String,
    pub vni: u32,
    #[serde(default)]
    pub proto: Proto,
    pub local: Option<IpAddr>,
    pub port: Option<u16>,
    #[serde(default)]
    pub remotes: Vec<Endpoint>,
    #[serde(default)]
    pub statics: Vec<StaticEntry>,
    pub address: Option<Cidr>,
    pub mtu: Option<u32>,
    pub mac: Option<MacAddr>,
    #[serde(default = "yes")]
    pub learning: bool,
    #[serde(default = "default_ageing")]
    pub ageing: u64,
    #[serde(default = "default_max_fdb")]
    pub max_fdb: usize,
    pub control: Option<PathBuf>,
    #[serde(default)]
    pub strict_reserved: bool,
    pub src_ports: Option<PortRangeArg>,
    /// Sources accepted besides the remotes and static VTEPs; `any` accepts everyone.
    #[serde(default)]
    pub allow_from: Vec<AllowFrom>,
    /// Compute outer UDP checksums (false: send zero, as `noudpcsum` on a kernel vxlan device).
    #[serde(default = "yes")]
    pub udp_csum: bool,
    /// Use the TAP's offloads (virtio-net header, TSO, checksum) and UDP GSO/GRO when the kernel
    /// has them (false: one frame per system call).
    #[serde(default = "yes")]
    pub offload: bool,
    /// TAP queues and receive sockets, each served by its own threads [default: CPUs, at most 8].
    pub queues: Option<usize>,
    /// The outer IPv4 DF bit.
    #[serde(default)]
    pub df: Df,
    /// Clamp the MSS of TCP SYNs to the path.
    #[serde(default, deserialize_with = "deserialize_mss_clamp")]
    pub mss_clamp: Option<MssClamp>,
    /// A multicast group (RFC 7348 §4.2): the default destination, joined to receive.
    pub group: Option<IpAddr>,
    /// The interface the group is joined on and sent through.
    pub underlay_dev: Option<String>,
    /// The outer TTL / hop limit.
    #[serde(default)]
    pub ttl: Ttl,
    /// The outer DSCP (the ECN field follows the inner packet).
    #[serde(default)]
    pub tos: Tos,
    /// The outer IPv6 flow label.
    #[serde(default)]
    pub flowlabel: FlowLabel,
    /// Latency mode: keep queue `q`'s thread on the CPUs that map to it, and steer the TAP's
    /// frames and the socket's datagrams to the queue of the CPU they arrive on (off: flows keep
    /// one queue by their hash, so a flow is never reordered).
    #[serde(default)]
    pub cpu_pinning: bool,
    /// ARP/ND suppression: answer ARP requests and neighbour solicitations for addresses of the
    /// neighbour table locally (docs/clusters.md).
    #[serde(default)]
    pub proxy: bool,
}

/// Most queues a network may ask for.
pub const MAX_QUEUES: usize = 16;

/// Default queue count: one per CPU (so both directions of every queue can run in parallel
/// with the others), capped where more threads stop paying on the small hosts vxtap targets.
pub fn default_queues() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(8)
}

fn default_dev() -> String {
    DEFAULT_DEV.to_string()
}
fn yes() -> bool {
    true
}
fn default_ageing() -> u64 {
    DEFAULT_AGEING.as_secs()
}
fn default_max_fdb() -> usize {
    DEFAULT_MAX_LEARNED
}

impl NetworkConfig {
    /// A network with every default, as `vxtap run --vni N` gives.
    pub fn new(dev: &str, vni: u32) -> NetworkConfig {
        NetworkConfig {
            dev: dev.to_string(),
            vni,
            proto: Proto::Vxlan,
            local: None,
            port: None,
            remotes: Vec::new(),
            statics: Vec::new(),
            address: None,
            mtu: None,
            mac: None,
            learning: true,
            ageing: default_ageing(),
            max_fdb: default_max_fdb(),
            control: None,
            strict_reserved: false,
            src_ports: None,
            allow_from: Vec::new(),
            udp_csum: true,
            offload: true,
            queues: None,
            df: Df::default(),
            mss_clamp: None,
            group: None,
            underlay_dev: None,
            ttl: Ttl::Auto,
            tos: Tos::default(),
            flowlabel: FlowLabel::default(),
            cpu_pinning: true,
            proxy: false,
        }
    }

    /// The number of TAP queues (and receive sockets) to open.
    pub fn queues(&self) -> usize {
        self.queues.unwrap_or_else(default_queues)
    }

    /// The UDP port listened on and sent to.
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(self.proto.default_port())
    }

    /// Whether the underlay is IPv6: the local address decides, else the group, else the first
    /// remote or static.
    pub fn underlay_v6(&self) -> bool {
        self.local
            .map(|ip| ip.is_ipv6())
            .or_else(|| self.group.map(|g| g.is_ipv6()))
            .or_else(|| self.remotes.first().map(|r| r.ip.is_ipv6()))
            .or_else(|| self.statics.first().map(|s| s.dst.ip.is_ipv6()))
            .unwrap_or(false)
    }

    /// Bytes the tunnel adds in front of a frame on the underlay: outer IP, UDP, tunnel header
    /// (vxtap emits Geneve without options).
    pub fn overhead(&self) -> u32 {
        let ip = if self.underlay_v6() { 40 } else { 20 };
        let tunnel = match self.proto {
            Proto::Vxlan => wire::vxlan::HEADER_LEN,
            Proto::Geneve => wire::geneve::BASE_LEN,
        } as u32;
        ip + 8 + tunnel + wire::ETHERNET_HEADER_LEN as u32
    }

    /// TAP MTU: as given, else a 1500-byte underlay less the overhead (1450 for VXLAN over IPv4).
    pub fn mtu(&self) -> u32 {
        self.mtu.unwrap_or(1500 - self.overhead())
    }

    pub fn control_path(&self) -> PathBuf {
        self.control.clone().unwrap_or_else(|| default_control_path(&self.dev))
    }

    /// The address the network's socket binds: `local` or the wildcard of its family.
    pub fn bind_addr(&self) -> SocketAddr {
        let ip = self.local.unwrap_or(if self.underlay_v6() {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        });
        SocketAddr::new(ip, self.port())
    }

    pub fn src_ports(&self) -> PortRange {
        self.src_ports.map(|p| p.0).unwrap_or_default()
    }

    fn check(&self) -> Result<(), String> {
        let net = format!("network {} (vni {})", self.dev, self.vni);
        if self.vni > MAX_VNI {
            return Err(format!("{net}: VNI {} is over {MAX_VNI} (24 bits)", self.vni));
        }
        ifname::check("TAP", &self.dev).map_err(|e| format!("{net}: {e}"))?;
        if self.port == Some(0) {
            return Err(format!("{net}: port 0 is not a port"));
        }
        let v6 = self.underlay_v6();
        let family = |ip: &IpAddr| ip.is_ipv6() == v6;
        let fam = if v6 { "IPv6" } else { "IPv4" };
        if let Some(r) = self.remotes.iter().find(|r| !family(&r.ip)) {
            return Err(format!("{net}: remote {r} is not {fam} like the rest of the underlay"));
        }
        if let Some(s) = self.statics.iter().find(|s| !family(&s.dst.ip)) {
            return Err(format!("{net}: static entry {} is not {fam} like the rest of the underlay", s.dst));
        }
        if let Some(r) = self.remotes.iter().find(|r| r.ip.is_unspecified() || r.ip.is_multicast()) {
            return Err(format!("{net}: remote {r} must be a unicast address"));
        }
        if let Some(g) = self.group {
            if !g.is_multicast() {
                return Err(format!("{net}: group {g} is not a multicast address"));
            }
            if !family(&g) {
                return Err(format!("{net}: group {g} is not {fam} like the rest of the underlay"));
            }
            if self.allow_from.is_empty() {
                return Err(format!(
                    "{net}: group mode learns its VTEPs from the group, so they are not known in advance: \
                     say which sources may send with --allow-from <CIDR> (the underlay's network) or --allow-from any"
                ));
            }
        }
        if let Some(dev) = &self.underlay_dev {
            ifname::check("underlay device", dev).map_err(|e| format!("{net}: {e}"))?;
        }
        if self.flowlabel != FlowLabel::Inherit && !v6 {
            return Err(format!("{net}: a flow label needs an IPv6 underlay"));
        }
        if self.queues.is_some_and(|q| !(1..=MAX_QUEUES).contains(&q)) {
            return Err(format!("{net}: queues must be 1 to {MAX_QUEUES}"));
        }
        let max_mtu = 65535 - self.overhead();
        if !(68..=max_mtu).contains(&self.mtu()) {
            return Err(format!("{net}: MTU {} is outside 68..={max_mtu}", self.mtu()));
        }
        Ok(())
    }
}

/// The control socket of the network on TAP `dev` when none is configured, for the server and
/// for `vxtap <cmd> --dev <TAP>` alike: `/run/vxtap/<netns>/<dev>.sock`, where `<netns>` is the
/// inode number of the caller's network namespace ([`netns_id`]). TAP names are per namespace,
/// `/run` is not: the key keeps two VTEPs on `vxt0` in two namespaces apart, while a client run
/// in the same namespace (`ip netns exec NS vxtap stats --dev vxt0`) computes the same path.
/// Without a readable `/proc` it falls back to `/run/vxtap/<dev>.sock`, for both sides.
/// This is the one place that decides the default.
pub fn default_control_path(dev: &str) -> PathBuf {
    let file = format!("{dev}.sock");
    match netns_id() {
        Some(ns) => Path::new(CONTROL_DIR).join(ns.to_string()).join(file),
        None => Path::new(CONTROL_DIR).join(file),
    }
}

/// The directory [`default_control_path`] puts sockets in, in the caller's network namespace.
pub fn default_control_dir() -> PathBuf {
    default_control_path("x").parent().map(Path::to_path_buf).unwrap_or_else(|| CONTROL_DIR.into())
}

/// The inode number of the calling thread's network namespace (what `stat -L
/// /proc/self/ns/net` and `ip netns identify` key on, shown as `net:[<inode>]` by `readlink`).
/// Namespaces alive at the same time have different inodes; a number can be reused once its
/// namespace is gone, which leaves at worst a stale socket file, replaced at the next start.
pub fn netns_id() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    // thread-self: a thread may have entered another namespace than the process's first thread.
    ["/proc/thread-self/ns/net", "/proc/self/ns/net"]
        .iter()
        .find_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.ino())
}

/// The TOML file: `[[network]]` tables, and the process-wide settings before the first of
/// them: `metrics = "..."` and an `[etcd]` table for a cluster.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    network: Vec<NetworkConfig>,
    /// Where `/metrics` is served (off when absent).
    metrics: Option<SocketAddr>,
    #[serde(default)]
    etcd: Option<EtcdConfig>,
}

/// Reads and checks a config file.
pub fn load(path: &Path) -> Result<Vec<NetworkConfig>, String> {
    load_settings(path).map(|s| s.networks)
}

/// Parses and checks the text of a config file.
pub fn parse(text: &str) -> Result<Vec<NetworkConfig>, String> {
    parse_settings(text).map(|s| s.networks)
}

/// Everything a config file sets: its networks and the process-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub networks: Vec<NetworkConfig>,
    /// `metrics = "ADDR:PORT"`: serve Prometheus metrics there.
    pub metrics: Option<SocketAddr>,
    /// `[etcd]`: join a cluster (docs/clusters.md).
    pub etcd: Option<EtcdConfig>,
}

/// Reads and checks a config file, networks and process-wide settings.
pub fn load_settings(path: &Path) -> Result<Settings, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    parse_settings(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Parses and checks the text of a config file, networks and process-wide settings.
pub fn parse_settings(text: &str) -> Result<Settings, String> {
    let file: File = toml::from_str(text).map_err(|e| match e.span() {
        // Where: a reload refused for a typo must say which line to look at.
        Some(span) => format!("line {}: {}", text[..span.start].matches('\n').count() + 1, e.message()),
        None => e.message().to_string(),
    })?;
    validate(&file.network)?;
    if let Some(m) = file.metrics {
        check_metrics_addr(m)?;
    }
    Ok(Settings { networks: file.network, metrics: file.metrics, etcd: file.etcd })
}

/// Parses `--metrics`: an `ADDR:PORT` (`[v6]:PORT` for IPv6) with a real port.
pub fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    let addr = s.parse().map_err(|_| format!("invalid metrics address {s:?}: expected ADDR:PORT"))?;
    check_metrics_addr(addr).map(|()| addr)
}

fn check_metrics_addr(addr: SocketAddr) -> Result<(), String> {
    if addr.port() == 0 {
        return Err(format!("metrics address {addr}: port 0 is not a port"));
    }
    Ok(())
}

/// Reads and checks a config file, its `[etcd]` table included.
pub fn load_all(path: &Path) -> Result<(Vec<NetworkConfig>, Option<EtcdConfig>), String> {
    load_settings(path).map(|s| (s.networks, s.etcd))
}

/// Parses and checks the text of a config file: its networks and its `[etcd]` table.
pub fn parse_all(text: &str) -> Result<(Vec<NetworkConfig>, Option<EtcdConfig>), String> {
    parse_settings(text).map(|s| (s.networks, s.etcd))
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
    use super::*;

    #[test]
    fn parses_values() {
        assert_eq!("198.18.0.2".parse::<Endpoint>().unwrap().port, None);
        assert_eq!("198.18.0.2:8472".parse::<Endpoint>().unwrap().port, Some(8472));
        assert_eq!("[2001:db8::2]:6081".parse::<Endpoint>().unwrap().with_default_port(1).port(), 6081);
        assert!("198.18.0.2:0".parse::<Endpoint>().is_err());
        assert!("host.example".parse::<Endpoint>().is_err());
        let s: StaticEntry = "02:00:00:00:00:02=198.18.0.2".parse().unwrap();
        assert_eq!(s.mac.to_string(), "02:00:00:00:00:02");
        assert!("ff:ff:ff:ff:ff:ff=198.18.0.2".parse::<StaticEntry>().is_err());
        assert!("02:00:00:00:00:02".parse::<StaticEntry>().is_err());
        assert_eq!("1000-1010".parse::<PortRangeArg>().unwrap().0.max(), 1010);
        assert!("10-1".parse::<PortRangeArg>().is_err());
    }

    #[test]
    fn allow_from_parses_any_hosts_and_networks() {
        assert_eq!("ANY".parse::<AllowFrom>(), Ok(AllowFrom::Any));
        let AllowFrom::Net(host) = "198.18.0.9".parse::<AllowFrom>().unwrap() else { panic!() };
        assert!(
            host.contains("198.18.0.9".parse().unwrap()) && !host.contains("198.18.0.8".parse().unwrap())
        );
        assert!("198.18.0.0/40".parse::<AllowFrom>().is_err());
        assert!(matches!("198.18.0.0/24".parse::<AllowFrom>(), Ok(AllowFrom::Net(c)) if c.prefix == 24));
    }

    #[test]
    fn defaults_follow_protocol_and_family() {
        let mut n = NetworkConfig::new("vxt0", 42);
        assert_eq!((n.port(), n.mtu()), (4789, 1450));
        n.remotes.push("2001:db8::2".parse().unwrap());
        assert_eq!(n.mtu(), 1430);
        n.proto = Proto::Geneve;
        assert_eq!((n.port(), n.mtu()), (6081, 1430));
        let ns = std::fs::read_link("/proc/self/ns/net").unwrap().to_string_lossy().into_owned();
        let want = PathBuf::from(format!(
            "/run/vxtap/{}/vxt0.sock",
            ns.trim_start_matches("net:[").trim_end_matches(']')
        ));
        assert_eq!(n.control_path(), want, "keyed by the namespace's inode ({ns})");
        assert_eq!(default_control_dir(), want.parent().unwrap());
        assert!(n.bind_addr().ip().is_ipv6());
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
        let nets = parse(TWO_VNIS).unwrap();
        assert_eq!(nets.len(), 2);
        assert_eq!((nets[0].vni, nets[1].vni, nets[1].learning, nets[0].learning), (42, 43, false, true));
        assert_eq!((nets[0].df, nets[0].mss_clamp), (Df::Inherit, None), "defaults");
        let more = TWO_VNIS.replace("learning = false", "learning = false\ndf = \"set\"\nmss_clamp = 1400");
        let nets = parse(&more).unwrap();
        assert_eq!((nets[1].df, nets[1].mss_clamp), (Df::Set, Some(MssClamp::PathMtu(1400))));
        for (text, want) in
            [("true", Some(MssClamp::Auto)), ("\"auto\"", Some(MssClamp::Auto)), ("false", None)]
        {
            let t = TWO_VNIS.replace("learning = false", &format!("mss_clamp = {text}"));
            assert_eq!(parse(&t).unwrap()[1].mss_clamp, want, "{text}");
        }
        assert_eq!(nets[0].bind_addr(), nets[1].bind_addr(), "same socket");
        assert_eq!(nets[1].statics[0].dst.ip, "198.18.0.2".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn rejects_conflicts_and_bad_values() {
        let dup_vni = TWO_VNIS.replace("vni = 43", "vni = 42");
        assert!(parse(&dup_vni).unwrap_err().contains("VNI 42 is configured twice"));
        let dup_dev = TWO_VNIS.replace("vxt43", "vxt42");
        assert!(parse(&dup_dev).unwrap_err().contains("configured twice"));
        let mixed = TWO_VNIS.replace("vni = 43", "vni = 43\nproto = \"geneve\"\nport = 4789");
        assert!(parse(&mixed).unwrap_err().contains("both"));
        for bad in ["df = \"maybe\"", "mss_clamp = 100", "mss_clamp = \"lots\""] {
            let text = TWO_VNIS.replace("learning = false", &format!("learning = false\n{bad}"));
            assert!(parse(&text).is_err(), "{bad}");
        }
        let csum = TWO_VNIS.replace("learning = false", "learning = false\nudp_csum = false");
        assert!(parse(&csum).unwrap_err().contains("udp_csum"));
        let off = TWO_VNIS.replace("learning = false", "learning = false\noffload = false");
        assert!(parse(&off).unwrap_err().contains("offload or queues"));
        let q = TWO_VNIS.replace("learning = false", "learning = false\nqueues = 0");
        assert!(parse(&q).unwrap_err().contains("queues must be 1 to 16"));
        assert!(parse(&TWO_VNIS.replace("vni = 43", "vni = 16777216")).unwrap_err().contains("24 bits"));
        assert!(parse(&TWO_VNIS.replace("learning", "lerning")).is_err(), "unknown keys are errors");
        let e = parse(&TWO_VNIS.replace("learning = false", "learning = \"no\"")).unwrap_err();
        assert!(e.starts_with("line 15: invalid type"), "the line is named: {e}");
        assert!(parse(&TWO_VNIS.replace("198.18.0.2:4789", "2001:db8::2")).unwrap_err().contains("not IPv4"));
        assert!(parse(&TWO_VNIS.replace("02:00:00:00:00:09", "zz")).is_err());
        assert!(parse("").is_err());
    }

    #[test]
    fn metrics_address_is_a_top_level_key() {
        let s = parse_settings(&format!("metrics = \"198.18.0.1:9477\"\n{TWO_VNIS}")).unwrap();
        assert_eq!((s.metrics, s.networks.len()), (Some("198.18.0.1:9477".parse().unwrap()), 2));
        assert_eq!(parse_settings(TWO_VNIS).unwrap().metrics, None, "off by default");
        let v6 = parse_settings(&format!("metrics = \"[::1]:9477\"\n{TWO_VNIS}")).unwrap();
        assert!(v6.metrics.unwrap().is_ipv6());
        for bad in ["\"198.18.0.1\"", "\"198.18.0.1:0\"", "9477"] {
            assert!(parse_settings(&format!("metrics = {bad}\n{TWO_VNIS}")).is_err(), "{bad}");
        }
        // After a [[network]] header the key belongs to that network, which has no such key.
        assert!(parse_settings(&format!("{TWO_VNIS}\nmetrics = \"198.18.0.1:9477\"")).is_err());
        assert_eq!(parse_metrics_addr("[2001:db8::1]:9477").unwrap().port(), 9477);
        assert!(parse_metrics_addr("198.18.0.1:0").is_err() && parse_metrics_addr("localhost:1").is_err());
    }

    #[test]
    fn etcd_table_and_proxy() {
        let text = format!(
            "[etcd]\nendpoints = [\"http://198.18.0.9:2379\"]\nnode = \"a\"\nttl = 5\n\n{}",
            TWO_VNIS.replacen("learning = false", "learning = false\nproxy = true", 1)
        );
        let (nets, etcd) = parse_all(&text).unwrap();
        assert!(nets[1].proxy && !nets[0].proxy);
        let etcd = etcd.expect("[etcd]");
        assert_eq!((etcd.endpoints.len(), etcd.node.as_deref(), etcd.ttl), (1, Some("a"), Some(5)));
        assert!(parse_all(TWO_VNIS).unwrap().1.is_none());
        assert!(parse_all(&text.replace("ttl = 5", "tll = 5")).is_err(), "unknown keys are errors");
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
