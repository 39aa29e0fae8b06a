//! Idle workers wait for rx interrupts where every rx queue gives one: vswitchd with
//! vhost-user ports (net_vhost, which has rx interrupts) and `tgen` as the virtio-user peer on
//! the other side, or with memif ports (whose rings signal an eventfd once unmasked) and
//! `tgen` as the memif client; real frames both ways.
//!
//! Checks: an idle worker blocks (about one wake-up a second, not thousands of sleeps; a
//! hundred with memif); every packet that arrives after idle is forwarded, and wakes the
//! worker; flow and port changes reach a blocked worker at once (its doorbell); a port
//! without interrupts (net_null) sends the worker back to sleeping, and removing it brings
//! interrupts back. And the wake-up latency limit (`idle_cpu_resume_latency_us`) of the
//! worker's core: set while the switch runs, put back after, also after a switch was killed.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

mod common;

/// A name no other test process uses (DPDK file prefixes, vdev names).
fn unique(tag: &str) -> String {
    format!("{tag}{}", std::process::id() % 100_000)
}

/// vswitchd and tgen, stopped (switch first) when dropped, also when the test fails.
struct Rig {
    dir: tempfile::TempDir,
    switch: Child,
    tgen: Option<(Child, ChildStdin, BufReader<ChildStdout>)>,
    tgen_prefix: String,
}

impl Drop for Rig {
    fn drop(&mut self) {
        // The switch first, then the generator (a vhost-user peer).
        common::stop_switch(&mut self.switch);
        self.stop_generator();
    }
}

impl Rig {
    fn stop_generator(&mut self) {
        if let Some((mut child, stdin, _)) = self.tgen.take() {
            // On end of input the generator stops and tears its EAL down; killed, it would
            // leave its runtime directory behind.
            drop(stdin);
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{}", self.tgen_prefix));
        }
    }
}

/// How the generator connects to the switch.
#[derive(Clone, Copy, PartialEq)]
enum Link {
    /// vhost-user ports, the generator virtio-user.
    Vhost,
    /// memif ports (server), the generator the memif client.
    Memif,
}

impl Link {
    /// The switch's port `n` ("a" or "b") on socket `sock`.
    fn switch_port(self, n: &str, sock: &str) -> String {
        match self {
            Link::Vhost => format!("{}{n},iface={sock}", unique("net_vhost")),
            Link::Memif => format!("{}{n},role=server,socket={sock},socket-abstract=no", unique("net_memif")),
        }
    }

    /// The generator's port `i` facing the switch's port on socket `sock`.
    fn tgen_port(self, i: u32, sock: &str) -> String {
        match self {
            Link::Vhost => format!("net_virtio_user{i},path={sock}"),
            Link::Memif => format!("net_memif{i},role=client,socket={sock},socket-abstract=no"),
        }
    }
}

impl Rig {
    fn start(link: Link) -> Rig {
        Rig::start_with(link, "")
    }

    /// `start`, a few packets through (every one forwarded), then the worker idle and
    /// waiting for rx interrupts.
    fn forwarded_and_waiting(link: Link) -> Rig {
        let mut rig = Rig::start(link);
        let first = rig.trial(0.001, 0.3);
        assert_eq!(first["stamped"], first["sent"], "{first}");
        rig.wait_idle_state("interrupt");
        rig
    }

