//! Flow management of a running switch: transactions compiled into pipeline snapshots,
//! dumps with counters, table statistics, named counters, timeouts, and packet trace.
//!
//! Thread-safety: every change goes through `Switch::flows` (a mutex the datapath never
//! takes): apply to the store, compile the changed tables, publish one snapshot. Workers
//! pick it up between bursts.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::Switch;
use crate::config::Config;
use crate::flow::action::Action;
use crate::flow::compiled::{CompiledRule, CompiledTable, FlowTables, MissAction, Op};
use crate::flow::key::{slot, FlowKey, VLAN_PRESENT, VLAN_VID_MASK};
use crate::flow::parse::{FlowFilter, FlowSpec};
use crate::flow::store::{FlowOp, FlowStore, StoredFlow, TxError};
use crate::flow::MAX_TABLES;
use crate::l2::L2Headers;
use crate::mac_table::PortIdx;
use crate::pipeline::{Pipeline, PortMap};
use crate::stats::{DropReason, MAX_NAMED_COUNTERS};
use crate::wire::MacAddr;

pub(super) struct FlowState {
    store: FlowStore,
    /// Named counter slots, by index.
    counter_names: Vec<String>,
    /// Per flow id with an idle timeout: last packet count seen and when it changed.
    activity: HashMap<u32, (u64, Instant)>,
    last_expiry_check: Instant,
    config_tables: Vec<(u8, MissAction)>,
    config_flows: Vec<FlowSpec>,
}

impl FlowState {
    pub(super) fn new(config: &Config) -> FlowState {
        let table0_miss =
            config.tables.iter().find(|t| t.id == 0).and_then(|t| t.miss.parse().ok()).unwrap_or(MissAction::Normal);
        FlowState {
            store: FlowStore::new(config.switch.max_flows as usize, table0_miss),
            counter_names: Vec::new(),
            activity: HashMap::new(),
            last_expiry_check: Instant::now(),
            config_tables: config.tables.iter().filter_map(|t| Some((t.id, t.miss.parse().ok()?))).collect(),
            // Validated with the config.
            config_flows: config.flows.iter().filter_map(|f| crate::flow::parse_flow(&f.rule).ok()).collect(),
        }
    }
}

impl FlowState {
    /// Flows that match on `in_port=number` or output to it (the first few, as text).
    pub(super) fn flows_using_port(&self, number: u32) -> Vec<String> {
        let mut users = Vec::new();
        for t in self.store.used_tables() {
            for f in self.store.flows_unordered(t) {
                let matches_it = f.spec.matching.exact(slot::IN_PORT) == Some(number as u64);
                if matches_it || f.spec.actions.contains(&Action::Output(number)) {
                    users.push(f.spec.to_string());
                    if users.len() == 5 {
                        return users;
                    }
                }
            }
        }
        users
    }
}

/// A committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxOutcome {
    /// Generation of the snapshot holding the change (the current one if nothing changed).
    pub generation: u64,
    pub added: usize,
    pub modified: usize,
    pub deleted: usize,
}

/// One flow with its counters, for dumps.
#[derive(Debug, Clone)]
pub struct FlowView {
    pub id: u32,
    pub spec: FlowSpec,
    pub packets: u64,
    pub bytes: u64,
    pub created: SystemTime,
    pub duration: Duration,
}

/// One table's state and counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableView {
    pub id: u8,
    pub flows: usize,
    pub miss: MissAction,
    pub lookups: u64,
    pub matched: u64,
    pub missed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedCounter {
    pub name: String,
    pub packets: u64,
}

/// What trace found in one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceStep {
    pub table: u8,
    /// The flow that matched, or None for a miss.
    pub flow: Option<FlowSpec>,
    /// What the table did on a miss.
    pub miss: Option<MissAction>,
    /// The actions (or miss action) as they took effect, in words.
    pub effects: Vec<String>,
}

/// The result of tracing a packet through the pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceResult {
    pub steps: Vec<TraceStep>,
    /// Port numbers the packet (or copies) would leave through.
    pub outputs: Vec<u32>,
    /// Why it would be dropped, if it would.
    pub drop: Option<DropReason>,
    /// The packet's flow key after all changes, as a match text.
    pub final_packet: String,
}

/// An action list's ops, and its `goto_table`.
type Translated = (Arc<[Op]>, Option<u8>);

