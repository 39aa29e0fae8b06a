//! Live packet trace: marks the next N packets that match a filter and records, for each, what
//! really happened to it (the ports it left through, or why it was dropped).
//!
//! Off, it costs one relaxed load per received burst. Armed, a worker parses the packets of
//! each burst against the filter, runs those that match one at a time through the same
//! pipeline with an [`Egress`] that records their fate, and hands a fixed-size record to the
//! control plane through a bounded lock-free queue (a full queue loses the record, never
//! blocks the worker). The control plane explains the path with the offline trace of the
//! same flow key.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use crossbeam::queue::ArrayQueue;

use crate::dpdk::Mbuf;
use crate::flow::key::{extract_key, slot, Depth};
use crate::flow::{FlowKey, Match};
use crate::mac_table::PortIdx;
use crate::pipeline::Egress;
use crate::stats::DropReason;

/// Most fates one traced packet records (copies to several ports each add one).
pub const MAX_FATES: usize = 8;
/// Bytes of the frame kept with the record.
pub const HEAD_BYTES: usize = 128;

/// What happened to a traced packet (or one of its copies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Queued for transmission on this port.
    Output(PortIdx),
    /// Dropped while being handled for this port, for this reason.
    Dropped(PortIdx, DropReason),
}

/// One traced packet, as the worker saw it.
#[derive(Clone)]
pub struct TracedPacket {
    pub worker: u16,
    pub in_port: PortIdx,
    /// The flow key the packet arrived with (None: it did not parse; see `fates`).
    pub key: Option<FlowKey>,
    /// Generation of the pipeline snapshot that handled it.
    pub generation: u64,
    /// TSC when the worker took it.
    pub tsc: u64,
    pub frame_len: u32,
    pub head: [u8; HEAD_BYTES],
    pub head_len: u8,
    pub fates: [Option<Fate>; MAX_FATES],
    /// More fates than `MAX_FATES` happened.
    pub fates_truncated: bool,
}

impl TracedPacket {
    pub fn fates(&self) -> impl Iterator<Item = Fate> + '_ {
        self.fates.iter().map_while(|f| *f)
    }
}

/// One live trace: a filter, how many packets it still wants, and the records.
pub struct TraceSession {
    filter: Match,
    /// Whether the filter looks at anything beyond in_port (then packets must be parsed).
    depth: Depth,
    /// Packets asked for.
    wanted: u64,
    remaining: AtomicU64,
    /// Claimed packets whose record was pushed (or lost): a claim comes before the packet
    /// runs, so `remaining == 0` alone does not mean every record is in the queue.
    finished: AtomicU64,
    records: ArrayQueue<TracedPacket>,
    /// Records lost because the queue was full.
    pub lost: AtomicU64,
}

impl TraceSession {
    pub fn new(filter: Match, count: u64) -> TraceSession {
        TraceSession {
            depth: Depth::for_mask(&filter.mask),
            filter,
            wanted: count,
            remaining: AtomicU64::new(count),
            finished: AtomicU64::new(0),
            records: ArrayQueue::new(1024),
            lost: AtomicU64::new(0),
        }
    }

    /// Claims one of the packets still wanted; false when the session has all it asked for.
    fn claim(&self) -> bool {
        self.remaining.fetch_update(Relaxed, Relaxed, |r| r.checked_sub(1)).is_ok()
    }

    /// Whether every wanted packet was traced and its record handed over: records popped
    /// after this returns true are all the session will ever get.
    pub fn complete(&self) -> bool {
        self.remaining.load(Relaxed) == 0 && self.finished.load(Acquire) == self.wanted
    }

    pub fn pop(&self) -> Option<TracedPacket> {
        self.records.pop()
    }
}

/// Where workers look for a live trace.
#[derive(Default)]
pub struct LiveTrace {
    armed: AtomicBool,
    session: ArcSwapOption<TraceSession>,
    /// Sessions started so far: a session's number.
    started: AtomicU64,
}

