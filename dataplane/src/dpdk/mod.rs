//! Safe wrappers over DPDK: EAL, mempool, ethdev port, rx/tx queue, mbuf.
//!
//! This is the only module of `dataplane` allowed to use `unsafe`. Everything it exports is safe
//! to call; the invariants that make it so are written next to each `unsafe` block.
//!
//! Lifetimes, as DPDK needs them:
//! - `Eal` is initialised once per process and torn down when the last `Arc<Eal>` drops. Every
//!   mempool and port holds one, so the EAL outlives them.
//! - `RxQueue`/`TxQueue` hold an `Arc` of their port, so a port is closed only after every queue
//!   handle is gone. A queue handle is handed out once (see `EthPort::rx_queue`), so exactly one
//!   thread ever polls a queue: DPDK queues are not thread-safe.
//! - `Mbuf`s must be gone before their mempool is freed. The switch guarantees it by joining its
//!   workers (the only holders of mbufs) before dropping ports and the mempool.
#![allow(unsafe_code)]

use std::ffi::{c_char, CStr, CString};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use dpdk_sys as sys;

mod packet_socket;
use packet_socket::{PacketRing, PacketSender, RingCounters};

/// Devargs prefix of ports that are kernel interfaces attached through packet sockets, not
/// ethdevs (`system:veth0`; see [`packet_socket`]).
pub const SYSTEM_PORT_PREFIX: &str = "system:";

/// Mbufs moved per rx/tx call. 32 is DPDK's customary burst: large enough to amortise the
/// per-call cost, small enough that a burst's headers stay in L1.
pub const BURST: usize = 32;

/// Bytes the PMD leaves before the frame in each mbuf, for headers pushed later (tunnels).
pub const MBUF_HEADROOM: u32 = sys::RTE_PKTMBUF_HEADROOM;

/// An error from a DPDK call, with the call that failed and DPDK's own text for the errno.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{op}: {msg}")]
pub struct DpdkError {
    pub op: String,
    /// Positive errno value (DPDK returns them negated).
    pub code: i32,
    pub msg: String,
}

impl DpdkError {
    fn new(op: impl Into<String>, code: i32) -> Self {
        let code = code.abs();
        // SAFETY: rte_strerror accepts any errno value and returns a pointer to a static or
        // thread-local NUL-terminated string that stays valid until the next call on this
        // thread; we copy it out at once.
        let msg = unsafe { CStr::from_ptr(sys::rte_strerror(code)) }.to_string_lossy().into_owned();
        DpdkError { op: op.into(), code, msg }
    }

    fn from_rte_errno(op: impl Into<String>) -> Self {
        // SAFETY: reads this thread's rte_errno through a C helper; no preconditions.
        let code = unsafe { sys::vs_rte_errno() };
        Self::new(op, code)
    }
}

fn check(op: impl FnOnce() -> String, rc: i32) -> Result<i32, DpdkError> {
    if rc < 0 {
        Err(DpdkError::new(op(), rc))
    } else {
        Ok(rc)
    }
}

const EAL_NEVER: u8 = 0;
const EAL_UP: u8 = 1;
const EAL_DOWN: u8 = 2;
static EAL_STATE: AtomicU8 = AtomicU8::new(EAL_NEVER);

/// The DPDK environment abstraction layer. At most one per process, ever: DPDK cannot be
/// initialised again after `rte_eal_cleanup`.
#[derive(Debug)]
pub struct Eal {
    tsc_hz: u64,
    tsc_source: TscSource,
    runtime_dir: std::path::PathBuf,
}

/// Where [`Eal::tsc_hz`] comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TscSource {
    /// The EAL's own figure: the CPU reported it (CPUID, MSR), or the EAL measured it in
    /// its full 100 ms window.
    Eal,
    /// The EAL only estimated it in a 1 ms window (dpdk-sys/shim.c), so the switch measured
    /// it across the EAL's whole start, `window_us` long. The EAL keeps its estimate for
    /// DPDK's own delays.
    Measured { window_us: u64, eal_estimate_hz: u64 },
    /// As `Measured`, but that measurement (`measured_hz`) was more than 10% from the
    /// EAL's estimate, which is used instead: the TSC may differ between cores.
    EalEstimate { measured_hz: u64 },
}

impl std::fmt::Display for TscSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TscSource::Eal => write!(f, "the EAL's: reported by the CPU or measured in 100 ms"),
            TscSource::Measured { window_us, eal_estimate_hz } => write!(
                f,
                "measured across the EAL's start, {:.1} ms; the EAL's own 1 ms estimate: {eal_estimate_hz} Hz",
                *window_us as f64 / 1000.0
            ),
            TscSource::EalEstimate { measured_hz } => write!(
                f,
                "the EAL's 1 ms estimate: measured across its start, the TSC gave {measured_hz} Hz, over 10% away"
            ),
        }
    }
}

/// A TSC reading and the kernel's raw monotonic clock, taken as close together as the CPU
/// allows: of 16 tries of TSC, clock, TSC, the one whose TSC reads were nearest, so a try
/// interrupted (or a vCPU paused) between its reads does not count.
#[derive(Clone, Copy, Debug)]
struct TscClockPair {
    tsc: u64,
    nanos: u64,
}

impl TscClockPair {
    fn read() -> Self {
        let tries = (0..16).map(|_| {
            let before = tsc();
            let nanos = monotonic_raw_nanos();
            let spread = tsc().wrapping_sub(before);
            (spread, TscClockPair { tsc: before + spread / 2, nanos })
        });
        tries.min_by_key(|&(spread, _)| spread).expect("16 tries").1
    }
}

fn monotonic_raw_nanos() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec into `ts`; CLOCK_MONOTONIC_RAW exists on
    // every Linux DPDK 22.11 runs on.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_RAW, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The TSC's frequency from `start` to now, over at least 5 ms. The pairs' reads are well
/// under a microsecond apart, so the figure is good to about 0.01% (the EAL's start, the
/// usual window here, is longer still).
fn tsc_hz_since(start: TscClockPair) -> (u64, u64) {
    const MIN_WINDOW_NS: u64 = 5_000_000;
    let mut end = TscClockPair::read();
    let elapsed = end.nanos.saturating_sub(start.nanos);
    if elapsed < MIN_WINDOW_NS {
        std::thread::sleep(std::time::Duration::from_nanos(MIN_WINDOW_NS - elapsed));
        end = TscClockPair::read();
    }
    let window_ns = end.nanos.saturating_sub(start.nanos).max(1);
    let cycles = end.tsc.wrapping_sub(start.tsc);
    ((cycles as u128 * 1_000_000_000 / window_ns as u128) as u64, window_ns / 1000)
}

/// The TSC frequency to use, given the EAL's figure and whether the EAL only estimated it
/// in its shortened window (then `measured` is the switch's own: Hz and window in µs).
fn choose_tsc_hz(eal_hz: u64, shortened: bool, measured: impl FnOnce() -> (u64, u64)) -> (u64, TscSource) {
    if !shortened {
        return (eal_hz, TscSource::Eal);
    }
    let (measured_hz, window_us) = measured();
    if measured_hz.abs_diff(eal_hz) > eal_hz / 10 {
        return (eal_hz, TscSource::EalEstimate { measured_hz });
    }
    (measured_hz, TscSource::Measured { window_us, eal_estimate_hz: eal_hz })
}

impl Eal {
    /// Initialises DPDK with `args` (the first is the program name, as argv\[0\]).
    ///
    /// # Errors
    /// Fails if the EAL was initialised before in this process, or if DPDK rejects the
    /// arguments or cannot get its memory; DPDK also prints its reason on stderr.
    pub fn init(args: &[String]) -> Result<Arc<Eal>, DpdkError> {
        if EAL_STATE.compare_exchange(EAL_NEVER, EAL_UP, Ordering::AcqRel, Ordering::Acquire).is_err() {
            return Err(DpdkError::new("rte_eal_init (already initialised once)", 114));
        }
        // The start of the switch's own TSC measurement, which spans the EAL's start.
        let start = TscClockPair::read();
        let owned: Vec<CString> =
            args.iter().map(|a| CString::new(a.as_str()).expect("EAL argument contains NUL")).collect();
        // rte_eal_init may permute argv, so it gets its own array of pointers.
        let mut argv: Vec<*mut c_char> = owned.iter().map(|s| s.as_ptr() as *mut c_char).collect();
        argv.push(std::ptr::null_mut());
        // SAFETY: argv holds argc valid NUL-terminated strings followed by NULL; `owned` keeps
        // them alive for the call, and DPDK copies what it keeps. The state flag above makes
        // this the only call in the process. vs_eal_init is rte_eal_init with a 1 ms
        // estimate of the TSC frequency instead of a 100 ms measurement (dpdk-sys/shim.c).
        let rc = unsafe { sys::vs_eal_init(owned.len() as i32, argv.as_mut_ptr()) };
        if rc < 0 {
            EAL_STATE.store(EAL_DOWN, Ordering::Release);
            return Err(DpdkError::from_rte_errno("rte_eal_init"));
        }
        // SAFETY: the EAL is initialised.
        let eal_tsc_hz = unsafe { sys::rte_get_tsc_hz() };
        // SAFETY: reads a flag the shim set during vs_eal_init, which has returned.
        let shortened = unsafe { sys::vs_eal_tsc_calibration_shortened() } != 0;
        let (tsc_hz, tsc_source) = choose_tsc_hz(eal_tsc_hz, shortened, || tsc_hz_since(start));
        // SAFETY: returns a pointer to the EAL's static NUL-terminated path string.
        let runtime_dir = unsafe { CStr::from_ptr(sys::rte_eal_get_runtime_dir()) };
        let runtime_dir = std::path::PathBuf::from(runtime_dir.to_string_lossy().into_owned());
        Ok(Arc::new(Eal { tsc_hz, tsc_source, runtime_dir }))
    }

    /// Frequency of the time-stamp counter that [`tsc`] reads (see [`TscSource`]).
    pub fn tsc_hz(&self) -> u64 {
        self.tsc_hz
    }

    /// Where [`Eal::tsc_hz`] comes from.
    pub fn tsc_source(&self) -> TscSource {
        self.tsc_source
    }

