#!/usr/bin/env bash
# Makes sure at least N (default 512) 2 MiB hugepages exist and hugetlbfs is mounted.
# Only raises the count, never lowers it.
set -euo pipefail
want=${1:-512}
have=$(cat /proc/sys/vm/nr_hugepages)
if (( have < want )); then
  echo "$want" > /proc/sys/vm/nr_hugepages
  have=$(cat /proc/sys/vm/nr_hugepages)
  (( have >= want )) || echo "warning: asked for $want hugepages, the kernel gave $have" >&2
fi
if ! mountpoint -q /dev/hugepages; then
  mkdir -p /dev/hugepages
  mount -t hugetlbfs nodev /dev/hugepages
fi
