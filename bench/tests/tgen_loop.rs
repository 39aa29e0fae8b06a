//! `tgen` over a DPDK ring port, which hands every frame it sends straight back: it counts
//! what came back and says when every flow's first frame arrived, which the policy-update
//! benchmark uses to tell when a change is live on all traffic.

use std::process::Command;

/// Runs tgen on a looped-back ring port; returns its JSON report.
fn tgen_loop(flows: u32, mpps: f64, seconds: f64) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_tgen"))
        .args(["--tx", "net_ring0", "--core", "0", "--warmup", "0", "--drain-ms", "20"])
        .args(["--file-prefix", &format!("tgloop{}", std::process::id())])
        .args(["--flows", &flows.to_string(), "--rate", &mpps.to_string(), "--seconds", &seconds.to_string()])
        .output()
        .expect("run tgen");
    assert!(out.status.success(), "tgen failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("tgen prints JSON")
}

#[test]
fn every_flow_time_comes_once_the_last_flow_has_arrived() {
    // 1,000 flows round-robin at 0.5 Mpps: the last flow's first frame leaves 999 frames
    // (about 2 ms) after the first one. Pacing may send a late burst of up to 64 at once.
    let r = tgen_loop(1000, 0.5, 0.2);
    assert!(r["sent"].as_u64().unwrap() > 1000, "{r}");
    assert_eq!(r["stamped"], r["sent"], "a ring loses nothing: {r}");
    let first = r["first_rx_unix_ns"].as_u64().expect("first frame time");
    let every = r["every_flow_rx_unix_ns"].as_u64().expect("every flow arrived");
    let gap_ms = (every - first) as f64 / 1e6;
    assert!(gap_ms >= (999.0 - 64.0) / 0.5e6 * 1e3, "every flow by {gap_ms} ms after the first: {r}");
}

#[test]
fn every_flow_time_is_absent_while_a_flow_has_not_arrived() {
    // 2 ms at 0.1 Mpps is about 200 frames: 800 of the 1,000 flows never sent one.
    let r = tgen_loop(1000, 0.1, 0.002);
    let sent = r["sent"].as_u64().unwrap();
    assert!(sent > 0 && sent < 1000, "{r}");
    assert!(r["first_rx_unix_ns"].as_u64().is_some(), "{r}");
    assert!(r["every_flow_rx_unix_ns"].is_null(), "{r}");
}
