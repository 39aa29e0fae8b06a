//! Kernel interfaces attached through packet sockets, without an ethdev (`system:IFACE`
//! ports, as OVS calls its kernel-interface ports). DPDK 22.11 as Debian builds it has at
//! most 32 ethdev ports per process (RTE_MAX_ETHPORTS), and a node runs more pods than that.
//!
//! Each rx queue is a socket with a TPACKET_V2 receive ring (several rx queues share the
//! interface's traffic by flow hash, a fanout group), copied into mbufs as DPDK's af_packet
//! driver copies. A port's tx queues share one socket without a ring: a burst goes in one
//! `sendmmsg` straight from the mbufs (the kernel copies once; a transmit ring would take a
//! copy more and the same one system call per burst).
//!
//! A frame whose sender left its TCP or UDP checksum to offload (a veth with tx checksumming
//! on, the default; the kernel marks it TP_STATUS_CSUMNOTREADY) gets it filled in here, so
//! UDP and TCP from such an interface arrive intact. The checksum is found as the flow key
//! finds the L4 header (`flow::edit::complete_offloaded_checksum`), not from a
//! `virtio_net_hdr` (PACKET_VNET_HDR): on a TPACKET_V2 ring, one frame the kernel cannot
//! describe in that header (an SCTP GSO frame) leaves its slot owned and stops the ring for
//! good. TSO super-frames (longer than a slot) are cut short and counted as
//! errors: a sender must not use TSO.
//!
//! Setting up a ring makes the kernel wait for an RCU grace period (10-30 ms on a VM, one
//! after another; rings set up at the same time on several threads share their waits), and
//! so does closing one; binding a socket that has one does not. So receive rings are made
//! ahead of need, unbound and several at once, and a port added takes a ready one: DPDK's
//! af_packet driver waits for four grace periods per port, about 65 ms here.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::{sys, DpdkError, MbufBurst, Mempool, BURST};
use crate::flow::edit::complete_offloaded_checksum;
use crate::stats::bump;

/// Fewest slots of an rx ring (a port's rx descriptors give the number).
const MIN_FRAMES: u32 = 64;
/// Segments of one frame a send takes (longer chains are dropped and counted).
const TX_SEGMENTS: usize = 4;
const ETH_P_ALL_BE: u16 = (libc::ETH_P_ALL as u16).to_be();
/// Where a slot's sockaddr_ll starts: after the header, 16-byte aligned.
const SLOT_ADDRESS: usize = std::mem::size_of::<libc::tpacket2_hdr>().next_multiple_of(16);
/// DPDK's "no port" value, for the `port` field of mbufs these rings fill.
const NO_ETHDEV: u16 = u16::MAX;

/// The interface index of `iface`, or why there is none.
pub(super) fn interface_index(iface: &str) -> Result<u32, DpdkError> {
    let c = CString::new(iface).map_err(|_| DpdkError::new("interface name contains NUL", libc::EINVAL))?;
    // SAFETY: a valid C string; the call reads it and returns 0 for an unknown name.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(DpdkError::new(format!("no network interface named '{iface}'"), -libc::ENODEV));
    }
    Ok(index)
}

/// The interface's name now, from its index.
pub(super) fn interface_name(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer has IF_NAMESIZE bytes, as if_indextoname needs; it writes a
    // NUL-terminated name into it or returns NULL.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated string.
    Some(unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

/// Ring geometry for frames of up to `frame_bytes` (Ethernet header and tags included).
fn geometry(frames: u32, frame_bytes: u32) -> libc::tpacket_req {
    // The kernel puts a frame's data 16-byte aligned after its header and a sockaddr_ll;
    // a power of two keeps whole frames in each page-sized (or larger) block.
    let frame_size = (frame_bytes + 2 * libc::TPACKET2_HDRLEN as u32 + 16).next_power_of_two().max(2048);
    let block_size = frame_size.max(4096);
    let per_block = block_size / frame_size;
    let blocks = frames.max(MIN_FRAMES).div_ceil(per_block);
    libc::tpacket_req {
        tp_block_size: block_size,
        tp_block_nr: blocks,
        tp_frame_size: frame_size,
        tp_frame_nr: blocks * per_block,
    }
}

/// Bytes of memory a ring of this geometry maps.
fn ring_bytes(req: &libc::tpacket_req) -> usize {
    req.tp_block_size as usize * req.tp_block_nr as usize
}

fn last_error(op: String) -> DpdkError {
    DpdkError::new(op, -std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO))
}

fn set_option<T>(fd: &OwnedFd, name: libc::c_int, value: &T, what: &str) -> Result<(), DpdkError> {
    // SAFETY: `value` is a live T of the size passed, as the option expects.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            name,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(last_error(format!("packet socket: {what}")));
    }
    Ok(())
}

