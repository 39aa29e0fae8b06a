//! Deterministic traffic through real pcap PMDs: a capture file replayed into one port,
//! what the switch sends written by the others. Malformed frames must be dropped and counted
//! under their reasons; good ones flooded intact.

mod common;

use std::path::PathBuf;

use common::*;
use vswitch_bench::pcap::write_pcap;
use vswitch_proto::v1 as pb;

fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5]);
    f.resize(len, 0xab);
    f
}

/// The frames of a classic little-endian pcap file (micro- or nanosecond timestamps).
fn read_pcap(path: &std::path::Path) -> Vec<Vec<u8>> {
    let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let magic = u32::from_le_bytes(data[..4].try_into().unwrap());
    assert!(magic == 0xa1b2_c3d4 || magic == 0xa1b2_3c4d, "pcap magic {magic:#x}");
    let mut frames = Vec::new();
    let mut off = 24;
    while off + 16 <= data.len() {
        let incl = u32::from_le_bytes(data[off + 8..off + 12].try_into().unwrap()) as usize;
        frames.push(data[off + 16..off + 16 + incl].to_vec());
        off += 16 + incl;
    }
    frames
}

fn info(sw: &Vswitchd) -> pb::GetInfoResponse {
    rt().block_on(async {
        pb::switch_service_client::SwitchServiceClient::new(sw.channel().await)
            .get_info(pb::GetInfoRequest {})
            .await
            .unwrap()
            .into_inner()
    })
}

fn port(sw: &Vswitchd, number: u32) -> pb::Port {
    rt().block_on(async {
        pb::port_service_client::PortServiceClient::new(sw.channel().await)
            .get_port(pb::GetPortRequest { port: Some(pb::PortRef { port: Some(pb::port_ref::Port::Number(number)) }) })
            .await
            .unwrap()
            .into_inner()
    })
}

