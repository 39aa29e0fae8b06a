//! A running switch: DPDK, the packet pool, ports, workers and the published pipeline, with
//! the operations the control plane needs (counters, MAC table, maintenance, shutdown).
//!
//! Thread-safety: `Switch` is shared by the control plane's threads. Its own state changes
//! only under its mutexes, which workers never take; workers see changes through the
//! pipeline snapshot (see `pipeline`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

mod flows;
mod live;
mod ports;
mod tunnels;

pub use flows::{FlowView, NamedCounter, TableView, TraceResult, TraceStep, TxOutcome};
pub use live::LivePacket;
pub use ports::PortChangeError;
pub use tunnels::{TunnelChangeError, TunnelView};

use crate::config::{Config, ConfigError, DeviceKind, PortConfig};
use crate::dpdk::{
    DevInfo, DpdkError, Eal, EthPort, EthStats, LinkStatus, MemifRegionMapping, Mempool, PortLayout, PortSetup,
    SpareShape, TscSource,
};
use crate::l2::L2Settings;
use crate::mac_table::{FlushFilter, MacEntry, MacTable, PortIdx};
use crate::memory::{self, check_hugepages, default_hugepage_size, hugepage_state, HugepageShortage, MemoryPlan};
use crate::pipeline::{Pipeline, PipelineCell};
use crate::power::{self, ResumeLatencyLimit};
use crate::stats::{PortTotals, WorkerStats, MAX_PORTS};
use crate::tunnel::neighbor::NeighborTable;
use crate::wire::MacAddr;
use crate::worker::{self, CoarseClock, IdleSettings, Mailbox, Shared, WorkerChange, WorkerPlan, LOAD_WINDOW_MS};

/// Why a change to workers was refused. Nothing was changed, or what was is being undone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkerChangeError {
    #[error("worker: no worker {index} (the switch has {count})")]
    NoSuchWorker { index: usize, count: usize },
    #[error("the switch is stopping")]
    Stopping,
    #[error("worker {0} did not apply the change within {APPLY_SECS} s; it is being undone")]
    Timeout(usize),
}

/// Seconds a worker may take to apply a posted change (only a stopping or wedged switch gets
/// near it).
const APPLY_SECS: u64 = 5;

/// The workers a change for `index` (all when None) goes to, of `count`.
fn idle_change_targets(index: Option<usize>, count: usize) -> Result<Vec<usize>, WorkerChangeError> {
    match index {
        Some(index) if index >= count => Err(WorkerChangeError::NoSuchWorker { index, count }),
        Some(index) => Ok(vec![index]),
        None => Ok((0..count).collect()),
    }
}

/// Why the switch did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Hugepages(#[from] HugepageShortage),
    #[error("DPDK initialisation failed ({0}); see DPDK's messages above")]
    Eal(DpdkError),
    #[error("cannot create the packet pool of {mbufs} mbufs: {source}")]
    Mempool { mbufs: u32, source: DpdkError },
    #[error("port '{port}' ({devargs}): {reason}")]
    Port { port: String, devargs: String, reason: String },
    #[error("static_mac: {0}")]
    StaticMac(String),
    #[error("flows in the config: {0}")]
    Flows(String),
    #[error("tunnels in the config: {0}")]
    Tunnels(String),
    #[error("worker on core {core}: {reason}")]
    Worker { core: usize, reason: String },
}

/// A configuration checked and sized, ready to start.
#[derive(Debug, Clone)]
pub struct StartPlan {
    pub config: Config,
    pub memory: MemoryPlan,
    pub eal_args: Vec<String>,
}

impl StartPlan {
    /// Validates `config` (read from `path`), computes its memory and checks the machine has
    /// it. Touches nothing: a failure here leaves no trace.
    pub fn new(config: Config, path: &std::path::Path) -> Result<StartPlan, StartError> {
        config.validate(path)?;
        let memory = MemoryPlan::for_config(&config, default_hugepage_size());
        if !config.eal.no_huge {
            check_hugepages(&memory, hugepage_state(memory.hugepage_size))?;
        }
        let eal_args = eal_args(&config, &memory);
        Ok(StartPlan { config, memory, eal_args })
    }
}

