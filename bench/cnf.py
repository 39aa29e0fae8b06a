#!/usr/bin/env python3
"""CNF Testbed style benchmark runner: this switch, OVS-DPDK (Debian's openvswitch-switch-dpdk)
and testpmd (io, the no-processing bound) on the same traffic from `tgen` over memif, the
same cores, in one run.

Per scenario and system: the highest rate with zero loss (binary search, as RFC 2544), the
rate when offered as much as the generator can send, latency p50/p99/p99.9/max at 10%, 50%
and 90% of the zero-loss rate, cycles per packet (every system's own count: TSC cycles of the
polls that received packets over the packets received, over every trial), CPU and RSS while
forwarding.
Per system: time from process start to the first forwarded packet (deployment), CPU and
RSS while idle, the latency of packets arriving 50 ms apart (the first packet after
idle), time for a 10,000-rule change under traffic (policy update, the median of three), and time to
attach N endpoints (veth pairs into namespaces, one API call each as a CNI plugin makes
them) until each pings through the switch (provisioning; 100 by default, each a kernel
interface on packet sockets: DPDK ports stop at 32 per process in Debian's DPDK). OVS-DPDK runs every scenario: L2 as 1,000 exact dl_dst flows, VXLAN
with its userspace tunnels (br-int and br-phy, as ../shared/peers does, in a network
namespace of its own). Writes JSON, a Markdown table (also printed) and an SVG chart.

  sudo bench/cnf.py                      # full run (about 25 minutes)
  sudo bench/cnf.py --smoke              # port-to-port on this switch and testpmd, short trials (CI)
  sudo bench/cnf.py --short              # every scenario and system, short trials (CI: both switches)
  sudo bench/cnf.py --scenarios p2p,l2 --systems vswitchd

Cores: the system under test forwards on core 1; tgen and control planes share core 0.
"""
import argparse
import json
import os
import platform
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")  # --bin-dir changes it
SUT_CORE = 1
GEN_CORE = 0
# The runner keeps itself on GEN_CORE; a system under test may use both cores (it pins its
# control plane to GEN_CORE and its forwarding thread to SUT_CORE).
SUT_CORES = ["taskset", "-c", f"{GEN_CORE},{SUT_CORE}"]

# Systems: this switch as configured by default (idle back-off), the same with busy polling
# (switch.idle_backoff = false, the latency knob), OVS-DPDK 3.1 (one PMD on the same core) and
# testpmd io.
SCENARIOS = {
    # name: (description, flows, tgen extra args)
    "p2p": ("port to port, 1 flow, one in_port rule", 1, []),
    "l2": ("L2 learning switch, 1,000 known MACs", 1000, []),
    "acl64k": ("64,000 exact nw_dst rules, 64,000 flows", 64000, []),
    "encap": ("VXLAN encap, 1,000 flows", 1000, []),
    "decap": ("VXLAN decap, 1,000 flows", 1000, ["--vxlan", "100"]),
    # Not a forwarding scenario: 10,000 flows of traffic dropped by table 0 until a
    # 10,000-rule change lets them through (policy update time).
    "policy": ("10,000-rule policy change under traffic", 10000, []),
}


OVS_VSWITCHD = "/usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk"


def memif(n, sock, role):
    # File sockets, not abstract ones: abstract names are per network namespace.
    return f"net_memif{n},role={role},socket={sock},socket-abstract=no,rsize=12"


def vhost_link(system):
    """Systems named *-vhost connect to the generator over vhost-user (the switch a vhost
    port, the generator virtio-user, as a container's DPDK app would be), the others over
    memif. vhost-user ports have rx interrupts, so an idle switch worker waits for them."""
    return system.endswith("-vhost")


def sut_port(system, n, sock, role):
    """Devargs of the system's port `n`; `role` says which side of the socket it is."""
    if vhost_link(system):
        return f"net_vhost{n},iface={sock}" + (",client=1" if role == "client" else "")
    return memif(n, sock, role)


def gen_port(system, n, sock, role):
    """Devargs of the generator's port facing the system's port `n`."""
    if vhost_link(system):
        # 4096 descriptors, as the memif rings (rsize=12): room for the same stalls.
        return f"net_virtio_user{n},path={sock},queue_size=4096" + (",server=1" if role == "server" else "")
    return memif(n, sock, role)


