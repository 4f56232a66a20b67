//! The child between clone and `execve`: the only code that runs in the child before the
//! program, and the one file to audit for that.
//!
//! It runs on a small stack of its own, in the supervisor's memory (`CLONE_VM`), while the
//! cloning thread is suspended (`CLONE_VFORK`). So it:
//! - issues raw system calls only: no allocation, no lock, no stdio, nothing that touches
//!   state another supervisor thread may hold (allocator, locks) or that could run a handler;
//! - reads only the [`ChildCtx`] built before the clone and writes only its [`Report`];
//! - never returns: it ends in `execve` or `exit_group`.
//!
//! Steps, in this order and for these reasons:
//! 1. join the task's cgroups (v1 hierarchies, and v2 where `CLONE_INTO_CGROUP` was not
//!    available) first, so that nothing the child does runs outside them;
//! 2. descriptors: pipes and channels onto their numbers; then the guarded fds (every
//!    spawn's child ends in flight, the supervisor's write ends: see [`guarded`]) *closed*,
//!    so a child stuck later in `chdir` or `execve` (a hung mount) holds no pipe end someone
//!    waits on, and every other fd marked close-on-exec, which `execve` closes once the
//!    cloning thread is released (closing them here cost the spawner a third of its time
//!    with a large fleet in the fd table);
//! 3. session or process group ([`Session`]);
//! 4. `PR_SET_PDEATHSIG(SIGKILL)`, then the parent re-checked: if the supervisor died in
//!    between, the signal was missed, so exit;
//! 5. the terminal's foreground ([`Session::Foreground`]), SIGTTOU still blocked;
//! 6. `RLIMIT_NOFILE` back to the soft limit the supervisor started with;
//! 7. dispositions (`SIG_IGN` only where asked), then the mask (empty unless asked). Until
//!    here every signal is blocked (the cloning thread blocks them all before the clone),
//!    so no handler of the supervisor ever runs in the child;
//! 8. `chdir`; 9. `execve` of each candidate path, with `execvp`'s error rules.
//!
//! Every failure is recorded in the [`Report`] (step, index, errno), which the parent reads
//! once the clone returns, then the child exits with status 127.
//!
//! `libc::syscall` sets `errno` in the thread-local storage of the cloning thread (the child
//! shares its memory and TLS pointer): harmless, since that thread is suspended and reads
//! nothing but the [`Report`] afterwards.

use std::ffi::{CStr, CString};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use libc::{c_char, c_int, c_long, c_void};

use super::guarded;
use crate::spec::Session;

/// Exit status of a child whose set-up or exec failed (as a shell's "command not found").
const CHILD_FAILED: c_long = 127;

/// The step of the child's set-up that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Step {
    JoinCgroup = 1,
    Fds = 2,
    Session = 3,
    DeathSignal = 4,
    /// The supervisor died before the death signal was armed.
    ParentGone = 5,
    Terminal = 6,
    FdLimit = 7,
    Signals = 8,
    Chdir = 9,
    Exec = 10,
}

impl Step {
    fn from_u8(v: u8) -> Option<Step> {
        Some(match v {
            1 => Step::JoinCgroup,
            2 => Step::Fds,
            3 => Step::Session,
            4 => Step::DeathSignal,
            5 => Step::ParentGone,
            6 => Step::Terminal,
            7 => Step::FdLimit,
            8 => Step::Signals,
            9 => Step::Chdir,
            10 => Step::Exec,
            _ => return None,
        })
    }
}

/// What the child tells the parent, through memory they share (`CLONE_VM`): the parent
/// reads it after the clone returns, that is after the child called `execve` successfully
/// or exited. One word, written with one store.
pub(super) struct Report(AtomicU64);

/// The child has not reached `execve` (yet, or ever: it was killed before).
const PENDING: u64 = 0;
/// The child called `execve`; if that fails, a failure overwrites this.
const EXEC_CALLED: u64 = 1;

/// How the child's set-up ended, as the parent reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// The child exited or was killed before it called `execve`, without saying why.
    DiedBeforeExec,
    /// `execve` succeeded (the clone returned while no failure was recorded).
    Exec,
    /// `step` failed with `errno`; `index` says which item of the step (cgroup, fd, signal).
    Failed { step: Step, index: u32, errno: i32 },
}

