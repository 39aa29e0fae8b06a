//! vswitchd: the switch daemon.
//!
//! Reads a TOML config, checks it and the machine (cores, hugepages) before touching DPDK,
//! starts DPDK, ports and workers, serves the gRPC API, and on SIGINT/SIGTERM stops
//! everything (ports stopped, memory returned) and exits 0.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use control::metrics;
use control::server::{self, Listeners};
use control::service::Api;
use dataplane::config::{LogFormat, MetricsListen};
use dataplane::stats::DropReason;
use dataplane::switch::startup_cores;
use dataplane::{Config, StartPlan, Switch};

#[derive(Parser)]
#[command(name = "vswitchd", version, about = "DPDK userspace virtual switch daemon")]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, short, env = "VSWITCHD_CONFIG")]
    config: PathBuf,
    /// Check the configuration and print the memory plan, then exit.
    #[arg(long)]
    check: bool,
    /// Running in a Kubernetes pod: ports from the SR-IOV device plugin's PCIDEVICE_*
    /// variables, cores from the container's cpuset (which must be exclusive), hugepages
    /// bounded by its cgroup; the config file (a ConfigMap) gives the rest.
    #[arg(long, env = "VSWITCHD_POD")]
    pod: bool,
    /// The container's cgroup directory (with --pod).
    #[arg(long, default_value = "/sys/fs/cgroup", env = "VSWITCHD_CGROUP_DIR")]
    cgroup_dir: PathBuf,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Restricts the calling thread (and the threads it starts from now on) to `cores`.