    /// `start` with `switch` added to the switch's `[switch]` table.
    fn start_with(link: Link, switch: &str) -> Rig {
        assert!(common::is_root(), "this test runs DPDK with hugepages: run it as root");
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_path_buf();
        let p = |n: &str| root.join(n).display().to_string();
        // Deep idle (where interrupts are used) after 50 ms instead of 100, to keep the test short.
        let config = common::two_port_config(
            dir.path(),
            &unique("vsirq"),
            &format!("mbufs = 8191\nspare_ports = 2\nidle_deep_after_ms = 50\n{switch}"),
            &link.switch_port("a", &p("a.sock")),
            &link.switch_port("b", &p("b.sock")),
        );
        let switch = common::start_switch(dir.path(), &config);
        let mut rig = Rig { dir, switch, tgen: None, tgen_prefix: unique("tgirq") };
        let mut tgen = Command::new(common::bin_dir().join("tgen"))
            .args(["--tx", &link.tgen_port(0, &p("a.sock"))])
            .args(["--rx", &link.tgen_port(1, &p("b.sock"))])
            .args(["--file-prefix", &rig.tgen_prefix, "--core", "0", "--serve"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tgen");
        let stdin = tgen.stdin.take().unwrap();
        let stdout = BufReader::new(tgen.stdout.take().unwrap());
        rig.tgen = Some((tgen, stdin, stdout));
        rig
    }

    /// Sends at `mpps` for `seconds` (no warm-up) and returns tgen's JSON report.
    fn trial(&mut self, mpps: f64, seconds: f64) -> serde_json::Value {
        let (_, stdin, stdout) = self.tgen.as_mut().expect("tgen runs");
        writeln!(stdin, "{mpps} {seconds} 0").unwrap();
        stdin.flush().unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).expect("tgen report");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("tgen said '{line}': {e}"))
    }

    fn ctl(&self, args: &[&str]) -> String {
        common::ctl(self.dir.path(), args)
    }

    /// Packets the switch dropped on `port` for `reason`.
    fn drops(&self, port: &str, reason: &str) -> u64 {
        let v: serde_json::Value =
            serde_json::from_str(&self.ctl(&["--json", "show-drops", "--port", port, "--all"])).unwrap();
        let entry = v["drops"].as_array().unwrap().iter().find(|d| d["reason"] == reason);
        entry.map_or(0, |d| common::count(d, "packets"))
    }

    fn worker(&self) -> serde_json::Value {
        common::worker(self.dir.path())
    }

