//! Flow tables compiled for the datapath: classifiers, rules with their actions translated to
//! port indices and counter slots, table-miss behaviour, and the classification of a packet
//! key into a *path*: the rules (or misses) of every table the packet visits.
//!
//! A path is a pure function of the key and the tables, so a per-worker exact-match cache can
//! remember it; executing a path replays each rule's actions on the packet.

use std::sync::Arc;

use super::action::{Action, MAX_TABLES};
use super::classifier::{Classifier, RuleRef, BATCH};
use super::direct::DirectTable;
use super::key::{slot, Depth, FlowKey, KEY_WORDS, VLAN_PCP_MASK, VLAN_PRESENT, VLAN_VID_MASK};
use super::matching::Match;
use crate::mac_table::PortIdx;

/// What a table does with a packet no flow matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissAction {
    #[default]
    Drop,
    /// The L2 learning switch.
    Normal,
    /// Continue in a later table.
    Goto(u8),
}

impl std::fmt::Display for MissAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MissAction::Drop => write!(f, "drop"),
            MissAction::Normal => write!(f, "normal"),
            MissAction::Goto(t) => write!(f, "goto_table:{t}"),
        }
    }
}

impl std::str::FromStr for MissAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "drop" => Ok(MissAction::Drop),
            "normal" | "NORMAL" => Ok(MissAction::Normal),
            _ => match s.strip_prefix("goto_table:").or_else(|| s.strip_prefix("goto:")) {
                Some(t) => t
                    .parse::<u8>()
                    .ok()
                    .filter(|t| (*t as usize) < MAX_TABLES)
                    .map(MissAction::Goto)
                    .ok_or_else(|| format!("'{s}': the table is 0 to {}", MAX_TABLES - 1)),
                None => Err(format!("'{s}' is not a miss action (drop, normal or goto_table:N)")),
            },
        }
    }
}

/// An action as the datapath runs it: ports as indices, counters as slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Output(PortIdx),
    Normal,
    Flood,
    InPort,
    PushVlan(u16),
    PopVlan,
    SetVlanVid(u16),
    SetVlanPcp(u8),
    SetEthSrc(u64),
    SetEthDst(u64),
    SetIpv4Src(u32),
    SetIpv4Dst(u32),
    SetIpDscp(u8),
    DecTtl,
    SetTpSrc(u16),
    SetTpDst(u16),
    Counter(u16),
    /// Tunnel metadata for a later output to a tunnel port.
    SetTunnelId(u64),
    SetTunDst(u32),
}

impl Op {
    pub fn modifies_packet(&self) -> bool {
        !matches!(
            self,
            Op::Output(_)
                | Op::Normal
                | Op::Flood
                | Op::InPort
                | Op::Counter(_)
                | Op::SetTunnelId(_)
                | Op::SetTunDst(_)
        )
    }

    /// Whether the op changes what a later table's match sees.
    pub fn changes_key(&self) -> bool {
        self.modifies_packet() || matches!(self, Op::SetTunnelId(_) | Op::SetTunDst(_))
    }

    pub fn outputs(&self) -> bool {
        matches!(self, Op::Output(_) | Op::Normal | Op::Flood | Op::InPort)
    }

    /// The change the action makes to the flow key, so later tables match the changed
    /// packet.
    pub fn apply_to_key(&self, key: &mut FlowKey) {
        match *self {
            Op::PushVlan(_) => {
                if slot::VLAN_TCI.get(key) as u16 & VLAN_PRESENT == 0 {
                    slot::VLAN_TCI.set(key, VLAN_PRESENT as u64);
                }
            }
            Op::PopVlan => slot::VLAN_TCI.set(key, 0),
            Op::SetVlanVid(v) => {
                let t = slot::VLAN_TCI.get(key) as u16;
                slot::VLAN_TCI.set(key, ((t & VLAN_PCP_MASK) | VLAN_PRESENT | (v & VLAN_VID_MASK)) as u64);
            }
            Op::SetVlanPcp(p) => {
                let t = slot::VLAN_TCI.get(key) as u16;
                slot::VLAN_TCI.set(key, ((t & VLAN_VID_MASK) | VLAN_PRESENT | ((p as u16) << 13)) as u64);
            }
            Op::SetEthSrc(m) => slot::ETH_SRC.set(key, m),
            Op::SetEthDst(m) => slot::ETH_DST.set(key, m),
            Op::SetIpv4Src(a) => slot::NW_SRC.set(key, a as u64),
            Op::SetIpv4Dst(a) => slot::NW_DST.set(key, a as u64),
            Op::SetIpDscp(d) => {
                let tos = slot::IP_TOS.get(key) as u8;
                slot::IP_TOS.set(key, ((tos & 0x03) | (d << 2)) as u64);
            }
            Op::DecTtl => {
                let ttl = slot::IP_TTL.get(key);
                slot::IP_TTL.set(key, ttl.saturating_sub(1));
            }
            Op::SetTpSrc(p) => slot::TP_SRC.set(key, p as u64),
            Op::SetTpDst(p) => slot::TP_DST.set(key, p as u64),
            Op::SetTunnelId(v) => slot::TUN_ID.set(key, v),
            Op::SetTunDst(a) => slot::TUN_DST.set(key, a as u64),
            Op::Output(_) | Op::Normal | Op::Flood | Op::InPort | Op::Counter(_) => {}
        }
    }
}

