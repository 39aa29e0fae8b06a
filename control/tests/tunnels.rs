//! Overlay tunnels against VTEPs nobody here wrote: the Linux kernel's `vxlan` device (and
//! its `geneve` device where the kernel has one, else Open vSwitch's userspace Geneve
//! datapath), each in a namespace behind the switch's uplink; hosts in namespaces on access
//! ports; real ping and TCP through the overlay, underlay captures decoded by tcpdump, and
//! scapy-crafted malformed packets counted under their reasons.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tonic::Code;
use vswitch_proto::v1 as pb;

/// Host 1 (and 3) are access hosts on 10.S.0.0/24; host 2's namespace is the remote VTEP,
/// its eth0 on the underlay 192.168.S.0/24 facing the switch's uplink (192.168.S.1).
struct Overlay {
    topo: Topology,
}

impl Overlay {
    fn new(hosts: usize) -> Overlay {
        let topo = Topology::new(hosts);
        topo.exec_ok(2, &["ip", "addr", "flush", "dev", "eth0"]);
        let u = Overlay { topo };
        u.topo.exec_ok(2, &["ip", "addr", "add", &format!("{}/24", u.underlay(2)), "dev", "eth0"]);
        u
    }

    fn s(&self) -> u8 {
        self.topo.subnet
    }

    /// 192.168.S.last
    fn underlay(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, self.s(), last)
    }

    /// 10.S.0.last: the overlay subnet of host 1 (and of the remote VTEP's overlay device).
    fn overlay(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.s(), 0, last)
    }

    /// The switch's ports: h1 (1), the uplink "up" (2) with 192.168.S.1/24 and `uplink_extra`
    /// lines, h3 (3) when there is a host 3.
    fn ports(&self, uplink_extra: &str) -> String {
        let t = &self.topo;
        let mut c = format!(
            "[[port]]\nname = \"h1\"\nnumber = 1\ndevargs = \"net_af_packet1,iface={}\"\n\n\
             [[port]]\nname = \"up\"\nnumber = 2\ndevargs = \"net_af_packet2,iface={}\"\nip = \"{}/24\"\n{uplink_extra}\n\n",
            t.host(1).veth,
            t.host(2).veth,
            self.underlay(1)
        );
        if t.hosts.len() >= 3 {
            c += &format!(
                "[[port]]\nname = \"h3\"\nnumber = 3\ndevargs = \"net_af_packet3,iface={}\"\n\n",
                t.host(3).veth
            );
        }
        c
    }

    /// A kernel vxlan device `name` in the VTEP namespace with `overlay_ip/24`.
    fn kernel_vxlan(&self, name: &str, vni: u32, local: Ipv4Addr, overlay_ip: Ipv4Addr) {
        let (vni, local, remote) = (vni.to_string(), local.to_string(), self.underlay(1).to_string());
        let mut add = vec!["ip", "link", "add", name, "type", "vxlan", "id", &vni, "local", &local, "remote", &remote];
        add.extend(["dstport", "4789", "dev", "eth0"]);
        self.topo.exec_ok(2, &add);
        self.overlay_device(name, overlay_ip);
    }

    fn overlay_device(&self, name: &str, ip: Ipv4Addr) {
        self.topo.exec_ok(2, &["ip", "addr", "add", &format!("{ip}/24"), "dev", name]);
        self.topo.exec_ok(2, &["ip", "link", "set", name, "up"]);
        // TCP through the switch's af_packet ports needs complete checksums from senders.
        self.topo.exec_ok(2, &["ethtool", "-K", name, "tx", "off"]);
    }

    fn ping(&self, ns_host: usize, to: Ipv4Addr, count: u32) -> bool {
        let out = self.topo.exec(ns_host, &["ping", "-c", &count.to_string(), "-i", "0.2", "-W", "2", &to.to_string()]);
        out.status.success()
    }

    /// Pings until one reply comes back (the first packets may wait for ARP), up to 10 s.
    fn reachable(&self, ns_host: usize, to: Ipv4Addr) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping(ns_host, to, 1) {
                return true;
            }
        }
        false
    }

    fn ns(&self, host: usize) -> PathBuf {
        self.topo.netns_path(host)
    }
}

