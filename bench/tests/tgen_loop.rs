//! `tgen` over a DPDK ring port, which hands every frame it sends straight back: it counts
//! what came back and says when every flow's first frame arrived, which the policy-update
//! benchmark uses to tell when a change is live on all traffic; it sends IMIX and VXLAN
//! frames and finds its stamps in them; frames it did not send do not count as arrived; and
//! over af_packet on a veth pair (in a network namespace of the test's) its frames arrive.

use std::process::Command;

/// Runs tgen on a looped-back ring port; returns its JSON report.
fn tgen_loop(flows: u32, mpps: f64, seconds: f64) -> serde_json::Value {
    tgen_on(None, "net_ring0", flows, mpps, seconds, &[])
}

/// Runs tgen (in network namespace `netns`, if given) sending on port `devargs` (and
/// receiving on it), with `extra` arguments; returns its JSON report.
fn tgen_on(
    netns: Option<&str>,
    devargs: &str,
    flows: u32,
    mpps: f64,
    seconds: f64,
    extra: &[&str],
) -> serde_json::Value {
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_tgen")]);
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_tgen")),
    };
    let out = cmd
        .args(["--tx", devargs, "--core", "0", "--warmup", "0", "--drain-ms", "20"])
        .args(["--file-prefix", &format!("tgloop{}", std::process::id())])
        .args(["--flows", &flows.to_string(), "--rate", &mpps.to_string(), "--seconds", &seconds.to_string()])
        .args(extra)
        .output()
        .expect("run tgen");
    assert!(out.status.success(), "tgen failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("tgen prints JSON")
}

fn count(r: &serde_json::Value, key: &str) -> u64 {
    r[key].as_u64().unwrap_or_else(|| panic!("no {key}: {r}"))
}

#[test]
fn every_flow_time_comes_once_the_last_flow_has_arrived() {
    // 1,000 flows round-robin at 0.5 Mpps: the last flow's first frame leaves 999 frames
    // (about 2 ms) after the first one. Pacing may send a late burst of up to 64 at once.
    let r = tgen_loop(1000, 0.5, 0.2);
    assert!(r["sent"].as_u64().unwrap() > 1000, "{r}");
    assert_eq!(r["stamped"], r["sent"], "a ring loses nothing: {r}");
    let first = r["first_rx_unix_ns"].as_u64().expect("first frame time");
    let every = r["every_flow_rx_unix_ns"].as_u64().expect("every flow arrived");
    let gap_ms = (every - first) as f64 / 1e6;
    assert!(gap_ms >= (999.0 - 64.0) / 0.5e6 * 1e3, "every flow by {gap_ms} ms after the first: {r}");
}

#[test]
fn every_flow_time_is_absent_while_a_flow_has_not_arrived() {
    // 2 ms at 0.1 Mpps is about 200 frames: 800 of the 1,000 flows never sent one.
    let r = tgen_loop(1000, 0.1, 0.002);
    let sent = r["sent"].as_u64().unwrap();
    assert!(sent > 0 && sent < 1000, "{r}");
    assert!(r["first_rx_unix_ns"].as_u64().is_some(), "{r}");
    assert!(r["every_flow_rx_unix_ns"].is_null(), "{r}");
}

