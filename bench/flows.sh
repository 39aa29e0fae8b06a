#!/usr/bin/env bash
# Flow-table benchmarks on one worker core: forwarding rate with 1 flow, 1,000 exact flows
# and 64k flows (one mask, and several masks), and how fast rules go live. testpmd `io` on
# the same vdevs is the no-processing bound. The same rules and traffic run on OVS-DPDK
# with ../shared/peers/run.sh (see bench/README.md).
#
#   source: net_pcap replaying 64-byte UDP frames from memory (infinite_rx=1)
#   sink:   net_null (no-rx=1)
#
# Usage: sudo bench/flows.sh [SECONDS] [SAMPLES]      (defaults: 5 3)
#        SCENARIOS="s1 s3" sudo bench/flows.sh       (a subset)
#        BIN=DIR sudo bench/flows.sh                 (binaries of another build)
# Run it with nothing else busy on the machine.
set -euo pipefail
SECS=${1:-5}
SAMPLES=${2:-3}
CORE=${CORE:-1}
MAIN=${MAIN:-0}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/tmp/vswitch-bench-flows}
BIN=${BIN:-$ROOT/target/release}
SCENARIOS=${SCENARIOS:-"s1 s2 s3 s4 s5 install testpmd"}
mkdir -p "$WORK"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
has() { [[ " $SCENARIOS " == *" $1 "* ]]; }

[[ ${SKIP_BUILD:-0} == 1 ]] || cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
"$ROOT/scripts/hugepages.sh" 512
for n in 1 1024 65536; do
  [[ -f $WORK/flows$n.pcap ]] || "$BIN/pcapgen" --flows "$n" --out "$WORK/flows$n.pcap"
done
"$BIN/rulegen" --kind in-port --out "$WORK/in_port.txt"
"$BIN/rulegen" --kind dl-dst --flows 1024 --out "$WORK/dl_dst_1k.txt"
"$BIN/rulegen" --kind nw-dst --flows 65536 --out "$WORK/nw_dst_64k.txt"
"$BIN/rulegen" --kind multimask --flows 65536 --out "$WORK/multimask_64k.txt"
"$BIN/rulegen" --kind unused --flows 10000 --out "$WORK/unused_10k.txt"
"$BIN/rulegen" --kind unused --flows 100000 --out "$WORK/unused_100k.txt"

VS_PID=""
TP_PID=""
cleanup() {
  [[ -n $VS_PID ]] && kill -INT "$VS_PID" 2>/dev/null && wait "$VS_PID" 2>/dev/null || true
  [[ -n $TP_PID ]] && kill -INT "$TP_PID" 2>/dev/null && wait "$TP_PID" 2>/dev/null || true
  rm -rf "/var/run/dpdk/tpflows$$"  # testpmd leaves its DPDK runtime directory
}
trap cleanup EXIT
CTL=("$BIN/vswitchctl" --server "$WORK/vswitchd.sock")
RESULTS=()

start_switch() {  # $1 pcap, $2 table-0 miss
  cat > "$WORK/vswitchd.toml" <<TOML
[eal]
main_core = $MAIN
file_prefix = "vsflows$$"
[control]
socket = "$WORK/vswitchd.sock"
[switch]
mbufs = 131071
[[table]]
id = 0
miss = "$2"
[[port]]
name = "src"
number = 1
devargs = "net_pcap0,rx_pcap=$1,infinite_rx=1"
[[port]]
name = "sink"
number = 2
devargs = "net_null0,no-rx=1"
[[worker]]
core = $CORE
TOML
  launch_vswitchd
}
# Drops of every reason but flow_drop (the no-traffic runs drop everything by a flow).
total_drops() {
  "${CTL[@]}" --json show-drops | python3 -c 'import json,sys; print(sum(int(d.get("packets", 0)) for d in json.load(sys.stdin)["drops"] if d["reason"] != "flow_drop"))'
}
sink_tx() { port_tx sink; }
measure() {  # $1 label
  sleep 2
  local rates
  mapfile -t rates < <(sample_rates "$SECS" "$SAMPLES" sink_tx)
  local emc
  emc=$("${CTL[@]}" dump-tables | grep -o 'exact-match cache.*' || echo "exact-match cache: off")
  echo "  $1: ${rates[*]} Mpps; $emc"
  RESULTS+=("| $1 | $(median "${rates[@]}") | $emc |")
}
scenario() {  # $1 label, $2 pcap, $3 rules file
  echo "== $1"
  start_switch "$WORK/$2" drop
  local t0 t1
  t0=$(date +%s.%N)
  "${CTL[@]}" add-flows "$WORK/$3" > /dev/null
  t1=$(date +%s.%N)
  echo "  $(wc -l < "$WORK/$3") rules live after $(python3 -c "print(f'{$t1 - $t0:.3f}')") s"
  measure "$1"
  stop_vswitchd
}

