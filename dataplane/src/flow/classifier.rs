//! The wildcard classifier of one flow table: tuple space search.
//!
//! Rules are grouped by mask into subtables; each subtable is an open-addressing hash table
//! of masked keys. A lookup probes subtables in order of their highest priority and stops as
//! soon as no remaining subtable can hold a better rule. OpenFlow leaves the winner among
//! equal-priority overlapping rules undefined, so a tie ends the search too: the winner is
//! then the rule of the first subtable in a fixed order (by priority, then mask), the same
//! in every build. Lookups of a
//! burst run subtable by subtable with the bucket of every packet prefetched first, so memory
//! latency overlaps instead of adding up.
//!
//! A table is immutable once built; the control plane builds a new one for every change and
//! publishes it with the pipeline snapshot.

use super::key::{FlowKey, KEY_WORDS};
use super::matching::Match;

/// Multipliers for the word hash: odd 64-bit constants (from splitmix/wyhash), one per word
/// so equal values in different words do not cancel.
pub(super) const KEY_HASH: [u64; KEY_WORDS] = [
    0x9E37_79B9_7F4A_7C15,
    0xBF58_476D_1CE4_E5B9,
    0x94D0_49BB_1331_11EB,
    0xA076_1D64_78BD_642F,
    0xE703_7ED1_A0B4_28DB,
    0x8EBC_6AF0_9C88_C6E3,
    0x5899_65CC_7537_4CC3,
    0x1D8E_4E27_C47D_124F,
    0xD6E8_FEB8_6659_FD93,
    0xFF51_AFD7_ED55_8CCD,
    0xC4CE_B9FE_1A85_EC53,
];

/// The final mix of every key hash here: a sum of word products folded to 32 bits.
#[inline(always)]
pub(super) fn finish_hash(h: u64) -> u32 {
    (h ^ (h >> 29) ^ (h >> 47)) as u32
}

/// Hash of `key & mask` over the words listed in `words` (independent multiplies, so they
/// pipeline).
#[inline(always)]
pub fn hash_masked(key: &FlowKey, mask: &FlowKey, words: &[u8]) -> u32 {
    let mut h = 0u64;
    for &w in words {
        let w = w as usize;
        h = h.wrapping_add((key.0[w] & mask.0[w]).wrapping_mul(KEY_HASH[w]));
    }
    finish_hash(h)
}

/// Hash of a whole key (the exact-match cache's).
#[inline(always)]
pub fn hash_key(key: &FlowKey) -> u32 {
    let mut h = 0u64;
    for (w, k) in key.0.iter().zip(KEY_HASH) {
        h = h.wrapping_add(w.wrapping_mul(k));
    }
    finish_hash(h)
}

/// What the classifier needs of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleRef {
    pub priority: u16,
    /// Stable id: of rules with the same match and priority, the lowest id wins.
    pub id: u32,
}

const EMPTY: u32 = u32::MAX;

#[derive(Clone, Copy)]
struct Bucket {
    hash: u32,
    /// Index into the table's rules, or EMPTY.
    rule: u32,
}

/// All rules of a table that share one mask.
pub struct Subtable {
    mask: FlowKey,
    /// Key words the mask touches: the only ones hashed and compared.
    words: Box<[u8]>,
    max_priority: u16,
    buckets: Box<[Bucket]>,
    bucket_mask: usize,
}

impl Subtable {
    pub fn mask(&self) -> &FlowKey {
        &self.mask
    }

    /// Key words the mask touches.
    pub fn words(&self) -> &[u8] {
        &self.words
    }

    pub fn max_priority(&self) -> u16 {
        self.max_priority
    }

    #[inline(always)]
    fn hash(&self, key: &FlowKey) -> u32 {
        hash_masked(key, &self.mask, &self.words)
    }

    #[inline(always)]
    fn prefetch(&self, hash: u32) {
        crate::dpdk::prefetch(&self.buckets[hash as usize & self.bucket_mask]);
    }

    /// The first bucket from the home of `hash` on whose hash matches: (its position, its
    /// rule). `None` at an empty bucket.
    #[inline(always)]
    fn candidate(&self, hash: u32) -> Option<(usize, u32)> {
        let mut i = hash as usize & self.bucket_mask;
        loop {
            let b = self.buckets[i];
            if b.rule == EMPTY {
                return None;
            }
            if b.hash == hash {
                return Some((i, b.rule));
            }
            i = (i + 1) & self.bucket_mask;
        }
    }