/// The rules of `flows`, their ops from `translate`. Flows added together share their action
/// list when the actions are the same (`SharedActions`), and stored flows come in the order
/// they were added: a rule whose list is the one before's shares that rule's ops too, with
/// no allocation.
fn compile_rules<'a>(
    flows: impl Iterator<Item = &'a StoredFlow>,
    mut translate: impl FnMut(&[Action]) -> Translated,
) -> Vec<CompiledRule> {
    let mut last: Option<(&Arc<[Action]>, Translated)> = None;
    let mut rules = Vec::with_capacity(flows.size_hint().0);
    crate::dpdk::populate(rules.spare_capacity_mut());
    rules.extend(flows.map(|f| {
        let (ops, goto) = match &last {
            Some((actions, (ops, goto))) if Arc::ptr_eq(actions, &f.spec.actions) => (ops.clone(), *goto),
            _ => {
                let (ops, goto) = translate(&f.spec.actions);
                last = Some((&f.spec.actions, (ops.clone(), goto)));
                (ops, goto)
            }
        };
        CompiledRule {
            id: f.id,
            table: f.spec.table,
            priority: f.spec.priority,
            cookie: f.spec.cookie,
            actions: f.spec.actions.clone(),
            modifies: ops.iter().any(|o| o.changes_key()),
            ops,
            goto,
        }
    }));
    rules
}

impl Switch {
    fn translate(counter_names: &mut Vec<String>, ports: &PortMap, actions: &[Action]) -> Translated {
        let mut goto = None;
        let ops = actions
            .iter()
            .filter_map(|a| {
                Some(match a {
                    // Ports were checked by the store.
                    Action::Output(n) => Op::Output(ports.index_of(*n)?),
                    Action::Normal => Op::Normal,
                    Action::Flood => Op::Flood,
                    Action::InPort => Op::InPort,
                    Action::PushVlan(t) => Op::PushVlan(*t),
                    Action::PopVlan => Op::PopVlan,
                    Action::SetVlanVid(v) => Op::SetVlanVid(*v),
                    Action::SetVlanPcp(p) => Op::SetVlanPcp(*p),
                    Action::SetEthSrc(m) => Op::SetEthSrc(m.to_u64()),
                    Action::SetEthDst(m) => Op::SetEthDst(m.to_u64()),
                    Action::SetIpv4Src(a) => Op::SetIpv4Src(u32::from(*a)),
                    Action::SetIpv4Dst(a) => Op::SetIpv4Dst(u32::from(*a)),
                    Action::SetIpDscp(d) => Op::SetIpDscp(*d),
                    Action::DecTtl => Op::DecTtl,
                    Action::SetTpSrc(p) => Op::SetTpSrc(*p),
                    Action::SetTpDst(p) => Op::SetTpDst(*p),
                    Action::GotoTable(t) => {
                        goto = Some(*t);
                        return None;
                    }
                    Action::Counter(name) => Op::Counter(counter_slot(counter_names, name)),
                    Action::SetTunnelId(v) => Op::SetTunnelId(*v),
                    Action::SetTunDst(a) => Op::SetTunDst(u32::from(*a)),
                })
            })
            .collect();
        (ops, goto)
    }

    fn compile_table(&self, fs: &mut FlowState, ports: &PortMap, t: u8) -> CompiledTable {
        let FlowState { store, counter_names, .. } = fs;
        let rules = compile_rules(store.flows_unordered(t), |actions| Self::translate(counter_names, ports, actions));
        CompiledTable::build(t, rules, store.flows_unordered(t).map(|f| f.spec.matching), store.miss(t))
    }

    /// Applies a transaction: all of it or nothing. On success the change is published as
    /// one new snapshot (nothing is published when nothing changed). The ops are taken one
    /// at a time; an `Err` among them fails the transaction with that error.
    pub fn transact(&self, ops: impl IntoIterator<Item = Result<FlowOp, TxError>>) -> Result<TxOutcome, TxError> {
        let mut fs = self.flows.lock().unwrap();
        self.transact_locked(&mut fs, ops)
    }

