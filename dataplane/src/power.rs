//! Wake-up latency limits for the cores of idle workers (the kernel's per-CPU PM QoS,
//! `/sys/devices/system/cpu/cpuN/power/pm_qos_resume_latency_us`).
//!
//! A worker that backs off lets its core idle, and the kernel's cpuidle governor may then
//! put the core in a deep idle state (C6 and deeper on bare metal; a halt the host must
//! wake in a VM): the first packet after idle waits for the core to come back. A limit on
//! the core's resume latency keeps it in states it leaves within that time. DPDK 24.11's
//! `rte_power_qos_set_cpu_resume_latency` writes the same file, with the same meaning of 0:
//! only the shallowest idle state (polling, on x86 with a cpuidle driver).
//!
//! The switch sets the limit of each worker core at start and puts back what it found at
//! stop. While a limit holds, a record beside the API socket keeps the value it replaced
//! (with the value set and the switch's PID): a switch killed before it could put the value
//! back leaves its records, and the next start puts them back first, whatever its own
//! config says.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where sysfs keeps the CPU devices.
pub const SYSFS_CPUS: &str = "/sys/devices/system/cpu";

const RECORD_SUFFIX: &str = ".resume-latency-before";

/// The kernel's spelling of a limit: "n/a" is zero latency (only the shallowest idle
/// state); "0" means no limit.
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

/// Core `cpu`'s limit as the kernel shows it now, if it has the file.
pub fn current(cpu: usize) -> Option<String> {
    read_value(&sysfs_path(Path::new(SYSFS_CPUS), cpu)).ok()
}

/// A limit as the kernel shows it, for a table: "none", "poll", "Nus", or "-" where the
/// kernel has none.
pub fn short(value: &str) -> String {
    match value {
        "" => "-".to_string(),
        "0" => "none".to_string(),
        "n/a" => "poll".to_string(),
        v => format!("{v}us"),
    }
}

fn sysfs_path(root: &Path, cpu: usize) -> PathBuf {
    root.join(format!("cpu{cpu}/power/pm_qos_resume_latency_us"))
}

fn read_value(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|v| v.trim().to_string())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn record_path(state_dir: &Path, cpu: usize) -> PathBuf {
    state_dir.join(format!("cpu{cpu}{RECORD_SUFFIX}"))
}

/// One core's resume latency limit, set by the switch; dropping it puts back the value it
/// replaced.
#[derive(Debug)]
pub struct ResumeLatencyLimit {
    cpu: usize,
    path: PathBuf,
    previous: String,
    /// Keeps `previous` while the limit holds (see the module's notes).
    record: PathBuf,
}

impl ResumeLatencyLimit {
    /// Sets core `cpu`'s limit to `latency_us` (0: the shallowest idle state only), keeping
    /// the value it replaces in `state_dir`.
    ///
    /// # Errors
    /// The file cannot be read or written (a pod without a writable /sys), the record cannot
    /// be written, or another live switch holds the core's limit. Nothing is left changed.
    pub fn set(state_dir: &Path, cpu: usize, latency_us: u32) -> Result<Self, String> {
        Self::set_in(Path::new(SYSFS_CPUS), state_dir, cpu, latency_us)
    }

    /// `set` under another sysfs root (tests).
    pub fn set_in(root: &Path, state_dir: &Path, cpu: usize, latency_us: u32) -> Result<Self, String> {
        let path = sysfs_path(root, cpu);
        let previous = read_value(&path)?;
        let record = record_path(state_dir, cpu);
        if let Ok(text) = std::fs::read_to_string(&record) {
            // `put_back_leftovers` ran first: what is left belongs to a live switch.
            let pid = text.lines().nth(2).unwrap_or("?");
            return Err(format!(
                "another switch (PID {pid}) holds this core's wake-up latency limit ({})",
                record.display()
            ));
        }
        let value = sysfs_value(latency_us);
        std::fs::write(&record, format!("{previous}\n{value}\n{}\n", std::process::id()))
            .map_err(|e| format!("cannot write {}: {e}", record.display()))?;
        if let Err(e) = std::fs::write(&path, &value) {
            let _ = std::fs::remove_file(&record);
            let hint = if e.kind() == std::io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(libc::EROFS) {
                " (a pod needs a writable /sys: privileged)"
            } else {
                ""
            };
            return Err(format!("cannot write {}: {e}{hint}", path.display()));
        }
        Ok(ResumeLatencyLimit { cpu, path, previous, record })
    }

