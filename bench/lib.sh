# Shared helpers of the benchmark scripts (sourced).

# "MEDIAN (MIN-MAX)" of the arguments.
median() {
  python3 -c 'import statistics,sys; xs=[float(x) for x in sys.argv[1:]]; print(f"{statistics.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})")' "$@"
}

# Prints SAMPLES rates in Mpps, one per line, of the packet counter that "COUNTER ARGS..."
# prints, each over SECS seconds.
sample_rates() {
  local secs=$1 samples=$2 a b t0 t1
  shift 2
  for _ in $(seq "$samples"); do
    a=$("$@"); t0=$(date +%s.%N); sleep "$secs"; b=$("$@"); t1=$(date +%s.%N)
    python3 -c "print(f'{($b - $a) / ($t1 - $t0) / 1e6:.2f}')"
  done
}

# Starts vswitchd on $WORK/vswitchd.toml (log: $WORK/vswitchd.log), sets VS_PID and waits
# until its API socket $WORK/vswitchd.sock exists.
launch_vswitchd() {
  "$BIN/vswitchd" --config "$WORK/vswitchd.toml" > "$WORK/vswitchd.log" 2>&1 &
  VS_PID=$!
  for _ in $(seq 100); do [[ -S $WORK/vswitchd.sock ]] && break; sleep 0.1; done
}

# Stops the vswitchd of launch_vswitchd (SIGINT, as an operator would).
stop_vswitchd() { kill -INT "$VS_PID"; wait "$VS_PID" || true; VS_PID=""; }

# Packets the switch sent out of port $1 (name), from vswitchctl (needs CTL).
port_tx() { "${CTL[@]}" --json get-port "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["counters"]["tx_packets"])'; }
