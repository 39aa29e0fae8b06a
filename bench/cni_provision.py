#!/usr/bin/env python3
"""Endpoint provisioning through the CNI plugin: N "pods" (network namespaces) attached to a
running vswitchd by invoking vswitch-cni as a container runtime does (host-local IPAM), each
timed from the ADD call until the new pod pings the first one through the switch; then every
DEL timed. Prints a summary and writes JSON.

  sudo bench/cni_provision.py [--pods 30] [--bin-dir target/release] [--out FILE]

Debian's DPDK 22.11 is built with RTE_MAX_ETHPORTS = 32, so one process has at most 32
ports: 31 pods here.
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pods", type=int, default=30)
    ap.add_argument("--bin-dir", default=os.path.join(ROOT, "target", "release"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "cni_provision.json"))
    args = ap.parse_args()
    os.sched_setaffinity(0, {0})  # keep this runner off the worker's core
    work = tempfile.mkdtemp(prefix="vswitch-cni-bench-")
    sock = os.path.join(work, "sw.sock")
    cfg = os.path.join(work, "sw.toml")
    open(cfg, "w").write(f"""[eal]
main_core = 0
file_prefix = "cnibench{os.getpid()}"
[control]
socket = "{sock}"
metrics = "off"
[switch]
spare_ports = {args.pods + 1}
[[worker]]
core = 1
""")
    log = open(os.path.join(work, "vswitchd.log"), "w")
    sw = subprocess.Popen(["taskset", "-c", "0,1", os.path.join(args.bin_dir, "vswitchd"), "--config", cfg],
                          stdout=log, stderr=log)
    for _ in range(300):
        if os.path.exists(sock):
            break
        time.sleep(0.1)
    conf = json.dumps({"cniVersion": "1.0.0", "name": "bench", "type": "vswitch-cni", "socket": sock,
                       "ipam": {"type": "host-local", "subnet": "10.123.0.0/16", "dataDir": os.path.join(work, "ipam")}})
    pods = [f"cnibench{os.getpid() % 10000}p{i}" for i in range(args.pods + 1)]
    env = dict(os.environ, CNI_PATH="/usr/lib/cni", CNI_IFNAME="eth0")

    def cni(command, i):
        e = dict(env, CNI_COMMAND=command, CNI_CONTAINERID=f"bench-{pods[i]}", CNI_NETNS=f"/var/run/netns/{pods[i]}")
        out = subprocess.run([os.path.join(args.bin_dir, "vswitch-cni")], input=conf, env=e,
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"{command} {pods[i]}: {out.stdout} {out.stderr}")
        return json.loads(out.stdout) if out.stdout.strip() else None

    add, forward, dele = [], [], []
    try:
        for p in pods:
            sh("ip", "netns", "add", p)
        first = cni("ADD", 0)["ips"][0]["address"].split("/")[0]
        for i in range(1, len(pods)):
            t0 = time.monotonic()
            cni("ADD", i)
            t1 = time.monotonic()
            while subprocess.run(["ip", "netns", "exec", pods[i], "ping", "-c", "1", "-W", "1", first],
                                 capture_output=True).returncode != 0:
                if time.monotonic() - t0 > 30:
                    raise RuntimeError(f"{pods[i]} does not reach {first}")
            add.append(t1 - t0)
            forward.append(time.monotonic() - t0)
        for i in range(len(pods)):
            t0 = time.monotonic()
            cni("DEL", i)
            dele.append(time.monotonic() - t0)
    finally:
        sw.send_signal(2)
        sw.wait(30)
        for p in pods:
            subprocess.run(["ip", "netns", "del", p], capture_output=True)
    ms = lambda v: round(v * 1e3, 1)
    res = {"pods": args.pods, "add_ms_median": ms(statistics.median(add)), "add_ms_max": ms(max(add)),
           "add_to_forwarding_ms_median": ms(statistics.median(forward)),
           "add_to_forwarding_ms_p90": ms(sorted(forward)[int(len(forward) * 0.9) - 1]),
           "total_add_to_forwarding_s": round(sum(forward), 2), "del_ms_median": ms(statistics.median(dele))}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    json.dump(res, open(args.out, "w"), indent=2)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
