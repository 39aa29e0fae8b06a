//! Helpers shared by the integration tests that start vswitchd.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where cargo built `tgen`, and vswitchd next to it.
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_tgen")).parent().expect("binary directory").to_path_buf()
}

/// Starts vswitchd with `config` (written to `dir/sw.toml`, its log in `dir/vswitchd.log`)
/// and waits until its API socket, `dir/sw.sock`, exists.
pub fn start_switch(dir: &Path, config: &str) -> Child {
    std::fs::write(dir.join("sw.toml"), config).unwrap();
    let mut child = Command::new(bin_dir().join("vswitchd"))
        .arg("-c")
        .arg(dir.join("sw.toml"))
        .stdout(std::fs::File::create(dir.join("vswitchd.log")).unwrap())
        .stderr(Stdio::inherit())
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
