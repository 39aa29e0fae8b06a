//! vswitch-cni invoked exactly as a container runtime invokes a CNI plugin (CNI_* variables,
//! network configuration on stdin, a network namespace path), with the reference
//! `host-local` IPAM plugin from Debian's containernetworking-plugins.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{run, serial, unique, Vswitchd};
use serde_json::{json, Value};

const CNI: &str = env!("CARGO_BIN_EXE_vswitch-cni");
const CNI_PATH: &str = "/usr/lib/cni";

/// A "pod": a network namespace, removed on drop.
struct Pod {
    ns: String,
    id: String,
}

impl Pod {
    fn new(tag: &str) -> Pod {
        let ns = unique(tag);
        run("ip", &["netns", "add", &ns]);
        run("ip", &["netns", "exec", &ns, "ip", "link", "set", "lo", "up"]);
        Pod { id: format!("{ns}-0123456789abcdef"), ns }
    }

    fn netns(&self) -> String {
        format!("/var/run/netns/{}", self.ns)
    }

    fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", &self.ns]).args(args).output().unwrap()
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).output();
    }
}

fn conf(sw: &Vswitchd, data_dir: &Path, subnet: u8) -> Value {
    json!({
        "cniVersion": "1.0.0",
        "name": "vswitch-test",
        "type": "vswitch-cni",
        "socket": sw.socket,
        "portNumberBase": 100,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": format!("10.{subnet}.7.0/24"), "gateway": format!("10.{subnet}.7.1")}]],
            "routes": [{"dst": format!("10.{subnet}.0.0/16")}],
            "dataDir": data_dir,
        }
    })
}

/// Runs the plugin as a runtime does; returns (exit status success, stdout JSON or Null).
fn cni(command: &str, pod: Option<&Pod>, ifname: &str, conf: &Value) -> (bool, Value) {
    cni_raw(command, pod, ifname, &conf.to_string())
}

