//! Helpers shared by the integration tests that start vswitchd.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Where cargo built `tgen`, and vswitchd next to it.
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_tgen")).parent().expect("binary directory").to_path_buf()
}

/// Starts vswitchd with `config` (written to `dir/sw.toml`, its log in `dir/vswitchd.log`)
/// and waits until its API socket, `dir/sw.sock`, exists.
pub fn start_switch(dir: &Path, config: &str) -> Child {
    std::fs::write(dir.join("sw.toml"), config).unwrap();
    // Both streams in one log, through one file handle (one offset): the log lines are on stderr.
    let log = std::fs::File::create(dir.join("vswitchd.log")).unwrap();
    let mut child = Command::new(bin_dir().join("vswitchd"))
        .arg("-c")
        .arg(dir.join("sw.toml"))
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start vswitchd");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("sw.sock").exists() {
        let failed = if child.try_wait().unwrap().is_some() {
            Some("vswitchd exited")
        } else if Instant::now() > deadline {
            Some("vswitchd's API did not come up")
        } else {
            None
        };
        if let Some(why) = failed {
            stop_switch(&mut child);
            panic!("{why}: {}", std::fs::read_to_string(dir.join("vswitchd.log")).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

/// Stops vswitchd as an operator would (SIGINT lets it shut down cleanly), killing it if it
/// has not exited within 10 s.
pub fn stop_switch(child: &mut Child) {
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Whether the test runs as root (DPDK with hugepages needs it).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| s.lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")))
        .unwrap_or(false)
}

/// A vswitchd config: one worker on core 1, the API on `dir/sw.sock`, ports a (1) and b (2)
/// with devargs `a` and `b`, one flow from a to b, and `switch` in `[switch]`.
pub fn two_port_config(dir: &Path, file_prefix: &str, switch: &str, a: &str, b: &str) -> String {
    format!(
        r#"
[eal]
main_core = 0
file_prefix = "{file_prefix}"
[switch]
{switch}
[control]
socket = "{api}"
metrics = "off"
[[port]]
name = "a"
number = 1
devargs = "{a}"
[[port]]
name = "b"
number = 2
devargs = "{b}"
[[worker]]
core = 1
[[flow]]
rule = "in_port=1,actions=output:2"
"#,
        api = dir.join("sw.sock").display(),
    )
}

/// `vswitchctl --server dir/sw.sock ARGS`'s output; fails the test if the command fails.
pub fn ctl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(bin_dir().join("vswitchctl"))
        .arg("--server")
        .arg(dir.join("sw.sock"))
        .args(args)
        .output()
        .expect("run vswitchctl");
    assert!(
        out.status.success(),
        "vswitchctl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Worker 0 of `vswitchctl --json list-workers`.
pub fn worker(dir: &Path) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&ctl(dir, &["--json", "list-workers"])).unwrap();
    v["workers"][0].clone()
}

/// A counter of the API's JSON (proto3 JSON writes 64-bit integers as strings).
pub fn count(w: &serde_json::Value, field: &str) -> u64 {
    match &w[field] {
        serde_json::Value::String(s) => s.parse().unwrap(),
        v => v.as_u64().unwrap_or(0),
    }
}
