//! Routes, neighbour entries and the underlay's interface through rtnetlink (feature `etcd`,
//! for `vxtap flannel`): what flanneld's vxlan backend sets with netlink, and nothing run as
//! `ip`. One connection, driven by a task on the control thread's runtime.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{anyhow, bail, Context, Result};
use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::LinkAttribute;
use rtnetlink::packet_route::neighbour::NeighbourState;
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::RouteMessageBuilder;

use crate::control::flannel::Subnet;
use crate::wire::mac::MacAddr;

/// An interface, as the underlay of the tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// Its IPv4 addresses with their prefix lengths.
    pub addrs: Vec<(Ipv4Addr, u8)>,
}

impl Link {
    /// Whether `ip` is on one of the link's networks (DirectRouting: reachable without a router).
    pub fn on_link(&self, ip: Ipv4Addr) -> bool {
        self.addrs.iter().any(|(a, len)| {
            let mask = if *len == 0 { 0 } else { u32::MAX << (32 - u32::from(*len)) };
            u32::from(*a) & mask == u32::from(ip) & mask
        })
    }
}

/// A netlink connection.
pub struct Netlink {
    handle: rtnetlink::Handle,
}

impl Netlink {
    /// Opens the connection; its task runs on the current tokio runtime.
    pub fn new() -> Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection().context("opening a netlink socket")?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    async fn link(&self, name: Option<&str>, index: Option<u32>) -> Result<Link> {
        let mut req = self.handle.link().get();
        if let Some(n) = name {
            req = req.match_name(n.to_string());
        }
        if let Some(i) = index {
            req = req.match_index(i);
        }
        let what = || name.map_or_else(|| format!("index {}", index.unwrap_or(0)), |n| n.to_string());
        let msg = req
            .execute()
            .try_next()
            .await
            .with_context(|| format!("no interface {}", what()))?
            .ok_or_else(|| anyhow!("no interface {}", what()))?;
        let mut link = Link { index: msg.header.index, name: String::new(), mtu: 1500, addrs: Vec::new() };
        for a in msg.attributes {
            match a {
                LinkAttribute::IfName(n) => link.name = n,
                LinkAttribute::Mtu(m) => link.mtu = m,
                _ => {}
            }
        }
        link.addrs = self.v4_addresses(Some(link.index)).await?.into_iter().map(|(_, a, l)| (a, l)).collect();
        Ok(link)
    }

    /// The IPv4 addresses of interface `index` (or of every interface): (index, address, prefix).
    async fn v4_addresses(&self, index: Option<u32>) -> Result<Vec<(u32, Ipv4Addr, u8)>> {
        let mut req = self.handle.address().get();
        if let Some(i) = index {
            req = req.set_link_index_filter(i);
        }
        let mut out = Vec::new();
        let mut s = req.execute();
        while let Some(m) = s.try_next().await.context("listing addresses")? {
            let local = m.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let addr = local.or_else(|| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = addr {
                out.push((m.header.index, ip, m.header.prefix_len));
            }
        }
        Ok(out)
    }

    /// The interface of the IPv4 default route of the main table, if there is one.
    async fn default_route_link(&self) -> Result<Option<u32>> {
        let mut s = self.handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build()).execute();
        while let Some(r) = s.try_next().await.context("listing routes")? {
            let table = r
                .attributes
                .iter()
                .find_map(|a| if let RouteAttribute::Table(t) = a { Some(*t) } else { None })
                .unwrap_or(u32::from(r.header.table));
            if r.header.address_family != AddressFamily::Inet
                || r.header.destination_prefix_length != 0
                || table != 254
            {
                continue;
            }
            if let Some(oif) =
                r.attributes.iter().find_map(|a| if let RouteAttribute::Oif(i) = a { Some(*i) } else { None })
            {
                return Ok(Some(oif));
            }
        }
        Ok(None)
    }

