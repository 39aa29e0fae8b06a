//! Poll-mode workers: one thread per core, pinned, each owning its rx queues and one tx queue
//! per port, running every burst through the pipeline to completion.
//!
//! Thread-safety: a worker owns its queues, its tx buffers and its counters (it is their only
//! writer). It shares with the control plane only [`Shared`]: the published pipeline, a coarse
//! clock and the stop flag, all read with single atomic loads once per poll iteration.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crossbeam::queue::ArrayQueue;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::dpdk::{
    self, Doorbell, Eal, InterruptWait, LcoreRegistration, Mbuf, MbufBurst, Mempool, Poller, RxQueue, TxQueue, BURST,
};
use crate::flow::FlowKey;
use crate::live_trace::{self, LiveTrace, Recorder, TraceSession};
use crate::mac_table::PortIdx;
use crate::pipeline::{Egress, FlowScratch, Pipeline, PipelineCell, PipelineReader};
use crate::stats::{bump, DropReason, IdleState, WorkerStats};

/// Seconds since the switch started, advanced by the control plane, so workers read time
/// without a syscall. Resolution is what MAC aging needs (seconds), no more.
pub struct CoarseClock {
    start: Instant,
    secs: AtomicU32,
}

impl Default for CoarseClock {
    fn default() -> Self {
        CoarseClock { start: Instant::now(), secs: AtomicU32::new(0) }
    }
}

impl CoarseClock {
    /// Advances the clock to the current time (control plane, several times a second).
    pub fn tick(&self) {
        self.secs.store(self.start.elapsed().as_secs() as u32, Ordering::Relaxed);
    }

    #[inline(always)]
    pub fn now(&self) -> u32 {
        self.secs.load(Ordering::Relaxed)
    }
}

/// A change to one worker while the switch runs: ports added or removed, idle back-off
/// switched.
pub enum WorkerChange {
    /// Send to port `idx` through `tx`, and poll each `rx` queue at its place (slot) in the
    /// worker's rx list (slots are what per-queue counters are kept by).
    AddPort { idx: PortIdx, tx: TxQueue, rx: Vec<(usize, RxQueue)> },
    /// Stop polling and sending to port `idx` (what waits for it is sent first), and give
    /// its queue handles back, so the control plane can close the port.
    RemovePort { idx: PortIdx },
    /// Back off when idle (true) or busy-poll.
    SetIdleBackoff(bool),
}

/// Where the control plane posts [`WorkerChange`]s to one worker and sees them applied.
/// A worker checks it with one relaxed load per poll iteration; its doorbell wakes the worker
/// when it waits for rx interrupts or sleeps.
pub struct Mailbox {
    changes: ArrayQueue<WorkerChange>,
    posted: AtomicU64,
    applied: AtomicU64,
    doorbell: Doorbell,
}

impl Mailbox {
    pub fn new() -> std::io::Result<Mailbox> {
        Ok(Mailbox {
            changes: ArrayQueue::new(64),
            posted: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            doorbell: Doorbell::new()?,
        })
    }

    /// Posts a change; returns the ticket that [`Mailbox::applied`] reaches once the worker
    /// applied it, or the change back when the mailbox is full.
    pub fn post(&self, change: WorkerChange) -> Result<u64, WorkerChange> {
        self.changes.push(change)?;
        let ticket = self.posted.fetch_add(1, Ordering::Release) + 1;
        self.doorbell.ring();
        Ok(ticket)
    }

    /// Wakes the worker if it waits for rx interrupts or sleeps, so it looks at what changed
    /// (a new pipeline, the stop flag) at once.
    pub fn wake(&self) {
        self.doorbell.ring();
    }

    /// How many changes the worker has applied.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }
}

/// What workers share with the control plane.
pub struct Shared {
    pub pipeline: PipelineCell,
    pub clock: CoarseClock,
    /// Set once the start-up pipeline (config flows included) is published: workers wait
    /// for it, so no packet meets a half-configured switch.
    pub go: AtomicBool,
    pub stop: AtomicBool,
    /// The live packet trace, when one runs.
    pub trace: LiveTrace,
    /// One per worker, by index.
    pub mailboxes: Box<[Mailbox]>,
}

impl Shared {
    /// Wakes every worker that waits for rx interrupts or sleeps: call after publishing a
    /// pipeline or setting `stop`, which workers only see between polls.
    pub fn wake_workers(&self) {
        for m in self.mailboxes.iter() {
            m.wake();
        }
    }
}

