//! Test harness: hosts in network namespaces on veth pairs, and a real `vswitchd` whose ports
//! are af_packet (or other) DPDK vdevs on the switch side of those pairs.
//!
//! Everything a test creates is named after the test process (pid plus a counter) and is
//! removed on drop, also when the test fails. The DPDK tests run one at a time: see
//! `.config/nextest.toml` (and `serial()` for plain `cargo test`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tonic::transport::Channel;

pub const VSWITCHD: &str = env!("CARGO_BIN_EXE_vswitchd");
pub const VSWITCHCTL: &str = env!("CARGO_BIN_EXE_vswitchctl");
/// Core of the switch's worker in tests; the control plane stays on core 0.
pub const WORKER_CORE: usize = 1;

static SERIAL: Mutex<()> = Mutex::new(());
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Serialises DPDK tests inside one test binary (nextest runs each test in its own process
/// and serialises through a test group; this covers plain `cargo test`).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Fails the test with a clear message when not root: namespaces and DPDK need it.
pub fn require_root() {
    assert!(nix::unistd::geteuid().is_root(), "this test creates network namespaces and runs DPDK: run it as root");
}

/// A short name unique to this process and call, for interfaces (15-char limit), namespaces
/// and DPDK file prefixes.
pub fn unique(tag: &str) -> String {
    format!("{tag}{}{}", std::process::id() % 100_000, COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Runs a command and fails the test if it does not succeed.
pub fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn run_quiet(cmd: &str, args: &[&str]) {
    let _ = Command::new(cmd).args(args).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// One host: a namespace with `eth0`, whose peer (`veth`) stays in the root namespace for
/// the switch to attach to.
pub struct Host {
    pub ns: String,
    pub veth: String,
    pub ip: Ipv4Addr,
    pub mac: String,
}

/// Hosts 1..=n on one subnet, each on its own veth pair. Removed on drop.
pub struct Topology {
    pub id: String,
    pub hosts: Vec<Host>,
    /// Third octet of the hosts' 10.x.0.0/24 subnet, distinct per topology.
    pub subnet: u8,
}

impl Topology {
    pub fn new(n: usize) -> Topology {
        require_root();
        let id = unique("vt");
        let subnet = (std::process::id() % 200) as u8 + 10;
        let mut topo = Topology { id: id.clone(), hosts: Vec::new(), subnet };
        for i in 1..=n {
            let ns = format!("{id}-h{i}");
            let veth = format!("{id}h{i}");
            let mac = format!("02:00:00:{subnet:02x}:00:{i:02x}");
            let ip = Ipv4Addr::new(10, subnet, 0, i as u8);
            run("ip", &["netns", "add", &ns]);
            // Push the host now, so drop removes it even if a later step fails.
            topo.hosts.push(Host { ns: ns.clone(), veth: veth.clone(), ip, mac: mac.clone() });
            run("ip", &["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns]);
            // No IPv6 on either end: no router solicitations or MLD reports, so every frame
            // the switch sees is one a test sent.
            run("sysctl", &["-qw", &format!("net.ipv6.conf.{veth}.disable_ipv6=1")]);
            run("ip", &["link", "set", &veth, "up"]);
            let ns_run = |args: &[&str]| {
                let mut full = vec!["netns", "exec", &ns];
                full.extend_from_slice(args);
                run("ip", &full)
            };
            ns_run(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
            ns_run(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
            ns_run(&["ip", "link", "set", "eth0", "address", &mac]);
            ns_run(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            ns_run(&["ip", "link", "set", "lo", "up"]);
            ns_run(&["ip", "link", "set", "eth0", "up"]);
            // TCP through an af_packet PMD needs checksums filled in by the sender.
            ns_run(&["ethtool", "-K", "eth0", "tx", "off"]);
        }
        topo
    }

    /// `[[port]]` tables attaching host i as port number i, name "h{i}", via af_packet.
    pub fn port_config(&self) -> String {
        self.hosts
            .iter()
            .enumerate()
            .map(|(i, h)| {
                format!(
                    "[[port]]\nname = \"h{n}\"\nnumber = {n}\ndevargs = \"net_af_packet{n},iface={veth}\"\n\n",
                    n = i + 1,
                    veth = h.veth
                )
            })
            .collect()
    }

    /// `[[port]]` tables attaching host i as port number i, name "h{i}", as a kernel
    /// interface on packet sockets (`system:`), not a DPDK port.
    pub fn system_port_config(&self) -> String {
        (1..=self.hosts.len()).map(|i| self.system_port_table(i)).collect()
    }

    /// The `system:` `[[port]]` table of host `i`.
    pub fn system_port_table(&self, i: usize) -> String {
        format!("[[port]]\nname = \"h{i}\"\nnumber = {i}\ndevargs = \"system:{}\"\n\n", self.host(i).veth)
    }

    /// Host `i` (1-based).
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i - 1]
    }

    /// Runs a command inside host `i`'s namespace.
    pub fn exec(&self, i: usize, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", self.host(i).ns.as_str()];
        full.extend_from_slice(args);
        Command::new("ip").args(&full).output().expect("ip netns exec")
    }

    /// Like `exec`, failing the test on a non-zero exit.
    pub fn exec_ok(&self, i: usize, args: &[&str]) -> Output {
        let out = self.exec(i, args);
        assert!(
            out.status.success(),
            "in {}: {} failed: {}{}",
            self.host(i).ns,
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Pings host `to` from host `from`; true if replies came back.
    pub fn ping(&self, from: usize, to: usize, count: u32) -> bool {
        let ip = self.host(to).ip.to_string();
        self.exec(from, &["ping", "-c", &count.to_string(), "-i", "0.2", "-W", "2", &ip]).status.success()
    }

    /// Path of host `i`'s network namespace, for `setns`.
    pub fn netns_path(&self, i: usize) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.host(i).ns))
    }

    /// Sends `count` raw frames from host `from` to `dst_mac`, carrying `marker` (hex).
    pub fn send_frames(&self, from: usize, dst_mac: &str, marker: &str, length: usize, count: usize) {
        self.send_frames_vlan(from, dst_mac, marker, length, count, None)
    }

    /// [`Topology::send_frames`] with an 802.1Q tag when `vlan` is given.
    pub fn send_frames_vlan(
        &self,
        from: usize,
        dst_mac: &str,
        marker: &str,
        length: usize,
        count: usize,
        vlan: Option<u16>,
    ) {
        let script = helper("frames.py");
        let (length, count) = (length.to_string(), count.to_string());
        let vlan = vlan.map(|v| v.to_string());
        let mut args = vec!["python3", &script, "send", "--iface", "eth0", "--dst", dst_mac, "--src"];
        args.extend([self.host(from).mac.as_str(), "--marker", marker, "--length", &length, "--count", &count]);
        if let Some(v) = &vlan {
            args.extend(["--vlan", v.as_str()]);
        }
        self.exec_ok(from, &args);
    }

    /// Starts counting frames that carry `marker` arriving at host `on`, for `seconds`.
    pub fn sniff(&self, on: usize, marker: &str, seconds: f64) -> Sniffer {
        self.sniff_vlan(on, marker, seconds, None)
    }

    /// [`Topology::sniff`] counting only frames tagged `vlan` ("none": untagged ones).
    pub fn sniff_vlan(&self, on: usize, marker: &str, seconds: f64, vlan: Option<&str>) -> Sniffer {
        match vlan {
            Some(v) => self.sniff_with(on, marker, seconds, &["--vlan", v]),
            None => self.sniff_with(on, marker, seconds, &[]),
        }
    }

    /// [`Topology::sniff`] with more of `frames.py sniff`'s options.
    pub fn sniff_with(&self, on: usize, marker: &str, seconds: f64, options: &[&str]) -> Sniffer {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.host(on).ns, "python3", &helper("frames.py"), "sniff"]).args([
            "--iface",
            "eth0",
            "--marker",
            marker,
            "--seconds",
            &seconds.to_string(),
        ]);
        cmd.args(options);
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("start sniffer");
        let mut out = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        out.read_line(&mut line).expect("sniffer output");
        assert_eq!(line.trim(), "ready", "sniffer did not start");
        Sniffer { child, out }
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for h in &self.hosts {
            run_quiet("ip", &["netns", "del", &h.ns]);
            // Deleting the namespace deletes eth0 and with it the peer; this covers a
            // half-built host.
            run_quiet("ip", &["link", "del", &h.veth]);
        }
    }
}

/// A running frame counter (see [`Topology::sniff`]).
pub struct Sniffer {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Sniffer {
    /// Waits for the sniffing window to end; the number of matching frames seen.
    pub fn count(mut self) -> usize {
        let mut rest = String::new();
        self.out.read_to_string(&mut rest).expect("sniffer output");
        let status = self.child.wait().expect("sniffer exit");
        assert!(status.success(), "sniffer failed");
        rest.trim().parse().unwrap_or_else(|_| panic!("sniffer printed {rest:?}"))
    }
}

/// A plain HTTP/1.1 GET; returns (status, content type, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str, accept: Option<&str>) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    std::io::Write::write_fmt(
        &mut s,
        format_args!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"),
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").expect("http response");
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status");
    let content_type = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-type:").map(|v| v.trim().to_string()))
        .unwrap_or_default();
    // Chunked bodies: take the chunks' data.
    let body =
        if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(body) } else { body.into() };
    (status, content_type, body)
}

pub fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// A command's stderr as text.
pub fn stderr_text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Sends VLAN 100 frames from host 1 to host 2's MAC, which the switch knows only in VLAN 0
/// (host 2 speaks untagged first): they flood to hosts 2 and 3, tag intact.
pub fn assert_vlan_frames_flood_tagged(topo: &Topology) {
    topo.send_frames(2, "ff:ff:ff:ff:ff:ff", "beef0002", 60, 1);
    let s2 = topo.sniff_vlan(2, "5ca1ab01", 1.5, Some("100"));
    let s3 = topo.sniff_vlan(3, "5ca1ab01", 1.5, Some("100"));
    topo.send_frames_vlan(1, &topo.host(2).mac, "5ca1ab01", 64, 10, Some(100));
    assert_eq!(s2.count(), 10, "h2 got the VLAN 100 frames with their tag");
    assert_eq!(s3.count(), 10, "unknown in VLAN 100: flooded to h3, tagged");
}

/// Path of a helper script in tests/helpers.
pub fn helper(name: &str) -> String {
    format!("{}/tests/helpers/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A `vswitchd` process with its own config, socket and DPDK file prefix. Stopped with
/// SIGINT on drop (SIGKILL if it does not exit).
pub struct Vswitchd {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub prefix: String,
    pub log: PathBuf,
}

/// The config around `body` (ports, tunables): test EAL settings, a private socket, and
/// `control_extra` lines in the [control] table.
pub fn test_config(prefix: &str, socket: &Path, control_extra: &str, body: &str) -> String {
    format!(
        "[eal]\nmain_core = 0\nfile_prefix = \"{prefix}\"\n\n[control]\nsocket = \"{}\"\n{control_extra}\n\n[[worker]]\ncore = {WORKER_CORE}\n\n{body}",
        socket.display()
    )
}

impl Vswitchd {
    /// Starts vswitchd with `body` inside the standard test config; waits until its API
    /// answers.
    pub fn start(body: &str) -> Vswitchd {
        Self::start_with_control("", body)
    }

    /// [`Vswitchd::start`] with extra lines for the [control] table.
    pub fn start_with_control(control_extra: &str, body: &str) -> Vswitchd {
        let dir = tempfile::tempdir().expect("temp dir");
        let prefix = unique("vst");
        let socket = dir.path().join("vswitchd.sock");
        let config = dir.path().join("vswitchd.toml");
        std::fs::write(&config, test_config(&prefix, &socket, control_extra, body)).expect("write config");
        Self::start_with_file(dir, &config, socket, prefix)
    }

    /// Starts vswitchd on a config file written by the caller in `dir`.
    pub fn start_with_file(dir: tempfile::TempDir, config: &Path, socket: PathBuf, prefix: String) -> Vswitchd {
        Self::start_with_command(dir, Command::new(VSWITCHD).arg("--config").arg(config), socket, prefix)
    }

    /// Starts `command` (vswitchd with its arguments and environment); logs go to `dir`.
    pub fn start_with_command(
        dir: tempfile::TempDir,
        command: &mut Command,
        socket: PathBuf,
        prefix: String,
    ) -> Vswitchd {
        let log = dir.path().join("vswitchd.log");
        let logfile = std::fs::File::create(&log).expect("log file");
        let child = command.stdout(logfile.try_clone().expect("dup")).stderr(logfile).spawn().expect("spawn vswitchd");
        let mut v = Vswitchd { child: Some(child), dir, socket, prefix, log };
        v.wait_ready();
        v
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::fs::read_to_string(&self.log).unwrap_or_default().contains("vswitchd: running")
                && std::os::unix::net::UnixStream::connect(&self.socket).is_ok()
            {
                return;
            }
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().expect("wait")) {
                panic!("vswitchd exited during start ({status}):\n{}", self.log_text());
            }
            assert!(Instant::now() < deadline, "vswitchd did not start in 30 s:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// A gRPC channel to the switch.
    pub async fn channel(&self) -> Channel {
        control::client::connect(self.socket.to_str().expect("utf-8 path")).await.expect("connect to vswitchd")
    }

    /// Runs vswitchctl against this switch.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new(VSWITCHCTL).arg("--server").arg(&self.socket).args(args).output().expect("run vswitchctl")
    }

    /// `list-ports` as JSON objects.
    pub fn ports_json(&self) -> Vec<serde_json::Value> {
        let out = self.ctl(&["--json", "list-ports"]);
        assert!(out.status.success(), "{}", stderr_text(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["ports"].as_array().cloned().unwrap_or_default()
    }

    /// Sends `signal` and waits for the exit (30 s at most); returns status and full log.
    pub fn stop_with(mut self, signal: nix::sys::signal::Signal) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal vswitchd");
        let status = wait_timeout(&mut child, Duration::from_secs(30)).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("vswitchd did not exit within 30 s of {signal}:\n{}", self.log_text())
        });
        (status, self.log_text())
    }

    pub fn stop(self) -> (ExitStatus, String) {
        self.stop_with(nix::sys::signal::Signal::SIGINT)
    }
}

impl Drop for Vswitchd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
            if wait_timeout(&mut child, Duration::from_secs(15)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().expect("wait") {
            return Some(s);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Files DPDK could leave behind for a file prefix: hugepage files and the runtime dir.
pub fn dpdk_leftovers(prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/dev/hugepages") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(prefix) {
                found.push(format!("/dev/hugepages/{name}"));
            }
        }
    }
    let run_dir = format!("/var/run/dpdk/{prefix}");
    if Path::new(&run_dir).exists() {
        found.push(run_dir);
    }
    found
}

/// Free 2 MiB hugepages right now.
pub fn free_hugepages() -> u64 {
    std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Runs `f` on a thread inside network namespace `ns_path` and returns its result.
pub fn in_netns<T: Send + 'static>(
    ns_path: PathBuf,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&ns_path).expect("open netns");
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// A tokio runtime for gRPC calls from synchronous tests.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

/// Sends `count` UDP datagrams of `size` bytes (each numbered, the rest a pattern) from
/// namespace `client_ns` to a receiver in `server_ns` bound to `server`, 1 ms apart. Returns
/// how many distinct datagrams arrived intact. The receiving kernel drops a datagram whose
/// checksum is wrong, so this counts only those a checksum let through.
pub fn udp_datagrams(
    client_ns: PathBuf,
    server_ns: PathBuf,
    server: std::net::SocketAddrV4,
    count: u16,
    size: usize,
) -> usize {
    use std::net::UdpSocket;
    let datagram = move |i: u16| -> Vec<u8> {
        let mut d: Vec<u8> = (0..size).map(|b| (b as u8).wrapping_mul(31).wrapping_add(i as u8)).collect();
        d[..2].copy_from_slice(&i.to_be_bytes());
        d
    };
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let receiver = in_netns(server_ns, move || {
        let sock = UdpSocket::bind(server).expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        ready_tx.send(()).unwrap();
        let mut seen = vec![false; count as usize];
        let mut buf = vec![0u8; size + 1];
        while let Ok(n) = sock.recv(&mut buf) {
            let i = u16::from_be_bytes([buf[0], buf[1]]);
            if n == size && i < count && buf[..n] == datagram(i)[..] {
                seen[i as usize] = true;
            }
            if seen.iter().all(|&s| s) {
                break;
            }
        }
        seen.iter().filter(|&&s| s).count()
    });
    ready_rx.recv().unwrap();
    in_netns(client_ns, move || {
        let sock = UdpSocket::bind("0.0.0.0:0").expect("bind");
        for i in 0..count {
            sock.send_to(&datagram(i), server).expect("send");
            std::thread::sleep(Duration::from_millis(1));
        }
    })
    .join()
    .expect("sender");
    receiver.join().expect("receiver")
}

/// Sends `size` bytes of reproducible pseudo-random data over TCP from a client in namespace
/// `client_ns` to a server in `server_ns` listening on `server`. Returns whether every byte
/// arrived intact (length and SHA-256) and the number of bytes received.
pub fn tcp_transfer(
    client_ns: PathBuf,
    server_ns: PathBuf,
    server: std::net::SocketAddrV4,
    size: usize,
) -> (bool, usize) {
    use sha2::{Digest, Sha256};
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    // Random-looking but reproducible data (xorshift), so a reordering or corruption shows.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let sent_digest = Sha256::digest(&data);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server_thread = in_netns(server_ns, move || {
        let listener = TcpListener::bind(server).expect("bind");
        ready_tx.send(()).unwrap();
        let (mut conn, _) = listener.accept().expect("accept");
        conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut got = Vec::new();
        let _ = conn.read_to_end(&mut got);
        got
    });
    ready_rx.recv().unwrap();
    let client = in_netns(client_ns, move || {
        let mut s = TcpStream::connect_timeout(&server.into(), Duration::from_secs(10)).expect("connect");
        s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(&data).expect("write");
    });
    client.join().expect("client");
    let received = server_thread.join().expect("server");
    (received.len() == size && Sha256::digest(&received) == sent_digest, received.len())
}
