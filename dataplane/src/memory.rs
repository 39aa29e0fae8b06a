//! How many mbufs and how much hugepage memory a configuration needs, and whether the machine
//! has it. Computed before DPDK starts so a shortage is a clear message, not a PMD failure.

use std::fmt;
use std::path::Path;

use crate::config::{Config, DeviceKind, RUNTIME_PORT_DESCRIPTORS};
use crate::dpdk::{BURST, MBUF_HEADROOM};

/// `sizeof(struct rte_mbuf)`: two cache lines.
const MBUF_HEADER: u64 = 128;
/// Mempool per-object header, rounded to a cache line.
const MEMPOOL_OBJ_OVERHEAD: u64 = 64;
/// EAL heap, memzones, ethdev and queue structures, as the hugepage check counts them: a
/// start with two memif ports takes about 4 MiB besides the pool (static DPDK 22.11,
/// 2026-12-06); drivers with rings in hugepages (NICs, vhost) take more, so the check asks
/// for four times that and 1 MiB a queue.
const EAL_BASE_BYTES: u64 = 16 << 20;
const PER_QUEUE_BYTES: u64 = 1 << 20;
/// What the EAL takes at start besides the pool: preallocated with it (`-m`). Whatever
/// else is needed the EAL adds page by page as ports and queues come. Each hugepage faulted
/// at start costs up to a millisecond on a VM (the host clears 2 MiB), so preallocating the
/// whole check's figure made a start 30 ms slower for pages that were never used.
const EAL_START_BYTES: u64 = 4 << 20;
/// DPDK's standard mbuf data room (2048 + headroom), enough for a 1500-byte MTU.
const DEFAULT_DATA_ROOM: u32 = 2048 + MBUF_HEADROOM;

/// The memory a switch will ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    pub mbufs: u32,
    /// Bytes of packet room per mbuf, headroom included.
    pub data_room: u16,
    /// What the mbuf count is made of, for the start-up printout.
    pub parts: Vec<(String, u64)>,
    pub pool_bytes: u64,
    pub overhead_bytes: u64,
    /// Memory the EAL takes at start (`-m`): the pool and the EAL's own, or the user's
    /// `eal.memory_mb`, or everything without hugepages (the EAL cannot grow then).
    pub prealloc_bytes: u64,
    pub hugepage_size: u64,
    /// Hugepages the switch may come to use, which must be free at start (0 with `no_huge`).
    pub hugepages: u64,
    /// Mbufs kept for ports added at run time.
    pub runtime_port_mbufs: u64,
}

impl MemoryPlan {
    pub fn total_bytes(&self) -> u64 {
        self.pool_bytes + self.overhead_bytes
    }

    /// What to pass as EAL `-m`, in MiB.
    pub fn memory_mb(&self) -> u64 {
        if self.hugepages > 0 {
            (self.prealloc_hugepages() * self.hugepage_size) >> 20
        } else {
            self.prealloc_bytes.div_ceil(1 << 20)
        }
    }

    /// Hugepages faulted in at start.
    pub fn prealloc_hugepages(&self) -> u64 {
        self.prealloc_bytes.div_ceil(self.hugepage_size).min(self.hugepages)
    }
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mib = |b: u64| b as f64 / (1u64 << 20) as f64;
        writeln!(
            f,
            "memory: {} mbufs x {} B data room = {:.1} MiB pool + {:.1} MiB EAL/ports = {:.1} MiB",
            self.mbufs,
            self.data_room,
            mib(self.pool_bytes),
            mib(self.overhead_bytes),
            mib(self.total_bytes())
        )?;
        for (what, n) in &self.parts {
            writeln!(f, "  {n:>8} mbufs  {what}")?;
        }
        if self.hugepages > 0 {
            write!(
                f,
                "  => {} hugepages of {} KiB, {} of them taken at start (the EAL adds the rest as needed)",
                self.hugepages,
                self.hugepage_size >> 10,
                self.prealloc_hugepages()
            )
        } else {
            write!(f, "  => no hugepages (eal.no_huge)")
        }
    }
}