/// How a worker behaves when its queues are empty.
#[derive(Debug, Clone, Copy)]
pub struct IdleSettings {
    pub backoff: bool,
    /// TSC cycles of empty polls before the first sleep.
    pub poll_cycles: u64,
    pub sleep_max_us: u32,
    /// TSC cycles without packets after which sleeps may grow to `deep_sleep_us` (0: never).
    pub deep_cycles: u64,
    pub deep_sleep_us: u32,
    /// TSC cycles without packets after which sleeps may grow on to `long_sleep_us` (0: never).
    pub long_cycles: u64,
    pub long_sleep_us: u32,
    /// In deep idle, wait for rx interrupts instead of sleeping when every rx queue of the
    /// worker gives one.
    pub interrupts: bool,
    /// Packets per `LOAD_WINDOW` at or above which the worker counts as loaded (0: never).
    pub load_packets: u64,
    /// TSC cycles of `LOAD_WINDOW`, and how long a loaded worker keeps from sleeping.
    pub load_window_cycles: u64,
    pub load_hold_cycles: u64,
}

impl IdleSettings {
    /// Whether `idle_cycles` TSC cycles without packets make deep idle.
    #[inline]
    fn is_deep(&self, idle_cycles: u64) -> bool {
        self.deep_cycles > 0 && idle_cycles > self.deep_cycles
    }

    /// The longest sleep allowed after `idle_cycles` TSC cycles without packets.
    #[inline]
    fn sleep_cap_us(&self, idle_cycles: u64) -> u32 {
        if self.long_cycles > 0 && idle_cycles > self.long_cycles {
            self.long_sleep_us
        } else if self.is_deep(idle_cycles) {
            self.deep_sleep_us
        } else {
            self.sleep_max_us
        }
    }
}

/// Length of the window over which a worker's packet rate is judged loaded or not.
pub const LOAD_WINDOW_MS: u64 = 10;

/// Tracks whether a worker carries real traffic. A loaded worker does not sleep in short
/// pauses of its traffic: a sleep in a VM can last milliseconds, and at a few Mpps that
/// overflows an rx ring. Sleeping waits until the rate has been low for the hold time.
#[derive(Debug, Default)]
struct LoadGate {
    window_start: u64,
    window_packets: u64,
    hold_until: u64,
}

impl LoadGate {
    /// Counts `received` packets at TSC `now`.
    #[inline(always)]
    fn record(&mut self, idle: &IdleSettings, now: u64, received: u64) {
        if now.wrapping_sub(self.window_start) > idle.load_window_cycles {
            self.window_start = now;
            self.window_packets = 0;
        }
        self.window_packets += received;
        // Checked on the open window too, so a stall early in a window cannot start sleeps.
        if idle.load_packets > 0 && self.window_packets >= idle.load_packets {
            self.hold_until = now.wrapping_add(idle.load_hold_cycles);
        }
    }

    /// Whether sleeping is allowed at TSC `now`.
    #[inline(always)]
    fn may_sleep(&self, now: u64) -> bool {
        (now.wrapping_sub(self.hold_until) as i64) >= 0
    }
}

/// A worker's queues and identity, handed over when it is spawned.
pub struct WorkerPlan {
    pub index: usize,
    pub core: usize,
    /// Entries of the worker's exact-match cache (0: none).
    pub emc_entries: usize,
    pub rx: Vec<(PortIdx, RxQueue)>,
    pub tx: Vec<(PortIdx, TxQueue)>,
    /// The packet pool, for packets the switch makes (ARP requests).
    pub pool: Arc<Mempool>,
    pub idle: IdleSettings,
}

struct TxPort {
    queue: TxQueue,
    pending: MbufBurst,
    /// Bytes of the packets in `pending`, counted as they come (a burst brings its sum).
    pending_bytes: u64,
}

/// Per-port transmit buffers of one worker: packets wait until a burst is full or the poll
/// iteration ends, so each tx call moves many packets.
pub struct TxBuffers<'a> {
    ports: Vec<Option<TxPort>>,
    dropped: MbufBurst,
    stats: &'a WorkerStats,
    pool: Arc<Mempool>,
}