    fn transact_locked(
        &self,
        fs: &mut FlowState,
        ops: impl IntoIterator<Item = Result<FlowOp, TxError>>,
    ) -> Result<TxOutcome, TxError> {
        let t0 = Instant::now();
        let current = self.shared.pipeline.load();
        let ports = current.ports.clone();
        let mut room = CounterRoom::default();
        let counter_names = &fs.counter_names;
        let ops = ops.into_iter().enumerate().map(|(i, op)| {
            let op = op?;
            room.check(counter_names, i, &op)?;
            Ok(op)
        });
        let summary = fs.store.apply(ops, &|n| ports.index_of(n).is_some(), &|id| current.counters.read(id))?;
        let outcome = |generation| TxOutcome {
            generation,
            added: summary.added,
            modified: summary.modified,
            deleted: summary.deleted,
        };
        if summary.tables.is_empty() {
            return Ok(outcome(current.generation));
        }
        let t1 = Instant::now();
        let mut tables: Vec<Option<Arc<CompiledTable>>> =
            (0..MAX_TABLES).map(|t| current.flows.table_arc(t as u8)).collect();
        for &t in &summary.tables {
            tables[t as usize] = Some(Arc::new(self.compile_table(fs, &ports, t)));
        }
        let flows = Arc::new(FlowTables::new(tables));
        let counters = current.counters.with_capacity(fs.store.id_capacity() as usize);
        drop(current);
        let t2 = Instant::now();
        let generation = self.publish(|p, g| Pipeline { generation: g, flows, counters, ..p.clone() });
        fs.store.retire(summary.freed_ids.clone(), generation);
        tracing::debug!(
            ops = summary.ops,
            generation,
            apply_ms = (t1 - t0).as_secs_f64() * 1e3,
            compile_ms = (t2 - t1).as_secs_f64() * 1e3,
            "transaction published"
        );
        Ok(outcome(generation))
    }

    /// Loads the `[[table]]` and `[[flow]]` sections of the config (at start).
    pub(super) fn load_config_flows(&self) -> Result<(), String> {
        let mut fs = self.flows.lock().unwrap();
        let mut ops: Vec<FlowOp> =
            fs.config_tables.iter().map(|&(table, miss)| FlowOp::SetMiss { table, miss }).collect();
        ops.extend(fs.config_flows.iter().cloned().map(FlowOp::Add));
        if ops.is_empty() {
            return Ok(());
        }
        let n_tables = fs.config_tables.len();
        self.transact_locked(&mut fs, ops.into_iter().map(Ok)).map(|_| ()).map_err(|e| {
            if e.op >= n_tables {
                format!("flow {}: {}: {}", e.op - n_tables + 1, e.field, e.message)
            } else {
                e.to_string()
            }
        })
    }

    /// Flows the filter selects, with counters.
    pub fn dump_flows(&self, filter: &FlowFilter, strict: bool) -> Vec<FlowView> {
        let fs = self.flows.lock().unwrap();
        let current = self.shared.pipeline.load();
        let now = Instant::now();
        fs.store
            .select(filter, strict)
            .into_iter()
            .map(|f| {
                let (p, b) = current.counters.read(f.id);
                FlowView {
                    id: f.id,
                    spec: f.spec.clone(),
                    packets: p.wrapping_sub(f.baseline.0),
                    bytes: b.wrapping_sub(f.baseline.1),
                    created: f.created,
                    duration: now.duration_since(f.created_mono),
                }
            })
            .collect()
    }

    /// Tables in use (table 0, tables with flows or a miss setting), with counters.
    pub fn tables(&self) -> Vec<TableView> {
        let fs = self.flows.lock().unwrap();
        fs.store
            .used_tables()
            .into_iter()
            .map(|t| {
                let (mut matched, mut missed) = (0, 0);
                for w in &self.workers {
                    matched += w.stats.tables[t as usize].matched.load(Relaxed);
                    missed += w.stats.tables[t as usize].missed.load(Relaxed);
                }
                TableView {
                    id: t,
                    flows: fs.store.flow_count(t),
                    miss: fs.store.miss(t),
                    lookups: matched + missed,
                    matched,
                    missed,
                }
            })
            .collect()
    }

    /// Named counters (`counter:NAME` actions) summed over workers.
    pub fn named_counters(&self) -> Vec<NamedCounter> {
        let fs = self.flows.lock().unwrap();
        fs.counter_names
            .iter()
            .enumerate()
            .map(|(i, name)| NamedCounter {
                name: name.clone(),
                packets: self.workers.iter().map(|w| w.stats.named[i].load(Relaxed)).sum(),
            })
            .collect()
    }

