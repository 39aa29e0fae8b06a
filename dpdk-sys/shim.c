#include <rte_errno.h>
#include <rte_mbuf.h>
#include "shim.h"

int vs_rte_errno(void) { return rte_errno; }

void *vs_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }
