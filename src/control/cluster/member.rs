//! A member record: what a VTEP publishes about itself in one network, and how a record read
//! from etcd is checked before it may touch a table.
//!
//! The value is JSON, versioned so that a later layout can be told apart:
//!
//! ```json
//! {"v":1,"addr":"198.18.0.1","port":4789,"mac":"02:00:00:00:00:01",
//!  "overlay":["198.19.0.1","2001:db8:1::1"],"instance":"5f0c6a1e9b2d4c37"}
//! ```
//!
//! `addr` and `port` are the member's VTEP (where to send its frames), `mac` its TAP's MAC,
//! `overlay` the TAP's own addresses (for the neighbour table), `instance` a random id of the
//! process, so that a record of another process with the same node name is recognised. Fields
//! this version does not know are ignored (added fields keep version 1); a record of another
//! version is refused.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::wire::mac::MacAddr;

/// The record layout this code reads and writes.
pub const VERSION: u64 = 1;
/// Longest value read: a record is a few hundred bytes; anything much longer is not one.
pub const MAX_VALUE_LEN: usize = 4096;
/// Most overlay addresses per record.
pub const MAX_OVERLAY: usize = 64;
/// Longest instance id.
const MAX_INSTANCE_LEN: usize = 64;

/// A checked member of one network.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    pub node: String,
    /// Its VTEP: underlay address and UDP port.
    pub vtep: SocketAddr,
    /// Its TAP's MAC.
    pub mac: MacAddr,
    /// Its TAP's addresses.
    pub overlay: Vec<IpAddr>,
    pub instance: String,
}

/// The JSON shape of a record.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    v: u64,
    addr: IpAddr,
    port: u16,
    mac: String,
    #[serde(default)]
    overlay: Vec<IpAddr>,
    instance: String,
}

/// Only the version, read first so that a record of another version is named as such.
#[derive(Deserialize)]
struct Versioned {
    v: Option<u64>,
}

/// What a network expects of its members' records: the context a record is checked in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// This process's node name: its own record is not a member.
    pub node: String,
    /// Whether the network's underlay is IPv6: a member of the other family cannot be reached.
    pub v6: bool,
    /// This network's TAP MAC: a member claiming it would capture our own traffic.
    pub mac: Option<MacAddr>,
}

/// Why a record was refused (counted as `etcd_bad_values` and logged, rate-limited).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// The key is under a network's `members/` but is not a member key.
    Key(String),
    TooLong(usize),
    Json(String),
    Version(Option<u64>),
    /// The VTEP address is of the other family than this network's underlay.
    Family(IpAddr),
    /// The VTEP address cannot be sent to (unspecified, loopback, multicast, broadcast).
    Address(IpAddr),
    Port,
    Mac(String),
    /// The member claims this network's own TAP MAC.
    OwnMac(MacAddr),
    /// An overlay address that is not a unicast host.
    Overlay(IpAddr),
    TooManyOverlay(usize),
    Instance,
    /// Another member (named) already has this MAC.
    DuplicateMac {
        mac: MacAddr,
        with: String,
    },
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::Key(k) => write!(f, "bad key {k}"),
            Invalid::TooLong(n) => write!(f, "value of {n} bytes (at most {MAX_VALUE_LEN})"),
            Invalid::Json(e) => write!(f, "not a member record: {e}"),
            Invalid::Version(Some(v)) => write!(f, "record version {v} (this vxtap reads version {VERSION})"),
            Invalid::Version(None) => write!(f, "record without a version (\"v\")"),
            Invalid::Family(ip) => write!(f, "VTEP {ip} is of the other address family than this underlay"),
            Invalid::Address(ip) => write!(f, "VTEP {ip} is not a unicast address"),
            Invalid::Port => write!(f, "port 0"),
            Invalid::Mac(m) => write!(f, "MAC {m:?} is not a unicast MAC"),
            Invalid::OwnMac(m) => write!(f, "claims this VTEP's own MAC {m}"),
            Invalid::Overlay(ip) => write!(f, "overlay address {ip} is not a unicast host address"),
            Invalid::TooManyOverlay(n) => write!(f, "{n} overlay addresses (at most {MAX_OVERLAY})"),
            Invalid::Instance => write!(f, "instance id missing, too long or not printable"),
            Invalid::DuplicateMac { mac, with } => write!(f, "MAC {mac} is already member {with}'s"),
        }
    }
}