/// A flow as the datapath sees it.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// Stable flow id: the slot of its counters.
    pub id: u32,
    pub table: u8,
    pub priority: u16,
    pub cookie: u64,
    /// The actions as written (for trace and dumps). The match is the classifier's
    /// ([`CompiledTable::rule_match`]): kept once, not in every rule too.
    pub actions: Arc<[Action]>,
    /// Shared by consecutive rules with the same action list (`switch::flows::compile_rules`).
    pub ops: Arc<[Op]>,
    pub goto: Option<u8>,
    /// Any op changes packet bytes.
    pub modifies: bool,
}

impl CompiledRule {
    /// Whether classification must apply this rule's changes to the key: only when a later
    /// table will look at it.
    #[inline(always)]
    fn changes_key_for_later(&self) -> bool {
        self.goto.is_some() && self.modifies
    }
}

impl CompiledRule {
    /// The port of a rule that does nothing but send to one port (the most common flow):
    /// the datapath sends such packets without running the general action loop.
    #[inline(always)]
    pub fn simple_output(&self) -> Option<PortIdx> {
        match (&*self.ops, self.goto) {
            ([Op::Output(p)], None) => Some(*p),
            _ => None,
        }
    }
}

/// What the datapath reads of a rule on every packet, 8 bytes, apart from the full rule
/// records (whose actions live elsewhere on the heap): 64k rules take 512 KiB here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleHot {
    /// Counter slot (the flow id).
    pub id: u32,
    /// Table to continue in, or NO_GOTO.
    pub goto: u8,
    pub flags: u8,
    /// With SIMPLE: the one port the rule sends to.
    pub port: PortIdx,
}

pub const NO_GOTO: u8 = u8::MAX;
/// Classification must apply the rule's changes to the key (a later table looks at it).
pub const CHANGES_KEY: u8 = 1;
/// The rule only sends to one port.
pub const SIMPLE: u8 = 2;

/// One compiled table.
pub struct CompiledTable {
    pub id: u8,
    pub classifier: Classifier,
    pub rules: Box<[CompiledRule]>,
    pub hot: Box<[RuleHot]>,
    pub miss: MissAction,
}

impl CompiledTable {
    /// The table of `rules` and their `matches`, in the same order.
    pub fn build(
        id: u8,
        rules: Vec<CompiledRule>,
        matches: impl Iterator<Item = Match>,
        miss: MissAction,
    ) -> CompiledTable {
        let hot = rules
            .iter()
            .map(|r| {
                let simple = r.simple_output();
                RuleHot {
                    id: r.id,
                    goto: r.goto.unwrap_or(NO_GOTO),
                    flags: if r.changes_key_for_later() { CHANGES_KEY } else { 0 }
                        | if simple.is_some() { SIMPLE } else { 0 },
                    port: simple.unwrap_or(0),
                }
            })
            .collect();
        let classifier =
            Classifier::build(matches.zip(rules.iter().map(|r| RuleRef { priority: r.priority, id: r.id })));
        debug_assert_eq!(classifier.len(), rules.len(), "a match for every rule");
        CompiledTable { id, classifier, rules: rules.into_boxed_slice(), hot, miss }
    }

    /// The match of the rule at `index`.
    pub fn rule_match(&self, index: usize) -> Match {
        self.classifier.rule_match(index)
    }
}

/// Most steps (tables) one packet may go through. Goto only goes forward, so this bounds
/// the work per packet; deeper pipelines drop with `pipeline_too_deep`.
pub const MAX_PATH: usize = 16;
const MISS: u32 = 0x00ff_ffff;

