//! vswitchctl: the command-line client of vswitchd's gRPC API.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;
use tonic::transport::Channel;
use vswitch_proto::v1::{self as pb, port_ref};

use pb::mac_table_service_client::MacTableServiceClient;
use pb::port_service_client::PortServiceClient;
use pb::switch_service_client::SwitchServiceClient;

#[derive(Parser)]
#[command(name = "vswitchctl", version, about = "Control and inspect a running vswitchd")]
struct Args {
    /// The daemon's API: a Unix socket path or http://HOST:PORT.
    #[arg(long, short, global = true, env = "VSWITCH_SERVER", default_value = dataplane::config::DEFAULT_SOCKET)]
    server: String,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Version, uptime, memory and generation of the switch.
    Show,
    /// Ports with link state and counters.
    #[command(visible_aliases = ["ports", "dump-ports"])]
    ListPorts,
    /// One port in detail (name or number).
    GetPort { port: String },
    /// Worker threads and their counters.
    #[command(visible_alias = "workers")]
    ListWorkers,
    /// Packets dropped by the datapath, by stage and reason.
    #[command(visible_alias = "drops")]
    ShowDrops {
        /// Only drops counted on this port.
        #[arg(long)]
        port: Option<String>,
        /// Also list reasons with no drops.
        #[arg(long)]
        all: bool,
    },
    /// The MAC learning table.
    #[command(visible_aliases = ["fdb-show", "mac-table"])]
    ListMacs {
        #[arg(long)]
        port: Option<String>,
        #[arg(long)]
        vlan: Option<u32>,
    },
    /// Remove MAC table entries (all dynamic ones without filters).
    #[command(visible_alias = "fdb-flush")]
    FlushMacs {
        #[arg(long)]
        port: Option<String>,
        #[arg(long)]
        vlan: Option<u32>,
        #[arg(long)]
        mac: Option<String>,
        /// Remove static entries too.
        #[arg(long)]
        include_static: bool,
    },
    /// Add a static MAC entry: frames to MAC go to PORT only.
    #[command(visible_alias = "fdb-add")]
    AddMac {
        mac: String,
        port: String,
        #[arg(long, default_value_t = 0)]
        vlan: u32,
    },
}

/// A port argument: a number names a port number, anything else a port name.
fn port_ref(s: &str) -> pb::PortRef {
    pb::PortRef {
        port: Some(match s.parse::<u32>() {
            Ok(n) => port_ref::Port::Number(n),
            Err(_) => port_ref::Port::Name(s.to_string()),
        }),
    }
}

