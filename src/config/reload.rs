//! Live reload, the pure part: what happens to each network when the running configuration is
//! replaced by a newly loaded one (`vxtap reload`, SIGHUP). No device is touched here: the
//! dataplane carries out the [`Plan`] (`dataplane::reload`).
//!
//! Networks are keyed by their TAP name. For each network the plan says one of:
//! - **unchanged**;
//! - **changed in place**, with the list of [`Change`]s: the flood list (`remotes`), the
//!   configured static entries, `allow_from`, `strict_reserved`, `learning`, `ageing`, `max_fdb`,
//!   `df`, `mss_clamp`, `tos` — the packet path keeps running, the FDB keeps what it learned;
//! - **restart**, with the reasons: every other setting shapes the network's TAP or its socket
//!   (VNI, protocol, local address, port, MTU, MAC, address, queues, offload, control socket,
//!   group...), so the network is removed and added again, alone;
//! - **add** or **remove**.
//!
//! Networks on one (local address, port) share sockets ([`SocketShape`]). A socket is kept as
//! long as it can serve the networks the new configuration puts on it; when it cannot (say the
//! TTL of every network on it changed), it is rebuilt, and the networks on it restart with it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::net::{IpAddr, SocketAddr};

use crate::config::{AllowFrom, FlowLabel, NetworkConfig, Ttl};
use crate::packet::dsfield::Tos;
use crate::packet::flow::PortRange;
use crate::packet::pmtu::{Df, MssClamp};
use crate::wire::mac::MacAddr;
use crate::wire::Proto;

/// What the sockets of one (local address, port) are built with: the settings the networks on
/// them share (`config::validate` makes them agree) and what follows from the set of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketShape {
    pub proto: Proto,
    pub udp_csum: bool,
    pub offload: bool,
    /// Receive sockets (and threads), one per queue.
    pub queues: usize,
    pub ttl: Ttl,
    pub flowlabel: FlowLabel,
    pub underlay_dev: Option<String>,
    pub cpu_pinning: bool,
    /// The source ports of the send pool (the first network's, as at start).
    pub src_ports: PortRange,
    /// The cap on the send pool's source ports (the first network's, as at start).
    pub max_src_ports: usize,
    /// Some network may let the underlay fragment (`df` other than `set`): the send pool has
    /// fragmenting sockets.
    pub fragmenting: bool,
    /// The multicast groups joined, sorted, each once.
    pub groups: Vec<IpAddr>,
}

impl SocketShape {
    /// The shape the networks `members` (in configuration order, at least one) need.
    pub fn of<'a>(members: impl IntoIterator<Item = &'a NetworkConfig>) -> Option<SocketShape> {
        let mut members = members.into_iter();
        let first = members.next()?;
        let mut shape = SocketShape {
            proto: first.proto,
            udp_csum: first.udp_csum,
            offload: first.offload,
            queues: first.queues(),
            ttl: first.ttl,
            flowlabel: first.flowlabel,
            underlay_dev: first.underlay_dev.clone(),
            cpu_pinning: first.cpu_pinning,
            src_ports: first.src_ports(),
            max_src_ports: first.max_src_ports(),
            fragmenting: first.df != Df::Set,
            groups: first.group.into_iter().collect(),
        };
        for c in members {
            shape.fragmenting |= c.df != Df::Set;
            shape.groups.extend(c.group);
        }
        shape.groups.sort();
        shape.groups.dedup();
        Some(shape)
    }

    /// The shape of every socket `configs` need, by bind address.
    pub fn of_all(configs: &[NetworkConfig]) -> BTreeMap<SocketAddr, SocketShape> {
        by_socket(configs).into_iter().filter_map(|(bind, m)| Some((bind, SocketShape::of(m)?))).collect()
    }

    /// Multicast is sent from these sockets.
    pub fn multicast(&self) -> bool {
        !self.groups.is_empty()
    }

    /// Whether sockets built as `self` can serve networks that need `needed`; if not, what
    /// differs. Fragmenting sockets that are no longer needed are kept (they only send what a
    /// network's `df` lets them); anything else must match.
    pub fn serves(&self, needed: &SocketShape) -> Result<(), Vec<String>> {
        let mut why = Vec::new();
        let mut differs = |name: &str, old: String, new: String| {
            if old != new {
                why.push(format!("{name} {old} -> {new}"));
            }
        };
        differs("proto", self.proto.to_string(), needed.proto.to_string());
        differs("udp_csum", self.udp_csum.to_string(), needed.udp_csum.to_string());
        differs("offload", self.offload.to_string(), needed.offload.to_string());
        differs("queues", self.queues.to_string(), needed.queues.to_string());
        differs("ttl", ttl(self.ttl), ttl(needed.ttl));
        differs("flowlabel", flowlabel(self.flowlabel), flowlabel(needed.flowlabel));
        differs("underlay_dev", opt(&self.underlay_dev), opt(&needed.underlay_dev));
        differs("cpu_pinning", self.cpu_pinning.to_string(), needed.cpu_pinning.to_string());
        differs("src_ports", ports(self.src_ports), ports(needed.src_ports));
        differs("max_src_ports", self.max_src_ports.to_string(), needed.max_src_ports.to_string());
        differs("groups", list(&self.groups), list(&needed.groups));
        if needed.fragmenting && !self.fragmenting {
            why.push("df: the socket needs fragmenting send sockets".into());
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(why)
        }
    }
}