/// What a receive ring is made for: rings of one shape are interchangeable until bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Shape {
    pub frames: u32,
    pub frame_bytes: u32,
}

impl Shape {
    /// Slots for frames of the port's MTU (two tags, FCS room): longer ones, which the
    /// switch's buffers are not sized for either, are cut short and counted as errors.
    pub fn for_port(rx_descriptors: u16, mtu: u16) -> Shape {
        Shape { frames: rx_descriptors as u32, frame_bytes: mtu as u32 + 26 }
    }
}

/// Receive rings made ahead of need, unbound (see the module's notes), all of one shape,
/// and whether a refill is making more.
struct Pool {
    spares: Vec<(Shape, PacketRing)>,
    refilling: Option<Shape>,
}

static POOL: std::sync::Mutex<Pool> = std::sync::Mutex::new(Pool { spares: Vec::new(), refilling: None });
/// A ring joined the spares, or a refill ended.
static REFILLED: std::sync::Condvar = std::sync::Condvar::new();
/// Longest wait for a running refill.
const REFILL_WAIT: std::time::Duration = std::time::Duration::from_millis(200);
/// Ports' worth of rings kept ready: eight, as long as they hold at most `SPARE_BYTES` (the
/// 512 KiB rings of ports added at run time), else fewer, but one port's worth at least.
/// 60 adds one after another (a CNI plugin attaching pods) took 5 ms each with four ready,
/// 3.2 with eight; 30 took 7.4 with two.
const SPARE_PORTS: usize = 8;
const SPARE_BYTES: usize = 4 << 20;

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Ends a refill, also when it panics: waiters stop waiting for it.
struct RefillDone;

impl Drop for RefillDone {
    fn drop(&mut self) {
        pool().refilling = None;
        REFILLED.notify_all();
    }
}

/// Keeps [`SPARE_PORTS`] ports' worth of rings of `shape` ready (`per_port` each), made on a
/// thread of their own; spares of another shape go (the last port added sets the shape).
pub(super) fn keep_spares(shape: Shape, per_port: usize) {
    let ring_bytes = ring_bytes(&geometry(shape.frames, shape.frame_bytes));
    let wanted = (per_port * SPARE_PORTS).min((SPARE_BYTES / ring_bytes).max(per_port));
    let (missing, stale) = {
        let mut pool = pool();
        if pool.refilling.is_some() {
            return; // a running refill keeps what the port before needed: close enough
        }
        let (keep, stale): (Vec<_>, Vec<_>) =
            std::mem::take(&mut pool.spares).into_iter().partition(|(s, _)| *s == shape);
        pool.spares = keep;
        let missing = wanted.saturating_sub(pool.spares.len());
        if missing == 0 && stale.is_empty() {
            return;
        }
        pool.refilling = Some(shape);
        (missing, stale)
    };
    let spawned = std::thread::Builder::new().name("vswitchd-spares".into()).spawn(move || {
        {
            let _done = RefillDone;
            // All at once, each in the pool as soon as it is ready: the kernel's waits (a
            // grace period per ring) overlap, so two rings take about as long as one.
            in_parallel((0..missing).map(|_| {
                move || {
                    if let Ok(ring) = PacketRing::make(shape) {
                        pool().spares.push((shape, ring));
                        REFILLED.notify_all();
                    }
                }
            }));
        }
        // Closing waits for the kernel too (two grace periods a ring): after the refill,
        // which ports being added may wait for, and with no lock held.
        in_parallel(stale.into_iter().map(|(_, ring)| move || drop(ring)));
    });
    if spawned.is_err() {
        drop(RefillDone);
    }
}