    /// Bytes of memory the EAL has mapped into its heaps on every socket: the hugepages it
    /// holds now (it maps more as ports and pools need them).
    pub fn mapped_bytes(&self) -> u64 {
        // SAFETY: the EAL is initialised (self exists); rte_socket_count only reads its config.
        let sockets = unsafe { sys::rte_socket_count() };
        (0..sockets)
            .map(|i| {
                let mut stats = sys::rte_malloc_socket_stats::default();
                // SAFETY: the EAL is initialised; idx < rte_socket_count(). The heap lock is
                // taken inside; `stats` is a valid struct the call fills.
                let ok = unsafe { sys::rte_malloc_get_socket_stats(sys::rte_socket_id_by_idx(i), &mut stats) } == 0;
                if ok {
                    stats.heap_totalsz_bytes as u64
                } else {
                    0
                }
            })
            .sum()
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: the last Arc<Eal> is gone, so no mempool, port or queue handle remains (each
        // holds an Arc). Cleanup returns hugepage memory to the system.
        unsafe {
            sys::rte_eal_cleanup();
        }
        EAL_STATE.store(EAL_DOWN, Ordering::Release);
        // The EAL leaves its runtime directory behind, and unlinks its telemetry sockets only
        // at exit. Remove both now; remove_dir only succeeds on an empty directory, so
        // anything another tool put there stays.
        if let Ok(entries) = std::fs::read_dir(&self.runtime_dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("dpdk_telemetry") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&self.runtime_dir);
    }
}

/// DPDK's version string, e.g. "DPDK 22.11.11".
pub fn version() -> String {
    // SAFETY: rte_version returns a pointer to a static NUL-terminated string; no EAL needed.
    unsafe { CStr::from_ptr(sys::rte_version()) }.to_string_lossy().into_owned()
}

/// Two atomic words side by side: one slot of an open-addressing hash table (key, value),
/// aligned so a slot never straddles a cache line.
#[repr(C, align(16))]
#[derive(Default)]
pub struct AtomicPair(pub AtomicU64, pub AtomicU64);

/// A zero-initialised array of [`AtomicPair`]s for large lookup tables, on transparent
/// hugepages where the kernel allows them (`madvise`): a table of megabytes probed at random
/// costs a TLB miss per probe on 4 KiB pages. Falls back to a plain heap allocation.
pub struct ZeroedPairs {
    data: NonNull<AtomicPair>,
    len: usize,
    owner: PairsOwner,
}

enum PairsOwner {
    Mapped { base: NonNull<libc::c_void>, map_len: usize },
    Heap(#[allow(dead_code)] Box<[AtomicPair]>),
}

// SAFETY: the memory is only reachable as &[AtomicPair], which is Send and Sync; it is owned
// by this value and released once, on drop.
unsafe impl Send for ZeroedPairs {}
// SAFETY: as above.
unsafe impl Sync for ZeroedPairs {}

const HUGE_2M: usize = 2 << 20;

impl ZeroedPairs {
    pub fn new(len: usize) -> ZeroedPairs {
        let bytes = len.max(1) * std::mem::size_of::<AtomicPair>();
        let heap = || {
            let mut b: Box<[AtomicPair]> = (0..len).map(|_| AtomicPair::default()).collect();
            let data = NonNull::new(b.as_mut_ptr()).expect("boxed slices are non-null");
            ZeroedPairs { data, len, owner: PairsOwner::Heap(b) }
        };
        if bytes < HUGE_2M {
            return heap();
        }
        // One extra hugepage of slack lets the data start on a 2 MiB boundary.
        let map_len = bytes.next_multiple_of(HUGE_2M) + HUGE_2M;
        let Some(base) = map_anonymous(map_len) else {
            return heap();
        };
        let offset = (base.as_ptr() as usize).next_multiple_of(HUGE_2M) - base.as_ptr() as usize;
        // SAFETY: offset < HUGE_2M and offset + bytes <= map_len, so the pointer and the range
        // stay inside the mapping. madvise is a hint: failure leaves 4 KiB pages, still valid.
        let data = unsafe {
            let data = (base.as_ptr() as *mut u8).add(offset);
            libc::madvise(data as *mut libc::c_void, bytes.next_multiple_of(HUGE_2M), libc::MADV_HUGEPAGE);
            data as *mut AtomicPair
        };
        ZeroedPairs {
            data: NonNull::new(data).expect("inside the mapping"),
            len,
            owner: PairsOwner::Mapped { base, map_len },
        }
    }
}

/// A fresh private anonymous mapping of `len` bytes (zero-filled pages, none mapped yet), or
/// None when the kernel refuses it.
fn map_anonymous(len: usize) -> Option<NonNull<libc::c_void>> {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions; the
    // kernel returns fresh zero-filled pages or MAP_FAILED.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    NonNull::new(base).filter(|b| b.as_ptr() != libc::MAP_FAILED)
}

impl std::ops::Deref for ZeroedPairs {
    type Target = [AtomicPair];

    #[inline(always)]
    fn deref(&self) -> &[AtomicPair] {
        // SAFETY: `data` points to `len` initialised AtomicPairs (zero bytes are a valid
        // AtomicU64) in memory owned by self, 16-byte aligned; atomics may be shared.
        unsafe { std::slice::from_raw_parts(self.data.as_ptr(), self.len) }
    }
}

impl Drop for ZeroedPairs {
    fn drop(&mut self) {
        if let PairsOwner::Mapped { base, map_len } = self.owner {
            // SAFETY: unmaps exactly the mapping made in `new`; no borrow of it outlives self.
            unsafe { libc::munmap(base.as_ptr(), map_len) };
        }
    }
}

/// Asks the CPU to start loading the cache line of `r`. A hint: never faults, never blocks.
#[inline(always)]
pub fn prefetch<T>(r: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint that never faults; `r` is a valid reference anyway.
    unsafe {
        core::arch::x86_64::_mm_prefetch(r as *const T as *const i8, core::arch::x86_64::_MM_HINT_T0)
    }
}

/// Maps the pages of a buffer's unused room, before it is filled. A page first touched by a
/// write faults on its own: 1.3 µs each on this VM, against 0.7 when the kernel maps a range
/// at once; a 10,000-rule change fills about 1,500 fresh pages this way. Pages already mapped
/// (a heap that has held such buffers before) are left alone: asking the kernel to map them
/// again costs 0.2-0.4 µs each, asking which are mapped (`mincore`) 0.005. Only whole pages
/// inside the room, only rooms of 64 KiB or more; a no-op where the kernel has no
/// MADV_POPULATE_WRITE (before Linux 5.14).
pub fn populate<T>(room: &mut [std::mem::MaybeUninit<T>]) {
    const PAGE: usize = 4096;
    /// Pages asked about per `mincore` call (its answer is a byte per page, on the stack).
    const CHUNK: usize = 4096;
    let start = room.as_mut_ptr() as usize;
    let len = std::mem::size_of_val(room);
    if len < 64 << 10 {
        return;
    }
    let (from, to) = ((start + PAGE - 1) & !(PAGE - 1), (start + len) & !(PAGE - 1));
    let map = |at: usize, pages: usize| {
        // SAFETY: callers pass whole pages inside [from, to), which lies inside `room`,
        // memory this process owns and may write. MADV_POPULATE_WRITE maps its pages as a
        // write would, without changing what they hold; the result is only an optimisation,
        // so errors are ignored.
        unsafe { libc::madvise(at as *mut libc::c_void, pages * PAGE, libc::MADV_POPULATE_WRITE) };
    };
    let mut resident = [0u8; CHUNK];
    let mut at = from;
    while at < to {
        let pages = ((to - at) / PAGE).min(CHUNK);
        // SAFETY: mincore only reads the page tables of [at, at + pages pages), inside `room`,
        // and writes one byte per page into `resident`, which has room for CHUNK >= pages.
        if unsafe { libc::mincore(at as *mut libc::c_void, pages * PAGE, resident.as_mut_ptr()) } != 0 {
            map(at, (to - at) / PAGE);
            return;
        }
        let mut i = 0;
        while i < pages {
            if resident[i] & 1 != 0 {
                i += 1;
                continue;
            }
            let absent = i;
            while i < pages && resident[i] & 1 == 0 {
                i += 1;
            }
            map(at + absent * PAGE, i - absent);
        }
        at += pages * PAGE;
    }
}

/// Largest buffer the C heap serves from its arena rather than from a mapping of its own
/// (glibc's limit for `M_MMAP_THRESHOLD` on 64-bit).
const HEAP_BUFFER_MAX: usize = 32 << 20;

/// Tunes glibc's heap for a control plane that now and then builds tables of megabytes and
/// frees the ones they replace, so that memory once mapped is used again rather than mapped
/// and zeroed afresh, page by page, for each big transaction (a fresh page costs about 1 µs
/// here, and a 10,000-rule change needs 1,700 of them):
/// - one arena: threads started later share the main one (the control threads take turns;
///   workers do not allocate per packet), so memory one thread frees another reuses;
/// - buffers up to 32 MiB from that arena, not from mappings `free` gives back at once;
/// - up to twice that free at the top of the heap kept rather than trimmed (what glibc
///   settles on by itself once it has freed a mapped buffer of 32 MiB).
///
/// Call it first thing in `main`, before other threads exist. False if glibc refused one.
pub fn tune_heap() -> bool {
    // SAFETY: mallopt only changes the allocator's parameters; the values are in range for
    // each (glibc returns 0 for one it refuses and changes nothing).
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1) == 1
            && libc::mallopt(libc::M_MMAP_THRESHOLD, HEAP_BUFFER_MAX as libc::c_int) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * HEAP_BUFFER_MAX as libc::c_int) == 1
    }
}

/// Maps `bytes` of the heap tuned by [`tune_heap`] now and leaves them free in it: the first
/// big transaction then finds its memory mapped, as later ones do.
pub fn warm_heap(bytes: usize) {
    let mut room: Vec<u8> = Vec::with_capacity(bytes.min(HEAP_BUFFER_MAX));
    populate(room.spare_capacity_mut());
}

/// A memif connection's shared memory (its rings and, in copy mode, its packet buffers) as
/// one line of `/proc/self/maps` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemifRegionMapping {
    pub start: usize,
    pub end: usize,
    /// The memfd's inode: a region mapped anew at the same address is another file.
    pub inode: u64,
}

impl MemifRegionMapping {
    pub fn bytes(&self) -> usize {
        self.end - self.start
    }
}

