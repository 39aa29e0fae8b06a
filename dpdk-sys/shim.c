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
 * is most of the EAL's start-up time. So while vs_eal_init runs, this nanosleep, which the
 * executable exports ahead of libc's, cuts that one call to 1 ms (100 ms in DPDK, 20 ms
 * here until 2026-12-06, then 10 ms: a fifth of a 48 ms start): the first 100 ms sleep
 * with a NULL remainder on the initialising thread. DPDK's other sleeps in drivers probed
 * during init (rte_delay_us_sleep, as in PCI drivers' reset waits) pass a remainder and
 * sleep as asked, as does every call of other threads, of other lengths, or after init.
 *
 * In 1 ms the EAL's figure is an estimate: right to its 10 MHz rounding when its two reads
 * of each pair run back to back, 5% off when a vCPU pauses 50 us between them. The EAL
 * keeps it for DPDK's own delays (driver reset waits), where that is harmless; the switch
 * measures the frequency itself across the EAL's whole start, from pairs of reads it
 * checks (dataplane/src/dpdk/mod.rs, TscClockPair), and uses that.
 */
#define EAL_TSC_SLEEP_NS 100000000L
#define SHORT_TSC_SLEEP_NS 1000000L

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

/*
 * Before it knows which CPUs exist, the EAL asks sysfs for the NUMA node of every possible
 * lcore: access("/sys/devices/system/node/node<n>/cpu<c>") for each of the 128 lcores
 * (RTE_MAX_LCORE) and each node until one has it, 4,096 calls on a one-node machine, and
 * access("/sys/devices/system/cpu/cpu<c>/topology/core_id") about 1,000 times. A system
 * call takes ~3 us in this VM: 13 ms of a 60 ms start. While vs_eal_init runs, on its
 * thread, this access, which the executable exports ahead of libc's, answers those two
 * kinds of path from one read of the directories involved: the answers the files would
 * give. Every other call, and every call of other threads or after init, goes to faccessat
 * as libc's access does.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SYSFS_NODE "/sys/devices/system/node/node"
#define SYSFS_CPU "/sys/devices/system/cpu/cpu"
#define SCAN_MAX_NODES 64
#define SCAN_MAX_CPUS 1024

static atomic_bool eal_init_running;
/* 0: not read yet, 1: read, -1: could not be read (calls go to faccessat). */
static int node_scan, cpu_scan;
static uint64_t node_has_cpu[SCAN_MAX_NODES][SCAN_MAX_CPUS / 64];
static uint64_t cpu_has_core_id[SCAN_MAX_CPUS / 64];

/* The number at the start of `text` (digits up to a '/' or the end), below `limit`, with
 * *rest set past it; -1 if there is none. */
static long leading_number(const char *text, long limit, const char **rest)
{
	char *end;
	if (*text < '0' || *text > '9')
		return -1;
	long n = strtol(text, &end, 10);
	if (n >= limit || (*end != '/' && *end != '\0'))
		return -1;
	*rest = end;
	return n;
}

static void bit_set(uint64_t *bits, long i) { bits[i / 64] |= 1ull << (i % 64); }
static int bit_get(const uint64_t *bits, long i) { return (bits[i / 64] >> (i % 64)) & 1; }

/* Calls f(n, arg) for each entry of `dir` named `prefix` and a number below `limit`; -1 if
 * `dir` cannot be read, 1 otherwise. */
static int each_numbered_entry(const char *dir, const char *prefix, long limit, void (*f)(long, void *), void *arg)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return -1;
	size_t len = strlen(prefix);
	const char *rest;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		long n = strncmp(e->d_name, prefix, len) == 0 ? leading_number(e->d_name + len, limit, &rest) : -1;
		if (n >= 0 && *rest == '\0')
			f(n, arg);
	}
	closedir(d);
	return 1;
}

static void note_cpu_of_node(long cpu, void *node) { bit_set(node_has_cpu[*(long *)node], cpu); }

static void scan_node(long node, void *unused)
{
	(void)unused;
	char path[64];
	snprintf(path, sizeof(path), SYSFS_NODE "%ld", node);
	each_numbered_entry(path, "cpu", SCAN_MAX_CPUS, note_cpu_of_node, &node);
}