fn pin_current_thread(cores: &[usize]) -> nix::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    for &c in cores {
        set.set(c)?;
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("vswitchd: error: {msg}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    // Before any thread starts: threads pick their heap arena on their first allocation.
    let heap_tuned = dataplane::dpdk::tune_heap();
    dataplane::dpdk::raise_open_file_limit();
    let args = Args::parse();
    let mut config = match Config::from_file(&args.config) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if args.pod {
        let pod = dataplane::pod::PodEnv::from_process(args.cgroup_dir.clone());
        match dataplane::pod::apply(&mut config, &pod, dataplane::memory::default_hugepage_size()) {
            Ok(plan) => {
                let ports: Vec<String> = plan.ports.iter().map(|(n, d)| format!("{n}={d}")).collect();
                let limit = plan.hugepage_limit.map_or("not limited".into(), |b| format!("{} MiB", b >> 20));
                println!(
                    "pod: CPUs {:?} (control {}, workers {:?}), devices [{}], hugepages {limit}",
                    plan.cpus,
                    plan.cpus[0],
                    &plan.cpus[1..],
                    ports.join(", ")
                );
            }
            Err(e) => return fail(format!("pod: {e}")),
        }
    }
    init_logging(config.control.log_format);
    let socket = config.control.socket.clone();
    let listen = config.control.listen;
    let metrics_listen = match config.control.metrics_listen() {
        Ok(m) => m,
        Err(e) => return fail(e),
    };
    let plan = match StartPlan::new(config, &args.config) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    println!("vswitchd {} starting from {}", control::service::VERSION, args.config.display());
    println!("{}", plan.memory);
    println!("EAL: {}", plan.eal_args[1..].join(" "));
    if args.check {
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    // Refuse to start next to a live daemon before DPDK takes memory.
    if let Err(e) = server::prepare_socket(&socket) {
        return fail(e);
    }

    // DPDK's start-up may use the worker cores, idle until the workers start (see
    // startup_cores). Then everything but the workers (DPDK's control threads, the API,
    // metrics) stays on the main core: threads inherit this, and a worker that sleeps while
    // idle must not find them on its core when it wakes up.
    let main_core = plan.config.eal.main_core;
    let startup = startup_cores(&plan.config);
    if let Err(e) = pin_current_thread(&startup) {
        return fail(format!("cannot run start-up on cores {startup:?}: {e}"));
    }
    // Mapped on another core while the EAL starts (it takes one core for tens of ms), so
    // start-up does not wait for it.
    let warm_heap_bytes = (plan.config.control.warm_heap_mb as usize) << 20;
    if heap_tuned && warm_heap_bytes > 0 {
        // A thread that cannot start only leaves the heap cold.
        let _ = std::thread::Builder::new()
            .name("vswitchd-heap".into())
            .spawn(move || dataplane::dpdk::warm_heap(warm_heap_bytes));
    }
    let switch = match Switch::start(plan) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if let Err(e) = pin_current_thread(&[main_core]) {
        switch.shutdown();
        return fail(format!("cannot pin the control plane to core {main_core}: {e}"));
    }
    println!("TSC {} Hz ({})", switch.tsc_hz(), switch.tsc_source());
    for p in switch.ports() {
        println!(
            "port {} '{}' ({}, {}): {} rx / {} tx queues, MAC {}, link {}",
            p.number,
            p.name,
            p.devargs,
            p.driver,
            p.rx_queues,
            p.tx_queues,
            p.mac,
            if p.link.up { "up" } else { "down" }
        );
    }
    let names = switch.port_names();
    for w in switch.workers() {
        let queues: Vec<String> = w
            .rx_queues()
            .iter()
            .map(|(_, p, q)| {
                let name = names.iter().find(|n| n.0 == *p).map_or("?", |n| n.1.as_str());
                format!("{name}:{q}")
            })
            .collect();
        println!("worker {} on core {} (lcore {}): rx {}", w.index, w.core, w.lcore, queues.join(" "));
    }

    // The control plane runs on the EAL main core: threads started from here inherit it.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("vswitchd-ctl")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            switch.shutdown();
            return fail(format!("cannot start the control plane runtime: {e}"));
        }
    };
    let result = runtime.block_on(run(switch.clone(), socket.clone(), listen, metrics_listen));
    switch.shutdown();
    drop(runtime);
    match result {
        Ok(()) => {
            println!("vswitchd: stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => fail(e),
    }
}

async fn run(
    switch: Arc<Switch>,
    socket: PathBuf,
    listen: Option<std::net::SocketAddr>,
    metrics_listen: MetricsListen,
) -> Result<(), String> {
    // Signal handlers first: until they are in, SIGINT or SIGTERM kills the process before
    // the switch is shut down cleanly (the shutdown future below only runs once polled, after
    // "running" is announced).
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return Err("cannot install signal handlers for SIGINT and SIGTERM".into());
    };
    let listeners = Listeners::bind(&socket, listen).await.map_err(|e| e.to_string())?;
    println!("API on unix:{}", socket.display());
    if let Some(addr) = listeners.tcp_addr() {
        println!("API on tcp:{addr}");
    }
    let metrics_listener = match metrics_listen {
        MetricsListen::Off => None,
        MetricsListen::Configured(addr) => {
            Some(metrics::bind(addr).await.map_err(|e| format!("control.metrics: cannot listen on {addr}: {e}"))?)
        }
        MetricsListen::Default(addr) => match metrics::bind(addr).await {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!(%addr, error = %e, "metrics endpoint not started (set control.metrics to another address, or \"off\")");
                None
            }
        },
    };
    let api = Api::new(switch.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics_server = metrics_listener.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            println!("metrics on http://{addr}/metrics");
        }
        let m = Arc::new(metrics::Metrics::new(switch.clone(), api.rpc_metrics().clone()));
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = metrics::serve(m, listener, stopped).await {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        })
    });
    let maintenance = {
        let switch = switch.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut drops = DropLog::new(switch.drop_totals());
            loop {
                tick.tick().await;
                switch.maintain();
                drops.maybe_log(&switch);
            }
        })
    };
    let shutdown = async move {
        let name = tokio::select! {
            _ = int.recv() => "SIGINT",
            _ = term.recv() => "SIGTERM",
        };
        println!("vswitchd: {name} received, stopping");
    };
    println!("vswitchd: running");
    let served = server::serve(api, listeners, shutdown).await;
    let _ = stop_tx.send(true);
    if let Some(m) = metrics_server {
        // Scrapers hold keep-alive connections: give them a moment, not a veto.
        let _ = tokio::time::timeout(Duration::from_secs(1), m).await;
    }
    maintenance.abort();
    served.map_err(|e| format!("API server failed: {e}"))
}

/// Logs packet drops as one line per window at most, whatever the packet rate: drops are
/// what packets trigger, and a log line per packet would flood the log and slow the switch.
struct DropLog {
    last: [u64; DropReason::COUNT],
    at: std::time::Instant,
}

impl DropLog {
    const WINDOW: Duration = Duration::from_secs(10);

    fn new(totals: [u64; DropReason::COUNT]) -> DropLog {
        DropLog { last: totals, at: std::time::Instant::now() }
    }

    fn maybe_log(&mut self, switch: &Switch) {
        if self.at.elapsed() < Self::WINDOW {
            return;
        }
        let now = switch.drop_totals();
        let moved: Vec<String> = DropReason::ALL
            .iter()
            .filter_map(|&r| {
                let d = now[r as usize].saturating_sub(self.last[r as usize]);
                (d > 0).then(|| format!("{}={d}", r.name()))
            })
            .collect();
        if !moved.is_empty() {
            let total: u64 = now.iter().zip(&self.last).map(|(n, l)| n.saturating_sub(*l)).sum();
            tracing::warn!(
                window_seconds = Self::WINDOW.as_secs(),
                dropped = total,
                reasons = %moved.join(" "),
                "packets dropped (vswitchctl show-drops for totals)"
            );
        }
        self.last = now;
        self.at = std::time::Instant::now();
    }
}
