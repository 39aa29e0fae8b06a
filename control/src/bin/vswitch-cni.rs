//! vswitch-cni: a CNI plugin (spec 1.0.0) that attaches a pod to the running switch.
//!
//! ADD creates a veth pair, moves one end into the pod's network namespace under
//! `CNI_IFNAME`, gets addresses from the IPAM plugin the config names (e.g. `host-local`),
//! configures them, and adds the host end to the switch as a `system:` port (a kernel
//! interface on packet sockets, which takes none of DPDK's 32 port slots) through gRPC.
//! DEL undoes all of it and succeeds when there is nothing left to undo. CHECK verifies the
//! port, both ends and the addresses. Errors are CNI error JSON on stdout, exit status 1.
//!
//! Network configuration (stdin):
//! ```json
//! { "cniVersion": "1.0.0", "name": "vswitch", "type": "vswitch-cni",
//!   "socket": "/run/vswitch/vswitchd.sock", "mtu": 1500, "portNumberBase": 1000,
//!   "ipam": { "type": "host-local", "subnet": "10.88.0.0/24" } }
//! ```

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use serde::Deserialize;
use serde_json::{json, Value};
use vswitch_proto::v1 as pb;

const SUPPORTED: &[&str] = &["0.4.0", "1.0.0"];

/// CNI error codes (spec, "Error").
mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// Plugin-specific: the switch refused the port.
    pub const SWITCH_REFUSED: u32 = 100;
    /// Plugin-specific: CHECK found a difference.
    pub const CHECK_FAILED: u32 = 101;
}

struct CniError {
    code: u32,
    msg: String,
    details: String,
}

impl CniError {
    fn new(code: u32, msg: impl Into<String>, details: impl Into<String>) -> CniError {
        CniError { code, msg: msg.into(), details: details.into() }
    }
}

type Result<T> = std::result::Result<T, CniError>;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetConf {
    cni_version: String,
    name: String,
    #[serde(default = "default_socket")]
    socket: String,
    #[serde(default)]
    mtu: Option<u16>,
    #[serde(default = "default_base")]
    port_number_base: u32,
    #[serde(default)]
    prev_result: Option<Value>,
}

fn default_socket() -> String {
    vswitch_proto::DEFAULT_SOCKET.to_string()
}
fn default_base() -> u32 {
    1000
}

/// The CNI_* environment of one invocation.
struct Env {
    command: String,
    container_id: String,
    netns: String,
    ifname: String,
    path: Vec<PathBuf>,
}

impl Env {
    fn read(vars: &BTreeMap<String, String>) -> Result<Env> {
        let get = |k: &str| vars.get(k).cloned().unwrap_or_default();
        let command = get("CNI_COMMAND");
        let env = Env {
            container_id: get("CNI_CONTAINERID"),
            netns: get("CNI_NETNS"),
            ifname: get("CNI_IFNAME"),
            path: std::env::split_paths(&get("CNI_PATH")).collect(),
            command,
        };
        let required: &[(&str, &str)] = match env.command.as_str() {
            "ADD" | "CHECK" => {
                &[("CNI_CONTAINERID", &env.container_id), ("CNI_NETNS", &env.netns), ("CNI_IFNAME", &env.ifname)]
            }
            "DEL" => &[("CNI_CONTAINERID", &env.container_id), ("CNI_IFNAME", &env.ifname)],
            "VERSION" => &[],
            "" => return Err(CniError::new(code::INVALID_ENV, "CNI_COMMAND is not set", "")),
            other => return Err(CniError::new(code::INVALID_ENV, format!("unknown CNI_COMMAND '{other}'"), "")),
        };
        for (name, value) in required {
            if value.is_empty() {
                return Err(CniError::new(code::INVALID_ENV, format!("{name} is not set"), ""));
            }
        }
        if env.ifname.len() > 15 || env.ifname.contains('/') || env.ifname.contains(char::is_whitespace) {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_IFNAME '{}' is not an interface name", env.ifname),
                "",
            ));
        }
        Ok(env)
    }

    /// The host end of the veth (also the switch's port name): stable for a container and
    /// interface, so DEL finds what ADD made. 15 characters at most (IFNAMSIZ).
    fn host_name(&self) -> String {
        // FNV-1a: small and stable across versions (std's hasher is not).
        let mut h: u64 = 0xcbf29ce484222325;
        for b in self.container_id.bytes().chain([0]).chain(self.ifname.bytes()) {
            h = (h ^ b as u64).wrapping_mul(0x100000001b3);
        }
        format!("vs{:012x}", h & 0xffff_ffff_ffff)
    }
}

fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| CniError::new(code::IO_FAILURE, format!("cannot run {cmd}: {e}"), ""))?;
    if !out.status.success() {
        return Err(CniError::new(
            code::IO_FAILURE,
            format!("{cmd} {} failed", args.join(" ")),
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `ip ARGS` inside the network namespace at `netns`.
fn ip_in(netns: &str, args: &[&str]) -> Result<String> {
    let mut full = vec![format!("--net={netns}"), "ip".to_string()];
    full.extend(args.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = full.iter().map(String::as_str).collect();
    run("nsenter", &refs)
}

fn link_exists(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn mac_of(netns: Option<&str>, name: &str) -> String {
    let args = ["-j", "link", "show", "dev", name];
    let out = match netns {
        Some(ns) => ip_in(ns, &args),
        None => run("ip", &args),
    };
    out.ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok())
        .and_then(|v| v[0]["address"].as_str().map(String::from))
        .unwrap_or_default()
}

/// Runs the IPAM plugin `ipam.type` with `command`, the same environment and `conf`.
fn ipam(env: &Env, command: &str, conf: &Value) -> Result<Option<Value>> {
    let Some(kind) = conf["ipam"]["type"].as_str() else {
        return Ok(None);
    };
    if kind.contains('/') {
        return Err(CniError::new(code::INVALID_CONFIG, format!("ipam.type '{kind}' must be a plugin name"), ""));
    }
    let plugin = env.path.iter().map(|d| d.join(kind)).find(|p| p.is_file()).ok_or_else(|| {
        CniError::new(code::INVALID_CONFIG, format!("IPAM plugin '{kind}' not found in CNI_PATH"), "")
    })?;
    let mut child = Command::new(&plugin)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| CniError::new(code::IO_FAILURE, format!("cannot run {}: {e}", plugin.display()), ""))?;
    child.stdin.take().expect("piped").write_all(conf.to_string().as_bytes()).ok();
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::new(code::IO_FAILURE, format!("IPAM plugin {kind}: {e}"), ""))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // Pass the IPAM plugin's own error on.
        let v: Value = serde_json::from_str(&stdout).unwrap_or(Value::Null);
        return Err(CniError::new(
            v["code"].as_u64().unwrap_or(code::IO_FAILURE as u64) as u32,
            format!("IPAM plugin {kind} ({command}): {}", v["msg"].as_str().unwrap_or(stdout.trim())),
            v["details"].as_str().unwrap_or(&String::from_utf8_lossy(&out.stderr)).to_string(),
        ));
    }
    if command != "ADD" {
        return Ok(None);
    }
    serde_json::from_str(&stdout).map(Some).map_err(|e| {
        CniError::new(code::DECODE, format!("IPAM plugin {kind} printed no result: {e}"), stdout.to_string())
    })
}

async fn connect(socket: &str) -> Result<tonic::transport::Channel> {
    vswitch_proto::client::connect(socket).await.map_err(|e| CniError::new(code::TRY_AGAIN_LATER, e, ""))
}

fn refused(what: &str, s: tonic::Status) -> CniError {
    let code = if s.code() == tonic::Code::Unavailable { code::TRY_AGAIN_LATER } else { code::SWITCH_REFUSED };
    CniError::new(code, format!("{what}: {}", s.message()), format!("{:?}", s.code()))
}

/// Adds `host` to the switch as a `system:` port with the first free number from `base`.
async fn add_port(conf: &NetConf, host: &str) -> Result<pb::Port> {
    use pb::port_service_client::PortServiceClient;
    let mut client = PortServiceClient::new(connect(&conf.socket).await?);
    let taken: Vec<u32> = client
        .list_ports(pb::ListPortsRequest {})
        .await
        .map_err(|s| refused("list ports", s))?
        .into_inner()
        .ports
        .iter()
        .map(|p| p.number)
        .collect();
    let mut number = conf.port_number_base;
    // Another ADD may take a number between the listing and the add: try the next one.
    for _ in 0..64 {
        while taken.contains(&number) {
            number += 1;
        }
        let spec = pb::PortSpec {
            name: host.to_string(),
            number,
            devargs: format!("system:{host}"),
            mtu: conf.mtu.unwrap_or(0) as u32,
            ..Default::default()
        };
        match client.add_port(pb::AddPortRequest { port: Some(spec) }).await {
            Ok(r) => return Ok(r.into_inner()),
            Err(s) if s.code() == tonic::Code::AlreadyExists && s.message().starts_with("port.number") => number += 1,
            Err(s) => return Err(refused("add port", s)),
        }
    }
    Err(CniError::new(code::TRY_AGAIN_LATER, "no free port number found", ""))
}

async fn remove_port(conf: &NetConf, host: &str) -> Result<()> {
    use pb::port_service_client::PortServiceClient;
    let mut client = PortServiceClient::new(connect(&conf.socket).await?);
    match client.remove_port(pb::RemovePortRequest { name: host.to_string() }).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
        Err(s) => Err(refused("remove port", s)),
    }
}