impl<'a> TxBuffers<'a> {
    fn new(tx: Vec<(PortIdx, TxQueue)>, stats: &'a WorkerStats, pool: Arc<Mempool>) -> Self {
        let mut buffers = TxBuffers { ports: Vec::new(), dropped: MbufBurst::new(), stats, pool };
        for (idx, queue) in tx {
            buffers.add_port(idx, queue);
        }
        buffers
    }

    fn add_port(&mut self, idx: PortIdx, queue: TxQueue) {
        let i = idx as usize;
        if self.ports.len() <= i {
            self.ports.resize_with(i + 1, || None);
        }
        self.ports[i] = Some(TxPort { queue, pending: MbufBurst::new(), pending_bytes: 0 });
    }

    /// Sends what waits for port `idx` and lets go of its queue.
    fn remove_port(&mut self, idx: PortIdx) {
        if let Some(Some(mut tp)) = self.ports.get_mut(idx as usize).map(Option::take) {
            if !tp.pending.is_empty() {
                Self::flush_port(&mut tp, idx as usize, self.stats);
            }
        }
        while self.ports.last().is_some_and(Option::is_none) {
            self.ports.pop();
        }
    }

    #[inline]
    fn flush_port(tp: &mut TxPort, idx: usize, stats: &WorkerStats) {
        let mut sent_bytes = std::mem::take(&mut tp.pending_bytes);
        let sent = tp.queue.tx_burst(&mut tp.pending);
        let counters = &stats.ports[idx];
        if !tp.pending.is_empty() {
            sent_bytes -= tp.pending.as_slice().iter().map(|m| m.pkt_len() as u64).sum::<u64>();
            counters.drop(DropReason::TxQueueFull, tp.pending.len() as u64);
            tp.pending.free_all();
        }
        bump(&counters.tx_packets, sent as u64);
        bump(&counters.tx_bytes, sent_bytes);
    }

    /// Sends everything buffered.
    #[inline]
    pub fn flush(&mut self) {
        for (idx, tp) in self.ports.iter_mut().enumerate() {
            if let Some(tp) = tp {
                if !tp.pending.is_empty() {
                    Self::flush_port(tp, idx, self.stats);
                }
            }
        }
        self.dropped.free_all();
    }
}

impl Egress for TxBuffers<'_> {
    #[inline(always)]
    fn output(&mut self, port: PortIdx, m: Mbuf) {
        let Some(Some(tp)) = self.ports.get_mut(port as usize) else {
            return self.drop(m, port, DropReason::NoEgressPort);
        };
        let len = m.pkt_len() as u64;
        // Never full here: a full buffer is flushed right after the push that filled it.
        if let Err(m) = tp.pending.push(m) {
            drop(m);
            self.stats.ports[port as usize].drop(DropReason::TxQueueFull, 1);
            return;
        }
        tp.pending_bytes += len;
        if tp.pending.is_full() {
            Self::flush_port(tp, port as usize, self.stats);
        }
    }

    #[inline]
    fn output_burst(&mut self, port: PortIdx, burst: &mut MbufBurst, bytes: u64) {
        debug_assert_eq!(bytes, burst.as_slice().iter().map(|m| m.pkt_len() as u64).sum::<u64>());
        match self.ports.get_mut(port as usize) {
            // The usual case, nothing else queued for the port: the burst becomes its buffer.
            Some(Some(tp)) if tp.pending.is_empty() => {
                std::mem::swap(&mut tp.pending, burst);
                tp.pending_bytes = bytes;
                if tp.pending.is_full() {
                    Self::flush_port(tp, port as usize, self.stats);
                }
            }
            _ => {
                for m in burst.drain() {
                    self.output(port, m);
                }
            }
        }
    }

    #[inline]
    fn drop(&mut self, m: Mbuf, port: PortIdx, reason: DropReason) {
        self.stats.ports[port as usize].drop(reason, 1);
        if let Err(m) = self.dropped.push(m) {
            self.dropped.free_all();
            let _ = self.dropped.push(m);
        }
    }

    fn alloc(&mut self) -> Option<Mbuf> {
        self.pool.alloc()
    }
}