    /// Exact-match cache hits and misses summed over workers.
    pub fn emc_totals(&self) -> (u64, u64) {
        self.workers
            .iter()
            .fold((0, 0), |(h, m), w| (h + w.stats.emc_hits.load(Relaxed), m + w.stats.emc_misses.load(Relaxed)))
    }

    /// Removes expired flows and makes freed flow ids reusable (called by `maintain`).
    pub(super) fn maintain_flows(&self, oldest_generation: u64) {
        let mut fs = self.flows.lock().unwrap();
        fs.store.reclaim(oldest_generation);
        let now = Instant::now();
        if now.duration_since(fs.last_expiry_check) < Duration::from_secs(1) {
            return;
        }
        fs.last_expiry_check = now;
        let current = self.shared.pipeline.load();
        // Track when each idle-timed flow last saw a packet.
        let idle: Vec<(u32, u64, Instant)> = fs
            .store
            .select(&FlowFilter::default(), false)
            .into_iter()
            .filter(|f| f.spec.idle_timeout != 0)
            .map(|f| (f.id, current.counters.read(f.id).0.wrapping_sub(f.baseline.0), f.created_mono))
            .collect();
        let mut seen = HashMap::new();
        for (id, packets, created) in idle {
            let entry = match fs.activity.get(&id) {
                Some(&(p, t)) if p == packets => (p, t),
                Some(_) => (packets, now),
                None => (packets, created),
            };
            seen.insert(id, entry);
        }
        fs.activity = seen;
        let activity = &fs.activity;
        let expired = fs.store.expired(now, &|id| activity.get(&id).map_or(now, |a| a.1));
        if expired.is_empty() {
            return;
        }
        let ops = expired.into_iter().map(|(table, priority, matching)| {
            Ok(FlowOp::Delete {
                filter: FlowFilter { table: Some(table), matching, priority: Some(priority), ..Default::default() },
                strict: true,
            })
        });
        if let Err(e) = self.transact_locked(&mut fs, ops) {
            tracing::warn!("removing expired flows failed: {e}");
        }
    }

    /// Traces a packet (its flow key, arriving on port number `in_port`) through the current
    /// pipeline without sending it or learning anything.
    pub fn trace(&self, mut key: FlowKey) -> TraceResult {
        let current = self.shared.pipeline.load();
        let flows = &current.flows;
        let in_port = key.in_port() as u32;
        let in_idx = current.ports.index_of(in_port);
        let path = flows.classify(&mut key.clone());
        let mut result =
            TraceResult { steps: Vec::new(), outputs: Vec::new(), drop: None, final_packet: String::new() };
        let mut sent = false;
        for step in path.steps() {
            let mut ts = TraceStep { table: step.table(), flow: None, miss: None, effects: Vec::new() };
            match flows.rule(*step).zip(flows.rule_match(*step)) {
                Some((rule, matching)) => {
                    ts.flow = Some(FlowSpec {
                        table: rule.table,
                        priority: rule.priority,
                        cookie: rule.cookie,
                        idle_timeout: 0,
                        hard_timeout: 0,
                        matching,
                        actions: rule.actions.clone(),
                    });
                    for op in rule.ops.iter() {
                        match op {
                            Op::Output(p) if Some(*p) == in_idx => {
                                ts.effects.push(format!("output:{in_port}: skipped, it is the ingress port"));
                            }
                            Op::Output(p) => {
                                let n = current.ports.number(*p) as u32;
                                ts.effects.push(format!("output to port {n}"));
                                result.outputs.push(n);
                                sent = true;
                            }
                            Op::InPort => {
                                ts.effects.push(format!("output to the ingress port {in_port}"));
                                result.outputs.push(in_port);
                                sent = true;
                            }
                            Op::Flood => {
                                let ports = self.flood_numbers(&current, in_idx);
                                ts.effects.push(format!("flood to ports {ports:?}"));
                                result.outputs.extend(ports);
                                sent = true;
                            }
                            Op::Normal => {
                                self.trace_normal(&current, &key, in_idx, &mut ts, &mut result);
                                sent = true;
                            }
                            Op::DecTtl if slot::IP_TTL.get(&key) <= 1 => {
                                ts.effects.push("dec_ttl: TTL exceeded, dropped".into());
                                result.drop = Some(DropReason::TtlExceeded);
                                result.steps.push(ts);
                                result.final_packet = key_text(&key);
                                return result;
                            }
                            Op::Counter(c) => {
                                let fs = self.flows.lock().unwrap();
                                let name = fs.counter_names.get(*c as usize).cloned().unwrap_or_default();
                                ts.effects.push(format!("count in counter '{name}'"));
                            }
                            op => {
                                op.apply_to_key(&mut key);
                                ts.effects.push(describe_change(op));
                            }
                        }
                    }
                    if let Some(t) = rule.goto {
                        ts.effects.push(format!("continue in table {t}"));
                    }
                }
                None => {
                    let miss = flows.miss(step.table());
                    ts.miss = Some(miss);
                    match miss {
                        MissAction::Drop => {
                            ts.effects.push("no flow matched: table miss, dropped".into());
                            result.drop = Some(DropReason::TableMiss);
                        }
                        MissAction::Normal => {
                            ts.effects.push("no flow matched: L2 switch (normal)".into());
                            self.trace_normal(&current, &key, in_idx, &mut ts, &mut result);
                            sent = true;
                        }
                        MissAction::Goto(t) => ts.effects.push(format!("no flow matched: continue in table {t}")),
                    }
                }
            }
            result.steps.push(ts);
        }
        if path.too_deep {
            result.drop = Some(DropReason::PipelineTooDeep);
        } else if result.drop.is_none() && !sent {
            result.drop = Some(DropReason::FlowDrop);
        }
        result.final_packet = key_text(&key);
        result
    }

