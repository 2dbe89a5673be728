//! The encrypted underlay: WireGuard keys as `wg` writes them, and the `[wireguard]` table of the
//! config file and the `--wg-*` flags, merged (flags win) and checked into [`Settings`].
//!
//! Keys are base64 of 32 bytes, one line (`wg genkey`, `wg pubkey`, `wg genpsk`). A file holding
//! a private or preshared key is refused when its group or others have any permission on it
//! (readable, the secret leaks; writable, it can be replaced), with the `chmod` to run; its
//! content never appears in an error.

use std::collections::HashSet;
use std::fmt;
use std::io::Read;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use boringtun::x25519;
use serde::Deserialize;

use super::network::{Encryption, NetworkConfig};

/// WireGuard's usual port, `wg`'s and vxtap's default.
pub const DEFAULT_LISTEN_PORT: u16 = 51820;
/// Length of a key: an x25519 key, or a preshared key.
pub const KEY_LEN: usize = 32;
/// Length of a key in base64: 43 characters and one '='.
pub const KEY_BASE64_LEN: usize = 44;

/// 32 bytes from base64, or why not; `what` names the key in the message. The text itself is
/// never quoted: it may be a secret.
fn decode_key(text: &str, what: &str) -> Result<[u8; KEY_LEN], String> {
    let bad = |why: &str| {
        format!(
            "{what}: {why}; a key is {KEY_BASE64_LEN} characters of base64 (32 bytes), as `wg genkey` prints"
        )
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(bad("empty"));
    }
    if text.contains(char::is_whitespace) {
        return Err(bad("more than one word or line"));
    }
    if text.len() != KEY_BASE64_LEN {
        return Err(bad(&format!("{} characters", text.chars().count())));
    }
    let bytes = STANDARD.decode(text).map_err(|_| bad("not base64"))?;
    bytes.try_into().map_err(|_| bad("not 32 bytes"))
}

/// A WireGuard public key (an x25519 point), shown in base64.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(pub [u8; KEY_LEN]);

impl FromStr for PublicKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        decode_key(s, "public key").map(PublicKey)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&STANDARD.encode(self.0))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

/// A WireGuard private key: 32 bytes, as `wg genkey` writes them. The bytes are kept as given;
/// x25519 clamps them on use, so a key and its clamped form are the same key (as in `wg`).
#[derive(Clone, PartialEq, Eq)]
pub struct PrivateKey([u8; KEY_LEN]);

impl PrivateKey {
    /// A new key from the kernel's random source, clamped as `wg genkey` clamps it
    /// (RFC 7748 §5: the low three bits cleared, the top bit cleared and the next one set).
    pub fn generate() -> Result<PrivateKey, String> {
        let mut key = [0u8; KEY_LEN];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut key))
            .map_err(|e| format!("reading /dev/urandom: {e}"))?;
        key[0] &= 248;
        key[31] = (key[31] & 127) | 64;
        Ok(PrivateKey(key))
    }

    /// Parses a key as `wg` writes it: base64, surrounding whitespace ignored.
    pub fn from_base64(text: &str) -> Result<PrivateKey, String> {
        decode_key(text, "private key").map(PrivateKey)
    }

    /// Reads a private key file, refused if group or others have any permission on it.
    pub fn read(path: &Path) -> Result<PrivateKey, String> {
        read_secret(path, "WireGuard private key").map(PrivateKey)
    }

    /// The key in base64, as `wg genkey` prints it (without the newline).
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// The public key, as `wg pubkey` derives it.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(x25519::PublicKey::from(&self.secret()).to_bytes())
    }

    /// The key as the WireGuard crate takes it.
    pub fn secret(&self) -> x25519::StaticSecret {
        x25519::StaticSecret::from(self.0)
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PrivateKey(<hidden>)")
    }
}

/// A preshared key (`wg genpsk`): 32 bytes mixed into a peer's handshake.
#[derive(Clone, PartialEq, Eq)]
pub struct PresharedKey(pub [u8; KEY_LEN]);

impl PresharedKey {
    /// Reads a preshared key file, refused if group or others have any permission on it.
    pub fn read(path: &Path) -> Result<PresharedKey, String> {
        read_secret(path, "WireGuard preshared key").map(PresharedKey)
    }
}

impl fmt::Debug for PresharedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PresharedKey(<hidden>)")
    }
}