/// What a reload does to one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Unchanged,
    /// Changed while it runs: these settings, nothing else.
    Change(Vec<Change>),
    /// Removed and added again, for these reasons.
    Restart(Vec<String>),
    Add,
    Remove,
}

impl Action {
    /// One word for logs and the control socket's reply.
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Unchanged => "unchanged",
            Action::Change(_) => "changed",
            Action::Restart(_) => "restarted",
            Action::Add => "added",
            Action::Remove => "removed",
        }
    }

    /// What changed, or why the network restarts, one item each.
    pub fn details(&self) -> Vec<String> {
        match self {
            Action::Change(c) => c.iter().map(Change::to_string).collect(),
            Action::Restart(why) => why.clone(),
            _ => Vec::new(),
        }
    }
}

/// A setting changed in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// The configured flood list: remotes to add and to remove (the network's port filled in).
    Remotes {
        added: Vec<SocketAddr>,
        removed: Vec<SocketAddr>,
    },
    /// Configured static entries to add (or move) and to remove. Entries added at run time
    /// (`vxtap fdb add`) and learned ones are not the configuration's: a reload leaves them.
    Statics {
        added: Vec<(MacAddr, SocketAddr)>,
        removed: Vec<(MacAddr, SocketAddr)>,
    },
    AllowFrom {
        old: Vec<AllowFrom>,
        new: Vec<AllowFrom>,
    },
    StrictReserved(bool),
    Learning(bool),
    Ageing {
        old: u64,
        new: u64,
    },
    MaxFdb {
        old: usize,
        new: usize,
    },
    Df {
        old: Df,
        new: Df,
    },
    MssClamp {
        old: Option<MssClamp>,
        new: Option<MssClamp>,
    },
    Tos {
        old: Tos,
        new: Tos,
    },
}

