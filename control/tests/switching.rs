//! The L2 switch end to end: real vswitchd, af_packet DPDK ports on veth pairs, hosts in
//! network namespaces, real ping/TCP/raw frames, counters read back through gRPC.

mod common;

use std::net::SocketAddrV4;
use std::time::Duration;

use common::*;
use vswitch_proto::v1 as pb;

fn port_counters(sw: &Vswitchd) -> Vec<pb::Port> {
    rt().block_on(async {
        let mut c = pb::port_service_client::PortServiceClient::new(sw.channel().await);
        c.list_ports(pb::ListPortsRequest {}).await.expect("ListPorts").into_inner().ports
    })
}

fn macs(sw: &Vswitchd, vlan: Option<u32>) -> Vec<pb::MacEntry> {
    rt().block_on(async {
        let mut c = pb::mac_table_service_client::MacTableServiceClient::new(sw.channel().await);
        c.list_macs(pb::ListMacsRequest { port: None, vlan }).await.expect("ListMacs").into_inner().entries
    })
}

#[test]
fn hosts_ping_each_other() {
    let _g = serial();
    let topo = Topology::new(3);
    let sw = Vswitchd::start(&topo.port_config());
    for from in 1..=3 {
        for to in 1..=3 {
            if from != to {
                assert!(topo.ping(from, to, 2), "h{from} cannot ping h{to}:\n{}", sw.log_text());
            }
        }
    }
    // Every host was learned on its own port.
    let table = macs(&sw, Some(0));
    for i in 1..=3 {
        let e =
            table.iter().find(|e| e.mac == topo.host(i).mac).unwrap_or_else(|| panic!("h{i} not learned: {table:?}"));
        assert_eq!(e.port_number, i as u32);
        assert_eq!(e.port_name, format!("h{i}"));
    }
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn tcp_transfer_arrives_intact() {
    let _g = serial();
    let topo = Topology::new(3);
    let sw = Vswitchd::start(&topo.port_config());
    const SIZE: usize = 8 << 20;
    let server_addr = SocketAddrV4::new(topo.host(2).ip, 5001);
    let (intact, received) = tcp_transfer(topo.netns_path(1), topo.netns_path(2), server_addr, SIZE);
    assert!(intact, "{received} of {SIZE} bytes arrived, or the SHA-256 differs");

    // The data went h1 -> h2 only: the third port saw at most a few flooded frames (the
    // first ARP and SYN before learning), not the transfer.
    let ports = port_counters(&sw);
    let tx_h2 = ports[1].counters.unwrap().tx_bytes;
    let tx_h3 = ports[2].counters.unwrap().tx_bytes;
    assert!(tx_h2 >= SIZE as u64, "h2 port sent {tx_h2} bytes");
    assert!(tx_h3 < 10_000, "h3 port sent {tx_h3} bytes: the transfer was flooded");
}

#[test]
fn learned_unicast_is_not_flooded() {
    let _g = serial();
    let topo = Topology::new(3);
    let _sw = Vswitchd::start(&topo.port_config());

    // Before learning: a frame to a station nobody has seen floods to every other host.
    let unknown = "02:00:00:ee:ee:01";
    let s2 = topo.sniff(2, "c0ffee01", 1.5);
    let s3 = topo.sniff(3, "c0ffee01", 1.5);
    topo.send_frames(1, unknown, "c0ffee01", 60, 5);
    assert_eq!(s2.count(), 5, "unknown unicast reached h2");
    assert_eq!(s3.count(), 5, "unknown unicast reached h3");

    // h2 speaks, so the switch learns where it is.
    topo.send_frames(2, "ff:ff:ff:ff:ff:ff", "beef0002", 60, 1);
    let s2 = topo.sniff(2, "c0ffee02", 1.5);
    let s3 = topo.sniff(3, "c0ffee02", 1.5);
    topo.send_frames(1, &topo.host(2).mac, "c0ffee02", 60, 20);
    assert_eq!(s2.count(), 20, "known unicast reached its destination");
    assert_eq!(s3.count(), 0, "known unicast must not reach a third host");
}

#[test]
fn counters_match_what_was_sent() {
    let _g = serial();
    let topo = Topology::new(2);
    let sw = Vswitchd::start(&topo.port_config());
    // Learn h2 first so the measured frames go only to h2.
    topo.send_frames(2, "ff:ff:ff:ff:ff:ff", "beef0002", 60, 1);
    std::thread::sleep(Duration::from_millis(300));
    let before = port_counters(&sw);
    const N: u64 = 250;
    const LEN: u64 = 100;
    topo.send_frames(1, &topo.host(2).mac, "c0ffee03", LEN as usize, N as usize);
    std::thread::sleep(Duration::from_millis(500));
    let after = port_counters(&sw);
    let delta =
        |i: usize, f: fn(&pb::PortCounters) -> u64| f(&after[i].counters.unwrap()) - f(&before[i].counters.unwrap());
    assert_eq!(delta(0, |c| c.rx_packets), N, "h1 rx packets");
    assert_eq!(delta(0, |c| c.rx_bytes), N * LEN, "h1 rx bytes");
    assert_eq!(delta(1, |c| c.tx_packets), N, "h2 tx packets");
    assert_eq!(delta(1, |c| c.tx_bytes), N * LEN, "h2 tx bytes");
    assert_eq!(delta(1, |c| c.rx_packets), 0, "h2 rx packets");
    assert_eq!(delta(0, |c| c.tx_packets), 0, "h1 tx packets");
    // The device (PMD) agrees with the switch.
    let dev = |p: &pb::Port| p.device.unwrap();
    assert_eq!(dev(&after[0]).rx_packets - dev(&before[0]).rx_packets, N, "h1 device rx");
    assert_eq!(dev(&after[1]).tx_packets - dev(&before[1]).tx_packets, N, "h2 device tx");
    // Worker counters sum to the same.
    let workers = rt().block_on(async {
        let mut c = pb::switch_service_client::SwitchServiceClient::new(sw.channel().await);
        c.list_workers(pb::ListWorkersRequest {}).await.unwrap().into_inner().workers
    });
    let rx: u64 = workers.iter().map(|w| w.rx_packets).sum();
    let port_rx: u64 = after.iter().map(|p| p.counters.unwrap().rx_packets).sum();
    assert_eq!(rx, port_rx, "worker rx = sum of port rx");
}

#[test]
fn vlan_tagged_frames_keep_their_tag() {
    let _g = serial();
    let topo = Topology::new(3);
    let sw = Vswitchd::start(&topo.port_config());
    // Learning is per VLAN: h2, known untagged (VLAN 0) only, is unknown in VLAN 100, so
    // frames to it there flood, tag intact.
    assert_vlan_frames_flood_tagged(&topo);

    // Once h2 speaks in VLAN 100, frames to it there go to h2 only, still tagged.
    topo.send_frames_vlan(2, "ff:ff:ff:ff:ff:ff", "beef0102", 64, 1, Some(100));
    let s2 = topo.sniff_vlan(2, "5ca1ab02", 1.5, Some("100"));
    let s3 = topo.sniff(3, "5ca1ab02", 1.5);
    topo.send_frames_vlan(1, &topo.host(2).mac, "5ca1ab02", 64, 10, Some(100));
    assert_eq!(s2.count(), 10, "known unicast in VLAN 100 reached h2 tagged");
    assert_eq!(s3.count(), 0, "known unicast in VLAN 100 must not reach h3");

    let v100 = macs(&sw, Some(100));
    for i in 1..=2 {
        assert!(
            v100.iter().any(|e| e.mac == topo.host(i).mac && e.port_number == i as u32),
            "h{i} in VLAN 100: {v100:?}"
        );
    }
    assert!(v100.iter().all(|e| e.vlan == 100));
}

#[test]
fn mac_entries_age_out() {
    let _g = serial();
    let topo = Topology::new(2);
    let sw = Vswitchd::start(&format!("[switch]\nmac_aging_seconds = 2\n\n{}", topo.port_config()));
    // Permanent ARP entries: no ARP probe seconds later refreshes the MACs behind our back.
    for (from, to) in [(1, 2), (2, 1)] {
        let (ip, mac) = (topo.host(to).ip.to_string(), topo.host(to).mac.clone());
        topo.exec_ok(from, &["ip", "neigh", "replace", &ip, "lladdr", &mac, "dev", "eth0", "nud", "permanent"]);
    }
    assert!(topo.ping(1, 2, 1));
    assert!(macs(&sw, Some(0)).iter().any(|e| e.mac == topo.host(1).mac), "learned after ping");
    std::thread::sleep(Duration::from_secs(5));
    let left = macs(&sw, Some(0));
    assert!(left.iter().all(|e| e.mac != topo.host(1).mac && e.mac != topo.host(2).mac), "aged out: {left:?}");
}

/// A stop signal the moment the switch says it runs (as a supervisor reading its output may
/// send it) still stops it cleanly: the handlers are in before "running" is printed.
#[test]
fn a_signal_right_after_start_stops_cleanly() {
    use std::io::BufRead;
    let _g = serial();
    for signal in [nix::sys::signal::Signal::SIGINT, nix::sys::signal::Signal::SIGTERM].repeat(3) {
        let dir = tempfile::tempdir().unwrap();
        let prefix = unique("vssig");
        let config = dir.path().join("vswitchd.toml");
        let body = "[[port]]\nname = \"a\"\nnumber = 1\ndevargs = \"net_null0,no-rx=1\"\n";
        std::fs::write(&config, test_config(&prefix, &dir.path().join("sw.sock"), "", body)).unwrap();
        let mut child = std::process::Command::new(VSWITCHD)
            .arg("--config")
            .arg(&config)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut log = String::new();
        while !log.contains("vswitchd: running") {
            assert!(out.read_line(&mut log).unwrap() > 0, "vswitchd ended during start:\n{log}");
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let status = wait_timeout(&mut child, Duration::from_secs(30)).expect("vswitchd exits");
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut rest);
        log += &rest;
        assert_eq!(status.code(), Some(0), "{signal}: {status}:\n{log}");
        assert!(log.contains("stopped cleanly"), "{signal}: {log}");
        assert_eq!(dpdk_leftovers(&prefix), Vec::<String>::new(), "{signal}: DPDK files left behind");
    }
}

#[test]
fn sigterm_stops_cleanly_and_returns_memory() {
    let _g = serial();
    let topo = Topology::new(2);
    let free_before = free_hugepages();
    let sw = Vswitchd::start(&topo.port_config());
    assert!(free_hugepages() < free_before, "the switch holds hugepages while running");
    assert!(topo.ping(1, 2, 1));
    let prefix = sw.prefix.clone();
    let socket = sw.socket.clone();
    let (status, log) = sw.stop_with(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(status.code(), Some(0), "exit status:\n{log}");
    assert!(log.contains("SIGTERM received") && log.contains("stopped cleanly"), "{log}");
    assert!(!socket.exists(), "socket removed");
    assert_eq!(dpdk_leftovers(&prefix), Vec::<String>::new(), "DPDK files left behind");
    assert_eq!(free_hugepages(), free_before, "hugepages returned");
}
