//! policycost: what a large policy change costs the control plane, without DPDK: reading a
//! flow file (`ovs-ofctl add-flows` syntax) into flows and applying them to a fresh flow
//! store, as `vswitchctl add-flows` makes the daemon do. Prints the median over the runs.
//! Run it under `valgrind --tool=callgrind` with `--runs 1` for instruction counts, which
//! this noisy VM's timings cannot settle.

use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use dataplane::flow::compiled::MissAction;
use dataplane::flow::parse::{flow_lines, parse_flow_sharing, SharedActions};
use dataplane::flow::store::{FlowOp, FlowStore};

#[derive(Parser)]
#[command(about = "Time parsing and applying a flow file")]
struct Args {
    /// A flow file, e.g. from `rulegen --kind nw-dst --flows 10000`.
    file: PathBuf,
    #[arg(long, default_value_t = 20)]
    runs: usize,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    let rules = flow_lines(&text).len();
    let (mut parse_ms, mut apply_ms) = (Vec::new(), Vec::new());
    for _ in 0..args.runs.max(1) {
        let t0 = Instant::now();
        let mut shared = SharedActions::default();
        let parsed = flow_lines(&text)
            .map(|(line, t)| parse_flow_sharing(t, &mut shared).map_err(|e| format!("line {line}: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        parse_ms.push(t0.elapsed().as_secs_f64() * 1e3);
        drop(parsed);

        // As the daemon does it: each rule parsed as the transaction reaches it.
        let mut store = FlowStore::new(1 << 20, MissAction::Drop);
        let t0 = Instant::now();
        let mut shared = SharedActions::default();
        let ops = flow_lines(&text).map(|(_, t)| {
            parse_flow_sharing(t, &mut shared).map(FlowOp::Add).map_err(|e| dataplane::flow::store::TxError {
                op: 0,
                field: String::new(),
                message: e.to_string(),
            })
        });
        store.apply(ops, &|_| true, &|_| (0, 0)).map_err(|e| e.to_string())?;
        apply_ms.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    let (parse, apply) = (median(parse_ms), median(apply_ms));
    println!("{rules} rules, median of {} runs", args.runs.max(1));
    println!("parse only:        {parse:7.2} ms  {:6.0} ns/rule", parse * 1e6 / rules as f64);
    println!("parse and apply:   {apply:7.2} ms  {:6.0} ns/rule", apply * 1e6 / rules as f64);
    Ok(())
}
