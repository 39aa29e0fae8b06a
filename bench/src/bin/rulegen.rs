//! rulegen: writes flow files (ovs-ofctl syntax, one per line) for the benchmarks, matching
//! the traffic of `pcapgen` (flow i: dst MAC 02:00:00:00:hi:lo, dst IP 10.1.hi.lo, UDP
//! 1234 -> 5678, src 10.0.0.1). The same files load into OVS with `ovs-ofctl add-flows`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    /// One rule: in_port=1 -> output:2.
    InPort,
    /// One exact dl_dst rule per flow.
    DlDst,
    /// One exact ip nw_dst rule per flow (a single mask).
    NwDst,
    /// One rule per flow spread over four masks and priorities, plus /24 prefix rules
    /// underneath: an ACL-like table where lookups probe several subtables.
    Multimask,
    /// Rules for destinations the traffic does not use (10.2.0.0/16 and up): installing them
    /// changes nothing for the traffic.
    Unused,
}

#[derive(Parser)]
#[command(about = "Write benchmark flow files")]
struct Args {
    #[arg(long, value_enum)]
    kind: Kind,
    /// Number of flows (traffic flows for dl-dst/nw-dst/multimask, rules for unused).
    #[arg(long, default_value_t = 1024)]
    flows: u32,
    /// Output port number of every rule.
    #[arg(long, default_value_t = 2)]
    out_port: u32,
    #[arg(long)]
    out: PathBuf,
}

fn main() -> std::io::Result<()> {
    let a = Args::parse();
    let mut w = BufWriter::new(File::create(&a.out)?);
    let p = a.out_port;
    let ip = |i: u32| format!("10.1.{}.{}", (i >> 8) & 255, i & 255);
    match a.kind {
        Kind::InPort => writeln!(w, "in_port=1,actions=output:{p}")?,
        Kind::DlDst => {
            for i in 0..a.flows {
                writeln!(
                    w,
                    "priority=100,dl_dst=02:00:00:00:{:02x}:{:02x},actions=output:{p}",
                    (i >> 8) & 255,
                    i & 255
                )?;
            }
        }
        Kind::NwDst => {
            for i in 0..a.flows {
                writeln!(w, "priority=100,ip,nw_dst={},actions=output:{p}", ip(i))?;
            }
        }
        Kind::Multimask => {
            for i in 0..a.flows {
                match i % 4 {
                    0 => writeln!(w, "priority=100,ip,nw_dst={},actions=output:{p}", ip(i))?,
                    1 => writeln!(w, "priority=110,udp,nw_dst={},tp_dst=5678,actions=output:{p}", ip(i))?,
                    2 => {
                        writeln!(w, "priority=120,udp,nw_src=10.0.0.1,nw_dst={},tp_src=1234,actions=output:{p}", ip(i))?
                    }
                    _ => writeln!(
                        w,
                        "priority=130,ip,dl_dst=02:00:00:00:{:02x}:{:02x},nw_dst={},actions=output:{p}",
                        (i >> 8) & 255,
                        i & 255,
                        ip(i)
                    )?,
                }
            }
            for x in 0..256 {
                writeln!(w, "priority=50,ip,nw_dst=10.1.{x}.0/24,actions=output:{p}")?;
            }
        }
        Kind::Unused => {
            for i in 0..a.flows {
                writeln!(
                    w,
                    "priority=100,ip,nw_dst=10.{}.{}.{},actions=output:{p}",
                    2 + (i >> 16),
                    (i >> 8) & 255,
                    i & 255
                )?;
            }
        }
    }
    w.flush()
}
