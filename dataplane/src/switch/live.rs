//! Live packet trace of a running switch: starting a session and explaining its records.

use std::sync::Arc;

use super::flows::{key_text, TraceStep};
use super::Switch;
use crate::flow::Match;
use crate::live_trace::{Fate, TraceSession, TracedPacket};
use crate::mac_table::PortIdx;
use crate::stats::DropReason;

/// A traced packet explained for an operator.
#[derive(Debug, Clone)]
pub struct LivePacket {
    pub worker: u16,
    pub in_port: u32,
    pub in_port_name: String,
    pub generation: u64,
    /// Nanoseconds since the switch started when the worker took the packet.
    pub at_ns: u64,
    pub frame_len: u32,
    /// The first bytes of the frame as it arrived.
    pub head: Vec<u8>,
    /// The packet's flow key as a match text ("" when it did not parse).
    pub packet: String,
    /// The stages it passed, in words, in order.
    pub stages: Vec<String>,
    /// Tables, flows and actions (empty for packets the flow tables never saw).
    pub steps: Vec<TraceStep>,
    /// Ports (numbers) it left through, one per copy.
    pub outputs: Vec<u32>,
    /// Drops: (port number, reason), one per copy dropped.
    pub drops: Vec<(u32, DropReason)>,
    /// Its fate in one line.
    pub fate: String,
}

impl Switch {
    /// Starts a live trace of the next `count` packets matching `filter`, unless one runs.
    pub fn start_live_trace(&self, filter: Match, count: u64) -> Option<Arc<TraceSession>> {
        let session = Arc::new(TraceSession::new(filter, count));
        self.shared.trace.start(session.clone())?;
        Some(session)
    }

    pub fn live_trace_running(&self) -> bool {
        self.shared.trace.active().is_some()
    }

    /// Ends the live trace that runs.
    pub fn stop_live_trace(&self) {
        self.shared.trace.stop();
    }

    fn port_label(&self, idx: PortIdx) -> (u32, String) {
        let known = self.tunnels.lock().unwrap().port_label(idx);
        known.unwrap_or_else(|| (0, format!("port index {idx}")))
    }

    /// Explains a traced packet: its real fate as the worker recorded it, and the tables and
    /// flows of its path (from the offline trace of the same key).
    pub fn explain(&self, r: &TracedPacket) -> LivePacket {
        let (in_port, in_port_name) = self.port_label(r.in_port);
        let mut stages = vec![format!("received on port {in_port} ({in_port_name}) by worker {}", r.worker)];
        let mut steps = Vec::new();
        let uplink = self.shared.pipeline.load().tunnels.uplink(r.in_port).is_some();
        let packet = r.key.as_ref().map(key_text).unwrap_or_default();
        match &r.key {
            None => stages.push("parse: the frame's headers are cut short or malformed".into()),
            Some(_) if uplink => {
                stages.push(format!("parse: {packet}"));
                stages.push("uplink: tunnel decapsulation or ARP for a local VTEP (no flow tables)".into());
            }
            Some(key) => {
                stages.push(format!("parse: {packet}"));
                let t = self.trace(*key);
                for s in &t.steps {
                    let what = match &s.flow {
                        Some(f) => format!("table {}: matched {f}", s.table),
                        None => format!("table {}: no flow matched", s.table),
                    };
                    stages.push(what);
                    for e in &s.effects {
                        stages.push(format!("  {e}"));
                    }
                }
                steps = t.steps;
            }
        }
        let mut outputs = Vec::new();
        let mut drops = Vec::new();
        for f in r.fates() {
            match f {
                Fate::Output(p) => {
                    let (n, name) = self.port_label(p);
                    stages.push(format!("output to port {n} ({name})"));
                    outputs.push(n);
                }
                Fate::Dropped(p, reason) => {
                    let (n, _) = self.port_label(p);
                    stages.push(format!("dropped at {}: {} ({})", reason.stage(), reason.name(), reason.description()));
                    drops.push((n, reason));
                }
            }
        }
        let fate = match (outputs.is_empty(), drops.first()) {
            (false, None) => format!("sent to port {}", join(&outputs)),
            (false, Some(_)) => format!("sent to port {}, {} cop(ies) dropped", join(&outputs), drops.len()),
            (true, Some((_, reason))) => format!("dropped: {}", reason.name()),
            (true, None) => "consumed by the switch (no output, no drop)".into(),
        };
        let ticks = r.tsc.saturating_sub(self.started_tsc);
        LivePacket {
            worker: r.worker,
            in_port,
            in_port_name,
            generation: r.generation,
            at_ns: (ticks as u128 * 1_000_000_000 / self.tsc_hz.max(1) as u128) as u64,
            frame_len: r.frame_len,
            head: r.head[..r.head_len as usize].to_vec(),
            packet,
            stages,
            steps,
            outputs,
            drops,
            fate,
        }
    }
}

fn join(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}