/// One visited table: the rule that matched, or the table's miss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step(u32);

impl Step {
    pub fn rule(table: u8, index: u32) -> Step {
        Step((table as u32) << 24 | index)
    }
    pub fn miss(table: u8) -> Step {
        Step((table as u32) << 24 | MISS)
    }
    pub fn table(self) -> u8 {
        (self.0 >> 24) as u8
    }
    /// Index of the matched rule in its table; None for a miss.
    pub fn rule_index(self) -> Option<u32> {
        let i = self.0 & MISS;
        (i != MISS).then_some(i)
    }
}

/// The tables a packet visits, in order.
#[derive(Debug, Clone, Copy)]
pub struct Path {
    steps: [Step; MAX_PATH],
    len: u8,
    /// The path needed more than MAX_PATH steps.
    pub too_deep: bool,
    /// When the path is one table-0 rule that only sends to one port: that port (else
    /// NO_PORT) and the rule's flow id. The datapath sends such packets straight away.
    pub simple_port: PortIdx,
    pub simple_id: u32,
}

/// `Path::simple_port` of a path that is not a single simple rule.
pub const NO_PORT: PortIdx = PortIdx::MAX;

impl Default for Path {
    fn default() -> Self {
        Path { steps: [Step(0); MAX_PATH], len: 0, too_deep: false, simple_port: NO_PORT, simple_id: 0 }
    }
}

impl PartialEq for Path {
    fn eq(&self, other: &Path) -> bool {
        self.same_as(other)
    }
}

impl Eq for Path {}

impl Path {
    pub fn steps(&self) -> &[Step] {
        &self.steps[..self.len as usize]
    }

    /// Same steps (cheaper than comparing the whole struct, and no memcmp call).
    #[inline(always)]
    pub fn same_as(&self, other: &Path) -> bool {
        if self.len != other.len || self.too_deep != other.too_deep {
            return false;
        }
        let mut diff = 0u32;
        for i in 0..self.len as usize {
            diff |= self.steps[i].0 ^ other.steps[i].0;
        }
        diff == 0
    }

    /// Empties the path for reuse (cheaper than writing a whole default).
    #[inline(always)]
    pub fn clear(&mut self) {
        self.len = 0;
        self.too_deep = false;
        self.simple_port = NO_PORT;
    }

    /// Makes this the one-step path of a table-0 rule that only sends to `port`.
    #[inline(always)]
    pub fn set_simple(&mut self, step: Step, port: PortIdx, id: u32) {
        self.steps[0] = step;
        self.len = 1;
        self.too_deep = false;
        self.simple_port = port;
        self.simple_id = id;
    }

    fn push(&mut self, s: Step) -> bool {
        if self.len as usize == MAX_PATH {
            self.too_deep = true;
            return false;
        }
        self.steps[self.len as usize] = s;
        self.len += 1;
        true
    }
}

/// All flow tables of one pipeline snapshot.
pub struct FlowTables {
    tables: Vec<Option<Arc<CompiledTable>>>,
    /// How deep packets must be parsed for every field any rule matches.
    pub depth: Depth,
    /// No flows and table 0 misses to normal: the pipeline is the plain L2 switch.
    pub l2_only: bool,
    /// The exact-match cache pays off: classifying costs several subtable probes. With one
    /// or two subtables in all, a classifier lookup costs what a cache lookup does.
    pub use_emc: bool,
    /// Some rule matches tunnel metadata (tun_id, tun_src, tun_dst).
    pub matches_tunnel: bool,
    /// Table 0 as a direct table, when it qualifies (see [`DirectTable`]).
    direct: Option<DirectTable>,
}

impl Default for FlowTables {
    /// A pipeline with no flows whose table 0 sends everything to the L2 switch.
    fn default() -> Self {
        let t0 = CompiledTable::build(0, Vec::new(), std::iter::empty(), MissAction::Normal);
        FlowTables::new(vec![Some(Arc::new(t0))])
    }
}