    /// Waits (5 s at most) until the worker's idle state is `state`.
    fn wait_idle_state(&self, state: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let w = self.worker();
            if w["idle_state"] == state {
                return w;
            }
            assert!(Instant::now() < deadline, "worker never reached idle state {state}: {w}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn idle_worker_waits_for_rx_interrupts_and_forwards_what_comes() {
    let idle = idle_worker_waits_and_forwards(Link::Vhost);
    // Over 1.5 s the worker wakes about once (the safety-net timeout), where sleeping it
    // would wake thousands of times.
    idle.assert_waits(1..=5);
}

#[test]
fn idle_worker_waits_for_memif_ring_signals_and_forwards_what_comes() {
    // DPDK's memif driver has no rx interrupts; the switch unmasks the rings' own signals.
    // A wait ends after 10 ms (a memif peer that reconnects is not announced), so over 1.5 s
    // the worker wakes about 150 times, where 1 ms sleeps would wake it 1,500 times.
    let Idle { mut rig, .. } = idle_worker_waits_and_forwards(Link::Memif).assert_waits(50..=300);

    // The peer leaves: its rings are gone and nothing could wake the worker, so it sleeps.
    rig.stop_generator();
    let asleep = rig.wait_idle_state("sleeping");
    std::thread::sleep(Duration::from_millis(300));
    let still = rig.worker();
    assert_eq!(still["idle_state"], "sleeping", "{still}");
    assert_eq!(common::count(&still, "interrupt_waits"), common::count(&asleep, "interrupt_waits"), "{still}");
    assert!(common::count(&still, "sleeps") > common::count(&asleep, "sleeps"), "{still}");
}

/// The idle mode switched at run time (`vswitchctl set-idle`): a worker told to busy-poll
/// stops waiting and sleeping at once and forwards on; told to back off again, it waits for
/// the memif rings' signals in deep idle and forwards every packet that comes after idle,
/// each ending a wait. A switch started busy-polling sets its ports up without rx
/// interrupts (as a switch started for latency wants them), so switched to back-off it
/// sleeps in deep idle instead, and forwards as well.
#[test]
fn the_idle_mode_switched_at_run_time_takes_effect_at_once_and_packets_keep_flowing() {
    let mut rig = Rig::forwarded_and_waiting(Link::Memif);

    let out = rig.ctl(&["set-idle", "busy-poll", "--worker", "0"]);
    assert!(out.contains("busy-poll"), "{out}");
    let polling = rig.worker();
    assert_eq!((polling["idle_mode"].as_str(), polling["idle_state"].as_str()), (Some("busy-poll"), Some("polling")));
    let trial = rig.trial(0.00002, 1.0);
    let sent = trial["sent"].as_u64().unwrap();
    assert!(sent > 0 && trial["stamped"].as_u64() == Some(sent), "{trial}");
    let still = rig.worker();
    assert_eq!(common::count(&still, "sleeps"), common::count(&polling, "sleeps"), "{still}");
    assert_eq!(still["idle_state"], "polling", "{still}");

    let out = rig.ctl(&["set-idle", "backoff"]);
    assert!(out.contains("backoff"), "{out}");
    let waiting = rig.wait_idle_state("interrupt");
    // Packets 250 ms apart, each after deep idle: each ends a wait, and all are forwarded.
    let slow = rig.trial(0.000004, 2.0);
    let sent = slow["sent"].as_u64().unwrap();
    assert!(sent >= 6, "{slow}");
    assert_eq!((slow["lost"].as_u64(), slow["stamped"].as_u64()), (Some(0), Some(sent)), "{slow}");
    let after = rig.worker();
    let wakes = common::count(&after, "interrupt_wakes") - common::count(&waiting, "interrupt_wakes");
    assert!(wakes >= sent, "{sent} packets after idle, {wakes} waits ended by an event");
    drop(rig);

    let mut rig = Rig::start_with(Link::Memif, "idle_backoff = false");
    for port in ["a", "b"] {
        let out = rig.ctl(&["get-port", port]);
        assert!(out.contains("rx interrupts no"), "{out}");
    }
    let w = rig.worker();
    assert_eq!((w["idle_mode"].as_str(), w["idle_state"].as_str()), (Some("busy-poll"), Some("polling")), "{w}");
    rig.ctl(&["set-idle", "backoff"]);
    rig.wait_idle_state("sleeping");
    let slow = rig.trial(0.000004, 1.5);
    let sent = slow["sent"].as_u64().unwrap();
    assert!(sent >= 4 && slow["stamped"].as_u64() == Some(sent), "{slow}");
    let w = rig.worker();
    assert_eq!((w["idle_state"].as_str(), common::count(&w, "interrupt_waits")), (Some("sleeping"), 0), "{w}");
}

#[test]
fn memif_ports_warn_once_when_the_kernel_leaves_memif_buffers_on_small_pages() {
    let rig = Rig::start(Link::Memif);
    // The generator's buffers are a memfd: on huge pages only where shared-memory THP is
    // always, within_size or force, at the top level or for a page size. Two memif ports,
    // one warning at most.
    // (A kernel without the setting has no THP for shared memory, and no warning.)
    let small_pages =
        std::path::Path::new("/sys/kernel/mm/transparent_hugepage/shmem_enabled").exists() && memfd_on_small_pages();
    let log = std::fs::read_to_string(rig.dir.path().join("vswitchd.log")).unwrap();
    let warnings = log.matches("memif buffers in copy mode are on 4 KiB pages").count();
    assert_eq!(warnings, usize::from(small_pages), "memfd on small pages: {small_pages}; log:\n{log}");
}

#[test]
fn a_memif_peers_shared_memory_is_mapped_in_when_it_connects() {
    // A copy-mode memif connection's rings hold 2 KiB slots in a memfd the client made:
    // each packet of the rings' first round lands on slots the switch has not touched. With
    // `memif_map_in` (the default) the switch maps all of it in when the link comes up, and
    // its worker forwards those packets without a page fault; without, it takes about one
    // per packet (a fault per 4 KiB page of the rx ring and of the tx ring) where the kernel
    // keeps memfd on small pages.
    for map_in in [true, false] {
        let mut rig = Rig::start_with(Link::Memif, &format!("memif_map_in = {map_in}"));
        let pid = rig.switch.id();
        // Both ports' regions (one per connection): mapped in, or not, once both links are up.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ports: serde_json::Value = serde_json::from_str(&rig.ctl(&["--json", "list-ports"])).unwrap();
            let links_up = ports["ports"].as_array().unwrap().iter().all(|p| p["link"]["up"] == true);
            let regions = memif_regions_resident(pid);
            let all_in = regions.len() >= 2 && regions.iter().all(|&(rss, size)| rss == size);
            if links_up && regions.len() >= 2 && (all_in || !map_in) {
                // Given time to map in (five maintenance ticks), they would have been.
                std::thread::sleep(Duration::from_millis(500));
                let regions = memif_regions_resident(pid);
                assert_eq!(
                    regions.iter().all(|&(rss, size)| rss == size),
                    map_in,
                    "memif_map_in = {map_in}: {regions:?}"
                );
                break;
            }
            assert!(Instant::now() < deadline, "memif_map_in = {map_in}: links up {links_up}, regions {regions:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let before = worker_page_faults(pid);
        // 200 packets, 5 ms apart: each on a fresh ring slot.
        let r = rig.trial(0.0002, 1.0);
        let faults = worker_page_faults(pid) - before;
        let (sent, received) = (r["sent"].as_u64().unwrap(), r["received"].as_u64().unwrap());
        assert!(sent >= 150 && received == sent, "memif_map_in = {map_in}: {r}");
        if map_in {
            assert!(faults <= 10, "mapped in, the worker took {faults} page faults for {sent} packets");
        } else if memfd_on_small_pages() {
            assert!(faults >= sent / 2, "not mapped in, the worker took only {faults} page faults for {sent} packets");
        }
    }
}

/// Resident and whole size (kB) of each memif region process `pid` maps (`/proc/PID/smaps`).
fn memif_regions_resident(pid: u32) -> Vec<(u64, u64)> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut regions = Vec::new();
    let mut in_region = false;
    let kb = |line: &str| line.split_whitespace().nth(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        let is_mapping = first
            .split_once('-')
            .is_some_and(|(a, b)| u64::from_str_radix(a, 16).is_ok() && u64::from_str_radix(b, 16).is_ok());
        if is_mapping {
            in_region = line.contains("/memfd:memif_region_");
            if in_region {
                regions.push((0, 0));
            }
        } else if in_region && line.starts_with("Size:") {
            regions.last_mut().unwrap().1 = kb(line);
        } else if in_region && line.starts_with("Rss:") {
            regions.last_mut().unwrap().0 = kb(line);
        }
    }
    regions
}

/// Whether the kernel keeps memfd on 4 KiB pages: shared-memory THP is off for the default
/// size and for every other size (kernels from 6.11 have one setting per size).
fn memfd_on_small_pages() -> bool {
    let thp = "/sys/kernel/mm/transparent_hugepage";
    let small = |path: &str, allowed: &[&str]| {
        let line = std::fs::read_to_string(path).unwrap_or_default();
        line.is_empty() || allowed.iter().any(|m| line.contains(&format!("[{m}]")))
    };
    let sizes = std::fs::read_dir(thp).map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>()).unwrap_or_default();
    // `deny` at the top level turns every size off.
    small(&format!("{thp}/shmem_enabled"), &["deny"])
        || small(&format!("{thp}/shmem_enabled"), &["never", "advise"])
            && sizes
                .iter()
                .filter(|p| p.is_dir())
                .all(|p| small(&p.join("shmem_enabled").display().to_string(), &["never", "inherit", "advise"]))
}

/// Minor page faults taken so far by the thread of process `pid` named worker-1.
fn worker_page_faults(pid: u32) -> u64 {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the switch runs");
    for task in tasks.flatten() {
        let path = task.path();
        if std::fs::read_to_string(path.join("comm")).unwrap_or_default().trim() == "worker-1" {
            let stat = std::fs::read_to_string(path.join("stat")).unwrap();
            // The 10th field (minflt), counted after the command name's closing parenthesis.
            let after_name = stat.rsplit_once(')').unwrap().1;
            return after_name.split_whitespace().nth(7).unwrap().parse().unwrap();
        }
    }
    panic!("no worker-1 thread in process {pid}");
}

/// The kernel's wake-up latency limit (PM QoS) of core 1, the worker's. The tests that
/// change it run one at a time, as every test here (a nextest group; `--test-threads=1`).
const CORE1_RESUME_LATENCY: &str = "/sys/devices/system/cpu/cpu1/power/pm_qos_resume_latency_us";

fn core1_resume_latency() -> String {
    std::fs::read_to_string(CORE1_RESUME_LATENCY).unwrap().trim().to_string()
}

/// Puts a sysfs value back when dropped, also when the test fails.
struct PutBack(&'static str, String);

impl Drop for PutBack {
    fn drop(&mut self) {
        let _ = std::fs::write(self.0, &self.1);
    }
}

/// Microseconds core 1 spent in its polling idle state (cpuidle's POLL), if it has one.
fn core1_idle_poll_us() -> Option<u64> {
    let state0 = "/sys/devices/system/cpu/cpu1/cpuidle/state0";
    let name = std::fs::read_to_string(format!("{state0}/name")).ok()?;
    if name.trim() != "POLL" {
        return None;
    }
    std::fs::read_to_string(format!("{state0}/time")).ok()?.trim().parse().ok()
}

/// With `idle_cpu_resume_latency_us = 0`, the worker's core is limited to polling idle while
/// the switch runs ("n/a", the kernel's zero), so an idle worker's core polls in the kernel
/// instead of halting; packets after deep idle are all forwarded; stopped, the switch puts
/// back the value it found.
#[test]
fn a_wake_up_latency_limit_holds_on_the_worker_core_while_the_switch_runs_and_is_put_back() {
    assert!(common::is_root(), "this test writes a core's PM QoS limit: run it as root");
    let _original = PutBack(CORE1_RESUME_LATENCY, core1_resume_latency());
    // A value of the test's own, so that "put back" cannot pass by chance.
    std::fs::write(CORE1_RESUME_LATENCY, "77").unwrap();
    let mut rig = Rig::start_with(Link::Memif, "idle_cpu_resume_latency_us = 0");
    assert_eq!(core1_resume_latency(), "n/a");
    // Shown with the worker, as the kernel has it.
    assert_eq!(rig.worker()["cpu_resume_latency"], "n/a");
    let table = rig.ctl(&["list-workers"]);
    assert!(table.contains("WAKE_LIMIT") && table.contains(" poll "), "{table}");
    let log = std::fs::read_to_string(rig.dir.path().join("vswitchd.log")).unwrap();
    assert!(log.contains("core 1: wake-up latency limit 0 µs: the core polls when idle (was 77 µs)"), "{log}");

    rig.wait_idle_state("interrupt");
    let poll_before = core1_idle_poll_us();
    std::thread::sleep(Duration::from_millis(1000));
    let poll_after = core1_idle_poll_us();
    match (poll_before, poll_after) {
        // The worker blocks on its rings' signals: the core's idle time is spent polling.
        (Some(b), Some(a)) => assert!(a - b > 500_000, "core 1 polled {} µs of 1 s idle", a - b),
        _ => eprintln!("core 1 has no cpuidle POLL state here: its idle time is not checked"),
    }
    let slow = rig.trial(0.000004, 2.0);
    let sent = slow["sent"].as_u64().unwrap();
    assert!(sent >= 5 && slow["lost"] == 0 && slow["stamped"] == sent, "{slow}");

    drop(rig);
    assert_eq!(core1_resume_latency(), "77", "the switch stopped without putting back the value it found");
}

/// A vswitchd that is stopped (SIGINT) when dropped, also when the test fails.
struct Running(Option<Child>);

impl Running {
    /// Kills it (SIGKILL): it cannot clean up.
    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            common::stop_switch(&mut child);
        }
    }
}