/// The EAL command line for a configuration. PCI scanning is off unless a port is a PCI
/// device, and then only the configured functions are probed.
///
/// The worker cores are EAL lcores too (their EAL threads only wait), though the workers are
/// this switch's own threads: the EAL gives its control threads the cores of the calling
/// thread that are not lcores, or else the main core. So a start-up thread allowed on the
/// main and the worker cores (see [`startup_cores`]) leaves them all on the main core.
pub fn eal_args(config: &Config, memory: &MemoryPlan) -> Vec<String> {
    let eal = &config.eal;
    let lcores: Vec<String> = startup_cores(config).iter().map(usize::to_string).collect();
    let mut a = vec![
        "vswitchd".to_string(),
        "-l".into(),
        lcores.join(","),
        "--main-lcore".into(),
        eal.main_core.to_string(),
        "--file-prefix".into(),
        eal.file_prefix.clone(),
        "-m".into(),
        memory.memory_mb().to_string(),
    ];
    if eal.no_huge {
        // --in-memory is refused together with --no-huge; --no-shconf gives the same
        // "nothing shared, nothing left behind".
        a.extend(["--no-huge".into(), "--no-shconf".into()]);
    } else if eal.in_memory {
        a.push("--in-memory".into());
    }
    let pci: Vec<String> = config
        .ports
        .iter()
        .filter_map(|p| match p.device() {
            Ok(DeviceKind::Pci(addr)) => Some(addr),
            _ => None,
        })
        .collect();
    if pci.is_empty() {
        a.push("--no-pci".into());
    } else {
        for addr in pci {
            a.extend(["-a".into(), addr]);
        }
    }
    if let Some(level) = &eal.log_level {
        a.extend(["--log-level".into(), level.clone()]);
    }
    a.extend(eal.extra_args.iter().cloned());
    a
}

/// The main core and the worker cores, in order, each once. Start-up may run on any of them:
/// the workers' cores stay idle until the workers start, while the main core is often shared
/// with the rest of the pod or node, and the EAL's start-up is tens of milliseconds of
/// hugepage zeroing and probing. The EAL pins its thread to the main core before it returns.
pub fn startup_cores(config: &Config) -> Vec<usize> {
    let mut cores = vec![config.eal.main_core];
    for w in &config.workers {
        if !cores.contains(&w.core) {
            cores.push(w.core);
        }
    }
    cores.sort_unstable();
    cores
}

/// A port of the running switch.
pub struct PortRuntime {
    pub idx: PortIdx,
    pub config: PortConfig,
    pub devargs: String,
    pub eth: EthPort,
    pub info: DevInfo,
    pub layout: PortLayout,
    pub rx_queues: u16,
    pub tx_queues: u16,
    /// Mbufs of the run-time port budget it holds (0 for ports from the config).
    pub runtime_mbufs: u64,
}

/// A worker of the running switch.
pub struct WorkerRuntime {
    pub index: usize,
    pub core: usize,
    pub lcore: u32,
    /// (port index, queue) it polls, by slot in its rx list (None: the slot's port was
    /// removed). Per-queue counters are kept by slot.
    rx: Mutex<Vec<Option<(PortIdx, u16)>>>,
    pub stats: Arc<WorkerStats>,
}

impl WorkerRuntime {
    /// (slot, port index, queue) of each rx queue the worker polls.
    pub fn rx_queues(&self) -> Vec<(usize, PortIdx, u16)> {
        let rx = self.rx.lock().unwrap();
        rx.iter().enumerate().filter_map(|(slot, e)| e.map(|(p, q)| (slot, p, q))).collect()
    }
}

/// One port's view for the API.
#[derive(Debug, Clone)]
pub struct PortView {
    pub idx: PortIdx,
    pub name: String,
    pub number: u32,
    pub devargs: String,
    pub driver: String,
    pub dpdk_port_id: u16,
    pub mac: MacAddr,
    pub mtu: u16,
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
    /// The rx queues give rx interrupts (idle workers wait for them).
    pub rx_interrupts: bool,
    pub link: LinkStatus,
    /// Counters of the switch's workers.
    pub counters: PortTotals,
    /// Counters of the device (PMD).
    pub device: EthStats,
}

pub struct Switch {
    pub plan: StartPlan,
    started_wall: SystemTime,
    started: Instant,
    ports: RwLock<Vec<Arc<PortRuntime>>>,
    workers: Vec<WorkerRuntime>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    shared: Arc<Shared>,
    /// Serialises publications and holds replaced snapshots until every worker moved on.
    publisher: Mutex<Retired>,
    next_generation: AtomicU64,
    last_aging: AtomicU64,
    pool: Mutex<Option<Arc<Mempool>>>,
    eal: Mutex<Option<Arc<Eal>>>,
    tsc_hz: u64,
    tsc_source: TscSource,
    /// TSC at start, the zero of live-trace times.
    started_tsc: u64,
    /// Desired flows and their bookkeeping; changes are serialised here.
    flows: Mutex<flows::FlowState>,
    /// Tunnel ports (taken after `flows`).
    tunnels: Mutex<tunnels::TunnelState>,
    /// Wake-up latency limits set on the worker cores, put back at shutdown.
    resume_latency: Mutex<Vec<ResumeLatencyLimit>>,
    memif_map_in: Arc<Mutex<MemifMapIn>>,
    /// The thread mapping memif regions in, while it runs (see `map_in_memif`).
    memif_mapper: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held while changes are posted to workers' mailboxes and applied: one poster at a
    /// time, so every worker gets the changes of two callers in the same order.
    worker_posts: Mutex<()>,
}

