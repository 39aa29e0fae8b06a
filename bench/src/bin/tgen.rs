//! tgen: a DPDK traffic generator for the benchmarks, as its own process on its own core.
//!
//! Sends stamped Ethernet/IPv4/UDP frames (optionally inside VXLAN) over any DPDK port
//! (memif, af_packet, ...) at a set rate or as fast as the port takes them, round-robin over
//! N flows, 64-byte or IMIX frames, and receives on the same or another port: it counts
//! loss and reordering and records latency (TX to RX, by TSC) in an HDR histogram. Prints one
//! JSON object.
//!
//! ```text
//! tgen --tx net_memif0,role=server,socket=/run/a.sock --rx net_memif1,role=server,socket=/run/b.sock \
//!      --rate 5 --seconds 3 --flows 1024 --size 64 --core 0
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use dataplane::dpdk::{self, Eal, EthPort, MbufBurst, Mempool, PortSetup, BURST};
use hdrhistogram::Histogram;
use vswitch_bench::traffic::{find_stamp, headers, stamp, Arrival, FlowOrder, Vxlan, IMIX, STAMP_LEN};

#[derive(Parser)]
#[command(about = "DPDK traffic generator with loss, reordering and latency measurement")]
struct Args {
    /// DPDK devargs of the sending port.
    #[arg(long)]
    tx: String,
    /// DPDK devargs of the receiving port (default: the sending port).
    #[arg(long)]
    rx: Option<String>,
    /// Core to run on.
    #[arg(long, default_value_t = 0)]
    core: usize,
    /// DPDK --file-prefix (each DPDK process needs its own).
    #[arg(long, default_value = "tgen")]
    file_prefix: String,
    /// Offered rate in Mpps; 0 sends as fast as the port takes frames.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Milliseconds to keep receiving after the last frame was sent.
    #[arg(long, default_value_t = 200)]
    drain_ms: u64,
    /// Flows (1 to 65536): flow i goes to 02:00:00:00:hi:lo / 10.1.hi.lo.
    #[arg(long, default_value_t = 1)]
    flows: u32,
    /// Frame size on the wire (64 to 1518), or "imix" (64/594/1518 in 7:4:1).
    #[arg(long, default_value = "64")]
    size: String,
    /// Encapsulate in VXLAN with this VNI (outer 172.31.0.2 -> 172.31.0.1, port 4789).
    #[arg(long)]
    vxlan: Option<u32>,
    /// Outer destination MAC of VXLAN frames (the switch uplink's MAC).
    #[arg(long, default_value = "02:00:00:aa:00:01")]
    vxlan_dst_mac: String,
    /// Stop at the first stamped frame received and print when it came (Unix ns): for
    /// measuring how long a switch takes from start to forwarding.
    #[arg(long)]
    first_only: bool,
    /// Seconds of sending before the measurement (not counted).
    #[arg(long, default_value_t = 0.5)]
    warmup: f64,
    /// After the first measurement (if --first-only) or at once, run trials read from
    /// stdin, one per line: "RATE SECONDS [WARMUP]"; one JSON line is printed per trial.
    #[arg(long)]
    serve: bool,
    /// Rx queues of the receiving port, all polled (a peer may send on another queue than
    /// 0: OVS-DPDK's PMD thread transmits on queue 1).
    #[arg(long, default_value_t = 1)]
    rx_queues: u16,
    /// Seconds to wait for the ports' links before sending (memif peers connect late).
    #[arg(long, default_value_t = 10.0)]
    link_wait: f64,
}

/// Most frames a paced generator sends to catch up after falling behind.
const MAX_BEHIND: u64 = 2 * BURST as u64;

fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let parts: Vec<u8> = s.split(':').filter_map(|p| u8::from_str_radix(p, 16).ok()).collect();
    parts.try_into().map_err(|_| format!("'{s}' is not a MAC address"))
}

fn unix_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

