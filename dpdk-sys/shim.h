/* Helpers for what bindgen cannot see: thread-local and macro-only parts of DPDK. */
#ifndef VSWITCH_DPDK_SHIM_H
#define VSWITCH_DPDK_SHIM_H

/* rte_errno is a per-thread variable behind a macro. */
int vs_rte_errno(void);

/* rte_pktmbuf_mtod is a macro. */
void *vs_pktmbuf_mtod(struct rte_mbuf *m);

#endif
