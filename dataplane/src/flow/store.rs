//! The control plane's flow tables: the flows users asked for, changed by transactions.
//!
//! A transaction (adds, modifies, deletes, miss settings) is applied whole or not at all: each
//! operation is checked and applied in order with an undo log; the first error undoes
//! everything and names the operation and the field. What changed is reported per table so
//! only those tables are compiled again.
//!
//! Thread-safety: owned by the switch behind a mutex; the datapath never sees it (it sees the
//! compiled snapshot).

use std::collections::BTreeSet;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use hashbrown::hash_table::{Entry, HashTable};
use rustc_hash::FxBuildHasher;

use super::action::{validate_actions, Action, MAX_TABLES};
use super::compiled::MissAction;
use super::matching::Match;
use super::parse::{FlowFilter, FlowSpec};

/// A flow as the store keeps it.
#[derive(Debug, Clone)]
pub struct StoredFlow {
    /// Stable id: slot of its counters in every worker.
    pub id: u32,
    pub spec: FlowSpec,
    pub created: SystemTime,
    pub created_mono: Instant,
    /// Counter values of the slot when the flow took it (slots are reused).
    pub baseline: (u64, u64),
}

/// One change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlowOp {
    /// Adds a flow, replacing one with the same table, priority and match (its counters
    /// start again from zero).
    Add(FlowSpec),
    /// Replaces the actions of the selected flows (counters kept). Strict: the exact
    /// priority and match; otherwise every flow at least as specific as the filter.
    Modify { filter: FlowFilter, actions: Arc<[Action]>, strict: bool },
    /// Removes the selected flows.
    Delete { filter: FlowFilter, strict: bool },
    /// Sets what a table does with packets no flow matches.
    SetMiss { table: u8, miss: MissAction },
}

/// Why a transaction was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxError {
    /// Index of the operation.
    pub op: usize,
    /// The field of the operation at fault (`match`, `actions[2]`, `table`, ...).
    pub field: String,
    pub message: String,
}

impl std::fmt::Display for TxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ops[{}].{}: {}", self.op, self.field, self.message)
    }
}

impl std::error::Error for TxError {}

/// What a committed transaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxSummary {
    pub added: usize,
    pub modified: usize,
    pub deleted: usize,
    /// Ops applied.
    pub ops: usize,
    /// Tables to compile again.
    pub tables: BTreeSet<u8>,
    /// Flow ids no longer used: their counter slots may be reused once every worker has
    /// moved past the snapshot that drops them.
    pub freed_ids: Vec<u32>,
}

type FlowKeyInTable = (u16, Match);

#[derive(Default, Clone)]
struct TableState {
    flows: FlowMap,
    miss: Option<MissAction>,
}

/// One table's flows: a dense array (what compiling and dumps walk) and a hash index of
/// positions in it, keyed by priority and match. The key is not stored a second time and an
/// index slot is 4 bytes: 64k flows take 18 MB, where a map from key to flow took 60 MB
/// (mostly empty slots of 456 bytes), all of it written, page by page, by a big transaction.
#[derive(Default, Clone)]
struct FlowMap {
    flows: Vec<StoredFlow>,
    index: HashTable<u32>,
}

fn key_hash(key: &FlowKeyInTable) -> u64 {
    FxBuildHasher.hash_one(key)
}

fn key_of(flow: &StoredFlow) -> FlowKeyInTable {
    (flow.spec.priority, flow.spec.matching)
}

/// The index hash of a stored flow (what rehashing and re-pointing need).
fn flow_hash(flow: &StoredFlow) -> u64 {
    key_hash(&key_of(flow))
}

fn has_key(flow: &StoredFlow, key: &FlowKeyInTable) -> bool {
    flow.spec.priority == key.0 && flow.spec.matching == key.1
}

impl FlowMap {
    fn len(&self) -> usize {
        self.flows.len()
    }

    fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    fn values(&self) -> std::slice::Iter<'_, StoredFlow> {
        self.flows.iter()
    }

    fn reserve(&mut self, additional: usize) {
        // A table loaded in one transaction gets no doubled array; later growth is amortized
        // (adding flows one at a time must not copy the table each time).
        if self.flows.is_empty() {
            self.flows.reserve_exact(additional);
        } else {
            self.flows.reserve(additional);
        }
        crate::dpdk::populate(&mut self.flows.spare_capacity_mut()[..additional]);
        let flows = &self.flows;
        self.index.reserve(additional, |&i| flow_hash(&flows[i as usize]));
    }

    /// Where the flow with key hash `hash` that `is` picks sits.
    fn position_where(&self, hash: u64, is: impl Fn(&StoredFlow) -> bool) -> Option<usize> {
        self.index.find(hash, |&i| is(&self.flows[i as usize])).map(|&i| i as usize)
    }

    fn get_mut(&mut self, key: &FlowKeyInTable) -> Option<&mut StoredFlow> {
        self.position_where(key_hash(key), |f| has_key(f, key)).map(|i| &mut self.flows[i])
    }

    /// Adds `flow`, whose key hashes to `hash`, under its key; returns the flow it replaced.
    fn insert(&mut self, hash: u64, flow: StoredFlow) -> Option<StoredFlow> {
        let key = key_of(&flow);
        let flows = &self.flows;
        let next = flows.len() as u32;
        let found =
            match self.index.entry(hash, |&i| has_key(&flows[i as usize], &key), |&i| flow_hash(&flows[i as usize])) {
                Entry::Occupied(e) => Some(*e.get() as usize),
                Entry::Vacant(e) => {
                    e.insert(next);
                    None
                }
            };
        match found {
            Some(i) => Some(std::mem::replace(&mut self.flows[i], flow)),
            None => {
                self.flows.push(flow);
                None
            }
        }
    }

    fn remove(&mut self, key: &FlowKeyInTable) -> Option<StoredFlow> {
        self.remove_where(key_hash(key), |f| has_key(f, key))
    }

    /// Removes the flow with key hash `hash` that `is` picks.
    fn remove_where(&mut self, hash: u64, is: impl Fn(&StoredFlow) -> bool) -> Option<StoredFlow> {
        let flows = &self.flows;
        let (i, _) = self.index.find_entry(hash, |&i| is(&flows[i as usize])).ok()?.remove();
        let (i, last) = (i as usize, self.flows.len() - 1);
        if i != last {
            // The last flow moves into the hole: its index slot follows it.
            let slot = self
                .index
                .find_mut(flow_hash(&self.flows[last]), |&j| j as usize == last)
                .expect("every flow is indexed");
            *slot = i as u32;
        }
        Some(self.flows.swap_remove(i))
    }
}

/// One entry per add (the largest part of big transactions), its flow boxed where it must be
/// kept: an add logs 24 bytes, the new flow's id and key hash, which find it again (ids are
/// unique): 100k adds log 2.4 MB, where a logged key took 20 MB. The log is not reallocated.
enum Undo {
    /// A flow was added with a new id `id`, where `replaced` was (if any).
    Added {
        table: u8,
        hash: u64,
        id: u32,
        replaced: Option<Box<StoredFlow>>,
    },
    /// A flow was changed or removed: put it back.
    Restore(u8, Box<StoredFlow>),
    Miss(u8, Option<MissAction>),
}

/// The desired flow tables.
pub struct FlowStore {
    tables: Vec<TableState>,
    /// Miss action of tables that have none set.
    default_miss: Vec<MissAction>,
    next_id: u32,
    free_ids: Vec<u32>,
    /// Ids waiting for every worker to pass a generation: (generation, id).
    retired: Vec<(u64, u32)>,
    max_flows: usize,
    count: usize,
}

/// Whether `flow` is selected by `filter` (OpenFlow semantics; see `FlowOp`).
pub fn selects(filter: &FlowFilter, strict: bool, table: u8, flow: &FlowSpec) -> bool {
    if filter.table.is_some_and(|t| t != table) {
        return false;
    }
    if let Some((v, m)) = filter.cookie {
        if flow.cookie & m != v {
            return false;
        }
    }
    if let Some(p) = filter.out_port {
        if !flow.actions.contains(&Action::Output(p)) {
            return false;
        }
    }
    if strict {
        flow.priority == filter.priority.unwrap_or(super::parse::DEFAULT_PRIORITY) && flow.matching == filter.matching
    } else {
        filter.matching.covers(&flow.matching)
    }
}

