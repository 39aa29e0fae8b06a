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
