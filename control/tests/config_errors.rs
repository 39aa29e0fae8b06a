//! Bad configurations fail at start with a clear message and a non-zero exit, and leave
//! nothing behind: no hugepage files, no DPDK runtime directory, no socket.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

struct Failed {
    code: Option<i32>,
    stderr: String,
    prefix: String,
    socket: std::path::PathBuf,
}

/// Runs vswitchd on `config` (a full file with {PREFIX} and {SOCKET} placeholders).
fn start_failing(config: &str) -> Failed {
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("vsbad");
    let socket = dir.path().join("vswitchd.sock");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config.replace("{PREFIX}", &prefix).replace("{SOCKET}", socket.to_str().unwrap())).unwrap();
    let out = Command::new(VSWITCHD).arg("--config").arg(&path).output().unwrap();
    Failed { code: out.status.code(), stderr: String::from_utf8_lossy(&out.stderr).into_owned(), prefix, socket }
}

fn assert_clean_failure(f: &Failed, message: &str) {
    assert_eq!(f.code, Some(1), "exit code; stderr:\n{}", f.stderr);
    assert!(f.stderr.contains(message), "expected {message:?} in:\n{}", f.stderr);
    assert!(f.stderr.starts_with("vswitchd: error:") || f.stderr.contains("\nvswitchd: error:"), "{}", f.stderr);
    assert_eq!(dpdk_leftovers(&f.prefix), Vec::<String>::new(), "DPDK files left behind");
    assert!(!f.socket.exists(), "socket left behind");
}

const HEAD: &str = "[eal]\nmain_core = 0\nfile_prefix = \"{PREFIX}\"\n[control]\nsocket = \"{SOCKET}\"\n";
const NULL_PORT: &str = "[[port]]\nname = \"a\"\nnumber = 1\ndevargs = \"net_null0,no-rx=1\"\n";
const WORKER: &str = "[[worker]]\ncore = 1\n";

#[test]
fn missing_file() {
    let out = Command::new(VSWITCHD).args(["--config", "/nonexistent/vswitchd.toml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot read config file /nonexistent/vswitchd.toml"), "{err}");
}

#[test]
fn not_toml_or_unknown_key() {
    let f = start_failing(&format!("{HEAD}{NULL_PORT}{WORKER}[switch]\nmac_aging = 5\n"));
    assert_clean_failure(&f, "unknown field `mac_aging`");
    let f = start_failing("[eal\nthis is not toml");
    assert_clean_failure(&f, "is not valid TOML");
}

#[test]
fn unknown_devargs_driver() {
    let f =
        start_failing(&format!("{HEAD}[[port]]\nname = \"x\"\nnumber = 1\ndevargs = \"net_bogus0,foo=1\"\n{WORKER}"));
    assert_clean_failure(&f, "port 'x': unknown driver 'net_bogus0'");
}

#[test]
fn core_not_present() {
    let f = start_failing(&format!("{HEAD}{NULL_PORT}[[worker]]\ncore = 250\n"));
    assert_clean_failure(&f, "worker core 250 is not present");
}

#[test]
fn two_workers_on_one_core() {
    let f = start_failing(&format!("{HEAD}{NULL_PORT}{WORKER}{WORKER}"));
    assert_clean_failure(&f, "two workers on core 1");
}

#[test]
fn idle_sleeps_too_long_or_tiers_out_of_order() {
    let f = start_failing(&format!(
        "{HEAD}{NULL_PORT}{WORKER}[switch]\nidle_long_sleep_us = 20000\nidle_deep_after_ms = 500\nidle_long_after_ms = 200\n"
    ));
    for msg in [
        "switch.idle_long_sleep_us: 20000 is over 10000 (10 ms)",
        "switch.idle_long_after_ms: 200 is below idle_deep_after_ms (500)",
    ] {
        assert_clean_failure(&f, msg);
    }
}

/// (Allowed with `idle_backoff = false`, since back-off can be switched on at run time: a
/// config unit test checks that.)
#[test]
fn a_wake_up_latency_limit_over_a_second() {
    let f = start_failing(&format!(
        "{HEAD}{NULL_PORT}{WORKER}[switch]\nidle_backoff = false\nidle_cpu_resume_latency_us = 2000000\n"
    ));
    assert_clean_failure(&f, "switch.idle_cpu_resume_latency_us: 2000000 is over 1000000 (1 s)");
}

#[test]
fn several_problems_are_listed_together() {
    let f = start_failing(&format!(
        "{HEAD}[[port]]\nname = \"a\"\nnumber = 0\ndevargs = \"net_null0\"\nmtu = 20\n[[port]]\nname = \"a\"\nnumber = 2\ndevargs = \"net_null1\"\n"
    ));
    for msg in ["number 0 must be", "mtu 20 must be", "port name 'a' is used twice", "no [[worker]]"] {
        assert_clean_failure(&f, msg);
    }
}

#[test]
fn hugepage_shortage_says_how_many_and_how() {
    let _g = serial();
    // Ten million mbufs need about 23 GiB: more than any test machine reserves.
    let f = start_failing(&format!("{HEAD}[switch]\nmbufs = 10000000\n{NULL_PORT}{WORKER}"));
    assert_clean_failure(&f, "not enough hugepages: this configuration needs");
    assert_clean_failure(&f, "> /proc/sys/vm/nr_hugepages");
}

#[test]
fn port_that_dpdk_cannot_open_fails_after_cleanup() {
    let _g = serial();
    // Valid config, but the interface does not exist: af_packet fails inside DPDK, after
    // the EAL took its memory. The switch must still leave nothing behind.
    let free = free_hugepages();
    let f = start_failing(&format!(
        "{HEAD}{NULL_PORT}[[port]]\nname = \"ghost\"\nnumber = 2\ndevargs = \"net_af_packet0,iface=vsnosuchif0\"\n{WORKER}"
    ));
    assert_clean_failure(&f, "port 'ghost' (net_af_packet0,iface=vsnosuchif0)");
    assert_eq!(free_hugepages(), free, "hugepages returned");
}

#[test]
fn check_mode_prints_the_memory_plan() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.toml");
    let cfg =
        format!("{HEAD}{NULL_PORT}{WORKER}").replace("{PREFIX}", "vscheck").replace("{SOCKET}", "/tmp/vscheck.sock");
    std::fs::write(&path, cfg).unwrap();
    let out = Command::new(VSWITCHD).arg("--config").arg(&path).arg("--check").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("mbufs x 2176 B data room") && text.contains("hugepages of 2048 KiB"), "{text}");
    assert!(text.contains("configuration OK"));
    assert!(!Path::new("/tmp/vscheck.sock").exists());
}
