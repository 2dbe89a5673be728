//! Prometheus metrics: `vxtap run --metrics ADDR:PORT` serves `/metrics` (`crate::node::metrics_http`).
//!
//! Nothing here runs on the packet path and nothing is counted twice: at each scrape the
//! exporter asks its [`Source`] (the dataplane) for one [`NetworkSample`] per network — the same
//! counters `vxtap stats` shows, read from the existing atomics — and encodes them with the
//! `prometheus-client` crate:
//!
//! - every `vxtap stats` key `k` becomes the counter `vxtap_<k>_total{dev,vni,proto}`
//!   (`vxtap_rx_packets_total`, `vxtap_tx_segmented_total`, `vxtap_fdb_learned_total`, ...), so
//!   a counter added to the stats shows up here by itself;
//! - the `drop_<reason>` keys become one family, `vxtap_drops_total{dev,vni,proto,reason}`;
//! - `fdb_entries` becomes the gauge `vxtap_fdb_entries{dev,vni,proto,kind}`, by kind (`learned`,
//!   `static`, `flood`); `vxtap_peers{dev,vni,proto}` counts the remote VTEPs;
//! - process-wide: `vxtap_build_info{version}` and the gauges given to [`Metrics::gauge`].
//!
//! Extension points: a stats key that is a level rather than a count goes into [`LEVELS`]; a
//! process-wide value (the etcd work's `etcd_connected`) is registered with [`Metrics::gauge`]
//! before the exporter is shared.
//!
//! Two formats, chosen per request ([`Format::from_accept`]): the Prometheus text format 0.0.4
//! by default (what `promtool check metrics` reads) and OpenMetrics 1.0 when the client asks for
//! it, as Prometheus does.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::control::Stats;
use crate::wire::Proto;

/// What the exporter reads at each scrape: implemented by the dataplane.
pub trait Source: Send + Sync + 'static {
    /// One sample per network, read now.
    fn networks(&self) -> Vec<NetworkSample>;
}

/// One network's values at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkSample {
    pub dev: String,
    pub vni: u32,
    pub proto: Proto,
    /// The counters of `vxtap stats`, as the control socket answers them.
    pub stats: Stats,
    pub fdb: FdbKinds,
    /// Remote VTEPs: flood list, static and learned destinations, each once (`vxtap peers`).
    pub peers: u64,
}

/// FDB entries by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FdbKinds {
    pub learned: u64,
    pub statics: u64,
    pub flood: u64,
}

/// `vxtap stats` keys that are levels (gauges), not counts. `fdb_entries` is shown by kind.
pub const LEVELS: &[&str] =
    &["fdb_entries", "send_sockets", "send_sockets_max", "etcd_connected", "etcd_revision", "etcd_members"];

/// The exposition format of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4: the default, and what promtool checks.
    Prometheus,
    /// OpenMetrics 1.0 text, for clients whose `Accept` asks for it.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for: OpenMetrics if it lists
    /// `application/openmetrics-text` (with a non-zero quality), else the 0.0.4 text format.
    pub fn from_accept(accept: Option<&str>) -> Format {
        let wants_om = accept.unwrap_or("").split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let is_om = parts.next().is_some_and(|t| t.eq_ignore_ascii_case("application/openmetrics-text"));
            let q_zero =
                parts.any(|p| p.strip_prefix("q=").is_some_and(|q| q.parse::<f32>().is_ok_and(|q| q <= 0.0)));
            is_om && !q_zero
        });
        if wants_om {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// The exporter: a registry whose collectors read their [`Source`] at each scrape. Set it up
/// (including [`Metrics::gauge`]), then share it behind an `Arc`: encoding needs `&self` only.
pub struct Metrics {
    registry: Registry,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// An exporter of `source`'s networks, with `vxtap_build_info`.
    pub fn new(source: Arc<dyn Source>) -> Metrics {
        let mut registry = Registry::with_prefix("vxtap");
        registry.register(
            "build",
            "The running vxtap's version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(Networks { source }));
        Metrics { registry }
    }

    /// Adds a process-wide gauge `vxtap_<name>` whose value `read` gives at each scrape, e.g.
    /// `metrics.gauge("etcd_connected", "1 while the etcd session is up", move || up.load(..) as i64)`.
    pub fn gauge(&mut self, name: &str, help: &str, read: impl Fn() -> i64 + Send + Sync + 'static) {
        debug_assert!(valid_name(name), "metric name {name:?}");
        self.registry.register_collector(Box::new(ProcessGauge {
            name: name.to_string(),
            help: help.to_string(),
            read: Box::new(read),
        }));
    }

    /// The whole exposition in `format`.
    pub fn encode(&self, format: Format) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let r = match format {
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut out, &self.registry),
        };
        // Writing to a String cannot fail; an encoder error would be a bug in a collector.
        debug_assert!(r.is_ok(), "encoding metrics: {r:?}");
        out
    }
}

