#!/usr/bin/env bash
# Forwarding rate of one worker core through the L2 pipeline, next to dpdk-testpmd's io
# forwarding on the same vdevs, in one run.
#
#   source: net_pcap replaying 64-byte frames from memory (infinite_rx=1)
#   sink:   net_null with no-rx=1
#   vswitchd: L2 learning switch, every destination a static MAC entry on the sink (known
#             unicast: parse, learn, lookup, forward); one worker on $CORE, control on $MAIN
#   testpmd:  --forward-mode=io, one forwarding lcore on $CORE
#
# Usage: sudo bench/l2-forward.sh [FLOWS] [SECONDS] [SAMPLES]   (defaults: 1024 5 5)
# Run it with nothing else busy on the machine: the figure is one core's.
set -euo pipefail
FLOWS=${1:-1024}
SECS=${2:-5}
SAMPLES=${3:-5}
CORE=${CORE:-1}
MAIN=${MAIN:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/tmp/vswitch-bench-l2}
BIN=$ROOT/target/release
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
mkdir -p "$WORK"

[[ ${SKIP_BUILD:-0} == 1 ]] || cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
"$ROOT/scripts/hugepages.sh" 512

"$BIN/pcapgen" --flows "$FLOWS" --out "$WORK/flows$FLOWS.pcap" --static-macs-port sink --static-macs-out "$WORK/macs.toml"
cat > "$WORK/vswitchd.toml" <<TOML
[eal]
main_core = $MAIN
file_prefix = "vsbench$$"
[control]
socket = "$WORK/vswitchd.sock"
[switch]
mbufs = 65535
[[port]]
name = "src"
number = 1
devargs = "net_pcap0,rx_pcap=$WORK/flows$FLOWS.pcap,infinite_rx=1"
[[port]]
name = "sink"
number = 2
devargs = "net_null0,no-rx=1"
[[worker]]
core = $CORE
TOML
cat "$WORK/macs.toml" >> "$WORK/vswitchd.toml"

VS_PID=""
TP_PID=""
cleanup() {
  [[ -n $VS_PID ]] && kill -INT "$VS_PID" 2>/dev/null && wait "$VS_PID" 2>/dev/null || true
  [[ -n $TP_PID ]] && kill -INT "$TP_PID" 2>/dev/null && wait "$TP_PID" 2>/dev/null || true
}
trap cleanup EXIT

CTL=("$BIN/vswitchctl" --server "$WORK/vswitchd.sock")
sink_tx() { port_tx sink; }

echo "== vswitchd: L2 pipeline, $FLOWS flows, 64 B, net_pcap -> net_null, worker on core $CORE"
launch_vswitchd
sleep 2
VS_RATES=()
for _ in $(seq "$SAMPLES"); do
  a=$(sink_tx); t0=$(date +%s.%N); sleep "$SECS"; b=$(sink_tx); t1=$(date +%s.%N)
  r=$(python3 -c "print(f'{($b - $a) / ($t1 - $t0) / 1e6:.2f}')")
  VS_RATES+=("$r"); echo "  sample: $r Mpps"
done
"$BIN/vswitchctl" --server "$WORK/vswitchd.sock" list-workers
"$BIN/vswitchctl" --server "$WORK/vswitchd.sock" show-drops
stop_vswitchd

echo "== dpdk-testpmd --forward-mode=io, same vdevs, forwarding lcore $CORE"
dpdk-testpmd -l "$MAIN,$CORE" --main-lcore "$MAIN" --no-pci --in-memory --file-prefix "tpbench$$" -m 512 \
  --vdev "net_pcap0,rx_pcap=$WORK/flows$FLOWS.pcap,infinite_rx=1" --vdev "net_null0,no-rx=1" \
  -- --forward-mode=io --nb-cores=1 --rxq=1 --txq=1 --burst=32 --total-num-mbufs=65535 \
  --stats-period "$SECS" </dev/null > "$WORK/testpmd.log" 2>&1 &
TP_PID=$!
sleep $(( (SAMPLES + 1) * SECS + 2 ))
kill -INT "$TP_PID"; wait "$TP_PID" || true; TP_PID=""
# Port 1 (null) Tx-pps, one line per stats period; the first covers start-up.
mapfile -t TP_RATES < <(awk '/NIC statistics for port 1/{p=1} p&&/Tx-pps/{printf "%.2f\n", $2/1e6; p=0}' "$WORK/testpmd.log" | tail -n +2 | head -n "$SAMPLES")
for r in "${TP_RATES[@]}"; do echo "  sample: $r Mpps"; done

python3 - "${VS_RATES[*]}" "${TP_RATES[*]}" "$FLOWS" <<'PY'
import statistics, sys
vs = [float(x) for x in sys.argv[1].split()]
tp = [float(x) for x in sys.argv[2].split()]
flows = sys.argv[3]
mv, mt = statistics.median(vs), statistics.median(tp)
tsc = None
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("cpu MHz"):
            tsc = float(line.split(":")[1]); break
except OSError:
    pass
print()
print(f"| system ({flows} flows, 64 B, one core) | Mpps median (min-max), n | cycles/pkt |")
print("|---|---|---|")
for name, xs in (("vswitchd L2 pipeline", vs), ("testpmd io", tp)):
    m = statistics.median(xs)
    cyc = f"{tsc / m:.0f}" if tsc and m else "-"
    print(f"| {name} | {m:.2f} ({min(xs):.2f}-{max(xs):.2f}), n={len(xs)} | {cyc} |")
print(f"\nratio vswitchd / testpmd io: {mv / mt:.2f}")
PY
