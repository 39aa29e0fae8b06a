#!/usr/bin/env bash
# VXLAN encap and decap on one worker core, side by side with OVS-DPDK's userspace
# tunnelling on the same traffic, in one run.
#
#   encap: net_pcap replays 1,024 flows of 64-byte UDP frames -> flow in_port=1 ->
#          output to tunnel vx0 (VNI 100, remote 172.31.0.2) -> 110-byte frames out of the
#          uplink (net_null, no-rx=1)
#   decap: net_pcap on the uplink replays the same frames inside VXLAN (VNI 100, from
#          172.31.0.2 to 172.31.0.1) -> tunnel vx0 -> flow in_port=10 -> net_null sink
#   OVS-DPDK encap: ../shared/peers/run.sh scenario d (the same traffic and topology)
#   OVS-DPDK decap: br-phy (172.31.0.1, the VXLAN pcap) -> tnl_pop -> br-int vx0 -> sink
#
# Usage: sudo bench/tunnels.sh [SECONDS] [SAMPLES]     (defaults: 5 3)
#        OVS=0 sudo bench/tunnels.sh                   (this switch only)
# Run it with nothing else busy on the machine: the worker (and OVS's PMD) take core 1.
set -euo pipefail
SECS=${1:-5}
SAMPLES=${2:-3}
CORE=${CORE:-1}
MAIN=${MAIN:-0}
OVS=${OVS:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-/tmp/vswitch-bench-tunnels}
BIN=$ROOT/target/release
PEERS=${PEERS:-$ROOT/../shared/peers}
mkdir -p "$WORK"
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

[[ ${SKIP_BUILD:-0} == 1 ]] || cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
"$ROOT/scripts/hugepages.sh" 512
"$BIN/pcapgen" --flows 1024 --out "$WORK/flows1024.pcap"
"$BIN/pcapgen" --flows 1024 --vxlan 100 --out "$WORK/vxlan1024.pcap"

VS_PID=""
NS=vsbench-ovs$$
RUN=$WORK/ovs
cleanup() {
  [[ -n $VS_PID ]] && kill -INT "$VS_PID" 2>/dev/null && wait "$VS_PID" 2>/dev/null || true
  ovs_stop
  rm -rf "/var/run/dpdk/vstunovs$$"  # OVS-DPDK leaves its DPDK runtime directory
}
trap cleanup EXIT
CTL=("$BIN/vswitchctl" --server "$WORK/vswitchd.sock")
RESULTS=()

start_switch() {  # $1 ports and flows (TOML)
  cat > "$WORK/vswitchd.toml" <<TOML
[eal]
main_core = $MAIN
file_prefix = "vstun$$"
[control]
socket = "$WORK/vswitchd.sock"
[[worker]]
core = $CORE
[[table]]
id = 0
miss = "drop"
[[tunnel]]
name = "vx0"
number = 10
kind = "vxlan"
uplink = "up"
remote_ip = "172.31.0.2"
vni = 100
[[neighbor]]
ip = "172.31.0.2"
mac = "02:00:00:bb:00:02"
$1
TOML
  launch_vswitchd
}

ours() {  # $1 label, $2 port to count, $3 TOML
  echo "== $1"
  start_switch "$3"
  sleep 2
  local rates
  mapfile -t rates < <(sample_rates "$SECS" "$SAMPLES" port_tx "$2")
  echo "  ${rates[*]} Mpps"
  local drops
  drops=$("${CTL[@]}" --json show-drops | python3 -c 'import json,sys; print(sum(int(d.get("packets", 0)) for d in json.load(sys.stdin)["drops"]))')
  "${CTL[@]}" list-tunnels | sed 's/^/  /'
  echo "  drops: $drops"
  RESULTS+=("| $1 | $(median "${rates[@]}") |")
  stop_vswitchd
}

ours "this switch: VXLAN encap, 1k flows" up "
[[flow]]
rule = \"in_port=1,actions=output:10\"
[[port]]
name = \"src\"
number = 1
devargs = \"net_pcap0,rx_pcap=$WORK/flows1024.pcap,infinite_rx=1\"
[[port]]
name = \"up\"
number = 2
devargs = \"net_null0,no-rx=1\"
ip = \"172.31.0.1/24\""

ours "this switch: VXLAN decap, 1k flows" sink "
[[flow]]
rule = \"in_port=10,actions=output:1\"
[[port]]
name = \"sink\"
number = 1
devargs = \"net_null0,no-rx=1\"
[[port]]
name = \"up\"
number = 2
devargs = \"net_pcap0,rx_pcap=$WORK/vxlan1024.pcap,infinite_rx=1\"
ip = \"172.31.0.1/24\""