/// Starts a worker thread: pins it, registers it with DPDK, and polls until `shared.stop`.
/// `ready` receives `Ok(lcore id)` once the thread runs on its core, or why it could not.
pub fn spawn(
    plan: WorkerPlan,
    shared: Arc<Shared>,
    stats: Arc<WorkerStats>,
    eal: Arc<Eal>,
    ready: std::sync::mpsc::Sender<Result<u32, String>>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(format!("worker-{}", plan.core)).spawn(move || {
        let core = plan.core;
        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
            let _ = ready.send(Err(format!("cannot pin worker to core {core}")));
            return;
        }
        let lcore = match LcoreRegistration::register(&eal) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(format!("worker on core {core}: {e}")));
                return;
            }
        };
        let _ = ready.send(Ok(lcore.lcore_id()));
        drop(ready);
        // The switch rings the doorbell once it sets `go`: the worker polls as soon as it
        // may, not up to a sleep later.
        let doorbell = &shared.mailboxes[plan.index].doorbell;
        while !shared.go.load(Ordering::Acquire) {
            if shared.stop.load(Ordering::Relaxed) {
                return;
            }
            doorbell.sleep_us(1000);
        }
        poll_loop(plan, &shared, &stats);
        drop(lcore);
    })
}

/// Empties the rx slots of port `idx` (slots stay, so the other queues keep their slots and
/// per-queue counters). Used on a worker's queues and on the control plane's copy of them.
pub(crate) fn forget_rx<Q>(slots: &mut [Option<(PortIdx, Q)>], idx: PortIdx) {
    for slot in slots.iter_mut().filter(|e| matches!(e, Some((p, _)) if *p == idx)) {
        *slot = None;
    }
}

/// Applies the changes posted to this worker (ports added or removed, idle back-off
/// switched at run time).
#[cold]
#[inline(never)]
fn apply_changes(
    mailbox: &Mailbox,
    rx: &mut Vec<Option<(PortIdx, RxQueue)>>,
    tx: &mut TxBuffers,
    stats: &WorkerStats,
    idle: &mut IdleSettings,
) -> u64 {
    let mut applied = 0;
    while let Some(change) = mailbox.changes.pop() {
        match change {
            WorkerChange::AddPort { idx, tx: queue, rx: queues } => {
                // The index may have belonged to a removed port: its counts start again.
                stats.ports[idx as usize].reset();
                tx.add_port(idx, queue);
                for (slot, q) in queues {
                    if rx.len() <= slot {
                        rx.resize_with(slot + 1, || None);
                    }
                    rx[slot] = Some((idx, q));
                    stats.reset_rx_queue(slot);
                }
            }
            WorkerChange::RemovePort { idx } => {
                forget_rx(rx, idx);
                tx.remove_port(idx);
            }
            WorkerChange::SetIdleBackoff(on) => {
                idle.backoff = on;
                stats.idle_backoff.store(on, Ordering::Relaxed);
            }
        }
        applied += 1;
    }
    applied
}

/// Longest wait for an rx interrupt. Packets and the control plane's doorbell end a wait;
/// the limit is a safety net (and worker 0's once-a-second underlay upkeep).
const INTERRUPT_WAIT_MS: i32 = 1000;
/// Longest wait where a memif ring's signal is among the interrupts. The driver tells no one
/// when a peer leaves and another connects, and the new peer's ring is not armed: its first
/// packets wait at most this long.
const MEMIF_WAIT_MS: i32 = 10;

/// Deep idle by rx interrupt: the worker's wait set (its armed rx queues and its mailbox's
/// doorbell) and whether every rx queue can wake it. One queue without an interrupt (pcap,
/// af_packet) and the worker sleeps instead: it must not miss that queue's packets.
struct InterruptIdle<'a> {
    wait: Option<InterruptWait<'a>>,
    usable: bool,
    armed: bool,
    /// Some queue wakes by a memif ring's signal (see `MEMIF_WAIT_MS`).
    memif: bool,
}

impl<'a> InterruptIdle<'a> {
    fn new(enabled: bool, mailbox: &'a Mailbox) -> Self {
        let wait = if enabled { InterruptWait::new(&mailbox.doorbell).ok() } else { None };
        InterruptIdle { wait, usable: false, armed: false, memif: false }
    }

    /// Has every rx queue listen in this thread (again after queue changes).
    fn listen(&mut self, rx: &mut [Option<(PortIdx, RxQueue)>]) {
        if self.wait.is_none() {
            return;
        }
        let mut queues = 0;
        let mut listening = 0;
        self.memif = false;
        for (_, q) in rx.iter_mut().flatten() {
            queues += 1;
            listening += q.listen() as usize;
            self.memif |= q.wakes_by_memif_ring();
        }
        self.usable = queues > 0 && listening == queues;
    }

