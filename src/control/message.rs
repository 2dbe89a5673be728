//! The messages of the control socket, typed: one JSON request per line, one JSON response per
//! line, `{"ok": true, "result": ...}` or `{"ok": false, "error": "...", "result": null}`.
//! The `--json` outputs of `vxtap fdb show` and `vxtap stats` are these results as they arrive.

use std::net::IpAddr;

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::Endpoint;
use crate::state::neigh::NeighSource;
use crate::wire::mac::MacAddr;

/// Longest request line accepted; anything longer is refused, so a client cannot make us buffer
/// without bound.
pub const MAX_REQUEST: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    FdbShow,
    /// A static entry; the all-zero MAC adds a flood-list remote instead.
    FdbAdd {
        #[serde(with = "as_string")]
        mac: MacAddr,
        #[serde(with = "as_string")]
        dst: Endpoint,
    },
    /// Removes an entry; the all-zero MAC with `dst` removes a flood-list remote.
    FdbDel {
        #[serde(with = "as_string")]
        mac: MacAddr,
        #[serde(default, with = "opt_as_string")]
        dst: Option<Endpoint>,
    },
    Stats,
    /// One row per remote VTEP.
    Peers,
    /// The neighbour table (overlay IP -> MAC) that `--proxy` answers from.
    NeighShow,
    /// Adds or replaces an operator's neighbour entry.
    NeighAdd {
        ip: IpAddr,
        #[serde(with = "as_string")]
        mac: MacAddr,
    },
    /// Removes an operator's neighbour entry.
    NeighDel {
        ip: IpAddr,
    },
    /// Re-read the configuration file the process was started with and apply it (the same as
    /// SIGHUP); answered with [`Reloaded`].
    Reload,
}

/// Parses one request line.
pub fn parse_request(line: &str) -> Result<Request, String> {
    serde_json::from_str(line.trim()).map_err(|e| format!("bad request: {e}"))
}

/// What a request returns when it succeeds; serialized as the bare result (`null` for
/// [`Reply::Done`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// A change was made; there is nothing to show.
    Done,
    Fdb(Vec<FdbRow>),
    Stats(Stats),
    Peers(Vec<PeerRow>),
    Neigh(Vec<NeighRow>),
    Reload(Reloaded),
}

/// One row of `vxtap neigh show --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighRow {
    pub ip: IpAddr,
    #[serde(with = "as_string")]
    pub mac: MacAddr,
    pub vni: u32,
    pub source: NeighSource,
}

/// One row of `vxtap peers --json`: a remote VTEP of one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRow {
    pub dst: IpAddr,
    pub port: u16,
    pub vni: u32,
    /// How vxtap knows it, the most explicit first (a configured remote that also sent traffic
    /// is a remote).
    pub source: PeerSource,
    /// The cluster node it belongs to, when a control plane said so.
    pub node: Option<String>,
    /// The path MTU towards it, as the kernel knows it now (null if it cannot say).
    pub pmtu: Option<u32>,
    /// Seconds since a frame from it was last seen (through a MAC learned behind it); null if
    /// none was.
    pub last_seen_secs: Option<u64>,
    /// Over WireGuard, the peer whose tunnel address it is; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wg: Option<WgPeerRow>,
}

/// The WireGuard side of a row of `vxtap peers --json`, as `wg show` tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WgPeerRow {
    /// Its public key, base64.
    pub public_key: String,
    /// Where its WireGuard is: configured, or where its latest authenticated message came from.
    pub endpoint: std::net::SocketAddr,
    /// Seconds since its latest handshake completed; null before the first.
    pub latest_handshake_secs: Option<u64>,
    /// Plaintext bytes received from it and sent to it.
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// How a remote VTEP became known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerSource {
    /// A flood-list remote (`--remote`, or `fdb add 00:00:00:00:00:00`).
    Remote,
    /// The VTEP of a static FDB entry.
    Static,
    /// Learned from traffic only.
    Learned,
    /// Learned from traffic, in group mode (found through the multicast group).
    Group,
    /// A member of the cluster (etcd); `node` names it.
    Etcd,
    /// Another host's flannel lease (`vxtap flannel`); `node` is its subnet.
    Flannel,
}

impl PeerSource {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerSource::Remote => "remote",
            PeerSource::Static => "static",
            PeerSource::Learned => "learned",
            PeerSource::Group => "group",
            PeerSource::Etcd => "etcd",
            PeerSource::Flannel => "flannel",
        }
    }

    /// Which source a peer known several ways shows: the most explicit (lowest) wins, so a
    /// member that is also a configured remote shows as a remote, and a member that also sent
    /// traffic as a member.
    pub fn rank(self) -> u8 {
        match self {
            PeerSource::Remote => 0,
            PeerSource::Static => 1,
            PeerSource::Etcd | PeerSource::Flannel => 2,
            PeerSource::Group => 3,
            PeerSource::Learned => 4,
        }
    }
}