impl LiveTrace {
    /// Starts `session` unless another one runs; returns its number.
    pub fn start(&self, session: Arc<TraceSession>) -> Option<u64> {
        let prev = self.session.compare_and_swap(&None::<Arc<TraceSession>>, Some(session));
        if prev.is_some() {
            return None;
        }
        self.armed.store(true, Relaxed);
        Some(self.started.fetch_add(1, Relaxed) + 1)
    }

    /// Ends the running session (workers drop it by their next burst).
    pub fn stop(&self) {
        self.armed.store(false, Relaxed);
        self.session.store(None);
    }

    /// The running session, if any. One relaxed load when none runs.
    #[inline(always)]
    pub fn active(&self) -> Option<Arc<TraceSession>> {
        if !self.armed.load(Relaxed) {
            return None;
        }
        self.session.load_full()
    }
}

/// Whether `m`, arriving on port number `in_no`, matches the session's filter and is still
/// wanted. Returns the flow key it arrived with (None when it does not parse: such packets
/// match a filter on in_port alone, so their drops can be traced too).
pub fn wanted(session: &TraceSession, m: &Mbuf, in_no: u16) -> Option<Option<FlowKey>> {
    let key = extract_key(m.data(), in_no, session.depth).ok().map(|(key, _)| key);
    let matches = match &key {
        Some(k) => session.filter.matches(k),
        None => {
            let mut bare = FlowKey::ZERO;
            slot::IN_PORT.set(&mut bare, in_no as u64);
            session.filter.matches(&bare)
        }
    };
    (matches && session.claim()).then_some(key)
}

/// An [`Egress`] that records the fate of one traced packet and passes everything on.
pub struct Recorder<'a, E: Egress> {
    pub inner: &'a mut E,
    pub record: TracedPacket,
    used: usize,
}

impl<'a, E: Egress> Recorder<'a, E> {
    pub fn new(
        inner: &'a mut E,
        worker: u16,
        in_port: PortIdx,
        key: Option<FlowKey>,
        generation: u64,
        m: &Mbuf,
    ) -> Self {
        let data = m.data();
        let head_len = data.len().min(HEAD_BYTES);
        let mut head = [0u8; HEAD_BYTES];
        head[..head_len].copy_from_slice(&data[..head_len]);
        Recorder {
            inner,
            record: TracedPacket {
                worker,
                in_port,
                key,
                generation,
                tsc: crate::dpdk::tsc(),
                frame_len: m.pkt_len(),
                head,
                head_len: head_len as u8,
                fates: [None; MAX_FATES],
                fates_truncated: false,
            },
            used: 0,
        }
    }

    fn note(&mut self, f: Fate) {
        if self.used < MAX_FATES {
            self.record.fates[self.used] = Some(f);
            self.used += 1;
        } else {
            self.record.fates_truncated = true;
        }
    }

    /// Hands the record to the session (lost, and counted, if its queue is full).
    pub fn finish(self, session: &TraceSession) {
        if session.records.push(self.record).is_err() {
            session.lost.fetch_add(1, Relaxed);
        }
        session.finished.fetch_add(1, Release);
    }
}

impl<E: Egress> Egress for Recorder<'_, E> {
    fn output(&mut self, port: PortIdx, m: Mbuf) {
        self.note(Fate::Output(port));
        self.inner.output(port, m);
    }

    fn drop(&mut self, m: Mbuf, port: PortIdx, reason: DropReason) {
        self.note(Fate::Dropped(port, reason));
        self.inner.drop(m, port, reason);
    }

    fn alloc(&mut self) -> Option<Mbuf> {
        self.inner.alloc()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_complete_only_when_every_claimed_record_is_handed_over() {
        let session = TraceSession::new(Match::default(), 2);
        assert!(session.claim() && session.claim());
        assert!(!session.claim(), "only two packets were asked for");
        // Both claimed, neither record pushed yet: a drain now would miss them.
        assert!(!session.complete());
        session.finished.fetch_add(1, Release);
        assert!(!session.complete());
        session.finished.fetch_add(1, Release);
        assert!(session.complete());
    }
}