struct Tx {
    /// Headers per (size index, flow).
    headers: Vec<Vec<Vec<u8>>>,
    sizes: Vec<usize>,
}

/// What one measurement counted.
struct Results {
    sent: u64,
    /// Frame bytes (without FCS) of the frames sent and of the stamped frames received.
    sent_bytes: u64,
    tx_failed: u64,
    received: u64,
    stamped: u64,
    stamped_bytes: u64,
    reordered: u64,
    /// Frames the pacing skipped because the generator fell behind its schedule.
    skipped: u64,
    seconds: f64,
    first_rx: Option<u128>,
    /// When the last flow's first frame came (Unix ns): a policy change is live on every
    /// flow by then.
    every_flow_rx: Option<u128>,
    hist: Histogram<u64>,
}

struct Io<'a> {
    txq: &'a mut dataplane::dpdk::TxQueue,
    rxqs: &'a mut [dataplane::dpdk::RxQueue],
    pool: &'a Mempool,
    plan: &'a Tx,
    flows: u32,
    hz: u64,
    /// Sequence number of the next frame (continues across measurements).
    seq: u64,
    /// Marks the bursts, so a memif peer's rings are not unmapped under them.
    poller: dpdk::Poller,
}

impl Io<'_> {
    /// Sends for `seconds` at `rate` Mpps (0: as fast as the port takes frames), receiving
    /// all along and for `drain_ms` after.
    fn run(&mut self, seconds: f64, rate: f64, drain_ms: u64, first_only: bool) -> Results {
        let hz = self.hz;
        let mut r = Results {
            sent: 0,
            sent_bytes: 0,
            tx_failed: 0,
            received: 0,
            stamped: 0,
            stamped_bytes: 0,
            reordered: 0,
            skipped: 0,
            seconds,
            first_rx: None,
            every_flow_rx: None,
            hist: Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds"),
        };
        let mut order = FlowOrder::new(self.flows);
        let mut burst = MbufBurst::new();
        let mut rx = MbufBurst::new();
        let start = dpdk::tsc();
        let send_until = start + (seconds * hz as f64) as u64;
        let rate_per_tick = rate * 1e6 / hz as f64;
        let mut drain_until = u64::MAX;
        loop {
            let now = dpdk::tsc();
            if now < send_until {
                let want = if rate > 0.0 {
                    let due = ((now - start) as f64 * rate_per_tick) as u64;
                    let mut behind = due.saturating_sub(r.sent + r.tx_failed + r.skipped);
                    // A generator that fell behind (descheduled) must not catch up in a
                    // burst at line rate: that is not the offered rate. Forget old debt.
                    if behind > MAX_BEHIND {
                        r.skipped += behind - MAX_BEHIND;
                        behind = MAX_BEHIND;
                    }
                    behind.min(BURST as u64) as usize
                } else {
                    BURST
                };
                // Bytes of the frames built, known as they are built.
                let mut bytes = 0u64;
                for _ in 0..want {
                    let Some(mut m) = self.pool.alloc() else { break };
                    let s = (self.seq % self.plan.sizes.len() as u64) as usize;
                    let flow = (self.seq % self.flows as u64) as usize;
                    let len = self.plan.sizes[s];
                    let h = &self.plan.headers[s][flow];
                    let Some(data) = m.append(len as u16) else { break };
                    data[..h.len()].copy_from_slice(h);
                    data[h.len() + STAMP_LEN..].fill(0);
                    stamp(data, h.len(), flow as u16, self.seq as u32, now);
                    self.seq += 1;
                    bytes += len as u64;
                    let _ = burst.push(m);
                }
                if !burst.is_empty() {
                    let n = self.poller.section(|| self.txq.tx_burst(&mut burst));
                    // What tx_burst left is still in the burst: its bytes were not sent.
                    r.sent_bytes += bytes - burst.as_slice().iter().map(|m| m.pkt_len() as u64).sum::<u64>();
                    r.sent += n as u64;
                    r.tx_failed += burst.len() as u64;
                    burst.free_all();
                }
            } else if drain_until == u64::MAX {
                drain_until = now + drain_ms * hz / 1000;
            } else if now > drain_until {
                break;
            }
            let rxqs = &mut *self.rxqs;
            let got = self.poller.section(|| {
                let mut got = 0;
                for q in rxqs.iter_mut() {
                    if rx.is_full() {
                        break;
                    }
                    got += q.rx_burst(&mut rx);
                }
                got
            });
            if got > 0 {
                let t = dpdk::tsc();
                for m in rx.as_slice() {
                    r.received += 1;
                    let Some((flow, s, sent_at)) = find_stamp(m.data()) else { continue };
                    r.stamped += 1;
                    r.stamped_bytes += m.pkt_len() as u64;
                    let ns = (t.saturating_sub(sent_at) as u128 * 1_000_000_000 / hz as u128) as u64;
                    let _ = r.hist.record(ns.max(1));
                    match order.record(flow, s) {
                        Some(Arrival::Reordered) => r.reordered += 1,
                        Some(Arrival::First { all_seen: true }) => r.every_flow_rx = Some(unix_ns()),
                        _ => {}
                    }
                    if r.first_rx.is_none() {
                        r.first_rx = Some(unix_ns());
                    }
                }
                rx.free_all();
                if first_only && r.first_rx.is_some() {
                    break;
                }
            }
        }
        r.seconds = seconds.min((dpdk::tsc() - start) as f64 / hz as f64);
        r
    }
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args) {
        eprintln!("tgen: error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    if !(1..=65536).contains(&args.flows) {
        return Err("--flows: 1 to 65536".into());
    }
    let wire_sizes: Vec<usize> = match args.size.as_str() {
        "imix" => IMIX.iter().map(|s| s + 4).collect(),
        s => vec![s.parse().map_err(|_| format!("--size: '{s}' is not a number or imix"))?],
    };
    let extra = if args.vxlan.is_some() { dataplane::tunnel::wire::ENCAP_LEN } else { 0 };
    let sizes: Vec<usize> = wire_sizes.iter().map(|w| w - 4 + extra).collect();
    if wire_sizes.iter().any(|w| !(64..=1518).contains(w)) {
        return Err("--size: 64 to 1518 bytes on the wire".into());
    }
    let vxlan = match args.vxlan {
        Some(vni) => Some(Vxlan { vni, dst_mac: parse_mac(&args.vxlan_dst_mac)? }),
        None => None,
    };
    let tx_plan = Tx {
        headers: sizes
            .iter()
            .map(|&len| (0..args.flows).map(|i| headers(i as u16, len, vxlan.as_ref())).collect())
            .collect(),
        sizes: sizes.clone(),
    };

    let eal_args: Vec<String> = [
        "tgen",
        "--no-pci",
        "--in-memory",
        // virtio-user shares the process's memory with its vhost-user peer one region per
        // file, and vhost-user takes at most 8: one file keeps it to one region.
        "--single-file-segments",
        "--file-prefix",
        &args.file_prefix,
        "-l",
        &args.core.to_string(),
        "--log-level",
        "error",
        "-m",
        "512",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let eal = Eal::init(&eal_args).map_err(|e| e.to_string())?;
    let pool = Arc::new(Mempool::create(&eal, "tgen", 16383, 256, 2048 + 128).map_err(|e| e.to_string())?);
    let setup = PortSetup {
        rx_queues: args.rx_queues,
        // It sends on queue 0 only; a memif client must not have more tx rings than the
        // server has rx rings.
        tx_queues: 1,
        rx_descriptors: 1024,
        tx_descriptors: 1024,
        mtu: 1500,
        // The generator busy-polls: its peers' idle behaviour is what is measured.
        rx_interrupts: false,
        // Its two ports are all it opens.
        spares_for: None,
    };
    let tx_port = EthPort::probe(&eal, &args.tx).map_err(|e| e.to_string())?;
    tx_port.setup_and_start(&setup, &pool).map_err(|e| format!("{}: {e}", args.tx))?;
    let rx_port = match &args.rx {
        Some(rx) if rx != &args.tx => {
            let p = EthPort::probe(&eal, rx).map_err(|e| e.to_string())?;
            p.setup_and_start(&setup, &pool).map_err(|e| format!("{rx}: {e}"))?;
            p
        }
        _ => tx_port.clone(),
    };
    let mut txq = tx_port.tx_queue(0).ok_or("tx queue")?;
    let mut rxqs: Vec<_> = (0..args.rx_queues).filter_map(|q| rx_port.rx_queue(q)).collect();

    // memif links come up when the peer connects.
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(args.link_wait);
    let links_up = || tx_port.link().up && rx_port.link().up;
    while !args.first_only && !links_up() {
        if std::time::Instant::now() > deadline {
            return Err("links did not come up (is the switch connected?)".into());
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    let hz = eal.tsc_hz();
    let mut io = Io {
        txq: &mut txq,
        rxqs: &mut rxqs,
        pool: &pool,
        plan: &tx_plan,
        flows: args.flows,
        hz,
        seq: 0,
        poller: dpdk::Poller::register(),
    };
    let report = |r: &Results, rate: f64| {
        let q = |p: f64| if r.hist.is_empty() { 0 } else { r.hist.value_at_quantile(p) };
        serde_json::json!({
            "sent": r.sent,
            "sent_bytes": r.sent_bytes,
            "tx_failed": r.tx_failed,
            "received": r.received,
            "stamped": r.stamped,
            "stamped_bytes": r.stamped_bytes,
            "lost": r.sent.saturating_sub(r.stamped),
            "reordered": r.reordered,
            "skipped": r.skipped,
            "seconds": r.seconds,
            "offered_mpps": r.sent as f64 / r.seconds / 1e6,
            "received_mpps": r.stamped as f64 / r.seconds / 1e6,
            "first_rx_unix_ns": r.first_rx.map(|t| t as u64),
            "every_flow_rx_unix_ns": r.every_flow_rx.map(|t| t as u64),
            "latency_ns": {
                "min": if r.hist.is_empty() { 0 } else { r.hist.min() },
                "p50": q(0.5),
                "p99": q(0.99),
                "p999": q(0.999),
                "max": if r.hist.is_empty() { 0 } else { r.hist.max() },
                "mean": if r.hist.is_empty() { 0.0 } else { r.hist.mean() },
            },
            "flows": args.flows,
            "sizes": wire_sizes,
            "vxlan": args.vxlan,
            "rate_mpps": rate,
        })
    };
    if !args.serve || args.first_only {
        if args.warmup > 0.0 && !args.first_only {
            // Learn MACs, fill caches and let the peer start forwarding; counts start after.
            io.run(args.warmup, args.rate, 100, false);
        }
        let r = io.run(args.seconds, args.rate, args.drain_ms, args.first_only);
        println!("{}", report(&r, args.rate));
    }
    if args.serve {
        // One trial per line "RATE SECONDS [WARMUP]", one JSON line back each, over one
        // connection: a memif peer that disconnects and reconnects per trial is avoided.
        use std::io::{BufRead, Write};
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let line = line.map_err(|e| e.to_string())?;
            let v: Vec<f64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
            let (rate, seconds) = match v[..] {
                [r, s] | [r, s, _] => (r, s),
                _ => return Err(format!("--serve: '{line}' is not 'RATE SECONDS [WARMUP]'")),
            };
            if let Some(&warmup) = v.get(2) {
                io.run(warmup, rate, 100, false);
            }
            let r = io.run(seconds, rate, args.drain_ms, false);
            println!("{}", report(&r, rate));
            std::io::stdout().flush().map_err(|e| e.to_string())?;
        }
    }
    drop(txq);
    drop(rxqs);
    Ok(())
}
