//! How to reach the cluster: the `[etcd]` table of the config file and the `--etcd*` flags,
//! merged (flags win) and checked into [`Settings`].

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// Default key prefix.
pub const DEFAULT_PREFIX: &str = "/vxtap/v1";
/// Default lease time to live: a crashed member is dropped this long after its last keep-alive.
pub const DEFAULT_TTL: u64 = 15;
/// Shortest lease etcd grants (with its default 1 s election timeout it rounds 1 up to 2).
pub const MIN_TTL: u64 = 2;
pub const MAX_TTL: u64 = 3600;
/// Where the password comes from when it is not in the config file (never a flag: flags show
/// in `ps`).
pub const PASSWORD_ENV: &str = "VXTAP_ETCD_PASSWORD";

/// Longest node name: a DNS name's label rules, and short enough to log.
pub const MAX_NODE_LEN: usize = 64;

/// Checks a node name: 1 to [`MAX_NODE_LEN`] characters of ASCII letters, digits, '.', '-' and
/// '_' (a host name fits), so that it is one key segment and safe in logs.
pub fn check_node(node: &str) -> Result<(), String> {
    if node.is_empty() || node.len() > MAX_NODE_LEN {
        return Err(format!("node name {node:?} must be 1 to {MAX_NODE_LEN} characters"));
    }
    if let Some(c) = node.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))) {
        return Err(format!("node name {node:?} has {c:?}: use letters, digits, '.', '-' and '_'"));
    }
    if node == "." || node == ".." {
        return Err(format!("node name {node:?} is not a name"));
    }
    Ok(())
}

/// The `[etcd]` table, or what the flags say; every field optional so that the two merge.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    #[serde(default)]
    pub endpoints: Vec<String>,
    pub prefix: Option<String>,
    pub node: Option<String>,
    pub ttl: Option<u64>,
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("node", &self.node)
            .field("ttl", &self.ttl)
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .finish()
    }
}

impl EtcdConfig {
    /// Whether anything at all is set.
    pub fn is_empty(&self) -> bool {
        *self == EtcdConfig::default()
    }

    /// `self` (the config file's table) with every field `flags` sets replaced.
    pub fn merged(self, flags: EtcdConfig) -> EtcdConfig {
        EtcdConfig {
            endpoints: if flags.endpoints.is_empty() { self.endpoints } else { flags.endpoints },
            prefix: flags.prefix.or(self.prefix),
            node: flags.node.or(self.node),
            ttl: flags.ttl.or(self.ttl),
            ca: flags.ca.or(self.ca),
            cert: flags.cert.or(self.cert),
            key: flags.key.or(self.key),
            user: flags.user.or(self.user),
            password: flags.password.or(self.password),
        }
    }

    /// Checks everything and fills in the defaults: `env_password` is [`PASSWORD_ENV`]'s value,
    /// `hostname` the default node name.
    pub fn settings(&self, env_password: Option<String>, hostname: &str) -> Result<Settings, String> {
        if self.endpoints.is_empty() {
            return Err(
                "etcd options are set but no endpoint: give --etcd URL (or endpoints in [etcd])".into()
            );
        }
        let tls = match (&self.ca, &self.cert, &self.key) {
            (None, None, None) => None,
            (Some(ca), cert, key) => {
                if cert.is_some() != key.is_some() {
                    return Err(
                        "etcd TLS: a client certificate needs its key, and a key its certificate".into()
                    );
                }
                Some(Tls { ca: ca.clone(), cert: cert.clone(), key: key.clone() })
            }
            (None, _, _) => return Err("etcd TLS: a client certificate needs the CA (--etcd-ca) too".into()),
        };
        let endpoints =
            self.endpoints.iter().map(|e| check_endpoint(e, tls.is_some())).collect::<Result<Vec<_>, _>>()?;
        let prefix = check_prefix(self.prefix.as_deref().unwrap_or(DEFAULT_PREFIX))?;
        let node = self.node.clone().unwrap_or_else(|| hostname.to_string());
        check_node(&node).map_err(|e| format!("{e} (set another with --node)"))?;
        let ttl = self.ttl.unwrap_or(DEFAULT_TTL);
        if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
            return Err(format!(
                "etcd ttl {ttl} s: must be {MIN_TTL} to {MAX_TTL} s (etcd grants no shorter lease)"
            ));
        }
        let password = self.password.clone().or(env_password);
        let auth = match (&self.user, password) {
            (None, None) => None,
            (Some(u), Some(p)) => Some(Auth { user: u.clone(), password: p }),
            (Some(_), None) => {
                return Err(format!(
                    "etcd user set without a password: set password in [etcd] or {PASSWORD_ENV}"
                ))
            }
            (None, Some(_)) => {
                return Err("etcd password set without a user (--etcd-user or user in [etcd])".into())
            }
        };
        Ok(Settings { endpoints, prefix, node, ttl, tls, auth })
    }
}