    pub fn cpu(&self) -> usize {
        self.cpu
    }

    /// The value found before the switch set its own.
    pub fn previous(&self) -> &str {
        &self.previous
    }
}

impl Drop for ResumeLatencyLimit {
    fn drop(&mut self) {
        match std::fs::write(&self.path, &self.previous) {
            // Kept otherwise, so the next start tries again.
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

/// What [`put_back_leftovers`] did with one record left by a switch that did not stop.
#[derive(Debug, PartialEq, Eq)]
pub enum Leftover {
    /// The core's value from before that switch is back.
    PutBack { cpu: usize, value: String },
    /// The core's limit is no longer the one that switch set: someone changed it since, and
    /// it stays.
    ChangedSince { cpu: usize, value: String },
    /// The switch that wrote it still runs: left alone.
    Live { cpu: usize, pid: u32 },
    /// Not a record this process can trust or use: left alone.
    Ignored { path: PathBuf, reason: String },
}

/// Puts back the limits that switches killed while holding them left in `state_dir`.
pub fn put_back_leftovers(state_dir: &Path) -> Vec<Leftover> {
    put_back_leftovers_in(Path::new(SYSFS_CPUS), state_dir)
}

/// `put_back_leftovers` under another sysfs root (tests). Records are taken in core order.
pub fn put_back_leftovers_in(root: &Path, state_dir: &Path) -> Vec<Leftover> {
    let Ok(entries) = std::fs::read_dir(state_dir) else { return Vec::new() };
    let mut records: Vec<(usize, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let cpu = name.to_str()?.strip_prefix("cpu")?.strip_suffix(RECORD_SUFFIX)?.parse().ok()?;
            Some((cpu, e.path()))
        })
        .collect();
    records.sort();
    // Only records of this process's owner: a shared directory may hold others' files.
    let owner = std::fs::metadata("/proc/self").map(|m| m.uid()).ok();
    records.into_iter().map(|(cpu, path)| put_back_one(root, cpu, &path, owner)).collect()
}

/// What one record left by a switch that did not stop calls for; done, the record goes
/// (unless it is ignored or the switch still runs).
fn put_back_one(root: &Path, cpu: usize, path: &Path, owner: Option<u32>) -> Leftover {
    let ignored = |reason: String| Leftover::Ignored { path: path.to_path_buf(), reason };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() && Some(m.uid()) == owner => {}
        Ok(_) => return ignored("not a file of this process's owner".into()),
        Err(e) => return ignored(e.to_string()),
    }
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines = text.lines().map(str::trim);
    let (Some(previous), Some(set), Some(Ok(pid))) = (lines.next(), lines.next(), lines.next().map(str::parse::<u32>))
    else {
        return ignored("not a record of this switch".into());
    };
    if pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists() {
        return Leftover::Live { cpu, pid };
    }
    let sysfs = sysfs_path(root, cpu);
    let outcome = match read_value(&sysfs) {
        Ok(now) if now != set => Leftover::ChangedSince { cpu, value: now },
        Ok(_) => match std::fs::write(&sysfs, previous) {
            Ok(()) => Leftover::PutBack { cpu, value: previous.to_string() },
            Err(e) => return ignored(format!("cannot write {}: {e}", sysfs.display())),
        },
        Err(reason) => return ignored(reason),
    };
    let _ = std::fs::remove_file(path);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sysfs root with `cpu`'s file holding `value`, and the file.
    fn fake_sysfs(cpu: usize, value: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = add_cpu(dir.path(), cpu, value);
        (dir, file)
    }

    fn add_cpu(root: &Path, cpu: usize, value: &str) -> PathBuf {
        let power = root.join(format!("cpu{cpu}/power"));
        std::fs::create_dir_all(&power).unwrap();
        let file = power.join("pm_qos_resume_latency_us");
        std::fs::write(&file, format!("{value}\n")).unwrap();
        file
    }

    fn read(file: &Path) -> String {
        std::fs::read_to_string(file).unwrap()
    }

    fn records(state: &Path) -> usize {
        std::fs::read_dir(state).unwrap().count()
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
        assert_eq!(read(&file), "n/a");
        assert_eq!((limit.previous(), limit.cpu()), ("0", 3));
        assert_eq!(records(state.path()), 1);
        drop(limit);
        assert_eq!(read(&file), "0");
        assert_eq!(records(state.path()), 0, "the record outlived the limit");

        std::fs::write(&file, "n/a\n").unwrap();
        let limit = ResumeLatencyLimit::set_in(dir.path(), state.path(), 3, 10).unwrap();
        assert_eq!(read(&file), "10");
        drop(limit);
        assert_eq!(read(&file), "n/a");
    }

    #[test]
    fn limits_left_by_a_killed_switch_are_put_back_unless_changed_since_or_still_held() {
        let (dir, cpu2) = fake_sysfs(2, "20");
        let cpu3 = add_cpu(dir.path(), 3, "0");
        let cpu5 = add_cpu(dir.path(), 5, "0");
        let state = tempfile::tempdir().unwrap();
        // Killed: the drops never run.
        std::mem::forget(ResumeLatencyLimit::set_in(dir.path(), state.path(), 2, 0).unwrap());
        std::mem::forget(ResumeLatencyLimit::set_in(dir.path(), state.path(), 3, 0).unwrap());
        assert_eq!((read(&cpu2).as_str(), read(&cpu3).as_str()), ("n/a", "n/a"));
        // Core 3 retuned by the operator since; core 5 held by a live process (PID 1).
        std::fs::write(&cpu3, "15").unwrap();
        std::fs::write(state.path().join("cpu5.resume-latency-before"), "0\nn/a\n1\n").unwrap();
        std::fs::write(state.path().join("notes.txt"), "not a record").unwrap();

        let done = put_back_leftovers_in(dir.path(), state.path());
        assert_eq!(
            done,
            vec![
                Leftover::PutBack { cpu: 2, value: "20".into() },
                Leftover::ChangedSince { cpu: 3, value: "15".into() },
                Leftover::Live { cpu: 5, pid: 1 },
            ]
        );
        assert_eq!((read(&cpu2).as_str(), read(&cpu3).as_str(), read(&cpu5).as_str()), ("20", "15", "0\n"));
        // The live switch's record stays, and its core cannot be taken.
        let err = ResumeLatencyLimit::set_in(dir.path(), state.path(), 5, 0).unwrap_err();
        assert!(err.contains("another switch (PID 1)"), "{err}");
        assert_eq!(read(&cpu5), "0\n");
        assert_eq!(records(state.path()), 2, "cpu5's record and notes.txt");
        // Nothing left: a second pass does nothing.
        assert_eq!(put_back_leftovers_in(dir.path(), state.path()), vec![Leftover::Live { cpu: 5, pid: 1 }]);
    }

    #[test]
    fn a_failed_start_leaves_no_record_and_no_change() {
        let (dir, _) = fake_sysfs(0, "0");
        let state = tempfile::tempdir().unwrap();
        let err = ResumeLatencyLimit::set_in(dir.path(), state.path(), 7, 0).unwrap_err();
        assert!(err.contains("cpu7/power/pm_qos_resume_latency_us"), "{err}");
        assert_eq!(records(state.path()), 0);
        // A file that reads but refuses writes, even root's (a sysfs file without a store).
        let read_only = Path::new("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size");
        if read_only.exists() {
            std::fs::create_dir_all(dir.path().join("cpu8/power")).unwrap();
            std::os::unix::fs::symlink(read_only, dir.path().join("cpu8/power/pm_qos_resume_latency_us")).unwrap();
            let err = ResumeLatencyLimit::set_in(dir.path(), state.path(), 8, 0).unwrap_err();
            assert!(err.starts_with("cannot write"), "{err}");
            assert_eq!(records(state.path()), 0);
        }
    }

    #[test]
    fn the_log_and_the_table_say_what_each_value_means() {
        assert_eq!(describe("0"), "no limit");
        assert!(describe("n/a").contains("polls"));
        assert_eq!(describe("20"), "20 µs");
        assert_eq!([short("0"), short("n/a"), short("20"), short("")], ["none", "poll", "20us", "-"]);
    }
}
