//! The key layout under the cluster's prefix: one key per member per network,
//!
//! ```text
//! <prefix>/<proto>/<vni>/members/<node>      e.g. /vxtap/v1/vxlan/42/members/host-a
//! ```
//!
//! so that a network's members are one prefix range, a node's record in each of its networks
//! is found by name, and the protocol is part of the network's identity (VNI 42 over VXLAN and
//! over Geneve are two overlays that cannot talk to each other).

use crate::config::etcd::check_node;
use crate::wire::{Proto, MAX_VNI};

/// The segment between a network and its members.
const MEMBERS: &str = "members";
/// A network of the cluster: a protocol and a VNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetKey {
    pub proto: Proto,
    pub vni: u32,
}

/// Where a member record lives: its network and its node name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberKey {
    pub net: NetKey,
    pub node: String,
}

/// What a key under the prefix is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A member record.
    Member(MemberKey),
    /// Something else under the prefix (another kind of record, a later layout): not ours to
    /// judge, ignored.
    Other,
    /// Under a network's `members/` but not a valid member key (bad node name, bad VNI): a bad
    /// record, counted.
    Invalid(String),
}

/// `<prefix>/<proto>/<vni>/members/`: the range of a network's member keys.
pub fn members_prefix(prefix: &str, net: NetKey) -> String {
    format!("{prefix}/{}/{}/{MEMBERS}/", net.proto, net.vni)
}

/// The key of `node`'s record in network `net`.
pub fn member_key(prefix: &str, net: NetKey, node: &str) -> String {
    format!("{}{node}", members_prefix(prefix, net))
}

/// `<prefix>/`: everything a process watches (one range for all its networks).
pub fn watch_prefix(prefix: &str) -> String {
    format!("{prefix}/")
}

/// Reads a key under `<prefix>/` (as a watch of [`watch_prefix`] delivers them).
pub fn parse(prefix: &str, key: &[u8]) -> Parsed {
    let Ok(key) = std::str::from_utf8(key) else {
        return Parsed::Invalid(format!("{} (not UTF-8)", String::from_utf8_lossy(key)));
    };
    let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
        return Parsed::Other;
    };
    let parts: Vec<&str> = rest.splitn(4, '/').collect();
    let [proto, vni, members, node] = parts[..] else { return Parsed::Other };
    if members != MEMBERS {
        return Parsed::Other;
    }
    let Ok(proto) = proto.parse::<Proto>() else { return Parsed::Other };
    let bad = |why: String| Parsed::Invalid(format!("{key}: {why}"));
    let vni = match vni.parse::<u32>() {
        Ok(v) if v <= MAX_VNI && vni == v.to_string() => v,
        _ => return bad(format!("VNI {vni:?} is not 0..={MAX_VNI}")),
    };
    if let Err(e) = check_node(node) {
        return bad(e);
    }
    Parsed::Member(MemberKey { net: NetKey { proto, vni }, node: node.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/vxtap/v1";
    const NET: NetKey = NetKey { proto: Proto::Vxlan, vni: 42 };

    #[test]
    fn layout_round_trips() {
        assert_eq!(members_prefix(P, NET), "/vxtap/v1/vxlan/42/members/");
        let k = member_key(P, NetKey { proto: Proto::Geneve, vni: 7 }, "host-a.example");
        assert_eq!(k, "/vxtap/v1/geneve/7/members/host-a.example");
        assert_eq!(
            parse(P, k.as_bytes()),
            Parsed::Member(MemberKey {
                net: NetKey { proto: Proto::Geneve, vni: 7 },
                node: "host-a.example".into()
            })
        );
        assert_eq!(watch_prefix(P), "/vxtap/v1/");
    }

    #[test]
    fn other_and_invalid_keys() {
        for other in [
            "/vxtap/v1/vxlan/42/routes/x",
            "/vxtap/v1/gre/42/members/x",
            "/vxtap/v1/vxlan/42",
            "/vxtap/v1x/vxlan/42/members/x",
            "/elsewhere/vxlan/42/members/x",
            "/vxtap/v1/filler",
        ] {
            assert_eq!(parse(P, other.as_bytes()), Parsed::Other, "{other}");
        }
        for bad in [
            "/vxtap/v1/vxlan/42/members/",
            "/vxtap/v1/vxlan/42/members/a/b",
            "/vxtap/v1/vxlan/42/members/sp ace",
            "/vxtap/v1/vxlan/16777216/members/x",
            "/vxtap/v1/vxlan/042/members/x",
            "/vxtap/v1/vxlan/-1/members/x",
        ] {
            assert!(matches!(parse(P, bad.as_bytes()), Parsed::Invalid(_)), "{bad}");
        }
        assert!(matches!(parse(P, b"/vxtap/v1/vxlan/42/members/\xff"), Parsed::Invalid(_)));
        let long = format!("/vxtap/v1/vxlan/42/members/{}", "a".repeat(65));
        assert!(matches!(parse(P, long.as_bytes()), Parsed::Invalid(_)));
    }
}
