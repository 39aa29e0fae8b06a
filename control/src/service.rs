//! The `vswitch.v1` services over a running [`Switch`].
//!
//! Every handler validates its whole request before it changes anything, and names the
//! offending field at the start of its error message.

use std::collections::HashMap;
use std::sync::Arc;

use dataplane::flow::store::{FlowOp, TxError};
use dataplane::mac_table::FlushFilter;
use dataplane::stats::DropReason;
use dataplane::switch::PortView;
use dataplane::wire::MacAddr;
use dataplane::{PortIdx, Switch};
use tonic::{Request, Response, Status};
use vswitch_proto::v1::{self as pb, port_ref};

/// Version of this build, reported by GetInfo.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The API implementation; cheap to clone (one Arc).
#[derive(Clone)]
pub struct Api {
    switch: Arc<Switch>,
    rpc_metrics: Arc<crate::metrics::RpcMetrics>,
}

impl Api {
    pub fn new(switch: Arc<Switch>) -> Api {
        Api { switch, rpc_metrics: Default::default() }
    }

    /// Requests served, by method and code (for `/metrics`).
    pub fn rpc_metrics(&self) -> &Arc<crate::metrics::RpcMetrics> {
        &self.rpc_metrics
    }

    pub fn switch(&self) -> &Arc<Switch> {
        &self.switch
    }

    /// The port a PortRef names. `Ok(None)` when the ref is absent or empty and
    /// `required` is false.
    fn resolve_port(&self, field: &str, r: Option<&pb::PortRef>, required: bool) -> Result<Option<PortView>, Status> {
        match r.and_then(|r| r.port.as_ref()) {
            None if required => Err(Status::invalid_argument(format!("{field}: a port name or number is required"))),
            None => Ok(None),
            Some(port_ref::Port::Name(name)) if name.is_empty() => {
                Err(Status::invalid_argument(format!("{field}.name: must not be empty")))
            }
            Some(port_ref::Port::Name(name)) => self
                .switch
                .port_by_name(name)
                .map(Some)
                .ok_or_else(|| Status::not_found(format!("{field}.name: no port named '{name}'"))),
            Some(port_ref::Port::Number(n)) => self
                .switch
                .port_by_number(*n)
                .map(Some)
                .ok_or_else(|| Status::not_found(format!("{field}.number: no port number {n}"))),
        }
    }

    fn port_names(&self) -> HashMap<PortIdx, (String, u32)> {
        self.switch.port_names().into_iter().map(|(i, n, no)| (i, (n, no))).collect()
    }

    /// A worker and its counters as the API shows them; `names` from [`Api::port_names`].
    fn worker_view(&self, w: &dataplane::switch::WorkerRuntime, names: &HashMap<PortIdx, (String, u32)>) -> pb::Worker {
        let t = w.stats.totals();
        pb::Worker {
            index: w.index as u32,
            core: w.core as u32,
            lcore: w.lcore,
            rx_queues: w
                .rx_queues()
                .iter()
                .map(|(_, p, q)| format!("{}:{q}", names.get(p).map_or("?", |n| n.0.as_str())))
                .collect(),
            polls: t.polls,
            busy_polls: t.busy_polls,
            busy_cycles: t.busy_cycles,
            idle_cycles: t.idle_cycles,
            rx_packets: t.rx_packets,
            rx_bytes: t.rx_bytes,
            tx_packets: t.tx_packets,
            tx_bytes: t.tx_bytes,
            dropped: t.drops.iter().sum(),
            mac_learned: t.mac_learned,
            mac_moved: t.mac_moved,
            mac_learn_failed: t.mac_learn_failed,
            generation: t.generation,
            emc_hits: t.emc_hits,
            emc_misses: t.emc_misses,
            idle_state: t.idle_state.name().to_string(),
            idle_mode: if t.idle_backoff { "backoff" } else { "busy-poll" }.to_string(),
            sleeps: t.sleeps,
            sleep_cycles: t.sleep_cycles,
            interrupt_waits: t.interrupt_waits,
            interrupt_wakes: t.interrupt_wakes,
            sleep_wakes: t.sleep_wakes,
            cpu_resume_latency: dataplane::power::current(w.core).unwrap_or_default(),
            rx_bursts: t.rx_bursts,
            tsc_hz: self.switch.tsc_hz(),
        }
    }
}

