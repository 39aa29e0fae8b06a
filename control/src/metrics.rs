//! Prometheus metrics: `/metrics` over HTTP, in the OpenMetrics text format of the
//! `prometheus-client` crate (which Prometheus and its Python parser read).
//!
//! Nothing here runs on the datapath: a scrape reads the workers' counters (relaxed loads)
//! and the device counters, and encodes them. Names follow Prometheus conventions; counters
//! are declared without `_total`, which the encoder appends.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dataplane::stats::{DropReason, PortTotals};
use dataplane::Switch;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Latency buckets of the gRPC request histogram, in seconds.
const RPC_BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Requests of the gRPC API, by method and status code, with a latency histogram per method.
#[derive(Debug, Default)]
pub struct RpcMetrics {
    inner: Mutex<RpcInner>,
}

#[derive(Debug, Default)]
struct RpcInner {
    requests: HashMap<(String, &'static str), u64>,
    latency: HashMap<String, Histogram>,
}

#[derive(Debug, Clone)]
struct Histogram {
    counts: [u64; RPC_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn new() -> Histogram {
        Histogram { counts: [0; RPC_BUCKETS.len()], count: 0, sum: 0.0 }
    }

    fn observe(&mut self, v: f64) {
        if let Some(i) = RPC_BUCKETS.iter().position(|b| v <= *b) {
            self.counts[i] += 1;
        }
        self.count += 1;
        self.sum += v;
    }

    /// (upper bound, count in this bucket alone) pairs, +Inf (f64::MAX) last, as the
    /// encoder wants them (it accumulates).
    fn buckets(&self) -> Vec<(f64, u64)> {
        let mut v: Vec<(f64, u64)> = RPC_BUCKETS.iter().copied().zip(self.counts).collect();
        v.push((f64::MAX, self.count - self.counts.iter().sum::<u64>()));
        v
    }
}

impl RpcMetrics {
    /// Records one finished request: `method` is the gRPC path (`/pkg.Service/Method`).
    pub fn record(&self, method: &str, code: tonic::Code, elapsed: Duration) {
        let mut inner = self.inner.lock().unwrap();
        *inner.requests.entry((method.to_string(), code_name(code))).or_default() += 1;
        inner.latency.entry(method.to_string()).or_insert_with(Histogram::new).observe(elapsed.as_secs_f64());
    }
}

/// The snake_case name of a gRPC status code, as label value.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code::*;
    match code {
        Ok => "ok",
        Cancelled => "cancelled",
        Unknown => "unknown",
        InvalidArgument => "invalid_argument",
        DeadlineExceeded => "deadline_exceeded",
        NotFound => "not_found",
        AlreadyExists => "already_exists",
        PermissionDenied => "permission_denied",
        ResourceExhausted => "resource_exhausted",
        FailedPrecondition => "failed_precondition",
        Aborted => "aborted",
        OutOfRange => "out_of_range",
        Unimplemented => "unimplemented",
        Internal => "internal",
        Unavailable => "unavailable",
        DataLoss => "data_loss",
        Unauthenticated => "unauthenticated",
    }
}

/// Reads the switch at every scrape.
#[derive(Debug)]
struct SwitchCollector {
    switch: SwitchRef,
    rpc: Arc<RpcMetrics>,
}

/// `Switch` is not Debug; the collector trait wants it.
struct SwitchRef(Arc<Switch>);

impl std::fmt::Debug for SwitchRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Switch")
    }
}

/// One metric family being written: its descriptor, then one sample per label set.
struct Family<'a> {
    encoder: MetricEncoder<'a>,
    kind: MetricType,
}

impl Family<'_> {
    fn sample(&mut self, labels: &Labels, value: f64) -> Result<(), std::fmt::Error> {
        // A metric without labels is written without braces.
        if labels.is_empty() {
            let e = &mut self.encoder;
            return match self.kind {
                MetricType::Counter => e.encode_counter::<NoLabelSet, _, u64>(&value, None),
                _ => e.encode_gauge(&value),
            };
        }
        let e = self.encoder.encode_family(labels)?;
        match self.kind {
            MetricType::Counter => ConstCounter::new(value).encode(e),
            _ => ConstGauge::new(value).encode(e),
        }
    }
}

fn family<'a>(
    enc: &'a mut DescriptorEncoder,
    name: &'a str,
    help: &str,
    kind: MetricType,
) -> Result<Family<'a>, std::fmt::Error> {
    Ok(Family { encoder: enc.encode_descriptor(name, help, None, kind)?, kind })
}

