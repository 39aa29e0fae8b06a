/* Helpers for what bindgen cannot see: thread-local and macro-only parts of DPDK. */
#ifndef VSWITCH_DPDK_SHIM_H
#define VSWITCH_DPDK_SHIM_H

/* rte_errno is a per-thread variable behind a macro. */
int vs_rte_errno(void);

/* rte_pktmbuf_mtod is a macro. */
void *vs_pktmbuf_mtod(struct rte_mbuf *m);

/* rte_eal_init with a shorter TSC calibration (see shim.c). */
int vs_eal_init(int argc, char **argv);

/* Whether vs_eal_init's EAL measured the TSC frequency in the shortened window (1), or did
 * not need to measure it (0: the CPU reported it). */
int vs_eal_tsc_calibration_shortened(void);

#endif
