//! A lease's value, flannel's `LeaseAttrs`:
//!
//! ```json
//! {"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"vxlan",
//!  "BackendData":{"VNI":1,"VtepMAC":"0a:1b:2c:3d:4e:5f"}}
//! ```

use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::config::{get, get_str, get_uint};
use crate::wire::mac::MacAddr;

/// What a lease says, as far as vxtap uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The host's underlay address: where its VTEP is.
    pub public_ip: Ipv4Addr,
    /// `BackendType`, lower case ("vxlan", "host-gw", "udp", ...).
    pub backend: String,
    /// The vxlan backend's data, when the backend is vxlan and it was readable.
    pub vxlan: Option<VxlanData>,
}

/// `BackendData` of the vxlan backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VxlanData {
    pub vni: u32,
    /// The MAC of the host's `flannel.<VNI>` device.
    pub vtep_mac: MacAddr,
}

impl Lease {
    /// This host's lease for the vxlan backend.
    pub fn vxlan(public_ip: Ipv4Addr, vni: u32, vtep_mac: MacAddr) -> Lease {
        Lease { public_ip, backend: "vxlan".into(), vxlan: Some(VxlanData { vni, vtep_mac }) }
    }

    /// Parses a lease value. A vxlan lease must carry a VtepMAC that is a unicast MAC; a lease of
    /// another backend only needs its PublicIP and BackendType.
    pub fn parse(bytes: &[u8]) -> Result<Lease, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(o) = v else { return Err("not a JSON object".into()) };
        let ip = get_str(&o, "PublicIP")?.ok_or("no PublicIP")?;
        let public_ip: Ipv4Addr =
            ip.parse().map_err(|_| format!("PublicIP {ip:?} is not an IPv4 address"))?;
        if public_ip.is_unspecified() || public_ip.is_broadcast() || public_ip.is_multicast() {
            return Err(format!("PublicIP {public_ip} is not a unicast address"));
        }
        // flannel omits BackendType for the udp backend's leases.
        let backend = get_str(&o, "BackendType")?.unwrap_or("udp").to_ascii_lowercase();
        let vxlan = if backend == "vxlan" {
            let data = match get(&o, "BackendData") {
                Some(Value::Object(d)) => d,
                _ => return Err("a vxlan lease without BackendData".into()),
            };
            let vni = get_uint(data, "VNI")?.unwrap_or(0);
            let vni = u32::try_from(vni)
                .ok()
                .filter(|v| *v < 1 << 24)
                .ok_or(format!("VNI {vni} is over 24 bits"))?;
            let mac = get_str(data, "VtepMAC")?.ok_or("a vxlan lease without VtepMAC")?;
            let vtep_mac: MacAddr =
                mac.parse().map_err(|_| format!("VtepMAC {mac:?} is not a MAC address"))?;
            if vtep_mac.is_multicast() || vtep_mac.is_zero() {
                return Err(format!("VtepMAC {vtep_mac} is not a unicast MAC"));
            }
            Some(VxlanData { vni, vtep_mac })
        } else {
            None
        };
        Ok(Lease { public_ip, backend, vxlan })
    }

    /// The value as flanneld writes it (vxlan leases only; others are never written by vxtap).
    pub fn to_json(&self) -> String {
        let data = self.vxlan.map(|d| json!({"VNI": d.vni, "VtepMAC": d.vtep_mac.to_string()}));
        json!({
            "PublicIP": self.public_ip.to_string(),
            "PublicIPv6": null,
            "BackendType": self.backend,
            "BackendData": data,
        })
        .to_string()
    }
}

/// A random locally administered unicast MAC from `random` (the VtepMAC of a first lease).
pub fn random_mac(random: u64) -> MacAddr {
    let b = random.to_be_bytes();
    let mut m = [b[2], b[3], b[4], b[5], b[6], b[7]];
    m[0] = (m[0] & 0xfc) | 0x02;
    if m[1..].iter().all(|x| *x == 0) {
        m[5] = 1;
    }
    MacAddr(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f]);

    #[test]
    fn round_trip_as_flannel_writes_it() {
        let l = Lease::vxlan(Ipv4Addr::new(198, 18, 0, 1), 1, MAC);
        assert_eq!(
            l.to_json(),
            r#"{"PublicIP":"198.18.0.1","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"0a:1b:2c:3d:4e:5f"}}"#
        );
        assert_eq!(Lease::parse(l.to_json().as_bytes()), Ok(l));
        // As flanneld writes it (a kernel node), keys in any case.
        let k = Lease::parse(
            br#"{"PublicIP":"198.18.0.2","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"66:0E:AB:01:02:03"}}"#,
        )
        .unwrap();
        assert_eq!(k.vxlan.unwrap().vtep_mac, MacAddr([0x66, 0x0e, 0xab, 1, 2, 3]));
        let k = Lease::parse(br#"{"publicip":"198.18.0.2","backendtype":"VXLAN","backenddata":{"vni":1,"vtepmac":"66:0e:ab:01:02:03"}}"#);
        assert_eq!(k.unwrap().backend, "vxlan");
    }

    #[test]
    fn other_backends_parse_without_data() {
        let l = Lease::parse(br#"{"PublicIP":"198.18.0.3","BackendType":"host-gw"}"#).unwrap();
        assert_eq!((l.backend.as_str(), l.vxlan), ("host-gw", None));
        let u = Lease::parse(br#"{"PublicIP":"198.18.0.3"}"#).unwrap();
        assert_eq!(u.backend, "udp");
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            &b"not json"[..],
            b"[]",
            b"{}",
            br#"{"PublicIP":"nowhere","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}}"#,
            br#"{"PublicIP":"0.0.0.0","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}}"#,
            br#"{"PublicIP":"198.18.0.1","BackendType":"vxlan"}"#,
            br#"{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VNI":1}}"#,
            br#"{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"zz"}}"#,
            br#"{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"01:00:5e:00:00:01"}}"#,
            br#"{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"00:00:00:00:00:00"}}"#,
            br#"{"PublicIP":"198.18.0.1","BackendType":"vxlan","BackendData":{"VNI":99999999,"VtepMAC":"02:00:00:00:00:01"}}"#,
            br#"{"PublicIP":"198.18.0.1","BackendType":7}"#,
        ] {
            assert!(Lease::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn random_macs_are_local_unicast() {
        for r in [0u64, u64::MAX, 0x0123_4567_89ab_cdef] {
            let m = random_mac(r);
            assert_eq!(m.0[0] & 0x03, 0x02, "{m}");
            assert!(!m.is_zero());
        }
        assert_ne!(random_mac(1), random_mac(2));
    }
}
