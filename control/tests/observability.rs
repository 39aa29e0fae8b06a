//! Observability: the Prometheus exposition (parsed by the Python client's parsers, scraped
//! by a real Prometheus server), the Grafana dashboard's queries, and live packet trace.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// A free TCP port on loopback.
fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

/// One parsed exposition: family types and samples.
struct Exposition {
    families: HashMap<String, String>,
    samples: Vec<(String, HashMap<String, String>, f64)>,
}

impl Exposition {
    /// Parses with prometheus_client's text parser ("text") or OpenMetrics parser.
    fn parse(text: &str, format: &str) -> Exposition {
        let mut child = Command::new("python3")
            .arg(helper("parse_metrics.py"))
            .arg(format)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3");
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the {format} parser rejected the exposition: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let families = v["families"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, t)| (k.clone(), t.as_str().unwrap().to_string()))
            .collect();
        let samples = v["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let labels =
                    s[1].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().into())).collect();
                (s[0].as_str().unwrap().to_string(), labels, s[2].as_f64().unwrap())
            })
            .collect();
        Exposition { families, samples }
    }

    /// The value of the sample `name` whose labels include all of `labels`.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && labels.iter().all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v)))
            .map(|s| s.2)
    }

    fn sample_names(&self) -> BTreeSet<&str> {
        self.samples.iter().map(|s| s.0.as_str()).collect()
    }
}

fn scrape(addr: SocketAddr) -> Exposition {
    let (status, content_type, body) = http_get(addr, "/metrics", None);
    assert_eq!(status, 200, "{body}");
    assert!(content_type.starts_with("text/plain; version=0.0.4"), "{content_type}");
    Exposition::parse(&body, "text")
}

/// Every metric the issue names, by sample name (counters with `_total`).
const REQUIRED: &[&str] = &[
    "vswitch_port_rx_packets_total",
    "vswitch_port_rx_bytes_total",
    "vswitch_port_tx_packets_total",
    "vswitch_port_tx_bytes_total",
    "vswitch_port_rx_missed_total",
    "vswitch_port_tx_dropped_total",
    "vswitch_port_rx_errors_total",
    "vswitch_port_tx_errors_total",
    "vswitch_port_link_up",
    "vswitch_rx_queue_packets_total",
    "vswitch_rx_queue_bytes_total",
    "vswitch_tx_queue_packets_total",
    "vswitch_tx_queue_bytes_total",
    "vswitch_worker_busy_seconds_total",
    "vswitch_worker_idle_seconds_total",
    "vswitch_worker_rx_burst_size_bucket",
    "vswitch_worker_rx_burst_size_count",
    "vswitch_worker_idle_state",
    "vswitch_worker_idle_backoff",
    "vswitch_table_lookups_total",
    "vswitch_table_matches_total",
    "vswitch_table_misses_total",
    "vswitch_table_flows",
    "vswitch_emc_hit_ratio",
    "vswitch_drops_total",
    "vswitch_tunnel_encap_packets_total",
    "vswitch_tunnel_decap_packets_total",
    "vswitch_tunnel_drops_total",
    "vswitch_neighbors",
    "vswitch_grpc_requests_total",
    "vswitch_grpc_request_duration_seconds_bucket",
    "vswitch_generation",
    "vswitch_build_info",
];