impl FlowTables {
    /// Tables by id (index = table number; `None` for a table never configured, which
    /// matches nothing and drops).
    pub fn new(mut tables: Vec<Option<Arc<CompiledTable>>>) -> FlowTables {
        tables.resize_with(MAX_TABLES, || None);
        let mut union = FlowKey::ZERO;
        for t in tables.iter().flatten() {
            let u = t.classifier.mask_union();
            for i in 0..KEY_WORDS {
                union.0[i] |= u.0[i];
            }
        }
        // Actions that edit L3/L4 headers need their offsets (and checksum positions).
        let mut depth = Depth::for_mask(&union);
        for r in tables.iter().flatten().flat_map(|t| t.rules.iter()) {
            for op in r.ops.iter() {
                let need = match op {
                    Op::SetIpv4Src(_)
                    | Op::SetIpv4Dst(_)
                    | Op::SetIpDscp(_)
                    | Op::DecTtl
                    | Op::SetTpSrc(_)
                    | Op::SetTpDst(_) => Depth::L4,
                    _ => Depth::Meta,
                };
                depth = depth.max(need);
            }
        }
        let t0 = tables[0].as_ref();
        let l2_only = t0.is_some_and(|t| t.rules.is_empty() && t.miss == MissAction::Normal);
        let subtables: usize = tables.iter().flatten().map(|t| t.classifier.subtables().len()).sum();
        let matches_tunnel = union.0[slot::TUN_ID.word] != 0 || union.0[slot::TUN_DST.word] != 0;
        let direct = t0.and_then(|t| DirectTable::build(t));
        FlowTables { tables, depth, l2_only, use_emc: subtables > 2, matches_tunnel, direct }
    }

    /// Table 0 as a direct table, when it qualifies.
    #[inline]
    pub fn direct(&self) -> Option<&DirectTable> {
        self.direct.as_ref()
    }

    pub fn table(&self, id: u8) -> Option<&Arc<CompiledTable>> {
        self.tables.get(id as usize).and_then(|t| t.as_ref())
    }

    pub fn tables(&self) -> impl Iterator<Item = &Arc<CompiledTable>> {
        self.tables.iter().flatten()
    }

    /// The shared table object for reuse in the next snapshot.
    pub fn table_arc(&self, id: u8) -> Option<Arc<CompiledTable>> {
        self.table(id).cloned()
    }

    /// The rule a step refers to.
    #[inline(always)]
    pub fn rule(&self, step: Step) -> Option<&CompiledRule> {
        let i = step.rule_index()?;
        self.table(step.table()).map(|t| &t.rules[i as usize])
    }

    /// The match of the rule a step refers to.
    pub fn rule_match(&self, step: Step) -> Option<Match> {
        let i = step.rule_index()?;
        self.table(step.table()).map(|t| t.rule_match(i as usize))
    }

    /// The hot part of the rule a step refers to.
    #[inline(always)]
    pub fn hot(&self, step: Step) -> Option<&RuleHot> {
        let i = step.rule_index()?;
        self.table(step.table()).map(|t| &t.hot[i as usize])
    }

    /// The miss action of a table (tables never configured drop).
    pub fn miss(&self, table: u8) -> MissAction {
        self.table(table).map_or(MissAction::Drop, |t| t.miss)
    }

    /// Classifies one key: the path through the tables, starting at table 0. `key` is
    /// changed as the path's actions change the packet.
    pub fn classify(&self, key: &mut FlowKey) -> Path {
        let mut path = Path::default();
        let mut table = 0u8;
        loop {
            let t = self.table(table);
            match t.and_then(|t| t.classifier.lookup(key).map(|i| (t, i))) {
                Some((t, i)) => {
                    if !path.push(Step::rule(table, i)) {
                        return path;
                    }
                    let rule = &t.rules[i as usize];
                    for op in rule.ops.iter() {
                        op.apply_to_key(key);
                    }
                    match rule.goto {
                        Some(next) => table = next,
                        None => return path,
                    }
                }
                None => {
                    if !path.push(Step::miss(table)) {
                        return path;
                    }
                    match self.miss(table) {
                        MissAction::Goto(next) => table = next,
                        _ => return path,
                    }
                }
            }
        }
    }