/// Runs each job on a thread of its own and waits for all. A job whose thread cannot be
/// made is dropped: a ring not made is made when a port needs it, and dropping a stale
/// ring's job closes the ring.
fn in_parallel<F: FnOnce() + Send>(jobs: impl Iterator<Item = F>) {
    std::thread::scope(|scope| {
        for job in jobs {
            if let Err(e) = std::thread::Builder::new().name("vswitchd-spares".into()).spawn_scoped(scope, job) {
                tracing::warn!("no thread for a spare packet ring: {e}");
            }
        }
    });
}

/// A raw packet socket of protocol 0: no frames are delivered to it until it is bound with
/// a protocol.
fn packet_socket() -> Result<OwnedFd, DpdkError> {
    // SAFETY: socket(2) with constant arguments; a non-negative result is ours alone.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(last_error("packet socket (needs CAP_NET_RAW)".into()));
    }
    // SAFETY: `raw` is a new descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

fn bind(fd: &OwnedFd, ifindex: u32, protocol_be: u16) -> Result<(), DpdkError> {
    // SAFETY: all-zero is a valid sockaddr_ll; the fields that matter are set below.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = protocol_be;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: a valid sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(last_error(format!("bind a packet socket to interface {ifindex}")));
    }
    Ok(())
}

/// Counters of one queue: written by the queue's only thread, read by the control plane.
#[derive(Default)]
pub(super) struct RingCounters {
    pub packets: AtomicU64,
    pub bytes: AtomicU64,
    /// rx: frames cut short by the ring's slot size, too long for an mbuf, or with a
    /// checksum to fill in outside them; tx: frames the kernel refused.
    pub errors: AtomicU64,
    /// rx: bursts lost for want of mbufs (the frames stay in the ring).
    pub no_mbuf: AtomicU64,
}

/// A packet socket and its mapped receive ring. Closed and unmapped on drop.
pub(super) struct PacketRing {
    fd: OwnedFd,
    base: NonNull<u8>,
    map_len: usize,
    frame_size: usize,
    frames: usize,
    /// Next slot to read.
    head: usize,
}

// SAFETY: the ring is memory of this process shared with the kernel only; the handle is
// moved to the one thread that uses it.
unsafe impl Send for PacketRing {}

