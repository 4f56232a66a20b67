//! The clone itself: `clone3` (or `clone(2)` where `clone3` is refused) with
//! `CLONE_VM | CLONE_VFORK | CLONE_PIDFD`, the child on a small stack of its own, as glibc's
//! `posix_spawn` and Go's `forkExec` do. No page table is copied, so the cost does not grow
//! with the supervisor's memory; the cloning thread is suspended until the child has called
//! `execve` (or exited), which is why only a spawner thread, never an event loop, clones.
//!
//! - [`SpawnMethod`] and [`spawn_method`]: which system call, probed once per process.
//! - [`Cloner`]: one per cloning thread: the child's stack, and [`InFlight`], where the
//!   kernel publishes the pid and pidfd of the child being cloned, so that other threads can
//!   tell a runner from an orphan, and kill a child stuck before exec.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use libc::c_void;

use super::child::{child_entry, ChildCtx};

/// The real value of `CLONE_INTO_CGROUP` (`libc::CLONE_INTO_CGROUP` overflows a `c_int` and is 0).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
/// The child's stack: its code is a few frames of raw syscalls.
const CHILD_STACK: usize = 64 * 1024;

/// Which system call creates children.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpawnMethod {
    /// `clone3(CLONE_VM | CLONE_VFORK | CLONE_PIDFD [| CLONE_INTO_CGROUP])`: the child is
    /// born in its cgroup.
    Clone3,
    /// `clone(2)` with the same flags, where `clone3` is refused (Docker's and containerd's
    /// default seccomp profiles give `ENOSYS`). No `CLONE_INTO_CGROUP`: with cgroup
    /// containment the child writes itself into its cgroup before exec.
    Clone,
}

impl SpawnMethod {
    /// The method's name as logs, reports and [`SPAWN_METHOD_VAR`] spell it: `"clone3"` or
    /// `"clone"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SpawnMethod::Clone3 => "clone3",
            SpawnMethod::Clone => "clone",
        }
    }
}

/// The environment variable that forces a method (`clone` or `clone3`), for tests and for
/// checking the fallback on a host where `clone3` works.
pub const SPAWN_METHOD_VAR: &str = "PIDRING_SPAWN_METHOD";

static METHOD: OnceLock<(SpawnMethod, String)> = OnceLock::new();

/// How this process creates children, and why (one line, for logs and reports). Probed
/// once, at the first call: `clone3` unless the kernel or a seccomp filter refuses it
/// (`ENOSYS`, `EPERM`), or [`SPAWN_METHOD_VAR`] says otherwise.
pub fn spawn_method() -> (SpawnMethod, &'static str) {
    let (method, reason) = METHOD.get_or_init(|| {
        let chosen = probe();
        tracing::info!(method = chosen.0.as_str(), reason = %chosen.1, "spawn method");
        chosen
    });
    (*method, reason.as_str())
}

fn probe() -> (SpawnMethod, String) {
    match std::env::var(SPAWN_METHOD_VAR).as_deref() {
        Ok("clone") => {
            return (
                SpawnMethod::Clone,
                format!("{SPAWN_METHOD_VAR}=clone forces clone(2)"),
            )
        }
        Ok("clone3") if HAVE_CLONE3_ENTRY => {
            return (
                SpawnMethod::Clone3,
                format!("{SPAWN_METHOD_VAR}=clone3 forces clone3"),
            )
        }
        _ => {}
    }
    if !HAVE_CLONE3_ENTRY {
        return (
            SpawnMethod::Clone,
            format!(
                "clone3 needs a per-architecture entry, which {} lacks: clone(2)",
                std::env::consts::ARCH
            ),
        );
    }
    // clone3 with no arguments: the kernel answers EINVAL (size too small) without doing
    // anything; a seccomp filter or an old kernel answers ENOSYS or EPERM.
    // SAFETY: clone3 with a NULL argument and size 0 fails before reading anything.
    let ret = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<c_void>(), 0usize) };
    let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
    match (ret, errno) {
        (r, libc::ENOSYS | libc::EPERM) if r < 0 => (
            SpawnMethod::Clone,
            format!(
                "clone3 is refused ({}; a seccomp profile such as Docker's default, or an old kernel): clone(2), children join their cgroup themselves",
                io::Error::from_raw_os_error(errno)
            ),
        ),
        _ => (SpawnMethod::Clone3, "clone3 is available".to_string()),
    }
}