/// A process-wide gauge read at scrape time.
struct ProcessGauge {
    name: String,
    help: String,
    read: Box<dyn Fn() -> i64 + Send + Sync>,
}

impl fmt::Debug for ProcessGauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessGauge").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Collector for ProcessGauge {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let g = ConstGauge::new((self.read)());
        g.encode(encoder.encode_descriptor(&self.name, &self.help, None, g.metric_type())?)
    }
}

/// The per-network families, from one [`Source::networks`] call per scrape.
struct Networks {
    source: Arc<dyn Source>,
}

impl fmt::Debug for Networks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Networks").finish_non_exhaustive()
    }
}

/// A network's labels: dev, vni, proto.
type NetLabels<'a> =
    ([(&'static str, &'a str); 1], ([(&'static str, u32); 1], [(&'static str, &'static str); 1]));

fn labels(n: &NetworkSample) -> NetLabels<'_> {
    let proto = match n.proto {
        Proto::Vxlan => "vxlan",
        Proto::Geneve => "geneve",
    };
    ([("dev", n.dev.as_str())], ([("vni", n.vni)], [("proto", proto)]))
}

/// Metric names (and label names) are `[a-zA-Z_][a-zA-Z0-9_]*`; a stats key that is not one
/// is left out rather than breaking the whole exposition.
fn valid_name(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Help text of a stats counter; keys without one still get a generic text.
fn help(key: &str) -> String {
    let known = match key {
        "rx_packets" => "Frames decapsulated and written to the TAP",
        "rx_bytes" => "Bytes of frames decapsulated and written to the TAP",
        "tx_packets" => "Datagrams sent to the underlay (each flood copy counts)",
        "tx_bytes" => "Bytes of datagrams sent to the underlay",
        "rx_coalesced" => "Super-frames of merged TCP/UDP segments written to the TAP (receive offload)",
        "tx_segmented" => "TAP super-frames segmented into tunnel datagrams (transmit offload)",
        "rx_syscalls" => "System calls of the receive path (socket receives, TAP writes)",
        "tx_syscalls" => "System calls of the transmit path (TAP reads, socket sends)",
        "tx_icmp_too_big" => "ICMP too-big replies written to the TAP for inner senders",
        "tx_icmp_ratelimited" => "ICMP too-big replies held back by the rate limit",
        "fdb_learned" => "FDB entries created by learning",
        "fdb_moved" => "Learned FDB entries that moved to another VTEP",
        "fdb_expired" => "Learned FDB entries removed by ageing",
        "send_sockets" => "Send sockets bound for outer source ports (one per port, two with fragmenting)",
        "send_sockets_max" => "The most send sockets the network's socket may bind (--max-src-ports)",
        _ => "",
    };
    if known.is_empty() {
        format!("The {key} counter of vxtap stats")
    } else {
        known.to_string()
    }
}

impl Collector for Networks {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let nets = self.source.networks();
        // Every key any network reports, in the order `vxtap stats` prints them.
        let mut keys: Vec<&str> = Vec::new();
        for n in &nets {
            for (k, _) in &n.stats.0 {
                if !keys.contains(&k.as_str()) {
                    keys.push(k);
                }
            }
        }
        for key in keys.iter().filter(|k| !k.starts_with("drop_") && valid_name(k)) {
            if *key == "fdb_entries" {
                continue; // shown by kind below
            }
            let (help, level) = (help(key), LEVELS.contains(key));
            let kind = if level { MetricType::Gauge } else { MetricType::Counter };
            let mut family = encoder.encode_descriptor(key, &help, None, kind)?;
            for n in &nets {
                if let Some(v) = n.stats.get(key) {
                    let labels = labels(n);
                    let metric = family.encode_family(&labels)?;
                    if level {
                        ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(metric)?;
                    } else {
                        ConstCounter::new(v).encode(metric)?;
                    }
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "drops",
                "Frames and datagrams not delivered, by reason (the drop_<reason> counters of vxtap stats)",
                None,
                MetricType::Counter,
            )?;
            for n in &nets {
                for (key, v) in &n.stats.0 {
                    let Some(reason) = key.strip_prefix("drop_").filter(|r| valid_name(r)) else { continue };
                    ConstCounter::new(*v)
                        .encode(family.encode_family(&(labels(n), [("reason", reason)]))?)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "fdb_entries",
                "Forwarding table entries by kind: learned, static, and flood-list remotes",
                None,
                MetricType::Gauge,
            )?;
            for n in &nets {
                let kinds = [("learned", n.fdb.learned), ("static", n.fdb.statics), ("flood", n.fdb.flood)];
                for (kind, v) in kinds {
                    let v = i64::try_from(v).unwrap_or(i64::MAX);
                    ConstGauge::new(v).encode(family.encode_family(&(labels(n), [("kind", kind)]))?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "peers",
            "Remote VTEPs known to the network (flood list, static and learned destinations)",
            None,
            MetricType::Gauge,
        )?;
        for n in &nets {
            ConstGauge::new(i64::try_from(n.peers).unwrap_or(i64::MAX))
                .encode(family.encode_family(&labels(n))?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::stats::Counters;

    struct Fake(Vec<NetworkSample>);

    impl Source for Fake {
        fn networks(&self) -> Vec<NetworkSample> {
            self.0.clone()
        }
    }

    fn sample(dev: &str, vni: u32, proto: Proto, rx: u64) -> NetworkSample {
        let c = Counters::default();
        c.rx(100);
        c.drop(crate::state::stats::DropReason::Truncated);
        let mut stats = c.snapshot().fields();
        stats[0].1 = rx;
        stats.extend([
            ("drop_fdb_full".to_string(), 2),
            ("fdb_entries".to_string(), 4),
            ("fdb_learned".into(), 9),
        ]);
        NetworkSample {
            dev: dev.into(),
            vni,
            proto,
            stats: Stats(stats),
            fdb: FdbKinds { learned: 3, statics: 1, flood: 2 },
            peers: 2,
        }
    }

    fn exporter() -> Metrics {
        let nets = vec![sample("vxt0", 42, Proto::Vxlan, 7), sample("gen1", 16777215, Proto::Geneve, 8)];
        let mut m = Metrics::new(Arc::new(Fake(nets)));
        m.gauge("etcd_connected", "1 while connected to etcd", || 1);
        m
    }

    #[test]
    fn prometheus_text_has_every_family_with_labels() {
        let text = exporter().encode(Format::Prometheus);
        for line in [
            "# TYPE vxtap_build_info gauge",
            &format!("vxtap_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION")),
            "# TYPE vxtap_rx_packets_total counter",
            "vxtap_rx_packets_total{dev=\"vxt0\",vni=\"42\",proto=\"vxlan\"} 7",
            "vxtap_rx_packets_total{dev=\"gen1\",vni=\"16777215\",proto=\"geneve\"} 8",
            "vxtap_tx_segmented_total{dev=\"vxt0\",vni=\"42\",proto=\"vxlan\"} 0",
            "vxtap_fdb_learned_total{dev=\"vxt0\",vni=\"42\",proto=\"vxlan\"} 9",
            "# TYPE vxtap_drops_total counter",
            "vxtap_drops_total{dev=\"vxt0\",vni=\"42\",proto=\"vxlan\",reason=\"truncated\"} 1",
            "vxtap_drops_total{dev=\"gen1\",vni=\"16777215\",proto=\"geneve\",reason=\"fdb_full\"} 2",
            "# TYPE vxtap_fdb_entries gauge",
            "vxtap_fdb_entries{dev=\"vxt0\",vni=\"42\",proto=\"vxlan\",kind=\"static\"} 1",
            "vxtap_peers{dev=\"vxt0\",vni=\"42\",proto=\"vxlan\"} 2",
            "# TYPE vxtap_etcd_connected gauge",
            "vxtap_etcd_connected 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        assert!(!text.contains("vxtap_drop_"), "drop counters belong to vxtap_drops_total:\n{text}");
        assert!(!text.contains("# EOF"));
        // One family per name: each TYPE line once.
        let mut types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let n = types.len();
        types.sort();
        types.dedup();
        assert_eq!(types.len(), n, "{text}");
    }

    #[test]
    fn openmetrics_when_asked_for() {
        let text = exporter().encode(Format::OpenMetrics);
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(text.contains("# TYPE vxtap_drops counter\n"), "{text}");
        assert!(text.contains("# TYPE vxtap_build info\n"), "{text}");
        let prom = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;\
                    q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::from_accept(Some(prom)), Format::OpenMetrics, "what Prometheus sends");
        assert_eq!(Format::from_accept(None), Format::Prometheus);
        assert_eq!(Format::from_accept(Some("*/*")), Format::Prometheus);
        assert_eq!(Format::from_accept(Some("text/plain")), Format::Prometheus);
        assert_eq!(Format::from_accept(Some("application/openmetrics-text; q=0")), Format::Prometheus);
        assert!(Format::OpenMetrics.content_type().starts_with("application/openmetrics-text"));
        assert!(Format::Prometheus.content_type().starts_with("text/plain; version=0.0.4"));
    }

    #[test]
    fn every_stats_key_is_a_valid_metric_name() {
        for (k, _) in Counters::default().snapshot().fields() {
            assert!(valid_name(&k), "{k}");
        }
        assert!(!valid_name("rx-packets") && !valid_name("1x") && !valid_name(""));
    }
}