/// One row of `fdb show --json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbRow {
    #[serde(with = "as_string")]
    pub mac: MacAddr,
    pub dst: IpAddr,
    pub port: u16,
    pub vni: u32,
    pub kind: FdbKind,
    /// Seconds since a learned entry was last refreshed (0 for the others).
    pub age_secs: u64,
}

/// How an FDB row got there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FdbKind {
    Learned,
    Static,
    /// A flood-list remote (shown with the all-zero MAC, like `bridge fdb show`).
    Flood,
    /// The multicast group, the default destination in group mode (also the all-zero MAC).
    Group,
    /// A cluster member's TAP MAC, from etcd.
    Etcd,
}

impl FdbKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FdbKind::Learned => "learned",
            FdbKind::Static => "static",
            FdbKind::Flood => "flood",
            FdbKind::Group => "group",
            FdbKind::Etcd => "etcd",
        }
    }
}

/// `vxtap stats`: named counters in a fixed order (traffic, drops by reason, FDB), serialized
/// as one JSON object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats(pub Vec<(String, u64)>);

impl Stats {
    /// The counter `name`, if present.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
    }
}

impl Serialize for Stats {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Stats {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // serde_json's `preserve_order` keeps the server's order.
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        map.into_iter()
            .map(|(k, v)| v.as_u64().map(|v| (k.clone(), v)).ok_or(k))
            .collect::<Result<Vec<_>, String>>()
            .map(Stats)
            .map_err(|k| serde::de::Error::custom(format!("counter {k} is not a number")))
    }
}

/// What `vxtap reload` did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reloaded {
    /// One row per network of the new configuration, in its order, then the removed ones.
    pub networks: Vec<ReloadRow>,
    /// What the reload left as it was, and why (a process-wide setting, say).
    #[serde(default)]
    pub notes: Vec<String>,
}

impl Reloaded {
    /// Whether some network could not be set up as configured.
    pub fn failed(&self) -> bool {
        self.networks.iter().any(|n| n.action == ReloadAction::Failed)
    }
}

/// What a reload did to one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadRow {
    pub dev: String,
    pub vni: u32,
    pub action: ReloadAction,
    /// What changed in place, or why the network restarted (`mtu 1450 -> 1400`...).
    #[serde(default)]
    pub details: Vec<String>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a reload did to one network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadAction {
    Unchanged,
    /// Changed while it runs.
    Changed,
    /// Removed and added again: a setting that shapes its TAP or its socket changed.
    Restarted,
    Added,
    Removed,
    /// Could not be set up as configured: it is not running (or, for a change in place, part of
    /// the change did not apply); `error` says why.
    Failed,
}

impl ReloadAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadAction::Unchanged => "unchanged",
            ReloadAction::Changed => "changed",
            ReloadAction::Restarted => "restarted",
            ReloadAction::Added => "added",
            ReloadAction::Removed => "removed",
            ReloadAction::Failed => "failed",
        }
    }
}

/// The envelope of every response line.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Response<R> {
    pub(crate) ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
    pub(crate) result: R,
}

/// (De)serializes through `Display` / `FromStr`, so JSON carries "02:00:..." and "198.18.0.2:4789".
mod as_string {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub(super) fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub(super) fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

mod opt_as_string {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub(super) fn serialize<T: Display, S: Serializer>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_str(v),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, T, D>(d: D) -> Result<Option<T>, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        Option::<String>::deserialize(d)?.map(|s| s.parse().map_err(serde::de::Error::custom)).transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_as_json_lines() {
        let reqs = [
            Request::FdbShow,
            Request::Stats,
            Request::Peers,
            Request::Reload,
            Request::FdbAdd {
                mac: "02:00:00:00:00:02".parse().unwrap(),
                dst: "198.18.0.2:4789".parse().unwrap(),
            },
            Request::FdbDel { mac: MacAddr::ZERO, dst: Some("198.18.0.3".parse().unwrap()) },
            Request::FdbDel { mac: "02:00:00:00:00:02".parse().unwrap(), dst: None },
            Request::NeighShow,
            Request::NeighAdd {
                ip: "198.19.0.9".parse().unwrap(),
                mac: "02:00:00:00:00:09".parse().unwrap(),
            },
            Request::NeighDel { ip: "2001:db8:1::9".parse().unwrap() },
        ];
        for r in reqs {
            let line = serde_json::to_string(&r).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(parse_request(&line), Ok(r));
        }
    }