/// Where the kernel writes the pid and pidfd of the child being cloned, before the child
/// runs: `CLONE_CHILD_SETTID` (the child's first act, in the memory it shares with us) and
/// `CLONE_PIDFD`. Other threads read them while the cloning thread is suspended.
#[derive(Debug)]
pub(crate) struct InFlight {
    /// The child's pid from the moment it runs until the owner clears it ([`Cloner::settle`]).
    pid: AtomicI32,
    /// The child's pidfd, -1 once the cloning thread has taken it back.
    pidfd: AtomicI32,
    /// Held to use `pidfd` from another thread, and by the cloning thread to take it back,
    /// so a pidfd is never used after it was closed (and its number reused).
    take: Mutex<()>,
}

impl InFlight {
    fn new() -> InFlight {
        InFlight {
            pid: AtomicI32::new(0),
            pidfd: AtomicI32::new(-1),
            take: Mutex::new(()),
        }
    }

    /// The pid of a child cloned and not yet settled: a task runner whose pid may not be
    /// registered yet (an orphan sweep must leave it alone).
    pub(crate) fn pid(&self) -> Option<i32> {
        Some(self.pid.load(Ordering::SeqCst)).filter(|&p| p > 0)
    }

    /// SIGKILLs the child being cloned, if one is stuck before exec. `false` when there is
    /// none (or its pidfd is not installed yet: try again).
    pub(crate) fn kill(&self) -> bool {
        let _held = self.take.lock().unwrap_or_else(|e| e.into_inner());
        let fd = self.pidfd.load(Ordering::SeqCst);
        if fd < 0 {
            return false;
        }
        // SAFETY: `fd` is the pidfd the kernel stored for the child being cloned; the
        // cloning thread takes it back (and may close it) only under `take`, held here.
        let pidfd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        super::super::pidfd::send_signal(pidfd, libc::SIGKILL, false).is_ok()
    }
}

/// The child's stack: an anonymous mapping with a guard page below it, so an overflow
/// faults instead of writing into the supervisor's memory.
struct ChildStack {
    base: *mut c_void,
    len: usize,
}

// SAFETY: the mapping is owned by the `ChildStack` and only used by the thread that owns
// the `Cloner` (during a clone, by its suspended child).
unsafe impl Send for ChildStack {}

impl ChildStack {
    fn new() -> io::Result<ChildStack> {
        let page = rustix::param::page_size();
        let len = CHILD_STACK + page;
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let base = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                len,
                rustix::mm::ProtFlags::READ | rustix::mm::ProtFlags::WRITE,
                rustix::mm::MapFlags::PRIVATE | rustix::mm::MapFlags::STACK,
            )?
        };
        // SAFETY: the lowest page of the mapping just made becomes the guard.
        if let Err(e) =
            unsafe { rustix::mm::mprotect(base, page, rustix::mm::MprotectFlags::empty()) }
        {
            // SAFETY: unmapping what we mapped above.
            let _ = unsafe { rustix::mm::munmap(base, len) };
            return Err(e.into());
        }
        Ok(ChildStack { base, len })
    }

    /// Lowest usable address (above the guard page) and usable size.
    fn usable(&self) -> (*mut c_void, usize) {
        let page = rustix::param::page_size();
        // SAFETY: `page` < `len`: the result stays inside the mapping.
        (
            unsafe { self.base.cast::<u8>().add(page).cast() },
            self.len - page,
        )
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: unmaps the mapping made in `new`; no child runs on it (clones return only
        // after their child left it).
        let _ = unsafe { rustix::mm::munmap(self.base, self.len) };
    }
}

/// What one cloning thread owns: the child's stack, the in-flight record, and (for a
/// long-lived spawner) a `/dev/null` kept open for its children's null streams.
pub(crate) struct Cloner {
    stack: ChildStack,
    in_flight: Arc<InFlight>,
    null: Option<Arc<OwnedFd>>,
    /// This process's pid: the parent every child re-checks.
    pid: i32,
}

