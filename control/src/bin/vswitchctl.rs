//! vswitchctl: the command-line client of vswitchd's gRPC API.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;
use tonic::transport::Channel;
use vswitch_proto::v1::{self as pb, port_ref};

use pb::flow_service_client::FlowServiceClient;
use pb::mac_table_service_client::MacTableServiceClient;
use pb::port_service_client::PortServiceClient;
use pb::switch_service_client::SwitchServiceClient;
use pb::tunnel_service_client::TunnelServiceClient;

#[derive(Parser)]
#[command(name = "vswitchctl", version, about = "Control and inspect a running vswitchd")]
struct Args {
    /// The daemon's API: a Unix socket path or http://HOST:PORT.
    #[arg(long, short, global = true, env = "VSWITCH_SERVER", default_value = vswitch_proto::DEFAULT_SOCKET)]
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
    /// Add a port to the running switch, e.g.
    /// "add-port pod1 11 net_af_packet_pod1,iface=veth-pod1".
    AddPort {
        name: String,
        /// Port number flows use.
        number: u32,
        /// DPDK devargs: a vdev or a PCI address.
        devargs: String,
        #[arg(long)]
        rx_queues: Option<u32>,
        /// Rx and tx descriptors (default 256).
        #[arg(long)]
        descriptors: Option<u32>,
        #[arg(long)]
        mtu: Option<u32>,
    },
    /// Remove a port (refused while flows use it).
    #[command(visible_alias = "del-port")]
    RemovePort { name: String },
    /// Worker threads and their counters.
    #[command(visible_aliases = ["workers", "show-workers"])]
    ListWorkers,
    /// What workers do when idle, at once and until the next start: "backoff" (poll, then
    /// sleep or wait for rx interrupts) or "busy-poll" (lowest latency, a whole core each)
    SetIdle {
        mode: IdleModeArg,
        /// Only this worker (its index in list-workers); all when absent.
        #[arg(long)]
        worker: Option<u32>,
    },
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
    /// Add one flow, e.g. "table=0,priority=100,in_port=1,ip,nw_dst=10.0.0.0/24,actions=output:2".
    /// Returns once every worker runs it (unless --no-wait).
    AddFlow {
        flow: String,
        #[arg(long)]
        no_wait: bool,
    },
    /// Add the flows of FILE (one per line, # comments) as one transaction.
    AddFlows {
        file: std::path::PathBuf,
        #[arg(long)]
        no_wait: bool,
    },
    /// Replace all flows (of one table with --table) by those of FILE, as one transaction.
    ReplaceFlows {
        file: std::path::PathBuf,
        #[arg(long)]
        table: Option<u8>,
        #[arg(long)]
        no_wait: bool,
    },
    /// Change the actions of the flows a filter selects: "FILTER,actions=...".
    ModFlows {
        spec: String,
        #[arg(long)]
        strict: bool,
        #[arg(long)]
        no_wait: bool,
    },
    /// Delete the flows a filter selects (all flows without one).
    DelFlows {
        filter: Option<String>,
        #[arg(long)]
        strict: bool,
        #[arg(long)]
        no_wait: bool,
    },
    /// Print flows with their counters.
    DumpFlows {
        filter: Option<String>,
        #[arg(long)]
        strict: bool,
    },
    /// Print tables: flows, miss action, lookups.
    #[command(visible_alias = "show-tables")]
    DumpTables,
    /// Set what TABLE does with packets no flow matches: drop, normal or goto_table:N.
    SetTableMiss { table: u8, miss: String },
    /// Follow a packet through the tables, e.g. "in_port=1,dl_dst=02:00:00:00:00:02,tcp,nw_dst=10.0.0.2,tp_dst=80".
    Trace { packet: String },
    /// Trace the next packets that arrive matching FILTER (e.g. "in_port=1,icmp"; "" for
    /// any): the stages each passed, the flows that matched, and where it went or why it
    /// was dropped.
    TraceLive {
        filter: String,
        /// How many packets.
        #[arg(long, short = 'n', default_value_t = 1)]
        count: u32,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        timeout: u32,
    },
    /// Print named counters (counter:NAME actions).
    DumpCounters,
    /// Add a VXLAN or Geneve tunnel port, e.g.
    /// "add-tunnel vx0 10 vxlan --uplink up0 --remote-ip 192.168.50.2 --vni 100".
    AddTunnel {
        name: String,
        /// Port number flows use.
        number: u32,
        /// vxlan or geneve.
        kind: String,
        /// Uplink port (a port with an ip).
        #[arg(long)]
        uplink: String,
        /// Remote VTEP; without it, flows set tun_dst per packet.
        #[arg(long)]
        remote_ip: Option<String>,
        /// VNI; without it, flows set tun_id per packet (set_tunnel:VNI).
        #[arg(long)]
        vni: Option<u32>,
        /// Local VTEP (default: the uplink's address).
        #[arg(long)]
        local_ip: Option<String>,
        /// UDP destination port (default: 4789 vxlan, 6081 geneve).
        #[arg(long)]
        dst_port: Option<u32>,
    },
    /// Remove a tunnel port (refused while flows use it).
    #[command(visible_alias = "del-tunnel")]
    RemoveTunnel { name: String },
    /// Tunnel ports with their counters, and the uplinks.
    #[command(visible_alias = "tunnels")]
    ListTunnels,
    /// The underlay neighbor table (ARP).
    #[command(visible_alias = "neighbors")]
    ListNeighbors,
    /// Add a static underlay neighbor.
    AddNeighbor { ip: String, mac: String },
    /// Remove an underlay neighbor (ARP resolves it again when needed).
    #[command(visible_alias = "del-neighbor")]
    RemoveNeighbor { ip: String },
}

/// A flow text error with the caret under the word.
fn syntax_error(what: &str, input: &str, e: &dataplane::flow::parse::ParseError) -> String {
    format!("{what}: {}", e.render(input))
}

/// A flow file as it is: `add-flows` sends it whole and the daemon parses it (one parse,
/// no conversion, one string): the fast way to load 100,000 flows.
fn read_file(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// The flows of a flow file (blank lines and # comments skipped), one text each, and the
/// line each is on.
fn read_flows(path: &std::path::Path) -> Result<(Vec<String>, Vec<usize>), String> {
    let text = read_file(path)?;
    Ok(dataplane::flow::flow_lines(&text).map(|(line, flow)| (flow.to_string(), line)).unzip())
}

/// Turns the daemon's "text:LINE: message (at column C)", "texts[i]: ..." or
/// "ops[i].add_text: ..." into "FILE:LINE: message" with the line and a caret under the
/// column. `offset` is the number of operations before the first text. The file is read
/// again for this: the request took its text.
fn file_error(status: tonic::Status, path: &std::path::Path, offset: usize) -> String {
    let Ok((texts, lines)) = read_flows(path) else { return status_text(status) };
    let msg = status.message();
    let index = match msg.strip_prefix("text:") {
        Some(rest) => rest
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|l| l.parse::<usize>().ok())
            .and_then(|line| lines.iter().position(|&l| l == line)),
        None => msg
            .strip_prefix("texts[")
            .or_else(|| msg.strip_prefix("ops["))
            .and_then(|r| r.split(']').next())
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| i.checked_sub(offset)),
    };
    let Some(i) = index.filter(|i| *i < texts.len()) else { return status_text(status) };
    let detail = msg.split_once(": ").map_or(msg, |(_, d)| d);
    let column = detail.rsplit_once("(at column ").and_then(|(_, c)| c.trim_end_matches(')').parse::<usize>().ok());
    let mut out = format!("{}:{}: {}", path.display(), lines[i], detail);
    if let Some(c) = column {
        out = format!("{out}\n  {}\n  {}^", texts[i], " ".repeat(c.saturating_sub(1)));
    }
    out
}