fn parse_vlan(field: &str, v: Option<u32>) -> Result<Option<u16>, Status> {
    match v {
        None => Ok(None),
        Some(v) if v <= 4095 => Ok(Some(v as u16)),
        Some(v) => Err(Status::invalid_argument(format!("{field}: {v} is not a VLAN id (0 to 4095)"))),
    }
}

fn parse_mac(field: &str, s: &str) -> Result<MacAddr, Status> {
    s.parse::<MacAddr>().map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

fn trace_step_to_pb(s: dataplane::switch::TraceStep) -> pb::TraceStep {
    pb::TraceStep {
        table: s.table as u32,
        flow: s.flow.map(|f| f.to_string()).unwrap_or_default(),
        miss: s.miss.map(|m| m.to_string()).unwrap_or_default(),
        effects: s.effects,
    }
}

fn live_event(
    switch: &Switch,
    record: &dataplane::live_trace::TracedPacket,
    sequence: u64,
    lost: u64,
) -> pb::LiveTraceEvent {
    let p = switch.explain(record);
    pb::LiveTraceEvent {
        sequence,
        worker: p.worker as u32,
        in_port: p.in_port,
        in_port_name: p.in_port_name,
        generation: p.generation,
        time_ns: p.at_ns,
        frame_length: p.frame_len,
        packet: p.packet,
        stages: p.stages,
        steps: p.steps.into_iter().map(trace_step_to_pb).collect(),
        outputs: p.outputs,
        drops: p
            .drops
            .into_iter()
            .map(|(port, r)| pb::LiveTraceDrop { port, stage: r.stage().into(), reason: r.name().into() })
            .collect(),
        fate: p.fate,
        head: p.head,
        lost,
    }
}

fn port_to_pb(p: PortView) -> pb::Port {
    pb::Port {
        name: p.name,
        number: p.number,
        devargs: p.devargs,
        driver: p.driver,
        dpdk_port_id: p.dpdk_port_id as u32,
        mac: p.mac.to_string(),
        mtu: p.mtu as u32,
        rx_queues: p.rx_queues as u32,
        tx_queues: p.tx_queues as u32,
        rx_descriptors: p.rx_descriptors as u32,
        tx_descriptors: p.tx_descriptors as u32,
        rx_interrupts: p.rx_interrupts,
        link: Some(pb::Link {
            up: p.link.up,
            speed_mbps: p.link.speed_mbps,
            full_duplex: p.link.full_duplex,
            autoneg: p.link.autoneg,
        }),
        counters: Some(pb::PortCounters {
            rx_packets: p.counters.rx_packets,
            rx_bytes: p.counters.rx_bytes,
            tx_packets: p.counters.tx_packets,
            tx_bytes: p.counters.tx_bytes,
            rx_dropped: p.counters.rx_dropped(),
            tx_dropped: p.counters.tx_dropped(),
        }),
        device: Some(pb::DeviceCounters {
            rx_packets: p.device.ipackets,
            tx_packets: p.device.opackets,
            rx_bytes: p.device.ibytes,
            tx_bytes: p.device.obytes,
            rx_missed: p.device.imissed,
            rx_errors: p.device.ierrors,
            tx_errors: p.device.oerrors,
            rx_nombuf: p.device.rx_nombuf,
        }),
    }
}

#[tonic::async_trait]
impl pb::switch_service_server::SwitchService for Api {
    async fn get_info(&self, _: Request<pb::GetInfoRequest>) -> Result<Response<pb::GetInfoResponse>, Status> {
        let s = &self.switch;
        let m = &s.plan.memory;
        let (available, in_use) = s.pool_usage().unwrap_or((0, 0));
        Ok(Response::new(pb::GetInfoResponse {
            version: VERSION.to_string(),
            dpdk_version: dataplane::dpdk::version(),
            started_at_unix: s.started_at().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            uptime_seconds: s.uptime().as_secs_f64(),
            generation: s.generation(),
            eal_args: s.plan.eal_args.clone(),
            memory: Some(pb::MemoryInfo {
                mbufs: m.mbufs,
                mbuf_data_room: m.data_room as u32,
                pool_bytes: m.pool_bytes,
                overhead_bytes: m.overhead_bytes,
                hugepages: m.hugepages,
                hugepage_size: m.hugepage_size,
                mbufs_available: available,
                mbufs_in_use: in_use,
                mapped_bytes: s.eal_mapped_bytes(),
            }),
            mac_aging_seconds: s.plan.config.switch.mac_aging_seconds,
            mac_table_capacity: s.mac_table_capacity() as u32,
            tsc_hz: s.tsc_hz(),
            live_trace: s.live_trace_running(),
        }))
    }

    async fn list_workers(
        &self,
        _: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let names = self.port_names();
        let workers = self.switch.workers().iter().map(|w| self.worker_view(w, &names)).collect();
        Ok(Response::new(pb::ListWorkersResponse { workers }))
    }

    async fn set_worker_idle(
        &self,
        req: Request<pb::SetWorkerIdleRequest>,
    ) -> Result<Response<pb::SetWorkerIdleResponse>, Status> {
        let req = req.into_inner();
        let backoff = match pb::IdleMode::try_from(req.mode) {
            Ok(pb::IdleMode::Backoff) => true,
            Ok(pb::IdleMode::BusyPoll) => false,
            Ok(pb::IdleMode::Unspecified) => {
                return Err(Status::invalid_argument("mode: required (IDLE_MODE_BACKOFF or IDLE_MODE_BUSY_POLL)"))
            }
            Err(_) => return Err(Status::invalid_argument(format!("mode: {} is not an IdleMode", req.mode))),
        };
        let switch = self.switch.clone();
        let index = req.worker.map(|w| w as usize);
        // Waits (briefly) for the workers to apply it: off the async runtime's threads.
        let changed = tokio::task::spawn_blocking(move || switch.set_idle_backoff(index, backoff))
            .await
            .map_err(|e| Status::internal(format!("idle change task failed: {e}")))?
            .map_err(|e| match e {
                dataplane::WorkerChangeError::NoSuchWorker { .. } => Status::invalid_argument(e.to_string()),
                dataplane::WorkerChangeError::Stopping | dataplane::WorkerChangeError::Timeout(_) => {
                    Status::unavailable(e.to_string())
                }
            })?;
        let names = self.port_names();
        let workers = changed.into_iter().map(|i| self.worker_view(&self.switch.workers()[i], &names)).collect();
        Ok(Response::new(pb::SetWorkerIdleResponse { workers }))
    }

    async fn list_drops(&self, req: Request<pb::ListDropsRequest>) -> Result<Response<pb::ListDropsResponse>, Status> {
        let req = req.into_inner();
        let port = self.resolve_port("port", req.port.as_ref(), false)?;
        let counts = match port {
            Some(p) => p.counters.drops,
            None => self.switch.drop_totals(),
        };
        let drops = DropReason::ALL
            .iter()
            .map(|&r| pb::DropCounter {
                stage: r.stage().to_string(),
                reason: r.name().to_string(),
                description: r.description().to_string(),
                packets: counts[r as usize],
            })
            .collect();
        Ok(Response::new(pb::ListDropsResponse { drops }))
    }
}

#[tonic::async_trait]
impl pb::port_service_server::PortService for Api {
    async fn list_ports(&self, _: Request<pb::ListPortsRequest>) -> Result<Response<pb::ListPortsResponse>, Status> {
        let ports = self.switch.ports().into_iter().map(port_to_pb).collect();
        Ok(Response::new(pb::ListPortsResponse { ports }))
    }

    async fn get_port(&self, req: Request<pb::GetPortRequest>) -> Result<Response<pb::Port>, Status> {
        let req = req.into_inner();
        let port = self.resolve_port("port", req.port.as_ref(), true)?.expect("required");
        Ok(Response::new(port_to_pb(port)))
    }

    async fn add_port(&self, req: Request<pb::AddPortRequest>) -> Result<Response<pb::Port>, Status> {
        let spec = req.into_inner().port.ok_or_else(|| Status::invalid_argument("port: required"))?;
        let config = port_spec_to_config(&spec)?;
        let switch = self.switch.clone();
        let view = tokio::task::spawn_blocking(move || switch.add_port(config))
            .await
            .map_err(|e| Status::internal(format!("port task failed: {e}")))?
            .map_err(port_change_status)?;
        Ok(Response::new(port_to_pb(view)))
    }

    async fn remove_port(
        &self,
        req: Request<pb::RemovePortRequest>,
    ) -> Result<Response<pb::RemovePortResponse>, Status> {
        let name = req.into_inner().name;
        if name.is_empty() {
            return Err(Status::invalid_argument("name: the port's name is required"));
        }
        let switch = self.switch.clone();
        tokio::task::spawn_blocking(move || switch.remove_port(&name))
            .await
            .map_err(|e| Status::internal(format!("port task failed: {e}")))?
            .map_err(port_change_status)?;
        Ok(Response::new(pb::RemovePortResponse {}))
    }
}

/// A run-time port's config from the API; zero fields take the run-time defaults.
fn port_spec_to_config(spec: &pb::PortSpec) -> Result<dataplane::config::PortConfig, Status> {
    let small = |field: &str, v: u32, default: u16| -> Result<u16, Status> {
        match v {
            0 => Ok(default),
            v => u16::try_from(v).map_err(|_| Status::invalid_argument(format!("port.{field}: {v} is too large"))),
        }
    };
    let descriptors = dataplane::config::RUNTIME_PORT_DESCRIPTORS;
    Ok(dataplane::config::PortConfig {
        name: spec.name.clone(),
        number: spec.number,
        devargs: spec.devargs.clone(),
        rx_queues: small("rx_queues", spec.rx_queues, dataplane::config::RUNTIME_PORT_RX_QUEUES)?,
        rx_descriptors: small("rx_descriptors", spec.rx_descriptors, descriptors)?,
        tx_descriptors: small("tx_descriptors", spec.tx_descriptors, descriptors)?,
        mtu: small("mtu", spec.mtu, dataplane::config::RUNTIME_PORT_MTU)?,
        ip: None,
        gateway: None,
    })
}

fn port_change_status(e: dataplane::switch::PortChangeError) -> Status {
    use dataplane::switch::PortChangeError as E;
    match e {
        E::Invalid { field, message } => Status::invalid_argument(format!("port.{field}: {message}")),
        E::Exists { field, message } => Status::already_exists(format!("port.{field}: {message}")),
        E::NotFound(_) => Status::not_found(format!("name: {e}")),
        E::InUse { .. } => Status::failed_precondition(format!("name: {e}")),
        E::NoRoom(_) => Status::resource_exhausted(e.to_string()),
        E::Device(_) => Status::failed_precondition(format!("port.devargs: {e}")),
        E::Stopping => Status::unavailable(e.to_string()),
    }
}

#[tonic::async_trait]
impl pb::mac_table_service_server::MacTableService for Api {
    async fn list_macs(&self, req: Request<pb::ListMacsRequest>) -> Result<Response<pb::ListMacsResponse>, Status> {
        let req = req.into_inner();
        let port = self.resolve_port("port", req.port.as_ref(), false)?;
        let vlan = parse_vlan("vlan", req.vlan)?;
        let names = self.port_names();
        let mut entries: Vec<_> = self
            .switch
            .mac_entries()
            .into_iter()
            .filter(|e| port.as_ref().is_none_or(|p| p.idx == e.port))
            .filter(|e| vlan.is_none_or(|v| v == e.vlan))
            .collect();
        entries.sort_by_key(|e| (e.vlan, e.mac));
        let entries = entries
            .into_iter()
            .map(|e| {
                let (name, number) = names.get(&e.port).cloned().unwrap_or_default();
                pb::MacEntry {
                    vlan: e.vlan as u32,
                    mac: e.mac.to_string(),
                    port_name: name,
                    port_number: number,
                    age_seconds: e.age_secs,
                    r#static: e.is_static,
                }
            })
            .collect();
        Ok(Response::new(pb::ListMacsResponse { entries, capacity: self.switch.mac_table_capacity() as u32 }))
    }

    async fn flush_macs(&self, req: Request<pb::FlushMacsRequest>) -> Result<Response<pb::FlushMacsResponse>, Status> {
        let req = req.into_inner();
        let port = self.resolve_port("port", req.port.as_ref(), false)?;
        let vlan = parse_vlan("vlan", req.vlan)?;
        let mac = if req.mac.is_empty() { None } else { Some(parse_mac("mac", &req.mac)?) };
        let removed = self.switch.flush_macs(&FlushFilter {
            port: port.map(|p| p.idx),
            vlan,
            mac,
            include_static: req.include_static,
        });
        Ok(Response::new(pb::FlushMacsResponse { removed: removed as u64 }))
    }

    async fn add_static_mac(
        &self,
        req: Request<pb::AddStaticMacRequest>,
    ) -> Result<Response<pb::AddStaticMacResponse>, Status> {
        let req = req.into_inner();
        let mac = parse_mac("mac", &req.mac)?;
        if !mac.is_valid_source() {
            return Err(Status::invalid_argument(format!(
                "mac: {mac} is a group or zero address; a station entry needs a unicast MAC"
            )));
        }
        let vlan = parse_vlan("vlan", Some(req.vlan))?.unwrap_or(0);
        let port = self.resolve_port("port", req.port.as_ref(), true)?.expect("required");
        if !self.switch.add_static_mac(vlan, mac, port.idx) {
            return Err(Status::resource_exhausted("mac: the MAC table is full"));
        }
        Ok(Response::new(pb::AddStaticMacResponse {}))
    }
}

fn field_error(e: crate::convert::FieldError) -> Status {
    Status::invalid_argument(e.to_string())
}

/// Waits (without blocking the runtime) until every worker runs `generation`, after
/// `QUICK_WAIT` spent waiting on the request's own thread.
async fn wait_live(switch: &Arc<Switch>, generation: u64, timeout: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if switch.oldest_running_generation() >= generation {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_micros(200)).await;
    }
}