/// Polls port `number`'s counters until `done` holds (10 s at most). Workers count a
/// burst's rx before processing it, so tests wait for the outcome they check, not for rx.
fn wait_port(sw: &Vswitchd, number: u32, what: &str, done: impl Fn(&pb::PortCounters) -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let c = port(sw, number).counters.unwrap();
        if done(&c) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "port {number}: {what} not reached: {c:?}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A pcap capture at `dir/in.pcap` holding `frames`, replayed once into port 1 ("in");
/// ports 2 and 3 ("out2", "out3") write what they send to `dir/out2.pcap` and
/// `dir/out3.pcap` (when they close). `config` goes before the ports.
fn three_pcap_ports(dir: &std::path::Path, frames: &[Vec<u8>], config: &str) -> (Vswitchd, PathBuf, PathBuf) {
    let input = dir.join("in.pcap");
    write_pcap(std::fs::File::create(&input).unwrap(), frames).unwrap();
    let (out2, out3) = (dir.join("out2.pcap"), dir.join("out3.pcap"));
    let sw = Vswitchd::start(&format!(
        "{config}[[port]]\nname = \"in\"\nnumber = 1\ndevargs = \"net_pcap0,rx_pcap={}\"\n\n\
         [[port]]\nname = \"out2\"\nnumber = 2\ndevargs = \"net_pcap1,tx_pcap={}\"\n\n\
         [[port]]\nname = \"out3\"\nnumber = 3\ndevargs = \"net_pcap2,tx_pcap={}\"\n",
        input.display(),
        out2.display(),
        out3.display()
    ));
    (sw, out2, out3)
}

const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
const C: [u8; 6] = [2, 0, 0, 0, 0, 0xc];

#[test]
fn malformed_frames_are_dropped_and_counted_good_ones_flooded() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let good: Vec<Vec<u8>> = (0..4)
        .map(|i| {
            let mut f = frame(B, A, 60 + i * 100);
            f[20] = i as u8;
            f
        })
        .collect();
    frames.extend(std::iter::repeat_n(frame(B, A, 60)[..10].to_vec(), 5)); // runts
    let mut tagged = frame(B, A, 60);
    tagged[12..16].copy_from_slice(&[0x81, 0x00, 0x00, 0x05]);
    frames.extend(std::iter::repeat_n(tagged[..16].to_vec(), 3)); // cut inside the tag
    frames.extend(std::iter::repeat_n(frame(B, [0x01, 0, 0x5e, 0, 0, 1], 60), 2)); // group source
    frames.push(frame([0x01, 0x80, 0xc2, 0, 0, 0], A, 60)); // STP BPDU address
    frames.extend(good.iter().cloned()); // A -> B, B unknown: flooded
    frames.push(frame(A, C, 60)); // C -> A, but A was learned on this same port
    let (sw, out2, out3) = three_pcap_ports(dir.path(), &frames, "");
    // The file is read once: wait until every frame is accounted for (4 floods, 12 drops).
    wait_port(&sw, 1, "all frames handled", |c| c.rx_packets == frames.len() as u64 && c.rx_dropped == 12);
    wait_port(&sw, 3, "floods sent", |c| c.tx_packets == 4);
    let drops = rt().block_on(async {
        pb::switch_service_client::SwitchServiceClient::new(sw.channel().await)
            .list_drops(pb::ListDropsRequest { port: None })
            .await
            .unwrap()
            .into_inner()
            .drops
    });
    let count =
        |reason: &str| drops.iter().find(|d| d.reason == reason).unwrap_or_else(|| panic!("{reason} listed")).packets;
    assert_eq!(count("frame_too_short"), 5);
    assert_eq!(count("vlan_truncated"), 3);
    assert_eq!(count("invalid_source_mac"), 2);
    assert_eq!(count("link_local_destination"), 1);
    assert_eq!(count("destination_on_ingress_port"), 1);
    assert_eq!(count("no_egress_port") + count("tx_queue_full"), 0);
    let stage = |reason: &str| drops.iter().find(|d| d.reason == reason).unwrap().stage.clone();
    assert_eq!(stage("frame_too_short"), "parse");
    assert_eq!(stage("invalid_source_mac"), "l2");

    // The CLI shows the same names and figures.
    let shown = String::from_utf8_lossy(&sw.ctl(&["show-drops"]).stdout).into_owned();
    assert!(shown.lines().any(|l| l.contains("frame_too_short") && l.split_whitespace().any(|w| w == "5")), "{shown}");

    // pcap writes its files when the port closes.
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
    assert_eq!(read_pcap(&out2), good, "flooded to port 2, byte for byte");
    assert_eq!(read_pcap(&out3), good, "flooded to port 3, byte for byte");
}

#[test]
fn unsent_packets_are_freed_and_counted() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.pcap");
    const N: usize = 300;
    let frames: Vec<Vec<u8>> = (0..N).map(|i| frame([0xff; 6], A, 60 + i % 100)).collect();
    write_pcap(std::fs::File::create(&input).unwrap(), &frames).unwrap();
    let out = dir.path().join("out.pcap");
    // A memif server with no client connected takes nothing: every packet flooded to it
    // stays unsent, and must be freed and counted there.
    let sw = Vswitchd::start(&format!(
        "[[port]]\nname = \"in\"\nnumber = 1\ndevargs = \"net_pcap0,rx_pcap={}\"\n\n\
         [[port]]\nname = \"out\"\nnumber = 2\ndevargs = \"net_pcap1,tx_pcap={}\"\n\n\
         [[port]]\nname = \"lonely\"\nnumber = 3\ndevargs = \"net_memif0,role=server,socket={}\"\n",
        input.display(),
        out.display(),
        dir.path().join("memif.sock").display()
    ));
    wait_port(&sw, 3, "all copies handled", |c| c.tx_dropped == N as u64);
    wait_port(&sw, 2, "all copies handled", |c| c.tx_packets == N as u64);
    let lonely = port(&sw, 3);
    assert!(!lonely.link.unwrap().up, "memif without a peer is down");
    let c = lonely.counters.unwrap();
    assert_eq!((c.tx_packets, c.tx_dropped), (0, N as u64), "every copy for the memif port dropped and counted");
    assert_eq!(port(&sw, 2).counters.unwrap().tx_packets, N as u64, "the other copy went out");
    let drops = rt().block_on(async {
        pb::switch_service_client::SwitchServiceClient::new(sw.channel().await)
            .list_drops(pb::ListDropsRequest {
                port: Some(pb::PortRef { port: Some(pb::port_ref::Port::Name("lonely".into())) }),
            })
            .await
            .unwrap()
            .into_inner()
            .drops
    });
    let full = drops.iter().find(|d| d.reason == "tx_queue_full").unwrap();
    assert_eq!((full.stage.as_str(), full.packets), ("tx", N as u64));
    // No mbuf leaked: the pool is back to what it held before traffic (rx rings only).
    let mem = info(&sw).memory.unwrap();
    eprintln!("mbufs in use after traffic: {}", mem.mbufs_in_use);
    assert!(mem.mbufs_in_use < N as u32, "mbufs in use after traffic: {}", mem.mbufs_in_use);
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
    assert_eq!(read_pcap(&out).len(), N);
}