/// Number of packets in a pcap file (classic format, either byte order), or `None` if the
/// file cannot be read as one.
pub fn count_pcap_packets(path: &Path) -> Option<u64> {
    let data = std::fs::read(path).ok()?;
    let magic = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?);
    let little = match magic {
        0xa1b2c3d4 | 0xa1b23c4d => true,
        0xd4c3b2a1 | 0x4d3cb2a1 => false,
        _ => return None,
    };
    let mut off = 24usize;
    let mut n = 0;
    while off + 16 <= data.len() {
        let b: [u8; 4] = data[off + 8..off + 12].try_into().ok()?;
        let incl = if little { u32::from_le_bytes(b) } else { u32::from_be_bytes(b) } as usize;
        off += 16 + incl;
        if off > data.len() {
            break;
        }
        n += 1;
    }
    Some(n)
}

/// Size of the system's default hugepage, from /proc/meminfo (2 MiB when unknown).
pub fn default_hugepage_size() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Hugepagesize:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(2 << 20, |kb| kb << 10)
}

impl MemoryPlan {
    /// The plan for `config` with `hugepage_size`-byte pages.
    /// Mbufs a port can hold: its rx rings full, its tx queue of every worker full, and a
    /// burst waiting for it on every worker.
    pub fn runtime_port_mbufs(rx_queues: u16, rx_descriptors: u16, tx_descriptors: u16, workers: u64) -> u64 {
        rx_queues as u64 * rx_descriptors as u64 + workers * (tx_descriptors as u64 + BURST as u64)
    }

    pub fn for_config(config: &Config, hugepage_size: u64) -> MemoryPlan {
        let workers = config.workers.len().max(1) as u64;
        let max_mtu = config.ports.iter().map(|p| p.mtu as u32).max().unwrap_or(1500);
        // A frame: MTU + Ethernet header + two VLAN tags + FCS.
        let frame = max_mtu + 14 + 8 + 4;
        let data_room = DEFAULT_DATA_ROOM.max((MBUF_HEADROOM + frame).next_multiple_of(64)) as u16;

        let mut parts = Vec::new();
        // `system:` ports' rings hold frames in the kernel's memory, not mbufs.
        let ethdevs = || config.ports.iter().filter(|p| !matches!(p.device(), Ok(DeviceKind::System { .. })));
        let rx: u64 = ethdevs().map(|p| p.rx_queues as u64 * p.rx_descriptors as u64).sum();
        let tx: u64 = ethdevs().map(|p| workers * p.tx_descriptors as u64).sum();
        parts.push(("rx descriptor rings".to_string(), rx));
        parts.push(("tx descriptor rings (one queue per worker per port)".to_string(), tx));
        let ports = config.ports.len() as u64;
        parts.push((
            "in flight on workers (rx burst + one tx buffer per port)".to_string(),
            workers * BURST as u64 * (1 + ports),
        ));
        let spare = config.switch.spare_ports as u64;
        let runtime_port_mbufs =
            spare * Self::runtime_port_mbufs(1, RUNTIME_PORT_DESCRIPTORS, RUNTIME_PORT_DESCRIPTORS, workers);
        if spare > 0 {
            parts.push((format!("{spare} ports added at run time (switch.spare_ports)"), runtime_port_mbufs));
        }
        let cache = config.switch.mbuf_cache as u64;
        // A per-lcore cache may hold up to 1.5x its size; the main lcore has one too.
        parts.push(("per-core mempool caches".to_string(), (workers + 1) * cache * 3 / 2));
        for p in &config.ports {
            if let (Ok(DeviceKind::Vdev { driver: "net_pcap", .. }), Some(file), Some("1")) =
                (p.device(), p.devarg("rx_pcap"), p.devarg("infinite_rx"))
            {
                if let Some(n) = count_pcap_packets(Path::new(file)) {
                    parts.push((format!("pcap replay preloaded by port '{}'", p.name), n));
                }
            }
        }
        let need: u64 = parts.iter().map(|(_, n)| n).sum();
        let slack = 2048 + need / 8;
        parts.push(("headroom for bursts and control-plane packets".to_string(), slack));
        let computed = need + slack;
        let mbufs = match config.switch.mbufs {
            Some(n) => {
                parts.push((format!("(switch.mbufs overrides the {computed} computed)"), 0));
                n as u64
            }
            None => computed,
        };
        let per_mbuf = MBUF_HEADER + data_room as u64 + MEMPOOL_OBJ_OVERHEAD;
        // The mempool's ring of free pointers: 8 bytes per slot, power-of-two slots.
        let pool_bytes = mbufs * per_mbuf + 8 * (mbufs + 1).next_power_of_two();
        let queues: u64 =
            config.ports.iter().map(|p| p.rx_queues as u64 + workers).sum::<u64>() + spare * (1 + workers);
        let mut overhead = EAL_BASE_BYTES + queues * PER_QUEUE_BYTES;
        if let Some(mb) = config.eal.memory_mb {
            // The user's figure is the total; whatever the pool leaves is for the EAL.
            overhead = ((mb as u64) << 20).saturating_sub(pool_bytes);
        }
        let total = pool_bytes + overhead;
        // The user's figure is taken at start as given; without hugepages the EAL cannot
        // grow, so it takes everything then too.
        let prealloc = if config.eal.memory_mb.is_some() || config.eal.no_huge {
            total
        } else {
            (pool_bytes + EAL_START_BYTES).min(total)
        };
        let hugepages = if config.eal.no_huge { 0 } else { total.div_ceil(hugepage_size) };
        MemoryPlan {
            mbufs: mbufs.min(u32::MAX as u64) as u32,
            data_room,
            parts,
            pool_bytes,
            overhead_bytes: overhead,
            prealloc_bytes: prealloc,
            hugepage_size,
            hugepages,
            runtime_port_mbufs,
        }
    }
}