fn tunnels(sw: &Vswitchd) -> pb::ListTunnelsResponse {
    rt().block_on(async {
        let mut c = pb::tunnel_service_client::TunnelServiceClient::new(sw.channel().await);
        c.list_tunnels(pb::ListTunnelsRequest {}).await.expect("ListTunnels").into_inner()
    })
}

fn tunnel_counters(sw: &Vswitchd, name: &str) -> (pb::PortCounters, Vec<pb::DropCounter>) {
    let t = tunnels(sw).tunnels.into_iter().find(|t| t.spec.as_ref().unwrap().name == name).expect("tunnel listed");
    (t.counters.unwrap(), t.drops)
}

fn drops(sw: &Vswitchd, port: &str) -> std::collections::HashMap<String, u64> {
    rt().block_on(async {
        let mut c = pb::switch_service_client::SwitchServiceClient::new(sw.channel().await);
        let port = Some(pb::PortRef { port: Some(pb::port_ref::Port::Name(port.into())) });
        let d = c.list_drops(pb::ListDropsRequest { port }).await.expect("ListDrops").into_inner();
        d.drops.into_iter().map(|d| (d.reason, d.packets)).collect()
    })
}

fn neighbors(sw: &Vswitchd) -> Vec<pb::Neighbor> {
    rt().block_on(async {
        let mut c = pb::tunnel_service_client::TunnelServiceClient::new(sw.channel().await);
        c.list_neighbors(pb::ListNeighborsRequest {}).await.expect("ListNeighbors").into_inner().neighbors
    })
}