/// The pod side: veth into the namespace, renamed, addressed, routed.
fn plumb(env: &Env, conf: &NetConf, host: &str, result: &Value) -> Result<()> {
    let peer = format!("vp{}", &host[2..]);
    let mut add = vec!["link", "add", host, "type", "veth", "peer", "name", &peer];
    let mtu = conf.mtu.map(|m| m.to_string());
    if let Some(m) = &mtu {
        add.extend(["mtu", m.as_str()]);
    }
    run("ip", &add)?;
    run("ip", &["link", "set", &peer, "netns", &env.netns])?;
    ip_in(&env.netns, &["link", "set", &peer, "name", &env.ifname])?;
    for ip in result["ips"].as_array().into_iter().flatten() {
        if let Some(addr) = ip["address"].as_str() {
            ip_in(&env.netns, &["addr", "add", addr, "dev", &env.ifname])?;
        }
    }
    ip_in(&env.netns, &["link", "set", &env.ifname, "up"])?;
    // The switch's packet sockets hand frames on as they are: the pod must fill in its
    // own checksums (a partial one would never be completed), or TCP stalls.
    let ethtool = Command::new("nsenter")
        .args([&format!("--net={}", env.netns), "ethtool", "-K", &env.ifname, "tx", "off"])
        .output();
    if !ethtool.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "vswitch-cni: warning: could not turn tx checksum offload off on {} (is ethtool installed?)",
            env.ifname
        );
    }
    let gateway = result["ips"].as_array().into_iter().flatten().find_map(|ip| ip["gateway"].as_str());
    for route in result["routes"].as_array().into_iter().flatten() {
        let Some(dst) = route["dst"].as_str() else { continue };
        let mut args = vec!["route", "add", dst];
        if let Some(gw) = route["gw"].as_str().or(gateway) {
            args.extend(["via", gw]);
        }
        args.extend(["dev", env.ifname.as_str()]);
        ip_in(&env.netns, &args)?;
    }
    // No IPv6 autoconfiguration noise from the host end.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{host}/disable_ipv6"), "1");
    run("ip", &["link", "set", host, "up"])?;
    Ok(())
}

async fn cmd_add(env: &Env, conf: &NetConf, raw: &Value) -> Result<Value> {
    let host = env.host_name();
    if link_exists(&host) {
        return Err(CniError::new(
            code::INVALID_CONFIG,
            format!("{host} exists already: container {} has interface {} attached", env.container_id, env.ifname),
            "",
        ));
    }
    let mut result = ipam(env, "ADD", raw)?.unwrap_or_else(|| json!({"ips": [], "routes": []}));
    let undo = |host: &str| {
        if link_exists(host) {
            let _ = run("ip", &["link", "del", host]);
        }
        let _ = ipam(env, "DEL", raw);
    };
    if let Err(e) = plumb(env, conf, &host, &result) {
        undo(&host);
        return Err(e);
    }
    if let Err(e) = add_port(conf, &host).await {
        undo(&host);
        return Err(e);
    }
    let interfaces = json!([
        {"name": host, "mac": mac_of(None, &host)},
        {"name": env.ifname, "mac": mac_of(Some(&env.netns), &env.ifname), "sandbox": env.netns},
    ]);
    for ip in result["ips"].as_array_mut().into_iter().flatten() {
        ip["interface"] = json!(1);
        if conf.cni_version == "0.4.0" {
            ip["version"] = json!(if ip["address"].as_str().unwrap_or("").contains(':') { "6" } else { "4" });
        }
    }
    let mut out = json!({
        "cniVersion": conf.cni_version,
        "interfaces": interfaces,
        "ips": result["ips"].take(),
    });
    for key in ["routes", "dns"] {
        if !result[key].is_null() {
            out[key] = result[key].take();
        }
    }
    Ok(out)
}