# ---------------------------------------------------------------- OVS-DPDK
OVS_PID=""
ovs_stop() {
  [[ -d $RUN ]] || return 0
  for f in "$RUN/ovs-vswitchd.pid" "$RUN/ovsdb-server.pid"; do
    [[ -f $f ]] || continue
    local p; p=$(cat "$f")
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    rm -f "$f"
  done
  ip netns del "$NS" 2>/dev/null || true
}

if [[ $OVS == 1 ]]; then
  echo "== OVS-DPDK encap: ../shared/peers/run.sh scenario d"
  TAG=vstunnels$$
  PARTS="setup vxlan" SAMPLES=$SAMPLES SECS=$SECS TAG=$TAG "$PEERS/run.sh" > "$WORK/peers.log" 2>&1 ||
    { tail -20 "$WORK/peers.log"; exit 1; }
  row=$(grep '^| d:' "/tmp/peers-ovs/results-$TAG.md" | head -1)
  echo "  $row"
  RESULTS+=("| OVS-DPDK 3.1: VXLAN encap, 1k flows (peers d) | $(echo "$row" | cut -d'|' -f4 | sed 's/^ *//; s/ *$//') |")

  echo "== OVS-DPDK decap: br-phy(VXLAN pcap) -> tnl_pop -> br-int vx0 -> sink"
  export OVS_RUNDIR=$RUN OVS_DBDIR=$RUN OVS_LOGDIR=$RUN OVS_SYSCONFDIR=$RUN
  rm -rf "$RUN"; mkdir -p "$RUN"
  ip netns add "$NS"
  VSCTL=(ovs-vsctl --timeout=60)
  ovsdb-tool create "$RUN/conf.db" /usr/share/openvswitch/vswitch.ovsschema
  ip netns exec "$NS" taskset -c "$MAIN" ovsdb-server "$RUN/conf.db" --remote="punix:$RUN/db.sock" \
    --pidfile="$RUN/ovsdb-server.pid" --unixctl="$RUN/ovsdb-server.ctl" --log-file="$RUN/ovsdb-server.log" --detach --no-chdir
  "${VSCTL[@]}" --no-wait init
  "${VSCTL[@]}" --no-wait set Open_vSwitch . other_config:dpdk-init=true other_config:dpdk-socket-mem=512 \
    other_config:dpdk-socket-limit=512 "other_config:dpdk-extra=--no-pci --file-prefix=vstunovs$$" \
    "other_config:pmd-cpu-mask=$(printf '0x%x' $((1 << CORE)))"
  ip netns exec "$NS" taskset -c "$MAIN" /usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk "unix:$RUN/db.sock" \
    --pidfile="$RUN/ovs-vswitchd.pid" --unixctl="$RUN/ovs-vswitchd.ctl" --log-file="$RUN/ovs-vswitchd.log" --detach --no-chdir
  "${VSCTL[@]}" add-br br-phy -- set bridge br-phy datapath_type=netdev other_config:hwaddr=02:00:00:aa:00:01
  ip -n "$NS" addr add 172.31.0.1/24 dev br-phy
  ip -n "$NS" link set br-phy up
  "${VSCTL[@]}" add-br br-int -- set bridge br-int datapath_type=netdev \
    -- add-port br-int vx0 -- set Interface vx0 type=vxlan ofport_request=3 options:remote_ip=172.31.0.2 options:key=100 \
    -- add-port br-int sink -- set Interface sink type=dpdk ofport_request=2 "options:dpdk-devargs=net_null0,no-rx=1"
  ovs-ofctl del-flows br-int
  ovs-ofctl add-flow br-int "in_port=3,actions=output:2"
  "${VSCTL[@]}" add-port br-phy src -- set Interface src type=dpdk ofport_request=1 \
    "options:dpdk-devargs=net_pcap1,rx_pcap=$WORK/vxlan1024.pcap,infinite_rx=1"
  sleep 3
  ovs_tx() { ovs-ofctl dump-ports br-int 2 | awk '/tx pkts=/{sub(/.*tx pkts=/,""); sub(/,.*/,""); print}'; }
  ovs-appctl -t "$RUN/ovs-vswitchd.ctl" dpctl/dump-flows | head -3 | sed 's/^/  /'
  mapfile -t rates < <(sample_rates "$SECS" "$SAMPLES" ovs_tx)
  echo "  ${rates[*]} Mpps"
  RESULTS+=("| OVS-DPDK 3.1: VXLAN decap, 1k flows | $(median "${rates[@]}") |")
  ovs_stop
fi

echo
echo "| scenario (64 B inner frames, one worker core) | Mpps median (min-max) |"
echo "|---|---|"
for r in "${RESULTS[@]}"; do echo "$r"; done