/// A switch killed while its limit holds cannot put back the value it replaced; the next
/// start puts it back first (kept beside the API socket), also when its own config sets no
/// limit, and says so.
#[test]
fn a_wake_up_latency_limit_left_by_a_killed_switch_is_put_back_by_the_next_start() {
    assert!(common::is_root(), "this test runs DPDK with hugepages: run it as root");
    let _original = PutBack(CORE1_RESUME_LATENCY, core1_resume_latency());
    std::fs::write(CORE1_RESUME_LATENCY, "77").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("vsqos");
    let config = |switch: &str| {
        common::two_port_config(
            dir.path(),
            &prefix,
            &format!("mbufs = 4095\n{switch}"),
            &format!("{}a,no-rx=1", unique("net_null")),
            &format!("{}b,no-rx=1", unique("net_null")),
        )
    };
    let mut first = Running(Some(common::start_switch(dir.path(), &config("idle_cpu_resume_latency_us = 0"))));
    first.kill();
    assert_eq!(core1_resume_latency(), "n/a", "a killed switch cannot put the value back");
    // The dead switch's socket stays; gone, `start_switch` waits for the next one's.
    std::fs::remove_file(dir.path().join("sw.sock")).unwrap();

    let second = Running(Some(common::start_switch(dir.path(), &config(""))));
    assert_eq!(core1_resume_latency(), "77", "the next start did not put back the value from before");
    let log = std::fs::read_to_string(dir.path().join("vswitchd.log")).unwrap();
    drop(second);
    let _ = std::fs::remove_dir_all(format!("/var/run/dpdk/{prefix}"));
    assert!(
        log.contains("core 1: put back its wake-up latency limit (77 µs), left by a switch that did not stop"),
        "{log}"
    );
    assert_eq!(core1_resume_latency(), "77");
}