fn filter_arg(filter: Option<&str>) -> Result<pb::FlowFilter, String> {
    match filter {
        None => Ok(control::convert::filter_from_model(&Default::default())),
        Some(f) => dataplane::flow::parse_filter(f)
            .map(|f| control::convert::filter_from_model(&f))
            .map_err(|e| syntax_error("filter", f, &e)),
    }
}

fn print_tx(r: &pb::TransactResponse, json: bool) -> Result<(), String> {
    if json {
        return print_json(r);
    }
    let mut parts = Vec::new();
    for (n, what) in [(r.added, "added"), (r.modified, "modified"), (r.deleted, "deleted")] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    if parts.is_empty() {
        parts.push("done".into());
    }
    println!(
        "{} (generation {}{})",
        parts.join(", "),
        r.generation,
        if r.live { ", live on every worker" } else { "" }
    );
    Ok(())
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

/// What the worker table says about each worker.
fn print_workers(workers: &[pb::Worker]) {
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            let total = w.busy_cycles + w.idle_cycles;
            let busy = if total > 0 { 100.0 * w.busy_cycles as f64 / total as f64 } else { 0.0 };
            // Time outside sleep calls; the OS charges more (wake-ups cost kernel time).
            let awake = if total > 0 { 100.0 * (total - w.sleep_cycles.min(total)) as f64 / total as f64 } else { 0.0 };
            let cpp = w.busy_cycles.checked_div(w.rx_packets).unwrap_or(0);
            let bursts: u64 = w.rx_bursts.iter().sum();
            let per_burst = if bursts > 0 { w.rx_packets as f64 / bursts as f64 } else { 0.0 };
            let emc = w.emc_hits + w.emc_misses;
            let emc = if emc > 0 { format!("{:.1}%", 100.0 * w.emc_hits as f64 / emc as f64) } else { "-".into() };
            vec![
                w.index.to_string(),
                w.core.to_string(),
                w.rx_queues.join(","),
                w.rx_packets.to_string(),
                w.tx_packets.to_string(),
                w.dropped.to_string(),
                format!("{busy:.1}%"),
                format!("{awake:.1}%"),
                w.idle_mode.clone(),
                w.idle_state.clone(),
                dataplane::power::short(&w.cpu_resume_latency),
                cpp.to_string(),
                format!("{per_burst:.1}"),
                emc,
                w.mac_learned.to_string(),
                w.generation.to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "WORKER",
            "CORE",
            "RX_QUEUES",
            "RX_PKTS",
            "TX_PKTS",
            "DROPPED",
            "BUSY",
            "AWAKE",
            "IDLE_MODE",
            "IDLE",
            "WAKE_LIMIT",
            "CYC/PKT",
            "PKT/BURST",
            "EMC_HITS",
            "LEARNED",
            "GEN",
        ],
        &rows,
    );
}

/// `set-idle`'s modes (pb::IdleMode without its unset value).
#[derive(Clone, Copy, clap::ValueEnum)]
enum IdleModeArg {
    Backoff,
    BusyPoll,
}

fn print_json<T: Serialize>(v: &T) -> Result<(), String> {
    println!("{}", serde_json::to_string_pretty(v).map_err(|e| e.to_string())?);
    Ok(())
}

