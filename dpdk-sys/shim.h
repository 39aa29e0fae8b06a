/* Helpers for what bindgen cannot see: thread-local and macro-only parts of DPDK. */
#ifndef VSWITCH_DPDK_SHIM_H
#define VSWITCH_DPDK_SHIM_H

/* rte_errno is a per-thread variable behind a macro. */
int vs_rte_errno(void);

/* rte_pktmbuf_mtod is a macro. */
void *vs_pktmbuf_mtod(struct rte_mbuf *m);

/* rte_eal_init with a shorter TSC calibration (see shim.c). */
int vs_eal_init(int argc, char **argv);

#endif
