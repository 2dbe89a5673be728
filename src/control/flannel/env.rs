//! The subnet file flannel's CNI plugin reads (`/run/flannel/subnet.env`), written as flanneld
//! writes it, and read back at start for the previous subnet.

use super::subnet::Subnet;

/// What the file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetEnv {
    pub network: Subnet,
    /// This host's subnet (written as its .1, the bridge's address: `198.19.1.1/24`).
    pub subnet: Subnet,
    pub mtu: u32,
    pub ipmasq: bool,
}

impl SubnetEnv {
    pub fn render(&self) -> String {
        format!(
            "FLANNEL_NETWORK={}\nFLANNEL_SUBNET={}/{}\nFLANNEL_MTU={}\nFLANNEL_IPMASQ={}\n",
            self.network,
            self.subnet.host(1),
            self.subnet.len,
            self.mtu,
            self.ipmasq
        )
    }
}

/// The subnet of a previous file's `FLANNEL_SUBNET`, if it has a readable one.
pub fn previous_subnet(text: &str) -> Option<Subnet> {
    let v = text.lines().find_map(|l| l.trim().strip_prefix("FLANNEL_SUBNET="))?;
    let (a, l) = v.trim().split_once('/')?;
    let ip: std::net::Ipv4Addr = a.parse().ok()?;
    let len: u8 = l.parse().ok().filter(|l| *l <= 32)?;
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - u32::from(len)) };
    Subnet::new(std::net::Ipv4Addr::from(u32::from(ip) & mask), len).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_as_flanneld_does_and_read_back() {
        let e = SubnetEnv {
            network: "198.19.0.0/16".parse().unwrap(),
            subnet: "198.19.7.0/24".parse().unwrap(),
            mtu: 1450,
            ipmasq: false,
        };
        let text = e.render();
        assert_eq!(
            text,
            "FLANNEL_NETWORK=198.19.0.0/16\nFLANNEL_SUBNET=198.19.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n"
        );
        assert_eq!(previous_subnet(&text), Some(e.subnet));
        assert_eq!(previous_subnet("FLANNEL_SUBNET=nonsense\n"), None);
        assert_eq!(previous_subnet("FLANNEL_SUBNET=198.19.7.1/40\n"), None);
        assert_eq!(previous_subnet(""), None);
    }
}