/// What `Switch::map_in_memif` has seen: the memif ports whose link was up at its last look
/// (DPDK port ids), and the regions it mapped in since a link last went down.
#[derive(Default)]
struct MemifMapIn {
    links_up: Vec<u16>,
    mapped_in: Vec<MemifRegionMapping>,
}

impl MemifMapIn {
    /// Takes the memif ports whose link is up now; true if one came up since the last look.
    /// A link that went down forgets the regions mapped in: a peer that connects again may
    /// bring its memfd back at the same address, unmapped.
    fn look(&mut self, links_up: Vec<u16>) -> bool {
        let came_up = links_up.iter().any(|id| !self.links_up.contains(id));
        if self.links_up.iter().any(|id| !links_up.contains(id)) {
            self.mapped_in.clear();
        }
        self.links_up = links_up;
        came_up
    }

    /// Of the memif regions `found` in the process, those to map in now: the ones not mapped
    /// in yet, in address order, while all of `found` mapped in stays within `budget`
    /// bytes. And those left out for the budget.
    fn plan(&self, mut found: Vec<MemifRegionMapping>, budget: usize) -> MemifMapInPlan {
        found.sort_by_key(|r| r.start);
        let mut plan = MemifMapInPlan::default();
        let mut total = 0;
        for region in found {
            if total + region.bytes() > budget {
                plan.over_budget.push(region);
                continue;
            }
            total += region.bytes();
            if !self.mapped_in.contains(&region) {
                plan.map_in.push(region);
            }
        }
        plan
    }
}

#[derive(Debug, Default, PartialEq)]
struct MemifMapInPlan {
    map_in: Vec<MemifRegionMapping>,
    over_budget: Vec<MemifRegionMapping>,
}

#[derive(Default)]
struct Retired {
    snapshots: Vec<Arc<Pipeline>>,
}