    fn flood_numbers(&self, p: &Pipeline, in_idx: Option<PortIdx>) -> Vec<u32> {
        let all: Vec<u32> = self.port_names().into_iter().map(|(_, _, n)| n).collect();
        match in_idx {
            Some(i) => p.flood_ports(i).iter().map(|&x| p.ports.number(x) as u32).collect(),
            None => all,
        }
    }

    /// What the L2 switch would do, without learning.
    fn trace_normal(
        &self,
        p: &Pipeline,
        key: &FlowKey,
        in_idx: Option<PortIdx>,
        ts: &mut TraceStep,
        r: &mut TraceResult,
    ) {
        let tci = slot::VLAN_TCI.get(key) as u16;
        let vlan = if tci & VLAN_PRESENT != 0 { tci & VLAN_VID_MASK } else { 0 };
        let h = L2Headers { vlan, src: slot::ETH_SRC.get(key), dst: slot::ETH_DST.get(key) };
        let dst = MacAddr::from_u64(h.dst);
        if !MacAddr::u64_is_valid_source(h.src) {
            ts.effects.push("normal: invalid source MAC, dropped".into());
            r.drop = Some(DropReason::InvalidSourceMac);
        } else if MacAddr::u64_is_multicast(h.dst) {
            if MacAddr::u64_is_link_local_reserved(h.dst) && !p.l2.forward_link_local {
                ts.effects.push(format!("normal: {dst} is link-local, dropped"));
                r.drop = Some(DropReason::LinkLocalDestination);
            } else {
                let ports = self.flood_numbers(p, in_idx);
                ts.effects.push(format!("normal: {dst} is a group address, flood to ports {ports:?}"));
                r.outputs.extend(ports);
            }
        } else {
            match p.mac_table.lookup_u64(h.vlan, h.dst) {
                Some(port) if Some(port) == in_idx => {
                    ts.effects.push(format!("normal: {dst} is on the ingress port, dropped"));
                    r.drop = Some(DropReason::DestinationOnIngressPort);
                }
                Some(port) => {
                    let n = p.ports.number(port) as u32;
                    ts.effects.push(format!("normal: {dst} learned on port {n}, output there"));
                    r.outputs.push(n);
                }
                None => {
                    let ports = self.flood_numbers(p, in_idx);
                    ts.effects.push(format!("normal: {dst} unknown in VLAN {}, flood to ports {ports:?}", h.vlan));
                    r.outputs.extend(ports);
                }
            }
        }
    }
}

