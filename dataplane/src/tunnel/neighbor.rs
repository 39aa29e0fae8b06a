//! The underlay neighbor table: IPv4 address → MAC, for the next hop of encapsulated
//! packets. Learned from ARP on uplinks, or static (config, API).
//!
//! Thread-safety: like the MAC table, lock-free and shared by workers and the control plane.
//! A slot is (key, entry) words; keys are claimed by compare-and-swap and never change, an
//! entry is one word written with one store. An unresolved address keeps in its entry the
//! second its last ARP request went out, so requests are sent at most once a second.

use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;

use crate::dpdk::{AtomicPair, ZeroedPairs};

const KEY_PRESENT: u64 = 1 << 63;
const VALID: u64 = 1 << 63;
const STATIC: u64 = 1 << 62;
/// Entry of an address being resolved: low 32 bits hold the last request second + 1.
const PENDING: u64 = 1 << 61;
const MAX_PROBE: usize = 16;

/// One neighbor, as the control plane reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbor {
    pub ip: Ipv4Addr,
    /// None while unresolved.
    pub mac: Option<[u8; 6]>,
    pub is_static: bool,
}

pub struct NeighborTable {
    slots: ZeroedPairs,
    mask: usize,
}

fn key(ip: Ipv4Addr) -> u64 {
    KEY_PRESENT | u32::from(ip) as u64
}

fn mac_word(mac: [u8; 6]) -> u64 {
    u64::from_be_bytes([0, 0, mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]])
}

fn word_mac(w: u64) -> [u8; 6] {
    let b = w.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

impl NeighborTable {
    /// A table for about `capacity` addresses.
    pub fn new(capacity: usize) -> NeighborTable {
        let n = (capacity.max(8) * 2).next_power_of_two();
        NeighborTable { slots: ZeroedPairs::new(n), mask: n - 1 }
    }

    fn home(&self, k: u64) -> usize {
        (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize & self.mask
    }

    fn find(&self, ip: Ipv4Addr) -> Option<&AtomicPair> {
        let k = key(ip);
        let mut i = self.home(k);
        for _ in 0..MAX_PROBE {
            let s = &self.slots[i];
            match s.0.load(Ordering::Acquire) {
                x if x == k => return Some(s),
                0 => return None,
                _ => i = (i + 1) & self.mask,
            }
        }
        None
    }

    fn claim(&self, ip: Ipv4Addr) -> Option<&AtomicPair> {
        let k = key(ip);
        let mut i = self.home(k);
        for _ in 0..MAX_PROBE {
            let s = &self.slots[i];
            match s.0.compare_exchange(0, k, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(s),
                Err(x) if x == k => return Some(s),
                Err(_) => i = (i + 1) & self.mask,
            }
        }
        None
    }

    /// The MAC of a resolved neighbor.
    #[inline]
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<[u8; 6]> {
        let e = self.find(ip)?.1.load(Ordering::Acquire);
        (e & VALID != 0).then(|| word_mac(e))
    }

    /// Records what ARP said. Static entries are not changed by learning. False when the
    /// table has no room.
    pub fn learn(&self, ip: Ipv4Addr, mac: [u8; 6]) -> bool {
        let Some(s) = self.claim(ip) else { return false };
        let e = s.1.load(Ordering::Acquire);
        if e & STATIC != 0 || (e & VALID != 0 && word_mac(e) == mac) {
            return true;
        }
        s.1.store(VALID | mac_word(mac), Ordering::Release);
        true
    }

    /// Adds or replaces a static entry; false when the table has no room.
    pub fn insert_static(&self, ip: Ipv4Addr, mac: [u8; 6]) -> bool {
        match self.claim(ip) {
            Some(s) => {
                s.1.store(VALID | STATIC | mac_word(mac), Ordering::Release);
                true
            }
            None => false,
        }
    }

    /// Removes an entry (static or learned); true if it was there.
    pub fn remove(&self, ip: Ipv4Addr) -> bool {
        match self.find(ip) {
            Some(s) => s.1.swap(0, Ordering::AcqRel) & (VALID | PENDING) != 0,
            None => false,
        }
    }

    /// Whether an ARP request for an unresolved `ip` should go out at second `now` (at most
    /// one a second per address); marks it as sent. False for resolved addresses.
    pub fn should_request(&self, ip: Ipv4Addr, now: u32) -> bool {
        let Some(s) = self.claim(ip) else { return false };
        let e = s.1.load(Ordering::Acquire);
        if e & VALID != 0 {
            return false;
        }
        let stamp = now as u64 + 1;
        if e & PENDING != 0 && (e & 0xffff_ffff) == stamp {
            return false;
        }
        s.1.compare_exchange(e, PENDING | stamp, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// Every entry, resolved or being resolved.
    pub fn entries(&self) -> Vec<Neighbor> {
        let mut out = Vec::new();
        for s in self.slots.iter() {
            let k = s.0.load(Ordering::Acquire);
            let e = s.1.load(Ordering::Acquire);
            if k == 0 || e & (VALID | PENDING) == 0 {
                continue;
            }
            out.push(Neighbor {
                ip: Ipv4Addr::from(k as u32),
                mac: (e & VALID != 0).then(|| word_mac(e)),
                is_static: e & STATIC != 0,
            });
        }
        out.sort_by_key(|n| n.ip);
        out
    }

    /// Resolved entries.
    pub fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.1.load(Ordering::Relaxed) & VALID != 0).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
    const M1: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const M2: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[test]
    fn learn_lookup_static_remove() {
        let t = NeighborTable::new(16);
        assert_eq!(t.lookup(A), None);
        assert!(t.learn(A, M1));
        assert_eq!(t.lookup(A), Some(M1));
        assert!(t.learn(A, M2));
        assert_eq!(t.lookup(A), Some(M2), "ARP moves a learned entry");
        assert!(t.insert_static(A, M1));
        t.learn(A, M2);
        assert_eq!(t.lookup(A), Some(M1), "static entries stay");
        assert_eq!(t.entries(), vec![Neighbor { ip: A, mac: Some(M1), is_static: true }]);
        assert!(t.remove(A));
        assert_eq!(t.lookup(A), None);
        assert!(!t.remove(A));
    }

    #[test]
    fn requests_are_rate_limited_per_second() {
        let t = NeighborTable::new(16);
        assert!(t.should_request(A, 10));
        assert!(!t.should_request(A, 10), "one request per second");
        assert!(t.should_request(A, 11));
        assert_eq!(t.entries(), vec![Neighbor { ip: A, mac: None, is_static: false }]);
        t.learn(A, M1);
        assert!(!t.should_request(A, 12), "resolved: no request");
    }
}
