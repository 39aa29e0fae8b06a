//! The benchmark runner works end to end. `bench/cnf.py --smoke` starts this switch with
//! memif ports, drives `tgen` through it, provisions endpoints at run time (`system:` ports
//! on veth pairs), does the same through testpmd, and writes figures that make sense, with
//! the timer wake-up cost of the forwarding core. `--short` runs every scenario on this
//! switch and OVS-DPDK, and p2p over vhost-user, with a policy change on both switches.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Runs `cnf.py` with `args` and the test's binaries; returns its JSON and Markdown (files
/// `name`.json and `name`.md of its output directory) once checked that it wrote its chart.
fn run_cnf(args: &[&str], name: &str) -> (Value, String) {
    let tgen = Path::new(env!("CARGO_BIN_EXE_tgen"));
    let bin_dir = tgen.parent().expect("binary directory");
    assert!(bin_dir.join("vswitchd").exists(), "vswitchd is built next to tgen");
    let out_dir = tempfile::tempdir().expect("temp dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("cnf.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--out")
        .arg(out_dir.path())
        .output()
        .expect("run cnf.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cnf.py {args:?} failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let read = |ext: &str| std::fs::read_to_string(out_dir.path().join(format!("{name}.{ext}"))).expect(ext);
    let json = serde_json::from_str(&read("json")).expect("JSON");
    let svg = read("svg");
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
    (json, read("md"))
}

fn figure(v: &Value, key: &str) -> f64 {
    v[key].as_f64().unwrap_or_else(|| panic!("no {key}: {v}"))
}

/// The row of `system` on `scenario`.
fn row<'a>(json: &'a Value, system: &str, scenario: &str) -> &'a Value {
    json["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["system"] == system && r["scenario"] == scenario)
        .unwrap_or_else(|| panic!("no {scenario} row for {system}: {}", json["scenarios"]))
}

/// A forwarding scenario's figures: traffic came through, some rate passed without loss,
/// packets at 10, 50 and 90% of it were timed (by stamps that make sense: under a second),
/// and cycles, CPU and RSS while forwarding (in the 90% trial) were read.
fn assert_forwarding_figures(r: &Value) {
    assert!(figure(r, "max_received_mpps") > 0.01, "no packet came through: {r}");
    assert!(figure(r, "zero_loss_mpps") > 0.0, "no rate passed without loss: {r}");
    for pct in ["10%", "50%", "90%"] {
        let p50 = figure(&r["latency_ns"][pct], "p50");
        assert!(0.0 < p50 && p50 < 1e9, "latency at {pct}: {r}");
    }
    assert!(figure(r, "cycles_per_packet") > 0.0, "{r}");
    assert!(figure(r, "cpu_cores_at_90pct") > 0.0, "{r}");
    assert!(figure(r, "rss_mib") > 1.0 && r["rss_read_at"] == "90%", "{r}");
}

/// A system's packets after 50 and 250 ms of idle were all forwarded and timed.
fn assert_idle_wake_figures(system: &Value) {
    for key in ["idle_wake_us", "deep_idle_wake_us"] {
        let w = &system[key];
        assert!(w["packets"].as_u64().is_some_and(|n| n > 0) && w["lost"] == 0, "{key}: {system}");
        assert!(0.0 < figure(w, "p50") && figure(w, "p50") <= figure(w, "max"), "{key}: {system}");
    }
}

#[test]
fn cnf_runner_smoke() {
    let (json, table) = run_cnf(&["--smoke"], "smoke");
    let sys = &json["systems"]["vswitchd"];
    let deploy = figure(sys, "deploy_seconds");
    assert!(deploy > 0.0 && deploy < 30.0, "{sys}");
    assert!(sys["idle_cpu_cores"].as_f64().is_some() && figure(sys, "idle_rss_mib") > 1.0, "{sys}");
    assert_idle_wake_figures(sys);
    // Endpoints added at run time (system: ports on veth pairs) all forwarded.
    assert_eq!(sys["endpoints"], 3, "{sys}");
    // null if one did not forward within the minute.
    assert!(figure(sys, "provision_seconds") > 0.0, "{sys}");
    assert_forwarding_figures(row(&json, "vswitchd", "p2p"));
    // testpmd, the bound, on the same traffic: its own cycle count, read from its log.
    assert_forwarding_figures(row(&json, "testpmd", "p2p"));
    assert!(json["systems"]["testpmd"]["deploy_seconds"].as_f64().is_some(), "{}", json["systems"]);
    assert!(json["machine"]["dpdk"].as_str().unwrap().starts_with("22.11"), "{}", json["machine"]);
    // The machine's timer wake-up cost on the forwarding core, for the idle figures.
    let wakes = json["machine"]["timer_wake"].as_array().expect("timer wake figures");
    assert_eq!(wakes.iter().map(|w| w["sleep_us"].as_u64().unwrap()).collect::<Vec<_>>(), [32, 500]);
    assert!(wakes.iter().all(|w| w["cpu_us_per_wake"].as_f64().unwrap() > 0.0), "{wakes:?}");
    // And a signal's from the generator's core, as a peer's rx interrupt.
    let signal = &json["machine"]["signal_wake"];
    assert_eq!(signal["count"].as_u64(), Some(5), "{signal}");
    assert!(signal["wake_us"]["p50"].as_f64().unwrap() > 0.0, "{signal}");
    assert!(table.contains("| p2p | vswitchd |") && table.contains("| p2p | testpmd |"), "{table}");
    assert!(table.contains("- 500 µs sleeps: "), "{table}");
    assert!(table.contains("- a blocked read on core 1 woken by a byte from core 0"), "{table}");
}

#[test]
fn cnf_runner_short_runs_every_scenario_on_both_switches() {
    let systems = ["vswitchd", "vswitchd-vhost", "ovs-dpdk", "testpmd-vhost"];
    let scenarios = ["p2p", "l2", "acl64k", "encap", "decap"];
    let (json, table) = run_cnf(&["--short", "--systems", &systems.join(",")], "short");
    for system in systems {
        // Over vhost-user only port to port is run (the link's cost under load).
        let run_here: &[&str] = if system.ends_with("-vhost") { &scenarios[..1] } else { &scenarios };
        for scenario in run_here {
            assert_forwarding_figures(row(&json, system, scenario));
            assert!(table.contains(&format!("| {scenario} | {system} | ")), "{table}");
        }
        let sys = &json["systems"][system];
        assert_idle_wake_figures(sys);
        assert!(figure(sys, "idle_rss_mib") > 1.0, "{sys}");
    }
    assert_eq!(json["scenarios"].as_array().unwrap().len(), 2 * scenarios.len() + 2, "{}", json["scenarios"]);
    for switch in ["vswitchd", "ovs-dpdk"] {
        let sys = &json["systems"][switch];
        assert!(figure(sys, "deploy_seconds") > 0.0, "{sys}");
        // The 10,000-rule change went live on traffic: every flow, each dropped before it,
        // came through after it (null while one had not).
        for key in ["policy_update_seconds", "policy_first_flow_live_seconds", "policy_every_flow_live_seconds"] {
            assert!(sys[key].as_f64().is_some(), "{key}: {sys}");
        }
        assert!(figure(sys, "received_after_change_fraction") > 0.0, "{sys}");
        assert_eq!(sys["policy_update_trials"].as_array().map(Vec::len), Some(1), "{sys}");
        // Both endpoints pinged through the switch (null if one did not within the minute).
        assert_eq!(sys["endpoints"], 2, "{sys}");
        assert!(sys["provision_seconds"].as_f64().is_some(), "{sys}");
    }
    // Back-off is on by default: idle, this switch's worker sleeps; OVS-DPDK's PMD polls.
    let idle = |s: &str| figure(&json["systems"][s], "idle_cpu_cores");
    assert!(idle("vswitchd") < 0.5 && idle("ovs-dpdk") > 0.5, "{}", json["systems"]);
    let machine = &json["machine"];
    if Path::new(env!("CARGO_MANIFEST_DIR")).join("../.git").exists() {
        assert!(machine["vswitchd_commit"].as_str().is_some_and(|c| c.len() >= 12), "{machine}");
    }
    assert!(machine["ovs_dpdk"].as_str().is_some_and(|v| v.contains("Open vSwitch")), "{machine}");
    assert!(machine["dpdk_package"].as_str().is_some_and(|v| v.starts_with("22.11")), "{machine}");
    assert!(table.contains("| system | deployment s | 10k-rule policy update (median of 1)"), "{table}");
    assert!(table.contains("Latency at 10%, 50% and 90% of each zero-loss rate"), "{table}");
}