async fn cmd_del(env: &Env, conf: &NetConf, raw: &Value) -> Result<()> {
    let host = env.host_name();
    // A switch that is gone took its ports with it: nothing to remove there.
    match remove_port(conf, &host).await {
        Err(e) if e.code == code::TRY_AGAIN_LATER => eprintln!("vswitch-cni: {}; port not removed", e.msg),
        other => other?,
    }
    if link_exists(&host) {
        run("ip", &["link", "del", &host])?;
    }
    ipam(env, "DEL", raw)?;
    Ok(())
}

async fn cmd_check(env: &Env, conf: &NetConf, raw: &Value) -> Result<()> {
    let host = env.host_name();
    let failed = |msg: String| CniError::new(code::CHECK_FAILED, msg, "");
    let prev =
        conf.prev_result.as_ref().ok_or_else(|| CniError::new(code::INVALID_CONFIG, "CHECK needs prevResult", ""))?;
    use pb::port_service_client::PortServiceClient;
    let mut client = PortServiceClient::new(connect(&conf.socket).await?);
    let port = pb::PortRef { port: Some(pb::port_ref::Port::Name(host.clone())) };
    client
        .get_port(pb::GetPortRequest { port: Some(port) })
        .await
        .map_err(|s| failed(format!("the switch has no port {host}: {}", s.message())))?;
    if !link_exists(&host) {
        return Err(failed(format!("host interface {host} is missing")));
    }
    let addrs = ip_in(&env.netns, &["-j", "addr", "show", "dev", &env.ifname])
        .map_err(|e| failed(format!("{} in {}: {}", env.ifname, env.netns, e.details)))?;
    for ip in prev["ips"].as_array().into_iter().flatten() {
        let want = ip["address"].as_str().unwrap_or("");
        let (addr, len) = want.split_once('/').unwrap_or((want, ""));
        if !addrs.contains(&format!("\"local\":\"{addr}\",\"prefixlen\":{len}")) {
            return Err(failed(format!("{} lacks address {want}", env.ifname)));
        }
    }
    ipam(env, "CHECK", raw)?;
    Ok(())
}

async fn dispatch(vars: &BTreeMap<String, String>, stdin: &str) -> Result<Option<Value>> {
    let env = Env::read(vars)?;
    if env.command == "VERSION" {
        return Ok(Some(json!({"cniVersion": "1.0.0", "supportedVersions": SUPPORTED})));
    }
    let raw: Value = serde_json::from_str(stdin)
        .map_err(|e| CniError::new(code::DECODE, format!("network configuration is not JSON: {e}"), ""))?;
    let conf: NetConf = serde_json::from_value(raw.clone())
        .map_err(|e| CniError::new(code::INVALID_CONFIG, format!("network configuration: {e}"), ""))?;
    if !SUPPORTED.contains(&conf.cni_version.as_str()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!("cniVersion {} is not supported", conf.cni_version),
            format!("supported: {}", SUPPORTED.join(", ")),
        ));
    }
    if conf.name.is_empty() {
        return Err(CniError::new(code::INVALID_CONFIG, "network configuration: name is empty", ""));
    }
    if env.command != "DEL" && !Path::new(&env.netns).exists() {
        return Err(CniError::new(3, format!("network namespace {} does not exist", env.netns), ""));
    }
    match env.command.as_str() {
        "ADD" => cmd_add(&env, &conf, &raw).await.map(Some),
        "DEL" => cmd_del(&env, &conf, &raw).await.map(|_| None),
        _ => cmd_check(&env, &conf, &raw).await.map(|_| None),
    }
}

fn main() -> ExitCode {
    let vars: BTreeMap<String, String> = std::env::vars().collect();
    // Every command gets a configuration on stdin (VERSION: just its cniVersion); read it
    // all, so a runtime writing it never meets a closed pipe.
    let mut stdin = String::new();
    let _ = std::io::stdin().read_to_string(&mut stdin);
    let version = serde_json::from_str::<Value>(&stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(String::from))
        .filter(|v| SUPPORTED.contains(&v.as_str()))
        .unwrap_or_else(|| "1.0.0".into());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(dispatch(&vars, &stdin)) {
        Ok(out) => {
            if let Some(v) = out {
                println!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let v = json!({"cniVersion": version, "code": e.code, "msg": e.msg, "details": e.details});
            println!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
            ExitCode::FAILURE
        }
    }
}