/// A family written in one go from (labels, value) rows.
fn rows(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = (Labels, f64)>,
) -> Result<(), std::fmt::Error> {
    let mut f = family(enc, name, help, kind)?;
    for (labels, v) in rows {
        f.sample(&labels, v)?;
    }
    Ok(())
}

fn l(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

impl prometheus_client::collector::Collector for SwitchCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.switch.0;
        let hz = s.tsc_hz().max(1) as f64;
        let secs = |cycles: u64| cycles as f64 / hz;
        use MetricType::{Counter, Gauge};

        // Build and process.
        {
            let mut f = enc.encode_descriptor("vswitch_build", "Build of this switch", None, MetricType::Info)?;
            let labels = l(&[("version", crate::service::VERSION), ("dpdk", &dataplane::dpdk::version())]);
            f.encode_info(&labels)?;
        }
        rows(
            &mut enc,
            "vswitch_uptime_seconds",
            "Seconds since the switch started",
            Gauge,
            [(vec![], s.uptime().as_secs_f64())],
        )?;
        rows(
            &mut enc,
            "vswitch_generation",
            "Generation of the newest published pipeline snapshot",
            Gauge,
            [(vec![], s.generation() as f64)],
        )?;
        rows(
            &mut enc,
            "vswitch_eal_mapped_bytes",
            "Memory the DPDK EAL holds (hugepages unless eal.no_huge)",
            Gauge,
            [(vec![], s.eal_mapped_bytes() as f64)],
        )?;
        if let Some((available, in_use)) = s.pool_usage() {
            rows(
                &mut enc,
                "vswitch_mbufs",
                "Packet buffers of the pool by state",
                Gauge,
                [(l(&[("state", "available")]), available as f64), (l(&[("state", "in_use")]), in_use as f64)],
            )?;
        }

        // Ports: the switch's counters, the device's, link.
        let ports = s.ports();
        let tunnels = s.tunnels();
        let mut named: Vec<(String, u32, PortTotals)> =
            ports.iter().map(|p| (p.name.clone(), p.number, p.counters.clone())).collect();
        named.extend(tunnels.iter().map(|t| (t.config.name.clone(), t.config.number, t.counters.clone())));
        let port_labels = |name: &str, number: u32| l(&[("port", name), ("number", &number.to_string())]);
        type PortField = fn(&PortTotals) -> u64;
        let port_counters: [(&str, &str, PortField); 5] = [
            ("vswitch_port_rx_packets", "Packets received by the switch on the port", |c| c.rx_packets),
            ("vswitch_port_rx_bytes", "Bytes received by the switch on the port", |c| c.rx_bytes),
            ("vswitch_port_tx_packets", "Packets the port's device took for transmission", |c| c.tx_packets),
            ("vswitch_port_tx_bytes", "Bytes the port's device took for transmission", |c| c.tx_bytes),
            ("vswitch_port_tx_dropped", "Packets the port's transmit queues refused (tx_queue_full)", |c| {
                c.tx_dropped()
            }),
        ];
        for (name, help, get) in port_counters {
            rows(&mut enc, name, help, Counter, named.iter().map(|(n, no, c)| (port_labels(n, *no), get(c) as f64)))?;
        }
        rows(
            &mut enc,
            "vswitch_port_rx_dropped",
            "Packets the pipeline dropped after they arrived on the port",
            Counter,
            named.iter().map(|(n, no, c)| (port_labels(n, *no), c.rx_dropped() as f64)),
        )?;
        type DevField = fn(&dataplane::dpdk::EthStats) -> u64;
        let device: [(&str, &str, DevField); 7] = [
            ("vswitch_port_device_rx_packets", "Packets the device received (PMD counter)", |d| d.ipackets),
            ("vswitch_port_device_tx_packets", "Packets the device sent (PMD counter)", |d| d.opackets),
            ("vswitch_port_device_rx_bytes", "Bytes the device received (PMD counter)", |d| d.ibytes),
            ("vswitch_port_device_tx_bytes", "Bytes the device sent (PMD counter)", |d| d.obytes),
            ("vswitch_port_rx_missed", "Packets the device dropped because an rx ring was full (imissed)", |d| {
                d.imissed
            }),
            ("vswitch_port_rx_errors", "Erroneous packets the device received (ierrors)", |d| d.ierrors),
            ("vswitch_port_tx_errors", "Packets the device failed to send (oerrors)", |d| d.oerrors),
        ];
        for (name, help, get) in device {
            rows(
                &mut enc,
                name,
                help,
                Counter,
                ports.iter().map(|p| (port_labels(&p.name, p.number), get(&p.device) as f64)),
            )?;
        }
        rows(
            &mut enc,
            "vswitch_port_rx_nombuf",
            "Receive failures for want of an mbuf (rx_nombuf)",
            Counter,
            ports.iter().map(|p| (port_labels(&p.name, p.number), p.device.rx_nombuf as f64)),
        )?;
        rows(
            &mut enc,
            "vswitch_port_link_up",
            "1 when the port's link is up",
            Gauge,
            ports.iter().map(|p| (port_labels(&p.name, p.number), p.link.up as u8 as f64)),
        )?;
        rows(
            &mut enc,
            "vswitch_port_link_speed_bits_per_second",
            "Link speed reported by the device",
            Gauge,
            ports.iter().map(|p| (port_labels(&p.name, p.number), p.link.speed_mbps as f64 * 1e6)),
        )?;
        rows(
            &mut enc,
            "vswitch_port_mtu_bytes",
            "MTU of the port (IP packet size)",
            Gauge,
            ports.iter().map(|p| (port_labels(&p.name, p.number), p.mtu as f64)),
        )?;

        // Queues: rx by the worker that polls each queue, tx by worker (worker i owns tx
        // queue i of every port).
        let name_of: HashMap<dataplane::PortIdx, &str> = ports.iter().map(|p| (p.idx, p.name.as_str())).collect();
        let workers = s.workers();
        let mut rxq_packets = Vec::new();
        let mut rxq_bytes = Vec::new();
        let mut txq = [Vec::new(), Vec::new(), Vec::new()];
        for w in workers {
            let worker = w.index.to_string();
            for (slot, port, queue) in w.rx_queues() {
                let labels = l(&[
                    ("port", name_of.get(&port).copied().unwrap_or("?")),
                    ("queue", &queue.to_string()),
                    ("worker", &worker),
                ]);
                let get = |v: &[std::sync::atomic::AtomicU64]| {
                    v.get(slot).map_or(0, |c| c.load(std::sync::atomic::Ordering::Relaxed))
                };
                rxq_packets.push((labels.clone(), get(&w.stats.rx_queue_packets) as f64));
                rxq_bytes.push((labels, get(&w.stats.rx_queue_bytes) as f64));
            }
            for p in &ports {
                let mut t = PortTotals::default();
                t.add(&w.stats.ports[p.idx as usize]);
                let labels = l(&[("port", &p.name), ("queue", &worker), ("worker", &worker)]);
                txq[0].push((labels.clone(), t.tx_packets as f64));
                txq[1].push((labels.clone(), t.tx_bytes as f64));
                txq[2].push((labels, t.tx_dropped() as f64));
            }
        }
        rows(&mut enc, "vswitch_rx_queue_packets", "Packets received per rx queue", Counter, rxq_packets)?;
        rows(&mut enc, "vswitch_rx_queue_bytes", "Bytes received per rx queue", Counter, rxq_bytes)?;
        let [txp, txb, txd] = txq;
        rows(&mut enc, "vswitch_tx_queue_packets", "Packets sent per tx queue", Counter, txp)?;
        rows(&mut enc, "vswitch_tx_queue_bytes", "Bytes sent per tx queue", Counter, txb)?;
        rows(&mut enc, "vswitch_tx_queue_dropped", "Packets a full tx queue refused", Counter, txd)?;

        // Workers.
        let totals: Vec<_> = workers.iter().map(|w| (w, w.stats.totals())).collect();
        let wl = |w: &dataplane::switch::WorkerRuntime| {
            l(&[("worker", &w.index.to_string()), ("core", &w.core.to_string())])
        };
        type WorkerField = fn(&dataplane::stats::WorkerTotals) -> u64;
        let cycle_fields: [(&str, &str, WorkerField); 3] = [
            ("vswitch_worker_busy_seconds", "Time in poll iterations that received packets", |t| t.busy_cycles),
            ("vswitch_worker_idle_seconds", "Time in poll iterations that received nothing (sleeps included)", |t| {
                t.idle_cycles
            }),
            ("vswitch_worker_sleep_seconds", "Time idle workers spent asleep (idle back-off)", |t| t.sleep_cycles),
        ];
        for (name, help, get) in cycle_fields {
            rows(&mut enc, name, help, Counter, totals.iter().map(|(w, t)| (wl(w), secs(get(t)))))?;
        }
        let count_fields: [(&str, &str, WorkerField); 11] = [
            ("vswitch_worker_polls", "Poll iterations over all the worker's rx queues", |t| t.polls),
            ("vswitch_worker_busy_polls", "Poll iterations that received packets", |t| t.busy_polls),
            ("vswitch_worker_sleeps", "Sleeps of the idle back-off (interrupt waits included)", |t| t.sleeps),
            ("vswitch_worker_interrupt_waits", "Waits for an rx interrupt in deep idle", |t| t.interrupt_waits),
            ("vswitch_worker_interrupt_wakes", "Interrupt waits ended by a packet or the control plane", |t| {
                t.interrupt_wakes
            }),
            ("vswitch_worker_sleep_wakes", "Timed idle sleeps the control plane's doorbell ended", |t| t.sleep_wakes),
            ("vswitch_mac_learned", "MAC addresses learned", |t| t.mac_learned),
            ("vswitch_mac_moved", "Learned MAC addresses that moved to another port", |t| t.mac_moved),
            ("vswitch_mac_learn_failed", "MAC learns refused because the table was full", |t| t.mac_learn_failed),
            ("vswitch_emc_hits", "Exact-match cache hits", |t| t.emc_hits),
            ("vswitch_emc_misses", "Exact-match cache misses", |t| t.emc_misses),
        ];
        for (name, help, get) in count_fields {
            rows(&mut enc, name, help, Counter, totals.iter().map(|(w, t)| (wl(w), get(t) as f64)))?;
        }
        rows(
            &mut enc,
            "vswitch_emc_hit_ratio",
            "Exact-match cache hits over lookups since start (0 when unused)",
            Gauge,
            totals.iter().map(|(w, t)| {
                let all = t.emc_hits + t.emc_misses;
                (wl(w), if all == 0 { 0.0 } else { t.emc_hits as f64 / all as f64 })
            }),
        )?;
        rows(
            &mut enc,
            "vswitch_worker_idle_state",
            "Idle back-off state: 0 polling, 1 sleeping between polls, 2 waiting for an rx interrupt",
            Gauge,
            totals.iter().map(|(w, t)| (wl(w), t.idle_state as u8 as f64)),
        )?;
        rows(
            &mut enc,
            "vswitch_worker_idle_backoff",
            "1 if the worker backs off when idle, 0 if it busy-polls (vswitchctl set-idle)",
            Gauge,
            totals.iter().map(|(w, t)| (wl(w), t.idle_backoff as u8 as f64)),
        )?;
        rows(
            &mut enc,
            "vswitch_worker_generation",
            "Pipeline generation the worker runs",
            Gauge,
            totals.iter().map(|(w, t)| (wl(w), t.generation as f64)),
        )?;
        {
            let mut f = enc.encode_descriptor(
                "vswitch_worker_rx_burst_size",
                "Packets per non-empty rx burst",
                None,
                MetricType::Histogram,
            )?;
            for (w, t) in &totals {
                // Buckets 1, 2, 4, ..., 32 (the largest burst); counts per bucket alone.
                let mut buckets = Vec::new();
                let (mut count, mut sum, mut in_bucket, mut upto) = (0u64, 0u64, 0u64, 1usize);
                for (n, c) in t.rx_bursts.iter().enumerate().skip(1) {
                    count += c;
                    in_bucket += c;
                    sum += n as u64 * c;
                    if n == upto {
                        buckets.push((n as f64, in_bucket));
                        in_bucket = 0;
                        upto *= 2;
                    }
                }
                buckets.push((f64::MAX, in_bucket));
                let labels = wl(w);
                f.encode_family(&labels)?.encode_histogram::<NoLabelSet>(sum as f64, count, &buckets, None)?;
            }
        }

        // Tables.
        let tables = s.tables();
        let tl = |t: &dataplane::switch::TableView| l(&[("table", &t.id.to_string())]);
        rows(
            &mut enc,
            "vswitch_table_lookups",
            "Lookups in the flow table",
            Counter,
            tables.iter().map(|t| (tl(t), t.lookups as f64)),
        )?;
        rows(
            &mut enc,
            "vswitch_table_matches",
            "Lookups that matched a flow",
            Counter,
            tables.iter().map(|t| (tl(t), t.matched as f64)),
        )?;
        rows(
            &mut enc,
            "vswitch_table_misses",
            "Lookups that matched no flow",
            Counter,
            tables.iter().map(|t| (tl(t), t.missed as f64)),
        )?;
        rows(
            &mut enc,
            "vswitch_table_flows",
            "Flows in the table",
            Gauge,
            tables.iter().map(|t| (tl(t), t.flows as f64)),
        )?;
        rows(
            &mut enc,
            "vswitch_named_counter_packets",
            "Packets counted by counter:NAME actions",
            Counter,
            s.named_counters().into_iter().map(|c| (l(&[("counter", &c.name)]), c.packets as f64)),
        )?;
        rows(
            &mut enc,
            "vswitch_mac_table_entries",
            "Entries in the MAC table",
            Gauge,
            [(vec![], s.mac_entries().len() as f64)],
        )?;

        // Drops, by stage, reason and the port where it was decided.
        {
            let mut f = family(
                &mut enc,
                "vswitch_drops",
                "Packets the datapath dropped, by stage and reason (names as vswitchctl show-drops)",
                Counter,
            )?;
            for r in DropReason::ALL {
                let mut total = 0;
                for (name, number, c) in &named {
                    let v = c.drops[*r as usize];
                    total += v;
                    if v > 0 {
                        let labels = l(&[
                            ("stage", r.stage()),
                            ("reason", r.name()),
                            ("port", name),
                            ("number", &number.to_string()),
                        ]);
                        f.sample(&labels, v as f64)?;
                    }
                }
                // Every reason is present, with port="" for its total, so queries and
                // dashboards find each series before its first drop.
                f.sample(
                    &l(&[("stage", r.stage()), ("reason", r.name()), ("port", ""), ("number", "")]),
                    total as f64,
                )?;
            }
        }

        // Tunnels and neighbors.
        let tunl = |t: &dataplane::switch::TunnelView| {
            l(&[("tunnel", &t.config.name), ("kind", t.config.kind.name()), ("number", &t.config.number.to_string())])
        };
        rows(
            &mut enc,
            "vswitch_tunnel_decap_packets",
            "Packets decapsulated from the tunnel",
            Counter,
            tunnels.iter().map(|t| (tunl(t), t.counters.rx_packets as f64)),
        )?;
        rows(
            &mut enc,
            "vswitch_tunnel_decap_bytes",
            "Inner bytes decapsulated from the tunnel",
            Counter,
            tunnels.iter().map(|t| (tunl(t), t.counters.rx_bytes as f64)),
        )?;
        rows(
            &mut enc,
            "vswitch_tunnel_encap_packets",
            "Packets encapsulated into the tunnel",
            Counter,
            tunnels.iter().map(|t| (tunl(t), t.counters.tx_packets as f64)),
        )?;
        rows(
            &mut enc,
            "vswitch_tunnel_encap_bytes",
            "Inner bytes encapsulated into the tunnel",
            Counter,
            tunnels.iter().map(|t| (tunl(t), t.counters.tx_bytes as f64)),
        )?;
        rows(
            &mut enc,
            "vswitch_tunnel_drops",
            "Packets dropped on the way into or out of the tunnel",
            Counter,
            tunnels.iter().map(|t| (tunl(t), t.counters.drops.iter().sum::<u64>() as f64)),
        )?;
        let neighbors = s.neighbors();
        let count = |f: &dyn Fn(&dataplane::tunnel::neighbor::Neighbor) -> bool| {
            neighbors.iter().filter(|n| f(n)).count() as f64
        };
        rows(
            &mut enc,
            "vswitch_neighbors",
            "Underlay neighbor table entries by state",
            Gauge,
            [
                (l(&[("state", "static")]), count(&|n| n.is_static)),
                (l(&[("state", "learned")]), count(&|n| !n.is_static && n.mac.is_some())),
                (l(&[("state", "resolving")]), count(&|n| n.mac.is_none())),
            ],
        )?;

        // Control plane.
        let inner = self.rpc.inner.lock().unwrap();
        rows(
            &mut enc,
            "vswitch_grpc_requests",
            "gRPC requests handled, by method and status code",
            Counter,
            inner.requests.iter().map(|((m, c), n)| (l(&[("method", m), ("code", c)]), *n as f64)),
        )?;
        {
            let mut f = enc.encode_descriptor(
                "vswitch_grpc_request_duration_seconds",
                "gRPC request latency, from request to the end of the response",
                None,
                MetricType::Histogram,
            )?;
            for (method, h) in &inner.latency {
                let labels = l(&[("method", method)]);
                f.encode_family(&labels)?.encode_histogram::<NoLabelSet>(h.sum, h.count, &h.buckets(), None)?;
            }
        }
        Ok(())
    }
}

