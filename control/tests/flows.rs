//! The match-action pipeline end to end: flows from the config and through the API, real
//! frames through real PMDs (pcap files in and out, null sinks, af_packet with hosts in
//! namespaces), counters read back, the trace, transactions and their errors.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use dataplane::wire::checksum::checksum;
use tonic::Code;
use vswitch_bench::pcap::write_pcap;
use vswitch_proto::v1 as pb;

/// Ethernet / IPv4 / UDP or TCP frame with correct checksums.
fn ip_frame(proto: u8, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, ttl: u8) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x0b, 0x02, 0, 0, 0, 0, 0x0a, 0x08, 0x00];
    let l4_len = if proto == 6 { 20 } else { 8 } + 6;
    let mut ip = vec![0x45, 0, 0, (20 + l4_len) as u8, 0, 1, 0, 0, ttl, proto, 0, 0];
    ip.extend_from_slice(&src);
    ip.extend_from_slice(&dst);
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut l4 = Vec::new();
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    if proto == 6 {
        l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        l4.extend_from_slice(&(l4_len as u16).to_be_bytes());
        l4.extend_from_slice(&[0, 0]);
    }
    l4.extend_from_slice(b"hello!");
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src);
    pseudo.extend_from_slice(&dst);
    pseudo.extend_from_slice(&[0, proto, 0, l4_len as u8]);
    pseudo.extend_from_slice(&l4);
    let c = checksum(&pseudo);
    let at = if proto == 6 { 16 } else { 6 };
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
    f.extend(ip);
    f.extend(l4);
    f
}

/// IPv4 header and TCP/UDP checksums of a frame (VLAN tags skipped) verify.
fn checksums_ok(f: &[u8]) -> bool {
    let mut l3 = 14;
    while matches!(&f[l3 - 2..l3], [0x81, 0x00] | [0x88, 0xa8]) {
        l3 += 4;
    }
    let ip = &f[l3..l3 + 20];
    let proto = ip[9];
    let l4 = &f[l3 + 20..];
    let mut pseudo = ip[12..20].to_vec();
    pseudo.extend_from_slice(&[0, proto, 0, l4.len() as u8]);
    pseudo.extend_from_slice(l4);
    checksum(ip) == 0 && checksum(&pseudo) == 0
}

fn read_pcap(path: &std::path::Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut frames = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        let incl = u32::from_le_bytes(data[off + 8..off + 12].try_into().unwrap()) as usize;
        frames.push(data[off + 16..off + 16 + incl].to_vec());
        off += 16 + incl;
    }
    frames
}

/// A switch with port 1 replaying `frames` once and ports 2..=outputs+1 writing pcaps.
struct PcapRig {
    sw: Vswitchd,
    dir: tempfile::TempDir,
    outputs: usize,
    n: usize,
}

impl PcapRig {
    fn start(frames: &[Vec<u8>], outputs: usize, extra: &str) -> PcapRig {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.pcap");
        write_pcap(std::fs::File::create(&input).unwrap(), frames).unwrap();
        let mut cfg =
            format!("[[port]]\nname = \"in\"\nnumber = 1\ndevargs = \"net_pcap0,rx_pcap={}\"\n\n", input.display());
        for i in 0..outputs {
            cfg += &format!(
                "[[port]]\nname = \"out{n}\"\nnumber = {n}\ndevargs = \"net_pcap{n},tx_pcap={}\"\n\n",
                dir.path().join(format!("out{}.pcap", i + 2)).display(),
                n = i + 2
            );
        }
        cfg += extra;
        PcapRig { sw: Vswitchd::start(&cfg), dir, outputs, n: frames.len() }
    }