impl Change {
    /// Whether the socket's receive side (allowlist, receive policy) must be rebuilt.
    pub fn touches_socket(&self) -> bool {
        matches!(
            self,
            Change::Remotes { .. }
                | Change::Statics { .. }
                | Change::AllowFrom { .. }
                | Change::StrictReserved(_)
        )
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Remotes { added, removed } => {
                let items: Vec<String> = added
                    .iter()
                    .map(|a| format!("+{a}"))
                    .chain(removed.iter().map(|r| format!("-{r}")))
                    .collect();
                write!(f, "remotes {}", items.join(" "))
            }
            Change::Statics { added, removed } => {
                let items: Vec<String> = added
                    .iter()
                    .map(|(m, d)| format!("+{m}={d}"))
                    .chain(removed.iter().map(|(m, d)| format!("-{m}={d}")))
                    .collect();
                write!(f, "statics {}", items.join(" "))
            }
            Change::AllowFrom { old, new } => write!(f, "allow_from {} -> {}", allow(old), allow(new)),
            Change::StrictReserved(on) => write!(f, "strict_reserved {} -> {on}", !on),
            Change::Learning(on) => write!(f, "learning {} -> {on}", !on),
            Change::Ageing { old, new } => write!(f, "ageing {old} -> {new}"),
            Change::MaxFdb { old, new } => write!(f, "max_fdb {old} -> {new}"),
            Change::Df { old, new } => write!(f, "df {old} -> {new}"),
            Change::MssClamp { old, new } => write!(f, "mss_clamp {} -> {}", mss(old), mss(new)),
            Change::Tos { old, new } => write!(f, "tos {old} -> {new}"),
        }
    }
}

/// One network's part of a [`Plan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPlan {
    pub dev: String,
    /// The VNI it has after the reload (before it, for a removed network).
    pub vni: u32,
    pub action: Action,
}

/// What happens to the sockets of one (local address, port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketAction {
    /// Kept; the networks on it may change.
    Keep,
    /// New: bound for the networks that come to it.
    Open,
    /// Closed and bound again, because the networks on it need other sockets (what differs).
    Rebuild(Vec<String>),
    /// No network is left on it.
    Close,
}

/// What a reload does: per network (the new configuration's order, then the removed ones) and
/// per socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub networks: Vec<NetworkPlan>,
    pub sockets: BTreeMap<SocketAddr, SocketAction>,
}

impl Plan {
    /// Nothing changes.
    pub fn is_noop(&self) -> bool {
        self.networks.iter().all(|n| n.action == Action::Unchanged)
    }

    /// The plan of the network on TAP `dev`.
    pub fn network(&self, dev: &str) -> Option<&NetworkPlan> {
        self.networks.iter().find(|n| n.dev == dev)
    }
}

/// Plans the move from the `running` networks, whose sockets were built as `built` says, to the
/// `new` ones. Both sets must have passed [`crate::config::validate`]: what does not is refused
/// before any plan is made.
pub fn plan(
    running: &[NetworkConfig],
    built: &BTreeMap<SocketAddr, SocketShape>,
    new: &[NetworkConfig],
) -> Plan {
    let old: HashMap<&str, &NetworkConfig> = running.iter().map(|c| (c.dev.as_str(), c)).collect();
    let wanted = by_socket(new);
    let mut sockets = BTreeMap::new();
    for bind in built.keys().chain(wanted.keys()) {
        let action =
            match (built.get(bind), wanted.get(bind).and_then(|m| SocketShape::of(m.iter().copied()))) {
                (Some(b), Some(needed)) => match b.serves(&needed) {
                    Ok(()) => SocketAction::Keep,
                    Err(why) => SocketAction::Rebuild(why),
                },
                (None, Some(_)) => SocketAction::Open,
                (Some(_), None) => SocketAction::Close,
                (None, None) => continue,
            };
        sockets.insert(*bind, action);
    }
    let mut networks = Vec::new();
    for n in new {
        let action = match old.get(n.dev.as_str()) {
            None => Action::Add,
            Some(o) => {
                let mut why = restart_reasons(o, n);
                if why.is_empty() {
                    if let Some(SocketAction::Rebuild(what)) = sockets.get(&n.bind_addr()) {
                        why.push(format!("its socket {} is rebuilt ({})", n.bind_addr(), what.join(", ")));
                    }
                }
                if !why.is_empty() {
                    Action::Restart(why)
                } else {
                    let changes = in_place_changes(o, n);
                    if changes.is_empty() {
                        Action::Unchanged
                    } else {
                        Action::Change(changes)
                    }
                }
            }
        };
        networks.push(NetworkPlan { dev: n.dev.clone(), vni: n.vni, action });
    }
    let kept: HashSet<&str> = new.iter().map(|n| n.dev.as_str()).collect();
    for o in running.iter().filter(|o| !kept.contains(o.dev.as_str())) {
        networks.push(NetworkPlan { dev: o.dev.clone(), vni: o.vni, action: Action::Remove });
    }
    Plan { networks, sockets }
}

