//! Wake-up latency limits for the cores of idle workers (the kernel's per-CPU PM QoS,
//! `/sys/devices/system/cpu/cpuN/power/pm_qos_resume_latency_us`).
//!
//! A worker that backs off lets its core idle, and the kernel's cpuidle governor may then
//! put the core in a deep idle state (C6 and deeper on bare metal; a halt the host must
//! wake in a VM): the first packet after idle waits for the core to come back. A limit on
//! the core's resume latency keeps it in states it leaves within that time. DPDK 24.11's
//! `rte_power_qos_set_cpu_resume_latency` (used by l3fwd-power) writes the same file, with
//! the same meaning of 0: no idle state with any exit latency, so the kernel polls.
//!
//! The switch sets the limit of each worker core at start and puts back what it found at
//! stop. The value it replaced is kept in a file beside the API socket while the limit
//! holds: a switch killed before it could put it back leaves the file, and the next start
//! puts back that value, not the leftover limit.

use std::path::{Path, PathBuf};

/// Where sysfs keeps the CPU devices.
pub const SYSFS_CPUS: &str = "/sys/devices/system/cpu";

/// The kernel's spelling of a limit: "n/a" is zero latency (only the polling idle state);
/// "0" means no limit.
pub fn sysfs_value(latency_us: u32) -> String {
    if latency_us == 0 {
        "n/a".to_string()
    } else {
        latency_us.to_string()
    }
}

/// What a value read from the file means, for the log.
pub fn describe(value: &str) -> String {
    match value {
        "0" => "no limit".to_string(),
        "n/a" => "0 µs: the core polls when idle".to_string(),
        v => format!("{v} µs"),
    }
}

/// One core's resume latency limit, set by the switch; dropping it puts back the value it
/// replaced.
#[derive(Debug)]
pub struct ResumeLatencyLimit {
    cpu: usize,
    path: PathBuf,
    previous: String,
    /// Keeps `previous` while the limit holds, so a switch that is killed (and cannot put
    /// it back) leaves it for the next start.
    record: PathBuf,
    /// The file held another switch's limit, left by one that did not stop.
    found_leftover: Option<String>,
}

impl ResumeLatencyLimit {
    /// Sets core `cpu`'s limit to `latency_us` (0: the core never leaves polling idle),
    /// keeping the value it replaces in `state_dir`.
    pub fn set(state_dir: &Path, cpu: usize, latency_us: u32) -> Result<Self, String> {
        Self::set_in(Path::new(SYSFS_CPUS), state_dir, cpu, latency_us)
    }

    /// `set` under another sysfs root (tests).
    pub fn set_in(root: &Path, state_dir: &Path, cpu: usize, latency_us: u32) -> Result<Self, String> {
        let path = root.join(format!("cpu{cpu}/power/pm_qos_resume_latency_us"));
        let found = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .trim()
            .to_string();
        let record = state_dir.join(format!("cpu{cpu}.resume-latency-before"));
        let recorded = std::fs::read_to_string(&record).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let (previous, found_leftover) = match recorded {
            Some(before) => (before, Some(found)),
            None => {
                std::fs::write(&record, &found).map_err(|e| format!("cannot write {}: {e}", record.display()))?;
                (found, None)
            }
        };
        if let Err(e) = std::fs::write(&path, sysfs_value(latency_us)) {
            let _ = std::fs::remove_file(&record);
            let hint = if e.kind() == std::io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(libc::EROFS) {
                " (a pod needs a writable /sys: privileged)"
            } else {
                ""
            };
            return Err(format!("cannot write {}: {e}{hint}", path.display()));
        }
        Ok(ResumeLatencyLimit { cpu, path, previous, record, found_leftover })
    }

    pub fn cpu(&self) -> usize {
        self.cpu
    }

    /// The value to put back: found before the switch set its own, or kept from a switch
    /// that did not stop.
    pub fn previous(&self) -> &str {
        &self.previous
    }

    /// The limit a switch that did not stop left in place, if this start found one.
    pub fn found_leftover(&self) -> Option<&str> {
        self.found_leftover.as_deref()
    }
}

impl Drop for ResumeLatencyLimit {
    fn drop(&mut self) {
        match std::fs::write(&self.path, &self.previous) {
            Ok(()) => {
                let _ = std::fs::remove_file(&self.record);
            }
            Err(e) => tracing::warn!(
                "core {}: cannot put back its wake-up latency limit ({}) in {}: {e}",
                self.cpu,
                describe(&self.previous),
                self.path.display()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sysfs(cpu: usize, value: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let power = dir.path().join(format!("cpu{cpu}/power"));
        std::fs::create_dir_all(&power).unwrap();
        let file = power.join("pm_qos_resume_latency_us");
        std::fs::write(&file, format!("{value}\n")).unwrap();
        (dir, file)
    }

    #[test]
    fn zero_latency_is_written_as_the_kernels_n_a_and_other_limits_as_numbers() {
        assert_eq!(sysfs_value(0), "n/a");
        assert_eq!(sysfs_value(20), "20");
    }

    #[test]
    fn a_limit_is_set_and_the_value_found_is_put_back_when_dropped() {
        let (dir, file) = fake_sysfs(3, "0");
        let state = tempfile::tempdir().unwrap();
        let limit = ResumeLatencyLimit::set_in(dir.path(), state.path(), 3, 0).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "n/a");
        assert_eq!(limit.previous(), "0");
        assert_eq!(limit.cpu(), 3);
        assert_eq!(limit.found_leftover(), None);
        drop(limit);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "0");
        assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 0, "the record outlived the limit");

        std::fs::write(&file, "n/a\n").unwrap();
        let limit = ResumeLatencyLimit::set_in(dir.path(), state.path(), 3, 10).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "10");
        drop(limit);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "n/a");
    }

    #[test]
    fn a_switch_that_did_not_stop_leaves_the_value_it_replaced_for_the_next_start_to_put_back() {
        let (dir, file) = fake_sysfs(2, "20");
        let state = tempfile::tempdir().unwrap();
        // Killed: its drop never runs.
        std::mem::forget(ResumeLatencyLimit::set_in(dir.path(), state.path(), 2, 0).unwrap());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "n/a");
        let limit = ResumeLatencyLimit::set_in(dir.path(), state.path(), 2, 5).unwrap();
        assert_eq!(limit.previous(), "20");
        assert_eq!(limit.found_leftover(), Some("n/a"));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "5");
        drop(limit);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "20");
    }

    #[test]
    fn a_core_without_the_file_is_an_error_naming_the_path_and_keeps_no_record() {
        let (dir, _) = fake_sysfs(0, "0");
        let state = tempfile::tempdir().unwrap();
        let err = ResumeLatencyLimit::set_in(dir.path(), state.path(), 7, 0).unwrap_err();
        assert!(err.contains("cpu7/power/pm_qos_resume_latency_us"), "{err}");
        assert_eq!(std::fs::read_dir(state.path()).unwrap().count(), 0);
    }

    #[test]
    fn the_log_says_what_each_value_means() {
        assert_eq!(describe("0"), "no limit");
        assert!(describe("n/a").contains("polls"));
        assert_eq!(describe("20"), "20 µs");
    }
}
