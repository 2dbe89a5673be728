//! The network's configuration, `<prefix>/config`, as flanneld reads it: JSON whose keys are
//! matched case-insensitively (Go's encoding/json), with flannel's defaults and checks.
//!
//! ```json
//! {"Network": "198.19.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan", "VNI": 1}}
//! ```

use serde_json::{Map, Value};

use super::subnet::Subnet;

/// The default UDP port of flannel's vxlan backend (the kernel's historical port, not 4789).
pub const DEFAULT_PORT: u16 = 8472;

/// A configuration vxtap can run: IPv4, vxlan backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlannelConfig {
    /// `Network`: the whole pod network.
    pub network: Subnet,
    /// `SubnetLen`: the size of each host's subnet (default 24, or Network's length + 2 for a
    /// network of /23 or smaller).
    pub subnet_len: u8,
    /// `SubnetMin`, `SubnetMax`: the first and last subnet handed out (default: the second and
    /// the last of the network).
    pub subnet_min: Subnet,
    pub subnet_max: Subnet,
    /// `Backend.VNI` (default 1).
    pub vni: u32,
    /// `Backend.Port` (0 or missing: 8472).
    pub port: u16,
    /// `Backend.MTU`: the TAP's MTU, if set (else the underlay's minus 50).
    pub mtu: Option<u32>,
    /// `Backend.DirectRouting`: peers on the same link are routed to directly.
    pub direct_routing: bool,
}

/// What is refused in a configuration, each with a message for the operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the flannel configuration is not a JSON object: {0}")]
    NotJson(String),
    #[error("the flannel configuration: {0}")]
    Invalid(String),
    #[error(
        "the flannel configuration has backend type {0:?}: vxtap speaks only the vxlan backend \
         (a configuration without \"Backend\" means udp)"
    )]
    Backend(String),
    #[error(
        "the flannel configuration enables IPv6 (EnableIPv6 or IPv6Network): vxtap flannel is IPv4 \
         only, dual stack is not supported (docs/flannel.md)"
    )]
    Ipv6,
}