fn mac_of(o: &Overlay, host: usize, dev: &str) -> String {
    let out = o.topo.exec_ok(host, &["cat", &format!("/sys/class/net/{dev}/address")]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// TCP both ways between access host 1 and the remote VTEP's overlay address.
fn tcp_both_ways(o: &Overlay, size: usize) {
    let to_vtep = SocketAddrV4::new(o.overlay(2), 5001);
    let (intact, got) = tcp_transfer(o.ns(1), o.ns(2), to_vtep, size);
    assert!(intact, "h1 -> remote VTEP: {got} of {size} bytes, or corrupted");
    let to_h1 = SocketAddrV4::new(o.overlay(1), 5002);
    let (intact, got) = tcp_transfer(o.ns(2), o.ns(1), to_h1, size);
    assert!(intact, "remote VTEP -> h1: {got} of {size} bytes, or corrupted");
}

fn fixed_tunnel(o: &Overlay, name: &str, number: u32, kind: &str, vni: u32) -> String {
    format!(
        "[[tunnel]]\nname = \"{name}\"\nnumber = {number}\nkind = \"{kind}\"\nuplink = \"up\"\nremote_ip = \"{}\"\nvni = {vni}\n\n",
        o.underlay(2)
    )
}

#[test]
fn vxlan_with_the_kernel_vtep_ping_and_tcp_both_ways() {
    let _g = serial();
    let o = Overlay::new(2);
    o.kernel_vxlan("vx100", 100, o.underlay(2), o.overlay(2));
    let sw = Vswitchd::start(&(o.ports("") + &fixed_tunnel(&o, "vx0", 10, "vxlan", 100)));

    assert!(o.reachable(1, o.overlay(2)), "h1 cannot ping the kernel VTEP's overlay address");
    assert!(o.ping(2, o.overlay(1), 3), "the kernel VTEP cannot ping h1");
    tcp_both_ways(&o, 4 << 20);

    let (c, _) = tunnel_counters(&sw, "vx0");
    assert!(c.rx_packets > 2000 && c.tx_packets > 2000, "decap {} / encap {} packets", c.rx_packets, c.tx_packets);
    // The remote VTEP was resolved by ARP: its MAC is the kernel's eth0 MAC.
    let peer_mac = mac_of(&o, 2, "eth0");
    let n = neighbors(&sw);
    assert!(
        n.iter().any(|n| n.ip == o.underlay(2).to_string() && n.mac == peer_mac && !n.r#static),
        "neighbor {} {peer_mac} not learned: {n:?}",
        o.underlay(2)
    );
    // The kernel VTEP's own underlay ARP for our VTEP address was answered by the switch.
    let neigh = o.topo.exec_ok(2, &["ip", "neigh", "show", &o.underlay(1).to_string()]);
    let uplink_mac = tunnels(&sw).uplinks[0].mac.clone();
    assert!(String::from_utf8_lossy(&neigh.stdout).contains(&uplink_mac), "kernel neighbor entry: {neigh:?}");

    // Too big once encapsulated (1500-byte inner IP on a 1500-byte uplink): dropped and
    // counted, never truncated or fragmented.
    let big = o
        .topo
        .exec(1, &["ping", "-c", "2", "-i", "0.2", "-W", "1", "-M", "do", "-s", "1472", &o.overlay(2).to_string()]);
    assert!(!big.status.success(), "a 1500-byte ping crossed a 1500-byte underlay");
    let (_, d) = tunnel_counters(&sw, "vx0");
    let mtu = d.iter().find(|d| d.reason == "tunnel_mtu_exceeded").map_or(0, |d| d.packets);
    assert_eq!(mtu, 2, "drops: {d:?}");
    // The largest packet that fits (inner IP 1450 = 1500 - 50) still goes through.
    let fits = o.topo.exec(1, &["ping", "-c", "1", "-W", "2", "-M", "do", "-s", "1422", &o.overlay(2).to_string()]);
    assert!(fits.status.success(), "a 1450-byte inner packet did not cross");
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
}

/// A cross-connect through the tunnel: flows that match only in_port, so decapsulated
/// bursts take the one-key path (no packet read, tunnel metadata ignored) and still carry
/// ping and TCP both ways, counted on the flows.
#[test]
fn in_port_flows_cross_connect_a_host_and_the_tunnel() {
    let _g = serial();
    let o = Overlay::new(2);
    o.kernel_vxlan("vx100", 100, o.underlay(2), o.overlay(2));
    let body = o.ports("")
        + &fixed_tunnel(&o, "vx0", 10, "vxlan", 100)
        + "[[flow]]\nrule = \"in_port=10,actions=output:1\"\n\n\
           [[flow]]\nrule = \"in_port=1,actions=output:10\"\n\n\
           [[table]]\nid = 0\nmiss = \"drop\"\n";
    let sw = Vswitchd::start(&body);

    assert!(o.reachable(1, o.overlay(2)), "h1 cannot ping the kernel VTEP's overlay address");
    tcp_both_ways(&o, 2 << 20);

    let (c, tunnel_drops) = tunnel_counters(&sw, "vx0");
    let flows = sw.ctl(&["dump-flows"]);
    let text = String::from_utf8_lossy(&flows.stdout).to_string();
    let packets = |m: &str| -> u64 {
        let line = text.lines().find(|l| l.contains(m)).unwrap_or_else(|| panic!("no {m} flow in\n{text}"));
        line.split("n_packets=").nth(1).unwrap().split(',').next().unwrap().parse().unwrap()
    };
    // Every decapsulated packet went through the in_port=10 flow; every packet from h1
    // through in_port=1, then was encapsulated (the tunnel's tx) or dropped with a reason.
    assert_eq!(packets("in_port=10 "), c.rx_packets, "decapsulated packets vs flow counter\n{text}");
    let dropped: u64 = tunnel_drops.iter().map(|d| d.packets).sum();
    assert_eq!(packets("in_port=1 "), c.tx_packets + dropped, "{c:?} {tunnel_drops:?}\n{text}");
    assert!(c.rx_packets > 1000 && c.tx_packets > 1000, "{c:?}");
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
}

/// Open vSwitch's userspace datapath (no DPDK) as a Geneve VTEP inside a namespace: br-phy
/// holds the underlay port and address, br-int the Geneve port and the overlay address.
/// Stopped (by PID) and removed on drop.
struct OvsVtep {
    dir: tempfile::TempDir,
}

impl OvsVtep {
    fn start(o: &Overlay, vni: u32) -> OvsVtep {
        let dir = tempfile::tempdir().expect("temp dir");
        let run_dir = dir.path().to_str().unwrap().to_string();
        let vtep = OvsVtep { dir };
        let db = format!("{run_dir}/conf.db");
        let sock = format!("unix:{run_dir}/db.sock");
        let ns = o.topo.host(2).ns.clone();
        let env = |c: &mut Command| {
            for k in ["OVS_RUNDIR", "OVS_DBDIR", "OVS_LOGDIR", "OVS_SYSCONFDIR"] {
                c.env(k, &run_dir);
            }
        };
        let run_env = |args: &[&str]| {
            let mut c = Command::new(args[0]);
            c.args(&args[1..]);
            env(&mut c);
            let out = c.output().unwrap_or_else(|e| panic!("{}: {e} (is openvswitch-switch installed?)", args[0]));
            assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run_env(&["ovsdb-tool", "create", &db, "/usr/share/openvswitch/vswitch.ovsschema"]);
        let d = |name: &str| format!("{run_dir}/{name}");
        run_env(&[
            "ip",
            "netns",
            "exec",
            &ns,
            "ovsdb-server",
            &db,
            &format!("--remote=p{sock}"),
            &format!("--pidfile={}", d("ovsdb-server.pid")),
            &format!("--unixctl={}", d("ovsdb-server.ctl")),
            &format!("--log-file={}", d("ovsdb-server.log")),
            "--detach",
            "--no-chdir",
        ]);
        let vsctl = |args: &[&str]| {
            let mut full = vec!["ovs-vsctl", "--timeout=20"];
            let db_arg = format!("--db={sock}");
            full.push(&db_arg);
            full.extend_from_slice(args);
            run_env(&full);
        };
        vsctl(&["--no-wait", "init"]);
        // The build without DPDK when both are installed; either runs the userspace datapath.
        let vswitchd = if std::path::Path::new("/usr/lib/openvswitch-switch/ovs-vswitchd").exists() {
            "/usr/lib/openvswitch-switch/ovs-vswitchd"
        } else {
            "ovs-vswitchd"
        };
        run_env(&[
            "ip",
            "netns",
            "exec",
            &ns,
            vswitchd,
            &sock,
            &format!("--pidfile={}", d("ovs-vswitchd.pid")),
            &format!("--unixctl={}", d("ovs-vswitchd.ctl")),
            &format!("--log-file={}", d("ovs-vswitchd.log")),
            "--detach",
            "--no-chdir",
        ]);
        let remote = format!("options:remote_ip={}", o.underlay(1));
        let key = format!("options:key={vni}");
        vsctl(&[
            "add-br",
            "br-phy",
            "--",
            "set",
            "bridge",
            "br-phy",
            "datapath_type=netdev",
            "--",
            "add-port",
            "br-phy",
            "eth0",
        ]);
        vsctl(&["add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev"]);
        vsctl(&["add-port", "br-int", "gnv0", "--", "set", "Interface", "gnv0", "type=geneve", &remote, &key]);
        // Overlay MTU: 1500 - 50 of Geneve headers.
        vsctl(&["set", "Interface", "br-int", "mtu_request=1450"]);
        o.topo.exec_ok(2, &["ip", "addr", "add", &format!("{}/24", o.underlay(2)), "dev", "br-phy"]);
        o.topo.exec_ok(2, &["ip", "link", "set", "br-phy", "up"]);
        o.overlay_device("br-int", o.overlay(2));
        vtep
    }
}

impl Drop for OvsVtep {
    fn drop(&mut self) {
        for name in ["ovs-vswitchd.pid", "ovsdb-server.pid"] {
            let Ok(pid) = std::fs::read_to_string(self.dir.path().join(name)) else { continue };
            let Ok(pid) = pid.trim().parse::<i32>() else { continue };
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            for _ in 0..50 {
                if nix::sys::signal::kill(pid, None).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[test]
fn geneve_with_a_standard_vtep_ping_and_tcp_both_ways() {
    let _g = serial();
    let o = Overlay::new(2);
    // The kernel's geneve device when the kernel has one; Open vSwitch's userspace Geneve
    // otherwise (this CI kernel is built without CONFIG_GENEVE).
    let r = o.underlay(1).to_string();
    let kernel = o.topo.exec(2, &["ip", "link", "add", "gnv100", "type", "geneve", "id", "100", "remote", &r]);
    let _ovs = if kernel.status.success() {
        eprintln!("Geneve peer: the Linux kernel's geneve device");
        o.overlay_device("gnv100", o.overlay(2));
        None
    } else {
        eprintln!(
            "Geneve peer: Open vSwitch userspace datapath (kernel geneve unavailable: {})",
            String::from_utf8_lossy(&kernel.stderr).trim()
        );
        o.topo.exec_ok(2, &["ip", "addr", "flush", "dev", "eth0"]);
        Some(OvsVtep::start(&o, 100))
    };
    // The overlay MTU is 1450 on both sides, as on any VXLAN/Geneve network on a 1500 underlay.
    o.topo.exec_ok(1, &["ip", "link", "set", "eth0", "mtu", "1450"]);
    let sw = Vswitchd::start(&(o.ports("") + &fixed_tunnel(&o, "gnv0", 10, "geneve", 100)));

    assert!(o.reachable(1, o.overlay(2)), "h1 cannot ping the Geneve VTEP's overlay address");
    assert!(o.ping(2, o.overlay(1), 3), "the Geneve VTEP cannot ping h1");
    tcp_both_ways(&o, 4 << 20);
    let (c, d) = tunnel_counters(&sw, "gnv0");
    assert!(c.rx_packets > 2000 && c.tx_packets > 2000, "decap {} / encap {}", c.rx_packets, c.tx_packets);
    assert!(d.is_empty(), "drops: {d:?}");
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
}

/// The frames of a pcap file (classic format, microsecond or nanosecond).
fn read_pcap(path: &std::path::Path) -> Vec<Vec<u8>> {
    let b = std::fs::read(path).expect("read pcap");
    assert!(b.len() >= 24, "pcap too short");
    let le = match &b[0..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        m => panic!("not a pcap: magic {m:02x?}"),
    };
    let u32_at = |i: usize| {
        let w = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= b.len() {
        let len = u32_at(at + 8) as usize;
        frames.push(b[at + 16..(at + 16 + len).min(b.len())].to_vec());
        at += 16 + len;
    }
    frames
}

fn ones_complement_sum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[test]
fn underlay_capture_shows_well_formed_vxlan() {
    let _g = serial();
    let o = Overlay::new(2);
    o.kernel_vxlan("vx100", 100, o.underlay(2), o.overlay(2));
    let sw = Vswitchd::start(&(o.ports("") + &fixed_tunnel(&o, "vx0", 10, "vxlan", 100)));
    assert!(o.reachable(1, o.overlay(2)), "overlay not up");

    // Capture what the switch sends to the remote VTEP while h1 sends 16 UDP flows.
    let pcap = sw.dir.path().join("underlay.pcap");
    let filter = format!("udp dst port 4789 and src host {}", o.underlay(1));
    let mut tcpdump = Command::new("ip")
        .args(["netns", "exec", &o.topo.host(2).ns, "tcpdump", "-i", "eth0", "-nn", "-U", "-c", "16", "-w"])
        .arg(&pcap)
        .arg(&filter)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tcpdump is installed");
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(tcpdump.stderr.as_mut().unwrap()).read_line(&mut line).expect("tcpdump output");
        assert!(line.contains("listening"), "tcpdump: {line}");
    }
    let (src, dst) = (o.overlay(1), o.overlay(2));
    in_netns(o.ns(1), move || {
        for port in 0..16u16 {
            let s = UdpSocket::bind(SocketAddrV4::new(src, 40000 + port)).expect("bind");
            s.send_to(b"overlay flow", SocketAddrV4::new(dst, 9)).expect("send");
        }
    })
    .join()
    .unwrap();
    let done = wait_timeout(&mut tcpdump, Duration::from_secs(10));
    if done.is_none() {
        let _ =
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(tcpdump.id() as i32), nix::sys::signal::Signal::SIGINT);
        let _ = tcpdump.wait();
    }

    let frames = read_pcap(&pcap);
    assert_eq!(frames.len(), 16, "captured encapsulated frames");
    let mut src_ports = std::collections::BTreeSet::new();
    for f in &frames {
        assert_eq!(&f[12..14], &[0x08, 0x00], "outer IPv4");
        assert_eq!(ones_complement_sum(&f[14..34]), 0, "outer IPv4 header checksum verifies");
        assert_eq!(&f[26..30], &o.underlay(1).octets(), "outer source: our VTEP");
        assert_eq!(&f[30..34], &o.underlay(2).octets(), "outer destination: the remote VTEP");
        assert_eq!(u16::from_be_bytes([f[16], f[17]]) as usize, f.len() - 14, "IPv4 total length");
        assert_eq!(u16::from_be_bytes([f[38], f[39]]) as usize, f.len() - 34, "UDP length");
        assert_eq!(&f[42..50], &[0x08, 0, 0, 0, 0, 0, 100, 0], "VXLAN: I flag, VNI 100");
        src_ports.insert(u16::from_be_bytes([f[34], f[35]]));
    }
    assert!(src_ports.len() >= 12, "UDP source ports should follow the inner flow: {src_ports:?}");

    // And tcpdump itself decodes them as VXLAN with VNI 100 and finds no bad checksum.
    let text = Command::new("tcpdump").args(["-r"]).arg(&pcap).args(["-nn", "-v"]).output().expect("tcpdump -r");
    let text = String::from_utf8_lossy(&text.stdout);
    assert_eq!(text.matches("VXLAN, flags [I] (0x08), vni 100").count(), 16, "{text}");
    assert!(!text.contains("bad cksum"), "{text}");
    assert_eq!(text.matches(&format!("{}.9: UDP", o.overlay(2))).count(), 16, "inner packets decoded: {text}");
    drop(sw);
}

#[test]
fn decap_matched_on_tun_id_and_tun_src_reaches_the_right_port() {
    let _g = serial();
    let o = Overlay::new(3);
    let s = o.s();
    // Two overlays from the same remote VTEP: VNI 100 for h1 (10.S.0.0/24), VNI 200 for h3,
    // readdressed to 10.S.1.1/24.
    o.kernel_vxlan("vx100", 100, o.underlay(2), o.overlay(2));
    let h3 = Ipv4Addr::new(10, s, 1, 1);
    let vtep_200 = Ipv4Addr::new(10, s, 1, 2);
    o.kernel_vxlan("vx200", 200, o.underlay(2), vtep_200);
    o.topo.exec_ok(3, &["ip", "addr", "flush", "dev", "eth0"]);
    o.topo.exec_ok(3, &["ip", "addr", "add", &format!("{h3}/24"), "dev", "eth0"]);
    let remote = o.underlay(2);
    // vx: fixed remote, VNI per flow. vxd: VNI 200, remote per flow (tun_dst).
    let body = o.ports("")
        + &format!(
            "[[tunnel]]\nname = \"vx\"\nnumber = 10\nkind = \"vxlan\"\nuplink = \"up\"\nremote_ip = \"{remote}\"\n\n\
             [[tunnel]]\nname = \"vxd\"\nnumber = 11\nkind = \"vxlan\"\nuplink = \"up\"\nvni = 200\n\n\
             [[flow]]\nrule = \"priority=10,in_port=10,tun_id=100,actions=output:1\"\n\n\
             [[flow]]\nrule = \"priority=10,in_port=10,tun_id=200,tun_src={remote},actions=output:3\"\n\n\
             [[flow]]\nrule = \"priority=10,in_port=1,actions=set_tunnel:100,output:10\"\n\n\
             [[flow]]\nrule = \"priority=10,in_port=3,actions=set_field:{remote}->tun_dst,output:11\"\n\n\
             [[table]]\nid = 0\nmiss = \"drop\"\n"
        );
    let sw = Vswitchd::start(&body);

    assert!(o.reachable(1, o.overlay(2)), "h1 <-> VNI 100 over tunnel vx");
    assert!(o.reachable(3, vtep_200), "h3 <-> VNI 200: out over vxd (tun_dst from a flow), back in over vx");

    // VNI 200 traffic from the VTEP reaches h3 and never h1.
    let marker = "7e7e200a";
    let on_h1 = o.topo.sniff(1, marker, 2.0);
    let on_h3 = o.topo.sniff(3, marker, 2.0);
    in_netns(o.ns(2), move || {
        let sock = UdpSocket::bind(SocketAddrV4::new(vtep_200, 0)).expect("bind");
        for _ in 0..5 {
            sock.send_to(&hex(marker), SocketAddrV4::new(h3, 9)).expect("send");
        }
    })
    .join()
    .unwrap();
    assert_eq!(on_h3.count(), 5, "VNI 200 frames at h3");
    assert_eq!(on_h1.count(), 0, "VNI 200 frames leaked to h1");

    let flows = sw.ctl(&["dump-flows"]);
    let text = String::from_utf8_lossy(&flows.stdout).to_string();
    for (m, at_least) in [("tun_id=0x64", 2), ("tun_id=0xc8", 7)] {
        let line = text.lines().find(|l| l.contains(m)).unwrap_or_else(|| panic!("no {m} flow in\n{text}"));
        let n: u64 = line.split("n_packets=").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
        assert!(n >= at_least, "{m}: {n} packets\n{text}");
    }
    drop(sw);
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn malformed_overlay_packets_are_counted_by_reason() {
    let _g = serial();
    let o = Overlay::new(2);
    let body = o.ports("")
        + &fixed_tunnel(&o, "vx0", 10, "vxlan", 100)
        + &fixed_tunnel(&o, "gnv0", 11, "geneve", 100)
        + &format!("[[neighbor]]\nip = \"{}\"\nmac = \"{}\"\n", o.underlay(2), mac_of(&o, 2, "eth0"));
    let sw = Vswitchd::start(&body);
    let uplink_mac = tunnels(&sw).uplinks[0].mac.clone();
    let before = drops(&sw, "up");

    let marker = "6e6e0a0a";
    let on_h1 = o.topo.sniff(1, marker, 4.0);
    let out = o.topo.exec_ok(
        2,
        &[
            "python3",
            &helper("tunnel_frames.py"),
            "eth0",
            &uplink_mac,
            &o.underlay(2).to_string(),
            &o.underlay(1).to_string(),
            &o.topo.host(1).mac,
            marker,
        ],
    );
    let sent: Vec<(String, u64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let (n, c) = l.split_once(' ').unwrap();
            (n.to_string(), c.parse().unwrap())
        })
        .collect();
    assert_eq!(on_h1.count(), 3, "valid Geneve packets with options are delivered");
    std::thread::sleep(Duration::from_millis(300));
    let after = drops(&sw, "up");
    let delta = |reason: &str| after[reason] - before[reason];
    let expect = |case: &str| sent.iter().find(|s| s.0 == case).unwrap().1;
    assert_eq!(delta("tunnel_truncated"), expect("truncated"));
    assert_eq!(delta("vxlan_bad_flags"), expect("vxlan_flags"));
    assert_eq!(delta("tunnel_unknown_vni"), expect("unknown_vni"));
    assert_eq!(delta("geneve_bad_header"), expect("geneve_header"));
    assert_eq!(delta("not_for_vtep"), expect("not_for_vtep"));
    let (c, _) = tunnel_counters(&sw, "gnv0");
    assert_eq!(c.rx_packets, expect("geneve_options"), "decapsulated on gnv0");

    // Still forwarding, still answering: nothing broke.
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
    assert!(!log.contains("panicked"), "{log}");
}

async fn tunnel_client(sw: &Vswitchd) -> pb::tunnel_service_client::TunnelServiceClient<tonic::transport::Channel> {
    pb::tunnel_service_client::TunnelServiceClient::new(sw.channel().await)
}

#[test]
fn tunnels_and_neighbors_through_the_api_and_cli() {
    let _g = serial();
    let o = Overlay::new(2);
    o.kernel_vxlan("vx100", 100, o.underlay(2), o.overlay(2));
    let sw = Vswitchd::start(&o.ports(""));
    assert!(!o.ping(1, o.overlay(2), 1), "no tunnel yet, no overlay");

    let spec = pb::TunnelSpec {
        name: "vx0".into(),
        number: 10,
        kind: "vxlan".into(),
        uplink: "up".into(),
        remote_ip: o.underlay(2).to_string(),
        vni: Some(100),
        ..Default::default()
    };
    let add = |t: pb::TunnelSpec| {
        rt().block_on(async {
            tunnel_client(&sw).await.add_tunnel(pb::AddTunnelRequest { tunnel: Some(t) }).await.map(|r| r.into_inner())
        })
    };
    // Bad requests name the field and change nothing.
    for (bad, code, field) in [
        (pb::TunnelSpec { kind: "gre".into(), ..spec.clone() }, Code::InvalidArgument, "tunnel.kind"),
        (pb::TunnelSpec { vni: Some(1 << 24), ..spec.clone() }, Code::InvalidArgument, "tunnel.vni"),
        (pb::TunnelSpec { uplink: "h1".into(), ..spec.clone() }, Code::InvalidArgument, "tunnel.uplink"),
        (pb::TunnelSpec { remote_ip: "300.1.1.1".into(), ..spec.clone() }, Code::InvalidArgument, "tunnel.remote_ip"),
        (pb::TunnelSpec { number: 1, ..spec.clone() }, Code::AlreadyExists, "tunnel.number"),
        (pb::TunnelSpec { name: "up".into(), ..spec.clone() }, Code::AlreadyExists, "tunnel.name"),
    ] {
        let e = add(bad).expect_err("refused");
        assert_eq!(e.code(), code, "{e:?}");
        assert!(e.message().starts_with(field), "{e:?}");
    }
    assert!(tunnels(&sw).tunnels.is_empty(), "nothing half-applied");

    let t = add(spec.clone()).expect("AddTunnel");
    assert_eq!(t.local_ip, o.underlay(1).to_string());
    assert_eq!(t.dst_port, 4789);
    assert_eq!(add(spec.clone()).expect_err("twice").code(), Code::AlreadyExists);
    assert!(o.reachable(1, o.overlay(2)), "a tunnel added at run time carries traffic");

    let list = sw.ctl(&["list-tunnels"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(list.status.success() && text.contains("vx0") && text.contains(&o.underlay(2).to_string()), "{text}");
    assert!(text.contains("inner IP mtu 1450"), "{text}");

    // A flow that outputs to the tunnel keeps it alive.
    assert!(sw.ctl(&["add-flow", "priority=5,in_port=1,actions=output:10"]).status.success());
    let e = rt()
        .block_on(async {
            tunnel_client(&sw).await.remove_tunnel(pb::RemoveTunnelRequest { name: "vx0".into() }).await
        })
        .expect_err("in use");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("output:10"), "{e:?}");
    assert!(sw.ctl(&["del-flows"]).status.success());

    // A static neighbor wins over ARP: a wrong MAC breaks the overlay until it is removed.
    let peer = o.underlay(2).to_string();
    let set = sw.ctl(&["add-neighbor", &peer, "02:00:00:de:ad:01"]);
    assert!(set.status.success(), "{set:?}");
    assert!(neighbors(&sw).iter().any(|n| n.ip == peer && n.r#static && n.mac == "02:00:00:de:ad:01"));
    assert!(!o.ping(1, o.overlay(2), 2), "frames to a wrong next-hop MAC reached the VTEP");
    assert!(sw.ctl(&["del-neighbor", &peer]).status.success());
    assert!(o.reachable(1, o.overlay(2)), "ARP resolved the neighbor again");
    let bad_ip = sw.ctl(&["add-neighbor", "1.2.3", "02:00:00:00:00:01"]);
    assert!(String::from_utf8_lossy(&bad_ip.stderr).contains("InvalidArgument: ip:"), "{bad_ip:?}");

    let del = sw.ctl(&["del-tunnel", "vx0"]);
    assert!(del.status.success(), "{del:?}");
    assert!(tunnels(&sw).tunnels.is_empty());
    assert!(!o.ping(1, o.overlay(2), 1), "the tunnel is gone");
    let missing = sw.ctl(&["del-tunnel", "vx0"]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("NotFound"), "{missing:?}");
    drop(sw);
}

#[test]
fn remote_vtep_behind_the_uplink_gateway() {
    let _g = serial();
    let o = Overlay::new(2);
    // The VTEP namespace is also the router: its VTEP address 172.16.S.2 sits on lo, and
    // the switch reaches it through the gateway 192.168.S.2.
    let vtep = Ipv4Addr::new(172, 16, o.s(), 2);
    o.topo.exec_ok(2, &["ip", "addr", "add", &format!("{vtep}/32"), "dev", "lo"]);
    o.kernel_vxlan("vx100", 100, vtep, o.overlay(2));
    let tunnel = format!(
        "[[tunnel]]\nname = \"vx0\"\nnumber = 10\nkind = \"vxlan\"\nuplink = \"up\"\nremote_ip = \"{vtep}\"\nvni = 100\n"
    );
    let sw = Vswitchd::start(&(o.ports(&format!("gateway = \"{}\"", o.underlay(2))) + &tunnel));
    assert!(o.reachable(1, o.overlay(2)), "overlay through the gateway");
    tcp_both_ways(&o, 1 << 20);
    let gw_mac = mac_of(&o, 2, "eth0");
    assert!(
        neighbors(&sw).iter().any(|n| n.ip == o.underlay(2).to_string() && n.mac == gw_mac),
        "the gateway was resolved by ARP"
    );
    drop(sw);
}
