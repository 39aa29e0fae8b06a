#!/usr/bin/env bash
# The built-in demo, as root on Debian 12: installs what is missing, builds, starts vswitchd
# with three hosts in network namespaces on af_packet DPDK ports, shows them pinging each
# other and moving TCP data through the switch, prints counters and the MAC table with
# vswitchctl, and stops everything cleanly.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release
CONFIG=$ROOT/configs/demo.toml
SOCK=/run/vswitch/vswitchd.sock
LOG=/tmp/vswitch-demo.log
HOSTS=(1 2 3)
VS_PID=""

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

remove_topology() {
  for i in "${HOSTS[@]}"; do
    ip netns del "vsdemo-h$i" 2>/dev/null || true
    ip link del "vsdemo$i" 2>/dev/null || true
  done
}
cleanup() {
  if [[ -n $VS_PID ]] && kill -0 "$VS_PID" 2>/dev/null; then
    kill -INT "$VS_PID"; wait "$VS_PID" || true
  fi
  remove_topology
}
trap cleanup EXIT

step "setup: packages, hugepages, build"
"$ROOT/scripts/setup.sh"

step "topology: hosts h1..h3 (10.99.0.1-3) in namespaces, switch side on veths vsdemo1..3"
remove_topology
for i in "${HOSTS[@]}"; do
  ns=vsdemo-h$i
  ip netns add "$ns"
  ip link add "vsdemo$i" type veth peer name eth0 netns "$ns"
  sysctl -qw "net.ipv6.conf.vsdemo$i.disable_ipv6=1"
  ip link set "vsdemo$i" up
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
  ip -n "$ns" link set eth0 address "02:00:00:00:99:0$i"
  ip -n "$ns" addr add "10.99.0.$i/24" dev eth0
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 up
  # The af_packet PMD passes frames as they are: let the sender fill in TCP checksums.
  ip netns exec "$ns" ethtool -K eth0 tx off >/dev/null
  echo "h$i: netns $ns, eth0 02:00:00:00:99:0$i 10.99.0.$i/24 <-> vsdemo$i (switch port $i)"
done

step "start vswitchd --config configs/demo.toml"
"$BIN/vswitchd" --config "$CONFIG" >"$LOG" 2>&1 &
VS_PID=$!
for _ in $(seq 300); do
  grep -q "vswitchd: running" "$LOG" 2>/dev/null && break
  kill -0 "$VS_PID" 2>/dev/null || { cat "$LOG"; echo "vswitchd failed to start" >&2; exit 1; }
  sleep 0.1
done
grep -v '^EAL: \|^TELEMETRY' "$LOG"

step "ping: every host to every other"
for a in "${HOSTS[@]}"; do
  for b in "${HOSTS[@]}"; do
    [[ $a == "$b" ]] && continue
    if ip netns exec "vsdemo-h$a" ping -c 2 -i 0.2 -W 2 -q "10.99.0.$b" >/dev/null; then
      echo "h$a -> h$b: ok"
    else
      echo "h$a -> h$b: FAILED" >&2; exit 1
    fi
  done
done

step "TCP: 20 MB from h1 to h2, checked with SHA-256"
DATA=$(mktemp /tmp/vswitch-demo-data.XXXXXX)
head -c 20000000 /dev/urandom >"$DATA"
ip netns exec vsdemo-h2 python3 -c '
import hashlib, socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.99.0.2", 5001)); s.listen(1); print("ready", flush=True)
c, _ = s.accept(); h = hashlib.sha256(); n = 0
while True:
    b = c.recv(1 << 16)
    if not b: break
    h.update(b); n += len(b)
print(n, h.hexdigest(), flush=True)' >/tmp/vswitch-demo-recv.txt &
SERVER=$!
for _ in $(seq 50); do grep -q ready /tmp/vswitch-demo-recv.txt 2>/dev/null && break; sleep 0.1; done
start=$(date +%s.%N)
ip netns exec vsdemo-h1 python3 -c '
import socket, sys
s = socket.create_connection(("10.99.0.2", 5001), timeout=30)
s.sendall(open(sys.argv[1], "rb").read()); s.close()' "$DATA"
wait "$SERVER"
end=$(date +%s.%N)
read -r got_n got_sum < <(tail -1 /tmp/vswitch-demo-recv.txt)
want_sum=$(sha256sum "$DATA" | cut -d' ' -f1)
rm -f "$DATA" /tmp/vswitch-demo-recv.txt
echo "sent 20000000 bytes sha256 ${want_sum:0:16}..., received $got_n bytes sha256 ${got_sum:0:16}..."
python3 -c "print(f'{20e6 * 8 / ($end - $start) / 1e6:.0f} Mbit/s')"
[[ $got_n == 20000000 && $got_sum == "$want_sum" ]] || { echo "TCP data corrupted" >&2; exit 1; }

CTL=("$BIN/vswitchctl" --server "$SOCK")
step "vswitchctl list-ports"
"${CTL[@]}" list-ports
step "vswitchctl fdb-show (the MAC table)"
"${CTL[@]}" fdb-show
step "vswitchctl list-workers"
"${CTL[@]}" list-workers
step "vswitchctl show-drops --all"
"${CTL[@]}" show-drops --all

step "vswitchctl trace-live: where does h1's next ping to h3 go?"
"${CTL[@]}" trace-live "in_port=1,icmp,nw_dst=10.99.0.3" --count 1 --timeout 10 &
TRACER=$!
for _ in $(seq 50); do "${CTL[@]}" show | grep -q 'live trace is running' && break; sleep 0.1; done
ip netns exec vsdemo-h1 ping -c 1 -W 2 -q 10.99.0.3 >/dev/null || true
wait "$TRACER"

step "Prometheus metrics (http://127.0.0.1:9464/metrics, excerpt)"
python3 - <<'PY'
import urllib.request
text = urllib.request.urlopen("http://127.0.0.1:9464/metrics", timeout=5).read().decode()
for line in text.splitlines():
    if line.startswith(("vswitch_port_rx_packets_total", "vswitch_port_tx_packets_total",
                        "vswitch_worker_busy_seconds_total", "vswitch_worker_idle_state")):
        print(line)
print(f"... {sum(1 for l in text.splitlines() if not l.startswith('#'))} samples in all")
PY

step "stop: SIGINT to vswitchd, namespaces removed"
kill -INT "$VS_PID"
wait "$VS_PID" && echo "vswitchd exited with status 0"
VS_PID=""
tail -2 "$LOG"