    #[inline(always)]
    fn equal(&self, key: &FlowKey, value: &FlowKey) -> bool {
        self.words.iter().all(|&w| key.0[w as usize] & self.mask.0[w as usize] == value.0[w as usize])
    }

    /// Checks a candidate; after a hash collision, goes on probing behind it.
    #[inline(always)]
    fn confirm(&self, key: &FlowKey, hash: u32, at: usize, rule: u32, values: &[FlowKey]) -> Option<u32> {
        if self.equal(key, &values[rule as usize]) {
            return Some(rule);
        }
        let mut i = (at + 1) & self.bucket_mask;
        loop {
            let b = self.buckets[i];
            if b.rule == EMPTY {
                return None;
            }
            if b.hash == hash && self.equal(key, &values[b.rule as usize]) {
                return Some(b.rule);
            }
            i = (i + 1) & self.bucket_mask;
        }
    }

    /// The rule whose masked value equals the masked key, if any.
    #[inline(always)]
    fn find(&self, key: &FlowKey, hash: u32, values: &[FlowKey]) -> Option<u32> {
        let mut i = hash as usize & self.bucket_mask;
        loop {
            let b = self.buckets[i];
            if b.rule == EMPTY {
                return None;
            }
            if b.hash == hash {
                let v = &values[b.rule as usize];
                if self.words.iter().all(|&w| key.0[w as usize] & self.mask.0[w as usize] == v.0[w as usize]) {
                    return Some(b.rule);
                }
            }
            i = (i + 1) & self.bucket_mask;
        }
    }
}

/// A compiled table: subtables plus, per rule, its masked value and priority.
pub struct Classifier {
    subtables: Box<[Subtable]>,
    /// Per rule: masked match value (what buckets compare against) and priority.
    values: Box<[FlowKey]>,
    /// Per rule, in compact arrays (a lookup reads a priority per candidate; the 2-byte
    /// array stays in cache where whole rule records would not).
    priorities: Box<[u16]>,
    ids: Box<[u32]>,
    /// Per rule: its subtable, whose mask is the rest of the rule's match (trace, dumps).
    rule_subtables: Box<[u32]>,
}

/// Lookups of one burst: up to 32 packets.
pub const BATCH: usize = 32;

impl Classifier {
    /// Builds the classifier of `rules` (index i of the result refers to the i-th rule). An
    /// iterator, walked once: no copy of every match is made for the build beyond the
    /// masked values the classifier keeps.
    pub fn build(rules: impl Iterator<Item = (Match, RuleRef)>) -> Classifier {
        // One pass: each rule's masked value, priority and id into the arrays the classifier
        // keeps, and its index into the group of its mask.
        let n_rules = rules.size_hint().0;
        let mut values = Vec::with_capacity(n_rules);
        crate::dpdk::populate(values.spare_capacity_mut());
        let mut refs = Vec::with_capacity(n_rules);
        let mut rule_subtables = Vec::with_capacity(n_rules);
        let mut group_of: rustc_hash::FxHashMap<FlowKey, u32> = Default::default();
        let mut groups: Vec<(FlowKey, Vec<u32>)> = Vec::new();
        for (i, (m, r)) in rules.enumerate() {
            let g = *group_of.entry(m.mask).or_insert_with(|| {
                groups.push((m.mask, Vec::new()));
                groups.len() as u32 - 1
            });
            groups[g as usize].1.push(i as u32);
            rule_subtables.push(g);
            values.push(m.value);
            refs.push(r);
        }
        drop(group_of);
        let values: Box<[FlowKey]> = values.into_boxed_slice();
        // Of two rules with the same masked value only the better is reachable: it takes the
        // bucket (higher priority, then lower id, as lookups rank them).
        let better = |a: u32, b: u32| {
            let (a, b) = (&refs[a as usize], &refs[b as usize]);
            (a.priority, std::cmp::Reverse(a.id)) > (b.priority, std::cmp::Reverse(b.id))
        };
        let mut subtables: Vec<(u32, Subtable)> = groups
            .into_iter()
            .enumerate()
            .map(|(g, (mask, members))| {
                let words: Box<[u8]> = (0..KEY_WORDS as u8).filter(|&w| mask.0[w as usize] != 0).collect();
                let n = (members.len() * 2).next_power_of_two().max(2);
                let mut buckets = vec![Bucket { hash: 0, rule: EMPTY }; n].into_boxed_slice();
                let mut st = Subtable {
                    mask,
                    words,
                    max_priority: members.iter().map(|&r| refs[r as usize].priority).max().unwrap_or(0),
                    buckets: Box::new([]),
                    bucket_mask: n - 1,
                };
                for &r in &members {
                    let v = &values[r as usize];
                    let h = st.hash(v);
                    let mut i = h as usize & st.bucket_mask;
                    loop {
                        let b = buckets[i];
                        if b.rule == EMPTY {
                            buckets[i] = Bucket { hash: h, rule: r };
                            break;
                        }
                        if b.hash == h && values[b.rule as usize] == *v {
                            if better(r, b.rule) {
                                buckets[i].rule = r;
                            }
                            break;
                        }
                        i = (i + 1) & st.bucket_mask;
                    }
                }
                st.buckets = buckets;
                (g as u32, st)
            })
            .collect();
        subtables.sort_by(|(_, a), (_, b)| b.max_priority.cmp(&a.max_priority).then(a.mask.cmp(&b.mask)));
        let mut position = vec![0u32; subtables.len()];
        for (at, (g, _)) in subtables.iter().enumerate() {
            position[*g as usize] = at as u32;
        }
        for g in rule_subtables.iter_mut() {
            *g = position[*g as usize];
        }
        let priorities = refs.iter().map(|r| r.priority).collect();
        let ids = refs.iter().map(|r| r.id).collect();
        let subtables = subtables.into_iter().map(|(_, st)| st).collect();
        Classifier { subtables, values, priorities, ids, rule_subtables: rule_subtables.into_boxed_slice() }
    }