impl FlannelConfig {
    /// Parses and checks the value of `<prefix>/config`.
    pub fn parse(bytes: &[u8]) -> Result<FlannelConfig, ConfigError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| ConfigError::NotJson(e.to_string()))?;
        let Value::Object(top) = v else {
            return Err(ConfigError::NotJson("not an object".into()));
        };
        let bad = |m: String| ConfigError::Invalid(m);
        let enable_v4 = get_bool(&top, "EnableIPv4").map_err(bad)?.unwrap_or(true);
        let enable_v6 = get_bool(&top, "EnableIPv6").map_err(bad)?.unwrap_or(false);
        let v6_network = get(&top, "IPv6Network").is_some_and(|v| !v.is_null() && v != "");
        if enable_v6 || v6_network {
            return Err(ConfigError::Ipv6);
        }
        if !enable_v4 {
            return Err(bad("EnableIPv4 is false: vxtap flannel needs an IPv4 Network".into()));
        }
        let network: Subnet = get_str(&top, "Network")
            .map_err(bad)?
            .ok_or_else(|| bad("no \"Network\" (e.g. \"198.19.0.0/16\")".into()))?
            .parse()
            .map_err(|e| bad(format!("Network: {e}")))?;
        let subnet_len = match get_uint(&top, "SubnetLen").map_err(bad)? {
            None | Some(0) if network.len < 23 => 24,
            None | Some(0) => network.len + 2,
            Some(n) => u8::try_from(n).map_err(|_| bad(format!("SubnetLen {n} is over 32")))?,
        };
        if subnet_len > 30 {
            return Err(bad(format!("SubnetLen {subnet_len}: it must be /30 or shorter")));
        }
        if subnet_len < network.len + 2 {
            return Err(bad(format!(
                "SubnetLen {subnet_len} in Network {network}: the network must hold at least four subnets"
            )));
        }
        let step = 1u32 << (32 - u32::from(subnet_len));
        let at = |n: u64| Subnet { addr: std::net::Ipv4Addr::from(n as u32), len: subnet_len };
        let first = u64::from(u32::from(network.addr));
        let bound = |name: &str, default: Subnet| -> Result<Subnet, ConfigError> {
            let Some(s) = get_str(&top, name).map_err(bad)? else { return Ok(default) };
            let ip: std::net::Ipv4Addr =
                s.parse().map_err(|_| bad(format!("{name} {s:?} is not an IPv4 address")))?;
            if !network.contains(ip) {
                return Err(bad(format!("{name} {ip} is not in Network {network}")));
            }
            if u32::from(ip) % step != 0 {
                return Err(bad(format!("{name} {ip} is not on a /{subnet_len} boundary")));
            }
            Ok(Subnet { addr: ip, len: subnet_len })
        };
        let subnet_min = bound("SubnetMin", at(first + u64::from(step)))?;
        let subnet_max = bound("SubnetMax", at(first + network.size() - u64::from(step)))?;
        if subnet_min.addr > subnet_max.addr {
            return Err(bad(format!("SubnetMin {} is above SubnetMax {}", subnet_min.addr, subnet_max.addr)));
        }
        let backend = match get(&top, "Backend") {
            None | Some(Value::Null) => return Err(ConfigError::Backend("udp".into())),
            Some(Value::Object(b)) => b,
            Some(_) => return Err(bad("\"Backend\" is not an object".into())),
        };
        let kind = get_str(backend, "Type").map_err(bad)?.unwrap_or("udp");
        if !kind.eq_ignore_ascii_case("vxlan") {
            return Err(ConfigError::Backend(kind.to_string()));
        }
        let vni = match get_uint(backend, "VNI").map_err(bad)? {
            None | Some(0) => 1,
            Some(n) if n < 1 << 24 => n as u32,
            Some(n) => return Err(bad(format!("Backend.VNI {n} is over 16777215"))),
        };
        let port = match get_uint(backend, "Port").map_err(bad)? {
            None | Some(0) => DEFAULT_PORT,
            Some(n) => u16::try_from(n).map_err(|_| bad(format!("Backend.Port {n} is over 65535")))?,
        };
        let mtu = match get_uint(backend, "MTU").map_err(bad)? {
            None | Some(0) => None,
            Some(n) if (576..=65535).contains(&n) => Some(n as u32),
            Some(n) => return Err(bad(format!("Backend.MTU {n} is not in 576..=65535"))),
        };
        let direct_routing = get_bool(backend, "DirectRouting").map_err(bad)?.unwrap_or(false);
        Ok(FlannelConfig { network, subnet_len, subnet_min, subnet_max, vni, port, mtu, direct_routing })
    }

    /// Whether `s` is a subnet this configuration hands out (flannel's `isSubnetConfigCompat`:
    /// in the network, of SubnetLen).
    pub fn compatible(&self, s: &Subnet) -> bool {
        s.len == self.subnet_len && self.network.covers(s)
    }
}

/// The value of `name`, the key matched exactly or else case-insensitively (Go's rule).
pub fn get<'a>(obj: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

/// A string field; null is absent.
pub fn get_str<'a>(obj: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match get(obj, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(format!("{name} is not a string: {v}")),
    }
}

/// A non-negative integer field; null is absent.
pub fn get_uint(obj: &Map<String, Value>, name: &str) -> Result<Option<u64>, String> {
    match get(obj, name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| format!("{name} is not a non-negative integer: {v}")),
    }
}