static void note_core_id(long cpu, void *unused)
{
	(void)unused;
	char path[96];
	snprintf(path, sizeof(path), SYSFS_CPU "%ld/topology/core_id", cpu);
	if (faccessat(AT_FDCWD, path, F_OK, 0) == 0)
		bit_set(cpu_has_core_id, cpu);
}

static int scan_nodes(void) { return each_numbered_entry("/sys/devices/system/node", "node", SCAN_MAX_NODES, scan_node, NULL); }
static int scan_cpus(void) { return each_numbered_entry("/sys/devices/system/cpu", "cpu", SCAN_MAX_CPUS, note_core_id, NULL); }

/* Whether the directories behind `state` have been read (reading them the first time). */
static int scanned(int *state, int (*scan)(void))
{
	if (*state == 0)
		*state = scan();
	return *state > 0;
}

/* 1 (exists), 0 (does not) or -1 (not a path answered here) for `path`. */
static int sysfs_answer(const char *path)
{
	const char *rest = "";
	if (strncmp(path, SYSFS_NODE, strlen(SYSFS_NODE)) == 0) {
		long node = leading_number(path + strlen(SYSFS_NODE), SCAN_MAX_NODES, &rest);
		long cpu = node >= 0 && strncmp(rest, "/cpu", 4) == 0 ? leading_number(rest + 4, SCAN_MAX_CPUS, &rest) : -1;
		if (cpu < 0 || *rest != '\0' || !scanned(&node_scan, scan_nodes))
			return -1;
		return bit_get(node_has_cpu[node], cpu);
	}
	if (strncmp(path, SYSFS_CPU, strlen(SYSFS_CPU)) == 0) {
		long cpu = leading_number(path + strlen(SYSFS_CPU), SCAN_MAX_CPUS, &rest);
		if (cpu < 0 || strcmp(rest, "/topology/core_id") != 0 || !scanned(&cpu_scan, scan_cpus))
			return -1;
		return bit_get(cpu_has_core_id, cpu);
	}
	return -1;
}

int access(const char *path, int mode)
{
	if (mode == F_OK && path != NULL && atomic_load_explicit(&eal_init_running, memory_order_acquire) &&
	    pthread_equal(pthread_self(), eal_init_thread)) {
		int known = sysfs_answer(path);
		if (known == 1)
			return 0;
		if (known == 0) {
			errno = ENOENT;
			return -1;
		}
	}
	return faccessat(AT_FDCWD, path, mode, 0);
}

int vs_eal_init(int argc, char **argv)
{
	eal_init_thread = pthread_self();
	atomic_store_explicit(&calibration_pending, true, memory_order_release);
	atomic_store_explicit(&eal_init_running, true, memory_order_release);
	int rc = rte_eal_init(argc, argv);
	atomic_store_explicit(&eal_init_running, false, memory_order_release);
	atomic_store_explicit(&calibration_pending, false, memory_order_release);
	return rc;
}

int vs_sysfs_answers_mismatched(void)
{
	int mismatched = 0;
	char path[96];
	for (int cpu = 0; cpu < 256; cpu++) {
		for (int node = -1; node < SCAN_MAX_NODES; node++) {
			if (node < 0)
				snprintf(path, sizeof(path), SYSFS_CPU "%d/topology/core_id", cpu);
			else
				snprintf(path, sizeof(path), SYSFS_NODE "%d/cpu%d", node, cpu);
			int answer = sysfs_answer(path);
			if (answer < 0)
				return -1;
			mismatched += answer != (faccessat(AT_FDCWD, path, F_OK, 0) == 0);
		}
	}
	return mismatched;
}


int vs_eal_tsc_calibration_shortened(void)
{
	return atomic_load_explicit(&calibration_shortened, memory_order_acquire);
}

/*
 * memif rx wake-ups. The memif protocol has interrupts: after a burst, a sender writes to
 * the ring's eventfd unless the receiver has set MEMIF_RING_FLAG_MASK_INT in the ring's
 * flags. DPDK 22.11's memif driver always sets it on its rx rings and has no rx interrupt
 * API (rx_queue_intr_enable is unsupported), so an idle worker could only sleep on a timer.
 * These helpers find the flags word and the eventfd so the worker can unmask the ring and
 * wait on the eventfd while idle, as VPP's memif interrupt mode does.
 *
 * They read the driver's private structures, which DPDK does not install: the layouts
 * below are 22.11's (rte_eth_memif.h; offsets checked against eth_memif_rx as built by
 * Debian 12), compiled only against 22.11, used only when the running DPDK is 22.11, and
 * every read is checked (the device's rx function, the queue's port and ring type, the
 * region bounds, the ring's cookie) before anything is written.
 */