impl Switch {
    /// Starts DPDK, the ports and the workers. On failure everything started is stopped
    /// again before the error returns.
    pub fn start(plan: StartPlan) -> Result<Arc<Switch>, StartError> {
        let config = &plan.config;
        let eal = Eal::init(&plan.eal_args).map_err(StartError::Eal)?;
        let pool =
            Mempool::create(&eal, "vswitch_mbufs", plan.memory.mbufs, config.switch.mbuf_cache, plan.memory.data_room)
                .map_err(|source| StartError::Mempool { mbufs: plan.memory.mbufs, source })?;
        let pool = Arc::new(pool);
        let n_workers = config.workers.len();
        if config.ports.len() > MAX_PORTS {
            return Err(StartError::Port {
                port: config.ports[MAX_PORTS].name.clone(),
                devargs: config.ports[MAX_PORTS].devargs.clone(),
                reason: format!("more than {MAX_PORTS} ports"),
            });
        }

        // `system:` ports added at run time (CNI endpoints) find receive rings ready.
        let spares_for = (config.switch.spare_ports > 0).then_some(SpareShape {
            rx_queues: crate::config::RUNTIME_PORT_RX_QUEUES,
            rx_descriptors: crate::config::RUNTIME_PORT_DESCRIPTORS,
            mtu: crate::config::RUNTIME_PORT_MTU,
        });
        let mut ports = Vec::with_capacity(config.ports.len());
        for (i, pc) in config.ports.iter().enumerate() {
            ports.push(Arc::new(open_port(
                &eal,
                &pool,
                i as PortIdx,
                pc,
                n_workers,
                config.wants_rx_interrupts(),
                spares_for,
            )?));
        }

        let assignment = config.rx_assignment().map_err(|e| StartError::Worker { core: 0, reason: e.join("; ") })?;
        let mac_table = Arc::new(MacTable::new(config.switch.mac_table_size as usize));
        for m in &config.static_macs {
            // Validated: the MAC parses and the port exists.
            let mac: MacAddr = m.mac.parse().expect("validated MAC");
            let port = ports.iter().find(|p| p.config.name == m.port).expect("validated port");
            if !mac_table.insert_static(m.vlan, mac, port.idx) {
                return Err(StartError::StaticMac(format!("no room for {} in the MAC table", m.mac)));
            }
        }
        let l2 = L2Settings { forward_link_local: config.switch.forward_link_local };
        let mut uplinks = config.uplinks([0; 6]);
        for u in &mut uplinks {
            u.mac = ports[u.port as usize].eth.mac();
        }
        let tunnel_state = tunnels::TunnelState::new(
            ports.iter().map(|p| (p.idx, p.config.name.clone(), p.config.number, p.config.ip.is_some())).collect(),
            uplinks,
        );
        let (port_map, tunnel_map) = tunnel_state.maps();
        let neighbors = Arc::new(NeighborTable::new(4096));
        let pipeline = Pipeline::new(1, port_map, mac_table, l2, n_workers, tunnel_map, neighbors);
        let mailboxes = (0..n_workers)
            .map(|_| Mailbox::new())
            .collect::<std::io::Result<_>>()
            .map_err(|e| StartError::Worker { core: 0, reason: format!("cannot make a worker's doorbell: {e}") })?;
        let shared = Arc::new(Shared {
            pipeline: PipelineCell::new(pipeline),
            clock: CoarseClock::default(),
            go: Default::default(),
            stop: Default::default(),
            trace: Default::default(),
            mailboxes,
        });

        // Limits left by a switch killed while holding them go first, whatever this config
        // says. Records live beside the API socket, whose directory exists by now.
        let state_dir = config.control.socket.parent().unwrap_or(std::path::Path::new("/"));
        for leftover in power::put_back_leftovers(state_dir) {
            log_leftover(&leftover);
        }
        // Set before the workers start, so their first sleep already has it; put back by
        // `shutdown`, or by the drop on a failed start.
        let mut resume_latency = Vec::new();
        if let Some(latency) = config.switch.idle_cpu_resume_latency_us {
            for wc in &config.workers {
                let limit = ResumeLatencyLimit::set(state_dir, wc.core, latency)
                    .map_err(|reason| StartError::Worker { core: wc.core, reason })?;
                tracing::info!(
                    "core {}: wake-up latency limit {} (was {})",
                    wc.core,
                    power::describe(&power::sysfs_value(latency)),
                    power::describe(limit.previous())
                );
                resume_latency.push(limit);
            }
        }

        let mut workers = Vec::new();
        let mut threads = Vec::new();
        for (w, wc) in config.workers.iter().enumerate() {
            let mut rx = Vec::new();
            for &(pi, q) in &assignment[w] {
                let queue = ports[pi].eth.rx_queue(q).expect("each rx queue is assigned once");
                rx.push((pi as PortIdx, queue));
            }
            let tx =
                ports.iter().map(|p| (p.idx, p.eth.tx_queue(w as u16).expect("one tx queue per worker"))).collect();
            let stats = Arc::new(WorkerStats::default());
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let plan_w = WorkerPlan {
                index: w,
                core: wc.core,
                emc_entries: config.switch.emc_entries as usize,
                rx,
                tx,
                pool: pool.clone(),
                idle: IdleSettings {
                    backoff: wc.idle_backoff(&config.switch),
                    poll_cycles: eal.tsc_hz() / 1_000_000 * config.switch.idle_poll_us as u64,
                    sleep_max_us: config.switch.idle_sleep_max_us,
                    deep_cycles: eal.tsc_hz() / 1000 * config.switch.idle_deep_after_ms as u64,
                    deep_sleep_us: config.switch.idle_deep_sleep_us,
                    long_cycles: eal.tsc_hz() / 1000 * config.switch.idle_long_after_ms as u64,
                    long_sleep_us: config.switch.idle_long_sleep_us,
                    interrupts: config.switch.idle_interrupts,
                    load_packets: config.switch.idle_load_pps as u64 / (1000 / LOAD_WINDOW_MS),
                    load_window_cycles: eal.tsc_hz() / 1000 * LOAD_WINDOW_MS,
                    load_hold_cycles: eal.tsc_hz() / 1000 * config.switch.idle_load_hold_ms as u64,
                },
            };
            // Shown from the start, not only once the worker's loop runs.
            stats.idle_backoff.store(plan_w.idle.backoff, Ordering::Relaxed);
            let spawned = worker::spawn(plan_w, shared.clone(), stats.clone(), eal.clone(), ready_tx);
            let started = match spawned {
                Ok(handle) => {
                    threads.push(handle);
                    ready_rx.recv().unwrap_or_else(|_| Err("worker thread exited during start".into()))
                }
                Err(e) => Err(format!("cannot spawn thread: {e}")),
            };
            match started {
                Ok(lcore) => workers.push(WorkerRuntime {
                    index: w,
                    core: wc.core,
                    lcore,
                    rx: Mutex::new(assignment[w].iter().map(|&(p, q)| Some((p as PortIdx, q))).collect()),
                    stats,
                }),
                Err(reason) => {
                    shared.stop.store(true, Ordering::Relaxed);
                    shared.wake_workers();
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(StartError::Worker { core: wc.core, reason });
                }
            }
        }

        let tsc_hz = eal.tsc_hz();
        let tsc_source = eal.tsc_source();
        let flow_state = flows::FlowState::new(config);
        let switch = Arc::new(Switch {
            plan,
            started_wall: SystemTime::now(),
            started: Instant::now(),
            ports: RwLock::new(ports),
            workers,
            threads: Mutex::new(threads),
            shared,
            publisher: Mutex::new(Retired::default()),
            next_generation: AtomicU64::new(2),
            last_aging: AtomicU64::new(0),
            pool: Mutex::new(Some(pool)),
            eal: Mutex::new(Some(eal)),
            tsc_hz,
            tsc_source,
            started_tsc: crate::dpdk::tsc(),
            flows: Mutex::new(flow_state),
            tunnels: Mutex::new(tunnel_state),
            resume_latency: Mutex::new(resume_latency),
            memif_map_in: Arc::new(Mutex::new(MemifMapIn::default())),
            memif_mapper: Mutex::new(None),
            worker_posts: Mutex::new(()),
        });
        if let Err(e) = switch.load_config_tunnels() {
            switch.shutdown();
            return Err(StartError::Tunnels(e));
        }
        if let Err(e) = switch.load_config_flows() {
            switch.shutdown();
            return Err(StartError::Flows(e));
        }
        switch.shared.go.store(true, Ordering::Release);
        switch.shared.wake_workers();
        Ok(switch)
    }