/// Everything the cluster task needs to know, checked.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    /// `http://HOST:PORT` or `https://HOST:PORT`.
    pub endpoints: Vec<String>,
    /// Without a trailing '/'.
    pub prefix: String,
    pub node: String,
    /// Lease time to live, seconds.
    pub ttl: u64,
    pub tls: Option<Tls>,
    pub auth: Option<Auth>,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("node", &self.node)
            .field("ttl", &self.ttl)
            .field("tls", &self.tls)
            .field("user", &self.auth.as_ref().map(|a| &a.user))
            .finish()
    }
}

/// TLS towards etcd: the CA that signed its certificate, and our client certificate if it asks
/// for one (PEM files).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// etcd user and password (etcd's own authentication).
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    pub user: String,
    pub password: String,
}

/// `http://HOST:PORT`, `https://HOST:PORT` (HOST a name, an IPv4 or a bracketed IPv6 address),
/// or `HOST:PORT` (http, or https when TLS is configured); no path, query or user part.
fn check_endpoint(e: &str, tls: bool) -> Result<String, String> {
    let bad = |why: &str| format!("etcd endpoint {e:?}: {why}");
    let (scheme, rest) = match e.split_once("://") {
        Some((s, r)) => (s.to_ascii_lowercase(), r),
        None => ((if tls { "https" } else { "http" }).to_string(), e),
    };
    if scheme != "http" && scheme != "https" {
        return Err(bad("the scheme must be http or https"));
    }
    if (scheme == "https") != tls {
        return Err(bad(if tls {
            "TLS options (--etcd-ca...) need https:// endpoints"
        } else {
            "https needs the CA that signed etcd's certificate (--etcd-ca)"
        }));
    }
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#', '@']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("expected HOST:PORT, without a path, query or user"));
    }
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("a port is required, like :2379"))?;
    let port: u16 =
        port.parse().ok().filter(|p| *p != 0).ok_or_else(|| bad("the port must be 1 to 65535"))?;
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty() && host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    if !host_ok {
        return Err(bad("bad host (an IPv6 address goes in brackets: http://[2001:db8::1]:2379)"));
    }
    Ok(format!("{scheme}://{host}:{port}"))
}

/// An absolute key prefix: starts with '/', no empty segment, no trailing '/' kept.
fn check_prefix(p: &str) -> Result<String, String> {
    let trimmed = p.strip_suffix('/').unwrap_or(p);
    if !trimmed.starts_with('/') || trimmed.len() < 2 {
        return Err(format!(
            "etcd prefix {p:?} must start with '/' and name something, like {DEFAULT_PREFIX}"
        ));
    }
    if trimmed.contains("//") || trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("etcd prefix {p:?}: no empty segment, space or control character"));
    }
    Ok(trimmed.to_string())
}