    /// Arms every queue, inside a section of `poller` (a memif ring is touched only there);
    /// false, with none armed, if one cannot be (a memif queue without a peer).
    fn arm(&mut self, rx: &mut [Option<(PortIdx, RxQueue)>], poller: &mut Poller) -> bool {
        // Checked first, so the others are not armed (system calls) only to be disarmed.
        if !rx.iter().flatten().all(|(_, q)| q.may_arm()) {
            return false;
        }
        poller.enter();
        self.armed = true;
        let all = rx.iter_mut().flatten().all(|(_, q)| q.arm(poller));
        if !all {
            self.disarm_inside(rx, poller);
        }
        poller.leave();
        all
    }

    #[inline]
    fn disarm(&mut self, rx: &mut [Option<(PortIdx, RxQueue)>], poller: &mut Poller) {
        if self.armed {
            poller.enter();
            self.disarm_inside(rx, poller);
            poller.leave();
        }
    }

    /// `disarm` for a caller already inside a section.
    fn disarm_inside(&mut self, rx: &mut [Option<(PortIdx, RxQueue)>], poller: &Poller) {
        if self.armed {
            for (_, q) in rx.iter_mut().flatten() {
                q.disarm(poller);
            }
            self.armed = false;
        }
    }

    /// Waits for an armed queue or the doorbell; true if one of them ended the wait.
    fn wait(&mut self) -> bool {
        let timeout = if self.memif { MEMIF_WAIT_MS } else { INTERRUPT_WAIT_MS };
        self.wait.as_mut().is_some_and(|w| w.wait(timeout))
    }
}