    pub fn started_at(&self) -> SystemTime {
        self.started_wall
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }

    /// See [`Eal::tsc_source`].
    pub fn tsc_source(&self) -> TscSource {
        self.tsc_source
    }

    pub fn workers(&self) -> &[WorkerRuntime] {
        &self.workers
    }

    /// Switches idle back-off on or off for worker `index`, or for every worker, without a
    /// restart: returns the workers changed once each of them runs the new setting. Until
    /// the next start, which takes the config's. If a worker does not apply it in time, the
    /// workers' modes before are posted back and the change is refused.
    pub fn set_idle_backoff(&self, index: Option<usize>, backoff: bool) -> Result<Vec<usize>, WorkerChangeError> {
        let targets = idle_change_targets(index, self.workers.len())?;
        // Held from reading the modes before to posting them back: no other change between.
        let one_poster = self.worker_posts.lock().unwrap();
        let before: Vec<bool> =
            targets.iter().map(|&w| self.workers[w].stats.idle_backoff.load(Ordering::Relaxed)).collect();
        let changes = targets.iter().map(|&w| (w, WorkerChange::SetIdleBackoff(backoff))).collect();
        if let Err(failure) = self.post_and_wait(&one_poster, changes) {
            // Workers that applied it go back; one that did not yet applies both, in order.
            for (&w, &was) in targets.iter().zip(&before) {
                let _ = self.shared.mailboxes[w].post(WorkerChange::SetIdleBackoff(was));
            }
            return Err(failure);
        }
        let mode = if backoff { "back-off" } else { "busy polling" };
        tracing::info!(workers = ?targets, "idle {mode} on");
        Ok(targets)
    }

    /// The generation workers are asked to run.
    pub fn generation(&self) -> u64 {
        self.shared.pipeline.generation()
    }

    /// Bytes of memory the EAL holds now (0 once it is shut down).
    pub fn eal_mapped_bytes(&self) -> u64 {
        self.eal.lock().unwrap().as_ref().map_or(0, |e| e.mapped_bytes())
    }

    /// Mbufs free and in use in the packet pool.
    pub fn pool_usage(&self) -> Option<(u32, u32)> {
        let pool = self.pool.lock().unwrap();
        pool.as_ref().map(|p| (p.available(), p.in_use()))
    }

    fn port_view(&self, p: &PortRuntime) -> PortView {
        let mut counters = PortTotals::default();
        for w in &self.workers {
            counters.add(&w.stats.ports[p.idx as usize]);
        }
        PortView {
            idx: p.idx,
            name: p.config.name.clone(),
            number: p.config.number,
            devargs: p.devargs.clone(),
            driver: p.info.driver.clone(),
            dpdk_port_id: p.eth.id(),
            mac: MacAddr(p.eth.mac()),
            mtu: p.config.mtu,
            rx_queues: p.rx_queues,
            tx_queues: p.tx_queues,
            rx_descriptors: p.layout.rx_descriptors,
            tx_descriptors: p.layout.tx_descriptors,
            rx_interrupts: p.layout.rx_interrupts,
            link: p.eth.link(),
            counters,
            device: p.eth.stats(),
        }
    }

    /// Every port with link state and counters, in port-number order.
    pub fn ports(&self) -> Vec<PortView> {
        let ports = self.ports.read().unwrap();
        let mut v: Vec<_> = ports.iter().map(|p| self.port_view(p)).collect();
        v.sort_by_key(|p| p.number);
        v
    }

    /// The port with this index.
    pub fn port_by_idx(&self, idx: PortIdx) -> Option<PortView> {
        let ports = self.ports.read().unwrap();
        ports.iter().find(|p| p.idx == idx).map(|p| self.port_view(p))
    }

    pub fn port_by_name(&self, name: &str) -> Option<PortView> {
        let ports = self.ports.read().unwrap();
        ports.iter().find(|p| p.config.name == name).map(|p| self.port_view(p))
    }

    pub fn port_by_number(&self, number: u32) -> Option<PortView> {
        let ports = self.ports.read().unwrap();
        ports.iter().find(|p| p.config.number == number).map(|p| self.port_view(p))
    }