/// A busy worker takes a new snapshot at its next poll, an idle one (waiting for rx
/// interrupts or in a timed sleep) when the doorbell wakes it: usually well under a
/// millisecond, the least a tokio sleep lasts. So the first 2 ms are waited for in 20 µs
/// sleeps.
const QUICK_WAIT: std::time::Duration = std::time::Duration::from_millis(2);
const QUICK_POLL: std::time::Duration = std::time::Duration::from_micros(20);

const WAIT_DEFAULT: std::time::Duration = std::time::Duration::from_secs(5);

impl Api {
    /// Builds the ops (`ops` may parse thousands of rules), runs the transaction and waits
    /// the first moments for it to go live, all on this thread: `block_in_place` hands the
    /// runtime's other tasks (other requests, the metrics endpoint) to another thread, so
    /// milliseconds of parsing and compiling block none of them, and this work needs no
    /// hand-off to the blocking pool. The API runs on vswitchd's multi-thread runtime.
    async fn run_transaction<I: IntoIterator<Item = Result<FlowOp, TxError>>>(
        &self,
        ops: impl FnOnce() -> I,
        name_op: impl Fn(usize) -> String,
        wait: bool,
    ) -> Result<Response<pb::TransactResponse>, Status> {
        let switch = &self.switch;
        let (outcome, live) = tokio::task::block_in_place(|| {
            let outcome = switch.transact(ops()).map_err(|e| {
                // An op that failed to parse has no field: its message says where.
                let at = if e.field.is_empty() { name_op(e.op) } else { format!("{}.{}", name_op(e.op), e.field) };
                Status::invalid_argument(format!("{at}: {}", e.message))
            })?;
            let live = wait && switch.wait_for_generation(outcome.generation, QUICK_WAIT, QUICK_POLL);
            Ok::<_, Status>((outcome, live))
        })?;
        let live = live || (wait && wait_live(switch, outcome.generation, WAIT_DEFAULT - QUICK_WAIT).await);
        Ok(Response::new(pb::TransactResponse {
            generation: outcome.generation,
            added: outcome.added as u64,
            modified: outcome.modified as u64,
            deleted: outcome.deleted as u64,
            live,
        }))
    }
}