fn poll_loop(plan: WorkerPlan, shared: &Shared, stats: &WorkerStats) {
    let WorkerPlan { rx, tx, index, emc_entries, pool, mut idle, .. } = plan;
    // Slots of removed ports stay empty (None) so the others keep their per-queue counters.
    let mut rx: Vec<Option<(PortIdx, RxQueue)>> = rx.into_iter().map(Some).collect();
    let mailbox = &shared.mailboxes[index];
    let mut changes_applied = 0u64;
    let mut tx = TxBuffers::new(tx, stats, pool);
    let mut last_resolve = u32::MAX;
    let mut scratch = FlowScratch::new(index, emc_entries);
    let mut burst = MbufBurst::new();
    let mut pipeline = PipelineReader::new(&shared.pipeline);
    stats.generation.store(pipeline.get().generation(), Ordering::Release);
    // A sleep of a few µs must not turn into the default 50 µs slack. Set whether or not the
    // worker backs off now: back-off can be switched on at run time.
    dpdk::set_timer_slack(2_000);
    let mut interrupts = InterruptIdle::new(idle.interrupts, mailbox);
    // Queues are listened to only by a worker that backs off: a busy-polling one would only
    // have its wait set woken by traffic it never waits for.
    if idle.backoff {
        interrupts.listen(&mut rx);
    }
    // TSC when the queues were last seen with packets, and the next sleep's length.
    let mut last_busy = dpdk::tsc();
    let mut sleep_us = 1u32;
    let mut state = IdleState::Polling;
    let mut load = LoadGate { window_start: last_busy, ..LoadGate::default() };
    // Port memory (a memif peer's rings) is not unmapped while this worker is inside a poll.
    let mut poller = dpdk::Poller::register();

    // Each poll starts where the last one ended: one TSC read per poll, not two (a read
    // costs tens of cycles under a hypervisor), and the time between polls is counted too.
    let mut poll_start = dpdk::tsc();
    while !shared.stop.load(Ordering::Relaxed) {
        let start = poll_start;
        poller.enter();
        if mailbox.posted.load(Ordering::Relaxed) != changes_applied {
            interrupts.disarm_inside(&mut rx, &poller);
            let backoff = idle.backoff;
            changes_applied += apply_changes(mailbox, &mut rx, &mut tx, stats, &mut idle);
            if idle.backoff {
                interrupts.listen(&mut rx);
            }
            if idle.backoff != backoff {
                // Either way the worker polls now; back-off starts over from a busy queue.
                state = IdleState::Polling;
                sleep_us = 1;
                last_busy = dpdk::tsc();
                stats.idle_state.store(state as u64, Ordering::Relaxed);
            }
            mailbox.applied.store(changes_applied, Ordering::Release);
        }
        // Quiescent point: no reference into the previous snapshot survives this line.
        if pipeline.refresh(&shared.pipeline) {
            stats.generation.store(pipeline.get().generation(), Ordering::Release);
        }
        let now = shared.clock.now();
        // Worker 0 looks after underlay next hops once a second, so the first encapsulated
        // packets find their neighbor resolved.
        if index == 0 && now != last_resolve {
            last_resolve = now;
            pipeline.get().resolve_underlay(now, &mut tx);
        }
        let trace = shared.trace.active();
        let mut received = 0;
        for (slot, entry) in rx.iter_mut().enumerate() {
            let Some((port, queue)) = entry else { continue };
            let n = queue.rx_burst(&mut burst);
            if n == 0 {
                continue;
            }
            received += n;
            let counters = &stats.ports[*port as usize];
            let mut bytes: u64 = burst.as_slice().iter().map(|m| m.pkt_len() as u64).sum();
            bump(&counters.rx_packets, n as u64);
            bump(&counters.rx_bytes, bytes);
            if let (Some(p), Some(b)) = (stats.rx_queue_packets.get(slot), stats.rx_queue_bytes.get(slot)) {
                bump(p, n as u64);
                bump(b, bytes);
            }
            bump(&stats.rx_bursts[n.min(BURST)], 1);
            if let Some(session) = &trace {
                bytes =
                    run_traced(session, pipeline.get(), &mut scratch, index, *port, &mut burst, now, stats, &mut tx);
            }
            pipeline.get().process_burst(&mut scratch, *port, &mut burst, bytes, now, stats, &mut tx);
        }
        tx.flush();
        poller.leave();
        let end = dpdk::tsc();
        poll_start = end;
        let cycles = end.wrapping_sub(start);
        bump(&stats.polls, 1);
        if received > 0 {
            bump(&stats.busy_polls, 1);
            bump(&stats.busy_cycles, cycles);
            last_busy = end;
            load.record(&idle, end, received as u64);
            if state != IdleState::Polling {
                state = IdleState::Polling;
                sleep_us = 1;
                interrupts.disarm(&mut rx, &mut poller);
                stats.idle_state.store(state as u64, Ordering::Relaxed);
            }
        } else if idle.backoff && end.wrapping_sub(last_busy) > idle.poll_cycles && load.may_sleep(end) {
            // A long idle period (no traffic for `deep_cycles`) allows longer sleeps, or a
            // wait for an rx interrupt: little CPU when nothing comes, short sleeps while
            // traffic only pauses.
            let deep = idle.is_deep(end.wrapping_sub(last_busy));
            let mut next = if deep && interrupts.usable { IdleState::Interrupt } else { IdleState::Sleeping };
            let needs_arming = next == IdleState::Interrupt && !interrupts.armed;
            if needs_arming && !interrupts.arm(&mut rx, &mut poller) {
                // A memif queue without a peer cannot wake the worker: it sleeps this time.
                next = IdleState::Sleeping;
            }
            if state != next {
                state = next;
                stats.idle_state.store(state as u64, Ordering::Relaxed);
            }
            if needs_arming && state == IdleState::Interrupt {
                // Poll once more after arming: packets that came before raise nothing.
                bump(&stats.idle_cycles, cycles);
                continue;
            }
            if state == IdleState::Interrupt {
                if interrupts.wait() {
                    bump(&stats.interrupt_wakes, 1);
                }
                interrupts.disarm(&mut rx, &mut poller);
                bump(&stats.interrupt_waits, 1);
            } else {
                // Queues stayed empty: sleep, longer each time up to the cap, so an idle
                // worker costs little CPU and the first packet waits at most one sleep. The
                // doorbell ends it: a change goes live without waiting for the sleep's end.
                interrupts.disarm(&mut rx, &mut poller);
                if mailbox.doorbell.sleep_us(sleep_us) {
                    bump(&stats.sleep_wakes, 1);
                }
                sleep_us = (sleep_us * 2).min(idle.sleep_cap_us(end.wrapping_sub(last_busy)).max(1));
            }
            let woke = dpdk::tsc();
            poll_start = woke;
            bump(&stats.sleeps, 1);
            bump(&stats.sleep_cycles, woke.wrapping_sub(end));
            bump(&stats.idle_cycles, woke.wrapping_sub(start));
        } else {
            bump(&stats.idle_cycles, cycles);
            std::hint::spin_loop();
        }
    }
    poller.section(|| tx.flush());
}

