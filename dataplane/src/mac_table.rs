//! The MAC learning table: (VLAN, MAC) → port, shared by every worker.
//!
//! Thread-safety: workers look entries up and learn into the table concurrently, with no lock:
//! each slot is a pair of atomic words (key, entry) in one 16-byte aligned cell. Keys are claimed with a compare-and-swap and
//! never change afterwards, so linear probing stays valid; an entry is one 64-bit word (valid
//! bit, static bit, port, last-seen second) written with a single store. The control plane
//! ages and flushes entries by clearing the valid bit with a compare-and-swap, so a concurrent
//! refresh by a worker wins. Slots whose entry went dead keep their key (a tombstone) and are
//! reused when the same address comes back; when tombstones pile up the control plane builds a
//! fresh table and publishes it with the next pipeline snapshot (see `Switch::maintain`).
//!
//! Writes by workers are rare by design: a known station on its known port costs two loads;
//! its last-seen time is rewritten at most once per second ([`REFRESH_SECS`]).

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::dpdk::{AtomicPair, ZeroedPairs};
use crate::wire::MacAddr;

/// Port index inside the switch (dense, 0-based); not the user-visible port number.
pub type PortIdx = u16;

/// A learned entry's last-seen time is rewritten at most this often.
pub const REFRESH_SECS: u32 = 1;
/// Slots a lookup inspects before it gives up. At the load this table allows (half of the
/// slots), a miss inspects about 2.5 slots on average; 32 bounds the worst case.
const MAX_PROBE: usize = 32;

const KEY_PRESENT: u64 = 1 << 63;
const ENTRY_VALID: u64 = 1 << 63;
const ENTRY_STATIC: u64 = 1 << 62;

/// The table key of a station: VLAN and MAC (in u64 form, see [`MacAddr::to_u64`]).
#[inline(always)]
fn make_key(vlan: u16, mac: u64) -> u64 {
    KEY_PRESENT | ((vlan as u64 & 0xfff) << 48) | (mac & 0xffff_ffff_ffff)
}

#[inline(always)]
fn make_entry(port: PortIdx, now: u32, is_static: bool) -> u64 {
    ENTRY_VALID | if is_static { ENTRY_STATIC } else { 0 } | ((port as u64) << 32) | now as u64
}

#[inline(always)]
fn entry_port(e: u64) -> PortIdx {
    (e >> 32) as PortIdx
}

#[inline(always)]
fn entry_seen(e: u64) -> u32 {
    e as u32
}

/// A slot: key word, then entry word.
type Slot = AtomicPair;

/// What [`MacTable::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// Known on this port and seen recently: nothing written.
    Unchanged,
    /// Known on this port; its last-seen time was updated.
    Refreshed,
    /// A new entry.
    New,
    /// Known on another port before (a station move).
    Moved,
    /// A static entry for this address exists; learning does not override it.
    Static,
    /// No room: the table is at its capacity or the probe run is full.
    TableFull,
}

/// One entry as the control plane reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MacEntry {
    pub vlan: u16,
    pub mac: MacAddr,
    pub port: PortIdx,
    /// Seconds since the entry was last refreshed (0 for static entries).
    pub age_secs: u32,
    pub is_static: bool,
}

/// Selects entries for [`MacTable::flush`].
#[derive(Debug, Clone, Copy, Default)]
pub struct FlushFilter {
    pub port: Option<PortIdx>,
    pub vlan: Option<u16>,
    pub mac: Option<MacAddr>,
    pub include_static: bool,
}

pub struct MacTable {
    /// On transparent hugepages when the table is large.
    slots: ZeroedPairs,
    mask: usize,
    capacity: usize,
    /// Slots whose key is claimed (live entries plus tombstones).
    claimed: AtomicUsize,
}