/// The key in the file at `path`, `what` naming it in errors: the file must give its group and
/// others no permission at all, and hold one base64 key.
fn read_secret(path: &Path, what: &str) -> Result<[u8; KEY_LEN], String> {
    let p = path.display();
    let meta = std::fs::metadata(path).map_err(|e| format!("{what} {p}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{what} {p}: not a regular file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!(
            "{what} {p} is open to its group or others (mode {mode:04o}): \
             a secret must be for its owner alone; run `chmod 600 {p}`"
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| format!("{what} {p}: {e}"))?;
    decode_key(&text, &format!("{what} {p}"))
}

/// A persistent keepalive of 0 means none, as in `wg`.
fn parse_keepalive(s: &str) -> Result<Option<u16>, String> {
    match s.parse::<u32>() {
        Ok(0) => Ok(None),
        Ok(n) => u16::try_from(n)
            .map(Some)
            .map_err(|_| format!("keepalive {n}: must be 1 to 65535 seconds (0 or none: no keepalive)")),
        Err(_) => Err(format!("keepalive {s:?}: expected seconds, 1 to 65535")),
    }
}

/// A peer's endpoint: `IP:PORT` or `[IPv6]:PORT`, a unicast address and a real port. Names are
/// not resolved.
fn parse_endpoint(s: &str) -> Result<SocketAddr, String> {
    let sa: SocketAddr = s.parse().map_err(|_| {
        if s.parse::<IpAddr>().is_ok() {
            format!("endpoint {s:?} has no port: give IP:PORT, e.g. {s}:{DEFAULT_LISTEN_PORT}")
        } else {
            format!("endpoint {s:?}: expected IP:PORT or [IPv6]:PORT (names are not resolved)")
        }
    })?;
    check_endpoint(sa)?;
    Ok(sa)
}

fn check_endpoint(sa: SocketAddr) -> Result<(), String> {
    if sa.port() == 0 {
        return Err(format!("endpoint {sa}: port 0 is not a port"));
    }
    let ip = sa.ip();
    if ip.is_unspecified() || ip.is_multicast() || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
        return Err(format!("endpoint {sa}: must be a unicast address"));
    }
    Ok(())
}

/// A tunnel address: a unicast IP.
fn parse_tunnel(s: &str) -> Result<IpAddr, String> {
    let ip: IpAddr =
        s.parse().map_err(|_| format!("tunnel address {s:?}: expected an IP address, like 10.77.0.2"))?;
    check_tunnel(ip)?;
    Ok(ip)
}

fn check_tunnel(ip: IpAddr) -> Result<(), String> {
    if ip.is_unspecified() || ip.is_multicast() || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
        return Err(format!("tunnel address {ip}: must be a unicast address"));
    }
    Ok(())
}

/// One peer, as a `[[wireguard.peer]]` table or a `--wg-peer` gives it. Its preshared key file
/// is read when the settings are checked ([`WireGuardConfig::settings`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub public_key: PublicKey,
    /// Where its WireGuard listens: `IP:PORT`.
    #[serde(deserialize_with = "de_endpoint")]
    pub endpoint: SocketAddr,
    /// Its tunnel address: the VTEP address `--remote` and `--static` name, and the only source
    /// accepted from it (cryptokey routing).
    #[serde(deserialize_with = "de_tunnel")]
    pub tunnel: IpAddr,
    /// Persistent keepalive, seconds (for a peer behind NAT).
    #[serde(default, deserialize_with = "de_keepalive")]
    pub keepalive: Option<u16>,
    /// A preshared key file (`wg genpsk`), mode 600.
    pub psk: Option<PathBuf>,
}

fn de_endpoint<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    parse_endpoint(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn de_tunnel<'de, D: serde::Deserializer<'de>>(d: D) -> Result<IpAddr, D::Error> {
    parse_tunnel(&String::deserialize(d)?).map_err(serde::de::Error::custom)
}

fn de_keepalive<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let n = u64::deserialize(d)?;
    parse_keepalive(&n.to_string()).map_err(serde::de::Error::custom)
}

/// The options of `--wg-peer` after the key.
const PEER_OPTIONS: [&str; 4] = ["endpoint", "tunnel", "keepalive", "psk"];

/// The syntax of `--wg-peer`, for messages.
pub const PEER_SYNTAX: &str = "PUBKEY,endpoint=IP:PORT,tunnel=IP[,keepalive=SECS][,psk=FILE]";

impl FromStr for PeerConfig {
    type Err = String;
    /// `PUBKEY,endpoint=IP:PORT,tunnel=IP[,keepalive=SECS][,psk=FILE]`, options in any order.
    /// Errors say what is wrong without repeating the spec, which clap shows in front of them.
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.split(',');
        let key = parts.next().unwrap_or_default().trim();
        let option_first = key.split_once('=').is_some_and(|(name, _)| PEER_OPTIONS.contains(&name.trim()));
        if key.is_empty() || option_first {
            return Err(format!("the peer's public key comes first: {PEER_SYNTAX}"));
        }
        let public_key: PublicKey = key.parse()?;
        let (mut endpoint, mut tunnel, mut keepalive, mut psk) = (None, None, None, None);
        for part in parts {
            let (name, value) =
                part.split_once('=').ok_or_else(|| format!("{part:?} is not OPTION=VALUE"))?;
            let once = |set: bool| if set { Err(format!("{name} is given twice")) } else { Ok(()) };
            match name.trim() {
                "endpoint" => {
                    once(endpoint.is_some())?;
                    endpoint = Some(parse_endpoint(value)?);
                }
                "tunnel" => {
                    once(tunnel.is_some())?;
                    tunnel = Some(parse_tunnel(value)?);
                }
                "keepalive" => {
                    once(keepalive.is_some())?;
                    keepalive = Some(parse_keepalive(value)?);
                }
                "psk" => {
                    once(psk.is_some())?;
                    if value.is_empty() {
                        return Err("psk= needs a file".into());
                    }
                    psk = Some(PathBuf::from(value));
                }
                other => {
                    return Err(format!(
                        "unknown option {other:?}: the options are endpoint, tunnel, keepalive and psk"
                    ))
                }
            }
        }
        Ok(PeerConfig {
            public_key,
            endpoint: endpoint.ok_or("missing endpoint=IP:PORT")?,
            tunnel: tunnel.ok_or("missing tunnel=IP (the peer's tunnel address)")?,
            keepalive: keepalive.flatten(),
            psk,
        })
    }
}