/// A switch with `idle` in [switch] whose worker forwarded `frames` frames from a pcap
/// port ("in", 1) to a null one ("out", 2) and then has nothing more: neither port has rx
/// interrupts, so it idles in timed sleeps.
fn idle_after_frames(dir: &std::path::Path, frames: usize, idle: &str) -> Vswitchd {
    let input = dir.join("in.pcap");
    let frames: Vec<Vec<u8>> = (0..frames).map(|_| frame(B, A, 60)).collect();
    write_pcap(std::fs::File::create(&input).unwrap(), &frames).unwrap();
    let sw = Vswitchd::start(&format!(
        "[switch]\n{idle}\n\n\
         [[port]]\nname = \"in\"\nnumber = 1\ndevargs = \"net_pcap0,rx_pcap={}\"\n\n\
         [[port]]\nname = \"out\"\nnumber = 2\ndevargs = \"net_null0,no-rx=1\"\n",
        input.display()
    ));
    wait_port(&sw, 2, "every frame forwarded", |c| c.tx_packets == frames.len() as u64);
    sw
}

fn worker(sw: &Vswitchd) -> pb::Worker {
    rt().block_on(async {
        pb::switch_service_client::SwitchServiceClient::new(sw.channel().await)
            .list_workers(pb::ListWorkersRequest {})
            .await
            .unwrap()
            .into_inner()
            .workers
            .remove(0)
    })
}

fn worker_sleeps(sw: &Vswitchd) -> u64 {
    worker(sw).sleeps
}

/// Idle back-off must not cost throughput: a worker that just carried traffic at more than
/// `idle_load_pps` keeps polling through a pause (for `idle_load_hold_ms`), since a sleep
/// in a VM can last milliseconds and overflow an rx ring once traffic resumes. With the
/// gate off (`idle_load_pps = 0`) the same pause is slept through at once.
#[test]
fn a_loaded_worker_keeps_polling_through_a_pause() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.pcap");
    const N: usize = 20_000;
    // Read from the file as fast as the worker polls: far above 100 kpps.
    let frames: Vec<Vec<u8>> = (0..N).map(|_| frame(B, A, 60)).collect();
    write_pcap(std::fs::File::create(&input).unwrap(), &frames).unwrap();
    let run = |load_pps: u32| -> (u64, u64, u64) {
        let sw = Vswitchd::start(&format!(
            "[switch]\nidle_load_pps = {load_pps}\nidle_load_hold_ms = 4000\n\n\
             [[port]]\nname = \"in\"\nnumber = 1\ndevargs = \"net_pcap0,rx_pcap={}\"\n\n\
             [[port]]\nname = \"out\"\nnumber = 2\ndevargs = \"net_null0,no-rx=1\"\n",
            input.display()
        ));
        let sent = std::time::Instant::now();
        wait_port(&sw, 2, "every frame forwarded", |c| c.tx_packets == N as u64);
        let before = worker_sleeps(&sw);
        std::thread::sleep(std::time::Duration::from_millis(800));
        let after_pause = worker_sleeps(&sw);
        assert!(sent.elapsed() < std::time::Duration::from_millis(3500), "test too slow to judge the hold");
        // Once the hold is over (4 s after the traffic), the worker sleeps again.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        let mut later = worker_sleeps(&sw);
        while later == after_pause && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(200));
            later = worker_sleeps(&sw);
        }
        let (status, log) = sw.stop();
        assert!(status.success(), "{log}");
        (before, after_pause, later)
    };
    let (before, after_pause, later) = run(100_000);
    assert_eq!(after_pause, before, "a loaded worker slept during the pause");
    assert!(later > after_pause, "back-off never resumed after the hold");
    let (before, after_pause, _) = run(0);
    assert!(after_pause > before, "without the load gate the pause is slept through");
}