class Run:
    def __init__(self, args):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="vswitch-cnf-")
        self.procs = []
        self.system = None
        self.netns = []

    def path(self, name):
        return os.path.join(self.dir, name)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
        self.delete_netns()
        # DPDK's runtime directories of what this run started: OVS-DPDK, testpmd and a
        # killed process leave theirs behind.
        for tag in ("vscnf", "vsprov", "ovscnf", "tpcnf", "tgcnf"):
            shutil.rmtree(f"/var/run/dpdk/{tag}{os.getpid()}", ignore_errors=True)
        if os.environ.get("CNF_KEEP"):
            print(f"logs kept in {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- systems under test -------------------------------------------------------------
    def vswitchd_toml(self, prefix, switch, ports):
        """A vswitchd config: one worker on SUT_CORE, the API on sw.sock, `switch` lines in
        [switch], and `ports` as (name, number, devargs)."""
        body = (f'[eal]\nmain_core = {GEN_CORE}\nfile_prefix = "{prefix}{os.getpid()}"\n'
                f'[control]\nsocket = "{self.path("sw.sock")}"\nmetrics = "off"\n'
                f'[switch]\n{switch}\n[[worker]]\ncore = {SUT_CORE}\n')
        for name, number, devargs in ports:
            body += f'[[port]]\nname = "{name}"\nnumber = {number}\ndevargs = "{devargs}"\n'
        return body

    def wait_api(self):
        """Waits (30 s at most) until vswitchd's API socket exists."""
        for _ in range(300):
            if os.path.exists(self.path("sw.sock")):
                return
            time.sleep(0.1)

    def vswitchd_config(self, system, scenario, role):
        a, b = self.path("a.sock"), self.path("b.sock")
        busy_poll = system == "vswitchd-poll"
        # The pool as computed from the ports (switch.mbufs unset), as a user gets it.
        switch = f'idle_backoff = {"false" if busy_poll else "true"}'
        if not busy_poll and self.args.idle_cpu_resume_latency is not None:
            switch += f"\nidle_cpu_resume_latency_us = {self.args.idle_cpu_resume_latency}"
        body = self.vswitchd_toml("vscnf", switch,
                                  [("a", 1, sut_port(system, 0, a, role)), ("b", 2, sut_port(system, 1, b, role))])
        if scenario == "p2p":
            body += '[[flow]]\nrule = "in_port=1,actions=output:2"\n'
        elif scenario == "l2":
            out = subprocess.run([os.path.join(BIN, "pcapgen"), "--flows", "1000", "--out", self.path("l2.pcap"),
                                  "--static-macs-port", "b", "--static-macs-out", self.path("macs.toml")],
                                 check=True, capture_output=True)
            del out
            body += open(self.path("macs.toml")).read()
        elif scenario == "policy":
            subprocess.run([os.path.join(BIN, "rulegen"), "--kind", "nw-dst", "--flows", "10000",
                            "--out", self.path("policy.txt")], check=True, capture_output=True)
            body += '[[table]]\nid = 0\nmiss = "drop"\n'
        elif scenario == "acl64k":
            subprocess.run([os.path.join(BIN, "rulegen"), "--kind", "nw-dst", "--flows", "64000",
                            "--out", self.path("acl.txt")], check=True, capture_output=True)
            body += '[[table]]\nid = 0\nmiss = "drop"\n'
        elif scenario == "encap":
            body = body.replace('name = "b"\nnumber = 2\n', 'name = "b"\nnumber = 2\nip = "172.31.0.1/24"\n')
            body += ('[[tunnel]]\nname = "vx0"\nnumber = 10\nkind = "vxlan"\nuplink = "b"\n'
                     'remote_ip = "172.31.0.2"\nvni = 100\n'
                     '[[neighbor]]\nip = "172.31.0.2"\nmac = "02:00:00:bb:00:02"\n'
                     '[[flow]]\nrule = "in_port=1,actions=output:10"\n')
        elif scenario == "decap":
            body = body.replace('name = "a"\nnumber = 1\n', 'name = "a"\nnumber = 1\nip = "172.31.0.1/24"\n')
            body += ('[[tunnel]]\nname = "vx0"\nnumber = 10\nkind = "vxlan"\nuplink = "a"\n'
                     'remote_ip = "172.31.0.2"\nvni = 100\n'
                     '[[flow]]\nrule = "in_port=10,actions=output:2"\n')
        return body

    def ovs_rules(self, scenario):
        """OVS flows equivalent to this switch's set-up of `scenario` (None: not comparable)."""
        if scenario == "p2p":
            return ["in_port=1,actions=output:2"]
        if scenario == "policy":
            return ["priority=0,actions=drop"]  # policy_update() adds the 10,000 rules
        gen = {"l2": ("dl-dst", "1000"), "acl64k": ("nw-dst", "64000")}.get(scenario)
        if gen is None:
            return None  # encap, decap: start_ovs_vxlan() sets up OVS's tunnel bridges
        out = self.path(f"ovs-{scenario}.txt")
        subprocess.run([os.path.join(BIN, "rulegen"), "--kind", gen[0], "--flows", gen[1], "--out", out],
                       check=True, capture_output=True)
        return ["@" + out]

    def ovs_daemons(self, log, netns=None):
        """ovsdb-server + OVS-DPDK with its PMD on the worker core and the rest on the
        generator's core, ovs-vswitchd in network namespace `netns` if given (its bridges'
        internal ports and addresses stay there). Returns (ovs-vswitchd's Popen, ovs-vsctl
        command, run directory)."""
        run = self.path("ovs")
        os.makedirs(run, exist_ok=True)
        db = os.path.join(run, "conf.db")
        if os.path.exists(db):
            os.remove(db)
        subprocess.run(["ovsdb-tool", "create", db, "/usr/share/openvswitch/vswitch.ovsschema"], check=True)
        sock = os.path.join(run, "db.sock")
        # Everything OVS writes (pid files, bridge sockets, logs) stays in the run directory.
        env = {**os.environ, "OVS_RUNDIR": run, "OVS_LOGDIR": run, "OVS_DBDIR": run}
        dbs = subprocess.Popen(["taskset", "-c", str(GEN_CORE), "ovsdb-server", db, f"--remote=punix:{sock}",
                                f"--unixctl={run}/ovsdb.ctl", "--no-chdir"], stdout=log, stderr=log, env=env)
        self.procs.append(dbs)
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        # A bounded wait: without a running ovs-vswitchd, ovs-vsctl would wait forever.
        vsctl = ["ovs-vsctl", "--timeout=60", f"--db=unix:{sock}"]
        subprocess.run(vsctl + ["--no-wait", "init"], check=True)
        subprocess.run(vsctl + ["--no-wait", "set", "Open_vSwitch", ".", "other_config:dpdk-init=true",
                                "other_config:dpdk-socket-mem=512", "other_config:dpdk-socket-limit=512",
                                f"other_config:dpdk-extra=--no-pci --file-prefix=ovscnf{os.getpid()}",
                                f"other_config:pmd-cpu-mask={1 << SUT_CORE:#x}"], check=True)
        in_ns = ["ip", "netns", "exec", netns] if netns else []
        # --mlockall as ovs-ctl (and Debian's service) starts it: every mapping is populated
        # when made, so its memif rings never fault, and its RSS counts all of it.
        p = subprocess.Popen(in_ns + ["taskset", "-c", str(GEN_CORE), OVS_VSWITCHD, f"unix:{sock}",
                                      f"--unixctl={run}/vswitchd.ctl", "--no-chdir", "--mlockall"],
                             stdout=log, stderr=log, env=env)
        return p, vsctl, run

    def start_ovs_vxlan(self, scenario, role, log):
        """OVS-DPDK's userspace VXLAN as in ../shared/peers: br-int (access port, vx0 with
        remote 172.31.0.2 and key 100) and br-phy (the uplink, address 172.31.0.1/24, MAC
        02:00:00:aa:00:01, in its own network namespace). encap: memif a on br-int, b the
        uplink; decap: a the uplink, b on br-int."""
        ns = f"cnfovs{os.getpid()}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        self.netns.append(ns)
        p, vsctl, run = self.ovs_daemons(log, netns=ns)
        a, b = self.path("a.sock"), self.path("b.sock")
        access, uplink = ((0, a, "a"), (1, b, "b")) if scenario == "encap" else ((1, b, "b"), (0, a, "a"))

        def dpdk_port(bridge, port, ofport):
            n, sock, name = port
            return ["--", "add-port", bridge, name, "--", "set", "Interface", name, "type=dpdk",
                    f"ofport_request={ofport}", f"options:dpdk-devargs={memif(n, sock, role)}"]
        subprocess.run(vsctl + ["add-br", "br-phy", "--", "set", "bridge", "br-phy", "datapath_type=netdev",
                                "other_config:hwaddr=02:00:00:aa:00:01"] + dpdk_port("br-phy", uplink, 2),
                       check=True, capture_output=True)
        subprocess.run(["ip", "-n", ns, "addr", "add", "172.31.0.1/24", "dev", "br-phy"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "br-phy", "up"], check=True)
        subprocess.run(vsctl + ["add-br", "br-int", "--", "set", "bridge", "br-int", "datapath_type=netdev"]
                       + dpdk_port("br-int", access, 1)
                       + ["--", "add-port", "br-int", "vx0", "--", "set", "Interface", "vx0", "type=vxlan",
                          "ofport_request=3", "options:remote_ip=172.31.0.2", "options:key=100"],
                       check=True, capture_output=True)
        appctl = ["ovs-appctl", "-t", f"{run}/vswitchd.ctl"]
        subprocess.run(appctl + ["tnl/arp/set", "br-phy", "172.31.0.2", "02:00:00:bb:00:02"], check=True,
                       capture_output=True)
        subprocess.run(appctl + ["ovs/route/add", "172.31.0.2/32", "br-phy"], capture_output=True)
        ofctl = lambda br, rule: subprocess.run(["ovs-ofctl", "add-flow", f"unix:{run}/{br}.mgmt", rule],
                                                check=True, capture_output=True)
        for br in ("br-int", "br-phy"):
            subprocess.run(["ovs-ofctl", "del-flows", f"unix:{run}/{br}.mgmt"], check=True, capture_output=True)
        if scenario == "encap":
            ofctl("br-int", "in_port=1,actions=output:3")
            ofctl("br-phy", "in_port=LOCAL,actions=output:2")
        else:
            ofctl("br-phy", "actions=NORMAL")  # to LOCAL, where the tunnel is popped
            ofctl("br-int", "in_port=3,actions=output:1")
        return p

    def start_ovs(self, scenario, role, log):
        """OVS-DPDK with bridge br0 holding the two memif ports (OpenFlow 1 and 2) and the
        scenario's flows. Returns ovs-vswitchd's Popen."""
        p, vsctl, run = self.ovs_daemons(log)
        a, b = self.path("a.sock"), self.path("b.sock")
        subprocess.run(vsctl + ["add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev",
                                "--", "add-port", "br0", "a", "--", "set", "Interface", "a", "type=dpdk",
                                "ofport_request=1", f"options:dpdk-devargs={memif(0, a, role)}",
                                "--", "add-port", "br0", "b", "--", "set", "Interface", "b", "type=dpdk",
                                "ofport_request=2", f"options:dpdk-devargs={memif(1, b, role)}"],
                       check=True, capture_output=True)
        ofctl = ["ovs-ofctl", "del-flows", f"unix:{run}/br0.mgmt"]
        subprocess.run(ofctl, check=True, capture_output=True)
        for r in self.ovs_rules(scenario):
            if r.startswith("@"):
                cmd = ["ovs-ofctl", "--bundle", "add-flows", f"unix:{run}/br0.mgmt", r[1:]]
            else:
                cmd = ["ovs-ofctl", "add-flow", f"unix:{run}/br0.mgmt", r]
            subprocess.run(cmd, check=True, capture_output=True)
        return p

    def start_system(self, system, scenario, role="server"):
        """Starts the system under test; its memif ports take `role` (the generator the other)."""
        a, b = self.path("a.sock"), self.path("b.sock")
        log = open(self.path(f"{system}-{scenario}.log"), "w")
        self.system = system
        if system == "ovs-dpdk" and scenario in ("encap", "decap"):
            p = self.start_ovs_vxlan(scenario, role, log)
        elif system == "ovs-dpdk":
            p = self.start_ovs(scenario, role, log)
        elif system.startswith("vswitchd"):
            cfg = self.path("sw.toml")
            with open(cfg, "w") as f:
                f.write(self.vswitchd_config(system, scenario, role))
            p = subprocess.Popen(SUT_CORES + [os.path.join(BIN, "vswitchd"), "--config", cfg], stdout=log, stderr=log)
        else:
            p = subprocess.Popen(SUT_CORES + ["dpdk-testpmd", "-l", f"{GEN_CORE},{SUT_CORE}", "--no-pci", "--in-memory",
                                  "--file-prefix", f"tpcnf{os.getpid()}", "--vdev", sut_port(system, 0, a, role),
                                  "--vdev", sut_port(system, 1, b, role), "--", "--forward-mode=io", "--auto-start",
                                  "--stats-period", "3600", "--nb-cores", "1", "--record-core-cycles"],
                                 stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def after_start(self, system, scenario):
        """Loads what the config cannot hold (the 64k rules) once the API answers."""
        if not system.startswith("vswitchd"):
            return
        self.wait_api()
        if scenario == "acl64k":
            subprocess.run([os.path.join(BIN, "vswitchctl"), "--server", self.path("sw.sock"), "add-flows",
                            self.path("acl.txt")],
                           check=True, capture_output=True)

    def stop(self, p):
        for q in [p] + [q for q in self.procs if q is not p]:
            q.send_signal(signal.SIGINT if q is p else signal.SIGTERM)
            try:
                q.wait(20)
            except subprocess.TimeoutExpired:
                q.kill()
                q.wait()
        self.procs.clear()
        self.delete_netns()

    def delete_netns(self):
        for ns in self.netns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        self.netns.clear()

    # --- generator ----------------------------------------------------------------------
    def generator(self, scenario, role="client", first_only=False):
        """A tgen session: one process, one memif connection for every trial (DPDK 22.11's
        memif driver races with a polling thread when a peer leaves or connects: this switch
        guards against it, testpmd does not)."""
        flows = SCENARIOS[scenario][1]
        cmd = [os.path.join(BIN, "tgen"), "--tx", gen_port(self.system, 0, self.path("a.sock"), role),
               "--rx", gen_port(self.system, 1, self.path("b.sock"), role), "--core", str(GEN_CORE),
               "--file-prefix", f"tgcnf{os.getpid()}", "--flows", str(flows), "--serve"]
        if first_only:
            cmd += ["--first-only", "--rate", "0.1", "--seconds", "60"]
        cmd += SCENARIOS[scenario][2]
        if self.system == "ovs-dpdk":
            cmd += ["--rx-queues", "2"]  # OVS's PMD thread sends on tx queue 1 (queue 0 is its main thread's)
        return Generator(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=open(self.path("tgen.log"), "a"), text=True))


class Generator:
    def __init__(self, proc):
        self.proc = proc

    def result(self, timeout):
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise RuntimeError(f"tgen gave no result (exit status {self.proc.poll()})")
        return json.loads(line)

    def trial(self, rate, seconds, warmup):
        self.proc.stdin.write(f"{rate} {seconds} {warmup}\n")
        self.proc.stdin.flush()
        return self.result(seconds + warmup + 30)

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def isolate(cpu):
    """Moves every thread that may also run on other CPUs than `cpu` to `cpu` alone, as
    `isolcpus` or a housekeeping cpuset does in production: threads of other processes and
    unbound kernel threads then no longer land on the forwarding core while it sleeps (and
    preempt it for milliseconds once traffic is back). Kernel threads bound to a CPU stay.
    Returns what `restore_affinity` puts back."""
    saved = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in map(int, tids):
            try:
                allowed = os.sched_getaffinity(tid)
                if cpu in allowed and len(allowed) > 1:
                    os.sched_setaffinity(tid, {cpu})
                    saved[tid] = allowed
            except OSError:
                pass
    return saved


def restore_affinity(saved):
    for tid, allowed in saved.items():
        try:
            os.sched_setaffinity(tid, allowed)
        except OSError:
            pass


def thread_ticks(pid):
    """CPU time (user + system, clock ticks) of each thread of pid, by thread id."""
    ticks = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            f = open(f"/proc/{pid}/task/{tid}/stat").read().rsplit(")", 1)[1].split()
            ticks[tid] = int(f[11]) + int(f[12])
        except OSError:
            pass
    return ticks


def busiest_thread(pid):
    """The thread of pid with the most CPU time: the forwarding thread of a poll-mode system."""
    ticks = thread_ticks(pid)
    return max(ticks, key=ticks.get)


def preemptions(pid, tid):
    """Times thread tid lost its CPU to another task (involuntary context switches)."""
    try:
        for line in open(f"/proc/{pid}/task/{tid}/status"):
            if line.startswith("nonvoluntary_ctxt_switches"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def proc_cpu_seconds(pid):
    """CPU time of all threads of pid: the scheduler's run time in nanoseconds (schedstat),
    not clock ticks, which sample a thread that runs 20 µs at a time (an idle worker's
    wake-ups) by chance: 5 s of them moved idle figures by 20%."""
    total_ns = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            total_ns += int(open(f"/proc/{pid}/task/{tid}/schedstat").read().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    if total_ns == 0:
        return sum(thread_ticks(pid).values()) / os.sysconf("SC_CLK_TCK")
    return total_ns / 1e9


def rss_mib(pid, field="VmRSS"):
    """A memory figure of /proc/PID/status in MiB: VmRSS, or RssShmem (the part of it that
    is shared memory, such as memif regions mapped from the peer)."""
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_while(pid, seconds, action=None):
    """CPU (cores) used by pid over `seconds` (while `action` runs, if given)."""
    c0, t0 = proc_cpu_seconds(pid), time.monotonic()
    result = action() if action else time.sleep(seconds)
    return (proc_cpu_seconds(pid) - c0) / (time.monotonic() - t0), result


def clean(sock_dir):
    for s in ("a.sock", "b.sock"):
        try:
            os.remove(os.path.join(sock_dir, s))
        except FileNotFoundError:
            pass


def measure(run, system, scenario):
    args = run.args
    clean(run.dir)
    # The system under test is the memif server: each trial's generator connects to it.
    res = {"system": system, "scenario": scenario}
    p = run.start_system(system, scenario)
    run.after_start(system, scenario)
    time.sleep(1.0)
    gen = run.generator(scenario)
    trial, warm = args.trial, args.warmup
    top = gen.trial(0, trial, warm)
    # The forwarding thread has been busy since the first trial; how often others take its
    # core during the search says whether a zero-loss figure measures the system or them.
    fwd = busiest_thread(p.pid)
    pre0, t0 = preemptions(p.pid, fwd), time.monotonic()
    res["max_offered_mpps"] = top["offered_mpps"]
    res["max_received_mpps"] = top["received_mpps"]
    # Zero loss: binary search between 0 and what the generator could offer.
    # A rate passes when one of 1 + --retries trials loses nothing: this VM's host takes a
    # vCPU away for milliseconds now and then (steal time), which no system under test
    # survives at Mpps; a second loss at the same rate is the system's.
    lo, hi, best, retried = 0.0, top["offered_mpps"] * 1.02, None, 0
    for _ in range(args.steps):
        mid = (lo + hi) / 2
        for attempt in range(1 + args.retries):
            r = gen.trial(mid, trial, warm)
            if r["lost"] == 0 and r["tx_failed"] == 0:
                break
            retried += attempt < args.retries
        if r["lost"] == 0 and r["tx_failed"] == 0:
            lo, best = mid, r
        else:
            hi = mid
    res["zero_loss_retries"] = retried
    res["forwarding_thread_preemptions_per_s"] = round((preemptions(p.pid, fwd) - pre0) / (time.monotonic() - t0), 1)
    res["zero_loss_mpps"] = best["offered_mpps"] if best else 0.0
    zl = res["zero_loss_mpps"]
    res["latency_ns"] = {}
    if zl > 0:
        for pct in (10, 50, 90):
            rate = zl * pct / 100
            # RSS while forwarding: read halfway through the 90% trial (after its warm-up and
            # tgen's 100 ms drain of it).
            rss = threading.Timer(warm + 0.1 + trial / 2,
                                  lambda: res.update(rss_mib=round(rss_mib(p.pid), 1), rss_read_at="90%"))
            rss.daemon = True
            if pct == 90:
                rss.start()
            try:
                cpu, r = cpu_while(p.pid, trial, lambda: gen.trial(rate, trial, warm))
            finally:
                rss.cancel()
            res["latency_ns"][f"{pct}%"] = r["latency_ns"]
            if pct == 90:
                res["cpu_cores_at_90pct"] = round(cpu, 3)
    if "rss_mib" not in res:
        # No trial forwarded without loss: read after the search instead.
        res["rss_mib"], res["rss_read_at"] = round(rss_mib(p.pid), 1), "after the search"
    # Cycles per packet from each system's own count: TSC cycles of the polls that
    # received packets, over the packets received, over every trial of the run (full
    # load, the search, the latency trials).
    if system.startswith("vswitchd"):
        w = subprocess.run([os.path.join(BIN, "vswitchctl"), "--server", run.path("sw.sock"), "--json",
                            "list-workers"], capture_output=True, text=True).stdout
        wk = json.loads(w)["workers"][0]
        pk = int(wk.get("rx_packets", 0))
        res["cycles_per_packet"] = round(int(wk.get("busy_cycles", 0)) / pk, 1) if pk else None
    elif system == "ovs-dpdk":
        stats = subprocess.run(["ovs-appctl", "-t", os.path.join(run.path("ovs"), "vswitchd.ctl"),
                                "dpif-netdev/pmd-stats-show"], capture_output=True, text=True).stdout
        res["cycles_per_packet"] = ovs_cycles_per_packet(stats)
    # The switch goes first: the generator's disconnect must not meet a polling switch.
    run.stop(p)
    gen.close()
    if system.startswith("testpmd"):
        # testpmd prints its figure (--record-core-cycles) as it stops.
        with open(run.path(f"{system}-{scenario}.log")) as log:
            res["cycles_per_packet"] = testpmd_cycles_per_packet(log.read())
    return res


def ovs_cycles_per_packet(pmd_stats):
    """OVS-DPDK's `dpif-netdev/pmd-stats-show`: "avg processing cycles per packet" is the
    cycles of PMD iterations that received packets over the packets received, summed over
    the PMD threads (one here). The main thread's section (non-PMD ports) has no cycles
    and is left out."""
    cycles = packets = 0
    in_pmd = False
    for line in pmd_stats.splitlines():
        if line and not line[0].isspace():
            in_pmd = line.startswith("pmd thread")
        elif in_pmd and (m := re.match(r"\s*processing cycles: (\d+)", line)):
            cycles += int(m.group(1))
        elif in_pmd and (m := re.match(r"\s*packets received: (\d+)", line)):
            packets += int(m.group(1))
    return round(cycles / packets, 1) if cycles and packets else None


def testpmd_cycles_per_packet(log):
    """testpmd's `CPU cycles/packet=N (total cycles=C / total io packets=P)` line, printed
    at stop with --record-core-cycles. Its io engine counts the cycles of each stream's
    bursts that received packets (the rest return before the count): not the empty poll
    of the other port in the same round, which this switch and OVS-DPDK count, so its
    figure is a little lower by construction."""
    m = re.search(r"CPU cycles/packet=([0-9.]+) \(\w+ cycles=(\d+) / total \w+ packets=(\d+)\)", log)
    if not m or int(m.group(3)) == 0:
        return None
    return round(int(m.group(2)) / int(m.group(3)), 1)


POLICY_FIGURES = ("policy_update_seconds", "policy_first_flow_live_seconds", "policy_every_flow_live_seconds",
                  "received_after_change_fraction")


def policy_update(run, system, trials=3, short=False):
    """The median of `trials` policy changes (`policy_trial`), each in a fresh start of the
    system: one change takes tens of ms on the core the generator shares, so one alone says
    as much about the host's noise that moment as about the system. Each trial is kept."""
    each = [policy_trial(run, system, short) for _ in range(trials)]

    def median(key):
        values = sorted(e[key] for e in each if e.get(key) is not None)
        return values[len(values) // 2] if values else None

    return {**{k: median(k) for k in POLICY_FIGURES}, "policy_update_rules": 10000, "policy_update_trials": each}


def policy_trial(run, system, short=False):
    """Seconds for a 10,000-rule change to be live on every worker, applied through the API
    while 10,000 flows of traffic (1 Mpps) arrive and are dropped until the change. `short`:
    less traffic before and after it (the runner's own test)."""
    clean(run.dir)
    p = run.start_system(system, "policy")
    run.after_start(system, "policy")
    time.sleep(1.0)
    gen = run.generator("policy")
    box = {}
    before, seconds, warm = (1.0, 3.0, 0.2) if short else (2.5, 6.0, 0.5)
    t = threading.Thread(target=lambda: box.update(r=gen.trial(1.0, seconds, warm)))
    if system == "ovs-dpdk":
        subprocess.run([os.path.join(BIN, "rulegen"), "--kind", "nw-dst", "--flows", "10000",
                        "--out", run.path("policy.txt")], check=True, capture_output=True)
        # As OVS users apply a policy atomically; returns once the rules are in the table.
        cmd = ["ovs-ofctl", "--bundle", "add-flows", f"unix:{run.path('ovs')}/br0.mgmt", run.path("policy.txt")]
    else:
        # Returns once every worker runs the new rules.
        cmd = [os.path.join(BIN, "vswitchctl"), "--server", run.path("sw.sock"), "add-flows", run.path("policy.txt")]
    t.start()
    time.sleep(before)
    t0_unix_ns = time.time_ns()
    t0 = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True)
    took = time.monotonic() - t0
    t.join()
    run.stop(p)
    gen.close()
    r = box["r"]

    def since_change(key):
        return round((r[key] - t0_unix_ns) / 1e9, 3) if r.get(key) else None

    # "Returned" is when the API call came back; "live" is when traffic shows it. Each of
    # the 10,000 flows matches its own rule and sends a frame every 10 ms (1 Mpps), so the
    # change is live on every flow by the last flow's first forwarded frame, at most 10 ms
    # after it went live. About 4 of the 6 seconds come after the change (2 of 3 when short):
    # the traffic must be flowing then.
    return {"policy_update_seconds": round(took, 3),
            "policy_first_flow_live_seconds": since_change("first_rx_unix_ns"),
            "policy_every_flow_live_seconds": since_change("every_flow_rx_unix_ns"),
            "received_after_change_fraction": round(r["stamped"] / max(r["sent"], 1), 3)}


def idle_wake(run, system, packets=120):
    """Latency of packets that each arrive after a pause: 50 ms apart (20 packets/s; short
    sleeps when workers back off) and 250 ms apart (4/s; past switch.idle_deep_after_ms, so
    deep sleeps): what the first packet after idle costs. `packets` of each (6 and 30 s at
    120), so that p99 is not simply the slowest one."""
    p, gen = start_warm(run, system, 1.0)
    res = {}
    for key, per_s in (("idle_wake_us", 20), ("deep_idle_wake_us", 4)):
        # tgen sends frame k at k / rate while the trial lasts: half a gap more for the last.
        r = gen.trial(per_s / 1e6, (packets + 0.5) / per_s, 0.0)
        lat = r["latency_ns"]
        res[key] = {k: round(lat[k] / 1e3, 1) for k in ("p50", "p99", "max")}
        res[key]["packets"] = r["stamped"]
        res[key]["lost"] = r["lost"]
    run.stop(p)
    gen.close()
    return res


def deployment(run, system, starts=3):
    """Seconds from starting the system to the first packet it forwards (the median of
    `starts`: the first start after a build also reads the binaries from disk), and CPU and
    RSS while idle after the last start."""
    run.system = system
    if vhost_link(system):
        # Not timed over vhost-user: the generator's virtio-user server ports accept one at a
        # time (each blocks until its peer connects) and DPDK's vhost client retries once a
        # second, so the figure would be the generator's. The memif run times this switch.
        return {"deploy_seconds": None, **idle_figures(run, system)}
    times = []
    for i in range(starts):
        clean(run.dir)
        # Here the generator is the memif server, sending before the switch exists.
        gen = run.generator("p2p", role="server", first_only=True)
        time.sleep(1.0)
        started = time.time_ns()
        p = run.start_system(system, "p2p", role="client")
        first = gen.result(90)["first_rx_unix_ns"]
        times.append(round((first - started) / 1e9, 3) if first else None)
        if i + 1 < starts:
            run.stop(p)
            gen.close()
    ok = sorted(t for t in times if t is not None)
    res = {"deploy_seconds": ok[len(ok) // 2] if ok else None, "deploy_seconds_each": times}
    time.sleep(2.0)  # the generator stopped: the switch goes idle
    res.update(idle_cpu_rss(run, p))
    run.stop(p)
    gen.close()
    return res


def idle_cpu_rss(run, p):
    cpu, _ = cpu_while(p.pid, run.args.idle_seconds)
    return {"idle_cpu_cores": round(cpu, 3), "idle_rss_mib": round(rss_mib(p.pid), 1),
            "idle_rss_shared_mib": round(rss_mib(p.pid, "RssShmem"), 1)}


def start_warm(run, system, seconds):
    """Starts the system for p2p and its generator, and sends 1 kpps for `seconds` (MACs
    learned, caches warm). Returns both processes."""
    clean(run.dir)
    p = run.start_system(system, "p2p")
    run.after_start(system, "p2p")
    time.sleep(1.0)
    gen = run.generator("p2p")
    gen.trial(0.001, seconds, 0.0)
    return p, gen


def idle_figures(run, system):
    """CPU and RSS of the system idle after it forwarded a little traffic."""
    p, gen = start_warm(run, system, 0.5)
    time.sleep(2.0)
    res = idle_cpu_rss(run, p)
    run.stop(p)
    gen.close()
    return res


class Endpoints:
    """`n` + 1 hosts in network namespaces on veth pairs (10.77.0.0/16, host 0 first); the
    root-namespace ends are what the switch attaches. Removed on close."""

    def __init__(self, n):
        self.tag = f"cnf{os.getpid() % 10000}"
        self.hosts = []
        for i in range(n + 1):
            ns, veth = f"{self.tag}-e{i}", f"{self.tag}e{i}"
            self.hosts.append((ns, veth, f"10.77.{i // 250}.{i % 250 + 1}"))
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns], check=True)
            subprocess.run(["ip", "link", "set", veth, "up"], check=True)
            for cmd in (["ip", "addr", "add", f"{self.hosts[-1][2]}/16", "dev", "eth0"],
                        ["ip", "link", "set", "eth0", "up"], ["ip", "link", "set", "lo", "up"]):
                subprocess.run(["ip", "netns", "exec", ns] + cmd, check=True)

    def close(self):
        for ns, veth, _ in self.hosts:
            subprocess.run(["ip", "link", "del", veth], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def all_reach_host0(self, deadline):
        """Pings host 0 from every other host (in parallel, retrying) until all answered."""
        waiting = list(range(1, len(self.hosts)))
        while waiting and time.monotonic() < deadline:
            procs = {i: subprocess.Popen(["ip", "netns", "exec", self.hosts[i][0], "ping", "-c", "1", "-W", "1",
                                          self.hosts[0][2]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                     for i in waiting}
            waiting = [i for i, p in procs.items() if p.wait() != 0]
        return not waiting


def provisioning(run, system, n):
    """Seconds to attach `n` endpoints (veth pairs into namespaces) to the running system,
    one API call each as a CNI plugin makes them, until every one pings host 0 through it."""
    clean(run.dir)
    eps = Endpoints(n)
    log = open(run.path(f"{system}-provision.log"), "w")
    try:
        # Each endpoint is a kernel interface on packet sockets, for both switches: DPDK
        # ports (net_af_packet) stop at 32 per process in Debian's DPDK. OVS attaches a
        # veth as a "system" port of its userspace datapath, this switch as a `system:` port.
        def veth(i):
            return eps.hosts[i][1]
        if system == "ovs-dpdk":
            p, vsctl, _ = run.ovs_daemons(log)
            run.procs.append(p)
            # A fresh bridge forwards with its default NORMAL flow.
            subprocess.run(vsctl + ["add-br", "br0", "--", "set", "bridge", "br0", "datapath_type=netdev",
                                    "--", "add-port", "br0", veth(0)], check=True, capture_output=True)

            def attach(i):
                subprocess.run(vsctl + ["add-port", "br0", veth(i)], check=True, capture_output=True)
        else:
            cfg = run.path("prov.toml")
            with open(cfg, "w") as f:
                f.write(run.vswitchd_toml("vsprov", f"spare_ports = {n}", [("e0", 1, f"system:{veth(0)}")]))
            p = subprocess.Popen(SUT_CORES + [os.path.join(BIN, "vswitchd"), "--config", cfg], stdout=log, stderr=log)
            run.procs.append(p)
            run.wait_api()

            def attach(i):
                subprocess.run([os.path.join(BIN, "vswitchctl"), "--server", run.path("sw.sock"), "add-port",
                                f"e{i}", str(i + 1), f"system:{veth(i)}"], check=True, capture_output=True)
        # The system is up with host 0 attached: make sure it forwards before timing.
        time.sleep(1.0)
        t0 = time.monotonic()
        for i in range(1, n + 1):
            attach(i)
        attached = time.monotonic() - t0
        ok = eps.all_reach_host0(time.monotonic() + 60)
        took = time.monotonic() - t0
        run.stop(p)
        return {"endpoints": n, "provision_seconds": round(took, 3) if ok else None,
                "provision_api_seconds": round(attached, 3)}
    finally:
        for q in list(run.procs):
            run.stop(q)
        eps.close()


def versions():
    def first_line(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return None
    def package(name):
        status = first_line(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}${Version}", name])
        # Installed ("ii"), not only remembered (a removed package's configuration).
        return status[3:] if status and status.startswith("ii ") else None

    # The tree the binaries were built from, "+" if it had uncommitted changes. Run as root
    # on a checkout of another user's, git refuses the tree unless told it is safe.
    git = ["git", "-c", f"safe.directory={ROOT}", "--no-optional-locks", "-C", ROOT]
    commit = first_line(git + ["rev-parse", "--short=12", "HEAD"])
    if commit and first_line(git + ["status", "--porcelain", "--untracked-files=no"]):
        commit += "+"
    return {
        "vswitchd": first_line([os.path.join(BIN, "vswitchd"), "--version"]),
        "vswitchd_commit": commit,
        "dpdk": first_line(["pkg-config", "--modversion", "libdpdk"]),
        # testpmd is Debian's dpdk package; OVS-DPDK its openvswitch-switch-dpdk.
        "dpdk_package": package("dpdk"),
        "ovs_dpdk": first_line([OVS_VSWITCHD, "--version"]) if os.access(OVS_VSWITCHD, os.X_OK) else None,
        "ovs_dpdk_package": package("openvswitch-switch-dpdk"),
        "kernel": platform.release(),
        "cpu": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), None),
        "cores": os.cpu_count(),
        "sut_core": SUT_CORE,
        "generator_core": GEN_CORE,
        # memif regions (memfd) are on huge pages only with always / within_size / force.
        "shmem_thp": shmem_thp(),
    }


SHMEM_THP = "/sys/kernel/mm/transparent_hugepage/shmem_enabled"


def shmem_thp():
    """The kernel's THP mode for shared memory: the bracketed word of `shmem_enabled`."""
    try:
        return next((w[1:-1] for w in open(SHMEM_THP).read().split() if w.startswith("[")), None)
    except OSError:
        return None


def set_shmem_thp(mode):
    """Sets the shared-memory THP mode (machine-wide); returns the one before, to restore."""
    before = shmem_thp()
    with open(SHMEM_THP, "w") as f:
        f.write(mode)
    return before


def wake_floor(seconds, signals):
    """What a wake-up costs on the forwarding core (`wakecost`): a timer's (a thread that only
    sleeps, as an idle worker without rx interrupts does) and a signal's from the generator's
    core (a blocked read woken by a write 50 ms after the last, as a peer's rx interrupt wakes
    a worker in deep idle): the floor under idle CPU and under the wait for the first packet
    after idle on this machine. (timer figures, signal figures), None where wakecost failed."""
    out = subprocess.run([os.path.join(BIN, "wakecost"), "--core", str(SUT_CORE), "--sleep-us", "32,500",
                          "--seconds", str(seconds), "--signal-from", str(GEN_CORE), "--signals", str(signals),
                          "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        return None, None
    figures = json.loads(out.stdout)
    return figures["sleeps"], figures.get("signal")


def markdown(results):
    lines = ["| scenario | system | zero-loss Mpps | max Mpps (offered/received) | p50 / p99 / p99.9 µs at 50% | cycles/pkt | CPU cores at 90% | RSS MiB | forwarding thread preempted /s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results["scenarios"]:
        lat = r["latency_ns"].get("50%")
        lat_s = f"{lat['p50'] / 1e3:.1f} / {lat['p99'] / 1e3:.1f} / {lat['p999'] / 1e3:.1f}" if lat else "-"
        lines.append(f"| {r['scenario']} | {r['system']} | {r['zero_loss_mpps']:.2f} | "
                     f"{r['max_offered_mpps']:.2f} / {r['max_received_mpps']:.2f} | {lat_s} | "
                     f"{r.get('cycles_per_packet') or '-'} | {r.get('cpu_cores_at_90pct', '-')} | {r['rss_mib']} | "
                     f"{r.get('forwarding_thread_preemptions_per_s', '-')} |")
    lines += ["", "Latency at 10%, 50% and 90% of each zero-loss rate, p50 / p99 / p99.9 / max µs:", "",
              "| scenario | system | 10% | 50% | 90% |", "|---|---|---|---|---|"]
    for r in results["scenarios"]:
        def at(pct):
            lat = r["latency_ns"].get(pct)
            return " / ".join(f"{lat[k] / 1e3:.1f}" for k in ("p50", "p99", "p999", "max")) if lat else "-"
        lines.append(f"| {r['scenario']} | {r['system']} | {at('10%')} | {at('50%')} | {at('90%')} |")
    changes = max((len(d.get("policy_update_trials", [])) for d in results["systems"].values()), default=0)
    median_of = f" (median of {changes})" if changes else ""
    lines += ["", f"| system | deployment s | 10k-rule policy update{median_of}: returned / live on first / "
              "every flow s "
              "| endpoints provisioned: s (ms each) "
              "| idle CPU cores | idle RSS MiB (shared) | packet after 50 ms idle: p50 / p99 / max µs "
              "| after 250 ms idle |", "|---|---|---|---|---|---|---|---|"]
    for s, d in results["systems"].items():
        prov = "-"
        if d.get("provision_seconds") is not None:
            prov = (f"{d['endpoints']}: {d['provision_seconds']} "
                    f"({d['provision_seconds'] / d['endpoints'] * 1e3:.0f})")
        def wake(w):
            return f"{w['p50']} / {w['p99']} / {w['max']}" if w else "-"
        policy = " / ".join(str(d.get(k) or "-") for k in (
            "policy_update_seconds", "policy_first_flow_live_seconds", "policy_every_flow_live_seconds"))
        lines.append(f"| {s} | {d['deploy_seconds'] or '-'} | {policy} | {prov} | "
                     f"{d['idle_cpu_cores']} | {d['idle_rss_mib']} ({d.get('idle_rss_shared_mib', '-')}) | "
                     f"{wake(d.get('idle_wake_us'))} | "
                     f"{wake(d.get('deep_idle_wake_us'))} |")
    wakes = results["machine"].get("timer_wake") or []
    if wakes:
        lines += ["", f"Timer wake-ups on core {SUT_CORE} (`wakecost`: a thread that only sleeps, as an idle worker "
                      "without rx interrupts does):"]
    for w in wakes:
        o = w["oversleep_us"]
        lines.append(f"- {w['sleep_us']} µs sleeps: {w['cpu_cores']} cores ({w['cpu_us_per_wake']} µs of CPU per "
                     f"wake), oversleep p50 / p99 {o['p50']} / {o['p99']} µs")
    signal = results["machine"].get("signal_wake")
    if signal:
        w = signal["wake_us"]
        lines.append(f"- a blocked read on core {SUT_CORE} woken by a byte from core {signal['from_core']} after "
                     f"{signal['gap_ms']} ms pauses ({signal['count']} times, as a peer's rx interrupt wakes a worker "
                     f"in deep idle): p50 / p99 {w['p50']} / {w['p99']} µs")
    if results["machine"].get("shmem_thp"):
        lines += ["", f"Shared-memory THP (`{SHMEM_THP}`, where a memif client's copy-mode buffers live): "
                      f"{results['machine']['shmem_thp']}"]
    latency = results.get("settings", {}).get("idle_cpu_resume_latency")
    if latency is not None:
        lines += ["", f"This switch with back-off ran with `switch.idle_cpu_resume_latency_us = {latency}` (its "
                      "core's wake-up latency limit" + (": the core polls when idle)" if latency == 0 else ")")]
    return "\n".join(lines)


def svg_chart(results):
    """Bars of zero-loss and max received Mpps per scenario and system, as SVG text."""
    rows = results["scenarios"]
    top = max([r["max_received_mpps"] for r in rows] + [1.0])
    bar, gap, left, height = 14, 10, 190, 260
    width = left + len(rows) * (2 * bar + gap) + 40
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 120}" '
           f'font-family="sans-serif" font-size="11">',
           f'<text x="10" y="18" font-size="14">Mpps per scenario and system '
           f'({results["machine"].get("cpu") or "?"}, one worker core)</text>',
           '<rect x="10" y="30" width="10" height="10" fill="#2b6cb0"/><text x="24" y="39">zero loss</text>',
           '<rect x="90" y="30" width="10" height="10" fill="#a0aec0"/><text x="104" y="39">max received</text>']
    base = height + 20
    for t in range(0, int(top) + 1, max(1, int(top) // 5)):
        y = base - t / top * (height - 40)
        out.append(f'<line x1="{left - 5}" y1="{y:.1f}" x2="{width - 20}" y2="{y:.1f}" stroke="#e2e8f0"/>'
                   f'<text x="{left - 30}" y="{y + 4:.1f}">{t}</text>')
    for i, r in enumerate(rows):
        x = left + i * (2 * bar + gap)
        for j, (key, color) in enumerate((("zero_loss_mpps", "#2b6cb0"), ("max_received_mpps", "#a0aec0"))):
            h = r[key] / top * (height - 40)
            out.append(f'<rect x="{x + j * bar}" y="{base - h:.1f}" width="{bar - 2}" height="{h:.1f}" '
                       f'fill="{color}"><title>{r["system"]} {r["scenario"]} {key}: {r[key]:.2f}</title></rect>')
        out.append(f'<text transform="translate({x + bar},{base + 8}) rotate(60)">'
                   f'{r["scenario"]} · {r["system"]}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenarios", default="p2p,l2,acl64k,encap,decap")
    ap.add_argument("--systems", default="vswitchd,vswitchd-vhost,vswitchd-poll,ovs-dpdk,testpmd,testpmd-vhost",
                    help="vswitchd (idle back-off on, the default), vswitchd-vhost (the same over vhost-user, "
                         "where idle workers wait for rx interrupts; p2p only), vswitchd-poll (busy polling), "
                         "ovs-dpdk (Debian's openvswitch-switch-dpdk), testpmd, testpmd-vhost (p2p only)")
    ap.add_argument("--trial", type=float, default=2.0, help="seconds per trial")
    ap.add_argument("--steps", type=int, default=7, help="binary search steps")
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--retries", type=int, default=1,
                    help="zero-loss search: trials repeated at a rate that lost packets")
    ap.add_argument("--idle-seconds", type=float, default=5.0)
    ap.add_argument("--endpoints", type=int, default=100,
                    help="ports provisioned at run time for the provisioning time (kernel interfaces: "
                         "system: ports of this switch, system ports of OVS)")
    ap.add_argument("--isolate", action="store_true",
                    help="for the run, move every other thread that may use the forwarding core to the "
                         "generator core (as isolcpus would; restored at the end): nothing but the system "
                         "under test runs there")
    ap.add_argument("--shmem-thp", choices=["within_size", "always", "advise", "never"],
                    help="for the run, set the kernel's THP mode for shared memory (restored at the end): "
                         "within_size puts memif peers' copy-mode buffers on huge pages, for every system; "
                         "default: the machine's as found (recorded as machine.shmem_thp)")
    ap.add_argument("--idle-cpu-resume-latency", type=int, metavar="US",
                    help="this switch with back-off: switch.idle_cpu_resume_latency_us (the forwarding core's "
                         "wake-up latency limit, 0: the core polls when idle; put back when the switch stops); "
                         "default: unset, the kernel's as found")
    ap.add_argument("--smoke", action="store_true",
                    help="p2p on this switch and testpmd, short trials: checks the runner")
    ap.add_argument("--short", action="store_true",
                    help="the given scenarios and systems (all by default) with short trials, one start "
                         "per deployment figure, one policy change, 2 endpoints: checks the runner on every "
                         "scenario; the figures are rough")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    ap.add_argument("--bin-dir", help="use the binaries here instead of building target/release")
    args = ap.parse_args()
    global BIN
    if args.smoke:
        args.scenarios, args.systems, args.trial, args.steps, args.warmup, args.idle_seconds = \
            "p2p", "vswitchd,testpmd", 0.5, 5, 0.2, 1.0
        args.endpoints = 3
    elif args.short:
        # Seven steps as in a full run: a search of fewer would find nothing below 1/8 of the
        # top rate, where OVS-DPDK's 64k-rule figure is.
        args.trial, args.warmup, args.idle_seconds, args.endpoints = 0.3, 0.2, 1.0, 2
    quick = args.smoke or args.short
    if os.geteuid() != 0:
        sys.exit("cnf.py: run as root (hugepages, DPDK)")
    if args.shmem_thp and shmem_thp() is None:
        sys.exit(f"cnf.py: --shmem-thp needs {SHMEM_THP} (a kernel with transparent huge pages)")
    if "ovs-dpdk" in args.systems.split(",") and not os.access(OVS_VSWITCHD, os.X_OK):
        sys.exit(f"cnf.py: {OVS_VSWITCHD} is missing: apt-get install openvswitch-switch-dpdk "
                 "(scripts/setup.sh does), or leave ovs-dpdk out of --systems")
    # This runner and everything it starts live on the generator's core; each system pins
    # its forwarding thread to SUT_CORE itself. Otherwise helper threads float onto the
    # forwarding core whenever it idles (or sleeps) and delay it when traffic resumes.
    os.sched_setaffinity(0, {GEN_CORE})
    if args.bin_dir:
        BIN = args.bin_dir
    else:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path", os.path.join(ROOT, "Cargo.toml")],
                       check=True)
    subprocess.run([os.path.join(ROOT, "scripts", "hugepages.sh"), "512"], check=True, capture_output=True)
    run = Run(args)
    shmem_before, isolated = None, {}
    # A run stopped with SIGTERM (timeout, CI) cleans up as one stopped with Ctrl-C does:
    # the finally below puts back the other threads' cores and the THP mode.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        if args.shmem_thp:
            shmem_before = set_shmem_thp(args.shmem_thp)
        results = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": versions(),
                   "settings": {k: v for k, v in vars(args).items() if k != "out"}, "scenarios": [], "systems": {}}
        if args.isolate:
            isolated = isolate(GEN_CORE)
        results["machine"]["timer_wake"], results["machine"]["signal_wake"] = \
            wake_floor(0.3 if quick else 2.0, 5 if quick else 40)
        for system in args.systems.split(","):
            results["systems"][system] = deployment(run, system, 1 if quick else 3)
            results["systems"][system].update(idle_wake(run, system, 10 if quick else 120))
            if not system.startswith("testpmd") and not vhost_link(system) and not args.smoke:
                results["systems"][system].update(policy_update(run, system, 1 if quick else 3, args.short))
            if system in ("vswitchd", "ovs-dpdk") and args.endpoints > 0:
                results["systems"][system].update(provisioning(run, system, args.endpoints))
            print(f"{system}: {results['systems'][system]}", flush=True)
            for scenario in filter(None, args.scenarios.split(",")):
                if (system.startswith("testpmd") or vhost_link(system)) and scenario != "p2p":
                    # testpmd io does no processing: its p2p figure is the bound for all. Over
                    # vhost-user, p2p shows what the link and interrupts cost under load.
                    continue
                if system == "ovs-dpdk" and scenario not in ("encap", "decap") and run.ovs_rules(scenario) is None:
                    continue
                r = measure(run, system, scenario)
                results["scenarios"].append(r)
                print(f"{system} {scenario}: zero-loss {r['zero_loss_mpps']:.2f} Mpps, "
                      f"max {r['max_received_mpps']:.2f}", flush=True)
    finally:
        run.close()
        restore_affinity(isolated)
        if shmem_before is not None and shmem_before != args.shmem_thp:
            try:
                set_shmem_thp(shmem_before)
            except OSError as e:
                print(f"cnf.py: could not put {SHMEM_THP} back to {shmem_before}: {e}", file=sys.stderr)
    os.makedirs(args.out, exist_ok=True)
    name = "smoke" if args.smoke else "short" if args.short else "cnf"
    with open(os.path.join(args.out, f"{name}.json"), "w") as f:
        json.dump(results, f, indent=2)
    table = markdown(results)
    with open(os.path.join(args.out, f"{name}.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(args.out, f"{name}.svg"), "w") as f:
        f.write(svg_chart(results))
    print(table)


if __name__ == "__main__":
    main()