/// Blocks every signal of the calling thread until dropped, glibc's internal ones (SIGCANCEL,
/// SIGSETXID) included, as glibc's `posix_spawn` does: the child inherits the mask, so no
/// handler of the supervisor can run in it (in the supervisor's memory) before it resets the
/// dispositions. Hence the raw system call: `pthread_sigmask` leaves those two unblocked.
struct SignalsBlocked {
    old: u64,
}

impl SignalsBlocked {
    fn new() -> SignalsBlocked {
        let all: u64 = !0;
        let mut old: u64 = 0;
        // SAFETY: rt_sigprocmask with 8-byte kernel sigsets on our stack.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &all as *const u64,
                &mut old as *mut u64,
                8usize,
            );
        }
        SignalsBlocked { old }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `new` (an 8-byte kernel sigset).
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigprocmask,
                libc::SIG_SETMASK,
                &self.old as *const u64,
                std::ptr::null_mut::<u64>(),
                8usize,
            );
        }
    }
}

/// Blocks every signal a thread may block on the calling thread for good (a spawner thread:
/// the process's handlers run elsewhere). glibc's internal signals stay deliverable, so a
/// `setuid` on another thread still completes; each clone blocks them too for its duration.
pub(crate) fn block_all_signals() {
    // SAFETY: `sigset_t` is plain data; all-zero is a valid set that `sigfillset` fills.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `all` is a live, aligned `sigset_t`; the old mask is not wanted.
    unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
    }
}

impl Cloner {
    pub(crate) fn new() -> io::Result<Cloner> {
        Ok(Cloner {
            stack: ChildStack::new()?,
            in_flight: Arc::new(InFlight::new()),
            null: None,
            pid: rustix::process::getpid().as_raw_nonzero().get(),
        })
    }

    /// An open `/dev/null` for this cloner's spawns, instead of opening it each time (one
    /// fd shared by the cloners of a worker, for as long as they live).
    pub(crate) fn use_dev_null(&mut self, null: Arc<OwnedFd>) {
        self.null = Some(null);
    }

    pub(super) fn dev_null(&self) -> Option<&OwnedFd> {
        self.null.as_deref()
    }

    /// The pid of the process this cloner belongs to.
    pub(super) fn parent_pid(&self) -> i32 {
        self.pid
    }

    /// The record other threads read while this cloner's thread is suspended in a clone.
    pub(crate) fn in_flight(&self) -> &Arc<InFlight> {
        &self.in_flight
    }

    /// Forgets the last child's pid, once it is registered wherever it had to be.
    pub(crate) fn settle(&self) {
        self.in_flight.pid.store(0, Ordering::SeqCst);
    }

