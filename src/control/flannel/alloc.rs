//! Which subnet this host takes, in flanneld's order (`tryAcquireLease`): the lease that
//! already names this host's address, else the subnet of the previous subnet file if no one
//! holds it, else a random free subnet between SubnetMin and SubnetMax.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::config::FlannelConfig;
use super::lease::{random_mac, Lease};
use super::subnet::{Subnet, SubnetKey};
use crate::wire::mac::MacAddr;

/// How many free subnets the random choice picks among (flannel: 100), so that a large range
/// is not walked whole.
const CANDIDATES: usize = 100;

/// What to do in etcd to hold a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// This host's lease exists: put it again (new etcd lease, same subnet, same VtepMAC).
    Reuse { key: SubnetKey, mac: MacAddr },
    /// Create this lease if it is still absent (`Txn(If Version(key) == 0 Then Put)`); `from_file`
    /// says it is the previous subnet file's.
    Create { key: SubnetKey, mac: MacAddr, from_file: bool },
}

impl Choice {
    pub fn key(&self) -> SubnetKey {
        match self {
            Choice::Reuse { key, .. } | Choice::Create { key, .. } => *key,
        }
    }

    pub fn mac(&self) -> MacAddr {
        match self {
            Choice::Reuse { mac, .. } | Choice::Create { mac, .. } => *mac,
        }
    }
}

/// The choice, and this host's leases that no longer fit the configuration (another subnet
/// length or network): flanneld deletes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub choice: Choice,
    pub stale: Vec<SubnetKey>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocError {
    #[error("no free subnet left between SubnetMin {min} and SubnetMax {max}: every one is leased")]
    Exhausted { min: Ipv4Addr, max: Ipv4Addr },
}