/// Hugepages of one size: how many exist and how many are free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HugepageState {
    pub total: u64,
    pub free: u64,
    pub mounted: bool,
}

/// Reads the kernel's hugepage counters for pages of `size` bytes.
pub fn hugepage_state(size: u64) -> HugepageState {
    let dir = format!("/sys/kernel/mm/hugepages/hugepages-{}kB", size >> 10);
    let read = |f: &str| {
        std::fs::read_to_string(format!("{dir}/{f}")).ok().and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0)
    };
    let mounted = std::fs::read_to_string("/proc/mounts")
        .map(|m| m.lines().any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs")))
        .unwrap_or(false);
    HugepageState { total: read("nr_hugepages"), free: read("free_hugepages"), mounted }
}

/// The kernel's transparent huge page mode for shared memory, memfd included: the client
/// side of a memif connection keeps its rings there, and in copy mode (DPDK's and VPP's
/// default) its packet buffers too.
pub const SHMEM_THP_PATH: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";

/// The mode in force in a `transparent_hugepage` setting's line: the bracketed word of
/// `always within_size advise [never] deny force`.
pub fn active_thp_mode(line: &str) -> Option<&str> {
    line.split_whitespace().find_map(|w| w.strip_prefix('[')?.strip_suffix(']'))
}

/// The kernel's shared-memory THP settings: the top-level line, and from kernel 6.11 on one
/// line per page size (`hugepages-2048kB`, ...), each naming a mode or `inherit`.
#[derive(Debug, Clone, Default)]
pub struct ShmemThp {
    pub top: String,
    /// (directory name, line) per size.
    pub per_size: Vec<(String, String)>,
}

impl ShmemThp {
    pub fn read() -> ShmemThp {
        let dir = std::path::Path::new(SHMEM_THP_PATH).parent().expect("a directory");
        let mut per_size: Vec<(String, String)> = std::fs::read_dir(dir)
            .map(|d| d.flatten().collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let line = std::fs::read_to_string(e.path().join("shmem_enabled")).ok()?;
                name.starts_with("hugepages-").then_some((name, line))
            })
            .collect();
        per_size.sort();
        ShmemThp { top: std::fs::read_to_string(SHMEM_THP_PATH).unwrap_or_default(), per_size }
    }
}