/// Metric names the Grafana dashboard's queries use.
fn dashboard_metrics() -> BTreeSet<String> {
    let path = format!("{}/../configs/grafana-dashboard.json", env!("CARGO_MANIFEST_DIR"));
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("dashboard JSON");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_string());
        }
    }
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"].as_str() {
            exprs.push(q.to_string());
        }
    }
    let mut names = BTreeSet::new();
    for e in exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("vswitch_") {
            let tail = &rest[i..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names
}

#[test]
fn metrics_parse_name_everything_and_move_with_traffic() {
    let _g = serial();
    // h3's port is a tunnel uplink, so tunnel metrics exist; a flow makes table lookups.
    let topo = Topology::new(3);
    let addr = free_addr();
    let extra = "[[tunnel]]\nname = \"vx0\"\nnumber = 10\nkind = \"vxlan\"\nuplink = \"h3\"\nremote_ip = \"192.0.2.2\"\nvni = 7\n\n\
                 [[flow]]\nrule = \"table=0,priority=1,actions=normal\"\n";
    let body = format!("{}{extra}", topo.port_config())
        .replace("name = \"h3\"\nnumber = 3\n", "name = \"h3\"\nnumber = 3\nip = \"192.0.2.1/24\"\n");
    let sw = Vswitchd::start_with_control(&format!("metrics = \"{addr}\""), &body);
    assert!(sw.log_text().contains(&format!("metrics on http://{addr}/metrics")), "{}", sw.log_text());

    let before = scrape(addr);
    // Every drop reason is there under its stage, with the names vswitchctl shows.
    let drops = sw.ctl(&["--json", "show-drops", "--all"]);
    let drops: Value = serde_json::from_slice(&drops.stdout).expect("show-drops JSON");
    let reasons = drops["drops"].as_array().expect("drops");
    assert!(reasons.len() > 20, "{drops}");
    for r in reasons {
        let (reason, stage) = (r["reason"].as_str().unwrap(), r["stage"].as_str().unwrap());
        assert!(
            before.value("vswitch_drops_total", &[("reason", reason), ("stage", stage), ("port", "")]).is_some(),
            "no vswitch_drops_total for {stage}/{reason}"
        );
    }
    // Counter families are typed as counters.
    assert_eq!(before.families.get("vswitch_port_rx_packets").map(String::as_str), Some("counter"));
    assert_eq!(before.families.get("vswitch_worker_rx_burst_size").map(String::as_str), Some("histogram"));

    // Known traffic: 3 pings each way (plus ARP), then 4 frames from h1 to its own MAC,
    // which the L2 switch drops (the destination is the ingress port).
    assert!(topo.ping(1, 2, 3));
    topo.send_frames(1, &topo.host(1).mac, "beef02", 60, 4);
    std::thread::sleep(Duration::from_millis(300));
    let after = scrape(addr);
    let rx = |e: &Exposition, port: &str| e.value("vswitch_port_rx_packets_total", &[("port", port)]).unwrap();
    assert!(rx(&after, "h1") >= rx(&before, "h1") + 3.0 + 4.0, "h1 rx did not move");
    assert!(after.value("vswitch_port_tx_packets_total", &[("port", "h2")]).unwrap() >= 3.0);
    let hairpin = |e: &Exposition| {
        e.value("vswitch_drops_total", &[("reason", "destination_on_ingress_port"), ("port", "h1")]).unwrap_or(0.0)
    };
    assert_eq!(hairpin(&after) - hairpin(&before), 4.0);
    let queue_rx = after.value("vswitch_rx_queue_packets_total", &[("port", "h1"), ("queue", "0")]).unwrap();
    assert_eq!(queue_rx, rx(&after, "h1"), "one queue: per-queue and per-port counts agree");
    let bursts = after.value("vswitch_worker_rx_burst_size_count", &[("worker", "0")]).unwrap();
    assert!(bursts > before.value("vswitch_worker_rx_burst_size_count", &[("worker", "0")]).unwrap());
    assert!(after.value("vswitch_worker_busy_seconds_total", &[("worker", "0")]).unwrap() > 0.0);
    // The EAL holds whole hugepages, the pool among them.
    let mapped = after.value("vswitch_eal_mapped_bytes", &[]).unwrap();
    assert!(mapped >= (2 << 20) as f64 && mapped % (2 << 20) as f64 == 0.0, "{mapped}");
    assert!(after.value("vswitch_table_lookups_total", &[("table", "0")]).unwrap() >= 6.0);
    assert!(after.value("vswitch_tunnel_encap_packets_total", &[("tunnel", "vx0")]).is_some());
    // Control plane: the show-drops call above is counted with its code; a bad request too.
    let bad = sw.ctl(&["get-port", "nope"]);
    assert!(!bad.status.success());
    let after = scrape(addr);
    let method = |m: &str, code: &str| {
        after.value("vswitch_grpc_requests_total", &[("method", m), ("code", code)]).unwrap_or(0.0)
    };
    assert_eq!(method("/vswitch.v1.SwitchService/ListDrops", "ok"), 1.0);
    assert_eq!(method("/vswitch.v1.PortService/GetPort", "not_found"), 1.0);
    assert_eq!(
        after
            .value("vswitch_grpc_request_duration_seconds_count", &[("method", "/vswitch.v1.SwitchService/ListDrops")])
            .unwrap(),
        1.0
    );

    // Every metric named by the issue is there (gRPC ones once a request was served).
    let names = after.sample_names();
    let missing: Vec<_> = REQUIRED.iter().filter(|n| !names.contains(*n)).collect();
    assert!(missing.is_empty(), "missing metrics: {missing:?}");

    // The same figures in OpenMetrics, for Prometheus, parse with that parser.
    let (status, content_type, body) = http_get(addr, "/metrics", Some("application/openmetrics-text; version=1.0.0"));
    assert_eq!(status, 200);
    assert!(content_type.starts_with("application/openmetrics-text"), "{content_type}");
    assert!(body.ends_with("# EOF\n"));
    let om = Exposition::parse(&body, "openmetrics");
    assert!(om.value("vswitch_port_rx_packets_total", &[("port", "h1")]).unwrap() >= rx(&before, "h1") + 7.0);

    // Every metric the Grafana dashboard queries exists.
    let names = after.sample_names();
    let families: BTreeSet<&str> = after.families.keys().map(String::as_str).collect();
    let dash = dashboard_metrics();
    assert!(dash.len() >= 15, "{dash:?}");
    let unknown: Vec<_> =
        dash.iter().filter(|m| !names.contains(m.as_str()) && !families.contains(m.as_str())).collect();
    assert!(unknown.is_empty(), "the dashboard queries metrics the switch does not export: {unknown:?}");

    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
}

/// A Prometheus server in a temp dir, scraping `target` every second. Killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: vswitch\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let addr = free_addr();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prometheus (Debian package prometheus)");
        Prometheus { child, addr, _dir: dir }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Runs an instant PromQL query; the values of the result vector.
    fn query(&self, promql: &str) -> Option<Vec<f64>> {
        let encoded: String = promql
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b == b'_' { (b as char).to_string() } else { format!("%{b:02X}") })
            .collect();
        let (status, _, body) =
            std::panic::catch_unwind(|| http_get(self.addr, &format!("/api/v1/query?query={encoded}"), None)).ok()?;
        if status != 200 {
            return None;
        }
        let v: Value = serde_json::from_str(&body).ok()?;
        let values = v["data"]["result"]
            .as_array()?
            .iter()
            .filter_map(|r| r["value"][1].as_str().and_then(|s| s.parse().ok()))
            .collect();
        Some(values)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_prometheus_scrapes_the_switch() {
    let _g = serial();
    let topo = Topology::new(2);
    let addr = free_addr();
    let sw = Vswitchd::start_with_control(&format!("metrics = \"{addr}\""), &topo.port_config());
    let prom = Prometheus::start(addr);
    const FRAMES: usize = 25;
    // The hosts send nothing on their own (no IPv6): h1's rx count is exactly what it sends.
    topo.send_frames(1, "02:00:00:00:77:77", "beef01", 60, FRAMES);
    let query = r#"vswitch_port_rx_packets_total{job="vswitch",port="h1"}"#;
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut last = None;
    while Instant::now() < deadline {
        last = prom.query(query);
        if last.as_deref() == Some(&[FRAMES as f64][..]) {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(last, Some(vec![FRAMES as f64]), "Prometheus did not see {FRAMES} packets:\n{}", prom.log());
    // PromQL over the switch's series works as the dashboard uses it.
    let up = prom.query(r#"up{job="vswitch"}"#);
    assert_eq!(up, Some(vec![1.0]));
    let reasons = prom.query(r#"count(vswitch_drops_total{job="vswitch",port=""})"#).unwrap();
    assert!(reasons[0] > 20.0, "{reasons:?}");
    drop(prom);
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
}

/// Runs `vswitchctl trace-live` in the background; returns the child.
fn trace_live(sw: &Vswitchd, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vswitchctl"))
        .arg("--server")
        .arg(&sw.socket)
        .arg("--json")
        .arg("trace-live")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("vswitchctl")
}

/// The JSON events a trace-live child printed.
fn events(child: Child) -> Vec<Value> {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "trace-live failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    serde_json::Deserializer::from_str(&text).into_iter::<Value>().map(|v| v.expect("JSON event")).collect()
}

/// Waits until the switch reports a running live trace (its gRPC stream is open), then
/// checks that a second one is refused meanwhile.
fn wait_armed(sw: &Vswitchd) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let info: Value = serde_json::from_slice(&sw.ctl(&["--json", "show"]).stdout).expect("show JSON");
        if info["live_trace"] == true {
            break;
        }
        assert!(Instant::now() < deadline, "live trace did not start: {info}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = sw.ctl(&["trace-live", "in_port=1", "--timeout", "1"]);
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("FailedPrecondition: another live trace is running"), "{err}");
}

#[test]
fn live_trace_follows_a_ping_and_names_a_drop() {
    let _g = serial();
    let topo = Topology::new(2);
    let sw = Vswitchd::start_with_control("metrics = \"off\"", &topo.port_config());
    // Let both hosts' MACs be learned, so the echo request is forwarded, not flooded.
    assert!(topo.ping(1, 2, 1));

    let tracer = trace_live(&sw, &["in_port=1,icmp", "--count", "1", "--timeout", "20"]);
    wait_armed(&sw);
    assert!(topo.ping(1, 2, 1));
    let ev = events(tracer);
    assert_eq!(ev.len(), 1, "{ev:?}");
    let e = &ev[0];
    assert_eq!(e["in_port"], 1);
    assert_eq!(e["in_port_name"], "h1");
    assert_eq!(e["outputs"], serde_json::json!([2]), "{e}");
    assert_eq!(e["fate"], "sent to port 2");
    let stages: Vec<&str> = e["stages"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert!(stages[0].starts_with("received on port 1 (h1) by worker 0"), "{stages:?}");
    assert!(stages.iter().any(|s| s.starts_with("parse: ") && s.contains("icmp")), "{stages:?}");
    assert!(stages.iter().any(|s| s.starts_with("table 0:")), "{stages:?}");
    assert!(stages.iter().any(|s| s.contains("L2 switch") || s.contains("normal")), "{stages:?}");
    assert!(stages.last().unwrap().starts_with("output to port 2 (h2)"), "{stages:?}");
    assert!(e["packet"].as_str().unwrap().contains(&format!("nw_dst={}", topo.host(2).ip)), "{e}");

    // A flow that drops ICMP from h1: the trace shows the flow and the reason.
    let add = sw.ctl(&["add-flow", "table=0,priority=200,in_port=1,icmp,actions=drop"]);
    assert!(add.status.success(), "{}", String::from_utf8_lossy(&add.stderr));
    let tracer = trace_live(&sw, &["icmp", "--count", "2", "--timeout", "20"]);
    wait_armed(&sw);
    assert!(!topo.ping(1, 2, 2));
    let ev = events(tracer);
    assert_eq!(ev.len(), 2, "{ev:?}");
    for e in &ev {
        assert_eq!(e["fate"], "dropped: flow_drop", "{e}");
        assert_eq!(e["drops"][0]["reason"], "flow_drop");
        assert_eq!(e["drops"][0]["stage"], "flow");
        assert!(e["steps"][0]["flow"].as_str().unwrap().contains("priority=200"), "{e}");
        assert!(e["outputs"].as_array().is_none_or(|o| o.is_empty()), "{e}");
    }
    // The packets were counted as dropped too, as any other drop.
    let drops = sw.ctl(&["--json", "show-drops"]);
    let drops: Value = serde_json::from_slice(&drops.stdout).unwrap();
    assert!(drops["drops"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["reason"] == "flow_drop" && d["packets"].as_u64() >= Some(2)));

    // Bad filters are refused, naming the field.
    let bad = sw.ctl(&["trace-live", "in_port=1,nw_dst=300.0.0.1"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("InvalidArgument: filter:"), "{bad:?}");
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
}