impl PacketRing {
    /// A receive socket on interface `ifindex` with a ring of `shape`, in promiscuous mode.
    pub fn open_rx(ifindex: u32, shape: Shape) -> Result<PacketRing, DpdkError> {
        let ring = Self::unbound(shape)?;
        // Bound once the ring exists: from here on the kernel delivers frames into it.
        bind(&ring.fd, ifindex, ETH_P_ALL_BE)?;
        let promisc = libc::packet_mreq {
            mr_ifindex: ifindex as i32,
            mr_type: libc::PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        set_option(&ring.fd, libc::PACKET_ADD_MEMBERSHIP, &promisc, "promiscuous mode")?;
        Ok(ring)
    }

    /// Joins fanout group `id` (frames spread over its sockets by flow hash), or with None a
    /// new group whose id the kernel picks (ids are shared by the whole network namespace, so
    /// one of ours could be another program's). Returns the group's id.
    pub fn join_fanout(&self, id: Option<u16>) -> Result<u16, DpdkError> {
        const PACKET_FANOUT_FLAG_UNIQUEID: u32 = 0x2000;
        let arg = match id {
            Some(id) => id as u32 | (libc::PACKET_FANOUT_HASH << 16),
            None => (libc::PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_UNIQUEID) << 16,
        };
        set_option(&self.fd, libc::PACKET_FANOUT, &arg, "PACKET_FANOUT")?;
        let mut got = 0u32;
        let mut len = std::mem::size_of::<u32>() as libc::socklen_t;
        // SAFETY: `got` and `len` are valid out-values of the sizes given.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_FANOUT,
                &mut got as *mut u32 as *mut libc::c_void,
                &mut len,
            )
        };
        if rc != 0 {
            return Err(last_error("read the PACKET_FANOUT group".into()));
        }
        Ok(got as u16)
    }

    /// A socket with its ring, bound to no interface: a spare one if there is one of this
    /// shape, else made now.
    fn unbound(shape: Shape) -> Result<PacketRing, DpdkError> {
        let spare = {
            let mut pool = pool();
            // A spare of this shape being made is ready sooner than a ring started now.
            let since = std::time::Instant::now();
            while !pool.spares.iter().any(|(s, _)| *s == shape)
                && pool.refilling == Some(shape)
                && since.elapsed() < REFILL_WAIT
            {
                let left = REFILL_WAIT.saturating_sub(since.elapsed());
                pool = REFILLED.wait_timeout(pool, left).unwrap_or_else(|e| e.into_inner()).0;
            }
            pool.spares.iter().position(|(s, _)| *s == shape).map(|i| pool.spares.swap_remove(i).1)
        };
        match spare {
            Some(ring) => Ok(ring),
            None => Self::make(shape),
        }
    }

    fn make(shape: Shape) -> Result<PacketRing, DpdkError> {
        let ring = Self::open(shape)?;
        // Frames this host sends out of the interface (the switch's own, too) are not input.
        set_option(&ring.fd, libc::PACKET_IGNORE_OUTGOING, &1i32, "PACKET_IGNORE_OUTGOING")?;
        Ok(ring)
    }

    fn open(shape: Shape) -> Result<PacketRing, DpdkError> {
        let fd = packet_socket()?;
        set_option(&fd, libc::PACKET_VERSION, &(libc::tpacket_versions::TPACKET_V2 as i32), "TPACKET_V2")?;
        let req = geometry(shape.frames, shape.frame_bytes);
        set_option(&fd, libc::PACKET_RX_RING, &req, "receive ring")?;
        let map_len = ring_bytes(&req);
        // SAFETY: maps the ring the kernel just allocated for this socket; nothing else maps
        // this range.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(last_error(format!("mmap of a {map_len}-byte packet ring")));
        }
        let frame_size = req.tp_frame_size as usize;
        Ok(PacketRing {
            fd,
            base: NonNull::new(base as *mut u8).expect("mmap returned a mapping"),
            map_len,
            frame_size,
            frames: req.tp_frame_nr as usize,
            head: 0,
        })
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// A second descriptor of the socket (for its statistics, read by the control plane).
    pub fn duplicate_fd(&self) -> Result<OwnedFd, DpdkError> {
        self.fd.try_clone().map_err(|e| DpdkError::new("dup a packet socket", -e.raw_os_error().unwrap_or(libc::EIO)))
    }

    /// Slot `i`'s header and status word.
    #[inline(always)]
    fn slot(&self, i: usize) -> (*mut libc::tpacket2_hdr, &AtomicU32) {
        // SAFETY: i < frames, so the slot lies inside the mapping, which lives as long as
        // self; slots are 16-byte aligned, the status word is the header's first field.
        unsafe {
            let hdr = self.base.as_ptr().add(i * self.frame_size) as *mut libc::tpacket2_hdr;
            (hdr, AtomicU32::from_ptr(std::ptr::addr_of_mut!((*hdr).tp_status)))
        }
    }

    /// Moves up to the free room of `burst` received frames into mbufs from `pool`, with
    /// VLAN tags the kernel took off put back and checksums left to offload filled in.
    /// Returns how many arrived.
    pub fn rx_burst(&mut self, pool: &Mempool, burst: &mut MbufBurst, counters: &RingCounters) -> usize {
        let room = BURST - burst.len;
        let mut ready = 0;
        while ready < room
            && self.slot((self.head + ready) % self.frames).1.load(Ordering::Acquire) & libc::TP_STATUS_USER != 0
        {
            ready += 1;
        }
        if ready == 0 {
            return 0;
        }
        let out = &mut burst.ptrs[burst.len..burst.len + ready];
        // SAFETY: the pool is alive and `out` has room for `ready` pointers; on success each
        // is a fresh mbuf we own, on failure none is taken.
        if unsafe { sys::rte_pktmbuf_alloc_bulk(pool.ptr.as_ptr(), out.as_mut_ptr(), ready as u32) } != 0 {
            bump(&counters.no_mbuf, 1);
            return 0;
        }
        let (mut kept, mut bytes) = (0, 0u64);
        for _ in 0..ready {
            let (hdr, status) = self.slot(self.head);
            // SAFETY: the kernel handed this slot over (TP_STATUS_USER, seen with Acquire) and
            // takes it back only with the store below; out[kept] is a fresh mbuf allocated
            // above, not yet given to the burst.
            let copied = unsafe { self.copy_slot(hdr, status.load(Ordering::Relaxed), out[kept]) };
            status.store(libc::TP_STATUS_KERNEL, Ordering::Release);
            self.head = (self.head + 1) % self.frames;
            match copied {
                Slot::Copied(len) => {
                    kept += 1;
                    bytes += len as u64;
                }
                Slot::Outgoing => {}
                Slot::Unfit => bump(&counters.errors, 1),
            }
        }
        if kept < ready {
            // SAFETY: the mbufs past `kept` were allocated above and hold nothing.
            unsafe { sys::rte_pktmbuf_free_bulk(out[kept..].as_mut_ptr(), (ready - kept) as u32) };
        }
        burst.len += kept;
        bump(&counters.packets, kept as u64);
        bump(&counters.bytes, bytes);
        kept
    }

    /// Copies the frame of slot `hdr` (its status word `status`) into the fresh mbuf `m`,
    /// with the VLAN tag the kernel took off put back and a checksum left to offload filled in.
    ///
    /// # Safety
    ///
    /// `hdr` is a slot of this ring that the kernel handed over (TP_STATUS_USER) and `m` a
    /// fresh single-segment mbuf the caller owns.
    #[inline(always)]
    unsafe fn copy_slot(&self, hdr: *const libc::tpacket2_hdr, status: u32, m: *mut sys::rte_mbuf) -> Slot {
        // SAFETY: per the contract, the slot's bytes (frame_size of them) are ours to read; the
        // frame is taken only if tp_mac and tp_snaplen keep it inside them, and it is copied
        // only if it fits the mbuf's buffer (buf_len bytes, data_off of them headroom), which
        // the slice written last covers.
        unsafe {
            let (mac, snaplen, len) = ((*hdr).tp_mac as usize, (*hdr).tp_snaplen as usize, (*hdr).tp_len as usize);
            let addr = (hdr as *const u8).add(SLOT_ADDRESS) as *const libc::sockaddr_ll;
            if (*addr).sll_pkttype == libc::PACKET_OUTGOING {
                return Slot::Outgoing;
            }
            let vlan = (status & libc::TP_STATUS_VLAN_VALID != 0).then(|| {
                let tpid = if status & libc::TP_STATUS_VLAN_TPID_VALID != 0 { (*hdr).tp_vlan_tpid } else { 0x8100 };
                (tpid, (*hdr).tp_vlan_tci)
            });
            let out_len = snaplen + if vlan.is_some() { 4 } else { 0 };
            let mb = &mut *m;
            // Cut short by the slot, a runt, or longer than the pool's buffers (a slot,
            // rounded up to a power of two, holds more than the port's MTU).
            if snaplen < len
                || snaplen < 14
                || mac + snaplen > self.frame_size
                || mb.data_off as usize + out_len > mb.buf_len as usize
            {
                return Slot::Unfit;
            }
            let src = (hdr as *const u8).add(mac);
            let dst = (mb.buf_addr as *mut u8).add(mb.data_off as usize);
            match vlan {
                None => std::ptr::copy_nonoverlapping(src, dst, snaplen),
                Some((tpid, tci)) => {
                    std::ptr::copy_nonoverlapping(src, dst, 12);
                    std::ptr::copy_nonoverlapping(tpid.to_be_bytes().as_ptr(), dst.add(12), 2);
                    std::ptr::copy_nonoverlapping(tci.to_be_bytes().as_ptr(), dst.add(14), 2);
                    std::ptr::copy_nonoverlapping(src.add(12), dst.add(16), snaplen - 12);
                }
            }
            if status & libc::TP_STATUS_CSUMNOTREADY != 0
                && !complete_offloaded_checksum(std::slice::from_raw_parts_mut(dst, out_len))
            {
                return Slot::Unfit;
            }
            mb.data_len = out_len as u16;
            mb.pkt_len = out_len as u32;
            mb.port = NO_ETHDEV;
            Slot::Copied(out_len)
        }
    }

    /// Slots in the ring.
    pub fn frames(&self) -> usize {
        self.frames
    }
}