/// The registry behind `/metrics`.
pub struct Metrics {
    registry: Registry,
}

impl Metrics {
    pub fn new(switch: Arc<Switch>, rpc: Arc<RpcMetrics>) -> Metrics {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(SwitchCollector { switch: SwitchRef(switch), rpc }));
        Metrics { registry }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(64 * 1024);
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            let _ = writeln!(out, "# encoding failed: {e}");
        }
        out
    }
}

/// The content type of [`Metrics::render`].
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`to_prometheus_text`].
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Rewrites OpenMetrics text into the Prometheus text format 0.0.4, for scrapers and parsers
/// that do not ask for OpenMetrics: there a counter's HELP and TYPE name the sample name
/// (`x_total`), info metrics are gauges named `x_info`, and there is no `# EOF`.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut kinds: HashMap<&str, &str> = HashMap::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some((name, kind)) = rest.split_once(' ') {
                kinds.insert(name, kind);
            }
        }
    }
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let header = line
            .strip_prefix("# HELP ")
            .map(|r| ("# HELP ", r))
            .or_else(|| line.strip_prefix("# TYPE ").map(|r| ("# TYPE ", r)));
        match header {
            Some((tag, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                match kinds.get(name).copied() {
                    Some("counter") if tag == "# TYPE " => {
                        let _ = writeln!(out, "# TYPE {name}_total counter");
                    }
                    Some("counter") => {
                        let _ = writeln!(out, "{tag}{name}_total {tail}");
                    }
                    Some("info") if tag == "# TYPE " => {
                        let _ = writeln!(out, "# TYPE {name}_info gauge");
                    }
                    Some("info") => {
                        let _ = writeln!(out, "{tag}{name}_info {tail}");
                    }
                    _ => {
                        let _ = writeln!(out, "{line}");
                    }
                }
            }
            None => {
                let _ = writeln!(out, "{line}");
            }
        }
    }
    out
}