has s1 && scenario "s1: 1 flow, 1 rule in_port (OVS a0)" flows1.pcap in_port.txt
has s2 && scenario "s2: 1k flows, 1 rule in_port (OVS a)" flows1024.pcap in_port.txt
has s3 && scenario "s3: 1k flows, 1k exact dl_dst rules (OVS b)" flows1024.pcap dl_dst_1k.txt
has s4 && scenario "s4: 64k flows, 64k exact nw_dst rules (OVS c2)" flows65536.pcap nw_dst_64k.txt
has s5 && scenario "s5: 64k flows, 64k rules over 4 masks + 256 /24 prefixes" flows65536.pcap multimask_64k.txt

INSTALL=()
if has install; then
  echo "== install: rules through gRPC until live on every worker (vswitchctl add-flows, one transaction)"
  for traffic in none flows65536.pcap; do
    for n in 10k 100k; do
      for rep in 1 2 3; do
        if [[ $traffic == none ]]; then start_switch "$WORK/flows1.pcap" drop; "${CTL[@]}" add-flow "priority=60000,in_port=1,actions=drop" > /dev/null
        else start_switch "$WORK/$traffic" drop; "${CTL[@]}" add-flows "$WORK/nw_dst_64k.txt" > /dev/null; fi
        sleep 1
        before=$(total_drops)
        t0=$(date +%s.%N)
        "${CTL[@]}" add-flows "$WORK/unused_$n.txt" > /dev/null
        t1=$(date +%s.%N)
        d=$(python3 -c "print(f'{$t1 - $t0:.3f}')")
        drops=$(( $(total_drops) - before ))
        echo "  $n rules, traffic ${traffic%.pcap}: live after $d s (drops meanwhile: $drops)"
        INSTALL+=("$n ${traffic%.pcap} $d")
        stop_vswitchd
      done
    done
  done
fi

TP=()
if has testpmd; then
  for n in 1 1024 65536; do
    echo "== testpmd io, flows$n (bound)"
    dpdk-testpmd -l "$MAIN,$CORE" --main-lcore "$MAIN" --no-pci --in-memory --file-prefix "tpflows$$" -m 512 \
      --vdev "net_pcap0,rx_pcap=$WORK/flows$n.pcap,infinite_rx=1" --vdev "net_null0,no-rx=1" \
      -- --forward-mode=io --nb-cores=1 --rxq=1 --txq=1 --burst=32 --total-num-mbufs=131071 \
      --stats-period "$SECS" </dev/null > "$WORK/testpmd.log" 2>&1 &
    TP_PID=$!
    sleep $(( (SAMPLES + 1) * SECS + 2 ))
    kill -INT "$TP_PID"; wait "$TP_PID" || true; TP_PID=""
    mapfile -t r < <(awk '/NIC statistics for port 1/{p=1} p&&/Tx-pps/{printf "%.2f\n", $2/1e6; p=0}' "$WORK/testpmd.log" | tail -n +2 | head -n "$SAMPLES")
    echo "  ${r[*]} Mpps"
    TP+=("| testpmd io, flows$n (bound) | $(median "${r[@]}") | |")
  done
fi

echo
echo "| scenario (64 B, one worker core) | Mpps median (min-max) | exact-match cache |"
echo "|---|---|---|"
for r in "${RESULTS[@]}" "${TP[@]}"; do echo "$r"; done
if ((${#INSTALL[@]})); then
  echo
  echo "| rules | traffic | seconds until live (3 runs) |"
  echo "|---|---|---|"
  python3 - "${INSTALL[@]}" <<'PY'
import sys, collections
runs = collections.defaultdict(list)
for item in sys.argv[1:]:
    n, traffic, d = item.split()
    runs[(n, traffic)].append(float(d))
for (n, traffic), ds in runs.items():
    print(f"| {n} | {traffic} | {sorted(ds)[len(ds)//2]:.3f} ({min(ds):.3f}-{max(ds):.3f}) |")
PY
fi