/// What became of a received slot.
enum Slot {
    /// Copied into the mbuf: this many bytes.
    Copied(usize),
    /// Sent out of the interface by this host: not input.
    Outgoing,
    /// Not taken, counted as an error (see [`PacketRing::copy_slot`]).
    Unfit,
}

/// A port's transmit socket, shared by its workers' tx queues (the kernel serialises
/// sends on it): bursts of mbufs go with `sendmmsg`, no ring. Bound with protocol 0, it
/// receives nothing: the kernel copies no frames to it.
pub(super) struct PacketSender {
    fd: OwnedFd,
}

impl PacketSender {
    pub fn open(ifindex: u32) -> Result<PacketSender, DpdkError> {
        let fd = packet_socket()?;
        // Straight to the driver (a veth hands the frame to its peer), as DPDK's af_packet
        // driver sends.
        set_option(&fd, libc::PACKET_QDISC_BYPASS, &1i32, "PACKET_QDISC_BYPASS")?;
        bind(&fd, ifindex, 0)?;
        Ok(PacketSender { fd })
    }

    /// Sends `burst` in one system call, as DPDK's af_packet driver makes one per burst.
    /// Returns how many went. Sent mbufs are freed and leave the burst; those the kernel had
    /// no room for, or could not send because the interface is down or gone, stay in it, at
    /// the front. A frame the kernel refuses on its own (longer than the interface takes, a
    /// chain of more than [`TX_SEGMENTS`] segments) is freed and counted as an error.
    pub fn tx_burst(&self, burst: &mut MbufBurst, counters: &RingCounters) -> usize {
        if burst.len == 0 {
            return 0;
        }
        // SAFETY: all-zero iovecs and mmsghdrs are valid (null pointers, zero lengths).
        let mut iov: [libc::iovec; BURST * TX_SEGMENTS] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; BURST] = unsafe { std::mem::zeroed() };
        let mut bytes = [0u32; BURST];
        for (i, &m) in burst.ptrs[..burst.len].iter().enumerate() {
            let first = i * TX_SEGMENTS;
            let mut n = 0;
            // SAFETY: `m` is an mbuf the burst owns; its segments chain through `next`, each
            // with data_len bytes at buf_addr + data_off, alive until freed below.
            unsafe {
                bytes[i] = (*m).pkt_len;
                let mut seg = m;
                while !seg.is_null() && n < TX_SEGMENTS {
                    let sg = &*seg;
                    iov[first + n] = libc::iovec {
                        iov_base: (sg.buf_addr as *mut u8).add(sg.data_off as usize) as *mut libc::c_void,
                        iov_len: sg.data_len as usize,
                    };
                    n += 1;
                    seg = sg.next;
                }
                if !seg.is_null() {
                    n = 0; // too many segments: sent as an empty frame, which the kernel refuses
                }
            }
            msgs[i].msg_hdr.msg_iov = iov[first..].as_mut_ptr();
            msgs[i].msg_hdr.msg_iovlen = n;
        }
        let (mut done, mut sent, mut sent_bytes) = (0usize, 0u64, 0u64);
        while done < burst.len {
            // SAFETY: msgs[done..len] point into `iov`, whose entries point into mbufs the
            // burst owns; all outlive the call.
            let rc = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    msgs[done..].as_mut_ptr(),
                    (burst.len - done) as u32,
                    libc::MSG_DONTWAIT,
                )
            };
            if rc > 0 {
                let k = rc as usize;
                sent += k as u64;
                sent_bytes += bytes[done..done + k].iter().map(|&b| b as u64).sum::<u64>();
                done += k;
                continue;
            }
            match std::io::Error::last_os_error().raw_os_error().unwrap_or(0) {
                // This frame is refused for good: the others may go.
                libc::EINVAL | libc::EMSGSIZE => {
                    bump(&counters.errors, 1);
                    done += 1;
                }
                // No room now, or no interface: the rest stay in the burst (the caller
                // counts them as not taken), one system call for all of them.
                _ => break,
            }
        }
        if done > 0 {
            // SAFETY: ptrs[..done] are owned mbufs the kernel has copied (or refused).
            unsafe { sys::rte_pktmbuf_free_bulk(burst.ptrs.as_mut_ptr(), done as u32) };
            burst.ptrs.copy_within(done..burst.len, 0);
            burst.len -= done;
        }
        bump(&counters.packets, sent);
        bump(&counters.bytes, sent_bytes);
        sent as usize
    }
}

