//! The direct table: a flat hash of table 0 when that table is the whole pipeline for every
//! packet that hits it: one mask over at most two key words (exact MACs, exact addresses,
//! in_port plus a MAC...), and every rule sends to one port and stops. A hit is then one
//! probe of one inline entry (masked value, port, counter slot) instead of the general
//! classifier's subtable walk, candidate check against a separate value array and
//! priority compare. Misses go on to the general classifier, which handles the table-miss
//! action; so the direct table only ever answers what the classifier would.
//!
//! Like the classifier, it is immutable once built and published with the pipeline.

use super::classifier::{finish_hash, BATCH, KEY_HASH};
use super::compiled::{CompiledTable, Path, Step, SIMPLE};
use super::key::FlowKey;
use crate::mac_table::PortIdx;

const EMPTY: u32 = u32::MAX;

/// One rule, or an empty slot: what a hit needs, in half a cache line.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Entry {
    /// The rule's match value over the two words (the second is 0 with a one-word mask).
    value: [u64; 2],
    /// Index of the rule in its table, or EMPTY.
    index: u32,
    /// Counter slot (flow id).
    id: u32,
    port: PortIdx,
}

const VACANT: Entry = Entry { value: [0; 2], index: EMPTY, id: 0, port: 0 };

/// A probe under way: the masked key and the slot it starts at.
#[derive(Clone, Copy, Default)]
pub struct Probe {
    value: [u64; 2],
    home: usize,
}

pub struct DirectTable {
    /// The key words the mask covers (the same word twice with a one-word mask).
    words: [usize; 2],
    /// The mask over those words (the second all zero with a one-word mask).
    mask: [u64; 2],
    entries: Box<[Entry]>,
    slot_mask: usize,
}

impl DirectTable {
    /// The direct table of table 0, if it qualifies: exactly one mask, over at most two key
    /// words, and every rule only sends to one port.
    pub fn build(t0: &CompiledTable) -> Option<DirectTable> {
        let [subtable] = t0.classifier.subtables() else { return None };
        if t0.hot.iter().any(|h| h.flags & SIMPLE == 0) {
            return None;
        }
        let m = &subtable.mask().0;
        let (words, mask) = match *subtable.words() {
            [w] => ([w as usize; 2], [m[w as usize], 0]),
            [a, b] => ([a as usize, b as usize], [m[a as usize], m[b as usize]]),
            _ => return None,
        };
        // Of rules with one value, the classifier answers the highest priority, then the
        // lowest id: a slot keeps the better of two rules as they come (no sort first).
        let better = |i: usize, than: usize| {
            let (a, b) = (&t0.rules[i], &t0.rules[than]);
            (a.priority, std::cmp::Reverse(a.id)) > (b.priority, std::cmp::Reverse(b.id))
        };
        let n = (t0.rules.len() * 2).next_power_of_two().max(2);
        let mut entries = Vec::with_capacity(n);
        crate::dpdk::populate(entries.spare_capacity_mut());
        entries.resize(n, VACANT);
        let mut d = DirectTable { words, mask, entries: entries.into_boxed_slice(), slot_mask: n - 1 };
        for i in 0..t0.rules.len() {
            let v = t0.classifier.value(i);
            let value = [v.0[words[0]] & mask[0], v.0[words[1]] & mask[1]];
            let mut at = d.hash_value(value) as usize & d.slot_mask;
            loop {
                let e = &mut d.entries[at];
                if e.index == EMPTY || (e.value == value && better(i, e.index as usize)) {
                    let hot = &t0.hot[i];
                    *e = Entry { value, index: i as u32, id: hot.id, port: hot.port };
                    break;
                }
                if e.value == value {
                    break; // a better rule with the same match has the slot
                }
                at = (at + 1) & d.slot_mask;
            }
        }
        Some(d)
    }

    #[inline(always)]
    fn masked(&self, key: &FlowKey) -> [u64; 2] {
        [key.0[self.words[0]] & self.mask[0], key.0[self.words[1]] & self.mask[1]]
    }