fn cni_raw(command: &str, pod: Option<&Pod>, ifname: &str, stdin: &str) -> (bool, Value) {
    let mut c = Command::new(CNI);
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("CNI_COMMAND", command)
        .env("CNI_IFNAME", ifname)
        .env("CNI_PATH", CNI_PATH)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = pod {
        c.env("CNI_CONTAINERID", &p.id).env("CNI_NETNS", p.netns());
    }
    let mut child = c.spawn().expect("run vswitch-cni");
    // A plugin that fails early may not read it all; its answer is what counts.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    let out = child.wait_with_output().unwrap();
    let v = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    if !out.status.success() {
        eprintln!("{command}: {v}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    (out.status.success(), v)
}

fn port_names(sw: &Vswitchd) -> Vec<String> {
    let v: Value = serde_json::from_slice(&sw.ctl(&["--json", "list-ports"]).stdout).unwrap();
    v["ports"].as_array().cloned().unwrap_or_default().iter().map(|p| p["name"].as_str().unwrap().to_string()).collect()
}

fn link_exists(name: &str) -> bool {
    Command::new("ip").args(["link", "show", "dev", name]).output().unwrap().status.success()
}

#[test]
fn pods_attached_by_the_plugin_talk_through_the_switch() {
    let _g = serial();
    assert!(Path::new(CNI_PATH).join("host-local").exists(), "containernetworking-plugins is not installed");
    let sw = Vswitchd::start("[switch]\nspare_ports = 4\n");
    let ipam_dir = tempfile::tempdir().unwrap();
    let subnet = (std::process::id() % 200) as u8 + 20;
    let conf = conf(&sw, ipam_dir.path(), subnet);
    let (a, b) = (Pod::new("cnia"), Pod::new("cnib"));

    let (ok, version) = cni("VERSION", None, "eth0", &json!({"cniVersion": "1.0.0"}));
    assert!(ok);
    assert_eq!(version["cniVersion"], "1.0.0");
    assert!(version["supportedVersions"].as_array().unwrap().contains(&json!("1.0.0")));

    let (ok, ra) = cni("ADD", Some(&a), "eth0", &conf);
    assert!(ok, "ADD a: {ra}\n{}", sw.log_text());
    let (ok, rb) = cni("ADD", Some(&b), "net1", &conf);
    assert!(ok, "ADD b: {rb}");
    // A CNI 1.0.0 result: host and pod interfaces, addresses from host-local on the pod side.
    assert_eq!(ra["cniVersion"], "1.0.0");
    let host_a = ra["interfaces"][0]["name"].as_str().unwrap().to_string();
    assert_eq!(ra["interfaces"][1]["name"], "eth0");
    assert_eq!(ra["interfaces"][1]["sandbox"], a.netns());
    assert_eq!(ra["ips"][0]["interface"], 1);
    assert_eq!(ra["ips"][0]["gateway"], format!("10.{subnet}.7.1"));
    assert_eq!(rb["interfaces"][1]["name"], "net1");
    let ip_b = rb["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    assert!(ra["interfaces"][1]["mac"].as_str().unwrap().len() == 17);

    // The pod side is named as asked and addressed; the host side is a port of the switch.
    let addr = String::from_utf8_lossy(&a.exec(&["ip", "-4", "addr", "show", "dev", "eth0"]).stdout).into_owned();
    assert!(addr.contains(ra["ips"][0]["address"].as_str().unwrap()), "{addr}");
    let routes = String::from_utf8_lossy(&a.exec(&["ip", "route"]).stdout).into_owned();
    assert!(routes.contains(&format!("10.{subnet}.0.0/16 via 10.{subnet}.7.1")), "{routes}");
    let ports = port_names(&sw);
    assert!(ports.contains(&host_a), "{ports:?}");
    assert_eq!(ports.len(), 2);

    let ping = a.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", &ip_b]);
    assert!(ping.status.success(), "ping a -> b failed:\n{}", String::from_utf8_lossy(&ping.stdout));

    // CHECK agrees with what ADD made.
    let mut check = conf.clone();
    check["prevResult"] = ra.clone();
    let (ok, out) = cni("CHECK", Some(&a), "eth0", &check);
    assert!(ok, "CHECK: {out}");

    // DEL removes the port, the veth and the address; a second DEL succeeds.
    let (ok, out) = cni("DEL", Some(&a), "eth0", &conf);
    assert!(ok, "DEL: {out}");
    assert!(!port_names(&sw).contains(&host_a));
    assert!(!link_exists(&host_a), "the host end {host_a} survived DEL");
    let leased: Vec<String> = std::fs::read_dir(ipam_dir.path().join("vswitch-test"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !leased.iter().any(|f| Some(f.as_str()) == ra["ips"][0]["address"].as_str().unwrap().split('/').next()),
        "{leased:?}"
    );
    let (ok, out) = cni("DEL", Some(&a), "eth0", &conf);
    assert!(ok, "second DEL: {out}");
    // CHECK now fails: the port is gone.
    let (ok, out) = cni("CHECK", Some(&a), "eth0", &check);
    assert!(!ok);
    assert_eq!(out["code"], 101, "{out}");

    let (ok, _) = cni("DEL", Some(&b), "net1", &conf);
    assert!(ok);
    assert!(port_names(&sw).is_empty());
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn plugin_errors_are_cni_error_json_with_the_right_codes() {
    let _g = serial();
    let sw = Vswitchd::start("[switch]\nspare_ports = 2\n");
    let ipam_dir = tempfile::tempdir().unwrap();
    let conf = conf(&sw, ipam_dir.path(), 19);
    let pod = Pod::new("cnie");

    // Missing CNI_NETNS (and container id): invalid environment, 4.
    let (ok, out) = cni("ADD", None, "eth0", &conf);
    assert!(!ok);
    assert_eq!(out["code"], 4, "{out}");
    assert!(out["msg"].as_str().unwrap().contains("CNI_CONTAINERID is not set"), "{out}");
    // Unsupported version: 1.
    let mut old = conf.clone();
    old["cniVersion"] = json!("0.1.0");
    let (ok, out) = cni("ADD", Some(&pod), "eth0", &old);
    assert!(!ok);
    assert_eq!(out["code"], 1, "{out}");
    // Not JSON: 6. Bad field: 7. Unknown IPAM plugin: 7.
    let (ok, out) = cni_raw("ADD", Some(&pod), "eth0", "{not json");
    assert!(!ok);
    assert_eq!(out["code"], 6, "{out}");
    let mut bad = conf.clone();
    bad["portNumberBase"] = json!("many");
    let (_, out) = cni("ADD", Some(&pod), "eth0", &bad);
    assert_eq!(out["code"], 7, "{out}");
    assert!(out["msg"].as_str().unwrap().contains("network configuration"), "{out}");
    let mut no_ipam = conf.clone();
    no_ipam["ipam"]["type"] = json!("no-such-ipam");
    let (_, out) = cni("ADD", Some(&pod), "eth0", &no_ipam);
    assert_eq!(out["code"], 7, "{out}");
    // A namespace that does not exist: 3 (unknown container).
    let ghost = Pod { ns: "no-such-netns-vs".into(), id: "ghost".into() };
    let (_, out) = cni("ADD", Some(&ghost), "eth0", &conf);
    assert_eq!(out["code"], 3, "{out}");
    std::mem::forget(ghost);
    // The switch refuses: an MTU its packet buffers cannot hold. Nothing is left behind.
    let (p1, p2, p3) = (Pod::new("cnif"), Pod::new("cnig"), Pod::new("cnih"));
    assert!(cni("ADD", Some(&p1), "eth0", &conf).0);
    assert!(cni("ADD", Some(&p2), "eth0", &conf).0);
    let mut jumbo = conf.clone();
    jumbo["mtu"] = json!(9000);
    let (ok, out) = cni("ADD", Some(&p3), "eth0", &jumbo);
    assert!(!ok);
    assert_eq!(out["code"], 100, "{out}");
    assert!(out["msg"].as_str().unwrap().contains("does not fit the packet pool"), "{out}");
    let links = String::from_utf8_lossy(&p3.exec(&["ip", "link"]).stdout).into_owned();
    assert!(!links.contains("eth0"), "a refused ADD left the pod interface:\n{links}");
    assert_eq!(port_names(&sw).len(), 2);
    for p in [&p1, &p2] {
        assert!(cni("DEL", Some(p), "eth0", &conf).0);
    }
    let (status, log) = sw.stop();
    assert!(status.success(), "{log}");
}