impl MacTable {
    /// A table for up to `capacity` addresses (VLAN, MAC pairs).
    pub fn new(capacity: usize) -> MacTable {
        let capacity = capacity.max(1);
        let n = (capacity * 2).next_power_of_two();
        MacTable { slots: ZeroedPairs::new(n), mask: n - 1, capacity, claimed: AtomicUsize::new(0) }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn slots(&self) -> impl Iterator<Item = &Slot> {
        self.slots.iter()
    }

    #[inline(always)]
    fn home(&self, key: u64) -> usize {
        // Fibonacci hashing: the multiply spreads the VLAN and low MAC bits over the top bits.
        (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & self.mask
    }

    /// Starts loading the slot where a lookup of (vlan, mac) begins, so that a lookup a few
    /// packets later finds it in cache. Burst processing calls this for every packet first.
    #[inline(always)]
    pub fn prefetch(&self, vlan: u16, mac: u64) {
        crate::dpdk::prefetch(&self.slots[self.home(make_key(vlan, mac))]);
    }

    /// The port a station was learned on (or statically set to).
    #[inline]
    pub fn lookup(&self, vlan: u16, mac: MacAddr) -> Option<PortIdx> {
        self.lookup_u64(vlan, mac.to_u64())
    }

    /// [`MacTable::lookup`] with the MAC in u64 form (the datapath's).
    #[inline]
    pub fn lookup_u64(&self, vlan: u16, mac: u64) -> Option<PortIdx> {
        let key = make_key(vlan, mac);
        let mut i = self.home(key);
        for _ in 0..MAX_PROBE {
            let slot = &self.slots[i];
            let k = slot.0.load(Ordering::Acquire);
            if k == key {
                let e = slot.1.load(Ordering::Acquire);
                return (e & ENTRY_VALID != 0).then(|| entry_port(e));
            }
            if k == 0 {
                return None;
            }
            i = (i + 1) & self.mask;
        }
        None
    }

    /// Records that `mac` on `vlan` was seen on `port` at second `now`.
    #[inline]
    pub fn learn(&self, vlan: u16, mac: MacAddr, port: PortIdx, now: u32) -> Learned {
        self.learn_u64(vlan, mac.to_u64(), port, now)
    }

    /// [`MacTable::learn`] with the MAC in u64 form.
    #[inline]
    pub fn learn_u64(&self, vlan: u16, mac: u64, port: PortIdx, now: u32) -> Learned {
        let key = make_key(vlan, mac);
        let mut i = self.home(key);
        for _ in 0..MAX_PROBE {
            let slot = &self.slots[i];
            let k = slot.0.load(Ordering::Acquire);
            if k == key {
                return Self::update(slot, port, now);
            }
            if k == 0 {
                if self.claimed.load(Ordering::Relaxed) >= self.capacity {
                    return Learned::TableFull;
                }
                match slot.0.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                    Ok(_) => {
                        self.claimed.fetch_add(1, Ordering::Relaxed);
                        slot.1.store(make_entry(port, now, false), Ordering::Release);
                        return Learned::New;
                    }
                    Err(k) if k == key => return Self::update(slot, port, now),
                    Err(_) => {}
                }
            }
            i = (i + 1) & self.mask;
        }
        Learned::TableFull
    }

    #[inline]
    fn update(slot: &Slot, port: PortIdx, now: u32) -> Learned {
        let e = slot.1.load(Ordering::Relaxed);
        if e & ENTRY_VALID == 0 {
            slot.1.store(make_entry(port, now, false), Ordering::Release);
            return Learned::New;
        }
        if e & ENTRY_STATIC != 0 {
            return Learned::Static;
        }
        if entry_port(e) != port {
            slot.1.store(make_entry(port, now, false), Ordering::Release);
            return Learned::Moved;
        }
        if now.wrapping_sub(entry_seen(e)) < REFRESH_SECS {
            return Learned::Unchanged;
        }
        slot.1.store(make_entry(port, now, false), Ordering::Release);
        Learned::Refreshed
    }

    /// Adds or replaces a static entry (never aged, never moved by learning).
    /// Returns false when the table has no room.
    pub fn insert_static(&self, vlan: u16, mac: MacAddr, port: PortIdx) -> bool {
        let key = make_key(vlan, mac.to_u64());
        let mut i = self.home(key);
        for _ in 0..MAX_PROBE {
            let slot = &self.slots[i];
            let k = slot.0.load(Ordering::Acquire);
            let claimed = k == key
                || (k == 0
                    && match slot.0.compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire) {
                        Ok(_) => {
                            self.claimed.fetch_add(1, Ordering::Relaxed);
                            true
                        }
                        Err(k) => k == key,
                    });
            if claimed {
                slot.1.store(make_entry(port, 0, true), Ordering::Release);
                return true;
            }
            i = (i + 1) & self.mask;
        }
        false
    }

