//! One network's settings ([`NetworkConfig`]), its defaults and its own checks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use serde::Deserialize;

use super::ifname;
use super::paths::{default_control_path, DEFAULT_DEV};
use super::values::{deserialize_mss_clamp, AllowFrom, Endpoint, FlowLabel, PortRangeArg, StaticEntry, Ttl};
#[cfg(feature = "cli")]
use super::values::{parse_proto, parse_vni};
use crate::packet::dsfield::Tos;
use crate::packet::flow::PortRange;
use crate::packet::pmtu::{Df, MssClamp};
use crate::state::fdb::{DEFAULT_AGEING, DEFAULT_MAX_LEARNED};
use crate::wire::cidr::Cidr;
use crate::wire::mac::MacAddr;
use crate::wire::{self, Proto, MAX_VNI};

/// One overlay network: a TAP, a VNI and its remotes.
///
/// The same struct is a `[[network]]` table of the config file and, with the `cli` feature
/// (which only the binary turns on), the flags of `vxtap run`: each setting is written once,
/// with its TOML key, its flag, its default and its help text (the doc comment). Three flags
/// are the negation of their key: `--no-learning` (`learning`), `--no-udp-csum` (`udp_csum`),
/// `--no-offload` (`offload`); `--remote` and `--static` are repeated for `remotes` and
/// `statics`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[cfg_attr(feature = "cli", group(id = "network", multiple = true))]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// TAP device name; created if absent, reused if it exists
    #[serde(default = "default_dev")]
    #[cfg_attr(feature = "cli", arg(long, default_value = DEFAULT_DEV))]
    pub dev: String,
    /// VXLAN/Geneve Network Identifier, 0..=16777215 (required unless --config)
    #[cfg_attr(
        feature = "cli",
        arg(long, value_parser = parse_vni, required_unless_present = "config", default_value_t = 0,
            hide_default_value = true)
    )]
    pub vni: u32,
    /// Tunnel protocol: vxlan or geneve
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(long, default_value = "vxlan", value_parser = parse_proto))]
    pub proto: Proto,
    /// Underlay address to bind and send from (IPv4 or IPv6) [default: wildcard]
    #[cfg_attr(feature = "cli", arg(long))]
    pub local: Option<IpAddr>,
    /// UDP port listened on and sent to [default: 4789 for vxlan, 6081 for geneve]
    #[cfg_attr(feature = "cli", arg(long, value_parser = clap::value_parser!(u16).range(1..)))]
    pub port: Option<u16>,
    /// Flood-list VTEP, IP or IP:PORT: receives broadcast, multicast and unknown unicast (repeatable)
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(long = "remote", value_name = "IP[:PORT]"))]
    pub remotes: Vec<Endpoint>,
    /// Static FDB entry MAC=IP[:PORT]; never aged, never overwritten by learning (repeatable)
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(long = "static", value_name = "MAC=IP"))]
    pub statics: Vec<StaticEntry>,
    /// Assign this address to the TAP, e.g. 198.19.0.1/24
    #[cfg_attr(feature = "cli", arg(long, value_name = "CIDR"))]
    pub address: Option<Cidr>,
    /// TAP MTU [default: 1500 minus the encapsulation overhead: 1450 over IPv4, 1430 over IPv6;
    /// over WireGuard 1390, 1370 with IPv6 inside or outside it, 1350 with both]
    #[cfg_attr(feature = "cli", arg(long))]
    pub mtu: Option<u32>,
    /// Set the TAP's MAC address [default: the kernel's random one]
    #[cfg_attr(feature = "cli", arg(long))]
    pub mac: Option<MacAddr>,
    /// Do not learn MAC addresses from received frames (use --static and --remote only)
    #[serde(default = "yes")]
    #[cfg_attr(feature = "cli", arg(long = "no-learning", action = clap::ArgAction::SetFalse))]
    pub learning: bool,
    /// Seconds before an idle learned entry expires; 0 never expires
    #[serde(default = "default_ageing")]
    #[cfg_attr(feature = "cli", arg(long, value_name = "SECS", default_value_t = default_ageing()))]
    pub ageing: u64,
    /// Most learned entries kept; further learns are refused and counted (drop_fdb_full)
    #[serde(default = "default_max_fdb")]
    #[cfg_attr(feature = "cli", arg(long, value_name = "N", default_value_t = DEFAULT_MAX_LEARNED))]
    pub max_fdb: usize,
    /// Control socket path [default: /run/vxtap/<NETNS>/<TAP>.sock, NETNS being the inode of the
    /// network namespace vxtap runs in, so that `vxtap <cmd> --dev <TAP>` in the same namespace finds it]
    #[cfg_attr(feature = "cli", arg(long, value_name = "PATH"))]
    pub control: Option<PathBuf>,
    /// Reject VXLAN packets with reserved bits set, as Linux and Open vSwitch do (RFC 7348 says ignore them)
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(long))]
    pub strict_reserved: bool,
    /// Outer UDP source ports, chosen per inner flow for ECMP [default: 49152-65535]
    #[cfg_attr(feature = "cli", arg(long, value_name = "MIN-MAX"))]
    pub src_ports: Option<PortRangeArg>,
    /// Most outer source ports the network's socket binds to send from, each a socket (two while
    /// some network on it lets the underlay fragment): one per inner flow until the cap, then
    /// flows share them. The ports come from --src-ports, which overlaps Linux's ephemeral ports
    /// (32768-60999) unless moved [default: 1024]
    #[cfg_attr(feature = "cli", arg(long, value_name = "N"))]
    pub max_src_ports: Option<usize>,
    /// Also accept datagrams from this network or IP (repeatable); "any" accepts every source, as the
    /// kernel's vxlan does [default: only the --remote and --static VTEPs]
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(long, value_name = "CIDR|any"))]
    pub allow_from: Vec<AllowFrom>,
    /// Send a zero outer UDP checksum (allowed for VXLAN/Geneve over IPv4, and over IPv6 by
    /// RFC 6935), like `noudpcsum` on a kernel vxlan device; saves a checksum pass per packet
    #[serde(default = "yes")]
    #[cfg_attr(feature = "cli", arg(long = "no-udp-csum", action = clap::ArgAction::SetFalse))]
    pub udp_csum: bool,
    /// Turn off the TAP offloads (TSO, checksum, virtio-net header) and UDP GSO/GRO: one frame
    /// per system call. Offloads are otherwise negotiated at start and fall back by themselves
    /// when the kernel refuses one
    #[serde(default = "yes")]
    #[cfg_attr(feature = "cli", arg(long = "no-offload", action = clap::ArgAction::SetFalse))]
    pub offload: bool,
    /// TAP queues, each with its own threads and its own SO_REUSEPORT receive socket; a flow
    /// stays on one queue [default: one per CPU, at most 8]
    #[cfg_attr(feature = "cli", arg(long, value_name = "N"))]
    pub queues: Option<usize>,
    /// Outer IPv4 Don't Fragment bit: set (never fragment; too-big datagrams are dropped and the
    /// inner sender is told with ICMP), unset (the underlay may fragment anything, as the kernel's
    /// vxlan does by default) or inherit (copy the inner packet's DF: TCP and other DF traffic get
    /// path MTU feedback, DF=0 traffic is fragmented when it must be). See docs/design.md "Path MTU"
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(long, value_name = "set|unset|inherit", default_value = "inherit"))]
    pub df: Df,
    /// Rewrite the MSS option of TCP SYNs crossing the tunnel to fit the underlay path, for paths
    /// that drop ICMP. Bare: fit the path MTU the kernel knows towards each VTEP; with a value:
    /// fit an underlay path MTU of that many bytes (e.g. --mss-clamp=1400) [default: off]
    #[serde(default, deserialize_with = "deserialize_mss_clamp")]
    #[cfg_attr(
        feature = "cli",
        arg(long, value_name = "PATH_MTU", num_args = 0..=1, default_missing_value = "auto", require_equals = true)
    )]
    pub mss_clamp: Option<MssClamp>,
    /// Multicast group (RFC 7348 section 4.2), IPv4 or IPv6 (e.g. 239.1.1.1, ff05::100): broadcast,
    /// multicast and unknown unicast go to it, it is joined to receive, and VTEPs are learned
    /// from what arrives, no --remote needed. Needs --allow-from (members are not known in
    /// advance); may be combined with --remote
    #[cfg_attr(feature = "cli", arg(long, value_name = "IP"))]
    pub group: Option<IpAddr>,
    /// Interface the group is joined on and sent through (the kernel vxlan's `dev`)
    #[cfg_attr(feature = "cli", arg(long, value_name = "IFACE"))]
    pub underlay_dev: Option<String>,
    /// Outer TTL / hop limit: a number, or auto (the route's default for unicast, 1 for the group)
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(long, value_name = "N|auto", default_value = "auto"))]
    pub ttl: Ttl,
    /// Outer DSCP: a number (the DS byte, e.g. 184 or 0xb8 for EF), or inherit (the inner
    /// packet's). The outer ECN field always follows the inner packet (RFC 6040), and a CE mark
    /// on arrival is carried into an ECN-capable inner packet
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(long, value_name = "N|inherit", default_value = "0"))]
    pub tos: Tos,
    /// Outer IPv6 flow label: a number (0 for none) or inherit (a hash of the flow, per outer
    /// source port)
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(long, value_name = "N|inherit", default_value = "inherit"))]
    pub flowlabel: FlowLabel,
    /// Latency mode: keep each queue's thread on its CPU and steer frames and datagrams to the
    /// queue of the CPU they are sent or received on, so a round trip stays on one CPU (less
    /// latency). The price: a flow whose sender moves between CPUs can be reordered, so it is
    /// off by default and flows keep one queue by their hash [default: off]
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(long))]
    pub cpu_pinning: bool,
    /// ARP/ND suppression: answer broadcast ARP requests and neighbour solicitations for
    /// addresses of the neighbour table (cluster members, `vxtap neigh add`) whose MAC is behind
    /// a remote VTEP on the TAP, instead of flooding them; anything else crosses as usual
    /// (docs/clusters.md)
    #[serde(default)]
    #[cfg_attr(feature = "cli", arg(long))]
    pub proxy: bool,
    /// How the network's datagrams travel. Neither a flag nor a key of the network: WireGuard
    /// is process-wide (`[wireguard]`, `--wg-*`), and its checked settings set this on every
    /// network (`config::wireguard::Settings::apply`).
    #[serde(skip)]
    #[cfg_attr(feature = "cli", arg(skip))]
    pub encryption: Encryption,
}