#include <stddef.h>
#include <string.h>
#include <rte_ethdev.h>
#include <rte_version.h>

#if RTE_VERSION >= RTE_VERSION_NUM(22, 11, 0, 0) && RTE_VERSION < RTE_VERSION_NUM(22, 12, 0, 0)
#define VS_MEMIF_WAKE 1

/* struct memif_queue */
struct vs_memif_queue {
	void *mempool;
	void *pmd;
	uint32_t type; /* memif_ring_type_t: 0 client to server, 1 server to client */
	uint16_t region;
	uint16_t in_port;
	uint32_t ring_offset;
	uint16_t last_head;
	uint16_t last_tail;
	void *buffers;
	uint64_t n_pkts;
	uint64_t n_bytes;
	struct rte_intr_handle *intr_handle;
	uint8_t log2_ring_size;
};
_Static_assert(offsetof(struct vs_memif_queue, in_port) == 0x16, "memif_queue.in_port");
_Static_assert(offsetof(struct vs_memif_queue, ring_offset) == 0x18, "memif_queue.ring_offset");
_Static_assert(offsetof(struct vs_memif_queue, intr_handle) == 0x38, "memif_queue.intr_handle");

/* struct memif_region */
struct vs_memif_region {
	void *addr;
	uint64_t region_size;
	int fd;
	uint32_t pkt_buffer_offset;
};

/* The head of memif_ring_t (memif.h, the protocol's shared layout). */
struct vs_memif_ring_head {
	uint32_t cookie;
	uint16_t flags;
	uint16_t head;
};
#define VS_MEMIF_COOKIE 0x3E31F20u
#define VS_MEMIF_MAX_REGIONS 256

/* struct rte_eth_dev (ethdev_driver.h): each of rte_eth_devices[] is 0x4080 bytes, its rx
 * function first and process_private (memif's pmd_process_private, whose first member is
 * the array of region pointers) at 0x38. */
extern char rte_eth_devices[];
#define VS_ETH_DEV_SIZE 0x4080
#define VS_ETH_DEV_PROCESS_PRIVATE 0x38
#endif

int vs_memif_wake_supported(void)
{
#ifdef VS_MEMIF_WAKE
	return strncmp(rte_version(), "DPDK 22.11", 10) == 0;
#else
	return 0;
#endif
}

uint16_t *vs_memif_rx_ring_flags(uint16_t port_id, uint16_t queue_id, int *event_fd)
{
#ifdef VS_MEMIF_WAKE
	if (port_id >= RTE_MAX_ETHPORTS || queue_id >= RTE_MAX_QUEUES_PER_PORT)
		return NULL;
	const struct rte_eth_fp_ops *ops = &rte_eth_fp_ops[port_id];
	char *dev = rte_eth_devices + (size_t)port_id * VS_ETH_DEV_SIZE;
	eth_rx_burst_t dev_rx;
	memcpy(&dev_rx, dev, sizeof(dev_rx));
	if (dev_rx == NULL || dev_rx != ops->rx_pkt_burst || ops->rxq.data == NULL)
		return NULL;
	const struct vs_memif_queue *mq = ops->rxq.data[queue_id];
	if (mq == NULL || mq->in_port != port_id || mq->type > 1 || mq->region >= VS_MEMIF_MAX_REGIONS)
		return NULL;
	struct vs_memif_region **regions;
	memcpy(&regions, dev + VS_ETH_DEV_PROCESS_PRIVATE, sizeof(regions));
	if (regions == NULL)
		return NULL;
	const struct vs_memif_region *r = regions[mq->region];
	if (r == NULL || r->addr == NULL ||
	    (uint64_t)mq->ring_offset + sizeof(struct vs_memif_ring_head) > r->region_size)
		return NULL;
	struct vs_memif_ring_head *ring = (struct vs_memif_ring_head *)((char *)r->addr + mq->ring_offset);
	if (ring->cookie != VS_MEMIF_COOKIE)
		return NULL;
	int fd = rte_intr_fd_get(mq->intr_handle);
	if (fd < 0)
		return NULL;
	*event_fd = fd;
	return &ring->flags;
#else
	(void)port_id;
	(void)queue_id;
	(void)event_fd;
	return NULL;
#endif
}