/// Takes the packets a live trace wants out of `burst` and runs each on its own through the
/// pipeline, recording its fate. Returns the bytes left in `burst`.
#[allow(clippy::too_many_arguments)]
#[cold]
#[inline(never)]
fn run_traced(
    session: &TraceSession,
    pipeline: &Pipeline,
    scratch: &mut FlowScratch,
    worker: usize,
    port: PortIdx,
    burst: &mut MbufBurst,
    now: u32,
    stats: &WorkerStats,
    tx: &mut TxBuffers,
) -> u64 {
    let in_no = pipeline.ports.number(port);
    let mut keep = MbufBurst::new();
    let mut traced = MbufBurst::new();
    let mut keys: [Option<FlowKey>; BURST] = [None; BURST];
    for m in burst.drain() {
        match live_trace::wanted(session, &m, in_no) {
            Some(key) => {
                keys[traced.len()] = key;
                let _ = traced.push(m);
            }
            None => {
                let _ = keep.push(m);
            }
        }
    }
    for (i, m) in traced.drain().enumerate() {
        let mut recorder = Recorder::new(tx, worker as u16, port, keys[i], pipeline.generation(), &m);
        let len = m.pkt_len() as u64;
        let mut one = MbufBurst::new();
        let _ = one.push(m);
        pipeline.process_burst(scratch, port, &mut one, len, now, stats, &mut recorder);
        recorder.finish(session);
    }
    *burst = keep;
    burst.as_slice().iter().map(|m| m.pkt_len() as u64).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> IdleSettings {
        IdleSettings {
            backoff: true,
            poll_cycles: 200,
            sleep_max_us: 32,
            deep_cycles: 100_000,
            deep_sleep_us: 500,
            long_cycles: 1_000_000,
            long_sleep_us: 1000,
            interrupts: false,
            load_packets: 1000,
            load_window_cycles: 10_000,
            load_hold_cycles: 1_000_000,
        }
    }

    #[test]
    fn sleeps_grow_with_the_length_of_the_idle_period() {
        let idle = settings();
        assert_eq!(idle.sleep_cap_us(0), 32);
        assert_eq!(idle.sleep_cap_us(100_000), 32, "deep idle starts after deep_cycles");
        assert_eq!(idle.sleep_cap_us(100_001), 500);
        assert_eq!(idle.sleep_cap_us(1_000_000), 500);
        assert_eq!(idle.sleep_cap_us(1_000_001), 1000);
        let never_long = IdleSettings { long_cycles: 0, ..settings() };
        assert_eq!(never_long.sleep_cap_us(u64::MAX / 2), 500);
        let never_deep = IdleSettings { deep_cycles: 0, long_cycles: 0, ..settings() };
        assert_eq!(never_deep.sleep_cap_us(u64::MAX / 2), 32);
    }

    #[test]
    fn low_rate_traffic_may_sleep() {
        let idle = settings();
        let mut gate = LoadGate::default();
        // 999 packets a window, window after window: never loaded.
        for w in 0..5u64 {
            for i in 0..999u64 {
                gate.record(&idle, w * 10_001 + i, 1);
            }
        }
        assert!(gate.may_sleep(50_000));
    }

    #[test]
    fn a_loaded_worker_holds_off_sleeping_until_the_hold_ends() {
        let idle = settings();
        let mut gate = LoadGate::default();
        // The threshold is crossed inside the first (open) window, at TSC 999.
        for i in 0..1000u64 {
            gate.record(&idle, i, 1);
        }
        assert!(!gate.may_sleep(1_000));
        assert!(!gate.may_sleep(999 + 999_999));
        assert!(gate.may_sleep(999 + 1_000_000));
    }

    #[test]
    fn a_new_window_starts_counting_from_zero() {
        let idle = settings();
        let mut gate = LoadGate::default();
        gate.record(&idle, 0, 600);
        gate.record(&idle, 20_000, 600);
        assert!(gate.may_sleep(20_001), "600 + 600 in two windows is not 1000 in one");
        gate.record(&idle, 20_002, 400);
        assert!(!gate.may_sleep(20_003));
    }

    #[test]
    fn no_threshold_never_holds() {
        let idle = IdleSettings { load_packets: 0, ..settings() };
        let mut gate = LoadGate::default();
        gate.record(&idle, 5, 1_000_000);
        assert!(gate.may_sleep(6));
    }
}
