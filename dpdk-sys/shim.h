/* Helpers for what bindgen cannot see: thread-local and macro-only parts of DPDK. */
#ifndef VSWITCH_DPDK_SHIM_H
#define VSWITCH_DPDK_SHIM_H

#include <stdint.h>

/* rte_errno is a per-thread variable behind a macro. */
int vs_rte_errno(void);

/* rte_pktmbuf_mtod is a macro. */
void *vs_pktmbuf_mtod(struct rte_mbuf *m);

/* rte_eal_init with a shorter TSC calibration (see shim.c). */
int vs_eal_init(int argc, char **argv);

/* Whether vs_eal_init's EAL measured the TSC frequency in the shortened window (1), or did
 * not need to measure it (0: the CPU reported it). */
int vs_eal_tsc_calibration_shortened(void);

/* How many of the sysfs paths the EAL probes at start (NUMA node and core id of each CPU)
 * vs_eal_init would answer otherwise than the files; -1 if it could not read the
 * directories (it then leaves the calls to faccessat). */
int vs_sysfs_answers_mismatched(void);

/* memif rx wake-ups (see shim.c): whether this build and the running DPDK can give them. */
int vs_memif_wake_supported(void);

/* The interrupt flags word of the ring behind memif rx queue (port_id, queue_id), and in
 * *event_fd the eventfd its peer signals; NULL when the ring is not mapped (no peer) or
 * anything read does not check out. Call only where the ring cannot be unmapped meanwhile. */
uint16_t *vs_memif_rx_ring_flags(uint16_t port_id, uint16_t queue_id, int *event_fd);

#endif
