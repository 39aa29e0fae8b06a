//! Ports added and removed while the switch runs, over real af_packet ports on veth pairs.

mod common;

use common::{serial, stderr_text as stderr, Topology, Vswitchd};

/// The `[[port]]` table of host `i` (port number i, af_packet on its veth).
fn port_table(topo: &Topology, i: usize) -> String {
    format!("[[port]]\nname = \"h{i}\"\nnumber = {i}\ndevargs = \"net_af_packet{i},iface={}\"\n\n", topo.host(i).veth)
}

#[test]
fn a_port_added_at_run_time_forwards_and_goes_away_when_removed() {
    let _g = serial();
    let topo = Topology::new(3);
    // Hosts 1 and 2 from the config; host 3 arrives later, as a CNI ADD would bring it.
    let sw = Vswitchd::start(&format!("{}{}", port_table(&topo, 1), port_table(&topo, 2)));
    assert!(topo.ping(1, 2, 1));
    assert!(!topo.ping(1, 3, 1), "host 3 is not attached yet");
    // Host 1 remembers that 10.x.0.3 did not answer and would not ask again for a while.
    topo.exec_ok(1, &["ip", "neigh", "flush", "dev", "eth0"]);

    let devargs = format!("net_af_packet_rt3,iface={}", topo.host(3).veth);
    let add = sw.ctl(&["add-port", "h3", "3", &devargs]);
    assert!(add.status.success(), "{}", stderr(&add));
    assert!(String::from_utf8_lossy(&add.stdout).contains("added port h3 (number 3)"));
    // Forwarding from the moment the call returned: no settling time.
    assert!(
        topo.ping(1, 3, 3),
        "ping through the added port failed:\n{}\n{}\n{}",
        String::from_utf8_lossy(&sw.ctl(&["list-ports"]).stdout),
        String::from_utf8_lossy(&sw.ctl(&["list-workers"]).stdout),
        String::from_utf8_lossy(&sw.ctl(&["show-drops"]).stdout)
    );
    assert!(topo.ping(3, 2, 2));
    let ports = sw.ports_json();
    let h3 = ports.iter().find(|p| p["name"] == "h3").expect("h3 listed");
    assert_eq!(h3["number"], 3);
    let rx = h3["counters"]["rx_packets"].as_u64().unwrap_or(0);
    assert!(rx >= 5, "h3 counted {rx} rx packets: {h3}");
    let workers = String::from_utf8_lossy(&sw.ctl(&["list-workers"]).stdout).into_owned();
    assert!(workers.contains("h3:0"), "no worker polls h3:\n{workers}");

    // Refusals change nothing and name the field.
    let same_name = sw.ctl(&["add-port", "h3", "9", "net_null9"]);
    assert!(stderr(&same_name).contains("AlreadyExists: port.name:"), "{}", stderr(&same_name));
    let same_device = sw.ctl(&["add-port", "h9", "9", &devargs]);
    assert!(stderr(&same_device).contains("AlreadyExists: port.devargs:"), "{}", stderr(&same_device));
    let bad_driver = sw.ctl(&["add-port", "h9", "9", "net_bogus0"]);
    assert!(stderr(&bad_driver).contains("InvalidArgument: port.devargs:"), "{}", stderr(&bad_driver));
    let bad_number = sw.ctl(&["add-port", "h9", "0", "net_null9"]);
    assert!(stderr(&bad_number).contains("InvalidArgument: port.number:"), "{}", stderr(&bad_number));
    let no_device = sw.ctl(&["add-port", "h9", "9", "net_af_packet_rt9,iface=no-such-if0"]);
    assert!(stderr(&no_device).contains("FailedPrecondition: port.devargs:"), "{}", stderr(&no_device));
    assert_eq!(sw.ports_json().len(), 3, "a refused add left a port behind");

    // A flow that outputs to the port keeps it; once the flow is gone, it can go.
    let flow = sw.ctl(&["add-flow", "table=0,priority=5,in_port=1,arp,actions=output:3"]);
    assert!(flow.status.success(), "{}", stderr(&flow));
    let in_use = sw.ctl(&["remove-port", "h3"]);
    assert!(
        stderr(&in_use).contains("FailedPrecondition: name: port 'h3' is used by 1 flow(s)"),
        "{}",
        stderr(&in_use)
    );
    assert!(sw.ctl(&["del-flows", "table=0,in_port=1,arp"]).status.success());

    let remove = sw.ctl(&["remove-port", "h3"]);
    assert!(remove.status.success(), "{}", stderr(&remove));
    assert!(sw.ports_json().iter().all(|p| p["name"] != "h3"));
    assert!(!topo.ping(1, 3, 1), "host 3 still reachable after its port was removed");
    assert!(topo.ping(1, 2, 1), "the other ports stopped forwarding");
    let macs = String::from_utf8_lossy(&sw.ctl(&["list-macs"]).stdout).into_owned();
    assert!(!macs.contains(&topo.host(3).mac), "h3's MAC outlived its port:\n{macs}");
    let again = sw.ctl(&["remove-port", "h3"]);
    assert!(stderr(&again).contains("NotFound: name: no port named 'h3'"), "{}", stderr(&again));

    // The same device can come back (DPDK let go of it), with counters from zero.
    let readd = sw.ctl(&["add-port", "h3", "3", &devargs]);
    assert!(readd.status.success(), "{}", stderr(&readd));
    let h3 = sw.ports_json().into_iter().find(|p| p["name"] == "h3").unwrap();
    let tx = h3["counters"]["tx_packets"].as_u64().unwrap_or(99);
    assert!(tx < 5, "counters of the removed port carried over: {h3}");
    topo.exec_ok(3, &["ip", "neigh", "flush", "dev", "eth0"]);
    assert!(topo.ping(3, 1, 2));

    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn run_time_ports_are_bounded_by_the_mbufs_kept_for_them() {
    let _g = serial();
    let topo = Topology::new(1);
    let sw = Vswitchd::start(&format!("[switch]\nspare_ports = 2\n\n{}", port_table(&topo, 1)));
    for i in 0..2 {
        let out = sw.ctl(&["add-port", &format!("n{i}"), &(10 + i).to_string(), &format!("net_null{i}")]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let third = sw.ctl(&["add-port", "n2", "12", "net_null2"]);
    assert!(stderr(&third).contains("ResourceExhausted: mbufs:"), "{}", stderr(&third));
    assert!(stderr(&third).contains("switch.spare_ports"), "{}", stderr(&third));
    // Removing one gives its share back.
    assert!(sw.ctl(&["remove-port", "n0"]).status.success());
    let retry = sw.ctl(&["add-port", "n2", "12", "net_null2"]);
    assert!(retry.status.success(), "{}", stderr(&retry));
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
}