/// The networks of `configs` by the address their socket binds, each group in configuration
/// order.
pub fn by_socket(configs: &[NetworkConfig]) -> BTreeMap<SocketAddr, Vec<&NetworkConfig>> {
    let mut groups: BTreeMap<SocketAddr, Vec<&NetworkConfig>> = BTreeMap::new();
    for c in configs {
        groups.entry(c.bind_addr()).or_default().push(c);
    }
    groups
}

/// The settings that cannot change while a network runs, as `name old -> new`, comparing what
/// each setting amounts to (a port left to its default is that port).
fn restart_reasons(o: &NetworkConfig, n: &NetworkConfig) -> Vec<String> {
    let mut why = Vec::new();
    let mut differs = |name: &str, old: String, new: String| {
        if old != new {
            why.push(format!("{name} {old} -> {new}"));
        }
    };
    differs("vni", o.vni.to_string(), n.vni.to_string());
    differs("proto", o.proto.to_string(), n.proto.to_string());
    differs("socket", o.bind_addr().to_string(), n.bind_addr().to_string());
    differs("mtu", o.mtu().to_string(), n.mtu().to_string());
    differs("mac", opt(&o.mac), opt(&n.mac));
    differs("address", opt(&o.address), opt(&n.address));
    differs("control", o.control_path().display().to_string(), n.control_path().display().to_string());
    differs("queues", o.queues().to_string(), n.queues().to_string());
    differs("offload", o.offload.to_string(), n.offload.to_string());
    differs("udp_csum", o.udp_csum.to_string(), n.udp_csum.to_string());
    differs("src_ports", ports(o.src_ports()), ports(n.src_ports()));
    differs("max_src_ports", o.max_src_ports().to_string(), n.max_src_ports().to_string());
    differs("group", opt(&o.group), opt(&n.group));
    differs("underlay_dev", opt(&o.underlay_dev), opt(&n.underlay_dev));
    differs("ttl", ttl(o.ttl), ttl(n.ttl));
    differs("flowlabel", flowlabel(o.flowlabel), flowlabel(n.flowlabel));
    differs("cpu_pinning", o.cpu_pinning.to_string(), n.cpu_pinning.to_string());
    differs("proxy", o.proxy.to_string(), n.proxy.to_string());
    // A setting this list does not know yet restarts the network: never silently ignored.
    if why.is_empty() && normalized(o, n) != normalized(n, n) {
        why.push("other settings".into());
    }
    why
}

/// `c` with the settings a reload changes in place taken from `new`, and every default filled
/// in: two configurations that differ only in what changes in place normalize alike.
fn normalized(c: &NetworkConfig, new: &NetworkConfig) -> NetworkConfig {
    let mut c = c.clone();
    c.remotes = new.remotes.clone();
    c.statics = new.statics.clone();
    c.allow_from = new.allow_from.clone();
    c.strict_reserved = new.strict_reserved;
    c.learning = new.learning;
    c.ageing = new.ageing;
    c.max_fdb = new.max_fdb;
    c.df = new.df;
    c.mss_clamp = new.mss_clamp;
    c.tos = new.tos;
    c.port = Some(c.port());
    c.mtu = Some(c.mtu());
    c.queues = Some(c.queues());
    c.control = Some(c.control_path());
    c.src_ports = Some(crate::config::PortRangeArg(c.src_ports()));
    c.max_src_ports = Some(c.max_src_ports());
    c.local = Some(c.bind_addr().ip());
    c
}