    #[inline(always)]
    fn hash_value(&self, v: [u64; 2]) -> u32 {
        finish_hash(v[0].wrapping_mul(KEY_HASH[self.words[0]]).wrapping_add(v[1].wrapping_mul(KEY_HASH[self.words[1]])))
    }

    /// Starts the probe for `key`: its masked value and home slot, whose line is prefetched
    /// so the probes of a burst overlap.
    #[inline(always)]
    pub fn start(&self, key: &FlowKey) -> Probe {
        let value = self.masked(key);
        let home = self.hash_value(value) as usize & self.slot_mask;
        crate::dpdk::prefetch(&self.entries[home]);
        Probe { value, home }
    }

    /// The entry of the rule a started probe hits, if any.
    #[inline(always)]
    fn find(&self, probe: &Probe) -> Option<&Entry> {
        let v = probe.value;
        let mut at = probe.home;
        loop {
            let e = &self.entries[at];
            if e.index == EMPTY {
                return None;
            }
            if (e.value[0] ^ v[0]) | (e.value[1] ^ v[1]) == 0 {
                return Some(e);
            }
            at = (at + 1) & self.slot_mask;
        }
    }

    /// The port and counter slot of the rule a started probe hits, if any.
    #[inline(always)]
    pub fn finish(&self, probe: &Probe) -> Option<(PortIdx, u32)> {
        self.find(probe).map(|e| (e.port, e.id))
    }