    /// The underlay, as flanneld picks it: `--iface` if given, else the interface that holds
    /// `--public-ip`, else the interface of the default route. Also the public IP: `--public-ip`,
    /// else the interface's first IPv4 address.
    pub async fn underlay(
        &self,
        iface: Option<&str>,
        public_ip: Option<Ipv4Addr>,
    ) -> Result<(Link, Ipv4Addr)> {
        let link = match (iface, public_ip) {
            (Some(name), _) => self.link(Some(name), None).await?,
            (None, Some(ip)) => {
                let all = self.v4_addresses(None).await?;
                let index = all.iter().find(|(_, a, _)| *a == ip).map(|(i, _, _)| *i).ok_or_else(|| {
                    anyhow!("no interface has the address {ip} (--public-ip): give --iface too")
                })?;
                self.link(None, Some(index)).await?
            }
            (None, None) => {
                let index = self.default_route_link().await?.ok_or_else(|| {
                    anyhow!("no IPv4 default route to find the underlay interface by: give --iface or --public-ip")
                })?;
                self.link(None, Some(index)).await?
            }
        };
        let ip =
            match public_ip {
                Some(ip) => ip,
                None => link.addrs.first().map(|(a, _)| *a).ok_or_else(|| {
                    anyhow!("interface {} has no IPv4 address: give --public-ip", link.name)
                })?,
            };
        Ok((link, ip))
    }

    /// The index of interface `name`.
    pub async fn index_of(&self, name: &str) -> Result<u32> {
        Ok(self.link(Some(name), None).await?.index)
    }

    fn route(dst: Subnet, gw: Ipv4Addr, oif: u32, onlink: bool) -> RouteMessage {
        let b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.addr, dst.len)
            .gateway(gw)
            .output_interface(oif);
        if onlink { b.onlink() } else { b }.build()
    }

    /// `ip route replace <dst> via <gw> dev <oif> [onlink]`.
    pub async fn replace_route(&self, dst: Subnet, gw: Ipv4Addr, oif: u32, onlink: bool) -> Result<()> {
        self.handle
            .route()
            .add(Self::route(dst, gw, oif, onlink))
            .replace()
            .execute()
            .await
            .with_context(|| format!("route {dst} via {gw}"))
    }

    /// `ip route del <dst> via <gw> dev <oif>`; a route already gone is not an error.
    pub async fn del_route(&self, dst: Subnet, gw: Ipv4Addr, oif: u32, onlink: bool) -> Result<()> {
        match self.handle.route().del(Self::route(dst, gw, oif, onlink)).execute().await {
            Err(e) if gone(&e) => Ok(()),
            r => r.with_context(|| format!("deleting route {dst} via {gw}")),
        }
    }

    /// `ip neigh replace <ip> lladdr <mac> dev <oif> nud permanent`.
    pub async fn replace_neigh(&self, oif: u32, ip: Ipv4Addr, mac: MacAddr) -> Result<()> {
        self.handle
            .neighbours()
            .add(oif, IpAddr::V4(ip))
            .link_layer_address(&mac.0)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await
            .with_context(|| format!("neighbour {ip} lladdr {mac}"))
    }

    /// `ip neigh del <ip> dev <oif>`; an entry already gone is not an error.
    pub async fn del_neigh(&self, oif: u32, ip: Ipv4Addr) -> Result<()> {
        let mut req = self.handle.neighbours().add(oif, IpAddr::V4(ip));
        let msg = req.message_mut().clone();
        match self.handle.neighbours().del(msg).execute().await {
            Err(e) if gone(&e) => Ok(()),
            r => r.with_context(|| format!("deleting neighbour {ip}")),
        }
    }
}

/// Whether a delete failed because there was nothing to delete (or no device any more).
fn gone(e: &rtnetlink::Error) -> bool {
    match e {
        rtnetlink::Error::NetlinkError(m) => {
            m.code.is_some_and(|c| matches!(-c.get(), libc::ESRCH | libc::ENOENT | libc::ENODEV))
        }
        _ => false,
    }
}

/// Refuses an MTU the TAP could not have.
pub fn tap_mtu(underlay_mtu: u32, overhead: u32) -> Result<u32> {
    let mtu = underlay_mtu.saturating_sub(overhead);
    if mtu < 576 {
        bail!("the underlay's MTU {underlay_mtu} leaves {mtu} for the pods: too small");
    }
    Ok(mtu)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_link() {
        let l = Link {
            index: 1,
            name: "eth0".into(),
            mtu: 1500,
            addrs: vec![(Ipv4Addr::new(198, 18, 0, 1), 24)],
        };
        assert!(l.on_link(Ipv4Addr::new(198, 18, 0, 200)));
        assert!(!l.on_link(Ipv4Addr::new(198, 18, 1, 2)));
        assert_eq!(tap_mtu(1500, 50).unwrap(), 1450);
        assert!(tap_mtu(600, 50).is_err());
    }
}
