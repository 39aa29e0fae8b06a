//! pcapgen: writes the benchmark traffic (see `vswitch_bench::pcap`) and, optionally, the
//! static MAC entries that make every flow known unicast to a port.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use clap::Parser;
use vswitch_bench::pcap::{flow_dst_mac, flow_frame, vxlan_headers, write_pcap, VTEP_MAC};

#[derive(Parser)]
#[command(about = "Write N-flow 64-byte UDP traffic as a pcap")]
struct Args {
    /// Number of flows (1 to 65536), one frame each.
    #[arg(long, default_value_t = 1024)]
    flows: u32,
    /// Output pcap file.
    #[arg(long)]
    out: PathBuf,
    /// Also write TOML [[static_mac]] entries sending every flow's destination to this port.
    #[arg(long, requires = "static_macs_out")]
    static_macs_port: Option<String>,
    #[arg(long)]
    static_macs_out: Option<PathBuf>,
    /// Wrap every frame in VXLAN with this VNI (decap traffic): outer 02:00:00:bb:00:02 ->
    /// 02:00:00:aa:00:01, 172.31.0.2 -> 172.31.0.1, UDP to 4789 with the source port from the
    /// inner flow, as a remote VTEP would send it.
    #[arg(long)]
    vxlan: Option<u32>,
}

/// The encapsulated frame of flow `i`, as a remote VTEP would send it.
fn vxlan_frame(vni: u32, i: u16) -> Vec<u8> {
    let inner = flow_frame(i);
    let mut f = vxlan_headers(vni, VTEP_MAC, &inner, inner.len()).to_vec();
    f.extend_from_slice(&inner);
    f
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    assert!((1..=65536).contains(&args.flows), "--flows must be 1 to 65536");
    let flows = (0..args.flows).map(|i| i as u16);
    match args.vxlan {
        Some(vni) => write_pcap(BufWriter::new(File::create(&args.out)?), flows.clone().map(|i| vxlan_frame(vni, i)))?,
        None => write_pcap(BufWriter::new(File::create(&args.out)?), flows.clone().map(flow_frame))?,
    }
    if let (Some(port), Some(path)) = (args.static_macs_port, args.static_macs_out) {
        let mut out = BufWriter::new(File::create(path)?);
        for i in flows {
            let m = flow_dst_mac(i);
            writeln!(
                out,
                "[[static_mac]]\nmac = \"{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}\"\nport = \"{port}\"\n",
                m[0], m[1], m[2], m[3], m[4], m[5]
            )?;
        }
        out.flush()?;
    }
    Ok(())
}