impl Member {
    /// The record as stored in etcd.
    pub fn to_json(&self) -> String {
        let r = Record {
            v: VERSION,
            addr: self.vtep.ip(),
            port: self.vtep.port(),
            mac: self.mac.to_string(),
            overlay: self.overlay.clone(),
            instance: self.instance.clone(),
        };
        serde_json::to_string(&r).expect("a record always serializes")
    }

    /// Reads and checks `node`'s record `value` as network `view` sees it. The caller has made
    /// sure `node` is not `view.node` (its own record is not a member).
    pub fn parse(node: &str, value: &[u8], view: &View) -> Result<Member, Invalid> {
        if value.len() > MAX_VALUE_LEN {
            return Err(Invalid::TooLong(value.len()));
        }
        let versioned: Versioned = serde_json::from_slice(value).map_err(|e| Invalid::Json(e.to_string()))?;
        if versioned.v != Some(VERSION) {
            return Err(Invalid::Version(versioned.v));
        }
        let r: Record = serde_json::from_slice(value).map_err(|e| Invalid::Json(e.to_string()))?;
        let addr = r.addr.to_canonical();
        if addr.is_ipv6() != view.v6 {
            return Err(Invalid::Family(addr));
        }
        if !crate::state::neigh::is_host_address(addr) {
            return Err(Invalid::Address(addr));
        }
        if r.port == 0 {
            return Err(Invalid::Port);
        }
        let mac: MacAddr = r.mac.parse().map_err(|_| Invalid::Mac(r.mac.clone()))?;
        if !mac.is_learnable() {
            return Err(Invalid::Mac(r.mac));
        }
        if view.mac == Some(mac) {
            return Err(Invalid::OwnMac(mac));
        }
        if r.overlay.len() > MAX_OVERLAY {
            return Err(Invalid::TooManyOverlay(r.overlay.len()));
        }
        let mut overlay: Vec<IpAddr> = r.overlay.iter().map(|ip| ip.to_canonical()).collect();
        if let Some(bad) = overlay.iter().find(|ip| !crate::state::neigh::is_host_address(**ip)) {
            return Err(Invalid::Overlay(*bad));
        }
        overlay.sort();
        overlay.dedup();
        let printable = |s: &str| s.chars().all(|c| c.is_ascii_graphic());
        if r.instance.is_empty() || r.instance.len() > MAX_INSTANCE_LEN || !printable(&r.instance) {
            return Err(Invalid::Instance);
        }
        Ok(Member {
            node: node.to_string(),
            vtep: SocketAddr::new(addr, r.port),
            mac,
            overlay,
            instance: r.instance,
        })
    }
}

/// The instance id of a record, if it has one: how a process recognises its own record (or
/// someone else's under its node name) without checking the rest.
pub fn instance_of(value: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Instance {
        instance: Option<String>,
    }
    serde_json::from_slice::<Instance>(value).ok()?.instance
}

