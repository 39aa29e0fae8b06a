//! Ports added and removed while the switch runs (CNI endpoints, benchmarks).
//!
//! Adding opens the device, hands each worker its tx queue (and one worker each rx queue)
//! through the worker's mailbox, then publishes a pipeline that knows the port. Removing
//! publishes a pipeline without it, waits until every worker runs that one, takes the queues
//! back the same way and closes the device. Workers never pause: they pick changes up between
//! bursts.
//!
//! Thread-safety: like tunnel changes, port changes take the flow mutex, then the tunnel
//! mutex (which holds the port list the pipeline's port map is built from).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{open_port, spare_shape, PortView, Switch, WorkerChangeError};
use crate::config::{DeviceKind, PortConfig};
use crate::dpdk::MBUF_HEADROOM;
use crate::mac_table::FlushFilter;
use crate::memory::MemoryPlan;
use crate::worker::{forget_rx, WorkerChange};

/// Why a port change was refused. Nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortChangeError {
    #[error("{field}: {message}")]
    Invalid { field: &'static str, message: String },
    #[error("{field}: {message}")]
    Exists { field: &'static str, message: String },
    #[error("no port named '{0}'")]
    NotFound(String),
    #[error("port '{name}' is used by {} flow(s), e.g. {}; delete them first", flows.len(), flows.first().map(String::as_str).unwrap_or(""))]
    InUse { name: String, flows: Vec<String> },
    /// Out of mbufs kept for run-time ports, or of port slots.
    #[error("{0}")]
    NoRoom(String),
    /// DPDK could not open the device.
    #[error("{0}")]
    Device(String),
    #[error("the switch is stopping")]
    Stopping,
}

/// How long a worker may take to pick up a queue change before the change is abandoned.
const APPLY_TIMEOUT: Duration = Duration::from_secs(super::APPLY_SECS);

impl Switch {
    /// Adds a port while the switch runs. `config.rx_descriptors`/`tx_descriptors` are used
    /// as given (the API defaults them to [`crate::config::RUNTIME_PORT_DESCRIPTORS`]).
    pub fn add_port(&self, config: PortConfig) -> Result<PortView, PortChangeError> {
        let _flows = self.flows.lock().unwrap();
        let mut ts = self.tunnels.lock().unwrap();
        if let Some((field, message)) = config.problems().into_iter().next() {
            return Err(PortChangeError::Invalid { field, message });
        }
        if config.ip.is_some() || config.gateway.is_some() {
            return Err(PortChangeError::Invalid {
                field: "ip",
                message:
                    "uplinks (ports with an ip) come from the config file; ports added at run time are access ports"
                        .into(),
            });
        }
        if ts.name_taken(&config.name) {
            let message = format!("a port or tunnel is named '{}'", config.name);
            return Err(PortChangeError::Exists { field: "name", message });
        }
        if ts.number_taken(config.number) {
            let message = format!("a port or tunnel has number {}", config.number);
            return Err(PortChangeError::Exists { field: "number", message });
        }
        let key = config.device_key().expect("checked by problems()");
        let n_workers = self.workers.len();
        let need = match config.device() {
            // Its rings hold frames in the kernel's memory: only its tx buffers hold mbufs.
            Ok(DeviceKind::System { .. }) => MemoryPlan::runtime_port_mbufs(0, 0, 0, n_workers as u64),
            _ => MemoryPlan::runtime_port_mbufs(
                config.rx_queues,
                config.rx_descriptors,
                config.tx_descriptors,
                n_workers as u64,
            ),
        };
        {
            let ports = self.ports.read().unwrap();
            if let Some(other) = ports.iter().find(|p| p.config.device_key().as_deref() == Some(key.as_str())) {
                let message = format!("device '{key}' is used by port '{}'", other.config.name);
                return Err(PortChangeError::Exists { field: "devargs", message });
            }
            let memory = &self.plan.memory;
            // A frame of the port's MTU (with two VLAN tags and FCS) must fit one mbuf.
            let fits = memory.data_room as u32 - MBUF_HEADROOM;
            if config.mtu as u32 + 14 + 8 + 4 > fits {
                let message = format!(
                    "mtu {} does not fit the packet pool's mbufs (at most {}); start the switch with a port of that MTU",
                    config.mtu,
                    fits - 26
                );
                return Err(PortChangeError::Invalid { field: "mtu", message });
            }
            let used: u64 = ports.iter().map(|p| p.runtime_mbufs).sum();
            let budget = memory.runtime_port_mbufs;
            if used + need > budget {
                return Err(PortChangeError::NoRoom(format!(
                    "mbufs: the port needs {need} (its rx and tx rings), {} of the {budget} kept for ports added at run time are left; raise switch.spare_ports or give fewer descriptors",
                    budget - used.min(budget)
                )));
            }
        }
        let idx = ts.free_port_index().ok_or_else(|| PortChangeError::NoRoom("no free port slot".into()))?;
        let (eal, pool) = match (self.eal.lock().unwrap().clone(), self.pool.lock().unwrap().clone()) {
            (Some(e), Some(p)) => (e, p),
            _ => return Err(PortChangeError::Stopping),
        };
        // The next port added is likely another like it.
        let rx_interrupts = self.plan.config.wants_rx_interrupts();
        let mut port = open_port(&eal, &pool, idx, &config, n_workers, rx_interrupts, Some(spare_shape(&config)))
            .map_err(|e| {
            let hint = if e.to_string().contains("probe") {
                " (Debian's DPDK 22.11 has at most 32 ethdev ports per process, RTE_MAX_ETHPORTS; a kernel interface can be added as system:IFACE, which takes none)"
            } else {
                ""
            };
            PortChangeError::Device(format!("{e}{hint}"))
        })?;
        port.runtime_mbufs = need;

        // Rx queues go to the workers polling the fewest; slots are reused once freed.
        let mut rx_for: Vec<Vec<(usize, crate::dpdk::RxQueue)>> = (0..n_workers).map(|_| Vec::new()).collect();
        let mut slots: Vec<_> = self.workers.iter().map(|w| w.rx.lock().unwrap()).collect();
        for q in 0..config.rx_queues {
            let w = (0..n_workers).min_by_key(|&w| slots[w].iter().flatten().count()).expect("a worker");
            let slot = slots[w].iter().position(Option::is_none).unwrap_or(slots[w].len());
            if slot == slots[w].len() {
                slots[w].push(None);
            }
            slots[w][slot] = Some((idx, q));
            rx_for[w].push((slot, port.eth.rx_queue(q).expect("fresh port")));
        }
        let changes = rx_for.into_iter().enumerate().map(|(w, rx)| {
            (w, WorkerChange::AddPort { idx, tx: port.eth.tx_queue(w as u16).expect("one tx queue per worker"), rx })
        });
        if self.post_to_workers(changes.collect()).is_err() {
            // Take back whatever a worker did pick up; the port closes when the last handle goes.
            slots.iter_mut().for_each(|s| forget_rx(s, idx));
            let _ = self.post_to_workers((0..n_workers).map(|w| (w, WorkerChange::RemovePort { idx })).collect());
            return Err(PortChangeError::Stopping);
        }
        drop(slots);

        ts.add_port(idx, config.name.clone(), config.number);
        let generation = self.publish_port_maps(&ts);
        // It forwards when the call returns: every worker floods to it and knows its number.
        self.wait_for_generation(generation, APPLY_TIMEOUT, Duration::from_micros(200));
        let port = Arc::new(port);
        self.ports.write().unwrap().push(port.clone());
        drop(ts);
        tracing::info!(port = %config.name, number = config.number, devargs = %port.devargs, port_index = idx, "port added");
        Ok(self.port_view(&port))
    }

    /// Removes a port no flow refers to. MAC entries on it go with it; its device is closed.
    pub fn remove_port(&self, name: &str) -> Result<(), PortChangeError> {
        let fs = self.flows.lock().unwrap();
        let mut ts = self.tunnels.lock().unwrap();
        let port = {
            let ports = self.ports.read().unwrap();
            ports.iter().find(|p| p.config.name == name).cloned()
        };
        let Some(port) = port else {
            return Err(PortChangeError::NotFound(name.into()));
        };
        if port.config.ip.is_some() {
            let message = format!("port '{name}' is an uplink (it has an ip); tunnels depend on it");
            return Err(PortChangeError::Invalid { field: "name", message });
        }
        let users = fs.flows_using_port(port.config.number);
        if !users.is_empty() {
            return Err(PortChangeError::InUse { name: name.into(), flows: users });
        }
        let idx = port.idx;
        ts.remove_port(idx);
        let generation = self.publish_port_maps(&ts);
        // Once every worker runs the new snapshot, none sends to the port any more.
        self.wait_for_generation(generation, APPLY_TIMEOUT, Duration::from_micros(200));
        for w in &self.workers {
            forget_rx(&mut w.rx.lock().unwrap(), idx);
        }
        let _ = self.post_to_workers((0..self.workers.len()).map(|w| (w, WorkerChange::RemovePort { idx })).collect());
        self.ports.write().unwrap().retain(|p| p.idx != idx);
        drop(ts);
        drop(fs);
        self.mac_table().flush(&FlushFilter { port: Some(idx), include_static: true, ..Default::default() });
        // The last handle: the device is stopped, closed and detached here, not on a worker.
        drop(port);
        tracing::info!(port = %name, port_index = idx, "port removed");
        Ok(())
    }

    /// Posts one change per worker and waits until each applied it, one caller at a time.
    pub(super) fn post_to_workers(&self, changes: Vec<(usize, WorkerChange)>) -> Result<(), WorkerChangeError> {
        let one_poster = self.worker_posts.lock().unwrap();
        self.post_and_wait(&one_poster, changes)
    }

    /// [`Switch::post_to_workers`] for a caller that holds `worker_posts`.
    pub(super) fn post_and_wait(
        &self,
        _one_poster: &std::sync::MutexGuard<()>,
        changes: Vec<(usize, WorkerChange)>,
    ) -> Result<(), WorkerChangeError> {
        let deadline = Instant::now() + APPLY_TIMEOUT;
        let stopping = || self.shared.stop.load(std::sync::atomic::Ordering::Relaxed);
        let mut tickets = Vec::with_capacity(changes.len());
        for (w, mut change) in changes {
            let mailbox = &self.shared.mailboxes[w];
            loop {
                match mailbox.post(change) {
                    Ok(ticket) => break tickets.push((w, ticket)),
                    Err(_) if stopping() => return Err(WorkerChangeError::Stopping),
                    Err(back) if Instant::now() < deadline => {
                        change = back;
                        std::thread::sleep(Duration::from_micros(100));
                    }
                    Err(_) => return Err(WorkerChangeError::Timeout(w)),
                }
            }
        }
        for (w, ticket) in tickets {
            while self.shared.mailboxes[w].applied() < ticket {
                if stopping() {
                    return Err(WorkerChangeError::Stopping);
                }
                if Instant::now() >= deadline {
                    return Err(WorkerChangeError::Timeout(w));
                }
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        Ok(())
    }
}