    /// [`FlowTables::classify`] for the keys of a burst selected by `todo`, batching the
    /// lookups of each table.
    pub fn classify_batch(&self, keys: &mut [FlowKey; BATCH], todo: u32, paths: &mut [Path; BATCH]) {
        let todo = match &self.direct {
            Some(d) => d.classify_batch(keys, todo, paths),
            None => todo,
        };
        if todo == 0 {
            return;
        }
        let mut at = [0u8; BATCH];
        let mut active = todo;
        for (i, p) in paths.iter_mut().enumerate() {
            if todo & (1 << i) != 0 {
                p.clear();
            }
        }
        let mut found = [None; BATCH];
        let mut first = true;
        while active != 0 {
            // Tables only go forward: serve the lowest table any packet waits at (table 0
            // for everyone in the first round).
            let (table, here) = if first {
                first = false;
                (0, active)
            } else {
                let mut table = u8::MAX;
                let mut live = active;
                while live != 0 {
                    let i = live.trailing_zeros() as usize;
                    live &= live - 1;
                    table = table.min(at[i]);
                }
                let mut here = 0u32;
                let mut live = active;
                while live != 0 {
                    let i = live.trailing_zeros() as usize;
                    live &= live - 1;
                    if at[i] == table {
                        here |= 1 << i;
                    }
                }
                (table, here)
            };
            let t = self.table(table);
            match t {
                Some(t) => t.classifier.lookup_batch(keys, here, &mut found),
                None => {
                    for (i, f) in found.iter_mut().enumerate() {
                        if here & (1 << i) != 0 {
                            *f = None;
                        }
                    }
                }
            }
            if let Some(t) = t {
                let mut live = here;
                while live != 0 {
                    let i = live.trailing_zeros() as usize;
                    live &= live - 1;
                    if let Some(r) = found[i] {
                        crate::dpdk::prefetch(&t.hot[r as usize]);
                    }
                }
            }
            let mut live = here;
            while live != 0 {
                let i = live.trailing_zeros() as usize;
                live &= live - 1;
                let next = match (t, found[i]) {
                    (Some(t), Some(r)) => {
                        let hot = &t.hot[r as usize];
                        if table == 0 && hot.flags & SIMPLE != 0 {
                            paths[i].simple_port = hot.port;
                            paths[i].simple_id = hot.id;
                        }
                        if paths[i].push(Step::rule(table, r)) {
                            if hot.flags & CHANGES_KEY != 0 {
                                for op in t.rules[r as usize].ops.iter() {
                                    op.apply_to_key(&mut keys[i]);
                                }
                            }
                            (hot.goto != NO_GOTO).then_some(hot.goto)
                        } else {
                            None
                        }
                    }
                    _ => {
                        if paths[i].push(Step::miss(table)) {
                            match self.miss(table) {
                                MissAction::Goto(n) => Some(n),
                                _ => None,
                            }
                        } else {
                            None
                        }
                    }
                };
                match next {
                    Some(n) => at[i] = n,
                    None => active &= !(1 << i),
                }
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::flow::parse::{parse_flow, parse_packet};

    /// Compiles flows written in ovs-ofctl syntax (output:N goes to port index N).
    pub fn tables(flows: &[&str], misses: &[(u8, MissAction)]) -> FlowTables {
        let mut by_table: std::collections::BTreeMap<u8, Vec<(CompiledRule, Match)>> = Default::default();
        for (i, text) in flows.iter().enumerate() {
            let f = parse_flow(text).unwrap();
            let ops = f
                .actions
                .iter()
                .filter_map(|a| match a {
                    Action::Output(p) => Some(Op::Output(*p as PortIdx)),
                    Action::SetIpv4Dst(a) => Some(Op::SetIpv4Dst(u32::from(*a))),
                    Action::Normal => Some(Op::Normal),
                    Action::DecTtl => Some(Op::DecTtl),
                    Action::GotoTable(_) => None,
                    other => panic!("test helper does not compile {other}"),
                })
                .collect();
            let goto = f.actions.iter().find_map(|a| if let Action::GotoTable(t) = a { Some(*t) } else { None });
            let rule = CompiledRule {
                id: i as u32,
                table: f.table,
                priority: f.priority,
                cookie: f.cookie,
                actions: f.actions.clone(),
                ops,
                goto,
                modifies: f.actions.iter().any(|a| a.changes_key()),
            };
            by_table.entry(f.table).or_default().push((rule, f.matching));
        }
        let mut ids: std::collections::BTreeSet<u8> = by_table.keys().copied().collect();
        ids.extend(misses.iter().map(|m| m.0));
        let mut out = vec![None; MAX_TABLES];
        for id in ids {
            let miss = misses.iter().find(|m| m.0 == id).map_or(MissAction::Drop, |m| m.1);
            let (rules, matches): (Vec<CompiledRule>, Vec<Match>) =
                by_table.remove(&id).unwrap_or_default().into_iter().unzip();
            out[id as usize] = Some(Arc::new(CompiledTable::build(id, rules, matches.into_iter(), miss)));
        }
        FlowTables::new(out)
    }

    fn ids(t: &FlowTables, p: &Path) -> Vec<String> {
        p.steps()
            .iter()
            .map(|s| match t.rule(*s) {
                Some(r) => format!("{}:{}", s.table(), r.id),
                None => format!("{}:miss", s.table()),
            })
            .collect()
    }

    #[test]
    fn goto_chains_and_key_changes_are_seen_by_later_tables() {
        let t = tables(
            &[
                "table=0,priority=10,ip,actions=mod_nw_dst:10.9.9.9,goto_table:3",
                "table=3,priority=10,ip,nw_dst=10.9.9.9,actions=output:1",
                "table=3,priority=5,ip,actions=output:2",
            ],
            &[],
        );
        let mut k = parse_packet("in_port=1,ip,nw_dst=10.0.0.1").unwrap();
        let p = t.classify(&mut k);
        assert_eq!(ids(&t, &p), ["0:0", "3:1"]);
        assert_eq!(slot::NW_DST.get(&k), 0x0a09_0909);
    }

    #[test]
    fn misses_follow_their_table_setting() {
        let t = tables(
            &["table=0,priority=10,tcp,actions=goto_table:1", "table=1,priority=10,tcp,tp_dst=22,actions=output:1"],
            &[(0, MissAction::Normal), (1, MissAction::Goto(2)), (2, MissAction::Drop)],
        );
        let mut k = parse_packet("udp").unwrap();
        assert_eq!(ids(&t, &t.classify(&mut k)), ["0:miss"]);
        let mut k = parse_packet("tcp,tp_dst=80").unwrap();
        assert_eq!(ids(&t, &t.classify(&mut k)), ["0:0", "1:miss", "2:miss"]);
        let mut k = parse_packet("tcp,tp_dst=22").unwrap();
        assert_eq!(ids(&t, &t.classify(&mut k)), ["0:0", "1:1"]);
        assert!(!t.l2_only);
        assert_eq!(t.depth, Depth::L4);
    }

    #[test]
    fn default_is_plain_l2() {
        let t = FlowTables::default();
        assert!(t.l2_only);
        let mut k = FlowKey::ZERO;
        let p = t.classify(&mut k);
        assert_eq!(p.steps(), &[Step::miss(0)]);
        assert_eq!(t.miss(0), MissAction::Normal);
        assert_eq!(t.miss(9), MissAction::Drop);
    }

    #[test]
    fn batch_agrees_with_single() {
        let t = tables(
            &[
                "table=0,priority=30,tcp,tp_dst=80,actions=goto_table:2",
                "table=0,priority=20,ip,actions=goto_table:1",
                "table=1,priority=10,ip,nw_dst=10.0.0.0/8,actions=output:1",
                "table=2,priority=10,tcp,actions=mod_nw_dst:10.1.1.1,goto_table:4",
                "table=4,priority=10,ip,nw_dst=10.1.1.1,actions=output:3",
            ],
            &[(1, MissAction::Goto(4))],
        );
        let texts =
            ["tcp,tp_dst=80,nw_dst=1.2.3.4", "udp,nw_dst=10.2.3.4", "udp,nw_dst=11.0.0.1", "arp", "tcp,tp_dst=81"];
        let mut keys = [FlowKey::ZERO; BATCH];
        for (i, txt) in texts.iter().enumerate() {
            keys[i] = parse_packet(txt).unwrap();
        }
        let mut single = keys;
        let mut paths = [Path::default(); BATCH];
        t.classify_batch(&mut keys, (1 << texts.len()) - 1, &mut paths);
        for i in 0..texts.len() {
            let p = t.classify(&mut single[i]);
            assert_eq!(paths[i], p, "{}", texts[i]);
            assert_eq!(keys[i], single[i]);
        }
        assert_eq!(ids(&t, &paths[0]), ["0:0", "2:3", "4:4"]);
        assert_eq!(ids(&t, &paths[2]), ["0:1", "1:miss", "4:miss"]);
    }

    #[test]
    fn miss_action_text() {
        assert_eq!("normal".parse::<MissAction>(), Ok(MissAction::Normal));
        assert_eq!("goto_table:7".parse::<MissAction>(), Ok(MissAction::Goto(7)));
        assert!("goto_table:300".parse::<MissAction>().is_err());
        assert!("flood".parse::<MissAction>().is_err());
        assert_eq!(MissAction::Goto(3).to_string(), "goto_table:3");
    }
}