    /// (index, name, number) of each port: cheap, for translating MAC table entries.
    pub fn port_names(&self) -> Vec<(PortIdx, String, u32)> {
        let ports = self.ports.read().unwrap();
        ports.iter().map(|p| (p.idx, p.config.name.clone(), p.config.number)).collect()
    }

    fn mac_table(&self) -> Arc<MacTable> {
        self.shared.pipeline.load().mac_table().clone()
    }

    /// Live MAC table entries.
    pub fn mac_entries(&self) -> Vec<MacEntry> {
        self.mac_table().entries(self.shared.clock.now())
    }

    pub fn mac_table_capacity(&self) -> usize {
        self.mac_table().capacity()
    }

    /// Removes the selected entries; returns how many.
    pub fn flush_macs(&self, filter: &FlushFilter) -> usize {
        self.mac_table().flush(filter)
    }

    /// Adds a static entry; false when the table has no room.
    pub fn add_static_mac(&self, vlan: u16, mac: MacAddr, port: PortIdx) -> bool {
        self.mac_table().insert_static(vlan, mac, port)
    }

    /// Publishes `make(current)` as the next generation; returns it. Old snapshots are freed
    /// by `maintain` once every worker has moved past them.
    pub fn publish(&self, make: impl FnOnce(&Pipeline, u64) -> Pipeline) -> u64 {
        let mut retired = self.publisher.lock().unwrap();
        let generation = self.next_generation.fetch_add(1, Ordering::Relaxed);
        let current = self.shared.pipeline.load();
        let old = self.shared.pipeline.publish(make(&current, generation));
        retired.snapshots.push(old);
        self.shared.wake_workers();
        generation
    }

    /// The oldest generation any worker still runs.
    pub fn oldest_running_generation(&self) -> u64 {
        self.workers.iter().map(|w| w.stats.generation.load(Ordering::Acquire)).min().unwrap_or(u64::MAX)
    }

    /// Waits until every worker runs `generation` or later, looking every `poll`; false on
    /// timeout.
    pub fn wait_for_generation(&self, generation: u64, timeout: Duration, poll: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.oldest_running_generation() >= generation {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(poll);
        }
    }

    /// Periodic control-plane work, a few times a second: advance the clock, age MAC
    /// entries once a second, rebuild the MAC table when tombstones pile up, and free the
    /// snapshots no worker runs any more.
    pub fn maintain(&self) {
        self.shared.clock.tick();
        let now = self.shared.clock.now();
        if self.last_aging.swap(now as u64, Ordering::Relaxed) != now as u64 {
            let table = self.mac_table();
            table.age(now, self.plan.config.switch.mac_aging_seconds);
            if table.needs_rebuild() {
                let rebuilt = Arc::new(table.rebuilt(now));
                self.publish(|p, g| Pipeline { generation: g, mac_table: rebuilt, ..p.clone() });
            }
        }
        let oldest = self.oldest_running_generation();
        self.publisher.lock().unwrap().snapshots.retain(|s| s.generation() >= oldest);
        self.maintain_flows(oldest);
        if self.plan.config.switch.memif_map_in {
            self.map_in_memif();
        }
    }

    /// Once a memif port's link comes up, maps in every page of the memif regions not mapped
    /// in yet (`switch.memif_map_in`, up to `memif_map_in_max_mib` in all): the worker then
    /// takes no page fault on a ring slot or buffer the connection has not used before. The
    /// pages are mapped in on a thread of their own (on the control plane's core), 16 ms for
    /// 32 MiB here, so the API's threads are not held. A link that goes down and up again
    /// between two looks is missed; its pages fault in as packets use them, as without this.
    fn map_in_memif(&self) {
        let mut mapper = self.memif_mapper.lock().unwrap();
        if mapper.as_ref().is_some_and(|t| !t.is_finished()) {
            // Looked at again once it is done.
            return;
        }
        if let Some(finished) = mapper.take() {
            let _ = finished.join();
        }
        let memif_up = |p: &&Arc<PortRuntime>| p.eth.is_memif() && p.eth.link().up;
        let ids = self.ports.read().unwrap().iter().filter(memif_up).map(|p| p.eth.id()).collect();
        let mut state = self.memif_map_in.lock().unwrap();
        if !state.look(ids) {
            return;
        }
        let maps = match std::fs::read_to_string("/proc/self/maps") {
            Ok(maps) => maps,
            Err(e) => {
                // Looked at again on the next tick.
                state.links_up.clear();
                tracing::warn!(error = %e, "cannot read /proc/self/maps: memif regions not mapped in");
                return;
            }
        };
        let max_mib = self.plan.config.switch.memif_map_in_max_mib;
        let plan = state.plan(crate::dpdk::memif_region_mappings(&maps), max_mib as usize * (1 << 20));
        drop(state);
        if !plan.over_budget.is_empty() {
            tracing::warn!(
                regions = plan.over_budget.len(),
                mib = plan.over_budget.iter().map(|r| r.bytes()).sum::<usize>() >> 20,
                max_mib,
                "memif regions past switch.memif_map_in_max_mib are not mapped in: their pages fault in as packets use them"
            );
        }
        if plan.map_in.is_empty() {
            return;
        }
        // While it runs no link is looked at: one that goes down meanwhile is seen after.
        let state = self.memif_map_in.clone();
        let ports: Vec<String> =
            self.ports.read().unwrap().iter().filter(memif_up).map(|p| p.config.name.clone()).collect();
        let spawned = std::thread::Builder::new()
            .name("vswitchd-memif".into())
            .spawn(move || map_in_memif_regions(plan.map_in, &state, &ports.join(",")));
        match spawned {
            Ok(thread) => *mapper = Some(thread),
            Err(e) => {
                // Tried again on the next tick.
                self.memif_map_in.lock().unwrap().links_up.clear();
                tracing::warn!(error = %e, "cannot start a thread to map memif regions in");
            }
        }
    }