/// Why memif buffers will sit on 4 KiB pages, given the shared-memory THP settings, or None
/// where the kernel gives a memfd huge pages of some size (or the top-level line is not
/// understood). A size is on where its own mode, or the top-level one where it says
/// `inherit` (or has no line: kernels before 6.11), is `always` or `within_size`; `force`
/// and `deny` at the top level turn every size on or off. DPDK makes its memif memfd
/// without `MADV_HUGEPAGE`, so `advise` does not cover it. On 4 KiB pages a lone packet
/// after a pause misses the TLB on its ring slot and buffer, on both sides, and a peer
/// that does not map its memory in takes a page fault for each page of the rings' first
/// round (the switch maps its side in: `switch.memif_map_in`): tens of µs on a VM here
/// (`bench/README.md`).
pub fn memif_small_pages_reason(thp: &ShmemThp) -> Option<String> {
    let top = active_thp_mode(&thp.top)
        .filter(|m| matches!(*m, "always" | "within_size" | "advise" | "never" | "deny" | "force"))?;
    let on = |mode: &str| matches!(mode, "always" | "within_size");
    let a_size_on = thp.per_size.iter().any(|(_, line)| match active_thp_mode(line) {
        Some("inherit") => on(top),
        Some(mode) => on(mode),
        None => false,
    });
    let huge = match top {
        "force" => true,
        "deny" => false,
        _ if thp.per_size.is_empty() => on(top),
        _ => a_size_on,
    };
    if huge {
        return None;
    }
    // Where the top level is on but every size is off, the sizes' own lines decide.
    let (what, fix) = if on(top) {
        let pmd = SHMEM_THP_PATH.replace("shmem_enabled", "hugepages-2048kB/shmem_enabled");
        (format!("{SHMEM_THP_PATH} is {top}, but every page size's own setting is off"), pmd)
    } else if thp.per_size.is_empty() {
        (format!("{SHMEM_THP_PATH} is {top}"), SHMEM_THP_PATH.to_string())
    } else {
        (format!("{SHMEM_THP_PATH} is {top}, and no page size's own setting turns one on"), SHMEM_THP_PATH.to_string())
    };
    Some(format!(
        "memif buffers in copy mode are on 4 KiB pages ({what}): the first packet after a pause takes tens of µs \
         longer; `echo within_size > {fix}` puts the ones made after it (peers that connect anew) on huge pages"
    ))
}

/// Not enough hugepages for a plan: the message says how many and how to get them.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "not enough hugepages: this configuration needs {needed} hugepages of {size_kb} KiB ({needed_mb} MiB: {mbufs} mbufs and EAL/port memory), but only {free} of {total} are free{mount_hint}.\n\
     Reserve them with:\n    echo {target} > /proc/sys/vm/nr_hugepages{mount_cmd}\n\
     or lower rx_descriptors/tx_descriptors/rx_queues or switch.mbufs, or set eal.no_huge = true for a test run."
)]
pub struct HugepageShortage {
    pub needed: u64,
    pub needed_mb: u64,
    pub mbufs: u32,
    pub size_kb: u64,
    pub free: u64,
    pub total: u64,
    pub target: u64,
    pub mount_hint: &'static str,
    pub mount_cmd: &'static str,
}