/// Serves `/metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    metrics: Arc<Metrics>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::routing::get;
    let render = move |headers: axum::http::HeaderMap| {
        let metrics = metrics.clone();
        async move {
            // Prometheus asks for OpenMetrics; anything else gets the classic text format.
            let openmetrics = headers
                .get_all(axum::http::header::ACCEPT)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.contains("application/openmetrics-text")));
            // Reading device counters makes DPDK calls: keep them off the async threads.
            let text = tokio::task::spawn_blocking(move || metrics.render()).await.unwrap_or_default();
            if openmetrics {
                ([(axum::http::header::CONTENT_TYPE, OPENMETRICS)], text)
            } else {
                ([(axum::http::header::CONTENT_TYPE, PROMETHEUS_TEXT)], to_prometheus_text(&text))
            }
        }
    };
    let app = axum::Router::new()
        .route("/metrics", get(render))
        .route("/", get(|| async { "vswitchd: metrics at /metrics\n" }));
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await
}

/// Where `/metrics` listens, bound before serving.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counters_by_their_samples() {
        let om = "# HELP a_b Things.\n# TYPE a_b counter\na_b_total{x=\"1\"} 3.0\n\
                  # HELP up Up.\n# TYPE up gauge\nup 1\n\
                  # HELP build Build.\n# TYPE build info\nbuild_info{v=\"1\"} 1\n# EOF\n";
        let text = to_prometheus_text(om);
        assert_eq!(
            text,
            "# HELP a_b_total Things.\n# TYPE a_b_total counter\na_b_total{x=\"1\"} 3.0\n\
             # HELP up Up.\n# TYPE up gauge\nup 1\n\
             # HELP build_info Build.\n# TYPE build_info gauge\nbuild_info{v=\"1\"} 1\n"
        );
    }

    #[test]
    fn histogram_buckets_are_per_bucket_with_overflow_last() {
        let mut h = Histogram::new();
        h.observe(0.00005);
        h.observe(0.003);
        h.observe(10.0);
        let b = h.buckets();
        assert_eq!(b.len(), RPC_BUCKETS.len() + 1);
        assert_eq!(b[0], (0.0001, 1));
        assert_eq!(b.iter().map(|x| x.1).sum::<u64>(), 3);
        assert_eq!(*b.last().unwrap(), (f64::MAX, 1));
    }
}