    /// Stops the workers, then closes the ports and returns DPDK's memory. Idempotent.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.wake_workers();
        for t in self.threads.lock().unwrap().drain(..) {
            let _ = t.join();
        }
        // Before the ports close and unmap what it maps in.
        if let Some(mapper) = self.memif_mapper.lock().unwrap().take() {
            let _ = mapper.join();
        }
        self.resume_latency.lock().unwrap().clear();
        self.publisher.lock().unwrap().snapshots.clear();
        // Ports hold the pool and the EAL; dropping them first lets the EAL go last.
        self.ports.write().unwrap().clear();
        self.pool.lock().unwrap().take();
        self.eal.lock().unwrap().take();
    }
}

/// Maps `regions` in (see `Switch::map_in_memif`), recording each in `state` once it is;
/// `ports` name the connections that came up, for the log.
fn map_in_memif_regions(regions: Vec<MemifRegionMapping>, state: &Mutex<MemifMapIn>, ports: &str) {
    let started = Instant::now();
    let mut bytes = 0;
    for region in regions {
        match crate::dpdk::map_in_memif_region(&region) {
            Ok(()) => {
                bytes += region.bytes();
                state.lock().unwrap().mapped_in.push(region);
            }
            // Tried again when a link next comes up.
            Err(e) => tracing::warn!(
                error = %e,
                start = format_args!("{:#x}", region.start),
                mib = region.bytes() >> 20,
                "memif region not mapped in (unmapped if its peer just left; EINVAL: a kernel before 5.14)"
            ),
        }
    }
    if bytes > 0 {
        tracing::info!(
            ports,
            mib = bytes >> 20,
            ms = started.elapsed().as_secs_f64() * 1e3,
            "memif peer connected: its shared memory is mapped in"
        );
    }
}

fn log_leftover(leftover: &power::Leftover) {
    use power::Leftover;
    match leftover {
        Leftover::PutBack { cpu, value } => tracing::info!(
            "core {cpu}: put back its wake-up latency limit ({}), left by a switch that did not stop",
            power::describe(value)
        ),
        Leftover::ChangedSince { cpu, value } => tracing::info!(
            "core {cpu}: a switch that did not stop left a wake-up latency limit, changed since to {}: kept",
            power::describe(value)
        ),
        Leftover::Live { cpu, pid } => {
            tracing::warn!("core {cpu}: its wake-up latency limit is held by another switch (PID {pid})")
        }
        Leftover::Ignored { path, reason } => {
            tracing::warn!(
                "{}: not a wake-up latency record this switch can use ({reason}): left alone",
                path.display()
            )
        }
    }
}

/// What `pc`'s receive rings depend on, were it a `system:` port.
fn spare_shape(pc: &PortConfig) -> SpareShape {
    SpareShape { rx_queues: pc.rx_queues, rx_descriptors: pc.rx_descriptors, mtu: pc.mtu }
}