/// Sleeps of an idle worker on ports without rx interrupts grow with the pause: deep sleeps
/// (`idle_deep_sleep_us`) after `idle_deep_after_ms`, long ones (`idle_long_sleep_us`)
/// after `idle_long_after_ms`. Counted as sleeps per second of wall time: a worker that
/// only takes 5 ms sleeps cannot take more than 200 in a second.
#[test]
fn an_idle_worker_sleeps_longer_the_longer_it_idles() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let sw = idle_after_frames(
        dir.path(),
        10,
        "idle_deep_after_ms = 100\nidle_deep_sleep_us = 500\nidle_long_after_ms = 1500\nidle_long_sleep_us = 5000",
    );
    let last_packet = std::time::Instant::now();
    let rate = |from_ms: u64, to_ms: u64| -> f64 {
        let at = |ms: u64| {
            std::thread::sleep(
                (last_packet + std::time::Duration::from_millis(ms))
                    .saturating_duration_since(std::time::Instant::now()),
            );
            (worker_sleeps(&sw), std::time::Instant::now())
        };
        let (a, ta) = at(from_ms);
        let (b, tb) = at(to_ms);
        assert!(ta.duration_since(last_packet) < std::time::Duration::from_millis(from_ms + 300), "test too slow");
        (b - a) as f64 / (tb - ta).as_secs_f64()
    };
    // Deep idle: 500 µs sleeps, some 2,000 a second less the time each wake-up takes.
    let deep = rate(300, 1300);
    // Long idle: 5 ms sleeps (the doubling from 500 µs reaches 5 ms within 8 ms).
    let long = rate(2000, 3000);
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
    eprintln!("sleeps per second: deep idle {deep:.0}, long idle {long:.0}");
    assert!(deep > 400.0, "deep idle took {deep:.0} sleeps a second: were they long sleeps already?");
    assert!(long <= 202.0, "long idle took {long:.0} sleeps a second: more than 5 ms sleeps allow");
    assert!(long > 50.0, "long idle took {long:.0} sleeps a second: is the worker sleeping at all?");
}

