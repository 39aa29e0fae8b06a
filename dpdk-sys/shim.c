#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_mbuf.h>
#include "shim.h"

int vs_rte_errno(void) { return rte_errno; }

void *vs_pktmbuf_mtod(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, void *); }

/*
 * Where neither CPUID leaf 0x15 nor MSR_PLATFORM_INFO gives the TSC frequency (most VMs),
 * DPDK's EAL measures it (get_tsc_freq): it reads CLOCK_MONOTONIC_RAW and the TSC, calls
 * nanosleep for 100 ms with no remainder pointer, reads both again, and divides. That sleep
 * is most of the EAL's start-up time. The result does not depend on how long the sleep
 * lasts, only its precision does: the two reads of each pair are a few hundred nanoseconds
 * apart, so 20 ms still measures to about 0.01%, well inside the 10 MHz DPDK rounds the
 * result to. A vCPU paused between the two reads of a pair costs 5 times more than with
 * 100 ms (a 50 us pause: 0.25%). So while vs_eal_init runs, this nanosleep, which the
 * executable exports ahead of libc's, cuts that one call to 20 ms: the first 100 ms sleep
 * with a NULL remainder on the initialising thread. DPDK's other sleeps in drivers probed
 * during init (rte_delay_us_sleep, as in PCI drivers' reset waits) pass a remainder and
 * sleep as asked, as does every call of other threads, of other lengths, or after init.
 */
#define EAL_TSC_SLEEP_NS 100000000L
#define SHORT_TSC_SLEEP_NS 20000000L

static atomic_bool calibration_pending;
static atomic_bool calibration_shortened;
static pthread_t eal_init_thread;

int nanosleep(const struct timespec *req, struct timespec *rem)
{
	struct timespec shorter = { 0, SHORT_TSC_SLEEP_NS };

	if (rem == NULL && req != NULL && req->tv_sec == 0 && req->tv_nsec == EAL_TSC_SLEEP_NS &&
	    atomic_load_explicit(&calibration_pending, memory_order_acquire) &&
	    pthread_equal(pthread_self(), eal_init_thread) &&
	    atomic_exchange_explicit(&calibration_pending, false, memory_order_acq_rel)) {
		req = &shorter;
		atomic_store_explicit(&calibration_shortened, true, memory_order_release);
	}
	/* What glibc's nanosleep does; clock_nanosleep returns the error instead of setting errno. */
	int rc = clock_nanosleep(CLOCK_REALTIME, 0, req, rem);
	if (rc != 0) {
		errno = rc;
		return -1;
	}
	return 0;
}

int vs_eal_init(int argc, char **argv)
{
	eal_init_thread = pthread_self();
	atomic_store_explicit(&calibration_pending, true, memory_order_release);
	int rc = rte_eal_init(argc, argv);
	atomic_store_explicit(&calibration_pending, false, memory_order_release);
	return rc;
}

int vs_eal_tsc_calibration_shortened(void)
{
	return atomic_load_explicit(&calibration_shortened, memory_order_acquire);
}