    /// Sets the path of every key in `todo` that hits (a one-step path to its rule, with its
    /// port and counter slot) and returns the keys that missed. Two passes, so the slot
    /// loads of the burst overlap.
    #[inline]
    pub fn classify_batch(&self, keys: &[FlowKey; BATCH], todo: u32, paths: &mut [Path; BATCH]) -> u32 {
        let mut probes = [Probe::default(); BATCH];
        let mut live = todo;
        while live != 0 {
            let i = live.trailing_zeros() as usize;
            live &= live - 1;
            probes[i] = self.start(&keys[i]);
        }
        let mut missed = 0u32;
        let mut live = todo;
        while live != 0 {
            let i = live.trailing_zeros() as usize;
            live &= live - 1;
            match self.find(&probes[i]) {
                Some(e) => paths[i].set_simple(Step::rule(0, e.index), e.port, e.id),
                None => missed |= 1 << i,
            }
        }
        missed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::compiled::tests::tables;
    use crate::flow::compiled::{FlowTables, MissAction};
    use crate::flow::parse::parse_packet;
    use proptest::prelude::*;

    fn direct(flows: &[&str]) -> bool {
        tables(flows, &[]).direct().is_some()
    }

    #[test]
    fn qualifies_only_with_one_mask_of_two_words_and_single_outputs() {
        assert!(direct(&["dl_dst=02:00:00:00:00:01,actions=output:1", "dl_dst=02:00:00:00:00:02,actions=output:2"]));
        assert!(direct(&["ip,nw_dst=10.0.0.1,actions=output:1", "priority=5,ip,nw_dst=10.0.0.1,actions=output:2"]));
        assert!(direct(&["in_port=1,dl_dst=02:00:00:00:00:01,actions=output:2"]), "in_port and eth_type share a word");
        assert!(!direct(&["dl_dst=02:00:00:00:00:01,actions=output:1", "ip,actions=output:2"]), "two masks");
        assert!(!direct(&["dl_dst=02:00:00:00:00:01,actions=output:1,output:2"]), "two outputs");
        assert!(!direct(&["dl_dst=02:00:00:00:00:01,actions=goto_table:1"]), "goto");
        assert!(!direct(&["dl_dst=02:00:00:00:00:01,actions=mod_nw_dst:10.0.0.1,output:1"]), "a packet change");
        assert!(!direct(&["ip,nw_dst=10.0.0.1,dl_dst=02:00:00:00:00:01,actions=output:1"]), "three words");
        assert!(!direct(&[]), "no rules: nothing to hit");
    }

    #[test]
    fn the_best_of_equal_matches_wins_and_misses_take_the_table_miss() {
        let t = tables(
            &[
                "priority=5,ip,nw_dst=10.0.0.1,actions=output:1",
                "priority=9,ip,nw_dst=10.0.0.1,actions=output:2",
                "priority=9,ip,nw_dst=10.0.0.1,actions=output:3",
                "priority=1,ip,nw_dst=10.0.0.2,actions=output:4",
            ],
            &[(0, MissAction::Normal)],
        );
        assert!(t.direct().is_some());
        let mut keys = [FlowKey::ZERO; BATCH];
        for (i, text) in ["ip,nw_dst=10.0.0.1", "ip,nw_dst=10.0.0.2", "ip,nw_dst=10.0.0.3", "arp"].iter().enumerate() {
            keys[i] = parse_packet(text).unwrap();
        }
        let mut paths = [Path::default(); BATCH];
        t.classify_batch(&mut keys, 0b1111, &mut paths);
        let outcome = |p: &Path| match t.rule(p.steps()[0]) {
            Some(r) => (format!("{:?}", r.ops), p.simple_port),
            None => ("miss".to_string(), p.simple_port),
        };
        assert_eq!(outcome(&paths[0]), ("[Output(2)]".to_string(), 2), "priority 9, lower id of the two");
        assert_eq!(outcome(&paths[1]), ("[Output(4)]".to_string(), 4));
        assert_eq!(outcome(&paths[2]), ("miss".to_string(), crate::flow::compiled::NO_PORT));
        assert_eq!(outcome(&paths[3]), ("miss".to_string(), crate::flow::compiled::NO_PORT));
    }

    /// Random rule sets over one mask (values from a small set, so duplicates and shadowed
    /// rules are common): the direct table's batch answers equal the general classifier's.
    fn arb_flows() -> impl Strategy<Value = (u8, Vec<(u64, u16, u16)>)> {
        (0u8..3, prop::collection::vec((0u64..12, 0u16..4, 1u16..5), 1..80))
    }

    fn flow_text(kind: u8, (v, prio, port): (u64, u16, u16)) -> String {
        match kind {
            0 => format!("priority={prio},dl_dst=02:00:00:00:00:{v:02x},actions=output:{port}"),
            1 => format!("priority={prio},ip,nw_dst=10.0.0.{v},actions=output:{port}"),
            _ => format!("priority={prio},in_port={},dl_src=02:00:00:00:01:{v:02x},actions=output:{port}", v % 3),
        }
    }

    fn packet_text(kind: u8, v: u64) -> String {
        match kind {
            0 => format!("ip,dl_dst=02:00:00:00:00:{v:02x}"),
            1 => format!("ip,nw_dst=10.0.0.{v}"),
            _ => format!("in_port={},dl_src=02:00:00:00:01:{v:02x}", v % 3),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn agrees_with_the_classifier((kind, raw) in arb_flows(), probes in prop::collection::vec(0u64..16, 1..BATCH)) {
            let texts: Vec<String> = raw.iter().map(|r| flow_text(kind, *r)).collect();
            let refs: Vec<&str> = texts.iter().map(|s| s.as_str()).collect();
            let t: FlowTables = tables(&refs, &[]);
            prop_assert!(t.direct().is_some());
            let mut keys = [FlowKey::ZERO; BATCH];
            for (i, v) in probes.iter().enumerate() {
                keys[i] = parse_packet(&packet_text(kind, *v)).unwrap();
            }
            let mut paths = [Path::default(); BATCH];
            let mut batch_keys = keys;
            t.classify_batch(&mut batch_keys, (1u32 << probes.len()) - 1, &mut paths);
            for i in 0..probes.len() {
                let want = t.classify(&mut keys[i]);
                prop_assert_eq!(paths[i], want, "packet {}", packet_text(kind, probes[i]));
                // A hit carries its rule's port and counter slot for the send-at-once path.
                match t.rule(want.steps()[0]) {
                    Some(r) => {
                        prop_assert_eq!(Some(paths[i].simple_port), r.simple_output());
                        prop_assert_eq!(paths[i].simple_id, r.id);
                    }
                    None => prop_assert_eq!(paths[i].simple_port, crate::flow::compiled::NO_PORT),
                }
            }
        }
    }
}
