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
 * DPDK's EAL measures it: it reads CLOCK_MONOTONIC_RAW and the TSC, sleeps 100 ms with
 * nanosleep, reads both again, and divides. That sleep is most of the EAL's start-up time.
 * The result does not depend on how long the sleep lasts, only its precision does: the
 * reads are microseconds apart, so 20 ms still measures to about 0.01%, ten times finer
 * than the 10 MHz DPDK rounds the result to. So while vs_eal_init runs, this nanosleep,
 * which the executable exports ahead of libc's, cuts a 100 ms sleep of the initialising
 * thread to 20 ms. Every other call (other threads, other lengths, after init) sleeps as
 * asked.
 */
#define EAL_TSC_SLEEP_NS 100000000L
#define SHORT_TSC_SLEEP_NS 20000000L

static atomic_bool eal_initialising;
static pthread_t eal_init_thread;

int nanosleep(const struct timespec *req, struct timespec *rem)
{
	struct timespec shorter = { 0, SHORT_TSC_SLEEP_NS };

	if (atomic_load_explicit(&eal_initialising, memory_order_acquire) &&
	    pthread_equal(pthread_self(), eal_init_thread) && req != NULL &&
	    req->tv_sec == 0 && req->tv_nsec == EAL_TSC_SLEEP_NS)
		req = &shorter;
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
	atomic_store_explicit(&eal_initialising, true, memory_order_release);
	int rc = rte_eal_init(argc, argv);
	atomic_store_explicit(&eal_initialising, false, memory_order_release);
	return rc;
}