/// A worker on ports without rx interrupts sleeps when idle, here 10 ms at a time; a flow
/// change rings its doorbell, which ends the sleep: each change is live on return, and
/// the sleeps it ended are counted (`sleep_wakes`). Before, a change waited for the sleep
/// to end by itself.
#[test]
fn a_flow_change_ends_an_idle_workers_sleep() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let sw = idle_after_frames(
        dir.path(),
        1,
        "idle_deep_after_ms = 50\nidle_deep_sleep_us = 10000\nidle_long_after_ms = 60\nidle_long_sleep_us = 10000",
    );
    // Long idle: 10 ms sleeps. (The first sleep may have ended at once, on the rings of
    // the start's changes.)
    std::thread::sleep(std::time::Duration::from_millis(500));
    let before = worker(&sw);
    assert_eq!(before.idle_state, "sleeping", "{before:?}");
    const CHANGES: u64 = 10;
    rt().block_on(async {
        let mut c = pb::flow_service_client::FlowServiceClient::new(sw.channel().await);
        for i in 0..CHANGES {
            // Each after the worker went back to sleep: its doorbell must end that sleep.
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
            let r = c
                .add_flows(pb::AddFlowsRequest {
                    texts: vec![format!("priority={},ip,nw_dst=10.9.0.{i},actions=drop", i + 1)],
                    wait: true,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert!(r.live && r.added == 1, "{r:?}");
        }
    });
    let after = worker(&sw);
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
    // Each change rings once, and a ring ends the sleep it meets or the next one: one sleep
    // ended per change, or fewer where two rings were taken together.
    let ended = after.sleep_wakes - before.sleep_wakes;
    assert!((CHANGES / 2..=CHANGES).contains(&ended), "{ended} sleeps ended by {CHANGES} changes: {after:?}");
    assert_eq!(after.interrupt_waits, 0, "a pcap port has no rx interrupts: {after:?}");
}

/// Exact destination-MAC rules, one mask, each sending to one port: table 0 runs as a flat
/// direct table. Bursts of hits leave whole when all go to one port, else packet by packet;
/// bursts with a miss or a malformed frame take the general path. Every frame must reach
/// the port of its best rule, in order, byte for byte, and be counted on that rule; frames
/// no rule matches take the table miss; a rule back out the ingress port drops.
#[test]
fn exact_mac_rules_send_each_frame_to_its_rules_port() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mac = |i: u8| [2, 0, 0, 0, 1, i];
    // 0..40 to port 2, 40..50 to port 3, 50 back to port 1 (the ingress); 99 has no rule.
    let port_of = |i: u8| match i {
        0..40 => Some(2),
        40..50 => Some(3),
        50 => Some(1),
        _ => None,
    };
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for n in 0..320u32 {
        frames.push(frame(mac((n % 40) as u8), A, 60 + (n % 7) as usize)); // all to port 2
    }
    for n in 0..96u32 {
        // Hits only, to both ports and the ingress.
        let i = if n % 16 == 5 { 50 } else { (n * 3 % 50) as u8 };
        let mut f = frame(mac(i), A, 60);
        f[20..24].copy_from_slice(&n.to_be_bytes());
        frames.push(f);
    }
    for n in 0..150u32 {
        let i = if n % 10 == 9 { 99 } else { (n * 7 % 50) as u8 };
        let mut f = frame(mac(i), A, 60);
        f[20..24].copy_from_slice(&n.to_be_bytes());
        frames.push(f);
    }
    let runts = 3;
    // In the last segment, so the all-hit bursts before it (frames 320..416, three bursts
    // of 32) take the direct path with nothing falling back before them.
    for at in [430, 480, 530] {
        frames.insert(at, frame(mac(1), A, 60)[..10].to_vec());
    }
    let port_of_frame = |f: &[u8]| if f.len() < 14 { None } else { port_of(f[5]) };
    let want =
        |port: u32| -> Vec<Vec<u8>> { frames.iter().filter(|f| port_of_frame(f) == Some(port)).cloned().collect() };

    let mut config = String::from("[[table]]\nid = 0\nmiss = \"drop\"\n\n");
    for i in 0..=50u8 {
        let m = mac(i);
        let dst = format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]);
        config += &format!("[[flow]]\nrule = \"priority=100,dl_dst={dst},actions=output:{}\"\n\n", port_of(i).unwrap());
        if i == 0 {
            // Shadowed: same match, lower priority.
            config += &format!("[[flow]]\nrule = \"priority=50,dl_dst={dst},actions=output:3\"\n\n");
        }
    }
    let (sw, out2, out3) = three_pcap_ports(dir.path(), &frames, &config);
    let (to2, to3, hairpins) = (want(2), want(3), want(1).len());
    let missed = frames.iter().filter(|f| f.len() >= 14 && port_of(f[5]).is_none()).count();
    assert_eq!((missed, hairpins), (15, 6));
    wait_port(&sw, 3, "port 3 frames sent", |c| c.tx_packets == to3.len() as u64);
    wait_port(&sw, 2, "port 2 frames sent", |c| c.tx_packets == to2.len() as u64);
    wait_port(&sw, 1, "misses, hairpins and runts dropped", |c| c.rx_dropped == (missed + hairpins + runts) as u64);
    let drops = String::from_utf8_lossy(&sw.ctl(&["--json", "show-drops"]).stdout).into_owned();
    let drops: serde_json::Value = serde_json::from_str(&drops).unwrap();
    let count =
        |reason: &str| {
            drops["drops"].as_array().unwrap().iter().find(|d| d["reason"] == reason).map_or(0, |d| {
                d["packets"].as_str().map(|p| p.parse::<u64>().unwrap()).or(d["packets"].as_u64()).unwrap()
            })
        };
    assert_eq!(count("table_miss"), missed as u64, "{drops}");
    assert_eq!(count("destination_on_ingress_port"), hairpins as u64, "{drops}");
    assert_eq!(count("frame_too_short"), runts as u64, "{drops}");

    let flows = String::from_utf8_lossy(&sw.ctl(&["dump-flows"]).stdout).into_owned();
    for i in [0u8, 7, 39, 40, 49, 50] {
        let m = mac(i);
        let dst = format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5]);
        let line = flows
            .lines()
            .find(|l| l.contains(&format!("priority=100,dl_dst={dst}")))
            .unwrap_or_else(|| panic!("no flow for {dst} in\n{flows}"));
        let n: usize = line.split("n_packets=").nth(1).unwrap().split(',').next().unwrap().parse().unwrap();
        assert_eq!(n, frames.iter().filter(|f| f.len() >= 14 && f[..6] == m).count(), "{line}");
    }
    let shadowed = flows.lines().find(|l| l.contains("priority=50")).expect("shadowed flow listed");
    assert!(shadowed.contains("n_packets=0,"), "{shadowed}");

    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
    assert_eq!(read_pcap(&out2), to2, "port 2: its frames, in order, byte for byte");
    assert_eq!(read_pcap(&out3), to3, "port 3: its frames, in order, byte for byte");
}