#[tonic::async_trait]
impl pb::flow_service_server::FlowService for Api {
    async fn transact(&self, req: Request<pb::TransactRequest>) -> Result<Response<pb::TransactResponse>, Status> {
        let req = req.into_inner();
        let mut ops = Vec::with_capacity(req.ops.len());
        let mut kinds = Vec::with_capacity(req.ops.len());
        for (i, op) in req.ops.iter().enumerate() {
            let (op, kind) = crate::convert::op_to_model(op, i).map_err(field_error)?;
            ops.push(op);
            kinds.push(kind);
        }
        let name = move |i: usize| format!("ops[{i}].{}", kinds.get(i).copied().unwrap_or("op"));
        self.run_transaction(|| ops.into_iter().map(Ok), name, req.wait).await
    }

    async fn add_flows(&self, req: Request<pb::AddFlowsRequest>) -> Result<Response<pb::TransactResponse>, Status> {
        let req = req.into_inner();
        let typed = req
            .flows
            .iter()
            .enumerate()
            .map(|(i, f)| {
                crate::convert::flow_to_model(f)
                    .map(FlowOp::Add)
                    .map_err(|e| field_error(e.under(&format!("flows[{i}]"))))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let n_typed = typed.len();
        // Each text is parsed as the transaction reaches it: 10,000 rules never sit in
        // memory as parsed ops all at once (2.5 MB, each page of it a fault in a fresh
        // process).
        let n_texts = req.texts.len();
        // Flows with the same actions share one list, and their compiled rules one list of
        // ops: a 10,000-rule policy usually has few distinct actions.
        let mut shared = dataplane::flow::SharedActions::default();
        let parsed = req
            .texts
            .iter()
            .map(String::as_str)
            .chain(dataplane::flow::flow_lines(&req.text).map(|(_, text)| text))
            .enumerate()
            .map(move |(i, text)| {
                dataplane::flow::parse_flow_sharing(text, &mut shared).map(FlowOp::Add).map_err(|e| TxError {
                    op: n_typed + i,
                    field: String::new(),
                    message: e.to_string(),
                })
            });
        let name = |i: usize| match i.checked_sub(n_typed + n_texts) {
            // The k-th flow of the file: its line is looked up again (errors only).
            Some(k) => {
                dataplane::flow::flow_lines(&req.text).nth(k).map_or("text".into(), |(line, _)| format!("text:{line}"))
            }
            None if i < n_typed => format!("flows[{i}]"),
            None => format!("texts[{}]", i - n_typed),
        };
        self.run_transaction(|| typed.into_iter().map(Ok).chain(parsed), name, req.wait).await
    }

    async fn modify_flows(
        &self,
        req: Request<pb::ModifyFlowsRequest>,
    ) -> Result<Response<pb::TransactResponse>, Status> {
        let req = req.into_inner();
        let filter = crate::convert::filter_to_model(req.filter.as_ref()).map_err(field_error)?;
        let actions = crate::convert::actions_to_model(&req.actions).map_err(field_error)?;
        let op = FlowOp::Modify { filter, actions: actions.into(), strict: req.strict };
        // The only op: its errors need no index.
        let resp = self.run_transaction(|| [Ok(op)], |_| "modify".to_string(), req.wait).await;
        resp.map_err(|s| Status::new(s.code(), s.message().trim_start_matches("modify.").to_string()))
    }

    async fn delete_flows(
        &self,
        req: Request<pb::DeleteFlowsRequest>,
    ) -> Result<Response<pb::TransactResponse>, Status> {
        let req = req.into_inner();
        let filter = crate::convert::filter_to_model(req.filter.as_ref()).map_err(field_error)?;
        let op = FlowOp::Delete { filter, strict: req.strict };
        self.run_transaction(|| [Ok(op)], |_| "delete".to_string(), req.wait).await
    }

    async fn dump_flows(&self, req: Request<pb::DumpFlowsRequest>) -> Result<Response<pb::DumpFlowsResponse>, Status> {
        let req = req.into_inner();
        let filter = crate::convert::filter_to_model(req.filter.as_ref()).map_err(field_error)?;
        let switch = self.switch.clone();
        let views = tokio::task::spawn_blocking(move || switch.dump_flows(&filter, req.strict))
            .await
            .map_err(|e| Status::internal(format!("dump task failed: {e}")))?;
        let flows = views
            .into_iter()
            .map(|v| pb::FlowStats {
                text: v.spec.to_string(),
                flow: Some(crate::convert::flow_from_model(&v.spec)),
                packets: v.packets,
                bytes: v.bytes,
                duration_seconds: v.duration.as_secs_f64(),
                id: v.id,
            })
            .collect();
        Ok(Response::new(pb::DumpFlowsResponse { flows }))
    }

    async fn list_tables(&self, _: Request<pb::ListTablesRequest>) -> Result<Response<pb::ListTablesResponse>, Status> {
        let tables = self
            .switch
            .tables()
            .into_iter()
            .map(|t| pb::TableInfo {
                id: t.id as u32,
                flows: t.flows as u64,
                miss: t.miss.to_string(),
                lookups: t.lookups,
                matched: t.matched,
                missed: t.missed,
            })
            .collect();
        let (emc_hits, emc_misses) = self.switch.emc_totals();
        Ok(Response::new(pb::ListTablesResponse { tables, emc_hits, emc_misses }))
    }

    async fn set_table_miss(
        &self,
        req: Request<pb::SetTableMissRequest>,
    ) -> Result<Response<pb::TransactResponse>, Status> {
        let req = req.into_inner();
        if req.table as usize >= dataplane::flow::MAX_TABLES {
            return Err(Status::invalid_argument(format!("table: {} is not a table (0 to 254)", req.table)));
        }
        let miss = crate::convert::miss_to_model("miss", &req.miss).map_err(field_error)?;
        let op = FlowOp::SetMiss { table: req.table as u8, miss };
        let resp = self.run_transaction(|| [Ok(op)], |_| "set_miss".to_string(), req.wait).await;
        resp.map_err(|s| Status::new(s.code(), s.message().trim_start_matches("set_miss.").to_string()))
    }

    async fn trace(&self, req: Request<pb::TraceRequest>) -> Result<Response<pb::TraceResponse>, Status> {
        let req = req.into_inner();
        let key = match req.packet {
            Some(pb::trace_request::Packet::Fields(m)) => crate::convert::packet_to_key(&m).map_err(field_error)?,
            Some(pb::trace_request::Packet::Frame(bytes)) => {
                if self.switch.port_by_number(req.in_port).is_none() {
                    return Err(Status::invalid_argument(format!("in_port: no port number {}", req.in_port)));
                }
                let mut key = dataplane::flow::FlowKey::ZERO;
                if let Err(e) =
                    dataplane::flow::key::extract(&bytes, req.in_port as u16, dataplane::flow::key::Depth::L4, &mut key)
                {
                    return Ok(Response::new(pb::TraceResponse {
                        drop_reason: format!("{e:?}"),
                        ..Default::default()
                    }));
                }
                key
            }
            None => return Err(Status::invalid_argument("packet: give fields or frame")),
        };
        if self.switch.port_by_number(key.in_port() as u32).is_none() {
            return Err(Status::invalid_argument(format!("fields.in_port: no port number {}", key.in_port())));
        }
        let t = self.switch.trace(key);
        Ok(Response::new(pb::TraceResponse {
            steps: t.steps.into_iter().map(trace_step_to_pb).collect(),
            outputs: t.outputs,
            drop_reason: t.drop.map(|d| d.name().to_string()).unwrap_or_default(),
            final_packet: t.final_packet,
        }))
    }

    type TraceLiveStream =
        std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::LiveTraceEvent, Status>> + Send>>;

    async fn trace_live(&self, req: Request<pb::TraceLiveRequest>) -> Result<Response<Self::TraceLiveStream>, Status> {
        let req = req.into_inner();
        let filter = dataplane::flow::parse_filter(&req.filter)
            .map_err(|e| Status::invalid_argument(format!("filter: {}", e.message)))?;
        if filter.table.is_some() || filter.priority.is_some() || filter.cookie.is_some() || filter.out_port.is_some() {
            return Err(Status::invalid_argument(
                "filter: give packet fields only (no table, priority, cookie or out_port)",
            ));
        }
        let count = match req.count {
            0 => 1,
            n @ 1..=10_000 => n,
            n => return Err(Status::invalid_argument(format!("count: {n} is more than 10000"))),
        };
        let timeout = match req.timeout_ms {
            0 => 60_000,
            n @ 1..=3_600_000 => n,
            n => return Err(Status::invalid_argument(format!("timeout_ms: {n} is more than 3600000 (an hour)"))),
        };
        let Some(session) = self.switch.start_live_trace(filter.matching, count as u64) else {
            return Err(Status::failed_precondition("another live trace is running; wait for it to end"));
        };
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let switch = self.switch.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(timeout as u64);
            let mut sent = 0u64;
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(5));
            'outer: while sent < count as u64 && tokio::time::Instant::now() < deadline {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = tx.closed() => break,
                }
                let complete = session.complete();
                while let Some(record) = session.pop() {
                    sent += 1;
                    let event =
                        live_event(&switch, &record, sent, session.lost.load(std::sync::atomic::Ordering::Relaxed));
                    if tx.send(Ok(event)).await.is_err() {
                        break 'outer;
                    }
                }
                // Every record was pushed (or lost to a full queue) before this drain.
                if complete {
                    break;
                }
            }
            switch.stop_live_trace();
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn wait_for_generation(
        &self,
        req: Request<pb::WaitForGenerationRequest>,
    ) -> Result<Response<pb::WaitForGenerationResponse>, Status> {
        let req = req.into_inner();
        let timeout =
            if req.timeout_ms == 0 { WAIT_DEFAULT } else { std::time::Duration::from_millis(req.timeout_ms as u64) };
        let reached = wait_live(&self.switch, req.generation, timeout).await;
        Ok(Response::new(pb::WaitForGenerationResponse {
            reached,
            oldest_running: self.switch.oldest_running_generation(),
        }))
    }

    async fn list_counters(
        &self,
        _: Request<pb::ListCountersRequest>,
    ) -> Result<Response<pb::ListCountersResponse>, Status> {
        let counters = self
            .switch
            .named_counters()
            .into_iter()
            .map(|c| pb::NamedCounter { name: c.name, packets: c.packets })
            .collect();
        Ok(Response::new(pb::ListCountersResponse { counters }))
    }
}