/// What the worker did in `idle_worker_waits_and_forwards`.
struct Idle {
    /// The generator still connected.
    rig: Rig,
    /// Over 1.5 s of idle: sleeps, waits for interrupts, and waits an event ended.
    sleeps: u64,
    waits: u64,
    wakes: u64,
    /// Packets sent 250 ms apart, and the waits an event ended meanwhile.
    slow_sent: u64,
    slow_wakes: u64,
}

impl Idle {
    /// Idle, every sleep was a wait, `waits` of them in 1.5 s, each timing out (nothing
    /// came); each packet after deep idle ended a wait by its interrupt, not by the timeout.
    fn assert_waits(self, waits: std::ops::RangeInclusive<u64>) -> Idle {
        let Idle { sleeps, waits: n, wakes, slow_sent, slow_wakes, .. } = self;
        assert!(waits.contains(&n) && sleeps == n, "sleeps {sleeps}, interrupt waits {n}");
        assert!(wakes <= 1, "{wakes} waits ended by an event with nothing sent");
        assert!(slow_wakes >= slow_sent, "{slow_sent} packets after idle, {slow_wakes} waits ended by an event");
        self
    }
}

/// Both ports report rx interrupts; the worker reaches the `interrupt` state when idle and
/// stays there; packets 250 ms apart, each after deep idle, are all forwarded; 1 Mpps after
/// idle loses nothing. Returns what the worker did (see [`Idle::assert_waits`]).
fn idle_worker_waits_and_forwards(link: Link) -> Idle {
    let mut rig = Rig::start(link);
    for port in ["a", "b"] {
        let out = rig.ctl(&["get-port", port]);
        assert!(out.contains("rx interrupts yes"), "{out}");
    }
    let first = rig.trial(0.001, 0.5);
    assert!(first["sent"].as_u64().unwrap() > 0 && first["lost"] == 0, "{first}");
    assert_eq!(first["stamped"], first["sent"], "{first}");

    // Idle: the worker waits.
    let before = rig.wait_idle_state("interrupt");
    std::thread::sleep(Duration::from_millis(1500));
    let after = rig.worker();
    assert_eq!(after["idle_state"], "interrupt", "{after}");
    let sleeps = common::count(&after, "sleeps") - common::count(&before, "sleeps");
    let waits = common::count(&after, "interrupt_waits") - common::count(&before, "interrupt_waits");
    let wakes = common::count(&after, "interrupt_wakes") - common::count(&before, "interrupt_wakes");

    // Packets 250 ms apart, each after deep idle: every one is forwarded.
    let slow = rig.trial(0.000004, 3.0);
    let sent = slow["sent"].as_u64().unwrap();
    assert!(sent >= 10, "{slow}");
    assert_eq!(slow["lost"], 0, "{slow}");
    assert_eq!(slow["stamped"].as_u64(), Some(sent), "{slow}");
    let slow_wakes = common::count(&rig.worker(), "interrupt_wakes") - common::count(&after, "interrupt_wakes");

    // Traffic at 1 Mpps after idle: the switch loses nothing while the worker wakes up. A
    // late wake-up leaves the generator's ring full (those sends fail and count as
    // tx_failed, not sent); it cannot lose what was sent. What the switch cannot help is a
    // full receive ring at the generator, which shares core 0 with everything else: it
    // counts those packets as tx_queue_full on port b. Every packet not received must be one
    // of those, and they must stay rare. (On a noisy host this burst once lost 32 packets
    // with an 11.8 ms latency maximum; stopping the generator for 15 ms in the middle of the
    // burst lost none.)
    let full_before = rig.drops("b", "tx_queue_full");
    let burst = rig.trial(1.0, 1.0);
    let full = rig.drops("b", "tx_queue_full") - full_before;
    assert_eq!(burst["lost"].as_u64(), Some(full), "tx_queue_full on b: {full}; {burst}");
    assert_eq!(burst["stamped"], burst["received"], "{burst}");
    assert!(full <= burst["sent"].as_u64().unwrap() / 100, "tx_queue_full on b: {full}; {burst}");
    Idle { rig, sleeps, waits, wakes, slow_sent: sent, slow_wakes }
}