/// Checks that the machine can give `plan` its hugepages.
pub fn check_hugepages(plan: &MemoryPlan, state: HugepageState) -> Result<(), HugepageShortage> {
    if plan.hugepages == 0 || (state.free >= plan.hugepages && state.mounted) {
        return Ok(());
    }
    let (mount_hint, mount_cmd) = if state.mounted {
        ("", "")
    } else {
        (" and no hugetlbfs is mounted", "\n    mkdir -p /dev/hugepages && mount -t hugetlbfs nodev /dev/hugepages")
    };
    Err(HugepageShortage {
        needed: plan.hugepages,
        needed_mb: (plan.hugepages * plan.hugepage_size) >> 20,
        mbufs: plan.mbufs,
        size_kb: plan.hugepage_size >> 10,
        free: state.free,
        total: state.total,
        target: state.total + plan.hugepages.saturating_sub(state.free),
        mount_hint,
        mount_cmd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::from_toml(&format!(
            r#"
            [[port]]
            name = "a"
            number = 1
            devargs = "net_null0"
            [[port]]
            name = "b"
            number = 2
            devargs = "net_null1"
            rx_queues = 2
            [[worker]]
            core = 1
            {extra}
            "#
        ))
        .unwrap()
    }

    #[test]
    fn mbufs_cover_rings_bursts_and_caches() {
        let plan = MemoryPlan::for_config(&config(""), 2 << 20);
        // rx: 1024 + 2*1024, tx: 2*1024, bursts: 32*3, caches: 2*256*1.5, 8 spare ports of
        // 256 rx + 1 worker x (256 tx + 32)
        let need = 3072 + 2048 + 96 + 768 + 8 * (256 + 256 + 32);
        assert_eq!(plan.mbufs as u64, need + 2048 + need / 8);
        assert_eq!(plan.runtime_port_mbufs, 8 * (256 + 256 + 32));
        assert_eq!(plan.data_room, 2176);
        assert_eq!(plan.hugepages, plan.total_bytes().div_ceil(2 << 20));
        assert!(plan.to_string().contains("rx descriptor rings"));
    }

    #[test]
    fn the_eal_takes_the_pool_and_its_own_start_at_start_and_the_rest_as_needed() {
        let plan = MemoryPlan::for_config(&config(""), 2 << 20);
        let start = (plan.pool_bytes + EAL_START_BYTES).div_ceil(2 << 20);
        assert_eq!(plan.prealloc_hugepages(), start);
        assert_eq!(plan.memory_mb(), start * 2);
        assert!(plan.hugepages > start, "the check counts spare ports' queues and a margin");
        assert!(plan.to_string().contains(&format!("{start} of them taken at start")), "{plan}");
        // The user's memory_mb is what the EAL takes at start.
        let mut c = config("");
        c.eal.memory_mb = Some(512);
        assert_eq!(MemoryPlan::for_config(&c, 2 << 20).memory_mb(), 512);
        // Without hugepages the EAL cannot grow: it gets everything at start.
        c.eal.memory_mb = None;
        c.eal.no_huge = true;
        let plan = MemoryPlan::for_config(&c, 2 << 20);
        assert_eq!(plan.memory_mb(), plan.total_bytes().div_ceil(1 << 20));
    }

    #[test]
    fn jumbo_mtu_grows_the_data_room() {
        let mut c = config("");
        c.ports[0].mtu = 9000;
        let plan = MemoryPlan::for_config(&c, 2 << 20);
        assert!(plan.data_room as u32 >= 9000 + 14 + 8 + 4 + 128);
        assert_eq!(plan.data_room % 64, 0);
    }

    #[test]
    fn explicit_mbufs_and_no_huge() {
        let mut c = config("");
        c.switch.mbufs = Some(4095);
        c.eal.no_huge = true;
        let plan = MemoryPlan::for_config(&c, 2 << 20);
        assert_eq!(plan.mbufs, 4095);
        assert_eq!(plan.hugepages, 0);
        assert!(check_hugepages(&plan, HugepageState { total: 0, free: 0, mounted: false }).is_ok());
    }

    #[test]
    fn shortage_message_says_how_many_and_how() {
        let plan = MemoryPlan::for_config(&config(""), 2 << 20);
        let err = check_hugepages(&plan, HugepageState { total: 10, free: 4, mounted: true }).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&format!("needs {} hugepages of 2048 KiB", plan.hugepages)), "{msg}");
        assert!(msg.contains("only 4 of 10 are free"), "{msg}");
        assert!(msg.contains(&format!("echo {} > /proc/sys/vm/nr_hugepages", 10 + plan.hugepages - 4)), "{msg}");
        let unmounted = check_hugepages(&plan, HugepageState { total: 999, free: 999, mounted: false }).unwrap_err();
        assert!(unmounted.to_string().contains("mount -t hugetlbfs"));
        assert!(check_hugepages(&plan, HugepageState { total: 999, free: 999, mounted: true }).is_ok());
    }

    #[test]
    fn pcap_packets_are_counted() {
        let dir = std::env::temp_dir().join(format!("vs-pcap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("three.pcap");
        let mut data = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        data.extend_from_slice(&[0; 8]);
        data.extend_from_slice(&65535u32.to_le_bytes());
        data.extend_from_slice(&1u32.to_le_bytes());
        for len in [60u32, 64, 1514] {
            data.extend_from_slice(&[0; 8]);
            data.extend_from_slice(&len.to_le_bytes());
            data.extend_from_slice(&len.to_le_bytes());
            data.extend(std::iter::repeat_n(0u8, len as usize));
        }
        std::fs::write(&path, &data).unwrap();
        assert_eq!(count_pcap_packets(&path), Some(3));
        std::fs::write(&path, b"not a pcap").unwrap();
        assert_eq!(count_pcap_packets(&path), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_bracketed_word_is_the_thp_mode_in_force() {
        assert_eq!(active_thp_mode("always within_size advise [never] deny force\n"), Some("never"));
        assert_eq!(active_thp_mode("[always] madvise never"), Some("always"));
        assert_eq!(active_thp_mode("always within_size advise never"), None);
        assert_eq!(active_thp_mode(""), None);
    }

    #[test]
    fn memif_buffers_are_on_small_pages_unless_shmem_thp_covers_memfd() {
        let modes = ["always", "within_size", "advise", "never", "deny", "force"];
        let line_with =
            |active: &str| modes.map(|m| if m == active { format!("[{m}]") } else { m.to_string() }).join(" ") + "\n";
        let top_only = |mode: &str| ShmemThp { top: line_with(mode), per_size: vec![] };
        for mode in ["never", "deny", "advise"] {
            let reason =
                memif_small_pages_reason(&top_only(mode)).unwrap_or_else(|| panic!("{mode} gives huge pages?"));
            assert!(reason.contains(&format!("shmem_enabled is {mode})")), "{reason}");
            assert!(
                reason.contains("echo within_size > /sys/kernel/mm/transparent_hugepage/shmem_enabled`"),
                "{reason}"
            );
        }
        for mode in ["always", "within_size", "force"] {
            assert_eq!(memif_small_pages_reason(&top_only(mode)), None, "{mode}");
        }
        // A kernel without the file, or a mode this code does not know: nothing to say.
        assert_eq!(memif_small_pages_reason(&ShmemThp::default()), None);
        assert_eq!(
            memif_small_pages_reason(&ShmemThp { top: "always [sometimes] never".into(), per_size: vec![] }),
            None
        );
    }

    #[test]
    fn per_size_shmem_thp_settings_turn_sizes_on_and_off_under_the_top_level() {
        // As kernels from 6.11 show them: a size's line adds `inherit`.
        let size = |name: &str, active: &str| {
            let line = ["always", "inherit", "within_size", "advise", "never"]
                .map(|m| if m == active { format!("[{m}]") } else { m.to_string() })
                .join(" ");
            (format!("hugepages-{name}"), line)
        };
        let thp = |top: &str, sizes: Vec<(String, String)>| ShmemThp {
            top: format!("always within_size advise [{top}] deny force"),
            per_size: sizes,
        };
        // The default: 2 MiB inherits, the rest are off. The top level decides.
        let default = |top: &str| thp(top, vec![size("2048kB", "inherit"), size("64kB", "never")]);
        assert!(memif_small_pages_reason(&default("never"))
            .unwrap()
            .contains("no page size's own setting turns one on"));
        assert_eq!(memif_small_pages_reason(&default("within_size")), None);
        // A size turned on by itself gives huge pages under a top level of never.
        assert_eq!(
            memif_small_pages_reason(&thp("never", vec![size("2048kB", "never"), size("64kB", "always")])),
            None
        );
        // `advise` at a size does not cover DPDK's memfd.
        assert!(memif_small_pages_reason(&thp("never", vec![size("2048kB", "advise")])).is_some());
        // Every size off under a top level that is on: the 2 MiB line is the one to change.
        let reason = memif_small_pages_reason(&thp("within_size", vec![size("2048kB", "never")])).unwrap();
        assert!(reason.contains("every page size's own setting is off"), "{reason}");
        assert!(
            reason.contains("echo within_size > /sys/kernel/mm/transparent_hugepage/hugepages-2048kB/shmem_enabled`"),
            "{reason}"
        );
        // deny and force at the top level override every size.
        assert!(memif_small_pages_reason(&thp("deny", vec![size("2048kB", "always")])).is_some());
        assert_eq!(memif_small_pages_reason(&thp("force", vec![size("2048kB", "never")])), None);
    }
}