fn describe_change(op: &Op) -> String {
    match *op {
        Op::PushVlan(t) => format!("push VLAN tag {t:#06x}"),
        Op::PopVlan => "pop the VLAN tag".into(),
        Op::SetVlanVid(v) => format!("set VLAN id {v}"),
        Op::SetVlanPcp(p) => format!("set VLAN priority {p}"),
        Op::SetEthSrc(m) => format!("set eth src {}", MacAddr::from_u64(m)),
        Op::SetEthDst(m) => format!("set eth dst {}", MacAddr::from_u64(m)),
        Op::SetIpv4Src(a) => format!("set IPv4 src {}", std::net::Ipv4Addr::from(a)),
        Op::SetIpv4Dst(a) => format!("set IPv4 dst {}", std::net::Ipv4Addr::from(a)),
        Op::SetIpDscp(d) => format!("set DSCP {d}"),
        Op::DecTtl => "decrement TTL".into(),
        Op::SetTpSrc(p) => format!("set L4 src port {p}"),
        Op::SetTpDst(p) => format!("set L4 dst port {p}"),
        Op::SetTunnelId(v) => format!("set tunnel id {v:#x}"),
        Op::SetTunDst(a) => format!("set tunnel destination {}", std::net::Ipv4Addr::from(a)),
        _ => format!("{op:?}"),
    }
}

/// A key as match text (its non-zero fields).
pub(super) fn key_text(key: &FlowKey) -> String {
    crate::flow::Match::of_key(key).to_string()
}

fn counter_slot(counter_names: &mut Vec<String>, name: &str) -> u16 {
    match counter_names.iter().position(|n| n == name) {
        Some(i) => i as u16,
        None => {
            counter_names.push(name.to_string());
            (counter_names.len() - 1) as u16
        }
    }
}

/// Refuses a transaction that would need more named counters than there are slots: the
/// names its ops add so far.
#[derive(Default)]
struct CounterRoom {
    new: Vec<String>,
}

impl CounterRoom {
    fn check(&mut self, counter_names: &[String], i: usize, op: &FlowOp) -> Result<(), TxError> {
        let actions = match op {
            FlowOp::Add(s) => &s.actions[..],
            FlowOp::Modify { actions, .. } => &actions[..],
            _ => return Ok(()),
        };
        for (j, a) in actions.iter().enumerate() {
            if let Action::Counter(name) = a {
                if !counter_names.iter().any(|n| n == name) && !self.new.contains(name) {
                    self.new.push(name.clone());
                    if counter_names.len() + self.new.len() > MAX_NAMED_COUNTERS {
                        return Err(TxError {
                            op: i,
                            field: format!("actions[{j}]"),
                            message: format!(
                                "counter:{name}: the switch has room for {MAX_NAMED_COUNTERS} named counters"
                            ),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::parse::{parse_flow, parse_flow_sharing, SharedActions};

    fn stored(id: u32, spec: FlowSpec) -> StoredFlow {
        StoredFlow { id, spec, created: SystemTime::now(), created_mono: Instant::now(), baseline: (0, 0) }
    }

    #[test]
    fn rules_with_a_shared_action_list_share_their_ops() {
        let mut shared = SharedActions::default();
        let flows: Vec<StoredFlow> = [
            "priority=1,in_port=1,actions=output:2",
            "priority=2,in_port=2,actions=output:2",
            "priority=3,in_port=3,actions=dec_ttl,goto_table:1",
            "priority=4,in_port=4,actions=output:2",
        ]
        .iter()
        .enumerate()
        .map(|(i, t)| stored(i as u32, parse_flow_sharing(t, &mut shared).unwrap()))
        // Equal actions, parsed apart: a list of its own.
        .chain([stored(4, parse_flow("priority=5,in_port=5,actions=output:2").unwrap())])
        .collect();
        let mut translated = 0;
        let rules = compile_rules(flows.iter(), |actions| {
            translated += 1;
            let goto = actions.iter().find_map(|a| if let Action::GotoTable(t) = a { Some(*t) } else { None });
            let ops: Arc<[Op]> = actions.iter().filter(|a| **a == Action::DecTtl).map(|_| Op::DecTtl).collect();
            (ops, goto)
        });
        assert_eq!(translated, 4, "the second rule reuses the first's ops; the others differ from the one before");
        assert!(Arc::ptr_eq(&rules[0].ops, &rules[1].ops));
        assert!(!Arc::ptr_eq(&rules[1].ops, &rules[2].ops));
        assert_eq!((rules[2].goto, &*rules[2].ops, rules[2].modifies), (Some(1), &[Op::DecTtl][..], true));
        assert_eq!((rules[1].goto, rules[1].modifies), (None, false));
        assert!(Arc::ptr_eq(&rules[3].actions, &rules[0].actions));
        assert!(!Arc::ptr_eq(&rules[4].actions, &rules[0].actions));
        assert_eq!(
            rules.iter().map(|r| (r.id, r.priority)).collect::<Vec<_>>(),
            [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5)]
        );
    }
}