    /// Removes entries older than `max_age` seconds at second `now`; returns how many.
    pub fn age(&self, now: u32, max_age: u32) -> usize {
        let mut removed = 0;
        for slot in self.slots() {
            let e = slot.1.load(Ordering::Acquire);
            if e & ENTRY_VALID != 0
                && e & ENTRY_STATIC == 0
                && now.wrapping_sub(entry_seen(e)) > max_age
                && slot.1.compare_exchange(e, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok()
            {
                removed += 1;
            }
        }
        removed
    }

    /// Removes the entries the filter selects; returns how many.
    pub fn flush(&self, filter: &FlushFilter) -> usize {
        let mut removed = 0;
        for slot in self.slots() {
            let k = slot.0.load(Ordering::Acquire);
            let e = slot.1.load(Ordering::Acquire);
            if k == 0 || e & ENTRY_VALID == 0 {
                continue;
            }
            let (vlan, mac) = (((k >> 48) & 0xfff) as u16, MacAddr::from_u64(k));
            let selected = (filter.include_static || e & ENTRY_STATIC == 0)
                && filter.port.is_none_or(|p| p == entry_port(e))
                && filter.vlan.is_none_or(|v| v == vlan)
                && filter.mac.is_none_or(|m| m == mac);
            if selected && slot.1.compare_exchange(e, 0, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
                removed += 1;
            }
        }
        removed
    }

    /// Every live entry, with ages computed at second `now`.
    pub fn entries(&self, now: u32) -> Vec<MacEntry> {
        let mut out = Vec::new();
        for slot in self.slots() {
            let k = slot.0.load(Ordering::Acquire);
            let e = slot.1.load(Ordering::Acquire);
            if k == 0 || e & ENTRY_VALID == 0 {
                continue;
            }
            let is_static = e & ENTRY_STATIC != 0;
            out.push(MacEntry {
                vlan: ((k >> 48) & 0xfff) as u16,
                mac: MacAddr::from_u64(k),
                port: entry_port(e),
                age_secs: if is_static { 0 } else { now.wrapping_sub(entry_seen(e)) },
                is_static,
            });
        }
        out
    }

    /// Live entries.
    pub fn len(&self) -> usize {
        self.slots().filter(|s| s.1.load(Ordering::Relaxed) & ENTRY_VALID != 0).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots holding a key whose entry is dead: room that only a rebuild gives back.
    pub fn tombstones(&self) -> usize {
        self.claimed.load(Ordering::Relaxed).saturating_sub(self.len())
    }

    /// Whether a rebuild would give back enough room to be worth it: tombstones take a
    /// quarter of the capacity.
    pub fn needs_rebuild(&self) -> bool {
        self.tombstones() * 4 >= self.capacity
    }

    /// A new table of the same capacity holding this one's live entries (read at `now`).
    pub fn rebuilt(&self, now: u32) -> MacTable {
        let t = MacTable::new(self.capacity);
        for e in self.entries(now) {
            if e.is_static {
                t.insert_static(e.vlan, e.mac, e.port);
            } else {
                t.learn(e.vlan, e.mac, e.port, now.wrapping_sub(e.age_secs));
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(i: u32) -> MacAddr {
        let b = i.to_be_bytes();
        MacAddr([2, 0, b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn learn_then_lookup() {
        let t = MacTable::new(16);
        assert_eq!(t.lookup(0, mac(1)), None);
        assert_eq!(t.learn(0, mac(1), 3, 10), Learned::New);
        assert_eq!(t.lookup(0, mac(1)), Some(3));
        // Same MAC on another VLAN is another station.
        assert_eq!(t.lookup(7, mac(1)), None);
        assert_eq!(t.learn(0, mac(1), 3, 10), Learned::Unchanged);
        assert_eq!(t.learn(0, mac(1), 3, 12), Learned::Refreshed);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn station_move() {
        let t = MacTable::new(16);
        t.learn(5, mac(9), 1, 0);
        assert_eq!(t.learn(5, mac(9), 2, 0), Learned::Moved);
        assert_eq!(t.lookup(5, mac(9)), Some(2));
    }

    #[test]
    fn aging_removes_only_old_dynamic_entries() {
        let t = MacTable::new(16);
        t.learn(0, mac(1), 1, 100);
        t.learn(0, mac(2), 1, 390);
        assert!(t.insert_static(0, mac(3), 2));
        assert_eq!(t.age(401, 300), 1);
        assert_eq!(t.lookup(0, mac(1)), None);
        assert_eq!(t.lookup(0, mac(2)), Some(1));
        assert_eq!(t.lookup(0, mac(3)), Some(2));
        // An aged-out station comes back: the tombstone is revived, no new slot is claimed.
        assert_eq!(t.learn(0, mac(1), 4, 402), Learned::New);
        assert_eq!(t.lookup(0, mac(1)), Some(4));
        assert_eq!(t.tombstones(), 0);
    }

    #[test]
    fn static_entries_resist_learning_and_plain_flush() {
        let t = MacTable::new(16);
        t.insert_static(0, mac(1), 2);
        assert_eq!(t.learn(0, mac(1), 5, 0), Learned::Static);
        assert_eq!(t.lookup(0, mac(1)), Some(2));
        assert_eq!(t.flush(&FlushFilter::default()), 0);
        let all = FlushFilter { include_static: true, ..Default::default() };
        assert_eq!(t.flush(&all), 1);
        assert_eq!(t.lookup(0, mac(1)), None);
    }

    #[test]
    fn flush_by_port_vlan_and_mac() {
        let t = MacTable::new(64);
        for i in 0..10 {
            t.learn((i % 2) as u16, mac(i), (i % 3) as PortIdx, 0);
        }
        let by_port = FlushFilter { port: Some(0), ..Default::default() };
        assert_eq!(t.flush(&by_port), 4); // i = 0, 3, 6, 9
        let by_vlan = FlushFilter { vlan: Some(1), ..Default::default() };
        assert_eq!(t.flush(&by_vlan), 3); // odd i left: 1, 5, 7
        let by_mac = FlushFilter { mac: Some(mac(2)), ..Default::default() };
        assert_eq!(t.flush(&by_mac), 1);
        let mut left: Vec<_> = t.entries(0).into_iter().map(|e| e.mac).collect();
        left.sort();
        assert_eq!(left, vec![mac(4), mac(8)]);
    }

    #[test]
    fn capacity_is_enforced_and_rebuild_reclaims() {
        let t = MacTable::new(8);
        for i in 0..8 {
            assert_eq!(t.learn(0, mac(i), 1, 0), Learned::New);
        }
        assert_eq!(t.learn(0, mac(100), 1, 0), Learned::TableFull);
        assert_eq!(t.lookup(0, mac(100)), None);
        assert_eq!(t.age(1000, 300), 8);
        assert_eq!(t.tombstones(), 8);
        assert!(t.needs_rebuild());
        // Tombstones of other addresses do not make room...
        assert_eq!(t.learn(0, mac(100), 1, 1000), Learned::TableFull);
        // ...a rebuild does, and keeps live entries.
        t.learn(0, mac(3), 2, 1000);
        let r = t.rebuilt(1000);
        assert_eq!(r.lookup(0, mac(3)), Some(2));
        assert_eq!(r.tombstones(), 0);
        assert_eq!(r.learn(0, mac(100), 1, 1000), Learned::New);
    }

    #[test]
    fn entries_report_age() {
        let t = MacTable::new(4);
        t.learn(10, mac(1), 1, 50);
        let e = t.entries(80);
        assert_eq!(e, vec![MacEntry { vlan: 10, mac: mac(1), port: 1, age_secs: 30, is_static: false }]);
    }

    #[test]
    fn concurrent_learners_agree() {
        let t = std::sync::Arc::new(MacTable::new(4096));
        let threads: Vec<_> = (0..4)
            .map(|w| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        t.learn(0, mac(i), w, 0);
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        // Every address is present exactly once, on one of the learners' ports.
        let entries = t.entries(0);
        assert_eq!(entries.len(), 2000);
        let mut macs: Vec<_> = entries.iter().map(|e| e.mac).collect();
        macs.sort();
        macs.dedup();
        assert_eq!(macs.len(), 2000);
        assert!(entries.iter().all(|e| e.port < 4));
    }
}
