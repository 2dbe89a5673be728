//! Where flannel keeps its data in etcd: `<prefix>/config` and `<prefix>/subnets/<subnet key>`.

use super::subnet::SubnetKey;

/// The key of the network's configuration.
pub fn config_key(prefix: &str) -> String {
    format!("{}/config", prefix.trim_end_matches('/'))
}

/// The prefix every lease is under (with a trailing slash).
pub fn subnets_prefix(prefix: &str) -> String {
    format!("{}/subnets/", prefix.trim_end_matches('/'))
}

/// The key of the lease of `key`.
pub fn lease_key(prefix: &str, key: &SubnetKey) -> String {
    format!("{}{key}", subnets_prefix(prefix))
}

/// The subnet key of an etcd key under [`subnets_prefix`]; Err with the reason otherwise.
pub fn parse_lease_key(prefix: &str, key: &[u8]) -> Result<SubnetKey, String> {
    let key = std::str::from_utf8(key).map_err(|_| "a key that is not UTF-8".to_string())?;
    let tail =
        key.strip_prefix(&subnets_prefix(prefix)).ok_or_else(|| format!("{key} is not a lease key"))?;
    tail.parse().map_err(|e| format!("key {key}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(config_key("/coreos.com/network"), "/coreos.com/network/config");
        assert_eq!(config_key("/coreos.com/network/"), "/coreos.com/network/config");
        let k: SubnetKey = "198.19.1.0-24".parse().unwrap();
        assert_eq!(lease_key("/coreos.com/network", &k), "/coreos.com/network/subnets/198.19.1.0-24");
        assert_eq!(
            parse_lease_key("/coreos.com/network", b"/coreos.com/network/subnets/198.19.1.0-24"),
            Ok(k)
        );
        assert!(parse_lease_key("/coreos.com/network", b"/coreos.com/network/subnets/198.19.1.0").is_err());
        assert!(parse_lease_key("/coreos.com/network", b"/other/subnets/198.19.1.0-24").is_err());
        assert!(parse_lease_key("/coreos.com/network", b"/coreos.com/network/subnets/\xff").is_err());
    }
}
