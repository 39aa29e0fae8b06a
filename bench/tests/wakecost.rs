//! `wakecost` measures a sleeping thread: its figures must hang together (no more wakes than
//! sleeps fit in a second, CPU charged for each wake, percentiles in order), and bad
//! arguments are refused with a message.

use std::process::Command;

fn wakecost() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wakecost"))
}

#[test]
fn wakecost_figures_are_consistent_for_each_sleep_length() {
    let out =
        wakecost().args(["--core", "0", "--sleep-us", "200,1000", "--seconds", "0.3", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["core"], 0);
    let rows = json["sleeps"].as_array().expect("sleeps");
    assert_eq!(rows.len(), 2, "{json}");
    for (row, sleep_us) in rows.iter().zip([200.0, 1000.0]) {
        assert_eq!(row["sleep_us"].as_f64(), Some(sleep_us), "{row}");
        let wakes = row["wakes_per_s"].as_f64().unwrap();
        // Each wake follows a full sleep: never more than 1 s / sleep of them.
        assert!(wakes > 0.0 && wakes <= 1e6 / sleep_us, "{row}");
        let per_wake = row["cpu_us_per_wake"].as_f64().unwrap();
        let cores = row["cpu_cores"].as_f64().unwrap();
        assert!(per_wake > 0.0 && cores > 0.0 && cores < 1.0, "{row}");
        // CPU share = wakes/s x CPU per wake (rounding aside).
        assert!((cores - wakes * per_wake / 1e6).abs() <= 0.01 + cores * 0.05, "{row}");
        let over = &row["oversleep_us"];
        let (p50, p99, max) =
            (over["p50"].as_f64().unwrap(), over["p99"].as_f64().unwrap(), over["max"].as_f64().unwrap());
        assert!(0.0 <= p50 && p50 <= p99 && p99 <= max, "{row}");
    }
}

#[test]
fn wakecost_measures_wake_ups_by_a_signal_from_another_core() {
    let out = wakecost()
        .args(["--core", "1", "--sleep-us", "1000", "--seconds", "0.1", "--signal-from", "0"])
        .args(["--signal-gap-ms", "5", "--signals", "20", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let signal = &json["signal"];
    assert_eq!((signal["from_core"].as_u64(), signal["gap_ms"].as_u64()), (Some(0), Some(5)), "{json}");
    // Every signal woke the reader once.
    assert_eq!(signal["count"].as_u64(), Some(20), "{json}");
    let wake = &signal["wake_us"];
    let (p50, p99, max) = (wake["p50"].as_f64().unwrap(), wake["p99"].as_f64().unwrap(), wake["max"].as_f64().unwrap());
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{json}");
    // Without --signal-from there is no such figure.
    let out = wakecost().args(["--sleep-us", "1000", "--seconds", "0.1", "--json"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(json.get("signal").is_none(), "{json}");
}

#[test]
fn wakecost_refuses_a_zero_sleep() {
    let out = wakecost().args(["--sleep-us", "0", "--seconds", "0.1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--sleep-us"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = wakecost().args(["--signal-from", "0", "--signals", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--signals"), "{}", String::from_utf8_lossy(&out.stderr));
}
