//! The switch's TOML configuration: EAL settings, ports, workers, control plane.
//!
//! `Config::from_file` parses and `Config::validate` checks everything that can be checked
//! before DPDK starts, so a bad file fails at once with every problem listed and leaves nothing
//! behind (no hugepage files, no sockets).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Virtual-device drivers the switch accepts in devargs (besides PCI addresses).
pub const VDEV_DRIVERS: &[&str] = &[
    "net_af_packet",
    "net_af_xdp",
    "net_memif",
    "net_vhost",
    "net_tap",
    "net_pcap",
    "net_ring",
    "net_null",
    "net_virtio_user",
];

/// Largest OpenFlow port number a user port may take (0xff00; higher ones are reserved).
pub const MAX_PORT_NUMBER: u32 = 0xff00;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub eal: EalConfig,
    #[serde(default)]
    pub switch: SwitchConfig,
    #[serde(default)]
    pub control: ControlConfig,
    #[serde(default, rename = "port")]
    pub ports: Vec<PortConfig>,
    #[serde(default, rename = "worker")]
    pub workers: Vec<WorkerConfig>,
    /// MAC table entries present from the start (never aged, not moved by learning).
    #[serde(default, rename = "static_mac")]
    pub static_macs: Vec<StaticMacConfig>,
    /// Table settings (miss actions).
    #[serde(default, rename = "table")]
    pub tables: Vec<TableConfig>,
    /// Flows loaded at start, in ovs-ofctl syntax.
    #[serde(default, rename = "flow")]
    pub flows: Vec<FlowConfig>,
    /// VXLAN and Geneve tunnel ports.
    #[serde(default, rename = "tunnel")]
    pub tunnels: Vec<crate::tunnel::TunnelConfig>,
    /// Static underlay neighbors (IPv4 → MAC), never replaced by ARP.
    #[serde(default, rename = "neighbor")]
    pub neighbors: Vec<crate::tunnel::NeighborConfig>,
    /// How a pod's devices become ports (`vswitchd --pod`).
    #[serde(default)]
    pub pod: crate::pod::PodConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableConfig {
    pub id: u8,
    /// "drop", "normal" or "goto_table:N". Default: table 0 "normal", others "drop".
    pub miss: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    /// e.g. "table=0,priority=100,in_port=1,ip,nw_dst=10.0.0.0/24,actions=output:2"
    pub rule: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StaticMacConfig {
    pub mac: String,
    /// Port name.
    pub port: String,
    #[serde(default)]
    pub vlan: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct EalConfig {
    /// Core of the EAL main thread and of the control plane (gRPC, aging, counters).
    pub main_core: usize,
    /// DPDK `--file-prefix`: keeps this switch's DPDK files apart from other DPDK processes.
    pub file_prefix: String,
    /// DPDK `--in-memory`: no shared files at all, so nothing is left behind even after a
    /// crash. Turn off only to attach DPDK's secondary-process tools.
    pub in_memory: bool,
    /// Run without hugepages (`--no-huge`): slower, for tests and unprivileged trials.
    pub no_huge: bool,
    /// Memory to reserve, in MiB; computed from ports and queues when absent.
    pub memory_mb: Option<u32>,
    /// DPDK log level (`--log-level`), e.g. "notice" or "lib.eal:debug".
    pub log_level: Option<String>,
    /// More EAL arguments, passed as they are.
    pub extra_args: Vec<String>,
}

impl Default for EalConfig {
    fn default() -> Self {
        EalConfig {
            main_core: 0,
            file_prefix: "vswitch".into(),
            in_memory: true,
            no_huge: false,
            memory_mb: None,
            log_level: None,
            extra_args: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SwitchConfig {
    /// Most (VLAN, MAC) entries the learning table holds.
    pub mac_table_size: u32,
    /// Seconds a learned MAC stays without being seen.
    pub mac_aging_seconds: u32,
    /// Forward 802.1D link-local frames (01:80:c2:00:00:0x) instead of dropping them.
    pub forward_link_local: bool,
    /// Mbufs in the packet pool; computed from ports and queues when absent.
    pub mbufs: Option<u32>,
    /// Per-core mempool cache (DPDK caps it at 512).
    pub mbuf_cache: u32,
    /// Entries of each worker's exact-match cache in front of the flow classifier (0: off).
    pub emc_entries: u32,
    /// Most flows over all tables.
    pub max_flows: u32,
    /// Idle workers sleep between polls once their queues stayed empty for `idle_poll_us`,
    /// in sleeps that double from 1 µs up to `idle_sleep_max_us`. Off: poll without pause
    /// (lowest latency, a whole core burnt when idle). The default of every worker; a
    /// worker's own `idle_backoff` overrides it, and the API changes it at run time.
    pub idle_backoff: bool,
    pub idle_poll_us: u32,
    pub idle_sleep_max_us: u32,
    /// After this many ms without packets (0: never), sleeps may grow to
    /// `idle_deep_sleep_us`: an idle switch costs less CPU, and the first packet after such
    /// a long pause waits up to one deep sleep.
    pub idle_deep_after_ms: u32,
    pub idle_deep_sleep_us: u32,
    /// After this many ms without packets (0: never), sleeps grow on to
    /// `idle_long_sleep_us`: on a VM each timer wake-up costs 20-40 µs of CPU, so a switch
    /// idle for seconds halves its CPU again, and the first packet after such a pause waits
    /// up to one long sleep.
    pub idle_long_after_ms: u32,
    pub idle_long_sleep_us: u32,
    /// In deep idle, a worker whose rx queues all give rx interrupts (vhost-user, tap, most
    /// NIC VFs; memif through its rings' signals) blocks until one fires instead of sleeping
    /// `idle_deep_sleep_us` at a time: little CPU while idle, and the first packet waits for
    /// one wake-up. Ports are set up with rx interrupts where the driver has them when some
    /// worker starts with back-off; not when all busy-poll, since some NIC drivers (Intel's
    /// VF driver, by its source) write a queue set up for interrupts back on another
    /// schedule, which a switch started for latency does not want. A worker of such a switch
    /// switched to back-off at run time sleeps in deep idle. Off: deep idle always sleeps.
    pub idle_interrupts: bool,
    /// A worker that received at least this many packets per second (over 10 ms) does not
    /// sleep for `idle_load_hold_ms` after: pauses of real traffic are spent polling, so
    /// back-off costs no throughput under load. 0: sleep whenever the queues are empty.
    pub idle_load_pps: u32,
    pub idle_load_hold_ms: u32,
    /// Limit on how long each worker core may take to wake from idle (µs; the kernel's
    /// per-CPU PM QoS resume latency), set at start and put back at stop. Deep idle states
    /// (C6 on bare metal) take 50-150 µs to leave; a limit of a few µs keeps the core in
    /// shallow ones while a backed-off worker sleeps. 0: only the shallowest idle state
    /// (polling, on x86 with a cpuidle driver: the fastest wake-up, and the core, or in a VM
    /// the host's CPU, stays busy). Absent: the kernel's setting is left alone (a limit left
    /// by a killed switch is put back at every start). Needs a writable /sys.
    pub idle_cpu_resume_latency_us: Option<u32>,
    /// Ports that can be added while the switch runs (CNI endpoints): the packet pool keeps
    /// mbufs for this many ports of `RUNTIME_PORT_DESCRIPTORS` rx and tx descriptors.
    pub spare_ports: u32,
    /// When a memif peer connects, map in every page of the connection's shared memory at
    /// once (as `mlockall` does for OVS-DPDK and testpmd). Otherwise each packet of the
    /// rings' first round lands on pages the switch has not touched yet and the worker takes
    /// page faults for them, about one per forwarded packet: tens of µs each after a pause
    /// on a VM. The cost: the rings' memory (2 KiB per slot, both directions) is resident
    /// from the connection on, not once traffic has gone round them, and what the peer had
    /// not touched yet is allocated to the switch (its pod's memory limit must allow it).
    pub memif_map_in: bool,
    /// The most memif shared memory the switch maps in, over all connections (MiB): the
    /// peer sets a region's size, so this bounds what peers can make the switch allocate.
    /// Regions past it fault in as packets use them.
    pub memif_map_in_max_mib: u32,
}

/// Rx and tx descriptors of a port added at run time, unless the request says otherwise.
pub const RUNTIME_PORT_DESCRIPTORS: u16 = 256;
/// MTU of a port added at run time, unless the request says otherwise.
pub const RUNTIME_PORT_MTU: u16 = 1500;
/// Rx queues of a port added at run time, unless the request says otherwise.
pub const RUNTIME_PORT_RX_QUEUES: u16 = 1;

impl Default for SwitchConfig {
    fn default() -> Self {
        SwitchConfig {
            mac_table_size: 65536,
            mac_aging_seconds: 300,
            forward_link_local: false,
            mbufs: None,
            mbuf_cache: 256,
            emc_entries: 4096,
            max_flows: 1_000_000,
            idle_backoff: true,
            idle_poll_us: 200,
            idle_sleep_max_us: 32,
            idle_deep_after_ms: 100,
            idle_deep_sleep_us: 500,
            idle_long_after_ms: 1000,
            idle_long_sleep_us: 1000,
            idle_interrupts: true,
            idle_load_pps: 100_000,
            idle_load_hold_ms: 1000,
            idle_cpu_resume_latency_us: None,
            spare_ports: 8,
            memif_map_in: true,
            memif_map_in_max_mib: 256,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Unix socket of the gRPC API.
    pub socket: PathBuf,
    /// Also serve the gRPC API on this TCP address (e.g. "127.0.0.1:50051"). Off by default:
    /// the API has no authentication yet, so only expose it on a trusted network.
    pub listen: Option<SocketAddr>,
    pub log_format: LogFormat,
    /// Prometheus `/metrics` over HTTP: an address, or "off". Absent: 127.0.0.1:9464 when
    /// that port is free (a busy default port is logged, not fatal; a configured one is).
    pub metrics: Option<String>,
    /// MiB of heap mapped at start and kept for the control plane, so the first big policy
    /// change finds its memory mapped, as later ones do (a 10,000-rule change needs about 7).
    /// 0 maps none; at most 32.
    pub warm_heap_mb: u32,
}

/// Where `/metrics` is served when the config says nothing.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9464";

/// Where the metrics endpoint listens, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsListen {
    Off,
    /// The built-in default: a failure to bind is a warning.
    Default(SocketAddr),
    Configured(SocketAddr),
}

impl ControlConfig {
    pub fn metrics_listen(&self) -> Result<MetricsListen, String> {
        match self.metrics.as_deref().map(str::trim) {
            None => Ok(MetricsListen::Default(DEFAULT_METRICS.parse().expect("valid default"))),
            Some("off" | "") => Ok(MetricsListen::Off),
            Some(a) => a
                .parse()
                .map(MetricsListen::Configured)
                .map_err(|_| format!("control.metrics: '{a}' is not an address like 127.0.0.1:9464 (or \"off\")")),
        }
    }
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            socket: PathBuf::from(vswitch_proto::DEFAULT_SOCKET),
            listen: None,
            log_format: LogFormat::Text,
            metrics: None,
            warm_heap_mb: 8,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    /// Name used by the API and the CLI.
    pub name: String,
    /// OpenFlow-style port number (1 to 65280), used in flows and in the CLI.
    pub number: u32,
    /// DPDK device: a PCI address (an SR-IOV VF) or a vdev such as
    /// `net_af_packet0,iface=veth0`; or `system:IFACE`, a kernel interface on packet
    /// sockets, which takes none of DPDK's 32 port slots.
    pub devargs: String,
    #[serde(default = "default_rx_queues")]
    pub rx_queues: u16,
    #[serde(default = "default_descriptors")]
    pub rx_descriptors: u16,
    #[serde(default = "default_descriptors")]
    pub tx_descriptors: u16,
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// Underlay address (`192.168.50.1/24`): makes the port an uplink for tunnels. An
    /// uplink carries tunnel traffic and ARP only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Next hop for remote VTEPs off the uplink's subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
}

fn default_rx_queues() -> u16 {
    1
}
fn default_descriptors() -> u16 {
    1024
}
fn default_mtu() -> u16 {
    1500
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorkerConfig {
    /// CPU core the worker is pinned to; one worker per core.
    pub core: usize,
    /// Rx queues pinned to this worker, as "PORT:QUEUE" (port name). Queues nobody pins are
    /// spread over all workers.
    #[serde(default)]
    pub rx_queues: Vec<String>,
    /// This worker's idle back-off, over `switch.idle_backoff` (e.g. one latency-critical
    /// worker busy-polls while the others back off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_backoff: Option<bool>,
}

impl Config {
    /// Whether ports are set up with rx interrupts: where some worker starts with back-off,
    /// whose idle waits use them.
    pub fn wants_rx_interrupts(&self) -> bool {
        self.switch.idle_interrupts && self.workers.iter().any(|w| w.idle_backoff(&self.switch))
    }
}

impl WorkerConfig {
    /// Whether this worker starts backing off when idle.
    pub fn idle_backoff(&self, switch: &SwitchConfig) -> bool {
        self.idle_backoff.unwrap_or(switch.idle_backoff)
    }
}

/// What kind of device a port's devargs name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceKind {
    /// A PCI function, in full `DDDD:BB:DD.F` form.
    Pci(String),
    /// A virtual device of one of [`VDEV_DRIVERS`].
    Vdev { driver: &'static str, name: String },
    /// A kernel network interface on packet sockets (`system:IFACE`), not an ethdev: no
    /// DPDK port slot used (Debian's DPDK has 32).
    System { iface: String },
}

/// Problems found in a configuration file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML for vswitchd: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path} has {} problem(s):\n  - {}", .problems.len(), .problems.join("\n  - "))]
    Invalid { path: PathBuf, problems: Vec<String> },
}

fn is_pci_address(s: &str) -> bool {
    let s = s.strip_prefix("0000:").map_or(s, |rest| rest);
    let hex = |p: &str, n: usize| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit());
    let mut parts = s.split(':');
    let (Some(bus), Some(devfn), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    match devfn.split_once('.') {
        Some((dev, func)) => hex(bus, 2) && hex(dev, 2) && func.len() == 1 && matches!(func.as_bytes()[0], b'0'..=b'7'),
        None => false,
    }
}

impl PortConfig {
    /// What is wrong with this port on its own (not against other ports), as (field,
    /// message) pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        let n = &self.name;
        if n.is_empty() || n.len() > 32 || !n.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
            p.push(("name", format!("port name '{n}' must be 1 to 32 letters, digits, '_', '-' or '.'")));
        }
        if self.number == 0 || self.number > MAX_PORT_NUMBER {
            p.push(("number", format!("port '{n}': number {} must be 1 to {MAX_PORT_NUMBER}", self.number)));
        }
        match self.device() {
            Ok(DeviceKind::Vdev { driver: "net_pcap", .. }) => {
                if let Some(file) = self.devarg("rx_pcap") {
                    if !Path::new(file).is_file() {
                        p.push(("devargs", format!("port '{n}': rx_pcap file '{file}' does not exist")));
                    }
                }
            }
            Ok(_) => {}
            Err(e) => p.push(("devargs", e)),
        }
        if self.rx_queues == 0 || self.rx_queues > 64 {
            p.push(("rx_queues", format!("port '{n}': rx_queues {} must be 1 to 64", self.rx_queues)));
        }
        for (what, d) in [("rx_descriptors", self.rx_descriptors), ("tx_descriptors", self.tx_descriptors)] {
            if !(64..=16384).contains(&d) || !d.is_power_of_two() {
                p.push((what, format!("port '{n}': {what} {d} must be a power of two from 64 to 16384")));
            }
        }
        if !(68..=9600).contains(&self.mtu) {
            p.push(("mtu", format!("port '{n}': mtu {} must be 68 to 9600", self.mtu)));
        }
        match (&self.ip, self.ip.as_deref().map(str::parse::<crate::tunnel::Ipv4Net>)) {
            (_, Some(Err(e))) => p.push(("ip", format!("port '{n}': ip {e}"))),
            (_, Some(Ok(net))) => {
                if let Some(gw) = self.gateway {
                    if !net.contains(gw) || gw == net.addr {
                        p.push(("gateway", format!("port '{n}': gateway {gw} must be another address on {net}")));
                    }
                }
            }
            (None, None) if self.gateway.is_some() => p.push(("gateway", format!("port '{n}': gateway needs an ip"))),
            _ => {}
        }
        p
    }

    /// What identifies the device: the PCI address or the vdev name (None: devargs invalid).
    pub fn device_key(&self) -> Option<String> {
        match self.device().ok()? {
            DeviceKind::Pci(a) => Some(a),
            DeviceKind::Vdev { name, .. } => Some(name),
            DeviceKind::System { iface } => Some(format!("{}{iface}", crate::dpdk::SYSTEM_PORT_PREFIX)),
        }
    }

    /// The uplink address, if the port has a valid one.
    pub fn net(&self) -> Option<crate::tunnel::Ipv4Net> {
        self.ip.as_deref().and_then(|ip| ip.parse().ok())
    }

    /// The device named by `devargs`, or why it is not one the switch supports.
    pub fn device(&self) -> Result<DeviceKind, String> {
        let first = self.devargs.split(',').next().unwrap_or("").trim();
        if first.is_empty() {
            return Err(format!("port '{}': devargs is empty", self.name));
        }
        if is_pci_address(first) {
            return Ok(DeviceKind::Pci(crate::dpdk::device_name(first)));
        }
        if let Some(iface) = self.devargs.trim().strip_prefix(crate::dpdk::SYSTEM_PORT_PREFIX) {
            // The kernel's rule for interface names (IFNAMSIZ, no '/', ':' or white space).
            if iface.is_empty()
                || iface.len() > 15
                || iface.chars().any(|c| c == '/' || c == ':' || c == ',' || c.is_whitespace())
            {
                return Err(format!(
                    "port '{}': '{}' needs an interface name of 1 to 15 characters without '/', ':', ',' or spaces after 'system:'",
                    self.name, self.devargs
                ));
            }
            return Ok(DeviceKind::System { iface: iface.to_string() });
        }
        let driver = VDEV_DRIVERS
            .iter()
            .filter(|d| first.starts_with(**d))
            .max_by_key(|d| d.len())
            .ok_or_else(|| {
                format!(
                    "port '{}': unknown driver '{}' in devargs '{}'; expected a PCI address (0000:03:00.1) or one of {}, or system:IFACE",
                    self.name,
                    first,
                    self.devargs,
                    VDEV_DRIVERS.join(", ")
                )
            })?;
        Ok(DeviceKind::Vdev { driver, name: first.to_string() })
    }

    /// The value of `key=` in devargs.
    pub fn devarg(&self, key: &str) -> Option<&str> {
        self.devargs
            .split(',')
            .skip(1)
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| k.trim() == key)
            .map(|(_, v)| v.trim())
    }

    /// Devargs as given to DPDK. For af_packet the queue-pair count follows from the
    /// configuration (rx queues, one tx queue per worker) unless the user set `qpairs`.
    pub fn effective_devargs(&self, workers: usize) -> String {
        if let Ok(DeviceKind::Vdev { driver: "net_af_packet", .. }) = self.device() {
            if self.devarg("qpairs").is_none() {
                let qpairs = (self.rx_queues as usize).max(workers);
                if qpairs > 1 {
                    return format!("{},qpairs={qpairs}", self.devargs);
                }
            }
        }
        self.devargs.clone()
    }
}

impl Config {
    /// Reads and parses a file; does not validate (see [`Config::validate`]).
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse { path: path.to_path_buf(), message })
    }

    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serialises")
    }

    /// Every problem with this configuration on a machine whose usable cores are
    /// `available_cores`; empty when it is good.
    pub fn problems(&self, available_cores: &[usize]) -> Vec<String> {
        let mut p = Vec::new();
        let cores: BTreeSet<usize> = available_cores.iter().copied().collect();
        let core_list = || cores.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",");
        if let Err(e) = self.control.metrics_listen() {
            p.push(e);
        }
        if self.control.warm_heap_mb > 32 {
            p.push(format!("control.warm_heap_mb: {} is over 32", self.control.warm_heap_mb));
        }
        for (field, value) in [
            ("idle_sleep_max_us", self.switch.idle_sleep_max_us),
            ("idle_deep_sleep_us", self.switch.idle_deep_sleep_us),
            ("idle_long_sleep_us", self.switch.idle_long_sleep_us),
        ] {
            if value > 10_000 {
                p.push(format!(
                    "switch.{field}: {value} is over 10000 (10 ms): packets would wait that long after idle"
                ));
            }
        }
        if let Some(latency) = self.switch.idle_cpu_resume_latency_us {
            if latency > 1_000_000 {
                p.push(format!("switch.idle_cpu_resume_latency_us: {latency} is over 1000000 (1 s)"));
            }
        }
        let (deep, long) = (self.switch.idle_deep_after_ms, self.switch.idle_long_after_ms);
        if long != 0 && deep != 0 && long < deep {
            p.push(format!(
                "switch.idle_long_after_ms: {long} is below idle_deep_after_ms ({deep}): long idle comes after deep idle"
            ));
        }

        if !cores.contains(&self.eal.main_core) {
            p.push(format!(
                "eal.main_core {} is not present: this process may use cores {}",
                self.eal.main_core,
                core_list()
            ));
        }
        if self.eal.file_prefix.is_empty()
            || !self.eal.file_prefix.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            p.push(format!(
                "eal.file_prefix '{}' must be non-empty letters, digits, '_', '-' or '.'",
                self.eal.file_prefix
            ));
        }
        if self.switch.mac_table_size == 0 || self.switch.mac_table_size > 1 << 24 {
            p.push(format!("switch.mac_table_size {} must be 1 to {}", self.switch.mac_table_size, 1 << 24));
        }
        if self.switch.mac_aging_seconds == 0 {
            p.push("switch.mac_aging_seconds must be at least 1".into());
        }
        if self.switch.mbuf_cache > 512 {
            p.push(format!("switch.mbuf_cache {} exceeds DPDK's limit of 512", self.switch.mbuf_cache));
        }
        if !self.control.socket.is_absolute() {
            p.push(format!("control.socket '{}' must be an absolute path", self.control.socket.display()));
        }

        if self.ports.is_empty() && self.switch.spare_ports == 0 {
            p.push("no [[port]] and switch.spare_ports = 0: a switch needs ports".into());
        }
        let mut names = BTreeSet::new();
        let mut numbers = BTreeSet::new();
        let mut devices = BTreeSet::new();
        for port in &self.ports {
            let n = &port.name;
            p.extend(port.problems().into_iter().map(|(_, message)| message));
            if !names.insert(n.clone()) {
                p.push(format!("port name '{n}' is used twice"));
            }
            if (1..=MAX_PORT_NUMBER).contains(&port.number) && !numbers.insert(port.number) {
                p.push(format!("port '{n}': number {} is used twice", port.number));
            }
            if let Some(key) = port.device_key() {
                if !devices.insert(key.clone()) {
                    p.push(format!("port '{n}': device '{key}' is used by another port"));
                }
            }
        }
        let uplinks = self.uplinks([0; 6]);
        let port_taken = |name: &str, number: u32| {
            (self.ports.iter().any(|p| p.name == name), self.ports.iter().any(|p| p.number == number))
        };
        for (i, t) in self.tunnels.iter().enumerate() {
            for problem in crate::tunnel::check_tunnel(t, &uplinks, &self.tunnels[..i], &port_taken) {
                p.push(format!("tunnel {}: {}", i + 1, problem.message));
            }
        }
        if self.tunnels.len() > crate::tunnel::MAX_TUNNELS {
            p.push(format!("{} tunnels: at most {}", self.tunnels.len(), crate::tunnel::MAX_TUNNELS));
        }
        if self.ports.len() + self.tunnels.len() > crate::stats::MAX_PORTS {
            p.push(format!("ports and tunnels together: at most {}", crate::stats::MAX_PORTS));
        }
        for nb in &self.neighbors {
            match nb.mac.parse::<crate::wire::MacAddr>() {
                Ok(mac) if !mac.is_valid_source() => {
                    p.push(format!("neighbor {}: mac {} must be unicast and non-zero", nb.ip, nb.mac))
                }
                Ok(_) => {}
                Err(e) => p.push(format!("neighbor {}: {e}", nb.ip)),
            }
            if nb.ip.is_unspecified() || nb.ip.is_multicast() || nb.ip.is_broadcast() {
                p.push(format!("neighbor {}: must be a unicast address", nb.ip));
            }
        }

        if self.workers.is_empty() {
            p.push("no [[worker]]: the switch needs at least one worker core".into());
        }
        let mut worker_cores = BTreeSet::new();
        for w in &self.workers {
            if !cores.contains(&w.core) {
                p.push(format!("worker core {} is not present: this process may use cores {}", w.core, core_list()));
            }
            if w.core == self.eal.main_core {
                p.push(format!(
                    "worker core {} is eal.main_core, which runs the control plane; give workers their own cores",
                    w.core
                ));
            }
            if !worker_cores.insert(w.core) {
                p.push(format!("two workers on core {}: each worker needs a core of its own", w.core));
            }
        }
        if let Err(e) = self.rx_assignment() {
            p.extend(e);
        }
        for m in &self.static_macs {
            match m.mac.parse::<crate::wire::MacAddr>() {
                Ok(mac) if !mac.is_valid_source() => {
                    p.push(format!("static_mac {}: a station entry needs a unicast, non-zero MAC", m.mac))
                }
                Ok(_) => {}
                Err(e) => p.push(format!("static_mac: {e}")),
            }
            if !names.contains(&m.port) {
                p.push(format!("static_mac {}: no port named '{}'", m.mac, m.port));
            }
            if m.vlan > 4095 {
                p.push(format!("static_mac {}: vlan {} must be 0 to 4095", m.mac, m.vlan));
            }
        }
        if self.switch.emc_entries > 1 << 20 {
            p.push(format!("switch.emc_entries {} must be at most {}", self.switch.emc_entries, 1 << 20));
        }
        let numbers: BTreeSet<u32> =
            self.ports.iter().map(|p| p.number).chain(self.tunnels.iter().map(|t| t.number)).collect();
        for (i, f) in self.flows.iter().enumerate() {
            match crate::flow::parse_flow(&f.rule) {
                Err(e) => p.push(format!("flow {} ('{}'): {e}", i + 1, f.rule)),
                Ok(spec) => {
                    let ports = |n: u32| numbers.contains(&n);
                    if let Err(e) =
                        crate::flow::action::validate_actions(spec.table, &spec.matching, &spec.actions, &ports)
                    {
                        p.push(format!("flow {} ('{}'): action {}: {}", i + 1, f.rule, e.index + 1, e.message));
                    }
                }
            }
        }
        let mut table_ids = BTreeSet::new();
        for t in &self.tables {
            if !table_ids.insert(t.id) {
                p.push(format!("table {} is configured twice", t.id));
            }
            match t.miss.parse::<crate::flow::compiled::MissAction>() {
                Ok(crate::flow::compiled::MissAction::Goto(n)) if n <= t.id => {
                    p.push(format!("table {}: miss goto_table:{n} must go forward", t.id))
                }
                Ok(_) => {}
                Err(e) => p.push(format!("table {}: miss {e}", t.id)),
            }
        }
        if self.static_macs.len() > self.switch.mac_table_size as usize {
            p.push(format!(
                "{} static_mac entries do not fit switch.mac_table_size {}",
                self.static_macs.len(),
                self.switch.mac_table_size
            ));
        }
        p
    }

    /// The ports with an `ip` (port index = position in the file), with `mac` as their MAC
    /// until the device says.
    pub fn uplinks(&self, mac: [u8; 6]) -> Vec<crate::tunnel::UplinkInfo> {
        self.ports
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                Some(crate::tunnel::UplinkInfo {
                    name: p.name.clone(),
                    port: i as crate::PortIdx,
                    net: p.net()?,
                    gateway: p.gateway,
                    mac,
                    mtu: p.mtu,
                })
            })
            .collect()
    }

    /// Validates against the cores this process may run on.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let cores: Vec<usize> = core_affinity::get_core_ids().unwrap_or_default().into_iter().map(|c| c.id).collect();
        let problems = self.problems(&cores);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid { path: path.to_path_buf(), problems })
        }
    }

    /// Which worker polls which rx queue: for each worker, (port index, queue) pairs. Pinned
    /// queues go to their worker; the rest are dealt out to the least-loaded worker in turn.
    pub fn rx_assignment(&self) -> Result<Vec<Vec<(usize, u16)>>, Vec<String>> {
        let mut problems = Vec::new();
        let mut out = vec![Vec::new(); self.workers.len()];
        let port_index: BTreeMap<&str, usize> =
            self.ports.iter().enumerate().map(|(i, p)| (p.name.as_str(), i)).collect();
        let mut pinned = BTreeSet::new();
        for (w, worker) in self.workers.iter().enumerate() {
            for spec in &worker.rx_queues {
                let parsed = spec.rsplit_once(':').and_then(|(name, q)| Some((name, q.parse::<u16>().ok()?)));
                let Some((name, q)) = parsed else {
                    problems.push(format!(
                        "worker core {}: rx queue '{spec}' must be PORT:QUEUE, e.g. eth0:0",
                        worker.core
                    ));
                    continue;
                };
                let Some(&pi) = port_index.get(name) else {
                    problems.push(format!("worker core {}: rx queue '{spec}' names no port", worker.core));
                    continue;
                };
                if q >= self.ports[pi].rx_queues {
                    problems.push(format!(
                        "worker core {}: port '{name}' has {} rx queue(s), so queue {q} does not exist",
                        worker.core, self.ports[pi].rx_queues
                    ));
                    continue;
                }
                if !pinned.insert((pi, q)) {
                    problems.push(format!("rx queue '{spec}' is pinned to more than one worker"));
                    continue;
                }
                out[w].push((pi, q));
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        if out.is_empty() {
            return Ok(out);
        }
        for (pi, port) in self.ports.iter().enumerate() {
            for q in 0..port.rx_queues {
                if !pinned.contains(&(pi, q)) {
                    let w = (0..out.len()).min_by_key(|&w| out[w].len()).expect("workers exist");
                    out[w].push((pi, q));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [eal]
        main_core = 0
        file_prefix = "t1"

        [[port]]
        name = "h1"
        number = 1
        devargs = "net_af_packet0,iface=vs-h1"

        [[port]]
        name = "h2"
        number = 2
        devargs = "net_null0,no-rx=1"
        rx_queues = 2

        [[worker]]
        core = 1
    "#;

    fn good() -> Config {
        Config::from_toml(GOOD).unwrap()
    }

    #[test]
    fn parses_with_defaults() {
        let c = good();
        assert_eq!(c.ports.len(), 2);
        assert_eq!(c.ports[0].rx_queues, 1);
        assert_eq!(c.ports[0].mtu, 1500);
        assert_eq!(c.switch.mac_aging_seconds, 300);
        assert!(c.eal.in_memory);
        assert_eq!(c.control.socket, PathBuf::from(vswitch_proto::DEFAULT_SOCKET));
        assert!(c.problems(&[0, 1]).is_empty(), "{:?}", c.problems(&[0, 1]));
    }

    #[test]
    fn a_workers_idle_backoff_overrides_the_switchs_and_ports_get_rx_interrupts_if_one_backs_off() {
        let text = format!("{GOOD}\n[[worker]]\ncore = 2\nidle_backoff = true\n[switch]\nidle_backoff = false\n");
        let c = Config::from_toml(&text).unwrap();
        let modes: Vec<bool> = c.workers.iter().map(|w| w.idle_backoff(&c.switch)).collect();
        assert_eq!(modes, [false, true]);
        assert!(c.wants_rx_interrupts(), "one worker backs off: ports need rx interrupts");
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
        let all_busy = Config::from_toml(&format!("{GOOD}\n[switch]\nidle_backoff = false\n")).unwrap();
        assert!(!all_busy.wants_rx_interrupts(), "no worker backs off at start");
        // A wake-up latency limit is allowed without back-off: it can be switched on later.
        let all_busy =
            Config::from_toml(&format!("{GOOD}\n[switch]\nidle_backoff = false\nidle_cpu_resume_latency_us = 10\n"))
                .unwrap();
        assert!(all_busy.problems(&[0, 1]).is_empty(), "{:?}", all_busy.problems(&[0, 1]));
        let c = Config::from_toml(&format!("{GOOD}\n[switch]\nidle_interrupts = false\n")).unwrap();
        assert!(c.workers[0].idle_backoff(&c.switch) && !c.wants_rx_interrupts());
    }

    #[test]
    fn round_trips_through_toml() {
        let c = good();
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = Config::from_toml("[eal]\nmain_cor = 1\n").unwrap_err();
        assert!(err.contains("main_cor"), "{err}");
    }

    #[test]
    fn unknown_driver() {
        let mut c = good();
        c.ports[1].devargs = "net_bogus0,x=1".into();
        let p = c.problems(&[0, 1]);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("unknown driver 'net_bogus0'"), "{}", p[0]);
    }

    #[test]
    fn warm_heap_is_at_most_32_mib() {
        let mut c = good();
        assert_eq!(c.control.warm_heap_mb, 8, "on by default");
        c.control.warm_heap_mb = 32;
        assert!(c.problems(&[0, 1]).is_empty());
        c.control.warm_heap_mb = 33;
        assert_eq!(c.problems(&[0, 1]), ["control.warm_heap_mb: 33 is over 32"]);
    }

    #[test]
    fn cores_must_exist_and_be_distinct() {
        let mut c = good();
        c.workers.push(WorkerConfig { core: 1, rx_queues: vec![], idle_backoff: None });
        c.workers.push(WorkerConfig { core: 7, rx_queues: vec![], idle_backoff: None });
        let p = c.problems(&[0, 1]).join("\n");
        assert!(p.contains("two workers on core 1"), "{p}");
        assert!(p.contains("worker core 7 is not present"), "{p}");
        c.workers = vec![WorkerConfig { core: 0, rx_queues: vec![], idle_backoff: None }];
        assert!(c.problems(&[0, 1]).join("\n").contains("is eal.main_core"));
    }

    #[test]
    fn port_names_numbers_and_devices_are_unique() {
        let mut c = good();
        c.ports[1].name = "h1".into();
        c.ports[1].number = 1;
        c.ports[1].devargs = "net_af_packet0,iface=other".into();
        let p = c.problems(&[0, 1]).join("\n");
        assert!(p.contains("port name 'h1' is used twice"), "{p}");
        assert!(p.contains("number 1 is used twice"), "{p}");
        assert!(p.contains("device 'net_af_packet0' is used by another port"), "{p}");
    }

    #[test]
    fn numeric_limits() {
        let mut c = good();
        c.ports[0].number = 0;
        c.ports[0].rx_descriptors = 1000;
        c.ports[0].mtu = 20000;
        c.ports[0].rx_queues = 0;
        let p = c.problems(&[0, 1]).join("\n");
        for needle in ["number 0", "rx_descriptors 1000", "mtu 20000", "rx_queues 0"] {
            assert!(p.contains(needle), "{needle} missing from {p}");
        }
    }

    #[test]
    fn static_macs_are_checked() {
        let mut c = good();
        c.static_macs = vec![
            StaticMacConfig { mac: "02:00:00:00:00:09".into(), port: "h2".into(), vlan: 0 },
            StaticMacConfig { mac: "ff:ff:ff:ff:ff:ff".into(), port: "h2".into(), vlan: 0 },
            StaticMacConfig { mac: "02:00:00:00:00:0a".into(), port: "nope".into(), vlan: 5000 },
            StaticMacConfig { mac: "bogus".into(), port: "h1".into(), vlan: 0 },
        ];
        let p = c.problems(&[0, 1]).join("\n");
        assert!(p.contains("static_mac ff:ff:ff:ff:ff:ff: a station entry needs a unicast"), "{p}");
        assert!(p.contains("no port named 'nope'"), "{p}");
        assert!(p.contains("vlan 5000"), "{p}");
        assert!(p.contains("'bogus' is not a MAC address"), "{p}");
        c.static_macs.truncate(1);
        assert!(c.problems(&[0, 1]).is_empty());
    }

    #[test]
    fn flows_and_tables_are_checked() {
        let mut c = good();
        c.flows = vec![
            FlowConfig { rule: "table=0,priority=10,in_port=1,actions=output:2".into() },
            FlowConfig { rule: "in_port=1,actions=output:9".into() },
            FlowConfig { rule: "tp_dst=80,actions=drop".into() },
        ];
        c.tables = vec![TableConfig { id: 0, miss: "drop".into() }, TableConfig { id: 3, miss: "goto_table:2".into() }];
        let p = c.problems(&[0, 1]).join("\n");
        assert!(p.contains("flow 2 ('in_port=1,actions=output:9'): action 1: output:9: no port number 9"), "{p}");
        assert!(p.contains("flow 3") && p.contains("tp_dst needs"), "{p}");
        assert!(p.contains("table 3: miss goto_table:2 must go forward"), "{p}");
        assert!(!p.contains("flow 1 "), "{p}");
    }

    #[test]
    fn device_kinds() {
        let mut port = good().ports[0].clone();
        assert_eq!(port.device().unwrap(), DeviceKind::Vdev { driver: "net_af_packet", name: "net_af_packet0".into() });
        port.devargs = "03:00.1".into();
        assert_eq!(port.device().unwrap(), DeviceKind::Pci("0000:03:00.1".into()));
        port.devargs = "0000:03:00.9".into();
        assert!(port.device().is_err());
        port.devargs = "net_pcap0,rx_pcap=/tmp/a.pcap,infinite_rx=1".into();
        assert_eq!(port.devarg("rx_pcap"), Some("/tmp/a.pcap"));
        assert_eq!(port.devarg("infinite_rx"), Some("1"));
        assert_eq!(port.devarg("tx_pcap"), None);
        port.devargs = "system:veth-pod7".into();
        assert_eq!(port.device().unwrap(), DeviceKind::System { iface: "veth-pod7".into() });
        assert_eq!(port.device_key().as_deref(), Some("system:veth-pod7"));
        for bad in ["system:", "system:a/b", "system:eth0,qpairs=2", "system:this-name-is-too-long", "system:a b"] {
            port.devargs = bad.into();
            let e = port.device().unwrap_err();
            assert!(e.contains("interface name of 1 to 15 characters"), "{bad}: {e}");
        }
    }

    /// The example files in configs/ parse, and validate on a machine with the cores they
    /// name (the pcap file of the benchmark layout is written by the benchmark itself).
    #[test]
    fn shipped_configs_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let c = Config::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
            let problems: Vec<_> =
                c.problems(&[0, 1, 2, 3]).into_iter().filter(|p| !p.contains("rx_pcap file")).collect();
            assert!(problems.is_empty(), "{}: {problems:?}", path.display());
            seen += 1;
        }
        assert!(seen >= 3, "configs found: {seen}");
    }

    #[test]
    fn af_packet_gets_enough_queue_pairs() {
        let c = good();
        assert_eq!(c.ports[0].effective_devargs(1), "net_af_packet0,iface=vs-h1");
        assert_eq!(c.ports[0].effective_devargs(2), "net_af_packet0,iface=vs-h1,qpairs=2");
        assert_eq!(c.ports[1].effective_devargs(2), "net_null0,no-rx=1");
    }

    #[test]
    fn rx_queues_are_spread_and_pinned() {
        let mut c = good();
        c.workers.push(WorkerConfig { core: 2, rx_queues: vec!["h2:1".into()], idle_backoff: None });
        let a = c.rx_assignment().unwrap();
        assert_eq!(a[1], vec![(1, 1)]);
        // h1:0 and h2:0 are dealt out: first to the emptier worker 0, then...
        let mut all: Vec<_> = a.concat();
        all.sort();
        assert_eq!(all, vec![(0, 0), (1, 0), (1, 1)]);
        assert_eq!(a[0].len() + a[1].len(), 3);
        c.workers[1].rx_queues = vec!["h2:5".into(), "nope:0".into(), "h1".into()];
        let e = c.rx_assignment().unwrap_err().join("\n");
        assert!(e.contains("queue 5 does not exist"), "{e}");
        assert!(e.contains("names no port"), "{e}");
        assert!(e.contains("must be PORT:QUEUE"), "{e}");
    }

    #[test]
    fn tunnels_uplinks_and_neighbors_are_checked() {
        let with = |extra: &str| {
            let c = Config::from_toml(&format!("{GOOD}\n{extra}")).unwrap();
            c.problems(&[0, 1]).join("\n")
        };
        let ok = r#"
            [[tunnel]]
            name = "vx0"
            number = 10
            kind = "vxlan"
            uplink = "h1"
            remote_ip = "192.168.50.2"
            vni = 100
            [[neighbor]]
            ip = "192.168.50.2"
            mac = "02:00:00:00:00:02"
        "#;
        let mut c = Config::from_toml(&format!("{GOOD}\n{ok}")).unwrap();
        assert!(c.problems(&[0, 1]).iter().any(|p| p.contains("uplink 'h1' is not a port with an ip")));
        c.ports[0].ip = Some("192.168.50.1/24".into());
        assert!(c.problems(&[0, 1]).is_empty(), "{:?}", c.problems(&[0, 1]));
        assert_eq!(Config::from_toml(&c.to_toml()).unwrap(), c, "round trip");
        c.ports[0].gateway = Some("10.0.0.1".parse().unwrap());
        c.tunnels[0].number = 2;
        c.neighbors[0].mac = "ff:ff:ff:ff:ff:ff".into();
        let p = c.problems(&[0, 1]).join("\n");
        assert!(p.contains("gateway 10.0.0.1 must be another address on 192.168.50.1/24"), "{p}");
        assert!(p.contains("number 2 is taken"), "{p}");
        assert!(p.contains("must be unicast"), "{p}");
        let bad_ip = with("[[tunnel]]\nname = \"g\"\nnumber = 9\nkind = \"geneve\"\nuplink = \"h2\"\n");
        assert!(bad_ip.contains("uplink 'h2' is not a port with an ip (uplinks: none)"), "{bad_ip}");
        assert!(Config::from_toml(&format!(
            "{GOOD}\n[[tunnel]]\nname = \"g\"\nnumber = 9\nkind = \"gre\"\nuplink = \"h2\"\n"
        ))
        .is_err());
        let mut c = good();
        c.ports[1].ip = Some("192.168.1.1".into());
        assert!(c.problems(&[0, 1]).join("\n").contains("port 'h2': ip '192.168.1.1' is not ADDRESS/PREFIX"));
    }
}