/// A 64-byte IPv4/UDP frame from A to B.
fn udp_frame(nw_dst: [u8; 4], src_port: u16, dst_port: u16, marker: u32) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&B);
    f.extend_from_slice(&A);
    f.extend_from_slice(&[0x08, 0x00]);
    let ip_len = 50u16; // 20 IP + 8 UDP + 22 payload: 64 bytes in all
    f.extend_from_slice(&[0x45, 0, (ip_len >> 8) as u8, ip_len as u8, 0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&[10, 0, 0, 1]);
    f.extend_from_slice(&nw_dst);
    f.extend_from_slice(&src_port.to_be_bytes());
    f.extend_from_slice(&dst_port.to_be_bytes());
    f.extend_from_slice(&[0, 30, 0, 0]);
    f.extend_from_slice(&marker.to_be_bytes());
    f.resize(64, 0);
    f
}

/// With rules over several masks the exact-match cache is on. In a burst where one run of
/// packets hits the cache and the next run misses it, each run must still take its own
/// path: the cached flow to port 2, the new ones to port 3.
#[test]
fn cache_hits_and_misses_in_one_burst_keep_their_own_paths() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut marker = 0u32;
    let mut next = || {
        marker += 1;
        marker
    };
    // Flow A (to 10.0.0.2, port 2) fills the cache, then bursts of 16 A and 16 of a new
    // flow B_k (to 10.9.9.9, port 3, a new source port each time).
    for _ in 0..64 {
        frames.push(udp_frame([10, 0, 0, 2], 1000, 2000, next()));
    }
    for k in 0..20u16 {
        for _ in 0..16 {
            frames.push(udp_frame([10, 0, 0, 2], 1000, 2000, next()));
        }
        for _ in 0..16 {
            frames.push(udp_frame([10, 9, 9, 9], 3000 + k, 2000, next()));
        }
    }
    let to2: Vec<Vec<u8>> = frames.iter().filter(|f| f[30..34] == [10, 0, 0, 2]).cloned().collect();
    let to3: Vec<Vec<u8>> = frames.iter().filter(|f| f[30..34] == [10, 9, 9, 9]).cloned().collect();

    // Three masks (dl_dst; nw_dst; tp_dst): lookups would probe several subtables, so the
    // worker puts its exact-match cache in front of them.
    let (sw, out2, out3) = three_pcap_ports(
        dir.path(),
        &frames,
        "[[table]]\nid = 0\nmiss = \"drop\"\n\n\
         [[flow]]\nrule = \"priority=10,dl_dst=02:00:00:00:00:0b,actions=output:2\"\n\n\
         [[flow]]\nrule = \"priority=20,ip,nw_dst=10.9.9.9,actions=output:3\"\n\n\
         [[flow]]\nrule = \"priority=30,udp,tp_dst=7,actions=drop\"\n\n",
    );
    wait_port(&sw, 1, "all frames received", |c| c.rx_packets == frames.len() as u64);
    wait_port(&sw, 3, "port 3 frames sent", |c| c.tx_packets >= to3.len() as u64);
    wait_port(&sw, 2, "port 2 frames sent", |c| c.tx_packets >= to2.len() as u64);
    let workers = String::from_utf8_lossy(&sw.ctl(&["--json", "list-workers"]).stdout).into_owned();
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
    let (got2, got3) = (read_pcap(&out2), read_pcap(&out3));
    assert_eq!(got3.len(), to3.len(), "frames at port 3 (flow A leaking there?)");
    assert_eq!(got2, to2, "port 2: flow A, in order");
    assert_eq!(got3, to3, "port 3: the B flows, in order");
    let hits: u64 = workers
        .split("\"emc_hits\":")
        .skip(1)
        .map(|s| s.split(|c: char| !c.is_ascii_digit()).find(|t| !t.is_empty()).unwrap_or("0").parse::<u64>().unwrap())
        .sum();
    assert!(hits > 0, "the exact-match cache was not used: {workers}");
}