/// The `[wireguard]` table, or what the `--wg-*` flags say; every field optional so that the
/// two merge.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireGuardConfig {
    /// This host's private key file (`wg genkey`), mode 600.
    pub private_key: Option<PathBuf>,
    pub listen_port: Option<u16>,
    /// This host's tunnel address.
    pub address: Option<IpAddr>,
    /// `[[wireguard.peer]]` tables.
    #[serde(default, rename = "peer")]
    pub peers: Vec<PeerConfig>,
}

impl WireGuardConfig {
    /// Whether anything at all is set: WireGuard is on when something is.
    pub fn is_empty(&self) -> bool {
        *self == WireGuardConfig::default()
    }

    /// `self` (the config file's table) with every field `flags` sets replaced; peers given as
    /// flags replace the file's peers.
    pub fn merged(self, flags: WireGuardConfig) -> WireGuardConfig {
        WireGuardConfig {
            private_key: flags.private_key.or(self.private_key),
            listen_port: flags.listen_port.or(self.listen_port),
            address: flags.address.or(self.address),
            peers: if flags.peers.is_empty() { self.peers } else { flags.peers },
        }
    }

    /// Reads the key files and checks everything: what is required, the families, no peer
    /// twice, no peer with this host's own key or tunnel address, no peer key that is a
    /// low-order point (boringtun does not check: its handshake would mix in an all-zero secret).
    pub fn settings(&self) -> Result<Settings, String> {
        let path = self.private_key.as_deref().ok_or(
            "WireGuard options are set but no private key: give --wg-private-key FILE \
             (private_key in [wireguard]); `vxtap genkey` makes one",
        )?;
        let address = match (self.address, self.peers.is_empty()) {
            (Some(a), false) => a,
            (None, false) => {
                return Err("WireGuard peers are given but not this host's tunnel address: \
                            give --wg-address IP (address in [wireguard])"
                    .into())
            }
            (Some(a), true) => {
                return Err(format!(
                    "--wg-address {a} is given but no WireGuard peer: add --wg-peer '{PEER_SYNTAX}' \
                     (or a [[wireguard.peer]] table)"
                ))
            }
            (None, true) => {
                return Err(format!(
                    "WireGuard needs this host's tunnel address and its peers: give --wg-address IP \
                     and --wg-peer '{PEER_SYNTAX}' (address and [[wireguard.peer]] in [wireguard])"
                ))
            }
        };
        check_tunnel(address).map_err(|e| format!("--wg-address: {e}"))?;
        let listen_port = self.listen_port.unwrap_or(DEFAULT_LISTEN_PORT);
        if listen_port == 0 {
            return Err("WireGuard listen port 0 is not a port".into());
        }
        let private_key = PrivateKey::read(path)?;
        let public_key = private_key.public_key();
        let family = |ip: &IpAddr| if ip.is_ipv6() { "IPv6" } else { "IPv4" };
        let (mut keys, mut tunnels) = (HashSet::new(), HashSet::new());
        let mut peers = Vec::with_capacity(self.peers.len());
        for p in &self.peers {
            let name = format!("WireGuard peer {}", p.public_key);
            if p.public_key == public_key {
                return Err(format!("{name} is this host's own public key"));
            }
            if !keys.insert(p.public_key) {
                return Err(format!("{name} is given twice"));
            }
            if !private_key
                .secret()
                .diffie_hellman(&x25519::PublicKey::from(p.public_key.0))
                .was_contributory()
            {
                return Err(format!(
                    "{name} is not a usable public key: a low-order point, which shares no secret with \
                     any key, so no handshake with it could be trusted"
                ));
            }
            check_tunnel(p.tunnel).map_err(|e| format!("{name}: {e}"))?;
            if p.tunnel.is_ipv6() != address.is_ipv6() {
                return Err(format!(
                    "{name}: tunnel address {} is {}, but this host's (--wg-address {address}) is {}: \
                     the tunnel is one family",
                    p.tunnel,
                    family(&p.tunnel),
                    family(&address)
                ));
            }
            if p.tunnel == address {
                return Err(format!("{name}: tunnel address {address} is this host's own (--wg-address)"));
            }
            if !tunnels.insert(p.tunnel) {
                return Err(format!("{name}: tunnel address {} belongs to another peer too", p.tunnel));
            }
            check_endpoint(p.endpoint).map_err(|e| format!("{name}: {e}"))?;
            let psk =
                p.psk.as_deref().map(PresharedKey::read).transpose().map_err(|e| format!("{name}: {e}"))?;
            peers.push(Peer {
                public_key: p.public_key,
                endpoint: p.endpoint,
                tunnel: p.tunnel,
                keepalive: p.keepalive,
                psk,
            });
        }
        Ok(Settings { private_key, public_key, listen_port, address, peers })
    }
}