/// The memif regions in `maps`, the text of `/proc/self/maps`: shared writable mappings of
/// a memfd whose name says memif region. The name goes with the file to the peer, so both
/// sides of a connection see it: DPDK names its memfds `memif_region_N`, libmemif
/// `memif region N`, VPP `memifX/Y region N`.
pub fn memif_region_mappings(maps: &str) -> Vec<MemifRegionMapping> {
    maps.lines()
        .filter_map(|line| {
            // Five fields, then the path, which may hold spaces.
            let mut fields = [""; 5];
            let mut rest = line;
            for field in &mut fields {
                rest = rest.trim_start();
                let end = rest.find(|c: char| c.is_ascii_whitespace())?;
                (*field, rest) = rest.split_at(end);
            }
            let [range, perms, _offset, _device, inode] = fields;
            let path = rest.trim();
            let name = path.strip_prefix("/memfd:")?.trim_end_matches(" (deleted)");
            if !name.contains("memif") || !name.contains("region") || !perms.starts_with("rw") || !perms.ends_with('s')
            {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some(MemifRegionMapping {
                start: usize::from_str_radix(start, 16).ok()?,
                end: usize::from_str_radix(end, 16).ok()?,
                inode: inode.parse().ok()?,
            })
        })
        .collect()
}

/// Maps in every page of `region` now (`MADV_POPULATE_WRITE`, Linux 5.14 and later), so the
/// worker that copies packets through it later takes no page fault there.
pub fn map_in_memif_region(region: &MemifRegionMapping) -> std::io::Result<()> {
    // SAFETY: MADV_POPULATE_WRITE maps the range's pages as writes would, without changing
    // what they hold, and fails where nothing is mapped. Nothing depends on the range still
    // being the region (the driver may have unmapped it since the maps were read): whatever
    // is mapped there now, at most `region.bytes()` of it, is only made resident.
    let rc = unsafe { libc::madvise(region.start as *mut libc::c_void, region.bytes(), libc::MADV_POPULATE_WRITE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Raises the process's soft limit of open files to its hard limit: each `system:` port
/// holds a few sockets, and 256 of them pass the usual soft limit of 1024. Returns the limit
/// now in force.
pub fn raise_open_file_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit into `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 0;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
        // SAFETY: setrlimit reads one rlimit; raising the soft limit up to the hard one is
        // always allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return raised.rlim_cur;
        }
    }
    lim.rlim_cur
}

/// Sets how late the kernel may wake the calling thread from a sleep (its timer slack;
/// 50 µs by default), so an idle worker's short sleeps stay short. False if refused.
pub fn set_timer_slack(nanos: u64) -> bool {
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches no memory of ours.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, nanos as libc::c_ulong, 0, 0, 0) == 0 }
}

/// Runs `f` with DPDK log type `name` (as "lib.ethdev") raised to critical-only, for calls
/// whose errors are expected answers; its level is restored after.
fn quiet_log<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let Ok(name) = CString::new(name) else { return f() };
    // SAFETY: a NUL-terminated name; registering a name that exists returns its id.
    let log_type = unsafe { sys::rte_log_register(name.as_ptr()) };
    // SAFETY: plain integer arguments; a negative id was not registered and is skipped.
    let level = if log_type >= 0 { unsafe { sys::rte_log_get_level(log_type as u32) } } else { -1 };
    if level < 0 {
        return f();
    }
    // SAFETY: a registered log type and a valid level.
    unsafe { sys::rte_log_set_level(log_type as u32, sys::RTE_LOG_CRIT) };
    let out = f();
    // SAFETY: as above, back to the level read before.
    unsafe { sys::rte_log_set_level(log_type as u32, level as u32) };
    out
}

/// Reads the CPU time-stamp counter: cheap (no syscall), for cycle accounting on workers.
#[inline(always)]
pub fn tsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: rdtsc has no preconditions on x86_64.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: rte_rdtsc reads a counter; no preconditions.
        unsafe { sys::rte_rdtsc() }
    }
}

/// Registration of the calling thread as a DPDK lcore, so it gets its own mempool cache.
/// Unregisters on drop. Not `Send`: it belongs to the thread that made it.
pub struct LcoreRegistration {
    lcore_id: u32,
    _not_send: PhantomData<*const ()>,
}

impl LcoreRegistration {
    /// Registers the calling thread. Pin the thread to its core first: DPDK records the
    /// thread's affinity at registration.
    pub fn register(_eal: &Eal) -> Result<Self, DpdkError> {
        // SAFETY: the EAL is initialised (we hold a reference to it); registration only
        // touches this thread's per-lcore variables.
        let rc = unsafe { sys::rte_thread_register() };
        if rc < 0 {
            return Err(DpdkError::from_rte_errno("rte_thread_register"));
        }
        // SAFETY: reads this thread's per-lcore variable.
        let lcore_id = unsafe { sys::rte_lcore_id() };
        Ok(LcoreRegistration { lcore_id, _not_send: PhantomData })
    }

    pub fn lcore_id(&self) -> u32 {
        self.lcore_id
    }
}

impl Drop for LcoreRegistration {
    fn drop(&mut self) {
        // SAFETY: this thread registered itself (the value is !Send, so we are on it).
        unsafe { sys::rte_thread_unregister() }
    }
}

/// A pool of packet buffers in hugepage memory.
pub struct Mempool {
    ptr: NonNull<sys::rte_mempool>,
    _eal: Arc<Eal>,
}

// SAFETY: rte_mempool get/put are thread-safe (lockless ring plus per-lcore caches); the
// pointer itself is immutable after creation.
unsafe impl Send for Mempool {}
// SAFETY: as above; &Mempool only allows thread-safe operations.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `count` mbufs with `data_room` bytes each (headroom included) and a
    /// per-lcore cache of `cache` mbufs.
    pub fn create(eal: &Arc<Eal>, name: &str, count: u32, cache: u32, data_room: u16) -> Result<Mempool, DpdkError> {
        let cname = CString::new(name).expect("mempool name contains NUL");
        // SAFETY: the EAL is initialised; the name is a valid C string that DPDK copies.
        // SOCKET_ID_ANY (-1) lets DPDK place it; this switch runs on one NUMA node.
        let ptr = unsafe { sys::rte_pktmbuf_pool_create(cname.as_ptr(), count, cache, 0, data_room, -1) };
        match NonNull::new(ptr) {
            Some(ptr) => Ok(Mempool { ptr, _eal: eal.clone() }),
            None => Err(DpdkError::from_rte_errno(format!(
                "rte_pktmbuf_pool_create({name}, {count} mbufs of {data_room} B)"
            ))),
        }
    }

    /// Mbufs free in the pool (including per-lcore caches).
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is alive; the count is a racy but memory-safe read.
        unsafe { sys::rte_mempool_avail_count(self.ptr.as_ptr()) }
    }

    /// Mbufs taken from the pool.
    pub fn in_use(&self) -> u32 {
        // SAFETY: as for `available`.
        unsafe { sys::rte_mempool_in_use_count(self.ptr.as_ptr()) }
    }

    /// Takes one empty mbuf, or `None` when the pool is exhausted.
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is alive; a non-null result is a fresh mbuf we now own.
        NonNull::new(unsafe { sys::rte_pktmbuf_alloc(self.ptr.as_ptr()) }).map(Mbuf)
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: every port using this pool holds an Arc<Mempool> and is closed before this
        // runs; workers (the holders of mbufs) are joined before the last Arc drops.
        unsafe { sys::rte_mempool_free(self.ptr.as_ptr()) }
    }
}

/// One packet buffer (a chain of segments; the switch uses single-segment mbufs).
/// Dropping it returns it to its pool.
#[repr(transparent)]
pub struct Mbuf(NonNull<sys::rte_mbuf>);

// SAFETY: an Mbuf is an owning handle; moving it to another thread moves that ownership. The
// free path (rte_pktmbuf_free) is thread-safe.
unsafe impl Send for Mbuf {}

impl Mbuf {
    #[inline(always)]
    fn raw(&self) -> &sys::rte_mbuf {
        // SAFETY: the pointer came from DPDK as a live mbuf that this handle owns (or shares
        // through the reference count), so it is valid for reads while `self` lives.
        unsafe { self.0.as_ref() }
    }

    /// The bytes of the first segment (the whole frame for single-segment mbufs).
    #[inline(always)]
    pub fn data(&self) -> &[u8] {
        let m = self.raw();
        // SAFETY: buf_addr + data_off points to data_len initialised bytes inside the mbuf's
        // buffer (DPDK's invariant for a received or appended mbuf). Nobody writes them while
        // we hold a shared borrow: writes need `data_mut`, which requires sole ownership.
        unsafe { std::slice::from_raw_parts((m.buf_addr as *const u8).add(m.data_off as usize), m.data_len as usize) }
    }

    /// Mutable bytes of the first segment, if this handle is the only reference to the
    /// buffer (a shared buffer, e.g. one being flooded, must not be changed in place).
    #[inline(always)]
    pub fn data_mut(&mut self) -> Option<&mut [u8]> {
        let m = self.raw();
        if m.refcnt != 1 || m.ol_flags & (sys::RTE_MBUF_F_INDIRECT | sys::RTE_MBUF_F_EXTERNAL) != 0 {
            return None;
        }
        let (addr, off, len) = (m.buf_addr as *mut u8, m.data_off as usize, m.data_len as usize);
        // SAFETY: as in `data`, and the refcount of 1 with a direct buffer means no other
        // handle can read these bytes while the mutable borrow lives.
        Some(unsafe { std::slice::from_raw_parts_mut(addr.add(off), len) })
    }

    /// Frame length over all segments.
    #[inline(always)]
    pub fn pkt_len(&self) -> u32 {
        self.raw().pkt_len
    }

    /// DPDK port id the mbuf was received on.
    #[inline(always)]
    pub fn rx_port(&self) -> u16 {
        self.raw().port
    }

    /// Asks the CPU to bring the frame's first cache line in ahead of use. A hint only.
    #[inline(always)]
    pub fn prefetch(&self) {
        #[cfg(target_arch = "x86_64")]
        {
            let m = self.raw();
            let p = (m.buf_addr as *const u8).wrapping_add(m.data_off as usize) as *const i8;
            // SAFETY: prefetch is a hint that never faults, whatever the address.
            unsafe { core::arch::x86_64::_mm_prefetch(p, core::arch::x86_64::_MM_HINT_T0) }
        }
    }

    /// Number of handles sharing this buffer.
    #[inline(always)]
    pub fn refcnt(&self) -> u16 {
        self.raw().refcnt
    }

    /// Another handle to the same buffer (reference count + 1): how a frame goes out of
    /// several ports without copying. The bytes become read-only until one handle remains.
    #[inline(always)]
    pub fn share(&self) -> Mbuf {
        // SAFETY: the mbuf is live; the atomic increment makes the new handle own one count.
        unsafe {
            sys::rte_mbuf_refcnt_update(self.0.as_ptr(), 1);
        }
        Mbuf(self.0)
    }

    /// Adds `len` bytes at the end of the frame and returns them, or `None` without room or
    /// when the buffer is shared.
    pub fn append(&mut self, len: u16) -> Option<&mut [u8]> {
        self.data_mut()?;
        // SAFETY: we own the mbuf exclusively (checked above); rte_pktmbuf_append returns a
        // pointer to `len` bytes inside the buffer, or NULL if they do not fit.
        let p = unsafe { sys::rte_pktmbuf_append(self.0.as_ptr(), len) } as *mut u8;
        if p.is_null() {
            return None;
        }
        // SAFETY: `p` points to `len` writable bytes in our exclusively owned buffer.
        Some(unsafe { std::slice::from_raw_parts_mut(p, len as usize) })
    }

    /// Grows the frame by `len` bytes at the front (into the headroom) and returns them, to
    /// be written: one ownership check, where `push_front` then `data_mut` make two. None,
    /// changing nothing, without headroom or when the buffer is shared.
    #[inline(always)]
    pub fn prepend(&mut self, len: u16) -> Option<&mut [u8]> {
        self.data_mut()?;
        // SAFETY: exclusively owned (checked above), so no other handle reads these fields.
        // This is rte_pktmbuf_prepend, inlined: that one is an out-of-line call from Rust.
        let m = unsafe { self.0.as_mut() };
        if m.data_off < len {
            return None;
        }
        m.data_off -= len;
        m.data_len += len;
        m.pkt_len += len as u32;
        // SAFETY: the `len` bytes at the new data_off lie in the buffer's headroom, which we
        // own exclusively; they are now the frame's first bytes.
        Some(unsafe { std::slice::from_raw_parts_mut((m.buf_addr as *mut u8).add(m.data_off as usize), len as usize) })
    }

    /// Grows the frame by `len` bytes at the front (into the headroom). False, changing
    /// nothing, without headroom or when the buffer is shared.
    #[inline]
    pub fn push_front(&mut self, len: u16) -> bool {
        self.prepend(len).is_some()
    }

    /// Removes `len` bytes from the front of the frame. False, changing nothing, if the first
    /// segment is shorter or the buffer is shared.
    #[inline]
    pub fn pull_front(&mut self, len: u16) -> bool {
        if self.data_mut().is_none() {
            return false;
        }
        // SAFETY: exclusively owned (checked above). This is rte_pktmbuf_adj, inlined.
        let m = unsafe { self.0.as_mut() };
        if m.data_len < len {
            return false;
        }
        m.data_off += len;
        m.data_len -= len;
        m.pkt_len -= len as u32;
        true
    }

    /// A new mbuf, from the same pool, holding a copy of the frame: for a packet that goes
    /// out of one port and is then changed for another. `None` when the pool is empty.
    pub fn deep_copy(&self) -> Option<Mbuf> {
        let m = self.raw();
        // SAFETY: the mbuf and its pool are live; rte_pktmbuf_copy allocates a fresh mbuf
        // (owned by the result) and copies the data, or returns NULL.
        NonNull::new(unsafe { sys::rte_pktmbuf_copy(self.0.as_ptr(), m.pool, 0, u32::MAX) }).map(Mbuf)
    }

    fn into_raw(self) -> *mut sys::rte_mbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }
}

impl Drop for Mbuf {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: we own one reference; rte_pktmbuf_free drops it and recycles the buffer
        // when it was the last.
        unsafe { sys::rte_pktmbuf_free(self.0.as_ptr()) }
    }
}

/// Up to [`BURST`] mbufs, owned. What is left in it when it drops is freed in bulk.
pub struct MbufBurst {
    ptrs: [*mut sys::rte_mbuf; BURST],
    len: usize,
}

// SAFETY: owns its mbufs exactly like a [Mbuf; BURST] would.
unsafe impl Send for MbufBurst {}

impl Default for MbufBurst {
    fn default() -> Self {
        Self::new()
    }
}

impl MbufBurst {
    pub const fn new() -> Self {
        MbufBurst { ptrs: [std::ptr::null_mut(); BURST], len: 0 }
    }

    #[inline(always)]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline(always)]
    pub fn is_full(&self) -> bool {
        self.len == BURST
    }

    /// The mbufs, for reading.
    #[inline(always)]
    pub fn as_slice(&self) -> &[Mbuf] {
        // SAFETY: ptrs[..len] are non-null owned mbuf pointers, and Mbuf is a transparent
        // wrapper of a non-null pointer, so the two slices have the same layout.
        unsafe { std::slice::from_raw_parts(self.ptrs.as_ptr() as *const Mbuf, self.len) }
    }

    /// The mbufs, for changing in place.
    #[inline(always)]
    pub fn as_mut_slice(&mut self) -> &mut [Mbuf] {
        // SAFETY: as in `as_slice`; the exclusive borrow of self covers the elements.
        unsafe { std::slice::from_raw_parts_mut(self.ptrs.as_mut_ptr() as *mut Mbuf, self.len) }
    }

    /// Adds an mbuf; hands it back when the burst is full.
    #[inline(always)]
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == BURST {
            return Err(m);
        }
        self.ptrs[self.len] = m.into_raw();
        self.len += 1;
        Ok(())
    }

    /// Takes every mbuf out, in order. Mbufs the iterator does not yield are freed.
    #[inline(always)]
    pub fn drain(&mut self) -> Drain<'_> {
        let len = self.len;
        self.len = 0;
        Drain { ptrs: &self.ptrs[..len], next: 0 }
    }

    /// Frees every mbuf in the burst.
    #[inline]
    pub fn free_all(&mut self) {
        if self.len > 0 {
            // SAFETY: ptrs[..len] are owned mbufs; after the call we forget them (len = 0).
            unsafe { sys::rte_pktmbuf_free_bulk(self.ptrs.as_mut_ptr(), self.len as u32) };
            self.len = 0;
        }
    }
}

impl Drop for MbufBurst {
    fn drop(&mut self) {
        self.free_all();
    }
}

/// Iterator of [`MbufBurst::drain`].
pub struct Drain<'a> {
    ptrs: &'a [*mut sys::rte_mbuf],
    next: usize,
}

impl Drain<'_> {
    /// The mbuf `k` places after the one `next` returns next, without taking it.
    #[inline(always)]
    pub fn peek(&self, k: usize) -> Option<&Mbuf> {
        let p = self.ptrs.get(self.next + k)?;
        // SAFETY: the pointer is a non-null owned mbuf not yet yielded, and Mbuf is a
        // transparent wrapper of a non-null pointer; the borrow ends before it is yielded.
        Some(unsafe { &*(p as *const *mut sys::rte_mbuf as *const Mbuf) })
    }
}

impl Iterator for Drain<'_> {
    type Item = Mbuf;

    #[inline(always)]
    fn next(&mut self) -> Option<Mbuf> {
        let p = *self.ptrs.get(self.next)?;
        self.next += 1;
        // SAFETY: the burst gave up ownership of these pointers (its len is 0); each is
        // yielded once.
        Some(Mbuf(unsafe { NonNull::new_unchecked(p) }))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.ptrs.len() - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for Drain<'_> {}

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        for m in self.by_ref() {
            drop(m);
        }
    }
}

/// Device facts that decide how a port can be configured.
#[derive(Debug, Clone)]
pub struct DevInfo {
    pub driver: String,
    pub if_index: u32,
    pub max_rx_queues: u16,
    pub max_tx_queues: u16,
    pub min_mtu: u16,
    pub max_mtu: u16,
    pub max_rx_pktlen: u32,
    pub rss_offloads: u64,
    pub rx_offload_capa: u64,
    pub tx_offload_capa: u64,
}

/// Link state as the PMD reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStatus {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
    pub autoneg: bool,
}

/// Device counters (`rte_eth_stats`). What each means depends on the PMD; `imissed` is
/// frames the device dropped because the rx ring was full.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EthStats {
    pub ipackets: u64,
    pub opackets: u64,
    pub ibytes: u64,
    pub obytes: u64,
    pub imissed: u64,
    pub ierrors: u64,
    pub oerrors: u64,
    pub rx_nombuf: u64,
    /// Per-queue counters of the first 16 queues (DPDK keeps no more), for PMDs that fill
    /// them: (rx packets, rx bytes, tx packets, tx bytes, rx errors) by queue.
    pub queues: Vec<QueueStats>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub rx_errors: u64,
}

/// How to bring a port up.
#[derive(Debug, Clone)]
pub struct PortSetup {
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
    pub mtu: u16,
    /// Ask for rx interrupts, so an idle worker can wait for packets instead of polling or
    /// sleeping. Ports whose driver cannot give them are set up without.
    pub rx_interrupts: bool,
    /// `system:` ports: the `system:` ports likely to come next, whose receive rings are
    /// made ahead (None: none are).
    pub spares_for: Option<SpareShape>,
}

/// What a `system:` port's receive rings depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpareShape {
    pub rx_queues: u16,
    pub rx_descriptors: u16,
    pub mtu: u16,
}

/// What a port ended up with after configuration (the device may round descriptor counts).
#[derive(Debug, Clone, Copy)]
pub struct PortLayout {
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
    pub rss: bool,
    /// Configured with rx interrupts (`rte_eth_conf.intr_conf.rxq`); whether a queue can
    /// really wake a thread is known when that thread listens ([`RxQueue::listen`]).
    pub rx_interrupts: bool,
}

struct PortInner {
    id: u16,
    name: String,
    started: Mutex<bool>,
    rx_taken: Mutex<Vec<bool>>,
    tx_taken: Mutex<Vec<bool>>,
    pool: Mutex<Option<Arc<Mempool>>>,
    rx_interrupts: std::sync::atomic::AtomicBool,
    /// A memif port: its queues are polled only while its link is up (see `LinkGate`).
    memif: bool,
    /// Its rx interrupts are memif ring signals ([`MemifWake`]), not DPDK's.
    memif_wake: std::sync::atomic::AtomicBool,
    /// A kernel interface on packet sockets: no ethdev behind `id`.
    system: Option<SystemPort>,
    _eal: Arc<Eal>,
}

impl PortInner {
    fn new(eal: &Arc<Eal>, id: u16, name: String, system: Option<SystemPort>) -> PortInner {
        PortInner {
            id,
            memif: name.starts_with("net_memif"),
            name,
            started: Mutex::new(false),
            rx_taken: Mutex::new(Vec::new()),
            tx_taken: Mutex::new(Vec::new()),
            pool: Mutex::new(None),
            rx_interrupts: Default::default(),
            memif_wake: Default::default(),
            system,
            _eal: eal.clone(),
        }
    }
}

/// A `system:` port: its interface and, once set up, its sockets.
struct SystemPort {
    iface: String,
    ifindex: u32,
    sockets: Mutex<SystemSockets>,
    /// Frames the kernel dropped for want of a free rx slot, as read so far.
    rx_missed: AtomicU64,
}

/// What [`EthPort::setup_and_start`] opens for a `system:` port.
#[derive(Default)]
struct SystemSockets {
    /// Receive rings until their rx queues take them.
    rx: Vec<Option<PacketRing>>,
    /// Duplicates of the rx sockets, to read the kernel's drop counts from; they also keep
    /// the sockets open until the port goes, so a worker dropping a queue does not wait for
    /// the kernel to close one.
    rx_fds: Vec<std::os::fd::OwnedFd>,
    /// One transmit socket for every worker's tx queue (held here too, for the same reason).
    tx: Option<Arc<PacketSender>>,
    rx_counters: Vec<Arc<RingCounters>>,
    tx_counters: Vec<Arc<RingCounters>>,
}

impl SystemPort {
    /// A sysfs attribute of the interface, found by its index (it may have been renamed).
    fn sysfs(&self, file: &str) -> Option<String> {
        let name = packet_socket::interface_name(self.ifindex).unwrap_or_else(|| self.iface.clone());
        std::fs::read_to_string(format!("/sys/class/net/{name}/{file}")).ok().map(|s| s.trim().to_string())
    }
}

impl Drop for PortInner {
    fn drop(&mut self) {
        if self.system.is_some() {
            return; // sockets close with their rings
        }
        // SAFETY: no queue handle remains (each holds an Arc of this), so no thread polls the
        // port; stop, close and remove are then allowed. Errors are ignored: the process is
        // tearing the port down either way.
        unsafe {
            let mut info: sys::rte_eth_dev_info = std::mem::zeroed();
            let have_info = sys::rte_eth_dev_info_get(self.id, &mut info) == 0;
            if *self.started.lock().unwrap_or_else(|e| e.into_inner()) {
                sys::rte_eth_dev_stop(self.id);
            }
            sys::rte_eth_dev_close(self.id);
            if have_info && !info.device.is_null() {
                sys::rte_dev_remove(info.device);
            }
        }
    }
}

/// An ethdev port, probed from devargs. Closed and detached when the last handle (including
/// queue handles) drops.
#[derive(Clone)]
pub struct EthPort {
    inner: Arc<PortInner>,
}

/// The device name DPDK gives the port of `devargs`: the text before the first comma, with
/// PCI addresses in their full `DDDD:BB:DD.F` form.
pub fn device_name(devargs: &str) -> String {
    let name = devargs.split(',').next().unwrap_or("").trim();
    if name.matches(':').count() == 1 && name.contains('.') {
        format!("0000:{name}")
    } else {
        name.to_string()
    }
}

impl EthPort {
    /// Probes the device in `devargs` (a PCI address or a vdev such as
    /// `net_af_packet0,iface=veth0`) and returns its port. A device already probed by the EAL
    /// (PCI devices given with `-a`) is taken as it is.
    pub fn probe(eal: &Arc<Eal>, devargs: &str) -> Result<EthPort, DpdkError> {
        if let Some(iface) = devargs.trim().strip_prefix(SYSTEM_PORT_PREFIX) {
            return Self::open_system(eal, iface.trim());
        }
        let c = CString::new(devargs).map_err(|_| DpdkError::new("devargs contains NUL", 22))?;
        // SAFETY: the EAL is initialised; devargs is a valid C string DPDK copies.
        let rc = unsafe { sys::rte_dev_probe(c.as_ptr()) };
        if rc < 0 && -rc != libc::EEXIST {
            return Err(DpdkError::new(format!("probe of '{devargs}'"), rc));
        }
        let name = device_name(devargs);
        let cname = CString::new(name.as_str()).expect("no NUL in name");
        let mut id: u16 = 0;
        // SAFETY: valid C string and out-pointer.
        let rc = unsafe { sys::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
        check(|| format!("no ethdev port named '{name}' after probing '{devargs}'"), rc)?;
        Ok(EthPort { inner: Arc::new(PortInner::new(eal, id, name, None)) })
    }

    /// A kernel interface as a port; its sockets open in [`EthPort::setup_and_start`].
    fn open_system(eal: &Arc<Eal>, iface: &str) -> Result<EthPort, DpdkError> {
        let ifindex = packet_socket::interface_index(iface)?;
        let name = format!("{SYSTEM_PORT_PREFIX}{iface}");
        Ok(EthPort {
            inner: Arc::new(PortInner::new(
                eal,
                u16::MAX,
                name,
                Some(SystemPort {
                    iface: iface.to_string(),
                    ifindex,
                    sockets: Mutex::default(),
                    rx_missed: AtomicU64::new(0),
                }),
            )),
        })
    }

    /// Opens a `system:` port's sockets: one receive ring per rx queue (a fanout group when
    /// there are several), one transmit socket for all tx queues.
    fn start_system(&self, sp: &SystemPort, setup: &PortSetup, pool: &Arc<Mempool>) -> Result<PortLayout, DpdkError> {
        let shape = packet_socket::Shape::for_port(setup.rx_descriptors, setup.mtu);
        let mut sockets = SystemSockets::default();
        let mut fanout = None;
        for _ in 0..setup.rx_queues {
            let ring = PacketRing::open_rx(sp.ifindex, shape)?;
            if setup.rx_queues > 1 {
                fanout = Some(ring.join_fanout(fanout)?);
            }
            sockets.rx_fds.push(ring.duplicate_fd()?);
            sockets.rx.push(Some(ring));
            sockets.rx_counters.push(Arc::default());
        }
        sockets.tx = Some(Arc::new(PacketSender::open(sp.ifindex)?));
        sockets.tx_counters = (0..setup.tx_queues).map(|_| Arc::default()).collect();
        if let Some(next) = setup.spares_for {
            packet_socket::keep_spares(
                packet_socket::Shape::for_port(next.rx_descriptors, next.mtu),
                next.rx_queues as usize,
            );
        }
        let layout = PortLayout {
            rx_descriptors: sockets.rx.iter().flatten().next().map_or(0, |r| r.frames() as u16),
            // Frames go straight from mbufs to the kernel: no descriptors of the port's own.
            tx_descriptors: 0,
            rss: setup.rx_queues > 1,
            // A socket's readiness wakes an epoll wait: always there.
            rx_interrupts: setup.rx_interrupts,
        };
        *sp.sockets.lock().unwrap() = sockets;
        let inner = &self.inner;
        *inner.started.lock().unwrap() = true;
        *inner.rx_taken.lock().unwrap() = vec![false; setup.rx_queues as usize];
        *inner.tx_taken.lock().unwrap() = vec![false; setup.tx_queues as usize];
        *inner.pool.lock().unwrap() = Some(pool.clone());
        inner.rx_interrupts.store(layout.rx_interrupts, Ordering::Relaxed);
        Ok(layout)
    }

    /// DPDK's port id.
    pub fn id(&self) -> u16 {
        self.inner.id
    }

    /// A memif port (DPDK's net_memif).
    pub fn is_memif(&self) -> bool {
        self.inner.memif
    }

    /// DPDK's device name.
    pub fn device_name(&self) -> &str {
        &self.inner.name
    }

    pub fn info(&self) -> Result<DevInfo, DpdkError> {
        if let Some(sp) = &self.inner.system {
            return Ok(DevInfo {
                driver: "system".into(),
                if_index: sp.ifindex,
                max_rx_queues: 64,
                max_tx_queues: u16::MAX,
                min_mtu: 68,
                max_mtu: 9600,
                max_rx_pktlen: 9600 + 26,
                rss_offloads: 0,
                rx_offload_capa: 0,
                tx_offload_capa: 0,
            });
        }
        // SAFETY: zeroed is a valid rte_eth_dev_info (plain data and nullable pointers).
        let mut info: sys::rte_eth_dev_info = unsafe { std::mem::zeroed() };
        // SAFETY: valid port id (from probe) and out-pointer.
        let rc = unsafe { sys::rte_eth_dev_info_get(self.inner.id, &mut info) };
        check(|| format!("rte_eth_dev_info_get({})", self.inner.name), rc)?;
        let driver = if info.driver_name.is_null() {
            String::new()
        } else {
            // SAFETY: driver_name is a static NUL-terminated string of the driver.
            unsafe { CStr::from_ptr(info.driver_name) }.to_string_lossy().into_owned()
        };
        Ok(DevInfo {
            driver,
            if_index: info.if_index,
            max_rx_queues: info.max_rx_queues,
            max_tx_queues: info.max_tx_queues,
            min_mtu: info.min_mtu,
            max_mtu: info.max_mtu,
            max_rx_pktlen: info.max_rx_pktlen,
            rss_offloads: info.flow_type_rss_offloads,
            rx_offload_capa: info.rx_offload_capa,
            tx_offload_capa: info.tx_offload_capa,
        })
    }

    /// Configures queues and MTU, puts the port in promiscuous mode (a switch port receives
    /// every frame) and starts it. The port keeps `pool` alive: its rx queues fill from it.
    /// With `setup.rx_interrupts`, a device that refuses them is set up again without.
    pub fn setup_and_start(&self, setup: &PortSetup, pool: &Arc<Mempool>) -> Result<PortLayout, DpdkError> {
        if let Some(sp) = &self.inner.system {
            return self.start_system(sp, setup, pool);
        }
        let info = self.info()?;
        let mut layout = match self.configure_and_start(&info, setup, pool, setup.rx_interrupts) {
            Err(_) if setup.rx_interrupts => {
                // SAFETY: valid port id; stopping a port that did not start is harmless.
                unsafe { sys::rte_eth_dev_stop(self.inner.id) };
                self.configure_and_start(&info, setup, pool, false)?
            }
            other => other?,
        };
        // Drivers without rx interrupts (memif, af_packet, pcap, null) accept the request and
        // ignore it; a queue's interrupt exists if it has an event fd. Asking a port that has
        // none logs an error ("Rx Intr handle unset") for what is only a probe here: ethdev's
        // log is held back while asking.
        layout.rx_interrupts &= quiet_log("lib.ethdev", || {
            (0..setup.rx_queues).all(|q| {
                // SAFETY: valid, started port and queue index.
                unsafe { sys::rte_eth_dev_rx_intr_ctl_q_get_fd(self.inner.id, q) >= 0 }
            })
        });
        let inner = &self.inner;
        // memif has none in DPDK 22.11, but its rings can signal instead.
        let memif_wake = setup.rx_interrupts && !layout.rx_interrupts && inner.memif && memif_wake_supported();
        layout.rx_interrupts |= memif_wake;
        inner.memif_wake.store(memif_wake, Ordering::Relaxed);
        *inner.started.lock().unwrap() = true;
        *inner.rx_taken.lock().unwrap() = vec![false; setup.rx_queues as usize];
        *inner.tx_taken.lock().unwrap() = vec![false; setup.tx_queues as usize];
        *inner.pool.lock().unwrap() = Some(pool.clone());
        inner.rx_interrupts.store(layout.rx_interrupts, Ordering::Relaxed);
        Ok(layout)
    }

    fn configure_and_start(
        &self,
        info: &DevInfo,
        setup: &PortSetup,
        pool: &Arc<Mempool>,
        rx_interrupts: bool,
    ) -> Result<PortLayout, DpdkError> {
        let id = self.inner.id;
        let name = self.inner.name.clone();
        // SAFETY: zeroed rte_eth_conf is DPDK's documented default configuration.
        let mut conf: sys::rte_eth_conf = unsafe { std::mem::zeroed() };
        // RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP: bits 2 to 17 of rss_hf (function
        // macros in C, so not in the bindings).
        const RSS_IP_TCP_UDP: u64 = 0x3fffc;
        let rss_hf = RSS_IP_TCP_UDP & info.rss_offloads;
        let rss = setup.rx_queues > 1 && rss_hf != 0;
        if rss {
            conf.rxmode.mq_mode = sys::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss_hf;
        }
        conf.rxmode.mtu = setup.mtu as u32;
        conf.intr_conf.set_rxq(rx_interrupts as u32);
        // SAFETY: valid port id, conf initialised above.
        let rc = unsafe { sys::rte_eth_dev_configure(id, setup.rx_queues, setup.tx_queues, &conf) };
        check(
            || {
                format!(
                    "configure {name} with {} rx / {} tx queues, MTU {} (device allows {} rx / {} tx, MTU {}..{})",
                    setup.rx_queues,
                    setup.tx_queues,
                    setup.mtu,
                    info.max_rx_queues,
                    info.max_tx_queues,
                    info.min_mtu,
                    info.max_mtu
                )
            },
            rc,
        )?;
        let (mut nrx, mut ntx) = (setup.rx_descriptors, setup.tx_descriptors);
        // SAFETY: valid port id and out-pointers.
        let rc = unsafe { sys::rte_eth_dev_adjust_nb_rx_tx_desc(id, &mut nrx, &mut ntx) };
        check(|| format!("adjust descriptors of {name}"), rc)?;
        // SAFETY: valid port id.
        let socket = unsafe { sys::rte_eth_dev_socket_id(id) };
        for q in 0..setup.rx_queues {
            // SAFETY: port configured with rx_queues queues; pool is a live mbuf pool that
            // the port keeps alive (PortInner::pool). NULL rxconf selects driver defaults.
            let rc =
                unsafe { sys::rte_eth_rx_queue_setup(id, q, nrx, socket as u32, std::ptr::null(), pool.ptr.as_ptr()) };
            check(|| format!("rx queue {q} of {name} ({nrx} descriptors)"), rc)?;
        }
        for q in 0..setup.tx_queues {
            // SAFETY: port configured with tx_queues queues; NULL txconf selects defaults.
            let rc = unsafe { sys::rte_eth_tx_queue_setup(id, q, ntx, socket as u32, std::ptr::null()) };
            check(|| format!("tx queue {q} of {name} ({ntx} descriptors)"), rc)?;
        }
        // SAFETY: valid, configured port.
        let rc = unsafe { sys::rte_eth_promiscuous_enable(id) };
        if rc < 0 && -rc != libc::ENOTSUP {
            return Err(DpdkError::new(format!("promiscuous mode on {name}"), rc));
        }
        // SAFETY: valid, configured port with all queues set up.
        let rc = unsafe { sys::rte_eth_dev_start(id) };
        check(|| format!("start {name}"), rc)?;
        Ok(PortLayout { rx_descriptors: nrx, tx_descriptors: ntx, rss, rx_interrupts })
    }

    /// The receive side of queue `q`, handed out once: one thread polls a queue.
    pub fn rx_queue(&self, q: u16) -> Option<RxQueue> {
        if !hand_out(&self.inner.rx_taken, q) {
            return None;
        }
        let system = match &self.inner.system {
            Some(sp) => {
                let mut sockets = sp.sockets.lock().unwrap();
                let ring = sockets.rx.get_mut(q as usize)?.take()?;
                let counters = sockets.rx_counters[q as usize].clone();
                let pool = self.inner.pool.lock().unwrap().clone()?;
                Some(SystemRx { ring, counters, pool, wake: None })
            }
            None => None,
        };
        Some(RxQueue {
            port: self.inner.clone(),
            queue: q,
            listening_epfd: None,
            memif_wake: None,
            system,
            link: LinkGate::new(self.inner.memif),
        })
    }

    /// The transmit side of queue `q`, handed out once.
    pub fn tx_queue(&self, q: u16) -> Option<TxQueue> {
        if !hand_out(&self.inner.tx_taken, q) {
            return None;
        }
        let system = match &self.inner.system {
            Some(sp) => {
                let sockets = sp.sockets.lock().unwrap();
                Some((sockets.tx.clone()?, sockets.tx_counters.get(q as usize)?.clone()))
            }
            None => None,
        };
        Some(TxQueue { port: self.inner.clone(), queue: q, system, link: LinkGate::new(self.inner.memif) })
    }

    pub fn mac(&self) -> [u8; 6] {
        if let Some(sp) = &self.inner.system {
            let mut mac = [0u8; 6];
            let text = sp.sysfs("address").unwrap_or_default();
            for (byte, hex) in mac.iter_mut().zip(text.split(':')) {
                *byte = u8::from_str_radix(hex, 16).unwrap_or(0);
            }
            return mac;
        }
        let mut a = sys::rte_ether_addr::default();
        // SAFETY: valid port id and out-pointer.
        unsafe { sys::rte_eth_macaddr_get(self.inner.id, &mut a) };
        a.addr_bytes
    }

    /// Link state without waiting for autonegotiation.
    pub fn link(&self) -> LinkStatus {
        if let Some(sp) = &self.inner.system {
            return LinkStatus {
                up: sp.sysfs("carrier").as_deref() == Some("1"),
                speed_mbps: sp.sysfs("speed").and_then(|s| s.parse().ok()).unwrap_or(0),
                full_duplex: sp.sysfs("duplex").as_deref() == Some("full"),
                autoneg: false,
            };
        }
        let Some(l) = read_link(self.inner.id) else {
            return LinkStatus::default();
        };
        LinkStatus {
            up: l.link_status() != 0,
            speed_mbps: l.link_speed,
            full_duplex: l.link_duplex() != 0,
            autoneg: l.link_autoneg() != 0,
        }
    }

    /// Device counters. Safe to call while workers run: PMDs keep these per queue and sum.
    pub fn stats(&self) -> EthStats {
        if let Some(sp) = &self.inner.system {
            return sp.stats();
        }
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid port id and out-pointer.
        let rc = unsafe { sys::rte_eth_stats_get(self.inner.id, &mut s) };
        if rc < 0 {
            return EthStats::default();
        }
        EthStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
            queues: (0..sys::RTE_ETHDEV_QUEUE_STAT_CNTRS as usize)
                .map(|q| QueueStats {
                    rx_packets: s.q_ipackets[q],
                    rx_bytes: s.q_ibytes[q],
                    tx_packets: s.q_opackets[q],
                    tx_bytes: s.q_obytes[q],
                    rx_errors: s.q_errors[q],
                })
                .collect(),
        }
    }
}

/// Marks queue `q` handed out; false if it already was, or does not exist.
fn hand_out(taken: &Mutex<Vec<bool>>, q: u16) -> bool {
    let mut taken = taken.lock().unwrap();
    taken.get_mut(q as usize).is_some_and(|slot| !std::mem::replace(slot, true))
}

/// Whether a queue's port may be polled. DPDK 22.11's memif driver finds a queue's ring
/// before it checks that the peer is connected: a poll that overlaps the connection (the
/// rings not yet mapped) reads an address near zero and faults. Its link goes up after the
/// rings are mapped, so a memif queue is polled only once its link is seen up. The check
/// runs only after a poll that moved nothing: a queue with traffic pays nothing for it.
#[derive(Debug)]
struct LinkGate {
    checked: bool,
    seen_up: bool,
}

impl LinkGate {
    fn new(checked: bool) -> LinkGate {
        LinkGate { checked, seen_up: false }
    }

    #[inline(always)]
    fn open(&mut self, port: u16) -> bool {
        !self.checked || self.seen_up || link_up(port)
    }

    #[inline(always)]
    fn passed(&mut self, packets: usize) {
        self.seen_up = packets > 0;
    }
}

/// Whether the port's link is up, as the driver last set it.
#[cold]
fn link_up(port: u16) -> bool {
    read_link(port).is_some_and(|l| l.link_status() != 0)
}

/// The port's link without waiting (for memif, the state its interrupt thread sets).
fn read_link(port: u16) -> Option<sys::rte_eth_link> {
    let mut l = sys::rte_eth_link::default();
    // SAFETY: valid port id and out-pointer; the call does not block.
    let rc = unsafe { sys::rte_eth_link_get_nowait(port, &mut l) };
    (rc == 0).then_some(l)
}

/// Receive queue handle; exclusive to the thread that polls it (Send, not Sync, not Clone).
pub struct RxQueue {
    port: Arc<PortInner>,
    queue: u16,
    /// The epoll set (of the polling thread) the queue's interrupt was added to.
    listening_epfd: Option<i32>,
    /// A memif queue's interrupt, once listening.
    memif_wake: Option<MemifWake>,
    /// A `system:` port's receive ring.
    system: Option<SystemRx>,
    link: LinkGate,
}

/// The receive side of a `system:` port's queue.
struct SystemRx {
    ring: PacketRing,
    counters: Arc<RingCounters>,
    pool: Arc<Mempool>,
    /// The socket in the listening thread's epoll set: the event (boxed: registered by
    /// address) and the set.
    wake: Option<(Box<sys::rte_epoll_event>, i32)>,
}

// SAFETY: the event's pointers are null (no callback, no data); while registered it is in
// the epoll set named beside it, from which any thread may remove it (Drop).
unsafe impl Send for SystemRx {}

impl SystemRx {
    fn listen(&mut self) -> bool {
        if self.wake.is_some() {
            return true;
        }
        // SAFETY: all-zero is a valid rte_epoll_event (no callback, null data).
        let mut event: Box<sys::rte_epoll_event> = Box::new(unsafe { std::mem::zeroed() });
        // Edge-triggered: each frame the kernel queues signals once (a frame that came
        // before the wait still ends it), and an error (the interface went down) once, not
        // at every wait until someone reads it.
        event.epdata.event = (libc::EPOLLIN | libc::EPOLLET) as u32;
        // SAFETY: no arguments; the calling thread's set (created on first use).
        let epfd = unsafe { sys::rte_intr_tls_epfd() };
        // SAFETY: `event` stays at this address until Drop takes it out of the set; the
        // socket outlives it (both in self).
        if unsafe { sys::rte_epoll_ctl(epfd, libc::EPOLL_CTL_ADD, self.ring.raw_fd(), &mut *event) } != 0 {
            return false;
        }
        self.wake = Some((event, epfd));
        true
    }
}

impl Drop for SystemRx {
    fn drop(&mut self) {
        if let Some((event, epfd)) = &mut self.wake {
            // SAFETY: `event` was added to `epfd` for this socket in `listen`.
            unsafe { sys::rte_epoll_ctl(*epfd, libc::EPOLL_CTL_DEL, self.ring.raw_fd(), &mut **event) };
        }
    }
}

impl SystemPort {
    fn stats(&self) -> EthStats {
        let sockets = self.sockets.lock().unwrap();
        let (rx, tx) = (&sockets.rx_counters, &sockets.tx_counters);
        let sum = |v: &[Arc<RingCounters>], f: fn(&RingCounters) -> &AtomicU64| -> u64 {
            v.iter().map(|c| f(c).load(Ordering::Relaxed)).sum()
        };
        let drops: u64 = sockets.rx_fds.iter().map(packet_socket::take_drops).sum();
        let missed = self.rx_missed.fetch_add(drops, Ordering::Relaxed) + drops;
        let queues = (0..rx.len().max(tx.len()).min(sys::RTE_ETHDEV_QUEUE_STAT_CNTRS as usize))
            .map(|q| QueueStats {
                rx_packets: rx.get(q).map_or(0, |c| c.packets.load(Ordering::Relaxed)),
                rx_bytes: rx.get(q).map_or(0, |c| c.bytes.load(Ordering::Relaxed)),
                tx_packets: tx.get(q).map_or(0, |c| c.packets.load(Ordering::Relaxed)),
                tx_bytes: tx.get(q).map_or(0, |c| c.bytes.load(Ordering::Relaxed)),
                rx_errors: rx.get(q).map_or(0, |c| c.errors.load(Ordering::Relaxed)),
            })
            .collect();
        EthStats {
            ipackets: sum(rx, |c| &c.packets),
            opackets: sum(tx, |c| &c.packets),
            ibytes: sum(rx, |c| &c.bytes),
            obytes: sum(tx, |c| &c.bytes),
            imissed: missed,
            ierrors: sum(rx, |c| &c.errors),
            oerrors: sum(tx, |c| &c.errors),
            rx_nombuf: sum(rx, |c| &c.no_mbuf),
            queues,
        }
    }
}

impl RxQueue {
    pub fn port_id(&self) -> u16 {
        self.port.id
    }

    pub fn queue_id(&self) -> u16 {
        self.queue
    }

    /// Receives into the free room of `burst`; returns how many mbufs arrived.
    #[inline(always)]
    pub fn rx_burst(&mut self, burst: &mut MbufBurst) -> usize {
        if let Some(s) = &mut self.system {
            return s.ring.rx_burst(&s.pool, burst, &s.counters);
        }
        if !self.link.open(self.port.id) {
            return 0;
        }
        let room = BURST - burst.len;
        // SAFETY: this handle is the queue's only user (handed out once, &mut self); the
        // array has `room` free slots past `len`, which DPDK fills with owned mbufs.
        let n = unsafe {
            sys::rte_eth_rx_burst(self.port.id, self.queue, burst.ptrs.as_mut_ptr().add(burst.len), room as u16)
        } as usize;
        burst.len += n;
        self.link.passed(n);
        n
    }

    /// Adds this queue's rx interrupt to the calling thread's wait set (see
    /// [`InterruptWait`]); true if the port gives one. Call it on the thread that polls the
    /// queue. Interrupts stay off until [`RxQueue::arm`].
    pub fn listen(&mut self) -> bool {
        if self.listening_epfd.is_some() || self.memif_wake.is_some() {
            return true;
        }
        if !self.port.rx_interrupts.load(Ordering::Relaxed) {
            return false;
        }
        if let Some(s) = &mut self.system {
            return s.listen();
        }
        if self.port.memif_wake.load(Ordering::Relaxed) {
            self.memif_wake = Some(MemifWake::new());
            return true;
        }
        // SAFETY: valid port configured with intr_conf.rxq; RTE_EPOLL_PER_THREAD is the
        // calling thread's epoll set, which DPDK creates on first use and keeps.
        let rc = unsafe {
            sys::rte_eth_dev_rx_intr_ctl_q(
                self.port.id,
                self.queue,
                sys::RTE_EPOLL_PER_THREAD,
                sys::RTE_INTR_EVENT_ADD as i32,
                std::ptr::null_mut(),
            )
        };
        if rc != 0 {
            return false;
        }
        // SAFETY: no arguments; the same per-thread set the call above used.
        self.listening_epfd = Some(unsafe { sys::rte_intr_tls_epfd() });
        self.dpdk_intr_disable();
        true
    }

    /// Lets the next packet on this queue wake the listening thread; false if it cannot
    /// (a memif queue without a peer, or `poller` outside a section: a memif ring is touched
    /// only inside one). Poll once more after arming: packets that came before it raise no
    /// interrupt.
    pub fn arm(&mut self, poller: &Poller) -> bool {
        if let Some(wake) = &mut self.memif_wake {
            return poller.is_inside() && wake.arm(self.port.id, self.queue);
        }
        if self.system.is_some() {
            return true; // a socket with frames waiting is always readable
        }
        // SAFETY: valid port and queue; ENOTSUP (a driver whose interrupt is always on, as
        // net_tap's readable fd) is fine.
        unsafe { sys::rte_eth_dev_rx_intr_enable(self.port.id, self.queue) };
        true
    }

    /// Whether [`RxQueue::arm`] can succeed as far as a cheap look tells: a memif queue needs
    /// its peer (its link up).
    pub fn may_arm(&self) -> bool {
        self.memif_wake.is_none() || link_up(self.port.id)
    }

    /// Stops interrupts while the queue is polled (the peer then need not signal). A memif
    /// queue's ring is masked again only inside a section of `poller`.
    pub fn disarm(&mut self, poller: &Poller) {
        if let Some(wake) = &mut self.memif_wake {
            wake.disarm(self.port.id, self.queue, poller.is_inside());
            return;
        }
        if self.system.is_none() {
            self.dpdk_intr_disable();
        }
    }

    /// Turns DPDK's rx interrupt of the queue off (a port configured with them).
    fn dpdk_intr_disable(&self) {
        // SAFETY: valid port and queue.
        unsafe { sys::rte_eth_dev_rx_intr_disable(self.port.id, self.queue) };
    }

    /// Whether this queue's interrupt is a memif ring's signal, which the driver does not
    /// report when a peer connects: a wait for it needs a short timeout.
    pub fn wakes_by_memif_ring(&self) -> bool {
        self.memif_wake.is_some()
    }
}

/// Whether memif rings can wake a waiting worker in this build and this DPDK.
fn memif_wake_supported() -> bool {
    // SAFETY: no arguments; reads DPDK's version string.
    unsafe { sys::vs_memif_wake_supported() == 1 }
}

const MEMIF_RING_FLAG_MASK_INT: u16 = 1;

/// A memif rx queue's interrupt. Armed, its ring's interrupts are unmasked, so the peer
/// writes to the ring's eventfd after each burst, and a duplicate of that eventfd is in the
/// waiting thread's epoll set (a duplicate, because the driver closes its own when the peer
/// leaves, and a closed number may come back as another file). The ring is found through the
/// driver's private structures (`vs_memif_rx_ring_flags` in dpdk-sys/shim.c), each time,
/// inside a poll section: a peer that leaves unmaps it. Disarming only masks the ring, so a
/// woken worker reaches its packets without a system call; the duplicate leaves the set when
/// the queue is armed next (the peer may have changed) or dropped.
struct MemifWake {
    /// Registered with the set by address: boxed so it does not move.
    event: Box<sys::rte_epoll_event>,
    /// The eventfd duplicate and the epoll set it is in.
    registered: Option<(std::os::fd::OwnedFd, i32)>,
    unmasked: bool,
}

// SAFETY: the event's pointers are null (no callback, no data); while registered it is in
// the epoll set `registered` names, from which any thread may remove it (arm, Drop).
unsafe impl Send for MemifWake {}

impl MemifWake {
    fn new() -> MemifWake {
        // SAFETY: all-zero is a valid rte_epoll_event (no callback, null data).
        MemifWake { event: Box::new(unsafe { std::mem::zeroed() }), registered: None, unmasked: false }
    }

    /// Runs `f` on the ring's flags word and eventfd, if its peer is connected. Call only
    /// inside a poll section, which keeps the ring mapped while `f` runs.
    fn with_ring<T>(port: u16, queue: u16, f: impl FnOnce(&std::sync::atomic::AtomicU16, i32) -> T) -> Option<T> {
        if !link_up(port) {
            return None;
        }
        let mut fd = -1;
        // SAFETY: plain values and an out-pointer; the function checks what it reads.
        let flags = unsafe { sys::vs_memif_rx_ring_flags(port, queue, &mut fd) };
        if flags.is_null() {
            return None;
        }
        // SAFETY: a non-null result points to the aligned u16 flags of a mapped ring, shared
        // with the peer (hence atomic); the caller's poll section keeps it mapped until `f`
        // returns, and the reference does not outlive `f`.
        Some(f(unsafe { std::sync::atomic::AtomicU16::from_ptr(flags) }, fd))
    }

    fn unregister(&mut self) {
        if let Some((dup, epfd)) = self.registered.take() {
            // SAFETY: `event` was added to `epfd` for this descriptor in `arm`.
            unsafe {
                sys::rte_epoll_ctl(epfd, libc::EPOLL_CTL_DEL, std::os::fd::AsRawFd::as_raw_fd(&dup), &mut *self.event)
            };
        }
    }

    fn arm(&mut self, port: u16, queue: u16) -> bool {
        if self.unmasked {
            return true;
        }
        self.unregister();
        Self::with_ring(port, queue, |flags, fd| self.register_and_unmask(flags, fd)).unwrap_or(false)
    }

    fn register_and_unmask(&mut self, flags: &std::sync::atomic::AtomicU16, fd: i32) -> bool {
        // SAFETY: `fd` is the driver's open eventfd; the duplicate is ours alone.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return false;
        }
        // SAFETY: `dup` is a new descriptor nothing else owns.
        let dup = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dup) };
        let raw = std::os::fd::AsRawFd::as_raw_fd(&dup);
        // Unmasked, the driver's rx reads the eventfd in each call: that read must not block.
        // SAFETY: F_GETFL on an open descriptor.
        if unsafe { libc::fcntl(raw, libc::F_GETFL) } & libc::O_NONBLOCK == 0 {
            return false;
        }
        // SAFETY: no arguments; the calling thread's set (created on first use).
        let epfd = unsafe { sys::rte_intr_tls_epfd() };
        // Set each time: DPDK clears the event's data when it leaves a set.
        self.event.epdata.event = libc::EPOLLIN as u32;
        // SAFETY: `event` stays at this address until `unregister` takes it out.
        if unsafe { sys::rte_epoll_ctl(epfd, libc::EPOLL_CTL_ADD, raw, &mut *self.event) } != 0 {
            return false;
        }
        self.registered = Some((dup, epfd));
        flags.fetch_and(!MEMIF_RING_FLAG_MASK_INT, Ordering::SeqCst);
        self.unmasked = true;
        true
    }

    /// Masks the ring again: the peer stops signalling and the driver's rx stops reading the
    /// eventfd. Without a section (a worker stopping) or with the peer gone, it stays.
    fn disarm(&mut self, port: u16, queue: u16, in_section: bool) {
        if !std::mem::take(&mut self.unmasked) || !in_section {
            return;
        }
        Self::with_ring(port, queue, |flags, _| flags.fetch_or(MEMIF_RING_FLAG_MASK_INT, Ordering::SeqCst));
    }
}

impl Drop for RxQueue {
    fn drop(&mut self) {
        if let Some(wake) = &mut self.memif_wake {
            wake.disarm(self.port.id, self.queue, false);
            wake.unregister();
        }
        if let (Some(epfd), None) = (self.listening_epfd, &self.system) {
            self.dpdk_intr_disable();
            // SAFETY: the port is still open (this handle holds it); the queue's interrupt is
            // in set `epfd` since `listen`. Removing it works from any thread.
            unsafe {
                sys::rte_eth_dev_rx_intr_ctl_q(
                    self.port.id,
                    self.queue,
                    epfd,
                    sys::RTE_INTR_EVENT_DEL as i32,
                    std::ptr::null_mut(),
                )
            };
        }
    }
}

/// Wakes a thread blocked in [`InterruptWait::wait`]: an eventfd the control plane rings when
/// it has something for a worker (a new pipeline, a queue change, stop). Rings are never
/// lost: the count stays until the waiter clears it.
pub struct Doorbell {
    fd: std::fs::File,
}

impl Doorbell {
    pub fn new() -> std::io::Result<Doorbell> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new descriptor that
        // nothing else owns.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is ours alone (see above).
        Ok(Doorbell { fd: unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) } })
    }

    pub fn ring(&self) {
        use std::io::Write;
        // A full counter (EAGAIN) still wakes the waiter.
        let _ = (&self.fd).write(&1u64.to_ne_bytes());
    }

    fn clear(&self) {
        use std::io::Read;
        let _ = (&self.fd).read(&mut [0u8; 8]);
    }

    /// Sleeps `us` microseconds, or until the doorbell rings: true if it rang (and then the
    /// ring is cleared). A worker's timed idle sleep that the control plane cuts short, so a
    /// change reaches it at once on ports that have no rx interrupts too.
    pub fn sleep_us(&self, us: u32) -> bool {
        let mut fd = libc::pollfd { fd: self.raw_fd(), events: libc::POLLIN, revents: 0 };
        let timeout = libc::timespec {
            tv_sec: (us / 1_000_000) as libc::time_t,
            tv_nsec: (us % 1_000_000) as libc::c_long * 1000,
        };
        // SAFETY: one valid pollfd and a valid timespec, both live for the call; a null
        // signal mask keeps the thread's own.
        let ready = unsafe { libc::ppoll(&mut fd, 1, &timeout, std::ptr::null()) };
        let rang = ready > 0 && fd.revents & libc::POLLIN != 0;
        if rang {
            self.clear();
        }
        rang
    }

    fn raw_fd(&self) -> i32 {
        std::os::fd::AsRawFd::as_raw_fd(&self.fd)
    }
}

/// The calling thread's wait for its armed rx queues ([`RxQueue::listen`]) or its doorbell,
/// in DPDK's per-thread epoll set. Not `Send`: the set belongs to the thread.
pub struct InterruptWait<'a> {
    doorbell: &'a Doorbell,
    /// Registered with the set by address: boxed so it does not move.
    event: Box<sys::rte_epoll_event>,
    _thread_bound: PhantomData<*const ()>,
}

impl<'a> InterruptWait<'a> {
    pub fn new(doorbell: &'a Doorbell) -> Result<InterruptWait<'a>, DpdkError> {
        // SAFETY: all-zero is a valid rte_epoll_event (no callback, null data).
        let mut event: Box<sys::rte_epoll_event> = Box::new(unsafe { std::mem::zeroed() });
        event.epdata.event = libc::EPOLLIN as u32;
        // SAFETY: `event` stays at this address until Drop takes it out of the set, and the
        // doorbell's fd outlives `self` (borrowed).
        let rc = unsafe {
            sys::rte_epoll_ctl(sys::RTE_EPOLL_PER_THREAD, libc::EPOLL_CTL_ADD, doorbell.raw_fd(), &mut *event)
        };
        check(|| "add the doorbell to the thread's epoll set".to_string(), rc)?;
        Ok(InterruptWait { doorbell, event, _thread_bound: PhantomData })
    }

    /// Blocks until an armed queue of this thread has packets, the doorbell rings, or
    /// `timeout_ms` passes. True if woken by a queue or the doorbell.
    pub fn wait(&mut self, timeout_ms: i32) -> bool {
        // SAFETY: all-zero rte_epoll_events are valid out-values.
        let mut events: [sys::rte_epoll_event; 8] = unsafe { std::mem::zeroed() };
        // SAFETY: the array has room for 8 events; the set is this thread's. DPDK runs each
        // queue's handler (which consumes its event) before returning.
        let n = unsafe { sys::rte_epoll_wait(sys::RTE_EPOLL_PER_THREAD, events.as_mut_ptr(), 8, timeout_ms) };
        // Cleared only when it rang: a read is a system call (microseconds in a VM) before
        // the woken worker reaches its packets. One it missed here wakes the next wait.
        let doorbell = self.doorbell.raw_fd();
        if events[..n.max(0) as usize].iter().any(|e| e.fd == doorbell) {
            self.doorbell.clear();
        }
        n > 0
    }
}

impl Drop for InterruptWait<'_> {
    fn drop(&mut self) {
        // SAFETY: `event` was added to this thread's set in `new` (InterruptWait is not Send).
        unsafe {
            sys::rte_epoll_ctl(sys::RTE_EPOLL_PER_THREAD, libc::EPOLL_CTL_DEL, self.doorbell.raw_fd(), &mut *self.event)
        };
    }
}

/// Transmit queue handle; exclusive to one thread.
pub struct TxQueue {
    port: Arc<PortInner>,
    queue: u16,
    /// A `system:` port's transmit ring.
    system: Option<(Arc<PacketSender>, Arc<RingCounters>)>,
    link: LinkGate,
}

impl TxQueue {
    pub fn port_id(&self) -> u16 {
        self.port.id
    }

    /// Sends as much of `burst` as the device takes, retrying while it makes progress. Sent
    /// mbufs leave the burst; the ones the device refused stay in it, at the front.
    #[inline]
    pub fn tx_burst(&mut self, burst: &mut MbufBurst) -> usize {
        if let Some((ring, counters)) = &mut self.system {
            return ring.tx_burst(burst, counters);
        }
        if !self.link.open(self.port.id) {
            return 0;
        }
        let mut sent = 0usize;
        while sent < burst.len {
            // SAFETY: this handle is the queue's only user; ptrs[sent..len] are owned mbufs,
            // and DPDK takes ownership of the first n it returns.
            let n = unsafe {
                sys::rte_eth_tx_burst(
                    self.port.id,
                    self.queue,
                    burst.ptrs.as_mut_ptr().add(sent),
                    (burst.len - sent) as u16,
                )
            } as usize;
            if n == 0 {
                break;
            }
            sent += n;
        }
        self.link.passed(sent);
        if sent > 0 {
            burst.ptrs.copy_within(sent..burst.len, 0);
            burst.len -= sent;
        }
        sent
    }
}

// Memory unmapped under a polling thread. When a memif peer leaves, DPDK 22.11's driver
// unmaps the peer's rings in its interrupt thread right after marking the port down, while a
// worker may be inside rx/tx on those rings: the worker faults. The driver unmaps with
// munmap(), and this process's munmap is the one below: before unmapping it waits until
// every poller that was inside a poll section has left it. Pollers mark their sections with
// `Poller::enter` and `Poller::leave`, two plain stores each poll; the unmapping thread pays
// a membarrier() (which orders those stores for it) and the wait.

const MAX_POLLERS: usize = 128;

/// One poller's marks, on a cache line of its own.
#[repr(align(64))]
struct PollerSlot {
    /// Thread id of the owner; 0 while the slot is free.
    tid: AtomicI32,
    /// Sections entered plus sections left: odd while the owner is inside one.
    marks: AtomicU64,
}

static POLLER_SLOTS: [PollerSlot; MAX_POLLERS] =
    [const { PollerSlot { tid: AtomicI32::new(0), marks: AtomicU64::new(0) } }; MAX_POLLERS];
static POLLERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// 0: not tried, 1: membarrier registered, 2: not available (a full fence is used instead).
static MEMBARRIER: AtomicU8 = AtomicU8::new(0);

const MEMBARRIER_CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;
/// Longest wait for one poller (one that stalls inside a section, say a stopped process).
const SECTION_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// A thread that polls ports, registered so that memory is not unmapped under its polls.
/// Belongs to the thread that registered it.
pub struct Poller {
    /// None when every slot was taken: the polls are then not waited for.
    slot: Option<&'static PollerSlot>,
    marks: u64,
    _not_send: PhantomData<*const ()>,
}

impl Poller {
    /// Registers the calling thread.
    pub fn register() -> Poller {
        // SAFETY: gettid takes no arguments.
        let tid = unsafe { libc::gettid() };
        let slot =
            POLLER_SLOTS.iter().find(|s| s.tid.compare_exchange(0, tid, Ordering::AcqRel, Ordering::Relaxed).is_ok());
        let marks = slot.map_or(0, |s| s.marks.load(Ordering::Relaxed) & !1);
        if let Some(s) = slot {
            s.marks.store(marks, Ordering::Relaxed);
            POLLERS.fetch_add(1, Ordering::AcqRel);
        }
        // Keeps this module's munmap in the link: DPDK's archives, linked after it, call it.
        std::hint::black_box(munmap as unsafe extern "C" fn(*mut libc::c_void, libc::size_t) -> libc::c_int);
        Poller { slot, marks, _not_send: PhantomData }
    }

    /// Whether the thread got a slot, so that unmapping waits for its sections.
    pub fn is_registered(&self) -> bool {
        self.slot.is_some()
    }

    /// Whether the thread is inside a section that unmapping waits for.
    pub fn is_inside(&self) -> bool {
        self.slot.is_some() && self.marks & 1 == 1
    }

    /// Marks the start of a section that may touch port memory (rx and tx bursts).
    #[inline(always)]
    pub fn enter(&mut self) {
        if let Some(slot) = self.slot {
            self.marks += 1;
            slot.marks.store(self.marks, Ordering::Relaxed);
        }
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    }

    /// Marks the end of the section.
    #[inline(always)]
    pub fn leave(&mut self) {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
        if let Some(slot) = self.slot {
            self.marks += 1;
            slot.marks.store(self.marks, Ordering::Release);
        }
    }

    /// Runs `f` inside a section.
    #[inline(always)]
    pub fn section<T>(&mut self, f: impl FnOnce() -> T) -> T {
        self.enter();
        let out = f();
        self.leave();
        out
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        if self.marks & 1 == 1 {
            self.leave();
        }
        if let Some(slot) = self.slot {
            POLLERS.fetch_sub(1, Ordering::AcqRel);
            slot.tid.store(0, Ordering::Release);
        }
    }
}

/// Waits until every other registered poller that is inside a section has left it.
fn wait_for_pollers() {
    if POLLERS.load(Ordering::Acquire) == 0 {
        return;
    }
    if MEMBARRIER.load(Ordering::Acquire) == 0 {
        // Registered here, on first need, not when a worker starts: it takes milliseconds
        // (the kernel waits for a grace period), which a start would wait for.
        // SAFETY: the membarrier system call with a command and no pointers.
        let rc = unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0) };
        MEMBARRIER.store(if rc == 0 { 1 } else { 2 }, Ordering::Release);
    }
    if MEMBARRIER.load(Ordering::Acquire) == 1 {
        // SAFETY: the membarrier system call with a command and no pointers. Every running
        // thread of the process passes a full barrier, so their marks are visible here.
        unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0) };
    } else {
        std::sync::atomic::fence(Ordering::SeqCst);
    }
    // SAFETY: gettid takes no arguments.
    let me = unsafe { libc::gettid() };
    for slot in POLLER_SLOTS.iter() {
        let tid = slot.tid.load(Ordering::Acquire);
        let marks = slot.marks.load(Ordering::Acquire);
        if tid == 0 || tid == me || marks & 1 == 0 {
            continue;
        }
        let since = std::time::Instant::now();
        while slot.marks.load(Ordering::Acquire) == marks
            && slot.tid.load(Ordering::Acquire) == tid
            && since.elapsed() < SECTION_WAIT
        {
            std::hint::spin_loop();
        }
    }
}

/// The process's munmap (it takes the place of the C library's for DPDK, linked in
/// statically, and for the libraries that bind to it): waits for pollers inside a section,
/// then unmaps as the C library would.
///
/// # Safety
///
/// As munmap(2): nothing may use the pages of `addr..addr + len` after the call.
#[no_mangle]
pub unsafe extern "C" fn munmap(addr: *mut libc::c_void, len: libc::size_t) -> libc::c_int {
    wait_for_pollers();
    // SAFETY: the munmap system call with the caller's own arguments, as the C library's
    // munmap makes it; on failure it returns -1 and sets errno, as munmap does.
    unsafe { libc::syscall(libc::SYS_munmap, addr, len) as libc::c_int }
}

#[cfg(test)]
mod tests {
    use super::{
        choose_tsc_hz, device_name, map_anonymous, memif_region_mappings, munmap, populate, tsc, tsc_hz_since,
        Doorbell, MemifRegionMapping, Poller, TscClockPair, TscSource,
    };
    use std::time::{Duration, Instant};

    #[test]
    fn memif_regions_are_found_in_the_process_maps() {
        let maps = "\
55d0c0a00000-55d0c0a21000 rw-p 00000000 00:00 0                          [heap]
7f05a09d0000-7f05a11d0000 rw-s 00000000 00:01 4121                       /memfd:memif_region_0 (deleted)
7f05a11d0000-7f05a19d4000 rw-s 00000000 00:01 4187                       /memfd:memif_region_1 (deleted)
7f05a19d4000-7f05a19d5000 r--s 00000000 00:01 4188                       /memfd:memif_region_2 (deleted)
7f05a2000000-7f05a2200000 rw-s 00000000 00:2a 77                         /dev/hugepages/rtemap_0
7f05a2200000-7f05a2201000 rw-s 00000000 00:01 99                         /memfd:other (deleted)
7f05a2400000-7f05a2401000 rw-p 00000000 00:01 98                         /memfd:memif_region_3 (deleted)
7f05a2600000-7f05a2800000 rw-s 00000000 00:01 5001                       /memfd:memif region 0 (deleted)
7f05a2800000-7f05a2a00000 rw-s 00000000 00:01 5002                       /memfd:memif0/0 region 1 (deleted)
7f05a2a00000-7f05a2c00000 rw-s 00000000 00:01 5003                       /memfd:memif_region_7
";
        let region = |start, end, inode| MemifRegionMapping { start, end, inode };
        assert_eq!(
            memif_region_mappings(maps),
            [
                region(0x7f05a09d0000, 0x7f05a11d0000, 4121),
                region(0x7f05a11d0000, 0x7f05a19d4000, 4187),
                region(0x7f05a2600000, 0x7f05a2800000, 5001),
                region(0x7f05a2800000, 0x7f05a2a00000, 5002),
                region(0x7f05a2a00000, 0x7f05a2c00000, 5003),
            ],
            "shared writable memif regions of DPDK, libmemif and VPP only"
        );
        assert_eq!(memif_region_mappings(maps)[0].bytes(), 8 << 20);
        assert!(memif_region_mappings("").is_empty());
        assert!(memif_region_mappings("garbage\n7f00-zz rw-s 0 0 1 /memfd:memif_region_0\n").is_empty());
        assert!(memif_region_mappings("7f00-8f00 rw-s 0 0 1\n").is_empty(), "no path");
    }

    #[test]
    fn the_eal_figure_is_kept_unless_the_eal_only_estimated_it() {
        let unmeasured = || -> (u64, u64) { panic!("measured although the EAL's figure stands") };
        assert_eq!(choose_tsc_hz(2_450_000_000, false, unmeasured), (2_450_000_000, TscSource::Eal));
        assert_eq!(
            choose_tsc_hz(2_450_000_000, true, || (2_445_406_123, 18_250)),
            (2_445_406_123, TscSource::Measured { window_us: 18_250, eal_estimate_hz: 2_450_000_000 })
        );
        // A measurement far from the estimate (TSCs apart between cores) is not trusted.
        assert_eq!(
            choose_tsc_hz(2_450_000_000, true, || (3_100_000_000, 18_250)),
            (2_450_000_000, TscSource::EalEstimate { measured_hz: 3_100_000_000 })
        );
    }

    #[test]
    fn the_tsc_measurement_spans_at_least_5_ms_and_repeats_itself() {
        let (first, window_us) = tsc_hz_since(TscClockPair::read());
        assert!(window_us >= 5000, "{window_us} µs");
        let (second, _) = tsc_hz_since(TscClockPair::read());
        let apart = first.abs_diff(second) as f64 / first as f64;
        assert!(apart < 0.002, "{first} Hz, then {second} Hz");
        // And it agrees with the TSC's cycles over std's clock, over 50 ms.
        let (t0, c0) = (std::time::Instant::now(), tsc());
        std::thread::sleep(std::time::Duration::from_millis(50));
        let (c1, t1) = (tsc(), std::time::Instant::now());
        let rough = (c1 - c0) as f64 / (t1 - t0).as_secs_f64();
        assert!((rough / first as f64 - 1.0).abs() < 0.01, "{first} Hz measured, {rough:.0} over 50 ms");
    }

    #[test]
    fn eal_start_answers_sysfs_lookups_as_the_files_do() {
        // SAFETY: no arguments; reads sysfs (see dpdk-sys/shim.c).
        let mismatched = unsafe { dpdk_sys::vs_sysfs_answers_mismatched() };
        if mismatched == -1 {
            // Left to faccessat where the directories cannot be read.
            let readable = |d: &str| std::fs::read_dir(d).is_ok();
            assert!(!readable("/sys/devices/system/node") || !readable("/sys/devices/system/cpu"));
        } else {
            assert_eq!(mismatched, 0, "answers for NUMA node and core id paths that differ from sysfs");
        }
    }

    #[test]
    fn munmap_waits_until_pollers_leave_their_section() {
        use std::sync::mpsc::channel;
        let (entered_tx, entered) = channel();
        let (leave, leave_rx) = channel::<()>();
        let poller = std::thread::spawn(move || {
            let mut p = Poller::register();
            assert!(p.is_registered(), "a free poller slot");
            p.enter();
            entered_tx.send(()).unwrap();
            leave_rx.recv().unwrap();
            let left = std::time::Instant::now();
            p.leave();
            left
        });
        entered.recv().unwrap();
        // SAFETY: a fresh anonymous page, no pointers of ours into it.
        let page = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(page, libc::MAP_FAILED);
        let page = page as usize;
        let unmapper = std::thread::spawn(move || {
            // SAFETY: the page mapped above, used by nothing.
            let rc = unsafe { munmap(page as *mut libc::c_void, 4096) };
            (rc, std::time::Instant::now())
        });
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(!unmapper.is_finished(), "munmap returned while a poller was inside a section");
        leave.send(()).unwrap();
        let left = poller.join().unwrap();
        let (rc, unmapped) = unmapper.join().unwrap();
        assert_eq!(rc, 0);
        assert!(unmapped >= left);
        // A registered poller outside its section holds nothing up (the wait would be 100 ms).
        let mut p = Poller::register();
        assert!(p.is_registered(), "a free poller slot");
        p.enter();
        p.leave();
        let other = std::thread::spawn(move || {
            // SAFETY: as above.
            let page = unsafe {
                libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
            };
            let since = std::time::Instant::now();
            // SAFETY: the page mapped above, used by nothing.
            assert_eq!(unsafe { munmap(page, 4096) }, 0);
            since.elapsed()
        });
        assert!(other.join().unwrap() < std::time::Duration::from_millis(50));
        drop(p);
    }

    /// A fresh anonymous mapping of `bytes`, none of it touched: a heap buffer may reuse
    /// memory another test already touched (glibc raises its mapping threshold as big
    /// buffers are freed). Unmapped on drop.
    struct FreshMapping(*mut u8, usize);

    impl FreshMapping {
        fn new(bytes: usize) -> FreshMapping {
            let p = map_anonymous(bytes).expect("an anonymous mapping").as_ptr();
            // Where transparent hugepages are on for everything, one write would map 2 MiB.
            // SAFETY: a hint about the mapping just made; it changes no data.
            unsafe { libc::madvise(p, bytes, libc::MADV_NOHUGEPAGE) };
            FreshMapping(p as *mut u8, bytes)
        }

        /// The mapping as a buffer's unused room, minus a page at the start, as a heap
        /// buffer's room rarely starts on a page.
        fn room(&mut self) -> &mut [std::mem::MaybeUninit<u8>] {
            // SAFETY: the range lies inside the mapping, which lives as long as `self`;
            // MaybeUninit<u8> has no validity requirement.
            unsafe { std::slice::from_raw_parts_mut(self.0.add(100) as *mut _, self.1 - 100) }
        }

        /// Pages of the mapping mapped now.
        fn mapped_pages(&self) -> usize {
            let mut map = vec![0u8; self.1 / 4096];
            // SAFETY: mincore reads the page tables of the mapping's pages and writes one
            // byte per page into `map`, which has exactly that many.
            assert_eq!(unsafe { libc::mincore(self.0 as *mut libc::c_void, self.1, map.as_mut_ptr()) }, 0);
            map.iter().filter(|&&b| b & 1 != 0).count()
        }
    }

    impl Drop for FreshMapping {
        fn drop(&mut self) {
            // SAFETY: unmaps exactly the mapping made in `new`; `room` borrows end with self.
            unsafe { libc::munmap(self.0 as *mut libc::c_void, self.1) };
        }
    }

    #[test]
    fn populate_maps_a_buffers_room_at_once() {
        let mut m = FreshMapping::new(8 << 20);
        assert_eq!(m.mapped_pages(), 0);
        populate(m.room());
        // Every whole page of the room: all but the first, which it starts inside.
        assert_eq!(m.mapped_pages(), 2047);
    }

    #[test]
    fn populate_maps_what_is_missing_around_pages_already_mapped() {
        // 24 MiB, more than one mincore chunk (16 MiB): a page of every third MiB written first.
        let mut m = FreshMapping::new(24 << 20);
        for mib in (0..24).step_by(3) {
            m.room()[(mib << 20) + 8192].write(1);
        }
        assert_eq!(m.mapped_pages(), 8);
        populate(m.room());
        assert_eq!(m.mapped_pages(), 6143);
    }

    #[test]
    fn a_ring_ends_a_sleep_and_is_taken_once() {
        let bell = Doorbell::new().unwrap();
        // Unrung: the sleep lasts its time.
        let t0 = Instant::now();
        assert!(!bell.sleep_us(3000));
        assert!(t0.elapsed() >= Duration::from_micros(3000), "{:?}", t0.elapsed());
        // Rung before: the sleep ends at once, and takes the ring with it.
        bell.ring();
        bell.ring();
        assert!(bell.sleep_us(10_000_000));
        assert!(!bell.sleep_us(1000), "the rings were taken by the sleep they ended");
        // Rung from another thread during a 20 s sleep: it ends then.
        std::thread::scope(|s| {
            let t0 = Instant::now();
            s.spawn(|| {
                std::thread::sleep(Duration::from_millis(20));
                bell.ring();
            });
            assert!(bell.sleep_us(20_000_000));
            let slept = t0.elapsed();
            assert!(slept >= Duration::from_millis(20) && slept < Duration::from_secs(10), "{slept:?}");
        });
    }

    #[test]
    fn device_name_of_vdev_and_pci() {
        assert_eq!(device_name("net_af_packet0,iface=veth0"), "net_af_packet0");
        assert_eq!(device_name("net_null1"), "net_null1");
        assert_eq!(device_name("0000:03:00.1"), "0000:03:00.1");
        assert_eq!(device_name("03:00.1,foo=bar"), "0000:03:00.1");
    }
}