/// Prints rows as aligned columns; numeric-looking cells are right-aligned.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let out: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, &w)| {
                if !c.is_empty() && c.chars().all(|ch| ch.is_ascii_digit() || ch == '.' || ch == '%') {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        println!("{}", out.join("  ").trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn print_json<T: Serialize>(v: &T) -> Result<(), String> {
    println!("{}", serde_json::to_string_pretty(v).map_err(|e| e.to_string())?);
    Ok(())
}

fn status_text(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

async fn run(args: Args) -> Result<(), String> {
    let channel: Channel = control::client::connect(&args.server).await?;
    let json = args.json;
    match args.command {
        Command::Show => {
            let info = SwitchServiceClient::new(channel)
                .get_info(pb::GetInfoRequest {})
                .await
                .map_err(status_text)?
                .into_inner();
            if json {
                return print_json(&info);
            }
            let m = info.memory.unwrap_or_default();
            println!("vswitchd {} ({})", info.version, info.dpdk_version);
            println!("uptime: {:.0} s, pipeline generation {}", info.uptime_seconds, info.generation);
            println!(
                "memory: {} mbufs of {} B ({} in use), {} hugepages of {}",
                m.mbufs,
                m.mbuf_data_room,
                m.mbufs_in_use,
                m.hugepages,
                human_bytes(m.hugepage_size)
            );
            println!("MAC table: capacity {}, aging {} s", info.mac_table_capacity, info.mac_aging_seconds);
            println!("EAL: {}", info.eal_args.join(" "));
        }
        Command::ListPorts => {
            let ports = PortServiceClient::new(channel)
                .list_ports(pb::ListPortsRequest {})
                .await
                .map_err(status_text)?
                .into_inner();
            if json {
                return print_json(&ports);
            }
            let rows: Vec<Vec<String>> = ports
                .ports
                .iter()
                .map(|p| {
                    let c = p.counters.unwrap_or_default();
                    let d = p.device.unwrap_or_default();
                    vec![
                        p.number.to_string(),
                        p.name.clone(),
                        p.driver.clone(),
                        if p.link.is_some_and(|l| l.up) { "up" } else { "down" }.into(),
                        c.rx_packets.to_string(),
                        c.rx_bytes.to_string(),
                        c.tx_packets.to_string(),
                        c.tx_bytes.to_string(),
                        c.rx_dropped.to_string(),
                        c.tx_dropped.to_string(),
                        d.rx_missed.to_string(),
                        (d.rx_errors + d.tx_errors).to_string(),
                    ]
                })
                .collect();
            print_table(
                &[
                    "NO",
                    "NAME",
                    "DRIVER",
                    "LINK",
                    "RX_PKTS",
                    "RX_BYTES",
                    "TX_PKTS",
                    "TX_BYTES",
                    "RX_DROP",
                    "TX_DROP",
                    "RX_MISSED",
                    "ERRORS",
                ],
                &rows,
            );
        }
        Command::GetPort { port } => {
            let p = PortServiceClient::new(channel)
                .get_port(pb::GetPortRequest { port: Some(port_ref(&port)) })
                .await
                .map_err(status_text)?
                .into_inner();
            if json {
                return print_json(&p);
            }
            let l = p.link.unwrap_or_default();
            let c = p.counters.unwrap_or_default();
            let d = p.device.unwrap_or_default();
            println!("port {} '{}'  {}  driver {}  DPDK port {}", p.number, p.name, p.mac, p.driver, p.dpdk_port_id);
            println!("  devargs: {}", p.devargs);
            println!(
                "  link {} {} Mb/s {}  mtu {}",
                if l.up { "up" } else { "down" },
                l.speed_mbps,
                if l.full_duplex { "full-duplex" } else { "half-duplex" },
                p.mtu
            );
            println!(
                "  queues: {} rx x {} descriptors, {} tx x {} descriptors",
                p.rx_queues, p.rx_descriptors, p.tx_queues, p.tx_descriptors
            );
            println!(
                "  switch: rx {} pkts {} B, tx {} pkts {} B, rx dropped {}, tx dropped {}",
                c.rx_packets, c.rx_bytes, c.tx_packets, c.tx_bytes, c.rx_dropped, c.tx_dropped
            );
            println!(
                "  device: rx {} pkts {} B, tx {} pkts {} B, rx missed {}, rx errors {}, tx errors {}, rx no mbuf {}",
                d.rx_packets, d.rx_bytes, d.tx_packets, d.tx_bytes, d.rx_missed, d.rx_errors, d.tx_errors, d.rx_nombuf
            );
        }
        Command::ListWorkers => {
            let w = SwitchServiceClient::new(channel)
                .list_workers(pb::ListWorkersRequest {})
                .await
                .map_err(status_text)?
                .into_inner();
            if json {
                return print_json(&w);
            }
            let rows: Vec<Vec<String>> = w
                .workers
                .iter()
                .map(|w| {
                    let total = w.busy_cycles + w.idle_cycles;
                    let busy = if total > 0 { 100.0 * w.busy_cycles as f64 / total as f64 } else { 0.0 };
                    let cpp = w.busy_cycles.checked_div(w.rx_packets).unwrap_or(0);
                    vec![
                        w.index.to_string(),
                        w.core.to_string(),
                        w.rx_queues.join(","),
                        w.rx_packets.to_string(),
                        w.tx_packets.to_string(),
                        w.dropped.to_string(),
                        format!("{busy:.1}%"),
                        cpp.to_string(),
                        w.mac_learned.to_string(),
                        w.generation.to_string(),
                    ]
                })
                .collect();
            print_table(
                &["WORKER", "CORE", "RX_QUEUES", "RX_PKTS", "TX_PKTS", "DROPPED", "BUSY", "CYC/PKT", "LEARNED", "GEN"],
                &rows,
            );
        }
        Command::ShowDrops { port, all } => {
            let d = SwitchServiceClient::new(channel)
                .list_drops(pb::ListDropsRequest { port: port.as_deref().map(port_ref) })
                .await
                .map_err(status_text)?
                .into_inner();
            if json {
                return print_json(&d);
            }
            let rows: Vec<Vec<String>> = d
                .drops
                .iter()
                .filter(|c| all || c.packets > 0)
                .map(|c| vec![c.stage.clone(), c.reason.clone(), c.packets.to_string(), c.description.clone()])
                .collect();
            if rows.is_empty() {
                println!("no drops");
            } else {
                print_table(&["STAGE", "REASON", "PACKETS", "DESCRIPTION"], &rows);
            }
        }
        Command::ListMacs { port, vlan } => {
            let m = MacTableServiceClient::new(channel)
                .list_macs(pb::ListMacsRequest { port: port.as_deref().map(port_ref), vlan })
                .await
                .map_err(status_text)?
                .into_inner();
            if json {
                return print_json(&m);
            }
            let rows: Vec<Vec<String>> = m
                .entries
                .iter()
                .map(|e| {
                    vec![
                        e.port_number.to_string(),
                        e.port_name.clone(),
                        e.vlan.to_string(),
                        e.mac.clone(),
                        if e.r#static { "static".into() } else { e.age_seconds.to_string() },
                    ]
                })
                .collect();
            print_table(&["PORT", "NAME", "VLAN", "MAC", "AGE"], &rows);
            println!("{} entries (capacity {})", m.entries.len(), m.capacity);
        }
        Command::FlushMacs { port, vlan, mac, include_static } => {
            let r = MacTableServiceClient::new(channel)
                .flush_macs(pb::FlushMacsRequest {
                    port: port.as_deref().map(port_ref),
                    vlan,
                    mac: mac.unwrap_or_default(),
                    include_static,
                })
                .await
                .map_err(status_text)?
                .into_inner();
            if json {
                return print_json(&r);
            }
            println!("removed {} entries", r.removed);
        }
        Command::AddMac { mac, port, vlan } => {
            let r = MacTableServiceClient::new(channel)
                .add_static_mac(pb::AddStaticMacRequest { mac, vlan, port: Some(port_ref(&port)) })
                .await
                .map_err(status_text)?
                .into_inner();
            if json {
                return print_json(&r);
            }
            println!("added");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vswitchctl: {e}");
            ExitCode::FAILURE
        }
    }
}