/// This host's name (the default node name): the kernel's UTS name, as `hostname` prints it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|s| s.trim().to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        for ok in ["a", "host-1", "h1.example.org", "node_7"] {
            assert!(check_node(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "é", "a b", "x\n"] {
            assert!(check_node(bad).is_err(), "{bad:?}");
        }
    }

    fn cfg(endpoints: &[&str]) -> EtcdConfig {
        EtcdConfig { endpoints: endpoints.iter().map(|s| s.to_string()).collect(), ..EtcdConfig::default() }
    }

    #[test]
    fn defaults_and_endpoint_forms() {
        let s = cfg(&["198.18.0.9:2379", "http://[2001:db8::9]:2379/", "HTTP://etcd-1.example:2379"])
            .settings(None, "host-a")
            .unwrap();
        assert_eq!(
            s.endpoints,
            ["http://198.18.0.9:2379", "http://[2001:db8::9]:2379", "http://etcd-1.example:2379"]
        );
        assert_eq!((s.prefix.as_str(), s.node.as_str(), s.ttl), (DEFAULT_PREFIX, "host-a", DEFAULT_TTL));
        assert!(s.tls.is_none() && s.auth.is_none());
    }

    #[test]
    fn bad_settings_say_what_is_wrong() {
        let err = |c: EtcdConfig| c.settings(None, "h").unwrap_err();
        for (e, want) in [
            ("ftp://h:1", "scheme"),
            ("http://h", "port"),
            ("http://h:0", "port"),
            ("http://h:99999", "port"),
            ("http://h:2379/v3", "path"),
            ("http://u@h:2379", "user"),
            ("http://[zz]:2379", "host"),
            ("http://:2379", "host"),
            ("https://h:2379", "--etcd-ca"),
        ] {
            assert!(err(cfg(&[e])).contains(want), "{e}: {}", err(cfg(&[e])));
        }
        assert!(err(EtcdConfig::default()).contains("no endpoint"));
        assert!(err(EtcdConfig { ttl: Some(0), ..cfg(&["h:1"]) }).contains("ttl 0"));
        assert!(err(EtcdConfig { ttl: Some(1), ..cfg(&["h:1"]) }).contains("2 to 3600"));
        for p in ["vxtap", "/", "", "//x", "/a//b", "/a b"] {
            assert!(err(EtcdConfig { prefix: Some(p.into()), ..cfg(&["h:1"]) }).contains("prefix"), "{p:?}");
        }
        let ok = EtcdConfig { prefix: Some("/corp/overlay/".into()), ..cfg(&["h:1"]) };
        assert_eq!(ok.settings(None, "h").unwrap().prefix, "/corp/overlay");
        assert!(err(EtcdConfig { node: Some("a/b".into()), ..cfg(&["h:1"]) }).contains("node name"));
        assert!(cfg(&["h:1"]).settings(None, "").unwrap_err().contains("--node"), "no hostname");
        assert!(err(EtcdConfig { user: Some("u".into()), ..cfg(&["h:1"]) }).contains(PASSWORD_ENV));
        assert!(err(EtcdConfig { password: Some("p".into()), ..cfg(&["h:1"]) }).contains("without a user"));
        assert!(err(EtcdConfig { cert: Some("c.pem".into()), ..cfg(&["h:1"]) }).contains("CA"));
        let tls = EtcdConfig { ca: Some("ca.pem".into()), cert: Some("c.pem".into()), ..cfg(&["h:1"]) };
        assert!(err(tls).contains("key"));
        let tls = EtcdConfig { ca: Some("ca.pem".into()), ..cfg(&["http://h:1"]) };
        assert!(err(tls).contains("https://"));
    }

    #[test]
    fn tls_auth_and_merging() {
        let file = EtcdConfig {
            ca: Some("ca.pem".into()),
            user: Some("vxtap".into()),
            node: Some("from-file".into()),
            ttl: Some(30),
            ..cfg(&["etcd:2379"])
        };
        let flags = EtcdConfig { node: Some("from-flag".into()), ..EtcdConfig::default() };
        let s = file.clone().merged(flags).settings(Some("secret".into()), "h").unwrap();
        assert_eq!(s.endpoints, ["https://etcd:2379"], "https when TLS is configured");
        assert_eq!((s.node.as_str(), s.ttl), ("from-flag", 30), "flags win, the file fills in");
        assert_eq!(s.auth.as_ref().map(|a| a.password.as_str()), Some("secret"), "from the environment");
        let with_pw = EtcdConfig { password: Some("in-file".into()), ..file };
        let s = with_pw.clone().settings(Some("env".into()), "h").unwrap();
        assert_eq!(s.auth.unwrap().password, "in-file", "the file's password first");
        assert!(!format!("{with_pw:?}").contains("in-file"), "never in debug output");
        assert!(!format!("{:?}", with_pw.settings(None, "h").unwrap()).contains("in-file"));
        assert!(EtcdConfig::default().is_empty());
    }
}