#[test]
fn imix_frames_come_back_in_their_seven_four_one_mix() {
    let r = tgen_on(None, "net_ring0", 100, 0.2, 0.1, &["--size", "imix"]);
    let sent = count(&r, "sent");
    assert!(sent > 1000, "{r}");
    // A frame the ring refused would still have taken its place in the round.
    assert_eq!(count(&r, "tx_failed"), 0, "{r}");
    assert_eq!((count(&r, "stamped"), count(&r, "lost"), count(&r, "reordered")), (sent, 0, 0), "{r}");
    let sizes: Vec<u64> = r["sizes"].as_array().unwrap().iter().map(|s| s.as_u64().unwrap()).collect();
    let of = |len| sizes.iter().filter(|&&s| s == len).count();
    assert_eq!((of(64), of(594), of(1518), sizes.len()), (7, 4, 1, 12), "{r}");
    // Frames go round 7 x 60, 4 x 590 and 1514 bytes (without FCS), from the first.
    let round = [60u64, 60, 60, 60, 60, 60, 60, 590, 590, 590, 590, 1514];
    let expected = sent / 12 * round.iter().sum::<u64>() + round[..(sent % 12) as usize].iter().sum::<u64>();
    assert_eq!(count(&r, "stamped_bytes"), expected, "{r}");
    assert_eq!(count(&r, "sent_bytes"), count(&r, "stamped_bytes"), "{r}");
}

#[test]
fn vxlan_frames_carry_the_stamp_inside_the_tunnel() {
    let r = tgen_on(None, "net_ring0", 100, 0.2, 0.05, &["--vxlan", "100"]);
    let sent = count(&r, "sent");
    assert!(sent > 100, "{r}");
    assert_eq!(count(&r, "stamped"), sent, "every frame's stamp found past the VXLAN headers: {r}");
    // 64-byte inner frames (60 without FCS) in 50 bytes of outer headers.
    assert_eq!(count(&r, "stamped_bytes"), sent * 110, "{r}");
    assert!(r["latency_ns"]["p50"].as_u64().is_some_and(|ns| ns > 0), "{r}");
}

#[test]
fn frames_the_generator_did_not_send_do_not_count_as_arrived() {
    // A second net_null port in copy mode receives copies of its own (never sent, zeroed)
    // frame: received, but without a stamp. What was sent went to the first, so it is lost.
    // (A net_null port in its default mode hands back mbufs as it finds them in the pool,
    // with the stamps of frames freed before.)
    let r = tgen_on(None, "net_null0", 10, 0.1, 0.05, &["--rx", "net_null1,copy=1"]);
    assert!(count(&r, "sent") > 0 && count(&r, "received") > 0, "{r}");
    assert_eq!(count(&r, "stamped"), 0, "{r}");
    assert!(r["first_rx_unix_ns"].is_null() && r["every_flow_rx_unix_ns"].is_null(), "{r}");
}

/// A network namespace of the test's, deleted (with its interfaces) when dropped.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Netns {
        let name = format!("{tag}{}", std::process::id());
        let ok = Command::new("ip").args(["netns", "add", &name]).status().is_ok_and(|s| s.success());
        assert!(ok, "ip netns add {name}");
        Netns(name)
    }

    fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(["-n", &self.0]).args(args).output().expect("run ip");
        assert!(out.status.success(), "ip -n {} {args:?}: {}", self.0, String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn frames_sent_over_af_packet_arrive_through_a_veth_pair() {
    let ns = Netns::new("tgaf");
    ns.ip(&["link", "add", "tga", "type", "veth", "peer", "name", "tgb"]);
    for dev in ["tga", "tgb"] {
        ns.ip(&["link", "set", dev, "up"]);
    }
    let r = tgen_on(
        Some(&ns.0),
        "net_af_packet0,iface=tga",
        16,
        0.05,
        0.2,
        &["--rx", "net_af_packet1,iface=tgb", "--size", "imix", "--link-wait", "5"],
    );
    let sent = count(&r, "sent");
    // 10,000 are due; a descheduled generator skips what it fell behind by.
    assert!(sent > 1000, "{r}");
    // The kernel may send a frame of its own on a new link (IPv6 router solicitations):
    // received, never stamped.
    assert_eq!((count(&r, "stamped"), count(&r, "lost"), count(&r, "reordered")), (sent, 0, 0), "{r}");
    assert_eq!(count(&r, "stamped_bytes"), count(&r, "sent_bytes"), "{r}");
    assert!(r["every_flow_rx_unix_ns"].as_u64().is_some(), "all 16 flows arrived: {r}");
}