/// Frames the kernel dropped for want of a free rx slot on socket `fd` since the last call
/// (the kernel resets its count on each read).
pub(super) fn take_drops(fd: &OwnedFd) -> u64 {
    let mut stats = libc::tpacket_stats { tp_packets: 0, tp_drops: 0 };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `stats` and `len` are valid out-values of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            &mut stats as *mut libc::tpacket_stats as *mut libc::c_void,
            &mut len,
        )
    };
    if rc == 0 {
        stats.tp_drops as u64
    } else {
        0
    }
}

impl Drop for PacketRing {
    fn drop(&mut self) {
        // The system call itself, not this process's munmap (which waits for every poller
        // inside a poll section, for DPDK's memif): only the ring's owner ever reads it, and
        // a worker dropping a removed port's queue is inside its own section.
        // SAFETY: unmaps exactly the ring mapped in `open`; no slot reference outlives the
        // &mut borrow of rx_burst. The socket closes after (OwnedFd).
        unsafe { libc::syscall(libc::SYS_munmap, self.base.as_ptr(), self.map_len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spares_of(shape: Shape) -> usize {
        pool().spares.iter().filter(|(s, _)| *s == shape).count()
    }

    fn wait_for_refill() {
        let mut pool = pool();
        while pool.refilling.is_some() {
            pool = REFILLED.wait(pool).unwrap();
        }
    }

    /// Needs CAP_NET_RAW, as the integration tests do.
    #[test]
    fn spares_fill_to_their_budget_and_follow_the_last_shape() {
        let runtime = Shape { frames: 256, frame_bytes: 1526 }; // 512 KiB rings
        let config = Shape { frames: 1024, frame_bytes: 1526 }; // 2 MiB rings
        keep_spares(runtime, 1);
        wait_for_refill();
        let kept = SPARE_PORTS.min(SPARE_BYTES / (512 << 10));
        assert_eq!(spares_of(runtime), kept);
        let taken = PacketRing::unbound(runtime).expect("a spare ring");
        assert_eq!(spares_of(runtime), kept - 1);
        // Another shape: its spares replace the others, within the memory budget.
        keep_spares(config, 1);
        wait_for_refill();
        assert_eq!((spares_of(config), spares_of(runtime)), (SPARE_BYTES / (2 << 20), 0));
        // A port of two queues keeps two rings ready at least, whatever they hold.
        let jumbo = Shape { frames: 512, frame_bytes: 9026 }; // 8 MiB rings
        keep_spares(jumbo, 2);
        wait_for_refill();
        assert_eq!(spares_of(jumbo), 2);
        drop(taken);
        pool().spares.clear();
    }

    #[test]
    fn ring_geometry_holds_whole_frames_in_page_multiple_blocks() {
        for (frames, bytes) in [(256, 1526), (1024, 1526), (100, 9026), (1, 64), (4096, 65000)] {
            let g = geometry(frames, bytes);
            assert_eq!(g.tp_block_size % 4096, 0, "{frames} x {bytes}");
            assert_eq!(g.tp_block_size % g.tp_frame_size, 0);
            assert!(g.tp_frame_size as usize >= bytes as usize + 2 * libc::TPACKET2_HDRLEN);
            assert!(g.tp_frame_nr >= frames.max(super::MIN_FRAMES));
            assert_eq!(g.tp_frame_nr, g.tp_block_nr * (g.tp_block_size / g.tp_frame_size));
        }
    }
}