impl FlowStore {
    /// A store holding at most `max_flows` flows; table 0 misses to `table0_miss`, the others
    /// drop.
    pub fn new(max_flows: usize, table0_miss: MissAction) -> FlowStore {
        let mut default_miss = vec![MissAction::Drop; MAX_TABLES];
        default_miss[0] = table0_miss;
        FlowStore {
            tables: vec![TableState::default(); MAX_TABLES],
            default_miss,
            next_id: 0,
            free_ids: Vec::new(),
            retired: Vec::new(),
            max_flows,
            count: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn miss(&self, table: u8) -> MissAction {
        self.tables[table as usize].miss.unwrap_or(self.default_miss[table as usize])
    }

    /// Tables that have flows or a miss action set.
    pub fn used_tables(&self) -> Vec<u8> {
        (0..MAX_TABLES as u8)
            .filter(|&t| !self.tables[t as usize].flows.is_empty() || self.tables[t as usize].miss.is_some() || t == 0)
            .collect()
    }

    /// The flows of one table, in no particular order (for compiling).
    pub fn flows_unordered(&self, table: u8) -> impl Iterator<Item = &StoredFlow> {
        self.tables[table as usize].flows.values()
    }

    /// The flows of one table, best priority first.
    pub fn flows(&self, table: u8) -> Vec<&StoredFlow> {
        let mut v: Vec<&StoredFlow> = self.tables[table as usize].flows.values().collect();
        v.sort_by(|a, b| b.spec.priority.cmp(&a.spec.priority).then(a.id.cmp(&b.id)));
        v
    }

    pub fn flow_count(&self, table: u8) -> usize {
        self.tables[table as usize].flows.len()
    }

    /// Every flow the filter selects, by table then priority.
    pub fn select(&self, filter: &FlowFilter, strict: bool) -> Vec<&StoredFlow> {
        let mut out = Vec::new();
        for t in 0..MAX_TABLES as u8 {
            if filter.table.is_some_and(|f| f != t) {
                continue;
            }
            out.extend(self.flows(t).into_iter().filter(|f| selects(filter, strict, t, &f.spec)));
        }
        out
    }

    /// A free flow id; the caller logs it for undo.
    fn alloc_id(&mut self) -> u32 {
        self.free_ids.pop().unwrap_or_else(|| {
            self.next_id += 1;
            self.next_id - 1
        })
    }

    /// Applies `ops` in order, all or nothing. `port_exists` says which output port numbers
    /// are valid; `baseline` reads a counter slot's current (packets, bytes). The ops are
    /// taken one at a time (a caller may parse each as it comes, and never hold them all);
    /// an `Err` among them undoes what came before and is returned as it is.
    pub fn apply(
        &mut self,
        ops: impl IntoIterator<Item = Result<FlowOp, TxError>>,
        port_exists: &dyn Fn(u32) -> bool,
        baseline: &dyn Fn(u32) -> (u64, u64),
    ) -> Result<TxSummary, TxError> {
        let ops = ops.into_iter();
        let mut undo = Vec::with_capacity(ops.size_hint().0);
        crate::dpdk::populate(undo.spare_capacity_mut());
        let mut sum = TxSummary::default();
        if let Err(e) = self.apply_each(ops, port_exists, baseline, &mut undo, &mut sum) {
            self.rollback(undo);
            return Err(e);
        }
        // Ids of replaced and deleted flows go free after the grace period; ids taken and
        // given back within this transaction never reached a worker.
        for u in &undo {
            match u {
                Undo::Restore(_, f) | Undo::Added { replaced: Some(f), .. } => sum.freed_ids.push(f.id),
                _ => {}
            }
        }
        sum.freed_ids.sort_unstable();
        sum.freed_ids.dedup();
        if !sum.freed_ids.is_empty() {
            // Modified flows were saved in the undo log too, but keep their ids.
            let live: BTreeSet<u32> =
                sum.tables.iter().flat_map(|t| self.tables[*t as usize].flows.values().map(|f| f.id)).collect();
            sum.freed_ids.retain(|id| !live.contains(id));
        }
        Ok(sum)
    }

    /// `apply` without the undoing: what is done so far is in `undo` when it fails.
    fn apply_each(
        &mut self,
        ops: impl Iterator<Item = Result<FlowOp, TxError>>,
        port_exists: &dyn Fn(u32) -> bool,
        baseline: &dyn Fn(u32) -> (u64, u64),
        undo: &mut Vec<Undo>,
        sum: &mut TxSummary,
    ) -> Result<(), TxError> {
        // A table grows once for the ops still to come when the first add reaches it, not
        // step by step (100k adds would rehash a few hundred MB as the table doubles).
        // Reserved room for adds that go elsewhere costs address space, not memory.
        let mut reserved = [false; MAX_TABLES];
        let now = (SystemTime::now(), Instant::now());
        let mut ops = ops.enumerate();
        while let Some((i, op)) = ops.next() {
            sum.ops = i + 1;
            let op = op?;
            if let FlowOp::Add(spec) = &op {
                if let Some(done @ false) = reserved.get_mut(spec.table as usize) {
                    *done = true;
                    self.tables[spec.table as usize].flows.reserve(1 + ops.size_hint().0);
                }
            }
            self.apply_one(op, port_exists, baseline, now, undo, sum).map_err(|(field, message)| TxError {
                op: i,
                field,
                message,
            })?;
        }
        if self.count > self.max_flows {
            return Err(TxError {
                op: sum.ops.saturating_sub(1),
                field: "flow".into(),
                message: format!("the switch holds at most {} flows", self.max_flows),
            });
        }
        Ok(())
    }

    fn apply_one(
        &mut self,
        op: FlowOp,
        port_exists: &dyn Fn(u32) -> bool,
        baseline: &dyn Fn(u32) -> (u64, u64),
        (now, now_mono): (SystemTime, Instant),
        undo: &mut Vec<Undo>,
        sum: &mut TxSummary,
    ) -> Result<(), (String, String)> {
        match op {
            FlowOp::Add(spec) => {
                if spec.table as usize >= MAX_TABLES {
                    return Err(("table".into(), format!("{}: tables are 0 to {}", spec.table, MAX_TABLES - 1)));
                }
                if let Some((field, pre)) = spec.matching.unmet_prerequisite() {
                    return Err((
                        format!("match.{}", field.name()),
                        format!("needs {} in the match (OpenFlow prerequisite)", pre.hint()),
                    ));
                }
                validate_actions(spec.table, &spec.matching, &spec.actions, port_exists)
                    .map_err(|e| (format!("actions[{}]", e.index), e.message))?;
                let id = self.alloc_id();
                let (table, hash) = (spec.table, key_hash(&(spec.priority, spec.matching)));
                let flow = StoredFlow { id, spec, created: now, created_mono: now_mono, baseline: baseline(id) };
                let replaced = self.tables[table as usize].flows.insert(hash, flow).map(Box::new);
                if replaced.is_none() {
                    self.count += 1;
                }
                undo.push(Undo::Added { table, hash, id, replaced });
                sum.added += 1;
                sum.tables.insert(table);
            }
            FlowOp::Modify { filter, actions, strict } => {
                for t in 0..MAX_TABLES as u8 {
                    if filter.table.is_some_and(|f| f != t) {
                        continue;
                    }
                    let keys: Vec<FlowKeyInTable> = self.tables[t as usize]
                        .flows
                        .values()
                        .filter(|f| selects(&filter, strict, t, &f.spec))
                        .map(key_of)
                        .collect();
                    for k in keys {
                        let flow = self.tables[t as usize].flows.get_mut(&k).expect("selected");
                        validate_actions(t, &flow.spec.matching, &actions, port_exists).map_err(|e| {
                            (format!("actions[{}]", e.index), format!("{} (for the flow {})", e.message, flow.spec))
                        })?;
                        undo.push(Undo::Restore(t, Box::new(flow.clone())));
                        flow.spec.actions = actions.clone();
                        sum.modified += 1;
                        sum.tables.insert(t);
                    }
                }
            }
            FlowOp::Delete { filter, strict } => {
                for t in 0..MAX_TABLES as u8 {
                    if filter.table.is_some_and(|f| f != t) {
                        continue;
                    }
                    let table = &mut self.tables[t as usize].flows;
                    let keys: Vec<FlowKeyInTable> =
                        table.values().filter(|f| selects(&filter, strict, t, &f.spec)).map(key_of).collect();
                    for k in keys {
                        let flow = table.remove(&k).expect("selected");
                        self.count -= 1;
                        undo.push(Undo::Restore(t, Box::new(flow)));
                        sum.deleted += 1;
                        sum.tables.insert(t);
                    }
                }
            }
            FlowOp::SetMiss { table, miss } => {
                if table as usize >= MAX_TABLES {
                    return Err(("table".into(), format!("{table}: tables are 0 to {}", MAX_TABLES - 1)));
                }
                if let MissAction::Goto(next) = miss {
                    if next <= table || next as usize >= MAX_TABLES {
                        return Err(("miss".into(), format!("goto_table:{next} must go forward from table {table}")));
                    }
                }
                let state = &mut self.tables[table as usize];
                undo.push(Undo::Miss(table, state.miss));
                state.miss = Some(miss);
                sum.tables.insert(table);
            }
        }
        Ok(())
    }

    fn rollback(&mut self, undo: Vec<Undo>) {
        for u in undo.into_iter().rev() {
            match u {
                Undo::Added { table, hash, id, replaced } => {
                    let flows = &mut self.tables[table as usize].flows;
                    match replaced {
                        // Same key: the old flow goes back into the new one's place.
                        Some(old) => {
                            let i = flows.position_where(hash, |f| f.id == id).expect("added flow");
                            flows.flows[i] = *old;
                        }
                        None => {
                            flows.remove_where(hash, |f| f.id == id).expect("added flow");
                            self.count -= 1;
                        }
                    }
                    self.free_ids.push(id);
                }
                Undo::Restore(t, f) => {
                    let hash = flow_hash(&f);
                    if self.tables[t as usize].flows.insert(hash, *f).is_none() {
                        self.count += 1;
                    }
                }
                Undo::Miss(t, m) => self.tables[t as usize].miss = m,
            }
        }
    }

    /// Ids freed by a transaction published as `generation`.
    pub fn retire(&mut self, ids: Vec<u32>, generation: u64) {
        self.retired.extend(ids.into_iter().map(|id| (generation, id)));
    }

    /// Makes ids reusable whose generation every worker has passed (`oldest` is the oldest
    /// generation any worker still runs).
    pub fn reclaim(&mut self, oldest: u64) {
        let (free, keep): (Vec<_>, Vec<_>) = self.retired.drain(..).partition(|(g, _)| *g <= oldest);
        self.retired = keep;
        self.free_ids.extend(free.into_iter().map(|(_, id)| id));
    }

    /// Highest id ever handed out, plus one: the counter slots workers need.
    pub fn id_capacity(&self) -> u32 {
        self.next_id
    }

    /// Flows whose hard timeout passed, or idle timeout passed since their counters last
    /// moved (`last_active` gives, per id, when its packet count last changed).
    pub fn expired(&self, now: Instant, last_active: &dyn Fn(u32) -> Instant) -> Vec<(u8, u16, Match)> {
        let mut out = Vec::new();
        for (t, state) in self.tables.iter().enumerate() {
            for f in state.flows.values() {
                let s = &f.spec;
                let hard = s.hard_timeout != 0 && now.duration_since(f.created_mono).as_secs() >= s.hard_timeout as u64;
                let idle =
                    s.idle_timeout != 0 && now.duration_since(last_active(f.id)).as_secs() >= s.idle_timeout as u64;
                if hard || idle {
                    out.push((t as u8, s.priority, s.matching));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::parse::{parse_filter, parse_flow};

    fn add(text: &str) -> FlowOp {
        FlowOp::Add(parse_flow(text).unwrap())
    }

    impl FlowStore {
        /// `apply` of a slice of ops, each taken as it is (none fails to come).
        fn apply_all(
            &mut self,
            ops: &[FlowOp],
            port_exists: &dyn Fn(u32) -> bool,
            baseline: &dyn Fn(u32) -> (u64, u64),
        ) -> Result<TxSummary, TxError> {
            self.apply(ops.iter().cloned().map(Ok), port_exists, baseline)
        }
    }

    fn store() -> FlowStore {
        FlowStore::new(1000, MissAction::Normal)
    }

    fn ports(p: u32) -> bool {
        p <= 4
    }

    fn zero(_: u32) -> (u64, u64) {
        (0, 0)
    }

    #[test]
    fn an_error_among_the_ops_undoes_those_before_it_and_comes_back_as_it_is() {
        let mut s = store();
        s.apply_all(&[add("priority=1,in_port=1,actions=output:2")], &ports, &zero).unwrap();
        let snapshot = |s: &FlowStore| s.flows(0).iter().map(|f| (f.id, f.spec.clone())).collect::<Vec<_>>();
        let before = snapshot(&s);
        let bad = TxError { op: 2, field: String::new(), message: "texts[2]: unknown field 'bogus'".into() };
        let ops = vec![
            Ok(add("priority=1,in_port=1,actions=output:3")),
            Ok(add("priority=2,in_port=2,actions=drop")),
            Err(bad.clone()),
            Ok(add("priority=3,in_port=3,actions=drop")),
        ];
        assert_eq!(s.apply(ops, &ports, &zero).unwrap_err(), bad);
        assert_eq!(snapshot(&s), before, "the replaced flow is back, the added one gone, nothing after the error");
    }

    #[test]
    fn add_replace_modify_delete() {
        let mut s = store();
        let r = s
            .apply_all(
                &[
                    add("priority=10,in_port=1,actions=output:2"),
                    add("priority=10,in_port=2,actions=output:1"),
                    add("table=1,priority=5,ip,actions=drop"),
                ],
                &ports,
                &zero,
            )
            .unwrap();
        assert_eq!((r.added, s.len()), (3, 3));
        assert_eq!(r.tables, BTreeSet::from([0, 1]));
        // Same table, priority and match: replaced, not added.
        let r = s.apply_all(&[add("priority=10,in_port=1,actions=output:3")], &ports, &zero).unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(r.freed_ids, vec![0], "the replaced flow's id is freed");
        // Non-strict modify of every flow in table 0.
        let m = FlowOp::Modify {
            filter: parse_filter("table=0").unwrap(),
            actions: vec![Action::Output(4)].into(),
            strict: false,
        };
        assert_eq!(s.apply_all(&[m], &ports, &zero).unwrap().modified, 2);
        assert!(s.flows(0).iter().all(|f| *f.spec.actions == [Action::Output(4)]));
        // Strict delete needs the exact priority and match.
        let d = FlowOp::Delete { filter: parse_filter("priority=11,in_port=2").unwrap(), strict: true };
        assert_eq!(s.apply_all(&[d], &ports, &zero).unwrap().deleted, 0);
        let d = FlowOp::Delete { filter: parse_filter("priority=10,in_port=2").unwrap(), strict: true };
        assert_eq!(s.apply_all(&[d], &ports, &zero).unwrap().deleted, 1);
        // Non-strict delete with an empty filter removes everything.
        let d = FlowOp::Delete { filter: FlowFilter::default(), strict: false };
        assert_eq!(s.apply_all(&[d], &ports, &zero).unwrap().deleted, 2);
        assert!(s.is_empty());
    }

    #[test]
    fn one_bad_op_changes_nothing_and_is_named() {
        let mut s = store();
        s.apply_all(&[add("priority=1,in_port=1,actions=output:2")], &ports, &zero).unwrap();
        let before: Vec<String> = s.flows(0).iter().map(|f| f.spec.to_string()).collect();
        let err = s
            .apply_all(
                &[
                    FlowOp::Delete { filter: FlowFilter::default(), strict: false },
                    add("priority=2,in_port=2,actions=output:1"),
                    add("priority=3,in_port=3,actions=output:1,output:9"),
                    add("priority=4,in_port=4,actions=output:1"),
                ],
                &ports,
                &zero,
            )
            .unwrap_err();
        assert_eq!((err.op, err.field.as_str()), (2, "actions[1]"));
        assert_eq!(err.to_string(), "ops[2].actions[1]: output:9: no port number 9");
        let after: Vec<String> = s.flows(0).iter().map(|f| f.spec.to_string()).collect();
        assert_eq!(before, after, "the delete and the first add were undone");
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn an_undone_replace_restores_the_flow_and_its_id_and_frees_the_new_ids() {
        let mut s = store();
        s.apply_all(&[add("priority=1,in_port=1,actions=output:2")], &ports, &zero).unwrap();
        s.apply_all(&[add("priority=1,in_port=2,actions=output:1")], &ports, &zero).unwrap();
        let ids = |s: &FlowStore| -> Vec<(String, u32)> {
            let mut v: Vec<_> = s.flows(0).iter().map(|f| (f.spec.to_string(), f.id)).collect();
            v.sort();
            v
        };
        let before = ids(&s);
        let err = s
            .apply_all(
                &[
                    add("priority=1,in_port=1,actions=output:3"), // replaces id 0
                    add("priority=1,in_port=3,actions=output:1"),
                    add("priority=1,in_port=4,actions=output:9"),
                ],
                &ports,
                &zero,
            )
            .unwrap_err();
        assert_eq!(err.op, 2);
        assert_eq!(ids(&s), before, "the replaced flow is back with its actions and id");
        assert_eq!(s.len(), 2);
        // The two ids the failed transaction took are free again, and only those.
        let r = s
            .apply_all(
                &[add("priority=1,in_port=3,actions=drop"), add("priority=1,in_port=4,actions=drop")],
                &ports,
                &zero,
            )
            .unwrap();
        assert!(r.freed_ids.is_empty());
        let mut new: Vec<u32> = s.flows(0).iter().map(|f| f.id).filter(|&id| id > 1).collect();
        new.sort();
        assert_eq!(new, vec![2, 3]);
    }

    #[test]
    fn modify_checks_actions_against_each_selected_flow() {
        let mut s = store();
        s.apply_all(&[add("priority=1,ip,actions=drop"), add("priority=2,arp,actions=drop")], &ports, &zero).unwrap();
        let m = FlowOp::Modify {
            filter: FlowFilter::default(),
            actions: vec![Action::DecTtl, Action::Output(1)].into(),
            strict: false,
        };
        let err = s.apply_all(&[m], &ports, &zero).unwrap_err();
        assert_eq!(err.field, "actions[0]");
        assert!(err.message.contains("dec_ttl needs") && err.message.contains("arp"), "{}", err.message);
        assert!(s.flows(0).iter().all(|f| f.spec.actions.is_empty()), "nothing modified");
    }

    #[test]
    fn miss_settings_and_goto_direction() {
        let mut s = store();
        assert_eq!(s.miss(0), MissAction::Normal);
        assert_eq!(s.miss(1), MissAction::Drop);
        let err = s.apply_all(&[FlowOp::SetMiss { table: 2, miss: MissAction::Goto(1) }], &ports, &zero).unwrap_err();
        assert_eq!(err.field, "miss");
        s.apply_all(&[FlowOp::SetMiss { table: 2, miss: MissAction::Goto(5) }], &ports, &zero).unwrap();
        assert_eq!(s.miss(2), MissAction::Goto(5));
    }

    #[test]
    fn capacity_is_enforced_atomically() {
        let mut s = FlowStore::new(2, MissAction::Drop);
        let err = s
            .apply_all(
                &[
                    add("priority=1,in_port=1,actions=drop"),
                    add("priority=1,in_port=2,actions=drop"),
                    add("priority=1,in_port=3,actions=drop"),
                ],
                &ports,
                &zero,
            )
            .unwrap_err();
        assert!(err.message.contains("at most 2 flows"));
        assert!(s.is_empty());
    }

    #[test]
    fn ids_are_reused_only_after_the_grace_period() {
        let mut s = store();
        s.apply_all(&[add("priority=1,in_port=1,actions=drop")], &ports, &zero).unwrap();
        let r = s.apply_all(&[FlowOp::Delete { filter: FlowFilter::default(), strict: false }], &ports, &zero).unwrap();
        assert_eq!(r.freed_ids, vec![0]);
        s.retire(r.freed_ids, 7);
        s.apply_all(&[add("priority=1,in_port=2,actions=drop")], &ports, &zero).unwrap();
        assert_eq!(s.flows(0)[0].id, 1, "id 0 is still in its grace period");
        s.reclaim(7);
        s.apply_all(&[add("priority=1,in_port=3,actions=drop")], &ports, &|id| (id as u64 * 10, 5)).unwrap();
        let reused = s.flows(0).into_iter().find(|f| f.id == 0).expect("id 0 reused");
        assert_eq!(reused.baseline, (0, 5));
    }

    /// The flow map holds what a map from key to flow holds, after any sequence of inserts,
    /// replaces and removes (removes move the last flow into the hole and re-point its slot).
    #[test]
    fn flow_map_agrees_with_a_plain_map() {
        use proptest::prelude::*;
        use std::collections::HashMap;
        let flow = |priority: u16, port: u64, id: u32| {
            let mut spec = FlowSpec { priority, ..Default::default() };
            spec.matching.set(crate::flow::key::slot::IN_PORT, port, 0xffff).unwrap();
            StoredFlow { id, spec, created: SystemTime::UNIX_EPOCH, created_mono: Instant::now(), baseline: (0, 0) }
        };
        // (remove?, priority, port): few distinct keys, so replaces and removes of present
        // keys are common.
        let ops = prop::collection::vec((any::<bool>(), 0u16..3, 0u64..6), 0..200);
        proptest!(ProptestConfig::with_cases(300), |(ops in ops)| {
            let mut map = FlowMap::default();
            let mut model: HashMap<FlowKeyInTable, u32> = HashMap::new();
            for (id, (remove, priority, port)) in ops.into_iter().enumerate() {
                let f = flow(priority, port, id as u32);
                let key = key_of(&f);
                if remove {
                    prop_assert_eq!(map.remove(&key).map(|f| f.id), model.remove(&key));
                } else {
                    prop_assert_eq!(map.insert(key_hash(&key), f).map(|f| f.id), model.insert(key, id as u32));
                }
                prop_assert_eq!(map.len(), model.len());
                for (k, id) in &model {
                    prop_assert_eq!(map.get_mut(k).map(|f| f.id), Some(*id));
                }
                let mut ids: Vec<u32> = map.values().map(|f| f.id).collect();
                ids.sort_unstable();
                let mut want: Vec<u32> = model.values().copied().collect();
                want.sort_unstable();
                prop_assert_eq!(ids, want);
            }
        });
    }

    /// A transaction that fails at its last op leaves every flow as it was (key, actions and
    /// id), whatever mix of fresh adds, replacing adds and deletes came before it.
    #[test]
    fn a_failed_transaction_of_any_mix_changes_nothing() {
        use proptest::prelude::*;
        let snapshot = |s: &FlowStore| -> Vec<(String, u32)> {
            let mut v: Vec<_> = (0..2).flat_map(|t| s.flows(t)).map(|f| (f.spec.to_string(), f.id)).collect();
            v.sort();
            v
        };
        // (kind, table, priority, port): kind 0-1 add (output to port 1 or 2), 2 delete.
        let op = (0u8..3, 0u8..2, 0u16..2, 1u32..5);
        let ops = prop::collection::vec(op.clone(), 0..30);
        proptest!(ProptestConfig::with_cases(300), |(before in ops.clone(), tx in ops)| {
            let to_op = |(kind, table, priority, port): (u8, u8, u16, u32)| match kind {
                2 => FlowOp::Delete {
                    filter: parse_filter(&format!("table={table},priority={priority},in_port={port}")).unwrap(),
                    strict: true,
                },
                _ => add(&format!("table={table},priority={priority},in_port={port},actions=output:{}", kind + 1)),
            };
            let mut s = store();
            s.apply_all(&before.into_iter().map(to_op).collect::<Vec<_>>(), &ports, &zero).unwrap();
            let (was, count) = (snapshot(&s), s.len());
            let mut ops: Vec<FlowOp> = tx.into_iter().map(to_op).collect();
            ops.push(add("priority=9,in_port=1,actions=output:9"));
            prop_assert!(s.apply_all(&ops, &ports, &zero).is_err());
            prop_assert_eq!(snapshot(&s), was);
            prop_assert_eq!(s.len(), count);
        });
    }

    #[test]
    fn filters_select_by_cookie_out_port_and_coverage() {
        let flow =
            parse_flow("table=2,priority=5,cookie=0x1234,tcp,nw_dst=10.0.0.1,tp_dst=80,actions=output:3").unwrap();
        let yes = ["table=2", "ip", "tcp,nw_dst=10.0.0.0/8", "cookie=0x1200/0xff00", "out_port=3"];
        let no = ["table=1", "udp", "tcp,nw_dst=11.0.0.0/8", "cookie=0x1300/0xff00", "out_port=2"];
        for f in yes {
            assert!(selects(&parse_filter(f).unwrap(), false, 2, &flow), "{f}");
        }
        for f in no {
            assert!(!selects(&parse_filter(f).unwrap(), false, 2, &flow), "{f}");
        }
        assert!(selects(&parse_filter("priority=5,tcp,nw_dst=10.0.0.1,tp_dst=80").unwrap(), true, 2, &flow));
        assert!(!selects(&parse_filter("priority=5,tcp,nw_dst=10.0.0.1").unwrap(), true, 2, &flow));
    }
}