/// Everything the WireGuard underlay needs, checked, its keys read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub private_key: PrivateKey,
    /// Derived from the private key: what the peers are told to expect.
    pub public_key: PublicKey,
    pub listen_port: u16,
    /// This host's tunnel address: every network's VTEP address.
    pub address: IpAddr,
    pub peers: Vec<Peer>,
}

/// One peer, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub public_key: PublicKey,
    pub endpoint: SocketAddr,
    pub tunnel: IpAddr,
    pub keepalive: Option<u16>,
    pub psk: Option<PresharedKey>,
}

impl Settings {
    /// Whether the path to some peer is IPv6: the MTU default counts its 40-byte header then.
    pub fn outer_v6(&self) -> bool {
        self.peers.iter().any(|p| p.endpoint.is_ipv6())
    }

    /// The peer whose tunnel address is `ip`.
    pub fn peer_by_tunnel(&self, ip: IpAddr) -> Option<&Peer> {
        self.peers.iter().find(|p| p.tunnel == ip)
    }

    /// Checks `networks` against these settings and sets each one's [`Encryption`], which its
    /// MTU default and overhead follow: no multicast group; `--local`, if given, is the tunnel
    /// address; every `--remote` and `--static` is a peer's tunnel address; no network port is
    /// the WireGuard port.
    pub fn apply(&self, networks: &mut [NetworkConfig]) -> Result<(), String> {
        for n in networks.iter_mut() {
            let net = format!("network {} (vni {})", n.dev, n.vni);
            if let Some(g) = n.group {
                return Err(format!(
                    "{net}: multicast group mode (--group {g}) and WireGuard cannot go together: \
                     WireGuard carries unicast to known peers; name the peers' tunnel addresses with --remote"
                ));
            }
            if let Some(local) = n.local.filter(|l| *l != self.address) {
                return Err(format!(
                    "{net}: --local {local} is not the WireGuard tunnel address {}: over WireGuard a VTEP \
                     sends from --wg-address (leave --local out)",
                    self.address
                ));
            }
            let not_a_peer = |what: &str, ip: IpAddr| {
                format!(
                    "{net}: {what} {ip} is not the tunnel address of any WireGuard peer: over WireGuard, \
                     --remote and --static name peers' tunnel addresses (--wg-peer ...,tunnel=IP)"
                )
            };
            if let Some(r) = n.remotes.iter().find(|r| self.peer_by_tunnel(r.ip).is_none()) {
                return Err(not_a_peer("remote", r.ip));
            }
            if let Some(s) = n.statics.iter().find(|s| self.peer_by_tunnel(s.dst.ip).is_none()) {
                return Err(not_a_peer("static entry", s.dst.ip));
            }
            if n.port() == self.listen_port {
                return Err(format!(
                    "{net}: its {} port {} is the WireGuard listen port: choose another --wg-listen-port",
                    n.proto,
                    n.port()
                ));
            }
            n.encryption = Encryption::WireGuard { address: self.address, outer_v6: self.outer_v6() };
            n.check()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// RFC 7748 §6.1: Alice's private key and its public key (what `wg pubkey` prints for it).
    const ALICE: &str = "dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=";
    const ALICE_PUB: &str = "hSDwCYkwp1R0i33ctD73Wg2/Og0mOBr066SpjqqbTmo=";
    /// Bob's public key, from the same section.
    const BOB_PUB: &str = "3p7bfXt9wbTTW2HC7OQ1Nz+DQ8hbeGdNrfx+FG+IK08=";

    /// A directory of key files for one test, removed with everything in it when dropped.
    struct Files(PathBuf);

    impl Files {
        fn new(test: &str) -> Files {
            let dir = std::env::temp_dir().join(format!("vxtap-wg-{test}-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            Files(dir)
        }

        /// A new file holding `text`, with `mode`.
        fn key(&self, text: &str, mode: u32) -> PathBuf {
            static N: AtomicUsize = AtomicUsize::new(0);
            let path = self.0.join(format!("key{}", N.fetch_add(1, Ordering::Relaxed)));
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path
        }
    }

    impl Drop for Files {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn keys_are_rfc_7748() {
        let alice = PrivateKey::from_base64(ALICE).unwrap();
        assert_eq!(alice.public_key().to_string(), ALICE_PUB);
        assert_eq!(alice.to_base64(), ALICE);
        assert_eq!(format!("{alice:?}"), "PrivateKey(<hidden>)");
        let bob: PublicKey = BOB_PUB.parse().unwrap();
        assert_eq!(bob.to_string(), BOB_PUB);
        assert_eq!(bob.0[..4], [0xde, 0x9e, 0xdb, 0x7d]);
        // Clamping is x25519's on use: an unclamped key and its clamped form are one key.
        let mut clamped = *alice.as_bytes();
        clamped[0] &= 248;
        clamped[31] = (clamped[31] & 127) | 64;
        assert_ne!(&clamped, alice.as_bytes(), "Alice's key is not clamped");
        assert_eq!(PrivateKey(clamped).public_key(), alice.public_key());
    }

    #[test]
    fn generated_keys_are_clamped_and_distinct() {
        let (a, b) = (PrivateKey::generate().unwrap(), PrivateKey::generate().unwrap());
        assert_ne!(a, b);
        for k in [&a, &b] {
            let bytes = k.as_bytes();
            assert_eq!((bytes[0] & 7, bytes[31] & 0xc0), (0, 0x40), "clamped as wg genkey does");
            assert_eq!(PrivateKey::from_base64(&k.to_base64()).unwrap(), *k);
        }
    }

    #[test]
    fn bad_keys_say_why_without_quoting_them() {
        for (text, why) in [
            ("", "empty"),
            ("   \n", "empty"),
            ("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo", "43 characters"),
            ("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo==", "45 characters"),
            ("dwdtCnMYpX08FsFyUbJmRd9M L4frwJkqsXf7pR25LCo=", "more than one word"),
            ("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LC!=", "not base64"),
            // The last character's low bits must be zero (canonical base64, as wg requires).
            ("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCp=", "not base64"),
            ("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=\nx", "more than one word"),
        ] {
            let e = PrivateKey::from_base64(text).unwrap_err();
            assert!(e.starts_with("private key: ") && e.contains(why), "{text:?}: {e}");
            assert!(e.contains("wg genkey"), "says what a key looks like: {e}");
            assert!(!e.contains("dwdtCnMY"), "never quotes the key: {e}");
        }
        assert!(PrivateKey::from_base64(&format!("  {ALICE}\n")).is_ok(), "surrounding space ignored");
        assert!("hSDw".parse::<PublicKey>().unwrap_err().starts_with("public key: 4 characters"));
    }

    #[test]
    fn key_files_must_be_for_their_owner_alone() {
        let files = Files::new("modes");
        let secret_file = |text: &str, mode| files.key(text, mode);
        let good = secret_file(&format!("{ALICE}\n"), 0o600);
        assert_eq!(PrivateKey::read(&good).unwrap().public_key().to_string(), ALICE_PUB);
        assert!(PrivateKey::read(&secret_file(ALICE, 0o400)).is_ok(), "read-only is fine");
        for mode in [0o640, 0o604, 0o620, 0o602, 0o644, 0o660, 0o666] {
            let f = secret_file(ALICE, mode);
            let e = PrivateKey::read(&f).unwrap_err();
            assert!(e.contains(&f.display().to_string()), "names the file: {e}");
            assert!(e.contains(&format!("mode {mode:04o}")), "{e}");
            assert!(e.contains(&format!("chmod 600 {}", f.display())), "says what to run: {e}");
            assert!(PresharedKey::read(&f).unwrap_err().starts_with("WireGuard preshared key"));
        }
        let e = PrivateKey::read(&secret_file("not a key\n", 0o600)).unwrap_err();
        assert!(e.contains("more than one word") && !e.contains("not a key"), "{e}");
        let e = PrivateKey::read(Path::new("/nonexistent/vxtap.key")).unwrap_err();
        assert!(e.starts_with("WireGuard private key /nonexistent/vxtap.key: "), "{e}");
        assert!(PrivateKey::read(&std::env::temp_dir()).unwrap_err().contains("not a regular file"));
    }

    #[test]
    fn peer_specs() {
        let p: PeerConfig = format!("{BOB_PUB},endpoint=198.18.0.2:51820,tunnel=10.77.0.2").parse().unwrap();
        assert_eq!(
            p,
            PeerConfig {
                public_key: BOB_PUB.parse().unwrap(),
                endpoint: "198.18.0.2:51820".parse().unwrap(),
                tunnel: "10.77.0.2".parse().unwrap(),
                keepalive: None,
                psk: None,
            }
        );
        let p: PeerConfig = format!(
            "{BOB_PUB},psk=/etc/vxtap/b.psk,keepalive=25,tunnel=fd77::2,endpoint=[2001:db8::2]:51821"
        )
        .parse()
        .unwrap();
        assert_eq!((p.keepalive, p.psk.as_deref()), (Some(25), Some(Path::new("/etc/vxtap/b.psk"))));
        assert_eq!((p.endpoint.port(), p.tunnel.is_ipv6()), (51821, true));
        let p: PeerConfig =
            format!("{BOB_PUB},endpoint=198.18.0.2:1,tunnel=10.77.0.2,keepalive=0").parse().unwrap();
        assert_eq!(p.keepalive, None, "0 is none, as in wg");
        let ok = format!("{BOB_PUB},endpoint=198.18.0.2:51820,tunnel=10.77.0.2");
        for (spec, why) in [
            (String::new(), "public key comes first"),
            ("endpoint=198.18.0.2:51820".into(), "public key comes first"),
            (format!("{}{}", &BOB_PUB[..40], ",tunnel=10.77.0.2"), "public key: 40 characters"),
            (format!("{BOB_PUB},tunnel=10.77.0.2"), "missing endpoint"),
            (format!("{BOB_PUB},endpoint=198.18.0.2:51820"), "missing tunnel"),
            (format!("{BOB_PUB},endpoint=198.18.0.2,tunnel=10.77.0.2"), "has no port"),
            (format!("{BOB_PUB},endpoint=peer.example:51820,tunnel=10.77.0.2"), "names are not resolved"),
            (format!("{BOB_PUB},endpoint=198.18.0.2:0,tunnel=10.77.0.2"), "port 0"),
            (format!("{BOB_PUB},endpoint=0.0.0.0:1,tunnel=10.77.0.2"), "unicast"),
            (format!("{BOB_PUB},endpoint=198.18.0.2:1,tunnel=10.77.0"), "tunnel address \"10.77.0\""),
            (format!("{BOB_PUB},endpoint=198.18.0.2:1,tunnel=224.0.0.1"), "unicast"),
            (format!("{BOB_PUB},endpoint=198.18.0.2:1,tunnel=255.255.255.255"), "unicast"),
            (format!("{ok},keepalive=65536"), "1 to 65535"),
            (format!("{ok},keepalive=-1"), "keepalive \"-1\""),
            (format!("{ok},keepalive=soon"), "expected seconds"),
            (format!("{ok},psk="), "needs a file"),
            (format!("{ok},mtu=1400"), "unknown option \"mtu\""),
            (format!("{ok},tunnel=10.77.0.3"), "tunnel is given twice"),
            (format!("{ok},keepalive"), "not OPTION=VALUE"),
        ] {
            let e = spec.parse::<PeerConfig>().unwrap_err();
            assert!(e.contains(why), "{spec:?}: {e}");
        }
    }

    fn config(files: &Files, peers: &[&str]) -> WireGuardConfig {
        WireGuardConfig {
            private_key: Some(files.key(ALICE, 0o600)),
            listen_port: None,
            address: Some("10.77.0.1".parse().unwrap()),
            peers: peers.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    fn peer(key: &str, endpoint: &str, tunnel: &str) -> String {
        format!("{key},endpoint={endpoint},tunnel={tunnel}")
    }

    #[test]
    fn settings_read_the_keys_and_fill_in_defaults() {
        let files = Files::new("settings");
        let config = |peers: &[&str]| config(&files, peers);
        let psk = files.key("FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE=\n", 0o600);
        let bob = format!("{},psk={}", peer(BOB_PUB, "198.18.0.2:51820", "10.77.0.2"), psk.display());
        let s = config(&[&bob]).settings().unwrap();
        assert_eq!((s.listen_port, s.public_key.to_string()), (DEFAULT_LISTEN_PORT, ALICE_PUB.to_string()));
        assert_eq!(s.peers[0].psk.as_ref().map(|k| k.0[0]), Some(0x16));
        assert!(!s.outer_v6());
        assert!(!format!("{s:?}").contains("Fp") && !format!("{s:?}").contains("dwdt"), "secrets hidden");
        assert_eq!(s.peer_by_tunnel("10.77.0.2".parse().unwrap()).map(|p| p.endpoint.port()), Some(51820));
        let v6 = peer(BOB_PUB, "[2001:db8::2]:51820", "10.77.0.2");
        assert!(config(&[&v6]).settings().unwrap().outer_v6(), "IPv4 inside IPv6");
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        let files = Files::new("bad-settings");
        let config = |peers: &[&str]| config(&files, peers);
        let secret_file = |text: &str, mode| files.key(text, mode);
        let bob = peer(BOB_PUB, "198.18.0.2:51820", "10.77.0.2");
        let err = |c: WireGuardConfig| c.settings().unwrap_err();
        assert!(err(WireGuardConfig { private_key: None, ..config(&[&bob]) }).contains("--wg-private-key"));
        assert!(err(WireGuardConfig { address: None, ..config(&[&bob]) }).contains("give --wg-address"));
        assert!(err(config(&[])).contains("no WireGuard peer"));
        let only_key = WireGuardConfig { address: None, ..config(&[]) };
        assert!(err(only_key).contains("--wg-address IP and --wg-peer"));
        assert!(err(WireGuardConfig { listen_port: Some(0), ..config(&[&bob]) }).contains("port 0"));
        let open = WireGuardConfig { private_key: Some(secret_file(ALICE, 0o644)), ..config(&[&bob]) };
        assert!(err(open).contains("chmod 600"));
        let v6 = WireGuardConfig { address: Some("fd77::1".parse().unwrap()), ..config(&[&bob]) };
        assert!(err(v6).contains("is IPv4, but this host's (--wg-address fd77::1) is IPv6"));
        // The all-zero point (and the other low-order points) share no secret with any key.
        let zero = peer("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "198.18.0.2:51820", "10.77.0.2");
        assert!(err(config(&[&zero])).contains("not a usable public key: a low-order point"));
        let own_key = peer(ALICE_PUB, "198.18.0.2:51820", "10.77.0.2");
        assert!(err(config(&[&own_key])).contains("this host's own public key"));
        let own_tunnel = peer(BOB_PUB, "198.18.0.2:51820", "10.77.0.1");
        assert!(err(config(&[&own_tunnel])).contains("is this host's own"));
        let carol = "CKNCsONvaiy0ywaBT5GtrAZyZZasYhYiHgV4UUBDcmc=";
        let same_key = peer(BOB_PUB, "198.18.0.3:51820", "10.77.0.3");
        assert!(err(config(&[&bob, &same_key])).contains("given twice"));
        let same_tunnel = peer(carol, "198.18.0.3:51820", "10.77.0.2");
        assert!(err(config(&[&bob, &same_tunnel])).contains("belongs to another peer"));
        assert!(config(&[&bob, &peer(carol, "198.18.0.3:51820", "10.77.0.3")]).settings().is_ok());
        let psk = |mode| {
            format!(
                "{bob},psk={}",
                secret_file("FpCyhws9cxwWoV4xELtfJvjJN+zQVRPISllRWgeopVE=", mode).display()
            )
        };
        assert!(err(config(&[&psk(0o640)]))
            .contains(&format!("WireGuard peer {BOB_PUB}: WireGuard preshared key")));
        assert!(err(config(&[&format!("{bob},psk=/nonexistent.psk")])).contains("/nonexistent.psk"));
        let bad_address = WireGuardConfig { address: Some("224.0.0.1".parse().unwrap()), ..config(&[&bob]) };
        assert!(err(bad_address).contains("--wg-address: tunnel address 224.0.0.1: must be a unicast"));
    }

    #[test]
    fn file_table_and_flags_merge() {
        let file: WireGuardConfig = toml::from_str(&format!(
            "private_key = \"/etc/vxtap/wg.key\"\nlisten_port = 51000\naddress = \"10.77.0.1\"\n\
             [[peer]]\npublic_key = \"{BOB_PUB}\"\nendpoint = \"198.18.0.2:51820\"\ntunnel = \"10.77.0.2\"\nkeepalive = 25\n"
        ))
        .unwrap();
        assert_eq!(
            file.peers[0],
            format!("{},keepalive=25", peer(BOB_PUB, "198.18.0.2:51820", "10.77.0.2")).parse().unwrap()
        );
        let flags = WireGuardConfig { listen_port: Some(51001), ..WireGuardConfig::default() };
        let m = file.clone().merged(flags);
        assert_eq!(
            (m.listen_port, m.address, m.peers.len()),
            (Some(51001), file.address, 1),
            "the file fills in"
        );
        let carol: PeerConfig =
            peer("CKNCsONvaiy0ywaBT5GtrAZyZZasYhYiHgV4UUBDcmc=", "198.18.0.3:1", "10.77.0.3")
                .parse()
                .unwrap();
        let m =
            file.clone().merged(WireGuardConfig { peers: vec![carol.clone()], ..WireGuardConfig::default() });
        assert_eq!(m.peers, [carol], "flag peers replace the file's");
        assert!(WireGuardConfig::default().is_empty() && !file.is_empty());
        let table =
            format!("public_key = \"{BOB_PUB}\"\nendpoint = \"198.18.0.2:1\"\ntunnel = \"10.77.0.2\"");
        assert!(toml::from_str::<PeerConfig>(&table).is_ok());
        for (bad, why) in [
            ("endpoint = \"198.18.0.2\"", "has no port"),
            ("tunnel = \"x\"", "tunnel address \"x\""),
            ("keepalive = 70000", "1 to 65535"),
            ("public_key = \"AAAA\"", "public key: 4 characters"),
            ("mtu = 1400", "unknown field `mtu`"),
        ] {
            let key = bad.split(' ').next().unwrap();
            let rest: Vec<&str> = table.lines().filter(|l| !l.starts_with(key)).collect();
            let e = toml::from_str::<PeerConfig>(&format!("{}\n{bad}\n", rest.join("\n"))).unwrap_err();
            assert!(e.message().contains(why), "{bad}: {}", e.message());
        }
        let e = toml::from_str::<PeerConfig>(&format!("public_key = \"{BOB_PUB}\"")).unwrap_err();
        assert!(e.message().contains("missing field `endpoint`"), "{}", e.message());
    }

    #[test]
    fn networks_over_wireguard() {
        use crate::config::values::StaticEntry;
        use crate::wire::Proto;
        let files = Files::new("networks");
        let carol = "CKNCsONvaiy0ywaBT5GtrAZyZZasYhYiHgV4UUBDcmc=";
        let settings = |address: &str, endpoint: &str, tunnel_prefix: &str| {
            let bob = peer(BOB_PUB, &format!("{endpoint}:51820"), &format!("{tunnel_prefix}2"));
            let carol = peer(carol, "198.18.0.3:51820", &format!("{tunnel_prefix}3"));
            let c = WireGuardConfig {
                address: Some(address.parse().unwrap()),
                ..config(&files, &[&bob, &carol])
            };
            c.settings().unwrap()
        };
        let v4 = settings("10.77.0.1", "198.18.0.2", "10.77.0.");
        let net = |remote: &str| {
            let mut n = NetworkConfig::new("vxt0", 42);
            n.remotes.push(remote.parse().unwrap());
            n
        };
        let mut nets = vec![net("10.77.0.2"), net("10.77.0.3")];
        nets[1].proto = Proto::Geneve;
        assert_eq!((nets[0].mtu(), nets[1].mtu()), (1450, 1450), "in clear");
        v4.apply(&mut nets).unwrap();
        let address = "10.77.0.1".parse().unwrap();
        assert_eq!(nets[0].encryption, Encryption::WireGuard { address, outer_v6: false });
        // 1500 - 20 - 8 - 32 (WireGuard) - 20 - 8 - 8 (VXLAN or Geneve) - 14.
        assert_eq!((nets[0].mtu(), nets[1].mtu()), (1390, 1390));
        assert_eq!(nets[0].overhead(), 110);
        // IPv6 outside (one endpoint is enough), inside, or both.
        let mut n = vec![net("10.77.0.2")];
        settings("10.77.0.1", "[2001:db8::2]", "10.77.0.").apply(&mut n).unwrap();
        assert_eq!(n[0].mtu(), 1370);
        let mut n = vec![net("fd77::2")];
        settings("fd77::1", "198.18.0.2", "fd77::").apply(&mut n).unwrap();
        assert_eq!(n[0].mtu(), 1370);
        let mut n = vec![net("fd77::2")];
        settings("fd77::1", "[2001:db8::2]", "fd77::").apply(&mut n).unwrap();
        assert_eq!(n[0].mtu(), 1350);
        // The tunnel family decides even with no remote to tell it.
        let mut n = vec![NetworkConfig::new("vxt0", 42)];
        settings("fd77::1", "198.18.0.2", "fd77::").apply(&mut n).unwrap();
        assert!(n[0].underlay_v6());
        assert_eq!(n[0].mtu(), 1370);
        // --local may name the tunnel address; an explicit MTU is kept, if it fits.
        let mut n = vec![net("10.77.0.2")];
        n[0].local = Some(address);
        n[0].mtu = Some(1300);
        v4.apply(&mut n).unwrap();
        assert_eq!(n[0].mtu(), 1300);
        let apply = |n: NetworkConfig| v4.apply(&mut [n]).unwrap_err();
        let mut big = net("10.77.0.2");
        big.mtu = Some(65_450);
        assert!(apply(big).contains("MTU 65450 is outside 68..=65425"), "the bound counts WireGuard");
        let mut group = net("10.77.0.2");
        group.group = Some("239.1.1.1".parse().unwrap());
        group.allow_from.push("any".parse().unwrap());
        assert!(apply(group).contains("multicast group mode (--group 239.1.1.1) and WireGuard"));
        let mut local = net("10.77.0.2");
        local.local = Some("198.18.0.1".parse().unwrap());
        assert!(apply(local).contains("--local 198.18.0.1 is not the WireGuard tunnel address 10.77.0.1"));
        let e = apply(net("198.18.0.2"));
        assert!(
            e.contains("network vxt0 (vni 42): remote 198.18.0.2 is not the tunnel address of any"),
            "{e}"
        );
        let mut stat = net("10.77.0.2");
        stat.statics.push("02:00:00:00:00:09=10.77.0.9".parse::<StaticEntry>().unwrap());
        assert!(apply(stat).contains("static entry 10.77.0.9 is not the tunnel address"));
        let mut port = net("10.77.0.2");
        port.port = Some(DEFAULT_LISTEN_PORT);
        assert!(apply(port).contains("its vxlan port 51820 is the WireGuard listen port"));
    }
}
