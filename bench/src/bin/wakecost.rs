//! wakecost: what one timer wake-up costs on this machine, the floor under an idle worker's
//! CPU and under the wait for the first packet after idle.
//!
//! An idle worker whose queues have no rx interrupt (memif, af_packet) sleeps and polls: its
//! CPU is wakes per second times the cost of one wake, and the first packet after idle waits
//! up to one sleep plus the oversleep. Both costs belong to the kernel and, in a VM, the
//! hypervisor (timer interrupt, halt exit, scheduling), not to the switch. This runs the
//! worker's own sleep (`std::thread::sleep`, 2 µs timer slack) on a pinned thread that does
//! nothing else, and reads the CPU the scheduler charges it (/proc/thread-self/schedstat).
//!
//! With `--signal-from CORE` it also measures the other wake-up an idle worker waits for: a
//! thread blocked in a read on the worker's core, woken by a byte a thread on CORE writes
//! after each pause (as a peer's rx interrupt, an eventfd write, wakes a worker in deep idle).
//!
//!   wakecost --core 1 --sleep-us 32,100,500,1000 --seconds 1 [--signal-from 0] [--json]

use std::time::{Duration, Instant};

use clap::Parser;
use hdrhistogram::Histogram;

#[derive(Parser)]
#[command(about = "CPU charged per timer wake-up, and oversleep, for a thread that only sleeps")]
struct Args {
    /// Core to pin the sleeping thread to (the worker's).
    #[arg(long, default_value_t = 1)]
    core: usize,
    /// Sleep lengths to measure, µs.
    #[arg(long, value_delimiter = ',', default_value = "32,100,500,1000")]
    sleep_us: Vec<u64>,
    /// Seconds per sleep length.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Also measure wake-ups by a byte from a thread on this core (a peer's signal).
    #[arg(long)]
    signal_from: Option<usize>,
    /// Pause before each signal, ms.
    #[arg(long, default_value_t = 50)]
    signal_gap_ms: u64,
    /// Signals to send.
    #[arg(long, default_value_t = 40)]
    signals: u32,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

/// Wake-ups by signal: from the write to the blocked reader's return, µs.
struct SignalFigures {
    from: usize,
    gap_ms: u64,
    count: u64,
    p50_us: f64,
    p99_us: f64,
    max_us: f64,
}

/// A thread on `core` blocks reading a socket; a thread on `from` writes one byte to it
/// `count` times, each after `gap`. Records how long each write took to wake the reader.
fn measure_signal(core: usize, from: usize, gap: Duration, count: u32) -> std::io::Result<SignalFigures> {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    let (mut writer, mut reader) = std::os::unix::net::UnixStream::pair()?;
    let base = Instant::now();
    let sent_at = Arc::new(AtomicU64::new(0));
    let sent = sent_at.clone();
    let waiter = std::thread::spawn(move || -> std::io::Result<Histogram<u64>> {
        if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
            return Err(std::io::Error::other(format!("cannot pin to core {core}")));
        }
        let mut woke = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("histogram bounds");
        let mut byte = [0u8; 1];
        for _ in 0..count {
            reader.read_exact(&mut byte)?;
            let now = base.elapsed().as_nanos() as u64;
            woke.saturating_record(now.saturating_sub(sent.load(Ordering::Acquire)).max(1));
        }
        Ok(woke)
    });
    if !core_affinity::set_for_current(core_affinity::CoreId { id: from }) {
        return Err(std::io::Error::other(format!("cannot pin to core {from}")));
    }
    for _ in 0..count {
        std::thread::sleep(gap);
        sent_at.store(base.elapsed().as_nanos() as u64, Ordering::Release);
        writer.write_all(&[1])?;
    }
    let woke = waiter.join().map_err(|_| std::io::Error::other("the waiting thread panicked"))??;
    Ok(SignalFigures {
        from,
        gap_ms: gap.as_millis() as u64,
        count: woke.len(),
        p50_us: woke.value_at_quantile(0.5) as f64 / 1e3,
        p99_us: woke.value_at_quantile(0.99) as f64 / 1e3,
        max_us: woke.max() as f64 / 1e3,
    })
}

/// One sleep length's figures.
struct Figures {
    sleep_us: u64,
    wakes_per_s: f64,
    cpu_cores: f64,
    cpu_us_per_wake: f64,
    oversleep_p50_us: f64,
    oversleep_p99_us: f64,
    oversleep_max_us: f64,
}

/// Run time (ns) the scheduler has charged the calling thread.
fn run_ns() -> std::io::Result<u64> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat")?;
    Ok(text.split_whitespace().next().and_then(|f| f.parse().ok()).unwrap_or(0))
}