    /// The match of rule `rule` (index into the rules given to `build`).
    pub fn rule_match(&self, rule: usize) -> Match {
        Match { value: self.values[rule], mask: self.subtables[self.rule_subtables[rule] as usize].mask }
    }

    /// The masked value of rule `rule`.
    pub fn value(&self, rule: usize) -> &FlowKey {
        &self.values[rule]
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn subtables(&self) -> &[Subtable] {
        &self.subtables
    }

    /// Union of all rule masks: the fields this table can look at.
    pub fn mask_union(&self) -> FlowKey {
        let mut u = FlowKey::ZERO;
        for s in self.subtables.iter() {
            for i in 0..KEY_WORDS {
                u.0[i] |= s.mask.0[i];
            }
        }
        u
    }

    #[inline(always)]
    fn better(&self, cand: u32, best: Option<u32>) -> bool {
        match best {
            None => true,
            Some(b) => {
                let (cp, bp) = (self.priorities[cand as usize], self.priorities[b as usize]);
                cp > bp || (cp == bp && self.ids[cand as usize] < self.ids[b as usize])
            }
        }
    }

    /// The highest-priority rule matching `key` (index into the rules given to `build`).
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<u32> {
        let mut best: Option<u32> = None;
        for st in self.subtables.iter() {
            if let Some(b) = best {
                if st.max_priority <= self.priorities[b as usize] {
                    break;
                }
            }
            if let Some(r) = st.find(key, st.hash(key), &self.values) {
                if self.better(r, best) {
                    best = Some(r);
                }
            }
        }
        best
    }

    /// [`Classifier::lookup`] for the keys whose bit is set in `todo`, writing `out[i]`.
    /// Subtable by subtable: hash and prefetch every pending key's bucket, then probe.
    #[inline]
    pub fn lookup_batch(&self, keys: &[FlowKey], todo: u32, out: &mut [Option<u32>; BATCH]) {
        let mut pending = todo;
        for (i, o) in out.iter_mut().enumerate() {
            if todo & (1 << i) != 0 {
                *o = None;
            }
        }
        let mut hashes = [0u32; BATCH];
        let mut found = [(0usize, 0u32); BATCH];
        // Priority of each packet's best rule so far (0 and no rule: nothing beats nothing).
        let mut best_prio = [0u16; BATCH];
        for (n, st) in self.subtables.iter().enumerate() {
            // Drop packets whose best rule already beats everything left (nothing to drop
            // before the first subtable).
            if n > 0 {
                let mut live = pending;
                while live != 0 {
                    let i = live.trailing_zeros() as usize;
                    live &= live - 1;
                    if out[i].is_some() && st.max_priority <= best_prio[i] {
                        pending &= !(1 << i);
                    }
                }
                if pending == 0 {
                    break;
                }
            }
            let mut live = pending;
            while live != 0 {
                let i = live.trailing_zeros() as usize;
                live &= live - 1;
                hashes[i] = st.hash(&keys[i]);
                st.prefetch(hashes[i]);
            }
            // Buckets are in cache now: find each packet's candidate rule and start loading
            // the rule's value, so the compares below overlap their misses too.
            let mut cands = 0u32;
            let mut live = pending;
            while live != 0 {
                let i = live.trailing_zeros() as usize;
                live &= live - 1;
                if let Some((at, r)) = st.candidate(hashes[i]) {
                    crate::dpdk::prefetch(&self.values[r as usize]);
                    found[i] = (at, r);
                    cands |= 1 << i;
                }
            }
            while cands != 0 {
                let i = cands.trailing_zeros() as usize;
                cands &= cands - 1;
                let (at, r) = found[i];
                if let Some(r) = st.confirm(&keys[i], hashes[i], at, r, &self.values) {
                    if self.better(r, out[i]) {
                        out[i] = Some(r);
                        best_prio[i] = self.priorities[r as usize];
                    }
                }
            }
        }
    }
}

/// The obviously correct classifier: scan every rule; the best priority wins, ties go to the
/// lowest id. The fast classifier must agree on the priority (and on the rule whenever the
/// best priority is unique).
pub fn lookup_linear(rules: &[(Match, RuleRef)], key: &FlowKey) -> Option<u32> {
    let mut best: Option<u32> = None;
    for (i, (m, r)) in rules.iter().enumerate() {
        if m.matches(key) {
            let better = match best {
                None => true,
                Some(b) => {
                    let br = rules[b as usize].1;
                    r.priority > br.priority || (r.priority == br.priority && r.id < br.id)
                }
            };
            if better {
                best = Some(i as u32);
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::key::slot;
    use crate::flow::parse::parse_flow;
    use proptest::prelude::*;

    fn rules(texts: &[&str]) -> Vec<(Match, RuleRef)> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let f = parse_flow(t).unwrap();
                (f.matching, RuleRef { priority: f.priority, id: i as u32 })
            })
            .collect()
    }

    fn key(text: &str) -> FlowKey {
        crate::flow::parse::parse_packet(text).unwrap()
    }

    #[test]
    fn highest_priority_wins_across_masks() {
        let r = rules(&[
            "priority=10,ip,actions=drop",
            "priority=20,ip,nw_dst=10.0.0.0/8,actions=drop",
            "priority=30,tcp,nw_dst=10.1.0.0/16,tp_dst=80,actions=drop",
            "priority=5,actions=drop",
        ]);
        let c = Classifier::build(r.iter().copied());
        assert_eq!(c.subtables().len(), 4);
        assert_eq!(c.lookup(&key("tcp,nw_dst=10.1.2.3,tp_dst=80")), Some(2));
        assert_eq!(c.lookup(&key("tcp,nw_dst=10.1.2.3,tp_dst=81")), Some(1));
        assert_eq!(c.lookup(&key("udp,nw_dst=192.168.0.1")), Some(0));
        assert_eq!(c.lookup(&key("arp")), Some(3));
    }

    #[test]
    fn same_match_keeps_the_best_and_ties_go_to_the_lower_id() {
        let r = rules(&[
            "priority=10,in_port=1,actions=drop",
            "priority=50,in_port=1,actions=drop",
            "priority=50,in_port=1,actions=drop",
        ]);
        let c = Classifier::build(r.iter().copied());
        assert_eq!(c.lookup(&key("in_port=1")), Some(1));
        assert_eq!(c.lookup(&key("in_port=2")), None);
        assert_eq!(lookup_linear(&r, &key("in_port=1")), Some(1));
    }

    #[test]
    fn empty_table_matches_nothing() {
        let c = Classifier::build(std::iter::empty());
        assert_eq!(c.lookup(&FlowKey::ZERO), None);
        let mut out = [Some(7); BATCH];
        c.lookup_batch(&[FlowKey::ZERO; BATCH], 0b11, &mut out);
        assert_eq!(&out[..3], &[None, None, Some(7)], "only the asked-for slots are written");
    }

    #[test]
    fn many_exact_rules() {
        let r: Vec<(Match, RuleRef)> = (0..5000u32)
            .map(|i| {
                let mut m = Match::ANY;
                m.set(slot::ETH_TYPE, 0x0800, 0xffff).unwrap();
                m.set(slot::NW_DST, 0x0a00_0000 + i as u64, 0xffff_ffff).unwrap();
                (m, RuleRef { priority: 100, id: i })
            })
            .collect();
        let c = Classifier::build(r.iter().copied());
        for i in (0..5000u32).step_by(7) {
            let mut k = FlowKey::ZERO;
            slot::ETH_TYPE.set(&mut k, 0x0800);
            slot::NW_DST.set(&mut k, 0x0a00_0000 + i as u64);
            assert_eq!(c.lookup(&k), Some(i));
        }
    }

    /// Fields the random rules use: a few values each, so random packets hit often.
    fn arb_rule() -> impl Strategy<Value = (Match, u16)> {
        (
            prop::option::of(0u64..4),                                               // in_port
            prop::option::of(prop::sample::select(vec![0x0800u64, 0x86dd, 0x0806])), // eth_type
            prop::option::of((
                0u64..4,
                prop::sample::select(vec![0u64, 0xff00_0000, 0xffff_0000, 0xffff_ff00, 0xffff_ffff]),
            )),
            prop::option::of((0u64..4, prop::sample::select(vec![0xffffu64, 0xfff0, 0x0001]))),
            prop::option::of(0u64..3), // eth_dst low bits, exact
            0u16..6,                   // priority (few values: many ties and overlaps)
        )
            .prop_map(|(port, eth, nw, tp, dst, prio)| {
                let mut m = Match::ANY;
                if let Some(p) = port {
                    m.set(slot::IN_PORT, p, 0xffff).unwrap();
                }
                if let Some(e) = eth {
                    m.set(slot::ETH_TYPE, e, 0xffff).unwrap();
                }
                if let Some((v, mask)) = nw {
                    m.set(slot::NW_DST, 0x0a00_0000 | v << 8 | v, mask).unwrap();
                }
                if let Some((v, mask)) = tp {
                    m.set(slot::TP_DST, 80 + v, mask).unwrap();
                }
                if let Some(d) = dst {
                    m.set(slot::ETH_DST, 0x0200_0000_0000 | d, 0xffff_ffff_ffff).unwrap();
                }
                (m, prio * 10)
            })
    }

    fn arb_key() -> impl Strategy<Value = FlowKey> {
        (0u64..4, prop::sample::select(vec![0x0800u64, 0x86dd, 0x0806]), 0u64..4, 0u64..4, 0u64..3).prop_map(
            |(port, eth, nw, tp, dst)| {
                let mut k = FlowKey::ZERO;
                slot::IN_PORT.set(&mut k, port);
                slot::ETH_TYPE.set(&mut k, eth);
                slot::NW_DST.set(&mut k, 0x0a00_0000 | nw << 8 | nw);
                slot::TP_DST.set(&mut k, 80 + tp);
                slot::ETH_DST.set(&mut k, 0x0200_0000_0000 | dst);
                k
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// The classifier finds a matching rule of the same priority as a linear scan does
        /// (the same rule when that priority is unique), one key at a time and in batches.
        #[test]
        fn agrees_with_linear_scan(
            raw in prop::collection::vec(arb_rule(), 0..60),
            keys in prop::collection::vec(arb_key(), 1..BATCH),
        ) {
            let rules: Vec<(Match, RuleRef)> =
                raw.into_iter().enumerate().map(|(i, (m, p))| (m, RuleRef { priority: p, id: i as u32 })).collect();
            let c = Classifier::build(rules.iter().copied());
            for (i, (m, _)) in rules.iter().enumerate() {
                prop_assert_eq!(c.rule_match(i), *m, "rule {}", i);
            }
            let mut batch = [None; BATCH];
            let todo = if keys.len() == BATCH { u32::MAX } else { (1u32 << keys.len()) - 1 };
            let mut padded = [FlowKey::ZERO; BATCH];
            padded[..keys.len()].copy_from_slice(&keys);
            c.lookup_batch(&padded, todo, &mut batch);
            for (i, k) in keys.iter().enumerate() {
                let want = lookup_linear(&rules, k);
                let want_prio = want.map(|w| rules[w as usize].1.priority);
                let unique = want_prio.is_some_and(|p| rules.iter().filter(|(m, r)| r.priority == p && m.matches(k)).count() == 1);
                for got in [c.lookup(k), batch[i]] {
                    prop_assert_eq!(got.map(|g| rules[g as usize].1.priority), want_prio, "key {:?}", k);
                    if let Some(g) = got {
                        prop_assert!(rules[g as usize].0.matches(k), "rule {} does not match {:?}", g, k);
                    }
                    if unique {
                        prop_assert_eq!(got, want);
                    }
                }
            }
        }
    }
}
