//! `system:` ports: kernel interfaces attached through packet sockets instead of DPDK ports,
//! over real veth pairs into namespaces.

mod common;

use std::time::{Duration, Instant};

use common::{
    assert_vlan_frames_flood_tagged, http_get, serial, stderr_text as stderr, tcp_transfer, udp_datagrams, Topology,
    Vswitchd,
};
use serde_json::Value;

#[test]
fn system_ports_carry_pings_tcp_and_tagged_frames() {
    let _g = serial();
    let topo = Topology::new(3);
    let sw = Vswitchd::start(&topo.system_port_config());
    assert!(topo.ping(1, 2, 2), "ping h1 -> h2 over system ports");
    assert!(topo.ping(3, 1, 2), "ping h3 -> h1 over system ports");

    // The kernel hands a packet socket a frame's 802.1Q tag apart from its bytes; the switch
    // must put it back, or VLAN 100 frames would arrive untagged.
    assert_vlan_frames_flood_tagged(&topo);

    let server = std::net::SocketAddrV4::new(topo.host(2).ip, 5201);
    let (intact, got) = tcp_transfer(topo.netns_path(1), topo.netns_path(2), server, 4 << 20);
    assert!(intact, "TCP over system ports: {got} of {} bytes arrived intact", 4 << 20);

    let ports = sw.ports_json();
    let h1 = ports.iter().find(|p| p["name"] == "h1").expect("h1 listed");
    assert_eq!(h1["devargs"], format!("system:{}", topo.host(1).veth), "{h1}");
    assert_eq!(h1["link"]["up"], true, "{h1}");
    let device_rx = h1["device"]["rx_packets"].as_u64().unwrap_or(0);
    let switch_rx = h1["counters"]["rx_packets"].as_u64().unwrap_or(0);
    assert!(device_rx > 1000, "the socket's rx counter: {h1}");
    assert_eq!(device_rx, switch_rx, "every frame the socket took reached the switch: {h1}");

    // An idle worker waits on the sockets (they wake it as rx interrupts would): a ping after
    // idle gets through and counts as a wake by a queue, not by the timeout.
    let worker = || {
        let out = sw.ctl(&["--json", "list-workers"]);
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["workers"][0].clone()
    };
    let since = Instant::now();
    let mut before = worker();
    while before["idle_state"] != "interrupt" && since.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(100));
        before = worker();
    }
    assert_eq!(before["idle_state"], "interrupt", "idle, the worker waits on the sockets: {before}");
    assert!(topo.ping(1, 3, 1), "ping after idle");
    let after = worker();
    let wakes = |w: &Value| w["interrupt_wakes"].as_u64().unwrap_or(0);
    assert!(wakes(&after) > wakes(&before), "no wake by a socket: {before} then {after}");

    // An interface that goes down leaves an error on its socket until someone reads it: the
    // idle worker must not wake for it again and again.
    common::run("ip", &["link", "set", &topo.host(3).veth, "down"]);
    std::thread::sleep(Duration::from_millis(500));
    let down = worker();
    std::thread::sleep(Duration::from_secs(1));
    let later = worker();
    assert!(wakes(&later) - wakes(&down) < 20, "woken again and again by a downed interface: {down} then {later}");
    common::run("ip", &["link", "set", &topo.host(3).veth, "up"]);
    assert!(topo.ping(1, 3, 3), "ping once the interface is up again");
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn more_ports_than_dpdk_has_slots_attach_and_forward_as_system_ports() {
    const HOSTS: usize = 40; // DPDK 22.11 from Debian has 32 ethdev ports per process
    let _g = serial();
    let topo = Topology::new(HOSTS);
    let sw = Vswitchd::start(&format!("{}{}", topo.system_port_table(1), topo.system_port_table(2)));
    let mut took = Vec::new();
    for i in 3..=HOSTS {
        let started = Instant::now();
        let add = sw.ctl(&["add-port", &format!("h{i}"), &i.to_string(), &format!("system:{}", topo.host(i).veth)]);
        took.push(started.elapsed());
        assert!(add.status.success(), "add-port h{i}: {}", stderr(&add));
    }
    took.sort();
    println!(
        "{} system ports added: median {:?}, slowest {:?}",
        took.len(),
        took[took.len() / 2],
        took.last().unwrap()
    );
    assert_eq!(sw.ports_json().len(), HOSTS);
    for (from, to) in [(1, HOSTS), (HOSTS, 33), (17, 2)] {
        assert!(topo.ping(from, to, 2), "ping h{from} -> h{to} with {HOSTS} system ports attached");
    }

    let again = sw.ctl(&["add-port", "h99", "99", &format!("system:{}", topo.host(5).veth)]);
    assert!(stderr(&again).contains("AlreadyExists: port.devargs:"), "{}", stderr(&again));
    let missing = sw.ctl(&["add-port", "h99", "99", "system:no-such-if0"]);
    assert!(stderr(&missing).contains("no network interface named 'no-such-if0'"), "{}", stderr(&missing));
    let bad = sw.ctl(&["add-port", "h99", "99", "system:a/b"]);
    assert!(stderr(&bad).contains("InvalidArgument: port.devargs:"), "{}", stderr(&bad));
    assert_eq!(sw.ports_json().len(), HOSTS, "a refused add left a port behind");

    let remove = sw.ctl(&["remove-port", &format!("h{HOSTS}")]);
    assert!(remove.status.success(), "{}", stderr(&remove));
    assert!(!topo.ping(1, HOSTS, 1), "h{HOSTS} still reachable after its port was removed");
    topo.exec_ok(1, &["ip", "neigh", "flush", "dev", "eth0"]);
    let readd =
        sw.ctl(&["add-port", &format!("h{HOSTS}"), &HOSTS.to_string(), &format!("system:{}", topo.host(HOSTS).veth)]);
    assert!(readd.status.success(), "{}", stderr(&readd));
    assert!(topo.ping(HOSTS, 1, 2), "the interface came back as a port");
    std::thread::sleep(Duration::from_millis(10));
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn a_system_port_with_two_rx_queues_spreads_flows_over_both() {
    let _g = serial();
    let topo = Topology::new(2);
    let two_queues = topo.system_port_table(1).replace("devargs", "rx_queues = 2\ndevargs");
    let metrics = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let body = format!("{two_queues}{}", topo.system_port_table(2));
    let sw = Vswitchd::start_with_control(&format!("metrics = \"{metrics}\""), &body);
    // Sixteen TCP connections: the kernel's flow hash puts some on each socket of the group.
    for port in 5300..5316 {
        let server = std::net::SocketAddrV4::new(topo.host(2).ip, port);
        let (intact, got) = tcp_transfer(topo.netns_path(1), topo.netns_path(2), server, 64 << 10);
        assert!(intact, "TCP to port {port}: {got} bytes");
    }
    // Per rx queue counts, as Prometheus scrapes them.
    let (_, _, text) = http_get(metrics, "/metrics", None);
    let rx: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("vswitch_rx_queue_packets_total{") && l.contains("port=\"h1\""))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap() as u64)
        .collect();
    assert_eq!(rx.len(), 2, "two rx queues of h1 in:\n{text}");
    assert!(rx.iter().all(|&n| n > 20), "both rx queues took frames: {rx:?}");

    // Frames this host sends out of h1's interface go to host 1, not into the switch: a
    // fanout group ignores PACKET_IGNORE_OUTGOING, so the rings skip them.
    let rx_of_h1 = |sw: &Vswitchd| {
        let h1 = sw.ports_json().into_iter().find(|p| p["name"] == "h1").expect("h1 listed");
        h1["counters"]["rx_packets"].as_u64().unwrap_or(0)
    };
    let before = rx_of_h1(&sw);
    let script = format!(
        "import socket; s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(('{}', 0))\n\
         for i in range(20): s.send(bytes.fromhex('ffffffffffff02000000ee01') + b'\\x88\\xb5' + bytes(50))",
        topo.host(1).veth
    );
    let sent = std::process::Command::new("python3").args(["-c", &script]).output().unwrap();
    assert!(sent.status.success(), "{}", stderr(&sent));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(rx_of_h1(&sw), before, "frames sent out of h1's interface came in as input");
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn checksums_a_sender_left_to_offload_are_filled_in() {
    let _g = serial();
    let topo = Topology::new(2);
    // Host 1 as a pod's veth is by default: the kernel leaves TCP and UDP checksums to the
    // "hardware" (CHECKSUM_PARTIAL), which a veth never fills in. Only TSO stays off: its
    // 64 KB super-frames do not fit a ring slot.
    topo.exec_ok(1, &["ethtool", "-K", "eth0", "tx", "on", "tso", "off"]);
    let offloads = String::from_utf8_lossy(&topo.exec_ok(1, &["ethtool", "-k", "eth0"]).stdout).to_string();
    assert!(offloads.contains("tx-checksum-ip-generic: on"), "{offloads}");
    let sw = Vswitchd::start(&topo.system_port_config());
    assert!(topo.ping(1, 2, 2), "ping h1 -> h2");

    let server = std::net::SocketAddrV4::new(topo.host(2).ip, 5400);
    // Without the checksums filled in, none would arrive; a few may be lost on a busy host.
    let got = udp_datagrams(topo.netns_path(1), topo.netns_path(2), server, 50, 1000);
    assert!(got >= 45, "UDP datagrams with checksums left to offload arrived intact: {got} of 50");

    // The same from a raw socket, untagged and on VLAN 100, whose tag the kernel hands apart
    // from the frame: the checksum's start moves by the tag the switch puts back.
    let frames = common::helper("frames.py");
    for (vlan, marker) in [(None, "c5c5c5c5"), (Some("100"), "c5c5c5c6")] {
        let sniffer = topo.sniff_with(2, marker, 1.5, &["--udp-checksum", "--vlan", vlan.unwrap_or("none")]);
        let mut send = vec!["python3", &frames, "send", "--iface", "eth0", "--dst", &topo.host(2).mac];
        send.extend(["--src", &topo.host(1).mac, "--marker", marker, "--count", "10", "--partial-udp"]);
        if let Some(v) = vlan {
            send.extend(["--vlan", v]);
        }
        topo.exec_ok(1, &send);
        assert_eq!(sniffer.count(), 10, "UDP frames left to offload, VLAN {vlan:?}, arrive with valid checksums");
    }

    let server = std::net::SocketAddrV4::new(topo.host(2).ip, 5402);
    let (intact, got) = tcp_transfer(topo.netns_path(1), topo.netns_path(2), server, 4 << 20);
    assert!(intact, "TCP with checksums left to offload: {got} of {} bytes arrived intact", 4 << 20);

    let ports = sw.ports_json();
    let h1 = ports.iter().find(|p| p["name"] == "h1").expect("h1 listed");
    assert_eq!(h1["device"]["rx_errors"].as_u64(), Some(0), "no frame of h1 refused: {h1}");
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
}