impl Report {
    pub(super) fn new() -> Report {
        Report(AtomicU64::new(PENDING))
    }

    fn record(&self, step: Step, index: u32, errno: i32) {
        let word = (u64::from(step as u8) << 56)
            | (u64::from(index & 0xff_ffff) << 32)
            | errno as u32 as u64;
        self.0.store(word, Ordering::Release);
    }

    pub(super) fn outcome(&self) -> Outcome {
        match self.0.load(Ordering::Acquire) {
            PENDING => Outcome::DiedBeforeExec,
            EXEC_CALLED => Outcome::Exec,
            word => match Step::from_u8((word >> 56) as u8) {
                Some(step) => Outcome::Failed {
                    step,
                    index: ((word >> 32) & 0xff_ffff) as u32,
                    errno: word as u32 as i32,
                },
                None => Outcome::DiedBeforeExec,
            },
        }
    }
}

/// Everything the child reads, built by the parent before the clone and kept alive (and
/// unchanged) until the clone returns.
pub(super) struct ChildCtx<'a> {
    pub(super) report: &'a Report,
    /// The supervisor's pid: the child's parent, re-checked after PR_SET_PDEATHSIG.
    pub(super) parent_pid: i32,
    /// Open `cgroup.procs` files the child writes itself into, in order.
    pub(super) cgroup_procs: &'a [RawFd],
    /// (source, target) pairs. Every source is above every target (the parent moved them),
    /// so no `dup3` onto a target can clobber a source still to be used.
    pub(super) redirects: &'a [(RawFd, RawFd)],
    /// Channel targets, sorted: kept open across exec besides 0, 1, 2.
    pub(super) keep: &'a [RawFd],
    pub(super) session: Session,
    /// `(soft, hard)` to set `RLIMIT_NOFILE` to, when the supervisor raised its own.
    pub(super) nofile: Option<(u64, u64)>,
    /// Kernel signal sets: started with `SIG_IGN`, and blocked at exec.
    pub(super) ignored: u64,
    pub(super) blocked: u64,
    pub(super) cwd: Option<&'a CStr>,
    pub(super) candidates: &'a [CString],
    pub(super) argv: *const *const c_char,
    pub(super) envp: *const *const c_char,
    #[cfg(test)]
    pub(super) stall: bool,
}