    /// Waits until every input frame was handled (sent or dropped somewhere).
    fn settle(&self) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (rx, handled) = rt().block_on(async {
                let ch = self.sw.channel().await;
                let ports = pb::port_service_client::PortServiceClient::new(ch.clone())
                    .list_ports(pb::ListPortsRequest {})
                    .await
                    .unwrap()
                    .into_inner()
                    .ports;
                let tables = pb::flow_service_client::FlowServiceClient::new(ch)
                    .list_tables(pb::ListTablesRequest {})
                    .await
                    .unwrap()
                    .into_inner();
                let rx = ports[0].counters.unwrap().rx_packets;
                // Every packet is looked up in table 0 exactly once (or dropped before).
                let t0 = tables.tables.iter().find(|t| t.id == 0).map_or(0, |t| t.lookups);
                let parse_drops = ports[0].counters.unwrap().rx_dropped;
                (rx, t0 + parse_drops)
            });
            if rx == self.n as u64 && handled >= self.n as u64 {
                // One more beat for the last burst's tx flush.
                std::thread::sleep(Duration::from_millis(100));
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "handled {handled} of {} (rx {rx}):\n{}{}{}{}",
                self.n,
                String::from_utf8_lossy(&self.sw.ctl(&["dump-tables"]).stdout),
                String::from_utf8_lossy(&self.sw.ctl(&["dump-flows"]).stdout),
                String::from_utf8_lossy(&self.sw.ctl(&["list-ports"]).stdout),
                self.sw.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the switch (pcap files are written on close) and returns each output's frames.
    fn finish(self) -> Vec<Vec<Vec<u8>>> {
        let (status, log) = self.sw.stop();
        assert!(status.success(), "{log}");
        (0..self.outputs).map(|i| read_pcap(&self.dir.path().join(format!("out{}.pcap", i + 2)))).collect()
    }
}

fn drops(sw: &Vswitchd) -> std::collections::HashMap<String, u64> {
    rt().block_on(async {
        pb::switch_service_client::SwitchServiceClient::new(sw.channel().await)
            .list_drops(pb::ListDropsRequest { port: None })
            .await
            .unwrap()
            .into_inner()
            .drops
            .into_iter()
            .map(|d| (d.reason, d.packets))
            .collect()
    })
}

fn dump(sw: &Vswitchd) -> Vec<pb::FlowStats> {
    rt().block_on(async {
        pb::flow_service_client::FlowServiceClient::new(sw.channel().await)
            .dump_flows(pb::DumpFlowsRequest::default())
            .await
            .unwrap()
            .into_inner()
            .flows
    })
}

fn flows_cfg(rules: &[&str]) -> String {
    rules.iter().map(|r| format!("[[flow]]\nrule = \"{r}\"\n\n")).collect()
}

#[test]
fn priorities_masks_goto_and_misses() {
    let _g = serial();
    let a = ip_frame(17, [10, 0, 0, 1], [10, 1, 2, 3], 1000, 53, 64); // DNS: port 3 (priority 300)
    let b = ip_frame(6, [10, 0, 0, 1], [10, 1, 2, 3], 1000, 80, 64); // goto 1, src match: port 4
    let c = ip_frame(6, [10, 0, 0, 9], [10, 1, 2, 3], 1000, 80, 64); // goto 1, no match: miss drop
    let d = ip_frame(6, [10, 0, 0, 1], [10, 2, 0, 1], 1000, 80, 64); // plain ip: port 2
    let mut e = ip_frame(6, [10, 0, 0, 1], [10, 2, 0, 1], 1000, 80, 64);
    e[12..14].copy_from_slice(&[0x88, 0xb5]); // not IP: table 0 misses, drop
    let frames = vec![a.clone(), b.clone(), c.clone(), d.clone(), e, a.clone(), d.clone()];
    let rig = PcapRig::start(
        &frames,
        3,
        &format!(
            "[[table]]\nid = 0\nmiss = \"drop\"\n\n{}",
            flows_cfg(&[
                "table=0,priority=300,udp,tp_dst=53,actions=output:3",
                "table=0,priority=200,ip,nw_dst=10.1.0.0/16,actions=goto_table:1",
                "table=0,priority=100,ip,actions=output:2",
                "table=1,priority=10,ip,nw_src=10.0.0.1,actions=output:4",
            ])
        ),
    );
    rig.settle();
    let d_ = drops(&rig.sw);
    assert_eq!(d_["table_miss"], 2, "c in table 1, e in table 0: {d_:?}");
    let flows = dump(&rig.sw);
    let count =
        |needle: &str| flows.iter().find(|f| f.text.contains(needle)).unwrap_or_else(|| panic!("{needle}")).packets;
    assert_eq!(count("tp_dst=53"), 2);
    assert_eq!(count("nw_dst=10.1.0.0/16"), 2);
    assert_eq!(count("priority=100"), 2);
    assert_eq!(count("nw_src=10.0.0.1"), 1);
    let out = rig.finish();
    assert_eq!(out[0], vec![d.clone(), d], "port 2");
    assert_eq!(out[1], vec![a.clone(), a], "port 3");
    assert_eq!(out[2], vec![b], "port 4");
}

#[test]
fn several_outputs_copy_and_see_earlier_changes() {
    let _g = serial();
    let f = ip_frame(17, [10, 0, 0, 1], [10, 0, 0, 2], 1000, 2000, 64);
    let rig = PcapRig::start(
        std::slice::from_ref(&f),
        3,
        &flows_cfg(&["priority=10,udp,actions=output:2,mod_nw_dst:10.9.9.9,mod_tp_dst:53,dec_ttl,output:3,mod_vlan_vid:7,output:4"]),
    );
    rig.settle();
    let out = rig.finish();
    assert_eq!(out[0], vec![f.clone()], "the first copy leaves unchanged");
    let g = &out[1][0];
    assert_eq!(&g[30..34], &[10, 9, 9, 9], "nw_dst rewritten");
    assert_eq!(&g[36..38], &53u16.to_be_bytes(), "tp_dst rewritten");
    assert_eq!(g[22], 63, "TTL decremented");
    assert!(checksums_ok(g), "IPv4 and UDP checksums still verify");
    let h = &out[2][0];
    assert_eq!(&h[12..16], &[0x81, 0x00, 0x00, 7], "tagged VLAN 7");
    assert_eq!(&h[16..], &g[12..], "the third copy carries the earlier changes too");
    assert!(checksums_ok(h));
}

#[test]
fn ttl_expiry_and_explicit_drops_are_counted() {
    let _g = serial();
    let dying = ip_frame(17, [10, 0, 0, 1], [10, 0, 0, 2], 1, 2, 1);
    let living = ip_frame(17, [10, 0, 0, 1], [10, 0, 0, 2], 1, 2, 9);
    let dropped = ip_frame(6, [10, 0, 0, 1], [10, 0, 0, 3], 1, 2, 9);
    let rig = PcapRig::start(
        &[dying, living, dropped],
        1,
        &flows_cfg(&["priority=20,udp,actions=dec_ttl,output:2,counter:udp-out", "priority=20,tcp,actions=drop"]),
    );
    rig.settle();
    let d = drops(&rig.sw);
    assert_eq!((d["ttl_exceeded"], d["flow_drop"]), (1, 1), "{d:?}");
    let out = String::from_utf8(rig.sw.ctl(&["dump-counters"]).stdout).unwrap();
    assert!(out.lines().any(|l| l.contains("udp-out") && l.ends_with(" 1")), "{out}");
    let out = rig.finish();
    assert_eq!(out[0].len(), 1);
    assert_eq!(out[0][0][22], 8, "TTL 9 -> 8");
}

fn null_switch() -> Vswitchd {
    Vswitchd::start(
        "[[port]]\nname = \"a\"\nnumber = 1\ndevargs = \"net_null0,no-rx=1\"\n\n\
         [[port]]\nname = \"b\"\nnumber = 2\ndevargs = \"net_null1,no-rx=1\"\n",
    )
}

fn add_op(text: &str) -> pb::FlowOp {
    let spec = dataplane::flow::parse_flow(text).unwrap();
    pb::FlowOp { op: Some(pb::flow_op::Op::Add(control::convert::flow_from_model(&spec))) }
}

#[test]
fn transactions_are_atomic_and_errors_name_the_entry() {
    let _g = serial();
    let sw = null_switch();
    rt().block_on(async {
        let mut c = pb::flow_service_client::FlowServiceClient::new(sw.channel().await);
        let r = c
            .transact(pb::TransactRequest { ops: vec![add_op("priority=5,in_port=1,actions=output:2")], wait: true })
            .await
            .unwrap()
            .into_inner();
        assert!(r.live && r.added == 1);
        let g1 = r.generation;

        // One bad entry among good ones: nothing changes, the error names it.
        let ops = vec![
            pb::FlowOp { op: Some(pb::flow_op::Op::Delete(pb::DeleteFlowsRequest::default())) },
            add_op("priority=6,in_port=2,actions=output:1"),
            add_op("priority=7,in_port=1,actions=output:2,output:9"),
        ];
        let e = c.transact(pb::TransactRequest { ops, wait: true }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert_eq!(e.message(), "ops[2].add.actions[1]: output:9: no port number 9");
        let flows = c.dump_flows(pb::DumpFlowsRequest::default()).await.unwrap().into_inner().flows;
        assert_eq!(flows.len(), 1);
        assert_eq!(flows[0].text, "table=0,priority=5,in_port=1,actions=output:2");

        // Field errors from the typed message name the field path.
        let mut bad = add_op("priority=1,ip,nw_dst=10.0.0.1,actions=drop");
        if let Some(pb::flow_op::Op::Add(f)) = &mut bad.op {
            f.r#match.as_mut().unwrap().ipv4_dst = Some("10.0.0.0/33".into());
        }
        let e = c
            .transact(pb::TransactRequest { ops: vec![add_op("in_port=2,actions=drop"), bad], wait: false })
            .await
            .unwrap_err();
        assert!(e.message().starts_with("ops[1].add.match.ipv4_dst:"), "{}", e.message());

        // OpenFlow prerequisites.
        let mut m = pb::Match { tp_dst: Some(80), ..Default::default() };
        let f = pb::Flow { r#match: Some(m.clone()), ..Default::default() };
        let e =
            c.add_flows(pb::AddFlowsRequest { flows: vec![f], wait: false, ..Default::default() }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with("flows[0].match.tp_dst: needs tcp, udp or sctp"), "{}", e.message());
        m.eth_type = Some(0x0800);
        m.ip_proto = Some(6);
        let f = pb::Flow { r#match: Some(m), ..Default::default() };
        assert!(c.add_flows(pb::AddFlowsRequest { flows: vec![f], wait: true, ..Default::default() }).await.is_ok());

        // goto goes forward only.
        let e = c
            .add_flows(pb::AddFlowsRequest {
                flows: vec![pb::Flow {
                    table: 3,
                    actions: vec![pb::Action { action: Some(pb::action::Action::GotoTable(2)) }],
                    ..Default::default()
                }],
                wait: false,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(e.message().contains("goto_table:2 must go forward"), "{}", e.message());

        let w = c
            .wait_for_generation(pb::WaitForGenerationRequest { generation: g1, timeout_ms: 1000 })
            .await
            .unwrap()
            .into_inner();
        assert!(w.reached && w.oldest_running >= g1);
        let e = c
            .set_table_miss(pb::SetTableMissRequest { table: 4, miss: "goto_table:2".into(), wait: false })
            .await
            .unwrap_err();
        assert!(e.message().contains("must go forward"), "{}", e.message());
        let e = c
            .set_table_miss(pb::SetTableMissRequest { table: 4, miss: "explode".into(), wait: false })
            .await
            .unwrap_err();
        assert!(e.message().starts_with("miss:"), "{}", e.message());
    });
}

#[test]
fn trace_shows_tables_flows_and_fate() {
    let _g = serial();
    let sw = null_switch();
    for f in [
        "table=0,priority=10,tcp,tp_dst=80,actions=mod_nw_dst:10.0.0.80,goto_table:2",
        "table=2,priority=10,ip,nw_dst=10.0.0.80,actions=output:2",
    ] {
        assert!(sw.ctl(&["add-flow", f]).status.success());
    }
    assert!(sw.ctl(&["set-table-miss", "0", "drop"]).status.success());
    let out =
        sw.ctl(&["trace", "in_port=1,dl_src=02:00:00:00:00:01,dl_dst=02:00:00:00:00:02,tcp,nw_dst=10.0.0.2,tp_dst=80"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Table 0: table=0,priority=10,tcp,tp_dst=80"), "{text}");
    assert!(text.contains("set IPv4 dst 10.0.0.80"), "{text}");
    assert!(text.contains("Table 2: table=2,priority=10,ip,nw_dst=10.0.0.80"), "{text}");
    assert!(text.contains("Result: output to port(s) [2]"), "{text}");
    let out = sw.ctl(&["trace", "in_port=1,udp,nw_dst=10.0.0.2"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("Result: dropped (table_miss)"), "{text}");
    // Nothing was sent: trace does not touch the datapath.
    let ports = sw.ctl(&["--json", "list-ports"]);
    let json: serde_json::Value = serde_json::from_slice(&ports.stdout).unwrap();
    assert_eq!(json["ports"][1]["counters"]["tx_packets"], 0);
}

#[test]
fn grpcurl_adds_a_flow_through_reflection() {
    let _g = serial();
    let sw = null_switch();
    let out = std::process::Command::new("grpcurl")
        .args(["-plaintext", "-unix", "-d"])
        .arg(r#"{"flows": [{"priority": 77, "match": {"in_port": 1, "eth_type": 2048, "ipv4_dst": "10.0.0.0/24"}, "actions": [{"output": 2}]}], "wait": true}"#)
        .arg(&sw.socket)
        .arg("vswitch.v1.FlowService/AddFlows")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("\"added\": \"1\"") && text.contains("\"live\": true"), "{text}");
    let flows = dump(&sw);
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].text, "table=0,priority=77,ip,in_port=1,nw_dst=10.0.0.0/24,actions=output:2");
}

/// In_port-only rules (a cross-connect) take the whole burst along one path without reading
/// the packets: every frame, whatever it carries, leaves intact and in order, and the flow
/// and table counters see each one.
#[test]
fn cross_connect_forwards_every_frame_intact_and_counts_it() {
    let _g = serial();
    let mut frames = Vec::new();
    for i in 0..300usize {
        let mut f = match i % 3 {
            0 => ip_frame(17, [10, 0, 0, 1], [10, 0, 0, 2], 1000 + i as u16, 53, 64),
            1 => ip_frame(6, [10, 0, 0, 3], [10, 0, 0, 4], 2000, 80 + i as u16, 9),
            _ => {
                let mut f = vec![0x02, 0, 0, 0, 0, 0xb, 0x02, 0, 0, 0, 0, 0xa, 0x81, 0x00, 0x00, 0x07, 0x88, 0xb5];
                f.resize(60 + i * 4, i as u8);
                f
            }
        };
        f.push(i as u8); // every frame distinct
        frames.push(f);
    }
    let rig = PcapRig::start(
        &frames,
        2,
        &format!("[[table]]\nid = 0\nmiss = \"drop\"\n\n{}", flows_cfg(&["in_port=1,actions=output:3"])),
    );
    rig.settle();
    let flows = dump(&rig.sw);
    let xc = flows.iter().find(|f| f.text.contains("output:3")).unwrap();
    assert_eq!(xc.packets, frames.len() as u64);
    assert_eq!(xc.bytes, frames.iter().map(|f| f.len() as u64).sum::<u64>());
    let out = rig.finish();
    assert!(out[0].is_empty(), "nothing to port 2");
    assert_eq!(out[1], frames, "port 3 got every frame, byte for byte, in order");
}

/// The cross-connect's path is remembered per worker only for one pipeline generation: a
/// change to the rules takes effect on the next burst, also when it moves other rules (a
/// path remembered across generations would point at a rule's old place).
#[test]
fn cross_connect_follows_rule_changes_at_once() {
    let _g = serial();
    let topo = Topology::new(3);
    let sw = Vswitchd::start(&format!(
        "[[table]]\nid = 0\nmiss = \"drop\"\n\n{}{}",
        flows_cfg(&[
            "priority=300,in_port=3,actions=output:2",
            "priority=200,in_port=1,actions=output:2",
            "priority=100,in_port=2,actions=output:1",
        ]),
        topo.port_config()
    ));
    assert!(topo.ping(1, 2, 2), "cross-connected both ways");
    let ctl = |args: &[&str]| {
        let out = sw.ctl(args);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    ctl(&["del-flows", "--strict", "priority=300,in_port=3"]);
    assert!(topo.ping(1, 2, 2), "still cross-connected after an earlier rule left");
    ctl(&["mod-flows", "--strict", "priority=200,in_port=1,actions=drop"]);
    assert!(!topo.ping(1, 2, 2), "port 1's traffic is dropped now");
    ctl(&["mod-flows", "--strict", "priority=200,in_port=1,actions=output:2"]);
    assert!(topo.ping(1, 2, 2), "and forwarded again");
    let flows = dump(&sw);
    let back = flows.iter().find(|f| f.text.contains("in_port=2")).unwrap();
    assert!(back.packets >= 6, "the reverse rule counted the replies: {}", back.packets);
}

#[test]
fn acl_flows_turn_traffic_on_and_off_between_hosts() {
    let _g = serial();
    let topo = Topology::new(3);
    let h = |i: usize| topo.host(i).ip.to_string();
    let sw = Vswitchd::start(&format!(
        "[[table]]\nid = 0\nmiss = \"normal\"\n\n{}{}",
        flows_cfg(&[
            // Nothing reaches h3 over IP but TCP to port 5001 from h1.
            &format!("priority=100,ip,nw_dst={},actions=counter:to-h3", h(3)),
            &format!("priority=200,tcp,nw_src={},nw_dst={},tp_dst=5001,actions=NORMAL", h(1), h(3)),
            &format!("priority=200,tcp,nw_src={},nw_dst={},tcp_src=5001,actions=NORMAL", h(3), h(1)),
        ]),
        topo.port_config()
    ));
    assert!(topo.ping(1, 2, 2), "h1 <-> h2 is open");
    assert!(!topo.ping(1, 3, 2), "ICMP to h3 is blocked");
    assert!(!topo.ping(2, 3, 1), "ICMP to h3 is blocked for h2 too");

    // TCP 5001 from h1 to h3 passes, from h2 it does not.
    let addr3: std::net::SocketAddrV4 = format!("{}:5001", h(3)).parse().unwrap();
    let server = in_netns(topo.netns_path(3), move || {
        let l = std::net::TcpListener::bind(addr3).unwrap();
        l.set_nonblocking(false).unwrap();
        let (mut c, _) = l.accept().unwrap();
        let mut buf = [0u8; 5];
        std::io::Read::read_exact(&mut c, &mut buf).unwrap();
        buf
    });
    std::thread::sleep(Duration::from_millis(200));
    let from2 = in_netns(topo.netns_path(2), move || {
        std::net::TcpStream::connect_timeout(&addr3.into(), Duration::from_secs(2)).is_ok()
    });
    assert!(!from2.join().unwrap(), "h2 must not reach h3:5001");
    let from1 = in_netns(topo.netns_path(1), move || {
        let mut s =
            std::net::TcpStream::connect_timeout(&addr3.into(), Duration::from_secs(5)).expect("h1 reaches h3:5001");
        std::io::Write::write_all(&mut s, b"hello").unwrap();
    });
    from1.join().unwrap();
    assert_eq!(&server.join().unwrap(), b"hello");

    let flows = dump(&sw);
    let block = flows.iter().find(|f| f.text.contains("counter:to-h3")).unwrap();
    assert!(block.packets >= 3, "the blocking flow counted the pings and SYNs: {}", block.packets);
    let counters = String::from_utf8(sw.ctl(&["dump-counters"]).stdout).unwrap();
    assert!(counters.contains("to-h3"), "{counters}");

    // Removing the blocking flow opens the way, at once.
    let out = sw.ctl(&["del-flows", "--strict", &format!("priority=100,ip,nw_dst={}", h(3))]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("1 deleted"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(topo.ping(1, 3, 2), "h1 -> h3 after the flow is gone");
    assert!(topo.ping(2, 3, 2), "h2 -> h3 after the flow is gone");
}

/// A 10,000-flow table replaced in one transaction while 30 Mpps of traffic runs: no packet
/// of the untouched flow is lost, and no packet at all is dropped.
#[test]
fn replacing_a_big_table_under_traffic_loses_nothing() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let pcap: PathBuf = dir.path().join("flows1024.pcap");
    let frames: Vec<[u8; 60]> = (0..1024).map(vswitch_bench::pcap::flow_frame).collect();
    write_pcap(std::fs::File::create(&pcap).unwrap(), &frames).unwrap();
    // Untouched: flow 5 (10.1.0.5) -> port 2. Everything else of 10.1/16 -> port 3.
    let sw = Vswitchd::start(&format!(
        "[[port]]\nname = \"src\"\nnumber = 1\ndevargs = \"net_pcap0,rx_pcap={},infinite_rx=1\"\n\n\
         [[port]]\nname = \"x\"\nnumber = 2\ndevargs = \"net_null0,no-rx=1\"\n\n\
         [[port]]\nname = \"rest\"\nnumber = 3\ndevargs = \"net_null1,no-rx=1\"\n\n\
         [[table]]\nid = 0\nmiss = \"drop\"\n\n{}",
        pcap.display(),
        flows_cfg(&[
            "priority=300,cookie=0x1,ip,nw_dst=10.1.0.5,actions=output:2",
            "priority=10,cookie=0x2,ip,nw_dst=10.1.0.0/16,actions=output:3",
        ])
    ));
    let table = |round: u32| -> Vec<pb::FlowOp> {
        let mut ops = vec![pb::FlowOp {
            op: Some(pb::flow_op::Op::Delete(pb::DeleteFlowsRequest {
                filter: Some(pb::FlowFilter { cookie: Some(0x10), cookie_mask: Some(0xff), ..Default::default() }),
                ..Default::default()
            })),
        }];
        // 10,000 flows for other destinations (10.2.x.y), some also matching live traffic
        // (10.1.1.x -> port 3, like the catch-all) to show replaced rules keep forwarding.
        for i in 0..10_000u32 {
            let dst = if i < 200 {
                format!("10.1.1.{}", i % 256)
            } else {
                format!("10.{}.{}.{}", 2 + round, i >> 8 & 255, i & 255)
            };
            ops.push(add_op(&format!("priority=100,cookie=0x10,ip,nw_dst={dst},actions=output:3")));
        }
        ops
    };
    rt().block_on(async {
        let mut c = pb::flow_service_client::FlowServiceClient::new(sw.channel().await)
            .max_encoding_message_size(64 << 20)
            .max_decoding_message_size(64 << 20);
        c.transact(pb::TransactRequest { ops: table(0), wait: true }).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        for round in 1..=3 {
            let r = c.transact(pb::TransactRequest { ops: table(round), wait: true }).await.unwrap().into_inner();
            assert_eq!((r.deleted, r.added), (10_000, 10_000));
            assert!(r.live);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let d = drops(&sw);
    let total: u64 = d.values().sum();
    assert_eq!(total, 0, "no drop of any kind while tables were replaced: {d:?}");
    // Quiesce the outputs: from now on everything from the source is dropped by a flow,
    // so port 2 and 3 counters and flow 5's counter stop moving.
    let out = sw.ctl(&["add-flow", "priority=1000,in_port=1,actions=drop"]);
    assert!(out.status.success());
    std::thread::sleep(Duration::from_millis(200));
    let flows = dump(&sw);
    let x = flows.iter().find(|f| f.text.contains("cookie=0x1,")).map(|f| f.packets).expect("untouched flow present");
    let ports: serde_json::Value = serde_json::from_slice(&sw.ctl(&["--json", "list-ports"]).stdout).unwrap();
    let c = |i: usize, k: &str| ports["ports"][i]["counters"][k].as_u64().unwrap();
    let (tx_x, tx_rest) = (c(1, "tx_packets"), c(2, "tx_packets"));
    assert!(x > 1000, "flow 5 carried traffic: {x}");
    assert_eq!(x, tx_x, "every packet flow 5 matched left through port 2");
    // Every packet received went out or was dropped after the quiescing flow (counters of
    // port 1 read together; one burst may be between rx and its fate).
    let (rx, dropped) = (c(0, "rx_packets"), c(0, "rx_dropped"));
    assert!((rx - dropped).abs_diff(tx_x + tx_rest) <= 32, "rx {rx} - dropped {dropped} = {tx_x} + {tx_rest}");
    let d = drops(&sw);
    assert_eq!(d.iter().filter(|(k, _)| k.as_str() != "flow_drop").map(|(_, v)| v).sum::<u64>(), 0, "{d:?}");
}

#[test]
fn hard_and_idle_timeouts_remove_flows() {
    let _g = serial();
    let sw = null_switch();
    for f in [
        "priority=1,in_port=1,hard_timeout=1,actions=drop",
        "priority=2,in_port=1,idle_timeout=2,actions=drop",
        "priority=3,in_port=2,actions=drop",
    ] {
        assert!(sw.ctl(&["add-flow", f]).status.success());
    }
    assert_eq!(dump(&sw).len(), 3);
    // Expiry runs once a second: the hard timeout goes after 1-2 s, the idle one (no
    // traffic on null ports) after 2-3 s; the flow without timeouts stays.
    std::thread::sleep(Duration::from_millis(2300));
    let left: Vec<String> = dump(&sw).into_iter().map(|f| f.text).collect();
    assert!(!left.iter().any(|t| t.contains("hard_timeout")), "{left:?}");
    std::thread::sleep(Duration::from_millis(1800));
    let left: Vec<String> = dump(&sw).into_iter().map(|f| f.text).collect();
    assert_eq!(left, vec!["table=0,priority=3,in_port=2,actions=drop".to_string()]);
}

#[test]
fn flow_files_load_replace_and_point_at_errors() {
    let _g = serial();
    let sw = null_switch();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.txt");
    std::fs::write(
        &good,
        "# two flows\npriority=10,in_port=1,actions=output:2\n\npriority=10,in_port=2,actions=output:1\n",
    )
    .unwrap();
    let out = sw.ctl(&["add-flows", good.to_str().unwrap()]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 added"), "{}", String::from_utf8_lossy(&out.stderr));
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "priority=1,in_port=1,actions=output:2\n# x\npriority=2,ip,nw_dstt=1.2.3.4,actions=drop\n")
        .unwrap();
    let out = sw.ctl(&["add-flows", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3: unknown field 'nw_dstt'", bad.display())), "{err}");
    assert!(err.contains("priority=2,ip,nw_dstt=1.2.3.4,actions=drop\n  ") && err.trim_end().ends_with('^'), "{err}");
    assert_eq!(dump(&sw).len(), 2, "a bad file adds nothing");
    // Replace: everything goes, the file's flows come, in one transaction.
    let repl = dir.path().join("repl.txt");
    std::fs::write(&repl, "priority=5,in_port=1,actions=drop\n").unwrap();
    let out = sw.ctl(&["replace-flows", repl.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 added, 2 deleted"), "{text}");
    let flows: Vec<String> = dump(&sw).into_iter().map(|f| f.text).collect();
    assert_eq!(flows, vec!["table=0,priority=5,in_port=1,actions=drop".to_string()]);
    // A bad line in a replacement names its line too (after the delete the request starts
    // with), and replaces nothing.
    std::fs::write(
        &repl,
        "# new policy\npriority=6,in_port=2,actions=drop\npriority=7,ip,nw_dstt=1.2.3.4,actions=drop\n",
    )
    .unwrap();
    let out = sw.ctl(&["replace-flows", repl.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:3: unknown field 'nw_dstt'", repl.display())), "{err}");
    assert!(err.contains("priority=7,ip,nw_dstt=1.2.3.4,actions=drop\n  ") && err.trim_end().ends_with('^'), "{err}");
    assert_eq!(dump(&sw).len(), 1, "a bad replacement changes nothing");
    // Texts through the API name their index.
    let e = rt().block_on(async {
        pb::flow_service_client::FlowServiceClient::new(sw.channel().await)
            .add_flows(pb::AddFlowsRequest {
                texts: vec!["in_port=1,actions=drop".into(), "in_port=1,actions=output:77".into()],
                ..Default::default()
            })
            .await
            .unwrap_err()
    });
    assert_eq!(e.message(), "texts[1].actions[0]: output:77: no port number 77");
    // A whole file in `text`: its flows come after `texts`, errors name the file's line,
    // and a bad line anywhere adds nothing.
    let add_text = |text: &str| {
        let req = pb::AddFlowsRequest {
            texts: vec!["priority=30,in_port=1,actions=drop".into()],
            text: text.into(),
            wait: true,
            ..Default::default()
        };
        rt().block_on(async {
            pb::flow_service_client::FlowServiceClient::new(sw.channel().await).add_flows(req).await
        })
    };
    let file = "# policy\n\npriority=31,in_port=1,actions=drop\n  priority=32,in_port=2,actions=output:1\n";
    let e = add_text(&format!("{file}priority=33,in_port=1,actions=output:77\n")).unwrap_err();
    assert_eq!(e.message(), "text:5.actions[0]: output:77: no port number 77");
    let e = add_text(&format!("{file}#\npriority=33,in_port=1,nw_dstt=1.2.3.4,actions=drop\n")).unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().starts_with("text:6: unknown field 'nw_dstt'"), "{}", e.message());
    assert_eq!(dump(&sw).len(), 1, "a bad text adds nothing");
    let r = add_text(file).unwrap().into_inner();
    assert_eq!((r.added, r.live), (3, true));
    let mut prios: Vec<u32> = dump(&sw).iter().map(|f| f.flow.as_ref().unwrap().priority.unwrap()).collect();
    prios.sort();
    assert_eq!(prios, [5, 30, 31, 32]);
}

/// Anonymous memory the daemon has mapped, in bytes.
fn anon_resident(sw: &Vswitchd) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", sw.pid())).unwrap();
    let kb = status.lines().find_map(|l| l.strip_prefix("RssAnon:")).unwrap();
    kb.trim().trim_end_matches("kB").trim().parse::<u64>().unwrap() << 10
}

#[test]
fn the_first_big_policy_change_finds_the_warmed_heap_mapped() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("policy.txt");
    let text: String =
        (0..10_000).map(|i| format!("priority=100,ip,nw_dst=10.1.{}.{},actions=output:2\n", i >> 8, i & 255)).collect();
    std::fs::write(&rules, text).unwrap();
    let ports = "[[port]]\nname = \"a\"\nnumber = 1\ndevargs = \"net_null0,no-rx=1\"\n\n\
                 [[port]]\nname = \"b\"\nnumber = 2\ndevargs = \"net_null1,no-rx=1\"\n";
    // Memory the daemon maps while it takes the change: each page of it also a page fault,
    // a microsecond or more of the change.
    let mapped_by_change = |control: &str| {
        let sw = Vswitchd::start_with_control(control, ports);
        // The heap is warmed while the EAL starts; let that thread finish for sure.
        std::thread::sleep(Duration::from_millis(200));
        let before = anon_resident(&sw);
        let out = sw.ctl(&["add-flows", rules.to_str().unwrap()]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains("10000 added"));
        anon_resident(&sw).saturating_sub(before)
    };
    let cold = mapped_by_change("warm_heap_mb = 0");
    let warm = mapped_by_change("");
    eprintln!("memory mapped by a 10,000-rule change: cold heap {} KiB, warmed heap {} KiB", cold >> 10, warm >> 10);
    // About 6.5 MiB without the warmed heap.
    assert!(cold >= 4 << 20, "a cold heap mapped only {cold} bytes");
    assert!(warm * 4 < cold, "the warmed heap still mapped {warm} bytes (cold: {cold})");
}
