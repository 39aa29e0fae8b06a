//! The benchmark runner works end to end: `bench/cnf.py --smoke` starts this switch with
//! memif ports, drives `tgen` through it, provisions endpoints at run time, does the same
//! through testpmd, and writes figures that make sense, with the timer wake-up cost of the
//! forwarding core.

use std::path::Path;
use std::process::Command;

#[test]
fn cnf_runner_smoke() {
    let tgen = Path::new(env!("CARGO_BIN_EXE_tgen"));
    let bin_dir = tgen.parent().expect("binary directory");
    assert!(bin_dir.join("vswitchd").exists(), "vswitchd is built next to tgen");
    let out_dir = tempfile::tempdir().expect("temp dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("cnf.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg("--smoke")
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--out")
        .arg(out_dir.path())
        .output()
        .expect("run cnf.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "cnf.py --smoke failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.path().join("smoke.json")).expect("smoke.json"))
            .expect("JSON");
    let sys = &json["systems"]["vswitchd"];
    let deploy = sys["deploy_seconds"].as_f64().expect("deployment time");
    assert!(deploy > 0.0 && deploy < 30.0, "{sys}");
    assert!(sys["idle_cpu_cores"].as_f64().is_some() && sys["idle_rss_mib"].as_f64().unwrap() > 1.0, "{sys}");
    // Endpoints added at run time (af_packet on veth pairs) all forwarded.
    assert_eq!(sys["endpoints"], 3, "{sys}");
    let provision = sys["provision_seconds"].as_f64().expect("every endpoint forwarded");
    assert!(provision > 0.0 && provision >= sys["provision_api_seconds"].as_f64().unwrap(), "{sys}");
    let p2p = &json["scenarios"][0];
    assert_eq!(p2p["scenario"], "p2p");
    let max = p2p["max_received_mpps"].as_f64().unwrap();
    assert!(max > 0.01, "no packet came through: {p2p}");
    let zero_loss = p2p["zero_loss_mpps"].as_f64().unwrap();
    assert!(zero_loss <= p2p["max_offered_mpps"].as_f64().unwrap() * 1.02, "{p2p}");
    assert!(p2p["cycles_per_packet"].as_f64().unwrap() > 0.0, "{p2p}");
    // testpmd, the bound, on the same traffic: its own cycle count, read from its log.
    let testpmd = &json["scenarios"][1];
    assert_eq!((testpmd["system"].as_str(), testpmd["scenario"].as_str()), (Some("testpmd"), Some("p2p")));
    assert!(testpmd["max_received_mpps"].as_f64().is_some_and(|m| m > 0.01), "{testpmd}");
    assert!(testpmd["cycles_per_packet"].as_f64().is_some_and(|c| c > 0.0), "{testpmd}");
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
    let table = std::fs::read_to_string(out_dir.path().join("smoke.md")).expect("smoke.md");
    assert!(table.contains("| p2p | vswitchd |") && table.contains("| p2p | testpmd |"), "{table}");
    assert!(table.contains("- 500 µs sleeps: "), "{table}");
    assert!(table.contains("- a blocked read on core 1 woken by a byte from core 0"), "{table}");
    let svg = std::fs::read_to_string(out_dir.path().join("smoke.svg")).expect("smoke.svg");
    assert!(svg.starts_with("<svg") && svg.contains("p2p · vswitchd") && svg.trim_end().ends_with("</svg>"));
}
