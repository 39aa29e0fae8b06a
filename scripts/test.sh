#!/usr/bin/env bash
# Runs every test of the project, after making sure the machine has what they need.
# As root (the tests create network namespaces and run DPDK).
#
# Style and lints first, then unit tests and the integration tests, which start the real
# vswitchd with af_packet, pcap and null ports and send real frames. The integration tests
# run one at a time (each pins a poll-mode worker to core 1): see .config/nextest.toml.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
scripts/setup.sh --no-build

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  # Without nextest: one test thread, so DPDK tests never overlap.
  cargo test --workspace --no-fail-fast "$@" -- --test-threads=1
fi