/// Bursts of frames to a VXLAN tunnel where some frames are too long once encapsulated:
/// those are dropped and counted, every other frame leaves the uplink encapsulated (outer
/// lengths and checksum right, the inner frame intact), in order. A burst that all fits is
/// encapsulated in place and handed over whole; in one with a long frame, the frames ahead
/// of it are encapsulated in place, the rest one at a time: all must agree.
#[test]
fn tunnel_bursts_with_oversized_frames_encapsulate_the_rest_in_order() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut frames: Vec<Vec<u8>> = Vec::new();
    // The first 40 all fit: the first burst (the PMD reads 32) goes out whole; oversized
    // frames in the later ones send the rest of their burst down the per-packet path.
    for i in 0..104u32 {
        let mut f = udp_frame([10, 0, 0, 2], 1000 + i as u16, 2000, i);
        if i >= 40 && i % 7 == 3 {
            // 1480 bytes: 1530 once encapsulated, over the uplink's 1500-byte MTU.
            f.resize(1480, 0x5a);
            f[16..18].copy_from_slice(&(1480u16 - 14).to_be_bytes());
        }
        frames.push(f);
    }
    let fits: Vec<Vec<u8>> = frames.iter().filter(|f| f.len() == 64).cloned().collect();
    let too_long = (frames.len() - fits.len()) as u64;
    let input = dir.path().join("in.pcap");
    write_pcap(std::fs::File::create(&input).unwrap(), &frames).unwrap();
    let uplink = dir.path().join("uplink.pcap");
    let sw = Vswitchd::start(&format!(
        "[[table]]\nid = 0\nmiss = \"drop\"\n\n\
         [[flow]]\nrule = \"in_port=1,actions=output:10\"\n\n\
         [[tunnel]]\nname = \"vx0\"\nnumber = 10\nkind = \"vxlan\"\nuplink = \"up\"\n\
         remote_ip = \"172.31.0.2\"\nvni = 100\n\n\
         [[neighbor]]\nip = \"172.31.0.2\"\nmac = \"02:00:00:bb:00:02\"\n\n\
         [[port]]\nname = \"in\"\nnumber = 1\ndevargs = \"net_pcap0,rx_pcap={}\"\n\n\
         [[port]]\nname = \"up\"\nnumber = 2\ndevargs = \"net_pcap1,tx_pcap={}\"\nip = \"172.31.0.1/24\"\n",
        input.display(),
        uplink.display()
    ));
    wait_port(&sw, 1, "all frames received", |c| c.rx_packets == frames.len() as u64);
    wait_port(&sw, 2, "encapsulated frames sent", |c| c.tx_packets >= fits.len() as u64);
    let tunnel_drops = rt().block_on(async {
        let mut c = pb::tunnel_service_client::TunnelServiceClient::new(sw.channel().await);
        let tunnels = c.list_tunnels(pb::ListTunnelsRequest {}).await.unwrap().into_inner().tunnels;
        tunnels.into_iter().find(|t| t.spec.as_ref().unwrap().name == "vx0").expect("vx0 listed").drops
    });
    let uplink_mac = port(&sw, 2).mac;
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
    let mtu = tunnel_drops.iter().find(|d| d.reason == "tunnel_mtu_exceeded").map_or(0, |d| d.packets);
    assert_eq!(mtu, too_long, "drops on vx0: {tunnel_drops:?}");
    let mac: Vec<u8> = uplink_mac.split(':').map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
    let sent = read_pcap(&uplink);
    assert_eq!(sent.len(), fits.len(), "frames out of the uplink");
    for (k, (out, inner)) in sent.iter().zip(&fits).enumerate() {
        assert_eq!(out.len(), inner.len() + 50, "frame {k}: outer length");
        assert_eq!(&out[..6], &[2, 0, 0, 0xbb, 0, 2], "frame {k}: to the neighbor's MAC");
        assert_eq!(&out[6..12], &mac[..], "frame {k}: from the uplink's MAC");
        assert_eq!(&out[12..14], &[0x08, 0x00], "frame {k}: IPv4");
        assert_eq!(u16::from_be_bytes([out[16], out[17]]) as usize, out.len() - 14, "frame {k}: IP total length");
        let sum: u32 = out[14..34].chunks(2).map(|w| u16::from_be_bytes([w[0], w[1]]) as u32).sum();
        assert_eq!((sum & 0xffff) + (sum >> 16), 0xffff, "frame {k}: IP header checksum");
        assert_eq!(&out[26..34], &[172, 31, 0, 1, 172, 31, 0, 2], "frame {k}: VTEP addresses");
        assert!(u16::from_be_bytes([out[34], out[35]]) >= 49152, "frame {k}: UDP source port from the flow hash");
        assert_eq!(&out[36..38], &4789u16.to_be_bytes(), "frame {k}: VXLAN port");
        assert_eq!(u16::from_be_bytes([out[38], out[39]]) as usize, out.len() - 34, "frame {k}: UDP length");
        assert_eq!(&out[42..50], &[0x08, 0, 0, 0, 0, 0, 100, 0], "frame {k}: VXLAN header, VNI 100");
        assert_eq!(&out[50..], &inner[..], "frame {k}: the inner frame, in order and intact");
    }
}