/// How a network's datagrams travel on the underlay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encryption {
    /// In clear, from the underlay socket (the default).
    #[default]
    None,
    /// Inside WireGuard: from this tunnel address (every remote and static entry names a peer's
    /// tunnel address), to peers whose endpoints include an IPv6 one when `outer_v6`.
    WireGuard { address: IpAddr, outer_v6: bool },
}

/// Outer source ports a socket binds at most by default: enough that flows get distinct ports
/// about as often as the kernel's per-flow ports would give them (32 flows over 1024 ports
/// share one with about 40 % chance for one pair).
pub const DEFAULT_MAX_SRC_PORTS: usize = 1024;
/// The largest cap: the whole 16-bit port space.
pub const MAX_SRC_PORTS: usize = 65535;

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
            max_src_ports: None,
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
            cpu_pinning: false,
            proxy: false,
            encryption: Encryption::None,
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

    /// Whether the underlay is IPv6: over WireGuard, the tunnel address decides; else the local
    /// address, else the group, else the first remote or static.
    pub fn underlay_v6(&self) -> bool {
        let tunnel = match self.encryption {
            Encryption::WireGuard { address, .. } => Some(address),
            Encryption::None => None,
        };
        tunnel
            .or(self.local)
            .map(|ip| ip.is_ipv6())
            .or_else(|| self.group.map(|g| g.is_ipv6()))
            .or_else(|| self.remotes.first().map(|r| r.ip.is_ipv6()))
            .or_else(|| self.statics.first().map(|s| s.dst.ip.is_ipv6()))
            .unwrap_or(false)
    }

    /// Bytes the tunnel adds to a frame's IP packet on the underlay: outer IP, UDP, tunnel header
    /// (vxtap emits Geneve without options), the frame's Ethernet header; over WireGuard, its
    /// transport message and the outer IP and UDP headers towards the peer too.
    pub fn overhead(&self) -> u32 {
        let tunnel = match self.proto {
            Proto::Vxlan => wire::vxlan::HEADER_LEN,
            Proto::Geneve => wire::geneve::BASE_LEN,
        };
        let wireguard = match self.encryption {
            Encryption::WireGuard { outer_v6, .. } => wire::wg::overhead(outer_v6),
            Encryption::None => 0,
        };
        (wire::outer_overhead(self.underlay_v6(), tunnel) + wire::ETHERNET_HEADER_LEN + wireguard) as u32
    }

    /// TAP MTU: as given, else a 1500-byte underlay less the overhead (1450 for VXLAN over IPv4;
    /// 1390 over WireGuard, IPv4 inside and out).
    pub fn mtu(&self) -> u32 {
        self.mtu.unwrap_or(1500 - self.overhead())
    }

    pub fn control_path(&self) -> PathBuf {
        self.control.clone().unwrap_or_else(|| default_control_path(&self.dev))
    }

    /// The address the network's socket binds: `local` or the wildcard of its family.
    pub fn bind_addr(&self) -> SocketAddr {
        // Over WireGuard, `local` is the tunnel address, which no interface of this host has:
        // the (unused) tunnel socket takes the wildcard.
        let local = match self.encryption {
            Encryption::WireGuard { .. } => None,
            Encryption::None => self.local,
        };
        let ip = local.unwrap_or(if self.underlay_v6() {
            IpAddr::V6(Ipv6Addr::UNSPECIFIED)
        } else {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        });
        SocketAddr::new(ip, self.port())
    }

    pub fn src_ports(&self) -> PortRange {
        self.src_ports.map(|p| p.0).unwrap_or_default()
    }

    /// The cap on the send pool's source ports ([`DEFAULT_MAX_SRC_PORTS`] unless set).
    pub fn max_src_ports(&self) -> usize {
        self.max_src_ports.unwrap_or(DEFAULT_MAX_SRC_PORTS)
    }

    pub(super) fn check(&self) -> Result<(), String> {
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
        if self.max_src_ports.is_some_and(|n| !(1..=MAX_SRC_PORTS).contains(&n)) {
            return Err(format!("{net}: max_src_ports must be 1 to {MAX_SRC_PORTS}"));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::paths::default_control_dir;

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
}