    #[test]
    fn malformed_requests_are_errors_not_panics() {
        for bad in [
            "",
            "{",
            "{\"op\":\"reboot\"}",
            "{\"op\":\"fdb_add\",\"mac\":\"zz\",\"dst\":\"198.18.0.2\"}",
            "[]",
            "null",
        ] {
            assert!(parse_request(bad).is_err(), "{bad:?}");
        }
    }

    /// The documented wire format (docs/usage.md "Peers and the forwarding table at runtime"), byte for byte.
    #[test]
    fn replies_keep_the_documented_json() {
        let row = FdbRow {
            mac: "02:00:00:00:00:02".parse().unwrap(),
            dst: "198.18.0.2".parse().unwrap(),
            port: 4789,
            vni: 42,
            kind: FdbKind::Learned,
            age_secs: 12,
        };
        let ok = Response { ok: true, error: None, result: Reply::Fdb(vec![row.clone()]) };
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"ok":true,"result":[{"mac":"02:00:00:00:00:02","dst":"198.18.0.2","port":4789,"vni":42,"kind":"learned","age_secs":12}]}"#
        );
        let done = Response { ok: true, error: None, result: Reply::Done };
        assert_eq!(serde_json::to_string(&done).unwrap(), r#"{"ok":true,"result":null}"#);
        let err = Response { ok: false, error: Some("nope".into()), result: Reply::Done };
        assert_eq!(serde_json::to_string(&err).unwrap(), r#"{"ok":false,"error":"nope","result":null}"#);
        let stats = Stats(vec![("rx_packets".into(), 3), ("drop_truncated".into(), 1)]);
        let json = serde_json::to_string(&Reply::Stats(stats.clone())).unwrap();
        assert_eq!(json, r#"{"rx_packets":3,"drop_truncated":1}"#);
        assert_eq!(serde_json::from_str::<Stats>(&json).unwrap(), stats, "order kept");
        assert_eq!(
            serde_json::from_str::<Vec<FdbRow>>(&format!("[{}]", serde_json::to_string(&row).unwrap()))
                .unwrap(),
            vec![row]
        );
        assert!(serde_json::from_str::<Stats>(r#"{"a":"x"}"#).is_err());
        let peer = PeerRow {
            dst: "198.18.2.2".parse().unwrap(),
            port: 4789,
            vni: 42,
            source: PeerSource::Remote,
            node: None,
            pmtu: Some(1400),
            last_seen_secs: None,
            wg: None,
        };
        assert_eq!(
            serde_json::to_string(&Reply::Peers(vec![peer])).unwrap(),
            r#"[{"dst":"198.18.2.2","port":4789,"vni":42,"source":"remote","node":null,"pmtu":1400,"last_seen_secs":null}]"#
        );
        let neigh = NeighRow {
            ip: "198.19.0.2".parse().unwrap(),
            mac: "02:00:00:00:00:02".parse().unwrap(),
            vni: 42,
            source: NeighSource::Etcd,
        };
        assert_eq!(
            serde_json::to_string(&Reply::Neigh(vec![neigh])).unwrap(),
            r#"[{"ip":"198.19.0.2","mac":"02:00:00:00:00:02","vni":42,"source":"etcd"}]"#
        );
        assert_eq!(serde_json::to_string(&FdbKind::Etcd).unwrap(), r#""etcd""#);
        assert_eq!(serde_json::to_string(&PeerSource::Etcd).unwrap(), r#""etcd""#);
        assert_eq!(serde_json::to_string(&PeerSource::Flannel).unwrap(), r#""flannel""#);
        assert_eq!(serde_json::to_string(&Request::Reload).unwrap(), r#"{"op":"reload"}"#);
        let reloaded = Reloaded {
            networks: vec![
                ReloadRow {
                    dev: "vxt43".into(),
                    vni: 43,
                    action: ReloadAction::Restarted,
                    details: vec!["mtu 1450 -> 1400".into()],
                    error: None,
                },
                ReloadRow {
                    dev: "vxt44".into(),
                    vni: 44,
                    action: ReloadAction::Failed,
                    details: vec![],
                    error: Some("TAP vxt44 is already in use by another process".into()),
                },
            ],
            notes: vec![],
        };
        let json = serde_json::to_string(&Reply::Reload(reloaded.clone())).unwrap();
        assert_eq!(
            json,
            r#"{"networks":[{"dev":"vxt43","vni":43,"action":"restarted","details":["mtu 1450 -> 1400"]},{"dev":"vxt44","vni":44,"action":"failed","details":[],"error":"TAP vxt44 is already in use by another process"}],"notes":[]}"#
        );
        assert_eq!(serde_json::from_str::<Reloaded>(&json).unwrap(), reloaded);
        assert!(reloaded.failed());
    }
}