/// `get-info` tells the memory the EAL holds now: exactly the hugepages the system lost to
/// the switch, fewer than the start-up check asked to be free (the EAL maps the pool and a
/// little at start, and more only as ports need it).
#[test]
fn info_reports_the_hugepages_the_eal_holds() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.pcap");
    write_pcap(std::fs::File::create(&input).unwrap(), &[frame(B, A, 60)]).unwrap();
    let free_before = free_hugepages();
    let sw = Vswitchd::start(&format!(
        "[[port]]\nname = \"in\"\nnumber = 1\ndevargs = \"net_pcap0,rx_pcap={}\"\n\n\
         [[port]]\nname = \"out\"\nnumber = 2\ndevargs = \"net_null0,no-rx=1\"\n",
        input.display()
    ));
    wait_port(&sw, 2, "the frame forwarded", |c| c.tx_packets == 1);
    let m = info(&sw).memory.unwrap();
    let taken = free_before - free_hugepages();
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
    eprintln!("EAL holds {} bytes; {taken} hugepages taken; the check asked for {}", m.mapped_bytes, m.hugepages);
    assert_eq!(m.hugepage_size, 2 << 20);
    assert_eq!(m.mapped_bytes, taken * m.hugepage_size, "mapped bytes are the hugepages the system lost");
    assert!(m.mapped_bytes >= m.pool_bytes, "the pool is in them: {m:?}");
    assert!(taken < m.hugepages, "fewer taken than checked for at start: {m:?}");
}
