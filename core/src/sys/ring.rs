//! One worker's io_uring: submission with a backlog, waiting with a deadline, a sparse
//! fixed-file table (so per-task fds stay out of the process fd table), a provided buffer
//! ring (so an idle task holds no read buffer), and the opcode probe.

use std::collections::{HashMap, VecDeque};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

/// A completion, copied out of the completion queue so the ring can be borrowed again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Completion {
    pub(crate) user_data: u64,
    pub(crate) result: i32,
    pub(crate) flags: u32,
}

impl Completion {
    pub(crate) fn more(&self) -> bool {
        cqueue::more(self.flags)
    }

    pub(crate) fn buffer_id(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }
}

/// A submission built by [`ops`]. None of them points at caller memory (reads use the
/// ring's own provided buffers; paths go through [`Ring::push_rmdir`], written bytes
/// through [`Ring::push_write`]), which is what makes [`Ring::push`] safe.
pub(crate) struct Sqe(squeue::Entry);

/// The opcodes the worker's driver submits; [`probe`] checks each.
pub(crate) const REQUIRED_OPCODES: &[(u8, &str)] = &[
    (opcode::Read::CODE, "READ"),
    (opcode::Recv::CODE, "RECV"),
    (opcode::PollAdd::CODE, "POLL_ADD"),
    (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
    (opcode::Close::CODE, "CLOSE"),
    (opcode::FixedFdInstall::CODE, "FIXED_FD_INSTALL"),
    (opcode::UnlinkAt::CODE, "UNLINKAT"),
    (opcode::Write::CODE, "WRITE"),
    (opcode::Send::CODE, "SEND"),
];

/// What the kernel's io_uring offers, from a throw-away ring.
#[derive(Debug, Clone)]
pub(crate) struct ProbeReport {
    /// Names of the [`REQUIRED_OPCODES`] the kernel lacks.
    pub(crate) missing: Vec<&'static str>,
}

/// Sets up a 2-entry ring and asks the kernel which opcodes it supports. An error is the
/// errno of `io_uring_setup` or `IORING_REGISTER_PROBE` (seccomp: `EPERM`/`ENOSYS`;
/// `kernel.io_uring_disabled`: `EPERM`; very old kernels: `EINVAL`).
pub(crate) fn probe() -> io::Result<ProbeReport> {
    let ring = IoUring::new(2)?;
    let mut probe = io_uring::Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    let missing = REQUIRED_OPCODES
        .iter()
        .filter(|(code, _)| !probe.is_supported(*code))
        .map(|(_, name)| *name)
        .collect();
    Ok(ProbeReport { missing })
}

pub(crate) struct Ring {
    // Field order is drop order: the ring goes before the buffers it reads into.
    ring: IoUring,
    buffers: ProvidedBuffers,
    files: u32,
    /// Submissions that did not fit in the submission queue yet.
    backlog: VecDeque<Sqe>,
    /// Paths that submissions in flight point at, by `user_data`: kept alive until the
    /// owner takes them back after the completion ([`Ring::take_path`]).
    paths: HashMap<u64, CString>,
    /// Buffers that writes in flight read from, by `user_data`, with the offset written
    /// from: kept alive until the owner takes them back ([`Ring::take_write`]).
    writes: HashMap<u64, (Vec<u8>, usize)>,
}

impl Ring {
    /// A ring with `sq_entries` submissions, `cq_entries` completions and a sparse fixed-file
    /// table of `files` slots. Created and used on the same thread (`SINGLE_ISSUER`).
    /// `buffers` buffers of `buffer_size` bytes feed the reads.
    pub(crate) fn new(
        sq_entries: u32,
        cq_entries: u32,
        files: u32,
        buffers: u16,
        buffer_size: usize,
    ) -> io::Result<Ring> {
        let ring = IoUring::builder()
            .setup_cqsize(cq_entries)
            .setup_single_issuer()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_submit_all()
            .build(sq_entries)?;
        ring.submitter().register_files_sparse(files)?;
        let buffers = ProvidedBuffers::new(&ring, 0, buffers, buffer_size)?;
        Ok(Ring {
            ring,
            buffers,
            files,
            backlog: VecDeque::new(),
            paths: HashMap::new(),
            writes: HashMap::new(),
        })
    }

    pub(crate) fn buffer_group(&self) -> u16 {
        self.buffers.group
    }

    pub(crate) fn buffer_size(&self) -> u32 {
        self.buffers.size as u32
    }

    /// The `len` bytes a read completion delivered in buffer `bid`. The caller owns that
    /// buffer from the completion until it gives it back with [`recycle`](Ring::recycle)
    /// (which takes `&mut self`, so no slice from here can outlive it).
    pub(crate) fn lent_buffer(&self, bid: u16, len: usize) -> &[u8] {
        self.buffers.filled(bid, len)
    }

    /// Gives buffer `bid` back to the kernel.
    pub(crate) fn recycle(&mut self, bid: u16) {
        self.buffers.recycle(bid)
    }

    pub(crate) fn fixed_files(&self) -> u32 {
        self.files
    }

    /// Queues one submission; it reaches the kernel at the latest with the next
    /// [`submit`](Ring::submit) or [`submit_and_wait`](Ring::submit_and_wait). When the
    /// submission queue is full the entry waits in a backlog that every later submit drains
    /// first, so no entry is ever dropped, and queueing itself never fails: a caller cannot
    /// mistake a queued entry for a lost one.
    pub(crate) fn push(&mut self, entry: Sqe) {
        if self.backlog.is_empty() && self.try_push(&entry) {
            return;
        }
        self.backlog.push_back(entry);
    }

    fn try_push(&mut self, entry: &Sqe) -> bool {
        // SAFETY: entries from `ops` reference no memory of ours except the provided
        // buffers, which live as long as the ring (see field order), the paths of
        // `push_rmdir`, kept in `paths` until their completion was seen, and the buffers of
        // `push_write`, kept in `writes` likewise. Fds and fixed
        // slots they name may close early: the kernel holds its own file reference.
        unsafe { self.ring.submission().push(&entry.0) }.is_ok()
    }

    /// Entries queued and not yet handed to the kernel's submission queue.
    pub(crate) fn backlog(&self) -> usize {
        self.backlog.len()
    }

    /// Hands queued submissions (the backlog first) to the kernel without waiting. `EBUSY`
    /// (the completion queue is full) is not an error: the rest waits for the next call,
    /// after the caller drained completions.
    pub(crate) fn submit(&mut self) -> io::Result<()> {
        loop {
            while let Some(entry) = self.backlog.pop_front() {
                if !self.try_push(&entry) {
                    self.backlog.push_front(entry);
                    break;
                }
            }
            let queued = self.ring.submission().len();
            match self.ring.submit() {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => return Ok(()),
                Err(e) => return Err(e),
            }
            let taken = queued > self.ring.submission().len() || queued == 0;
            if self.backlog.is_empty() || !taken {
                return Ok(());
            }
        }
    }

    /// Submits and waits for at least one completion, or until `timeout` passes.
    pub(crate) fn submit_and_wait(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if !self.backlog.is_empty() {
            self.submit()?;
        }
        let result = match timeout {
            Some(timeout) => {
                let ts = types::Timespec::from(timeout);
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
            None => self.ring.submit_and_wait(1),
        };
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Removes the directory `path` (`unlinkat(AT_FDCWD, path, AT_REMOVEDIR)`) in the kernel's
    /// workers, off this thread. `user_data` must be unique among submissions in flight; the
    /// path is kept until [`Ring::take_path`] after its completion.
    pub(crate) fn push_rmdir(&mut self, path: CString, user_data: u64) {
        let entry = opcode::UnlinkAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
            .flags(libc::AT_REMOVEDIR)
            .build()
            .user_data(user_data);
        // The CString's buffer does not move when the CString moves into the map, and it
        // stays there until the completion was seen (`take_path`), so the pointer the
        // entry holds stays valid for as long as the kernel may read it.
        self.paths.insert(user_data, path);
        self.push(Sqe(entry));
    }

    /// Writes `bytes[start..]` (at most `u32::MAX` bytes of it) to fixed slot `fixed`: a
    /// socket with `send(MSG_NOSIGNAL)` (no `SIGPIPE` when the peer is gone), a pipe with
    /// `write` at the current position. `user_data` must be unique among submissions in
    /// flight; the buffer is kept until [`Ring::take_write`] after its completion.
    pub(crate) fn push_write(
        &mut self,
        fixed: u32,
        bytes: Vec<u8>,
        start: usize,
        socket: bool,
        user_data: u64,
    ) {
        let rest = bytes.get(start..).unwrap_or(&[]);
        let (ptr, len) = (rest.as_ptr(), rest.len().min(u32::MAX as usize) as u32);
        let entry = if socket {
            opcode::Send::new(types::Fixed(fixed), ptr, len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        } else {
            opcode::Write::new(types::Fixed(fixed), ptr, len)
                .offset(u64::MAX)
                .build()
        };
        // The Vec's heap buffer does not move when the Vec moves into the map, and it stays
        // there until the completion was seen (`take_write`), so the pointer the entry holds
        // stays valid for as long as the kernel may read it.
        self.writes.insert(user_data, (bytes, start));
        self.push(Sqe(entry.user_data(user_data)));
    }

    /// The buffer of a completed `push_write`, released once its completion was seen.
    pub(crate) fn take_write(&mut self, user_data: u64) -> Option<(Vec<u8>, usize)> {
        self.writes.remove(&user_data)
    }

    /// How many `push_rmdir` completions are still to come.
    pub(crate) fn rmdirs_in_flight(&self) -> usize {
        self.paths.len()
    }

    /// The path of a completed `push_rmdir`, released once its completion was seen.
    pub(crate) fn take_path(&mut self, user_data: u64) -> Option<CString> {
        self.paths.remove(&user_data)
    }

    /// Moves every available completion into `out`. A completion that names a provided
    /// buffer hands that buffer to us until [`recycle`](Ring::recycle).
    pub(crate) fn drain_completions(&mut self, out: &mut Vec<Completion>) {
        let start = out.len();
        let mut cq = self.ring.completion();
        cq.sync();
        out.extend(cq.map(|cqe| Completion {
            user_data: cqe.user_data(),
            result: cqe.result(),
            flags: cqe.flags(),
        }));
        for c in &out[start..] {
            if let Some(bid) = c.buffer_id() {
                self.buffers.handed_back(bid);
            }
        }
    }

    /// Puts `fd` into fixed slot `slot`; the ordinary descriptor is closed either way.
    pub(crate) fn register_file(&self, slot: u32, fd: OwnedFd) -> io::Result<()> {
        let raw: RawFd = fd.as_raw_fd();
        // The fd leaves the process table (installed or refused, it is closed below): a
        // stdin or channel end's guard goes with it (see `sys::spawn::guarded`).
        super::spawn::unguard(raw);
        self.ring.submitter().register_files_update(slot, &[raw])?;
        drop(fd);
        Ok(())
    }

    /// Empties fixed slot `slot` at once (the kernel drops its file reference).
    pub(crate) fn unregister_file(&self, slot: u32) -> io::Result<()> {
        self.ring.submitter().register_files_update(slot, &[-1])?;
        Ok(())
    }
}

/// An anonymous private mapping, unmapped on drop. The kernel writes into it behind the
/// compiler's back (provided buffers), so it is only ever reached through raw pointers,
/// never owned as a Rust allocation.
struct Mapping {
    addr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// `populate`: fault every page in now (`MAP_POPULATE`), so the memory is the ring's
    /// fixed cost from its start rather than growing as reads first touch each buffer.
    fn new(len: usize, populate: bool) -> io::Result<Mapping> {
        let populate = if populate { libc::MAP_POPULATE } else { 0 };
        // SAFETY: a fresh anonymous private mapping (page-aligned, zeroed), checked for
        // MAP_FAILED below; nothing else refers to it.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | populate,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let addr = NonNull::new(addr.cast::<u8>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(Mapping { addr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in `new` with this length; its users are gone (the
        // ring that wrote into it is dropped before `ProvidedBuffers`).
        unsafe {
            libc::munmap(self.addr.as_ptr().cast(), self.len);
        }
    }
}

/// A provided buffer ring (`IORING_REGISTER_PBUF_RING`): `count` buffers of `size` bytes that
/// the kernel picks from when a read completes.
///
/// Ownership of each buffer alternates: published to the kernel (it may write into it at
/// any time; we never look at it) → handed back by a completion naming its id (ours until
/// recycled: only then is a slice over it built) → recycled (the kernel's again).
pub(crate) struct ProvidedBuffers {
    entries: Mapping,
    memory: Mapping,
    /// Buffers a completion handed back and not yet recycled: only those are ever looked at.
    ours: Vec<bool>,
    count: u16,
    size: usize,
    group: u16,
    tail: u16,
}

impl ProvidedBuffers {
    /// `count` must be a power of two no larger than 32,768.
    fn new(ring: &IoUring, group: u16, count: u16, size: usize) -> io::Result<Self> {
        if !count.is_power_of_two() || count > 32768 || size == 0 || size > u32::MAX as usize {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let entries = Mapping::new(
            usize::from(count) * std::mem::size_of::<types::BufRingEntry>(),
            false,
        )?;
        let memory = Mapping::new(usize::from(count) * size, true)?;
        let mut this = ProvidedBuffers {
            entries,
            memory,
            ours: vec![false; usize::from(count)],
            count,
            size,
            group,
            tail: 0,
        };
        // SAFETY: the entry mapping holds `count` entries, page-aligned as the kernel needs,
        // and lives until `Drop`, which runs only after the owning ring is dropped (field
        // order of `Ring`).
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                this.entries.addr.as_ptr() as u64,
                count,
                group,
                0,
            )?;
        }
        for bid in 0..count {
            this.stage(bid);
        }
        this.publish();
        Ok(this)
    }

    /// A completion named buffer `bid`: the kernel is done with it until it is recycled.
    fn handed_back(&mut self, bid: u16) {
        if let Some(ours) = self.ours.get_mut(usize::from(bid)) {
            *ours = true;
        }
    }

    /// The bytes the kernel wrote into buffer `bid`, which a completion handed back to us
    /// (empty for a buffer the kernel owns: it may be writing into it).
    fn filled(&self, bid: u16, len: usize) -> &[u8] {
        if !self.ours.get(usize::from(bid)).copied().unwrap_or(false) {
            return &[];
        }
        let start = usize::from(bid % self.count) * self.size;
        // SAFETY: `start + len.min(size)` lies inside the memory mapping. Buffer `bid` was
        // handed back by a completion (`ours`) and goes back to the kernel only through
        // `recycle` (`&mut self`), which cannot happen while this shared borrow lives, so the
        // kernel does not write into it while the slice lives.
        unsafe {
            std::slice::from_raw_parts(self.memory.addr.as_ptr().add(start), len.min(self.size))
        }
    }

    /// Gives buffer `bid` back to the kernel (once; a buffer that is not ours is left alone).
    fn recycle(&mut self, bid: u16) {
        match self.ours.get_mut(usize::from(bid)) {
            Some(ours) if *ours => *ours = false,
            _ => return,
        }
        self.stage(bid);
        self.publish();
    }

    fn stage(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        let addr = self.memory.addr.as_ptr() as u64 + (usize::from(bid) * self.size) as u64;
        // SAFETY: `index < count`, inside the entry mapping; the kernel reads only entries
        // between its head and the published tail, and this one is past the published tail.
        let entry = unsafe {
            &mut *self
                .entries
                .addr
                .as_ptr()
                .cast::<types::BufRingEntry>()
                .add(index)
        };
        entry.set_addr(addr);
        entry.set_len(self.size as u32);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail field overlays the reserved field of entry 0, inside the mapping;
        // the kernel reads it concurrently, so it is written as an atomic with release order,
        // which also publishes the entries staged before it.
        unsafe {
            let tail =
                types::BufRingEntry::tail(self.entries.addr.as_ptr().cast()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

/// Builds the submissions the worker uses. Each is safe to push as long as the fixed slot
/// or fd it names stays registered/open until its completion, which the driver guarantees
/// by releasing a task's slots only after its machine says nothing is in flight.
pub(crate) mod ops {
    use super::Sqe;
    use io_uring::{opcode, types};

    /// `IORING_RECVSEND_POLL_FIRST` (io_uring.h; the crate keeps its constants private).
    const RECVSEND_POLL_FIRST: u16 = 1;

    /// One read into a provided buffer of `group` (at most `len` bytes), chosen by the
    /// kernel only once data is there: an idle stream holds no buffer. One read at a time
    /// per stream (not multishot), so a stream whose task is paused by flow control gets at
    /// most one more buffer before its read ends.
    pub(crate) fn read_select(fixed: u32, group: u16, len: u32, user_data: u64) -> Sqe {
        Sqe(
            opcode::Read::new(types::Fixed(fixed), std::ptr::null_mut(), len)
                .offset(u64::MAX)
                .buf_group(group)
                .build()
                .flags(io_uring::squeue::Flags::BUFFER_SELECT)
                .user_data(user_data),
        )
    }

    /// The same for a socket (a channel): `recv`, waiting for data before trying
    /// (`IORING_RECVSEND_POLL_FIRST`): a request channel is usually empty when its read is
    /// re-armed (the task waits for its answer), and a first attempt would only fail.
    pub(crate) fn recv_select(fixed: u32, group: u16, len: u32, user_data: u64) -> Sqe {
        Sqe(
            opcode::Recv::new(types::Fixed(fixed), std::ptr::null_mut(), len)
                .buf_group(group)
                .ioprio(RECVSEND_POLL_FIRST)
                .build()
                .flags(io_uring::squeue::Flags::BUFFER_SELECT)
                .user_data(user_data),
        )
    }

    pub(crate) fn poll_in_fixed(fixed: u32, user_data: u64) -> Sqe {
        Sqe(
            opcode::PollAdd::new(types::Fixed(fixed), libc::POLLIN as u32)
                .build()
                .user_data(user_data),
        )
    }

    pub(crate) fn poll_pri_fixed(fixed: u32, user_data: u64) -> Sqe {
        Sqe(
            opcode::PollAdd::new(types::Fixed(fixed), (libc::POLLPRI | libc::POLLERR) as u32)
                .build()
                .user_data(user_data),
        )
    }

    pub(crate) fn poll_in_multishot(fd: i32, user_data: u64) -> Sqe {
        Sqe(opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
            .multi(true)
            .build()
            .user_data(user_data))
    }

    pub(crate) fn install_fixed(fixed: u32, user_data: u64) -> Sqe {
        // Flags 0: the installed descriptor is O_CLOEXEC, as every fd of the supervisor is.
        Sqe(opcode::FixedFdInstall::new(types::Fixed(fixed), 0)
            .build()
            .user_data(user_data))
    }

    pub(crate) fn cancel(target: u64, user_data: u64) -> Sqe {
        Sqe(opcode::AsyncCancel::new(target)
            .build()
            .user_data(user_data))
    }

    pub(crate) fn close_fixed(fixed: u32, user_data: u64) -> Sqe {
        Sqe(opcode::Close::new(types::Fixed(fixed))
            .build()
            .user_data(user_data))
    }
}
