#!/usr/bin/env bash
# What observability costs the datapath: the forwarding rate of one worker core with the
# metrics endpoint off, and with it on and scraped every second (live trace enabled but
# not tracing), in alternating rounds, on the same traffic.
#
#   source: net_pcap replaying 1,024 64-byte UDP flows from memory (infinite_rx=1)
#   rule:   in_port=1,actions=output:2 (the flow-table path, not the L2 shortcut)
#   sink:   net_null (no-rx=1)
#
# Usage: sudo bench/observability.sh [SECONDS] [ROUNDS]     (defaults: 5 3)
# Run it with nothing else busy on the machine.
set -euo pipefail
SECS=${1:-5}
ROUNDS=${2:-3}
CORE=${CORE:-1}
MAIN=${MAIN:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/tmp/vswitch-bench-observability}
BIN=$ROOT/target/release
PORT=${METRICS_PORT:-19464}
mkdir -p "$WORK"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

[[ ${SKIP_BUILD:-0} == 1 ]] || cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
"$ROOT/scripts/hugepages.sh" 512
[[ -f $WORK/flows1024.pcap ]] || "$BIN/pcapgen" --flows 1024 --out "$WORK/flows1024.pcap"

VS_PID=""
SCRAPER=""
cleanup() {
  [[ -n $SCRAPER ]] && kill "$SCRAPER" 2>/dev/null || true
  [[ -n $VS_PID ]] && kill -INT "$VS_PID" 2>/dev/null && wait "$VS_PID" 2>/dev/null || true
}
trap cleanup EXIT
CTL=("$BIN/vswitchctl" --server "$WORK/vswitchd.sock")
sink_tx() { port_tx sink; }

run() {  # $1: "off" or an address; prints SAMPLES rates
  cat > "$WORK/vswitchd.toml" <<TOML
[eal]
main_core = $MAIN
file_prefix = "vsobs$$"
[control]
socket = "$WORK/vswitchd.sock"
metrics = "$1"
[[flow]]
rule = "in_port=1,actions=output:2"
[[port]]
name = "src"
number = 1
devargs = "net_pcap0,rx_pcap=$WORK/flows1024.pcap,infinite_rx=1"
[[port]]
name = "sink"
number = 2
devargs = "net_null0,no-rx=1"
[[worker]]
core = $CORE
TOML
  launch_vswitchd
  sleep 1
  if [[ $1 != off ]]; then
    # A scraper as Prometheus would be, every second, on the control-plane core.
    taskset -c "$MAIN" python3 -c '
import time, urllib.request, sys
while True:
    urllib.request.urlopen(sys.argv[1], timeout=5).read(); time.sleep(1)' "http://$1/metrics" &
    SCRAPER=$!
  fi
  sample_rates "$SECS" 1 sink_tx
  [[ -n $SCRAPER ]] && { kill "$SCRAPER"; wait "$SCRAPER" 2>/dev/null || true; SCRAPER=""; }
  stop_vswitchd
}

OFF=(); ON=()
for r in $(seq "$ROUNDS"); do
  OFF+=("$(run off)")
  ON+=("$(run "127.0.0.1:$PORT")")
  echo "round $r: metrics off ${OFF[-1]} Mpps, on + scraped every 1 s ${ON[-1]} Mpps"
done
echo
echo "| metrics endpoint | Mpps, median (min-max) of $ROUNDS x ${SECS} s |"
echo "|---|---|"
echo "| off | $(median "${OFF[@]}") |"
echo "| on, scraped every second | $(median "${ON[@]}") |"