fn get_bool(obj: &Map<String, Value>, name: &str) -> Result<Option<bool>, String> {
    match get(obj, name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(format!("{name} is not true or false: {v}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<FlannelConfig, ConfigError> {
        FlannelConfig::parse(s.as_bytes())
    }

    #[test]
    fn defaults() {
        let c = parse(r#"{"Network":"198.19.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert_eq!(c.network, "198.19.0.0/16".parse().unwrap());
        assert_eq!(c.subnet_len, 24);
        assert_eq!(c.subnet_min, "198.19.1.0/24".parse().unwrap());
        assert_eq!(c.subnet_max, "198.19.255.0/24".parse().unwrap());
        assert_eq!((c.vni, c.port, c.mtu, c.direct_routing), (1, 8472, None, false));
        let small = parse(r#"{"Network":"198.19.0.0/24","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert_eq!(small.subnet_len, 26);
    }

    #[test]
    fn keys_are_matched_case_insensitively_as_go_does() {
        let c = parse(
            r#"{"network":"198.19.0.0/16","SUBNETLEN":25,"subnetMin":"198.19.4.0","SubnetMax":"198.19.8.128",
                "backend":{"type":"VXLAN","vni":7,"port":0,"mtu":1400,"directrouting":true},"Unknown":1}"#,
        )
        .unwrap();
        assert_eq!(c.subnet_len, 25);
        assert_eq!(
            (c.subnet_min.to_string().as_str(), c.subnet_max.to_string().as_str()),
            ("198.19.4.0/25", "198.19.8.128/25")
        );
        assert_eq!((c.vni, c.port, c.mtu, c.direct_routing), (7, 8472, Some(1400), true));
        let p = parse(r#"{"Network":"198.19.0.0/16","Backend":{"Type":"vxlan","Port":4789}}"#).unwrap();
        assert_eq!(p.port, 4789);
    }

    #[test]
    fn bad_configurations_are_refused_clearly() {
        assert!(matches!(parse("not json"), Err(ConfigError::NotJson(_))));
        assert!(matches!(parse("[1]"), Err(ConfigError::NotJson(_))));
        let e = parse(r#"{"Network":"198.19.0.0/16"}"#).unwrap_err();
        assert_eq!(e, ConfigError::Backend("udp".into()), "no Backend means udp");
        assert!(e.to_string().contains("udp"));
        let e = parse(r#"{"Network":"198.19.0.0/16","Backend":{"Type":"host-gw"}}"#).unwrap_err();
        assert_eq!(e, ConfigError::Backend("host-gw".into()));
        assert!(e.to_string().contains("vxlan backend"), "{e}");
        assert_eq!(
            parse(r#"{"Network":"198.19.0.0/16","Backend":{}}"#),
            Err(ConfigError::Backend("udp".into()))
        );
        for v6 in [
            r#"{"Network":"198.19.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"198.19.0.0/16","IPv6Network":"fc00::/48","Backend":{"Type":"vxlan"}}"#,
        ] {
            assert_eq!(parse(v6), Err(ConfigError::Ipv6));
        }
        for bad in [
            r#"{"Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"198.19.0.1/16","Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":198,"Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"198.19.0.0/16","SubnetLen":31,"Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"198.19.0.0/16","SubnetLen":17,"Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"198.19.0.0/16","SubnetLen":-1,"Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"198.19.0.0/16","SubnetMin":"198.18.0.0","Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"198.19.0.0/16","SubnetMin":"198.19.0.7","Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"198.19.0.0/16","SubnetMin":"198.19.9.0","SubnetMax":"198.19.8.0","Backend":{"Type":"vxlan"}}"#,
            r#"{"Network":"198.19.0.0/16","Backend":{"Type":"vxlan","VNI":16777216}}"#,
            r#"{"Network":"198.19.0.0/16","Backend":{"Type":"vxlan","Port":70000}}"#,
            r#"{"Network":"198.19.0.0/16","Backend":{"Type":"vxlan","VNI":"1"}}"#,
            r#"{"Network":"198.19.0.0/16","Backend":{"Type":"vxlan","DirectRouting":"yes"}}"#,
            r#"{"Network":"198.19.0.0/16","Backend":"vxlan"}"#,
            r#"{"Network":"198.19.0.0/16","EnableIPv4":false,"Backend":{"Type":"vxlan"}}"#,
        ] {
            assert!(matches!(parse(bad), Err(ConfigError::Invalid(_))), "{bad}: {:?}", parse(bad));
        }
    }

    #[test]
    fn compatible_subnets() {
        let c = parse(r#"{"Network":"198.19.0.0/16","Backend":{"Type":"vxlan"}}"#).unwrap();
        assert!(c.compatible(&"198.19.3.0/24".parse().unwrap()));
        assert!(!c.compatible(&"198.19.3.0/25".parse().unwrap()));
        assert!(!c.compatible(&"198.18.3.0/24".parse().unwrap()));
    }
}