/// A fresh random instance id: 16 hex digits, from the standard library's per-process random
/// hash keys mixed with the time and process id.
pub fn new_instance_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    h.write_u128(nanos);
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> View {
        View { node: "me".into(), v6: false, mac: Some(MacAddr([2, 0, 0, 0, 0, 1])) }
    }

    fn member() -> Member {
        Member {
            node: "b".into(),
            vtep: "198.18.0.2:4789".parse().unwrap(),
            mac: MacAddr([2, 0, 0, 0, 0, 2]),
            overlay: vec!["198.19.0.2".parse().unwrap(), "2001:db8:1::2".parse().unwrap()],
            instance: "0123456789abcdef".into(),
        }
    }

    #[test]
    fn record_round_trips_in_the_documented_json() {
        let m = member();
        let json = m.to_json();
        assert_eq!(
            json,
            r#"{"v":1,"addr":"198.18.0.2","port":4789,"mac":"02:00:00:00:00:02","overlay":["198.19.0.2","2001:db8:1::2"],"instance":"0123456789abcdef"}"#
        );
        assert_eq!(Member::parse("b", json.as_bytes(), &view()), Ok(m.clone()));
        assert_eq!(instance_of(json.as_bytes()).as_deref(), Some("0123456789abcdef"));
        let extra = json.replace("\"v\":1", "\"v\":1,\"later\":{\"x\":[1,2]}");
        assert!(Member::parse("b", extra.as_bytes(), &view()).is_ok(), "unknown fields are ignored");
        let mapped = json.replace("\"198.18.0.2\"", "\"::ffff:198.18.0.2\"");
        assert_eq!(Member::parse("b", mapped.as_bytes(), &view()).unwrap().vtep, m.vtep, "canonical");
    }

    #[test]
    fn hostile_records_are_refused_with_their_reason() {
        let good = member().to_json();
        let check = |value: &str| Member::parse("b", value.as_bytes(), &view());
        assert!(matches!(check("{not json"), Err(Invalid::Json(_))));
        assert!(matches!(check("[]"), Err(Invalid::Json(_))));
        assert_eq!(check(&good.replace("\"v\":1", "\"v\":2")), Err(Invalid::Version(Some(2))));
        assert_eq!(check(&good.replace("\"v\":1,", "")), Err(Invalid::Version(None)));
        assert_eq!(
            check(&good.replace("198.18.0.2\"", "2001:db8::2\"")),
            Err(Invalid::Family("2001:db8::2".parse().unwrap()))
        );
        assert!(matches!(check(&good.replace("198.18.0.2\"", "224.0.0.1\"")), Err(Invalid::Address(_))));
        assert!(matches!(check(&good.replace("198.18.0.2\"", "0.0.0.0\"")), Err(Invalid::Address(_))));
        assert_eq!(check(&good.replace("4789", "0")), Err(Invalid::Port));
        assert!(matches!(check(&good.replace("4789", "70000")), Err(Invalid::Json(_))));
        assert!(matches!(
            check(&good.replace("02:00:00:00:00:02", "ff:ff:ff:ff:ff:ff")),
            Err(Invalid::Mac(_))
        ));
        assert!(matches!(check(&good.replace("02:00:00:00:00:02", "zz")), Err(Invalid::Mac(_))));
        assert_eq!(
            check(&good.replace("02:00:00:00:00:02", "02:00:00:00:00:01")),
            Err(Invalid::OwnMac(MacAddr([2, 0, 0, 0, 0, 1])))
        );
        assert!(matches!(check(&good.replace("198.19.0.2", "127.0.0.1")), Err(Invalid::Overlay(_))));
        assert_eq!(check(&good.replace("0123456789abcdef", "")), Err(Invalid::Instance));
        assert_eq!(check(&good.replace("0123456789abcdef", "a b")), Err(Invalid::Instance));
        let many: Vec<String> = (0..65).map(|i| format!("\"198.19.1.{i}\"")).collect();
        let too_many = good.replace("\"198.19.0.2\"", &many.join(","));
        assert_eq!(check(&too_many), Err(Invalid::TooManyOverlay(66)));
        assert!(matches!(check(&" ".repeat(5000)), Err(Invalid::TooLong(5000))));
        for e in [Invalid::Version(Some(2)), Invalid::OwnMac(MacAddr([2, 0, 0, 0, 0, 1])), Invalid::Port] {
            assert!(!e.to_string().is_empty());
        }
        let v6 = View { v6: true, ..view() };
        let v6_member = good.replace("198.18.0.2\"", "2001:db8::2\"");
        assert!(Member::parse("b", v6_member.as_bytes(), &v6).is_ok());
    }

    #[test]
    fn instance_ids_differ() {
        let (a, b) = (new_instance_id(), new_instance_id());
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
    }
}