fn open_port(
    eal: &Arc<Eal>,
    pool: &Arc<Mempool>,
    idx: PortIdx,
    pc: &PortConfig,
    n_workers: usize,
    rx_interrupts: bool,
    spares_for: Option<SpareShape>,
) -> Result<PortRuntime, StartError> {
    let devargs = pc.effective_devargs(n_workers);
    let fail = |reason: String| StartError::Port { port: pc.name.clone(), devargs: devargs.clone(), reason };
    let eth = EthPort::probe(eal, &devargs).map_err(|e| fail(e.to_string()))?;
    if matches!(pc.device(), Ok(DeviceKind::Vdev { driver: "net_memif", .. })) {
        warn_once_if_memif_pages_small();
    }
    let info = eth.info().map_err(|e| fail(e.to_string()))?;
    let tx_queues = n_workers as u16;
    if info.max_tx_queues < tx_queues || info.max_rx_queues < pc.rx_queues {
        let hint = match pc.device() {
            Ok(DeviceKind::Vdev { driver: "net_af_packet", .. }) => "; raise qpairs= in devargs",
            Ok(DeviceKind::Vdev { driver: "net_pcap", .. }) => "; give one rx_pcap/tx_pcap per queue",
            _ => "",
        };
        return Err(fail(format!(
            "the device has {} rx / {} tx queues, the switch needs {} rx (rx_queues) / {} tx (one per worker){hint}",
            info.max_rx_queues, info.max_tx_queues, pc.rx_queues, tx_queues
        )));
    }
    let setup = PortSetup {
        rx_queues: pc.rx_queues,
        tx_queues,
        rx_descriptors: pc.rx_descriptors,
        tx_descriptors: pc.tx_descriptors,
        mtu: pc.mtu,
        rx_interrupts,
        spares_for,
    };
    let layout = eth.setup_and_start(&setup, pool).map_err(|e| fail(e.to_string()))?;
    Ok(PortRuntime {
        idx,
        config: pc.clone(),
        devargs,
        eth,
        info,
        layout,
        rx_queues: pc.rx_queues,
        tx_queues,
        runtime_mbufs: 0,
    })
}

/// Says once per process, at the first memif port, if the kernel puts copy-mode memif
/// buffers on 4 KiB pages: the cost shows only as latency after pauses, which no counter
/// explains.
fn warn_once_if_memif_pages_small() {
    static CHECKED: std::sync::Once = std::sync::Once::new();
    CHECKED.call_once(|| {
        if let Some(reason) = memory::memif_small_pages_reason(&memory::ShmemThp::read()) {
            tracing::warn!("{reason}");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_change_goes_to_the_worker_named_or_to_all() {
        assert_eq!(idle_change_targets(Some(1), 3), Ok(vec![1]));
        assert_eq!(idle_change_targets(None, 3), Ok(vec![0, 1, 2]));
        assert_eq!(idle_change_targets(Some(3), 3), Err(WorkerChangeError::NoSuchWorker { index: 3, count: 3 }));
        assert_eq!(
            WorkerChangeError::NoSuchWorker { index: 3, count: 3 }.to_string(),
            "worker: no worker 3 (the switch has 3)"
        );
    }

    #[test]
    fn memif_regions_are_mapped_in_once_per_connection_within_the_budget() {
        let region = |start: usize, mib: usize, inode| MemifRegionMapping { start, end: start + (mib << 20), inode };
        let (a, b, big) =
            (region(0x10_0000_0000, 16, 1), region(0x20_0000_0000, 16, 2), region(0x30_0000_0000, 300, 3));
        let mut state = MemifMapIn::default();
        assert!(!state.look(vec![]), "no link up");
        assert!(state.look(vec![4]), "port 4 came up");
        let plan = state.plan(vec![b, big, a], 256 << 20);
        assert_eq!(
            plan,
            MemifMapInPlan { map_in: vec![a, b], over_budget: vec![big] },
            "in address order, within budget"
        );
        state.mapped_in.extend(plan.map_in);
        assert!(!state.look(vec![4]), "nothing new");
        assert!(state.look(vec![4, 5]), "port 5 came up");
        let c = region(0x28_0000_0000, 16, 4);
        let plan = state.plan(vec![a, b, c], 40 << 20);
        assert_eq!(plan, MemifMapInPlan { map_in: vec![], over_budget: vec![c] }, "a and b are in and count");
        assert!(!state.look(vec![5]), "port 4 went down");
        assert!(state.mapped_in.is_empty(), "a link down forgets what was mapped in");
        assert!(state.look(vec![4, 5]), "port 4 is back");
        assert_eq!(state.plan(vec![a, b], 256 << 20).map_in, vec![a, b], "mapped in again");
    }

    #[test]
    fn eal_args_keep_pci_off_for_vdevs() {
        let config = Config::from_toml(
            r#"
            [eal]
            main_core = 0
            file_prefix = "t"
            [[port]]
            name = "a"
            number = 1
            devargs = "net_null0"
            [[worker]]
            core = 1
            "#,
        )
        .unwrap();
        let mem = MemoryPlan::for_config(&config, 2 << 20);
        let a = eal_args(&config, &mem);
        assert!(a.contains(&"--no-pci".to_string()));
        assert!(a.contains(&"--in-memory".to_string()));
        assert_eq!(a[1..5], ["-l", "0,1", "--main-lcore", "0"]);
        let mut pci = config.clone();
        pci.ports[0].devargs = "0000:03:00.1".into();
        pci.eal.no_huge = true;
        let a = eal_args(&pci, &mem);
        assert!(!a.contains(&"--no-pci".to_string()));
        assert!(a.windows(2).any(|w| w == ["-a", "0000:03:00.1"]));
        assert!(a.contains(&"--no-huge".to_string()) && !a.contains(&"--in-memory".to_string()));
    }
}