    /// Clones a child that runs `child_entry(ctx)` on this cloner's stack, into the cgroup
    /// `cgroup` (`CLONE_INTO_CGROUP`, clone3 only). Returns the pid and pidfd once the child
    /// has called `execve` successfully or exited; `Err(errno)` if no child was made.
    pub(super) fn clone_vfork(
        &mut self,
        ctx: &ChildCtx<'_>,
        method: SpawnMethod,
        cgroup: Option<RawFd>,
    ) -> Result<(i32, OwnedFd), i32> {
        let (stack, stack_len) = self.stack.usable();
        let arg = ctx as *const ChildCtx<'_> as *mut c_void;
        self.in_flight.pid.store(0, Ordering::SeqCst);
        self.in_flight.pidfd.store(-1, Ordering::SeqCst);
        let pid_slot = self.in_flight.pid.as_ptr();
        let pidfd_slot = self.in_flight.pidfd.as_ptr();

        let blocked = SignalsBlocked::new();
        let ret: i64 = match method {
            SpawnMethod::Clone3 => {
                // SAFETY: `clone_args` is plain integers; all-zero means "no flag, no field".
                let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
                args.flags = (libc::CLONE_VM
                    | libc::CLONE_VFORK
                    | libc::CLONE_PIDFD
                    | libc::CLONE_CHILD_SETTID) as u64;
                args.pidfd = pidfd_slot as u64;
                args.child_tid = pid_slot as u64;
                args.exit_signal = libc::SIGCHLD as u64;
                args.stack = stack as u64;
                args.stack_size = stack_len as u64;
                if let Some(fd) = cgroup {
                    args.flags |= CLONE_INTO_CGROUP;
                    args.cgroup = fd as u64;
                }
                // SAFETY: see `clone3_vfork`: `args` is complete, the stack is ours and
                // unused, `ctx` outlives the child's use of it (CLONE_VFORK).
                unsafe { clone3_vfork(&mut args, arg) }
            }
            SpawnMethod::Clone => {
                // SAFETY: glibc's clone(2) wrapper runs `child_entry(arg)` on the stack top
                // we give; CLONE_PIDFD stores the pidfd at the parent_tid argument and
                // CLONE_CHILD_SETTID the pid at the child_tid one (shared memory: CLONE_VM).
                // `ctx` outlives the child's use of it (CLONE_VFORK).
                let r = unsafe {
                    libc::clone(
                        child_entry_c,
                        stack.cast::<u8>().add(stack_len).cast(),
                        libc::CLONE_VM
                            | libc::CLONE_VFORK
                            | libc::CLONE_PIDFD
                            | libc::CLONE_CHILD_SETTID
                            | libc::SIGCHLD,
                        arg,
                        pidfd_slot,
                        std::ptr::null_mut::<c_void>(),
                        pid_slot,
                    )
                };
                if r < 0 {
                    -(io::Error::last_os_error()
                        .raw_os_error()
                        .unwrap_or(libc::EIO) as i64)
                } else {
                    r as i64
                }
            }
        };
        drop(blocked);

        // Take the pidfd back from the in-flight record (under `take`: see `InFlight::kill`).
        let pidfd = {
            let _held = self
                .in_flight
                .take
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            self.in_flight.pidfd.swap(-1, Ordering::SeqCst)
        };
        if ret < 0 {
            return Err(-ret as i32);
        }
        if pidfd < 0 {
            // Cannot happen with CLONE_PIDFD; never keep a child we hold no handle on.
            return Err(libc::EIO);
        }
        // SAFETY: with CLONE_PIDFD the kernel stored a new pidfd (O_CLOEXEC) in the slot,
        // owned by nobody else now that it was swapped out.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
        Ok((ret as i32, pidfd))
    }
}

/// `child_entry` with the signature glibc's `clone` wants.
extern "C" fn child_entry_c(arg: *mut c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildCtx` passed to `clone` by `clone_vfork`, alive and
    // unchanged until the child execs or exits (CLONE_VFORK).
    unsafe { child_entry(arg) }
}

#[cfg(target_arch = "x86_64")]
const HAVE_CLONE3_ENTRY: bool = true;
#[cfg(not(target_arch = "x86_64"))]
const HAVE_CLONE3_ENTRY: bool = false;

/// `clone3(args)`, the child running `child_entry(arg)` on the stack in `args`. Returns the
/// child's pid or `-errno`.
///
/// There is no libc wrapper for clone3: in the child the syscall returns on the new, empty
/// stack, so the call into the child's function must be made right there, in assembly
/// (as glibc's own `__clone3` does).
///
/// # Safety
/// `args` is fully initialised, with `CLONE_VM | CLONE_VFORK` and a stack that nothing else
/// uses; `arg` is valid for `child_entry` until the child execs or exits.
#[cfg(target_arch = "x86_64")]
unsafe fn clone3_vfork(args: &mut libc::clone_args, arg: *mut c_void) -> i64 {
    let ret: i64;
    // SAFETY: the caller's contract. The syscall clobbers rcx and r11 and returns in rax;
    // rdx (the function) and r8 (its argument) survive it in both parent and child. The
    // child clears the frame pointer, aligns its new stack as the psABI wants at a call,
    // calls the function (which never returns) and traps if it did. The parent falls
    // through with the result; it uses no stack here (nostack).
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "and rsp, -16",
            "mov rdi, r8",
            "call rdx",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *mut libc::clone_args,
            in("rsi") std::mem::size_of::<libc::clone_args>(),
            in("rdx") child_entry as unsafe extern "C" fn(*mut c_void) -> libc::c_int,
            in("r8") arg,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn clone3_vfork(_args: &mut libc::clone_args, _arg: *mut c_void) -> i64 {
    // `spawn_method` never picks clone3 where there is no entry for it.
    -(libc::ENOSYS as i64)
}