/// Test builds only: while this is non-zero, a child whose spec asked for the stall point
/// waits (a futex wait on this word, in the memory it shares with the supervisor) just
/// before `execve`, as a child stuck on a hung mount would.
#[cfg(test)]
pub(crate) static TEST_STALL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The entry point the clone jumps to, on the child's own stack; `arg` is a `*const
/// ChildCtx`.
///
/// # Safety
/// `arg` points to a `ChildCtx` (and everything it borrows) that stays alive and unchanged
/// until the child has called `execve` or exited, which `CLONE_VFORK` guarantees because
/// the parent's frame that owns it is suspended until then.
pub(super) unsafe extern "C" fn child_entry(arg: *mut c_void) -> c_int {
    // SAFETY: see the function's contract.
    let ctx = unsafe { &*(arg as *const ChildCtx<'_>) };
    run(ctx)
}

/// Returns the syscall's result, or the errno it failed with.
#[inline(always)]
fn check(ret: c_long) -> Result<c_long, i32> {
    if ret < 0 {
        // SAFETY: reads the errno that `libc::syscall` just set (see the module doc).
        Err(unsafe { *libc::__errno_location() })
    } else {
        Ok(ret)
    }
}

/// Records the failure and exits. Never returns.
fn fail(ctx: &ChildCtx<'_>, step: Step, index: u32, errno: i32) -> ! {
    ctx.report.record(step, index, errno);
    exit()
}

fn exit() -> ! {
    // SAFETY: exit_group(2) ends the child (its own thread group); it does not return.
    unsafe { libc::syscall(libc::SYS_exit_group, CHILD_FAILED) };
    #[allow(clippy::empty_loop)]
    loop {}
}

/// Fds `low..=high`: below [`guarded::GUARDED_FDS`] marked close-on-exec (or closed, on a
/// kernel before 5.11 without `CLOSE_RANGE_CLOEXEC`), from there up closed: the guard
/// bitmap does not reach them.
fn close_gap(low: libc::c_uint, high: libc::c_uint) -> Result<(), i32> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    let limit = guarded::GUARDED_FDS as libc::c_uint;
    if low < limit {
        let top = high.min(limit - 1);
        // SAFETY: see `run`.
        match check(unsafe { libc::syscall(libc::SYS_close_range, low, top, CLOSE_RANGE_CLOEXEC) })
        {
            Ok(_) => {}
            // SAFETY: see `run`.
            Err(libc::EINVAL) => {
                check(unsafe { libc::syscall(libc::SYS_close_range, low, top, 0) }).map(drop)?
            }
            Err(e) => return Err(e),
        }
    }
    if high >= limit {
        // SAFETY: see `run`.
        check(unsafe { libc::syscall(libc::SYS_close_range, low.max(limit), high, 0) })?;
    }
    Ok(())
}

/// The kernel's `struct sigaction` on x86_64 and aarch64 (not glibc's).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

// SAFETY (for every `unsafe` block below): each is one raw system call whose arguments are
// plain integers or pointers into the `ChildCtx` (C strings, NULL-terminated pointer
// arrays, fd lists) or to locals on this stack, all valid for the duration of the call.
// Nothing takes a lock or allocates.
fn run(ctx: &ChildCtx<'_>) -> ! {
    // 1. Into the task's cgroups: "0" means the writer itself.
    for (i, &fd) in ctx.cgroup_procs.iter().enumerate() {
        // SAFETY: see above; a 1-byte static buffer.
        if let Err(e) = check(unsafe { libc::syscall(libc::SYS_write, fd, b"0".as_ptr(), 1usize) })
        {
            fail(ctx, Step::JoinCgroup, i as u32, e);
        }
    }

    // 2. Descriptors onto their numbers (dup3 clears close-on-exec on the target). Then the
    //    guarded fds (other spawns' child ends, the supervisor's write ends: see `guarded`)
    //    closed for real, and every other fd from 3 up that is not kept marked close-on-exec:
    //    `execve` closes those after the cloning thread is released.
    for (i, &(src, dst)) in ctx.redirects.iter().enumerate() {
        // SAFETY: see above.
        if let Err(e) = check(unsafe { libc::syscall(libc::SYS_dup3, src, dst, 0) }) {
            fail(ctx, Step::Fds, i as u32, e);
        }
    }
    guarded::for_each(|fd| {
        if fd > 2 && ctx.keep.binary_search(&fd).is_err() {
            // SAFETY: see above. EBADF (a stale mark, or an fd opened after the clone) is
            // nothing to report.
            unsafe { libc::syscall(libc::SYS_close, fd) };
        }
    });
    let mut low: libc::c_uint = 3;
    for &keep in ctx.keep.iter().chain(std::iter::once(&-1)) {
        let high = if keep < 0 {
            libc::c_uint::MAX
        } else {
            keep as libc::c_uint - 1
        };
        if keep < 0 || keep as libc::c_uint > low {
            if let Err(e) = close_gap(low, high) {
                fail(ctx, Step::Fds, u32::MAX >> 8, e);
            }
        }
        if keep >= 0 {
            low = keep as libc::c_uint + 1;
        }
    }

    // 3. Own process group (process-group containment signals pid == pgid), in a new
    //    session or in the supervisor's.
    let grouped = match ctx.session {
        // SAFETY: see above.
        Session::New => unsafe { libc::syscall(libc::SYS_setsid) },
        // SAFETY: see above.
        Session::Group | Session::Foreground => unsafe { libc::syscall(libc::SYS_setpgid, 0, 0) },
    };
    if let Err(e) = check(grouped) {
        fail(ctx, Step::Session, 0, e);
    }

    // 4. Die with the supervisor. The death signal follows the cloning thread, which lives
    //    as long as the worker; if the supervisor is already gone we were reparented.
    // SAFETY: see above.
    if let Err(e) = check(unsafe {
        libc::syscall(
            libc::SYS_prctl,
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    }) {
        fail(ctx, Step::DeathSignal, 0, e);
    }
    // SAFETY: see above.
    if unsafe { libc::syscall(libc::SYS_getppid) } != ctx.parent_pid as c_long {
        fail(ctx, Step::ParentGone, 0, libc::ESRCH);
    }

    // 5. The terminal's foreground, through the first of the child's fds 0, 1, 2 that is
    //    its controlling terminal (ENOTTY: not a terminal, or not ours; EBADF: closed;
    //    ENXIO/EIO: hung up). None is: the task stays a background group. SIGTTOU is blocked,
    //    so a background group taking the terminal is not stopped (tini ignores it instead).
    if ctx.session == Session::Foreground {
        // SAFETY: see above.
        let pgid = unsafe { libc::syscall(libc::SYS_getpid) } as libc::pid_t;
        for fd in 0..3 {
            // SAFETY: see above; TIOCSPGRP reads one pid_t from a local.
            match check(unsafe {
                libc::syscall(
                    libc::SYS_ioctl,
                    fd,
                    libc::TIOCSPGRP,
                    &pgid as *const libc::pid_t,
                )
            }) {
                Ok(_) => break,
                Err(libc::ENOTTY | libc::EBADF | libc::ENXIO | libc::EIO | libc::EINVAL) => {}
                Err(e) => fail(ctx, Step::Terminal, fd as u32, e),
            }
        }
    }

    // 6. The fd limit the supervisor started with (it raised its own for its rings).
    if let Some((soft, hard)) = ctx.nofile {
        let limit = libc::rlimit64 {
            rlim_cur: soft,
            rlim_max: hard,
        };
        // SAFETY: see above; prlimit64 of ourselves, reading a local rlimit64.
        if let Err(e) = check(unsafe {
            libc::syscall(
                libc::SYS_prlimit64,
                0,
                libc::RLIMIT_NOFILE,
                &limit as *const libc::rlimit64,
                std::ptr::null_mut::<libc::rlimit64>(),
            )
        }) {
            fail(ctx, Step::FdLimit, 0, e);
        }
    }

    // 7. Signals: the dispositions asked for (the supervisor's own must not leak: the Rust
    //    runtime ignores SIGPIPE, and an ignored signal survives exec), then the mask.
    for sig in 1..65 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        let action = KernelSigaction {
            handler: if ctx.ignored & (1u64 << (sig - 1)) != 0 {
                libc::SIG_IGN
            } else {
                libc::SIG_DFL
            },
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        // SAFETY: see above; a kernel sigaction of the size given (sigsetsize 8).
        if let Err(e) = check(unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &action as *const KernelSigaction,
                std::ptr::null_mut::<KernelSigaction>(),
                8usize,
            )
        }) {
            fail(ctx, Step::Signals, sig as u32, e);
        }
    }
    // SAFETY: see above; an 8-byte kernel sigset.
    if let Err(e) = check(unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &ctx.blocked as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        )
    }) {
        fail(ctx, Step::Signals, 0, e);
    }

    // 8. Working directory.
    if let Some(cwd) = ctx.cwd {
        // SAFETY: see above; a NUL-terminated C string.
        if let Err(e) = check(unsafe { libc::syscall(libc::SYS_chdir, cwd.as_ptr()) }) {
            fail(ctx, Step::Chdir, 0, e);
        }
    }

    #[cfg(test)]
    if ctx.stall {
        use std::sync::atomic::Ordering::Acquire;
        while TEST_STALL.load(Acquire) != 0 {
            // SAFETY: see above; a futex wait on a static word while it is 1.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    TEST_STALL.as_ptr(),
                    libc::FUTEX_WAIT,
                    1u32,
                    std::ptr::null::<libc::timespec>(),
                )
            };
        }
    }

    // 9. execve each candidate, with execvp's error rules: remember EACCES, skip the
    //    "not here" errors, stop at any other.
    ctx.report.0.store(EXEC_CALLED, Ordering::Release);
    let mut saw_eacces = false;
    let mut last = libc::ENOENT;
    for path in ctx.candidates.iter() {
        // SAFETY: see above; `path` is a C string, argv and envp NULL-terminated arrays of
        // C strings.
        let e = match check(unsafe {
            libc::syscall(libc::SYS_execve, path.as_ptr(), ctx.argv, ctx.envp)
        }) {
            Ok(_) => libc::EIO, // execve does not return on success
            Err(e) => e,
        };
        last = e;
        match e {
            libc::EACCES => saw_eacces = true,
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT => {}
            _ => break,
        }
    }
    let not_here = matches!(
        last,
        libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT
    );
    let errno = if saw_eacces && not_here {
        libc::EACCES
    } else {
        last
    };
    fail(ctx, Step::Exec, 0, errno)
}