/// What changes in place between `o` and `n` (which need no restart).
fn in_place_changes(o: &NetworkConfig, n: &NetworkConfig) -> Vec<Change> {
    let mut changes = Vec::new();
    let port = n.port();
    let (old_remotes, new_remotes): (Vec<SocketAddr>, Vec<SocketAddr>) = (
        o.remotes.iter().map(|r| r.with_default_port(port)).collect(),
        n.remotes.iter().map(|r| r.with_default_port(port)).collect(),
    );
    let added: Vec<SocketAddr> = dedup(new_remotes.iter().filter(|r| !old_remotes.contains(r)).copied());
    let removed: Vec<SocketAddr> = dedup(old_remotes.iter().filter(|r| !new_remotes.contains(r)).copied());
    if !added.is_empty() || !removed.is_empty() {
        changes.push(Change::Remotes { added, removed });
    }
    let (old_statics, new_statics) = (statics(o, port), statics(n, port));
    let added: Vec<(MacAddr, SocketAddr)> =
        new_statics.iter().filter(|(m, d)| old_statics.get(m) != Some(d)).map(|(m, d)| (*m, *d)).collect();
    let removed: Vec<(MacAddr, SocketAddr)> =
        old_statics.iter().filter(|(m, d)| new_statics.get(m) != Some(d)).map(|(m, d)| (*m, *d)).collect();
    if !added.is_empty() || !removed.is_empty() {
        changes.push(Change::Statics { added, removed });
    }
    if o.allow_from != n.allow_from {
        changes.push(Change::AllowFrom { old: o.allow_from.clone(), new: n.allow_from.clone() });
    }
    if o.strict_reserved != n.strict_reserved {
        changes.push(Change::StrictReserved(n.strict_reserved));
    }
    if o.learning != n.learning {
        changes.push(Change::Learning(n.learning));
    }
    if o.ageing != n.ageing {
        changes.push(Change::Ageing { old: o.ageing, new: n.ageing });
    }
    if o.max_fdb != n.max_fdb {
        changes.push(Change::MaxFdb { old: o.max_fdb, new: n.max_fdb });
    }
    if o.df != n.df {
        changes.push(Change::Df { old: o.df, new: n.df });
    }
    if o.mss_clamp != n.mss_clamp {
        changes.push(Change::MssClamp { old: o.mss_clamp, new: n.mss_clamp });
    }
    if o.tos != n.tos {
        changes.push(Change::Tos { old: o.tos, new: n.tos });
    }
    changes
}

/// A network's configured static entries, MAC to VTEP (the last one of a MAC wins, as at start).
fn statics(c: &NetworkConfig, port: u16) -> BTreeMap<MacAddr, SocketAddr> {
    c.statics.iter().map(|s| (s.mac, s.dst.with_default_port(port))).collect()
}

fn dedup<T: PartialEq>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out = Vec::new();
    for i in items {
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

fn opt<T: fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or_else(|| "none".to_string(), T::to_string)
}

fn list<T: fmt::Display>(v: &[T]) -> String {
    let items: Vec<String> = v.iter().map(T::to_string).collect();
    format!("[{}]", items.join(", "))
}

fn ttl(t: Ttl) -> String {
    match t {
        Ttl::Auto => "auto".into(),
        Ttl::Hops(n) => n.to_string(),
    }
}

fn flowlabel(l: FlowLabel) -> String {
    match l {
        FlowLabel::Inherit => "inherit".into(),
        FlowLabel::Fixed(n) => n.to_string(),
    }
}

fn ports(p: PortRange) -> String {
    format!("{}-{}", p.min(), p.max())
}

fn mss(m: &Option<MssClamp>) -> String {
    match m {
        None => "off".into(),
        Some(MssClamp::Auto) => "auto".into(),
        Some(MssClamp::PathMtu(n)) => n.to_string(),
    }
}

fn allow(a: &[AllowFrom]) -> String {
    let items: Vec<String> = a
        .iter()
        .map(|a| match a {
            AllowFrom::Any => "any".to_string(),
            AllowFrom::Net(n) => n.to_string(),
        })
        .collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests;