#[test]
fn changes_wake_a_worker_blocked_on_interrupts() {
    let mut rig = Rig::forwarded_and_waiting(Link::Vhost);

    // Each flow change returns once the worker runs it. A blocked worker that saw changes only
    // at its 1 s timeout would make these five take seconds; the doorbell wakes it at once.
    let started = Instant::now();
    for i in 0..5 {
        let out = rig.ctl(&["add-flow", &format!("priority={},in_port=2,actions=drop", 300 + i)]);
        assert!(out.contains("live on every worker"), "{out}");
    }
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1), "five flow changes took {took:?}: the worker was not woken");
    rig.wait_idle_state("interrupt");

    // A port without rx interrupts (net_null, added at run time through the worker's
    // mailbox): the worker must poll it, so it sleeps instead of waiting for interrupts.
    let null = unique("net_null");
    rig.ctl(&["add-port", "n", "3", &format!("{null}n,no-rx=1")]);
    let out = rig.ctl(&["get-port", "n"]);
    assert!(out.contains("rx interrupts no"), "{out}");
    let asleep = rig.wait_idle_state("sleeping");
    std::thread::sleep(Duration::from_millis(300));
    let still = rig.worker();
    assert_eq!(still["idle_state"], "sleeping", "{still}");
    assert_eq!(common::count(&still, "interrupt_waits"), common::count(&asleep, "interrupt_waits"), "{still}");

    // Without it, interrupts again; forwarding works as before.
    rig.ctl(&["remove-port", "n"]);
    rig.wait_idle_state("interrupt");
    let last = rig.trial(0.00002, 1.0);
    assert!(last["sent"].as_u64().unwrap() > 0, "{last}");
    assert_eq!(last["stamped"], last["sent"], "{last}");
}