fn measure(sleep_us: u64, seconds: f64) -> std::io::Result<Figures> {
    let sleep = Duration::from_micros(sleep_us);
    let mut oversleep = Histogram::<u64>::new_with_bounds(1, 10_000_000_000, 3).expect("histogram bounds");
    // Settle first: the first wakes after a change of pace are not typical.
    for _ in 0..10 {
        std::thread::sleep(sleep);
    }
    let run0 = run_ns()?;
    let start = Instant::now();
    let mut wakes = 0u64;
    while start.elapsed().as_secs_f64() < seconds {
        let t = Instant::now();
        std::thread::sleep(sleep);
        let over = t.elapsed().saturating_sub(sleep);
        oversleep.saturating_record(over.as_nanos().max(1) as u64);
        wakes += 1;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let run1 = run_ns()?;
    let cpu_s = run1.saturating_sub(run0) as f64 / 1e9;
    Ok(Figures {
        sleep_us,
        wakes_per_s: wakes as f64 / elapsed,
        cpu_cores: cpu_s / elapsed,
        cpu_us_per_wake: cpu_s * 1e6 / wakes.max(1) as f64,
        oversleep_p50_us: oversleep.value_at_quantile(0.5) as f64 / 1e3,
        oversleep_p99_us: oversleep.value_at_quantile(0.99) as f64 / 1e3,
        oversleep_max_us: oversleep.max() as f64 / 1e3,
    })
}

fn main() {
    let args = Args::parse();
    if args.sleep_us.is_empty()
        || args.sleep_us.contains(&0)
        || args.seconds.is_nan()
        || args.seconds <= 0.0
        || args.signals == 0
    {
        eprintln!("wakecost: --sleep-us needs lengths above 0, --seconds a positive number and --signals at least 1");
        std::process::exit(2);
    }
    if !core_affinity::set_for_current(core_affinity::CoreId { id: args.core }) {
        eprintln!("wakecost: cannot pin to core {}", args.core);
        std::process::exit(1);
    }
    // As the worker: a sleep of a few µs must not turn into the default 50 µs slack.
    dataplane::dpdk::set_timer_slack(2_000);
    let figures: Vec<Figures> = match args.sleep_us.iter().map(|&us| measure(us, args.seconds)).collect() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("wakecost: reading /proc/thread-self/schedstat: {e}");
            std::process::exit(1);
        }
    };
    let signal = match args.signal_from {
        Some(from) => match measure_signal(args.core, from, Duration::from_millis(args.signal_gap_ms), args.signals) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("wakecost: signal wake-ups from core {from}: {e}");
                std::process::exit(1);
            }
        },
        None => None,
    };
    if args.json {
        let rows: Vec<serde_json::Value> = figures
            .iter()
            .map(|f| {
                serde_json::json!({
                    "sleep_us": f.sleep_us,
                    "wakes_per_s": round(f.wakes_per_s, 0),
                    "cpu_cores": round(f.cpu_cores, 4),
                    "cpu_us_per_wake": round(f.cpu_us_per_wake, 1),
                    "oversleep_us": {
                        "p50": round(f.oversleep_p50_us, 1),
                        "p99": round(f.oversleep_p99_us, 1),
                        "max": round(f.oversleep_max_us, 1),
                    },
                })
            })
            .collect();
        let mut out = serde_json::json!({ "core": args.core, "sleeps": rows });
        if let Some(f) = &signal {
            out["signal"] = serde_json::json!({
                "from_core": f.from,
                "gap_ms": f.gap_ms,
                "count": f.count,
                "wake_us": { "p50": round(f.p50_us, 1), "p99": round(f.p99_us, 1), "max": round(f.max_us, 1) },
            });
        }
        println!("{out}");
        return;
    }
    println!("core {}: a thread that only sleeps", args.core);
    println!("| sleep µs | wakes/s | CPU cores | CPU µs per wake | oversleep p50 / p99 / max µs |");
    println!("|---|---|---|---|---|");
    for f in &figures {
        println!(
            "| {} | {:.0} | {:.4} | {:.1} | {:.1} / {:.1} / {:.1} |",
            f.sleep_us,
            f.wakes_per_s,
            f.cpu_cores,
            f.cpu_us_per_wake,
            f.oversleep_p50_us,
            f.oversleep_p99_us,
            f.oversleep_max_us
        );
    }
    if let Some(f) = &signal {
        println!(
            "\ncore {}: a blocked read woken by a byte from core {} after {} ms pauses ({} times): \
             p50 / p99 / max {:.1} / {:.1} / {:.1} µs",
            args.core, f.from, f.gap_ms, f.count, f.p50_us, f.p99_us, f.max_us
        );
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let k = 10f64.powi(digits);
    (x * k).round() / k
}