/// Prints a reply that carries no figures: as JSON, or as one word.
fn acknowledge<T: Serialize>(json: bool, reply: &T, word: &str) -> Result<(), String> {
    if json {
        return print_json(reply);
    }
    println!("{word}");
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
                "memory: {} mbufs of {} B ({} in use); {} mapped, {} hugepages of {} checked free at start",
                m.mbufs,
                m.mbuf_data_room,
                m.mbufs_in_use,
                human_bytes(m.mapped_bytes),
                m.hugepages,
                human_bytes(m.hugepage_size)
            );
            println!("MAC table: capacity {}, aging {} s", info.mac_table_capacity, info.mac_aging_seconds);
            println!("EAL: {}", info.eal_args.join(" "));
            if info.live_trace {
                println!("a live trace is running");
            }
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
                "  queues: {} rx x {} descriptors, {} tx x {} descriptors, rx interrupts {}",
                p.rx_queues,
                p.rx_descriptors,
                p.tx_queues,
                p.tx_descriptors,
                if p.rx_interrupts { "yes" } else { "no" }
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
            print_workers(&w.workers);
        }
        Command::SetIdle { mode, worker } => {
            let mode = match mode {
                IdleModeArg::Backoff => pb::IdleMode::Backoff,
                IdleModeArg::BusyPoll => pb::IdleMode::BusyPoll,
            };
            let r = SwitchServiceClient::new(channel)
                .set_worker_idle(pb::SetWorkerIdleRequest { worker, mode: mode as i32 })
                .await
                .map_err(status_text)?
                .into_inner();
            if json {
                return print_json(&r);
            }
            print_workers(&r.workers);
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
        Command::AddFlow { flow, no_wait } => {
            let spec = dataplane::flow::parse_flow(&flow).map_err(|e| syntax_error("flow", &flow, &e))?;
            let r = FlowServiceClient::new(channel)
                .add_flows(pb::AddFlowsRequest {
                    flows: vec![control::convert::flow_from_model(&spec)],
                    wait: !no_wait,
                    ..Default::default()
                })
                .await
                .map_err(status_text)?
                .into_inner();
            print_tx(&r, json)?;
        }
        Command::AddFlows { file, no_wait } => {
            // The file goes as it is, one string: the daemon splits it into flows.
            let text = read_file(&file)?;
            let r = flow_client(channel)
                .add_flows(pb::AddFlowsRequest { text, wait: !no_wait, ..Default::default() })
                .await
                .map_err(|s| file_error(s, &file, 0))?
                .into_inner();
            print_tx(&r, json)?;
        }
        Command::ReplaceFlows { file, table, no_wait } => {
            let (texts, _) = read_flows(&file)?;
            let filter = pb::FlowFilter { table: table.map(|t| t as u32), ..Default::default() };
            let mut ops = vec![pb::FlowOp {
                op: Some(pb::flow_op::Op::Delete(pb::DeleteFlowsRequest {
                    filter: Some(filter),
                    strict: false,
                    wait: false,
                })),
            }];
            ops.extend(texts.into_iter().map(|t| pb::FlowOp { op: Some(pb::flow_op::Op::AddText(t)) }));
            let r = flow_client(channel)
                .transact(pb::TransactRequest { ops, wait: !no_wait })
                .await
                .map_err(|s| file_error(s, &file, 1))?
                .into_inner();
            print_tx(&r, json)?;
        }
        Command::ModFlows { spec, strict, no_wait } => {
            let (filter, actions) =
                dataplane::flow::parse::parse_flow_mod(&spec).map_err(|e| syntax_error("flow", &spec, &e))?;
            let r = FlowServiceClient::new(channel)
                .modify_flows(pb::ModifyFlowsRequest {
                    filter: Some(control::convert::filter_from_model(&filter)),
                    actions: actions.iter().map(control::convert::action_from_model).collect(),
                    strict,
                    wait: !no_wait,
                })
                .await
                .map_err(status_text)?
                .into_inner();
            print_tx(&r, json)?;
        }
        Command::DelFlows { filter, strict, no_wait } => {
            let filter = filter_arg(filter.as_deref())?;
            let r = FlowServiceClient::new(channel)
                .delete_flows(pb::DeleteFlowsRequest { filter: Some(filter), strict, wait: !no_wait })
                .await
                .map_err(status_text)?
                .into_inner();
            print_tx(&r, json)?;
        }
        Command::DumpFlows { filter, strict } => {
            let filter = filter_arg(filter.as_deref())?;
            let r = flow_client(channel)
                .dump_flows(pb::DumpFlowsRequest { filter: Some(filter), strict })
                .await
                .map_err(status_text)?
                .into_inner();
            if json {
                return print_json(&r);
            }
            for f in &r.flows {
                let flow = f.flow.clone().unwrap_or_default();
                let spec = control::convert::flow_to_model(&flow).map_err(|e| e.to_string())?;
                let mut timeouts = String::new();
                if spec.idle_timeout != 0 {
                    timeouts += &format!("idle_timeout={}, ", spec.idle_timeout);
                }
                if spec.hard_timeout != 0 {
                    timeouts += &format!("hard_timeout={}, ", spec.hard_timeout);
                }
                let m = if spec.matching == dataplane::flow::Match::ANY {
                    String::new()
                } else {
                    format!(",{}", spec.matching)
                };
                println!(
                    " cookie={:#x}, duration={:.3}s, table={}, n_packets={}, n_bytes={}, {timeouts}priority={}{m} actions={}",
                    spec.cookie,
                    f.duration_seconds,
                    spec.table,
                    f.packets,
                    f.bytes,
                    spec.priority,
                    dataplane::flow::action::format_actions(&spec.actions)
                );
            }
        }
        Command::DumpTables => {
            let r = FlowServiceClient::new(channel)
                .list_tables(pb::ListTablesRequest {})
                .await
                .map_err(status_text)?
                .into_inner();
            if json {
                return print_json(&r);
            }
            let rows: Vec<Vec<String>> = r
                .tables
                .iter()
                .map(|t| {
                    vec![
                        t.id.to_string(),
                        t.flows.to_string(),
                        t.miss.clone(),
                        t.lookups.to_string(),
                        t.matched.to_string(),
                        t.missed.to_string(),
                    ]
                })
                .collect();
            print_table(&["TABLE", "FLOWS", "MISS", "LOOKUPS", "MATCHED", "MISSED"], &rows);
            let total = r.emc_hits + r.emc_misses;
            if total > 0 {
                println!(
                    "exact-match cache: {} hits, {} misses ({:.1}% hits)",
                    r.emc_hits,
                    r.emc_misses,
                    100.0 * r.emc_hits as f64 / total as f64
                );
            }
        }
        Command::SetTableMiss { table, miss } => {
            let r = FlowServiceClient::new(channel)
                .set_table_miss(pb::SetTableMissRequest { table: table as u32, miss, wait: true })
                .await
                .map_err(status_text)?
                .into_inner();
            print_tx(&r, json)?;
        }
        Command::Trace { packet } => {
            let key = dataplane::flow::parse_packet(&packet).map_err(|e| syntax_error("packet", &packet, &e))?;
            let fields = control::convert::match_from_model(&dataplane::flow::Match::of_key(&key));
            let fields = pb::Match { in_port: Some(key.in_port() as u32), ..fields };
            let r = FlowServiceClient::new(channel)
                .trace(pb::TraceRequest { packet: Some(pb::trace_request::Packet::Fields(fields)), in_port: 0 })
                .await
                .map_err(status_text)?
                .into_inner();
            if json {
                return print_json(&r);
            }
            println!("Packet: {packet}");
            for s in &r.steps {
                if s.flow.is_empty() {
                    println!("\nTable {}: no match (miss: {})", s.table, s.miss);
                } else {
                    println!("\nTable {}: {}", s.table, s.flow);
                }
                for e in &s.effects {
                    println!("    {e}");
                }
            }
            println!("\nFinal packet: {}", r.final_packet);
            if r.drop_reason.is_empty() {
                println!("Result: output to port(s) {:?}", r.outputs);
            } else if r.outputs.is_empty() {
                println!("Result: dropped ({})", r.drop_reason);
            } else {
                println!("Result: output to port(s) {:?}, then dropped ({})", r.outputs, r.drop_reason);
            }
        }
        Command::TraceLive { filter, count, timeout } => {
            let mut stream = FlowServiceClient::new(channel)
                .trace_live(pb::TraceLiveRequest { filter, count, timeout_ms: timeout.saturating_mul(1000) })
                .await
                .map_err(status_text)?
                .into_inner();
            let mut seen = 0;
            while let Some(e) = stream.message().await.map_err(status_text)? {
                seen += 1;
                if json {
                    print_json(&e)?;
                    continue;
                }
                println!(
                    "#{} t={:.6}s worker {} port {} ({}) {} bytes, generation {}",
                    e.sequence,
                    e.time_ns as f64 / 1e9,
                    e.worker,
                    e.in_port,
                    e.in_port_name,
                    e.frame_length,
                    e.generation
                );
                for s in &e.stages {
                    println!("    {s}");
                }
                println!("    => {}", e.fate);
                if e.lost > 0 {
                    println!("    ({} records lost: the switch traced faster than this reader read)", e.lost);
                }
            }
            if seen < count.max(1) && !json {
                println!("traced {seen} of {} packet(s) before the timeout", count.max(1));
            }
        }
        Command::DumpCounters => {
            let r = FlowServiceClient::new(channel)
                .list_counters(pb::ListCountersRequest {})
                .await
                .map_err(status_text)?
                .into_inner();
            if json {
                return print_json(&r);
            }
            let rows: Vec<Vec<String>> =
                r.counters.iter().map(|c| vec![c.name.clone(), c.packets.to_string()]).collect();
            print_table(&["COUNTER", "PACKETS"], &rows);
        }
        Command::AddPort { name, number, devargs, rx_queues, descriptors, mtu } => {
            let port = pb::PortSpec {
                name,
                number,
                devargs,
                rx_queues: rx_queues.unwrap_or(0),
                rx_descriptors: descriptors.unwrap_or(0),
                tx_descriptors: descriptors.unwrap_or(0),
                mtu: mtu.unwrap_or(0),
            };
            let p = PortServiceClient::new(channel)
                .add_port(pb::AddPortRequest { port: Some(port) })
                .await
                .map_err(status_text)?
                .into_inner();
            if json {
                return print_json(&p);
            }
            println!("added port {} (number {}), {} {}", p.name, p.number, p.driver, p.mac);
        }
        Command::RemovePort { name } => {
            let r = PortServiceClient::new(channel)
                .remove_port(pb::RemovePortRequest { name })
                .await
                .map_err(status_text)?
                .into_inner();
            return acknowledge(json, &r, "removed");
        }
        Command::AddTunnel { name, number, kind, uplink, remote_ip, vni, local_ip, dst_port } => {
            let tunnel = pb::TunnelSpec {
                name,
                number,
                kind,
                uplink,
                local_ip: local_ip.unwrap_or_default(),
                remote_ip: remote_ip.unwrap_or_default(),
                vni,
                dst_port: dst_port.unwrap_or(0),
            };
            let t = TunnelServiceClient::new(channel)
                .add_tunnel(pb::AddTunnelRequest { tunnel: Some(tunnel) })
                .await
                .map_err(status_text)?
                .into_inner();
            if json {
                return print_json(&t);
            }
            let spec = t.spec.unwrap_or_default();
            println!("added tunnel {} (port {}), {} {}:{}", spec.name, spec.number, spec.kind, t.local_ip, t.dst_port);
        }
        Command::RemoveTunnel { name } => {
            let r = TunnelServiceClient::new(channel)
                .remove_tunnel(pb::RemoveTunnelRequest { name })
                .await
                .map_err(status_text)?
                .into_inner();
            return acknowledge(json, &r, "removed");
        }
        Command::ListTunnels => {
            let r = TunnelServiceClient::new(channel)
                .list_tunnels(pb::ListTunnelsRequest {})
                .await
                .map_err(status_text)?
                .into_inner();
            if json {
                return print_json(&r);
            }
            let per_flow = |s: &str| if s.is_empty() { "flow".to_string() } else { s.to_string() };
            let rows: Vec<Vec<String>> = r
                .tunnels
                .iter()
                .map(|t| {
                    let s = t.spec.clone().unwrap_or_default();
                    let c = t.counters.unwrap_or_default();
                    let drops: u64 = t.drops.iter().map(|d| d.packets).sum();
                    vec![
                        s.number.to_string(),
                        s.name,
                        s.kind,
                        s.uplink,
                        format!("{}:{}", t.local_ip, t.dst_port),
                        per_flow(&s.remote_ip),
                        s.vni.map_or("flow".into(), |v| v.to_string()),
                        c.rx_packets.to_string(),
                        c.tx_packets.to_string(),
                        drops.to_string(),
                    ]
                })
                .collect();
            print_table(
                &["NO", "NAME", "KIND", "UPLINK", "LOCAL", "REMOTE", "VNI", "DECAP_PKTS", "ENCAP_PKTS", "DROPS"],
                &rows,
            );
            for t in &r.tunnels {
                for d in &t.drops {
                    let name = t.spec.as_ref().map_or("", |s| s.name.as_str());
                    println!("  {name}: {} {} dropped", d.packets, d.reason);
                }
            }
            for u in &r.uplinks {
                println!(
                    "uplink {}: {} gateway {} mac {} mtu {} (inner IP mtu {})",
                    u.port,
                    u.ip,
                    if u.gateway.is_empty() { "none" } else { &u.gateway },
                    u.mac,
                    u.mtu,
                    u.inner_mtu
                );
            }
        }
        Command::ListNeighbors => {
            let r = TunnelServiceClient::new(channel)
                .list_neighbors(pb::ListNeighborsRequest {})
                .await
                .map_err(status_text)?
                .into_inner();
            if json {
                return print_json(&r);
            }
            let rows: Vec<Vec<String>> = r
                .neighbors
                .iter()
                .map(|n| {
                    let state = if n.r#static {
                        "static"
                    } else if n.mac.is_empty() {
                        "resolving"
                    } else {
                        "learned"
                    };
                    vec![n.ip.clone(), if n.mac.is_empty() { "-".into() } else { n.mac.clone() }, state.into()]
                })
                .collect();
            print_table(&["IP", "MAC", "STATE"], &rows);
        }
        Command::AddNeighbor { ip, mac } => {
            let r = TunnelServiceClient::new(channel)
                .add_neighbor(pb::AddNeighborRequest { ip, mac })
                .await
                .map_err(status_text)?
                .into_inner();
            return acknowledge(json, &r, "added");
        }
        Command::RemoveNeighbor { ip } => {
            let r = TunnelServiceClient::new(channel)
                .remove_neighbor(pb::RemoveNeighborRequest { ip })
                .await
                .map_err(status_text)?
                .into_inner();
            return acknowledge(json, &r, "removed");
        }
        Command::AddMac { mac, port, vlan } => {
            let r = MacTableServiceClient::new(channel)
                .add_static_mac(pb::AddStaticMacRequest { mac, vlan, port: Some(port_ref(&port)) })
                .await
                .map_err(status_text)?
                .into_inner();
            return acknowledge(json, &r, "added");
        }
    }
    Ok(())
}

/// A flow client that accepts large dumps and sends large batches.
fn flow_client(channel: Channel) -> FlowServiceClient<Channel> {
    FlowServiceClient::new(channel)
        .max_decoding_message_size(control::server::MAX_MESSAGE)
        .max_encoding_message_size(control::server::MAX_MESSAGE)
}

fn main() -> ExitCode {
    // `vswitchctl dump-flows | head` must end quietly when the reader goes away, as other
    // Unix tools do: print! panics on a closed pipe, so exit at once instead.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info.payload().downcast_ref::<String>().map(String::as_str).unwrap_or("");
        if msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
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