/// Chooses. `leases` is every lease listed (the unreadable ones count as taken: their subnet is
/// someone's); `public_ip` this host's address; `previous` the subnet of the previous subnet
/// file; `random` a random number (for the subnet and, for a new lease, the VtepMAC).
pub fn choose(
    cfg: &FlannelConfig,
    leases: &[(SubnetKey, Option<Lease>)],
    public_ip: Ipv4Addr,
    previous: Option<Subnet>,
    random: u64,
) -> Result<Plan, AllocError> {
    let mut stale = Vec::new();
    let mut reuse = None;
    for (key, lease) in leases {
        let Some(l) = lease.as_ref().filter(|l| l.public_ip == public_ip) else { continue };
        if cfg.compatible(&key.v4) && key.v6.is_none() && reuse.is_none() {
            // A lease of another backend (this host ran flannel's host-gw before): its subnet
            // is kept, with a new VtepMAC.
            let mac = l.vxlan.map_or_else(|| random_mac(random.rotate_left(17)), |d| d.vtep_mac);
            reuse = Some(Choice::Reuse { key: *key, mac });
        } else {
            stale.push(*key);
        }
    }
    if let Some(choice) = reuse {
        return Ok(Plan { choice, stale });
    }
    let mac = random_mac(random.rotate_left(17));
    let taken: BTreeSet<Subnet> = leases.iter().map(|(k, _)| k.v4).collect();
    let overlaps = |s: &Subnet| taken.iter().any(|t| t.covers(s) || s.covers(t));
    if let Some(p) = previous.filter(|p| cfg.compatible(p) && !overlaps(p)) {
        return Ok(Plan { choice: Choice::Create { key: SubnetKey::v4(p), mac, from_file: true }, stale });
    }
    let step = 1u64 << (32 - u32::from(cfg.subnet_len));
    let (min, max) = (u64::from(u32::from(cfg.subnet_min.addr)), u64::from(u32::from(cfg.subnet_max.addr)));
    let free: Vec<Subnet> = (min..=max)
        .step_by(step as usize)
        .map(|a| Subnet { addr: Ipv4Addr::from(a as u32), len: cfg.subnet_len })
        .filter(|s| !overlaps(s))
        .take(CANDIDATES)
        .collect();
    if free.is_empty() {
        return Err(AllocError::Exhausted { min: cfg.subnet_min.addr, max: cfg.subnet_max.addr });
    }
    let s = free[(random % free.len() as u64) as usize];
    Ok(Plan { choice: Choice::Create { key: SubnetKey::v4(s), mac, from_file: false }, stale })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> FlannelConfig {
        FlannelConfig::parse(
            format!(r#"{{"Network":"198.19.0.0/16",{extra}"Backend":{{"Type":"vxlan"}}}}"#).as_bytes(),
        )
        .unwrap()
    }
    fn key(s: &str) -> SubnetKey {
        s.parse().unwrap()
    }
    const ME: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
    const OTHER: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
    const MAC: MacAddr = MacAddr([0x0a, 0, 0, 0, 0, 1]);

    #[test]
    fn this_hosts_lease_is_reused_with_its_mac() {
        let leases = vec![
            (key("198.19.5.0-24"), Some(Lease::vxlan(OTHER, 1, MacAddr([2, 0, 0, 0, 0, 2])))),
            (key("198.19.9.0-24"), Some(Lease::vxlan(ME, 1, MAC))),
        ];
        let p = choose(&cfg(""), &leases, ME, Some("198.19.3.0/24".parse().unwrap()), 7).unwrap();
        assert_eq!(p, Plan { choice: Choice::Reuse { key: key("198.19.9.0-24"), mac: MAC }, stale: vec![] });
    }

    #[test]
    fn an_incompatible_own_lease_is_stale() {
        let leases = vec![(key("198.19.9.0-25"), Some(Lease::vxlan(ME, 1, MAC)))];
        let p = choose(&cfg(""), &leases, ME, None, 7).unwrap();
        assert_eq!(p.stale, vec![key("198.19.9.0-25")]);
        assert!(matches!(p.choice, Choice::Create { from_file: false, .. }));
        assert_ne!(
            p.choice.key().v4,
            "198.19.9.0/24".parse().unwrap(),
            "overlaps the stale one until it is gone"
        );
    }

    #[test]
    fn the_previous_subnet_if_free_else_random() {
        let prev: Subnet = "198.19.3.0/24".parse().unwrap();
        let p = choose(&cfg(""), &[], ME, Some(prev), 7).unwrap();
        assert_eq!(p.choice.key(), SubnetKey::v4(prev));
        assert!(matches!(p.choice, Choice::Create { from_file: true, .. }));
        let taken = vec![(key("198.19.3.0-24"), Some(Lease::vxlan(OTHER, 1, MAC)))];
        let p = choose(&cfg(""), &taken, ME, Some(prev), 7).unwrap();
        assert!(matches!(p.choice, Choice::Create { from_file: false, .. }));
        assert_ne!(p.choice.key().v4, prev);
        let wrong_len: Subnet = "198.19.3.0/25".parse().unwrap();
        let p = choose(&cfg(""), &[], ME, Some(wrong_len), 7).unwrap();
        assert!(matches!(p.choice, Choice::Create { from_file: false, .. }));
    }

    #[test]
    fn random_choices_stay_in_range_and_avoid_taken_subnets() {
        let c = cfg(r#""SubnetMin":"198.19.10.0","SubnetMax":"198.19.13.0","#);
        let leases: Vec<_> = ["198.19.10.0-24", "198.19.12.0-24"]
            .iter()
            .map(|k| (key(k), None)) // unreadable leases hold their subnet all the same
            .collect();
        let mut seen = BTreeSet::new();
        for r in 0..50u64 {
            let p = choose(&c, &leases, ME, None, r.wrapping_mul(0x9e37_79b9_7f4a_7c15)).unwrap();
            seen.insert(p.choice.key().to_string());
            let m = p.choice.mac();
            assert_eq!(m.0[0] & 3, 2, "a locally administered unicast MAC");
        }
        assert_eq!(seen, ["198.19.11.0-24", "198.19.13.0-24"].iter().map(|s| s.to_string()).collect());
    }

    #[test]
    fn an_exhausted_range_is_an_error() {
        let c = cfg(r#""SubnetMin":"198.19.10.0","SubnetMax":"198.19.11.0","#);
        let leases =
            vec![(key("198.19.10.0-24"), None), (key("198.19.11.0-24"), Some(Lease::vxlan(OTHER, 1, MAC)))];
        let e = choose(&c, &leases, ME, None, 1).unwrap_err();
        assert!(e.to_string().contains("no free subnet"), "{e}");
        // A larger leased block covers the smaller subnets too.
        let leases = vec![(key("198.19.8.0-21"), None)];
        assert!(choose(&c, &leases, ME, None, 1).is_err());
    }
}
