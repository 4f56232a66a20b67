//! The system calls of `default-container`: the only `unsafe` of the tool. Each wrapper is
//! safe to call and returns `io::Error` from `errno`.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `unshare(CLONE_NEWNS)`: a private copy of the mount table.
pub fn unshare_mount_namespace() -> io::Result<()> {
    // SAFETY: unshare(2) with a flag; no memory is passed.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) }.into()).map(drop)
}

/// `mount(NULL, path, NULL, flags, NULL)`: propagation changes and remounts.
pub fn mount_flags(path: &CStr, flags: libc::c_ulong) -> io::Result<()> {
    // SAFETY: mount(2) with a NUL-terminated target borrowed for the call and NULL source,
    // type and data, which the kernel accepts for MS_REMOUNT and propagation changes.
    let ret = unsafe {
        libc::mount(
            std::ptr::null(),
            path.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        )
    };
    check(ret.into()).map(drop)
}

/// `prctl(PR_SET_NO_NEW_PRIVS, 1)`, which an unprivileged seccomp filter requires.
pub fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: prctl(2) with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }.into()).map(drop)
}

/// `prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog)`: inherited by every child, kept across
/// exec.
pub fn install_seccomp_filter(filter: &[libc::sock_filter]) -> io::Result<()> {
    let len = u16::try_from(filter.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "filter too long"))?;
    let prog = libc::sock_fprog {
        len,
        // The kernel only reads the program (it copies it in).
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: prctl(2) with a pointer to a live `sock_fprog` whose `filter` points to `len`
    // initialised instructions; the kernel copies the program before returning.
    let ret = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
            0,
            0,
        )
    };
    check(ret.into()).map(drop)
}

/// `execvp(argv[0], argv)`; returns only on failure.
pub fn exec(argv: &[CString]) -> io::Error {
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    // SAFETY: a NULL-terminated array of pointers to NUL-terminated strings that outlive the
    // call (on success the process image is replaced).
    unsafe { libc::execvp(ptrs[0], ptrs.as_ptr()) };
    io::Error::last_os_error()
}

/// A raw `syscall(nr, a, b, c, d, e)` with integer arguments, for the probes. `Err(errno)`.
fn raw_syscall(nr: libc::c_long, args: [libc::c_long; 5]) -> Result<libc::c_long, i32> {
    // SAFETY: the callers pass only integers or pointers to live memory of the size the
    // syscall expects (see each probe).
    let ret = unsafe { libc::syscall(nr, args[0], args[1], args[2], args[3], args[4]) };
    if ret < 0 {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(ret)
    }
}

/// `io_uring_setup(1, &params)`: the ring's fd, or the errno.
pub fn io_uring_setup() -> Result<OwnedFd, i32> {
    // struct io_uring_params is 120 bytes; all-zero asks for defaults.
    let mut params = [0u8; 120];
    let fd = raw_syscall(
        libc::SYS_io_uring_setup,
        [1, params.as_mut_ptr() as libc::c_long, 0, 0, 0],
    )?;
    // SAFETY: io_uring_setup returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// `clone3` with `CLONE_PIDFD`, as a spawn would use it: `Ok(())` if the kernel let it create
/// a process (which exits at once and is reaped here), or the errno.
pub fn clone3_probe() -> Result<(), i32> {
    let mut pidfd: libc::c_int = -1;
    // struct clone_args (v0, 64 bytes): flags, pidfd, child_tid, parent_tid, exit_signal,
    // stack, stack_size, tls.
    let mut args = [0u64; 8];
    args[0] = libc::CLONE_PIDFD as u64;
    args[1] = &mut pidfd as *mut libc::c_int as u64;
    args[4] = libc::SIGCHLD as u64;
    // SAFETY: clone3 without CLONE_VM: the child gets a copy of the address space and, in it,
    // calls only exit_group (no allocation, no lock). `args` and `pidfd` are live.
    let ret = unsafe { libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), 64usize) };
    if ret < 0 {
        return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    if ret == 0 {
        // SAFETY: the child leaves at once.
        unsafe { libc::syscall(libc::SYS_exit_group, 0) };
    }
    // SAFETY: CLONE_PIDFD stored a new fd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    wait_pidfd(&pidfd)
        .map(drop)
        .map_err(|e| e.raw_os_error().unwrap_or(0))
}

/// Plain `clone(CLONE_PIDFD | SIGCHLD)` (what a libc falls back to): `Ok(exit code)` of a
/// child that exits 0 at once, or the errno.
pub fn clone_pidfd_probe() -> Result<i32, i32> {
    let mut pidfd: libc::c_int = -1;
    let flags = (libc::CLONE_PIDFD | libc::SIGCHLD) as libc::c_long;
    // clone(flags, newsp, parent_tid, child_tid | tls, tls | child_tid): with CLONE_PIDFD the
    // pidfd goes to parent_tid on x86_64 and aarch64 alike.
    // SAFETY: without CLONE_VM the child has its own copy of memory and only calls
    // exit_group; `pidfd` is live.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0 as libc::c_long,
            &mut pidfd as *mut libc::c_int,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    if ret == 0 {
        // SAFETY: the child leaves at once.
        unsafe { libc::syscall(libc::SYS_exit_group, 0) };
    }
    // SAFETY: CLONE_PIDFD stored a new fd that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    wait_pidfd(&pidfd).map_err(|e| e.raw_os_error().unwrap_or(0))
}

/// `waitid(P_PIDFD, WEXITED)`: the child's exit code (or 128 + signal).
pub fn wait_pidfd(pidfd: &OwnedFd) -> io::Result<i32> {
    loop {
        // SAFETY: `siginfo_t` is plain data; the kernel fills it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid(2) with a live fd and a pointer to a live `siginfo_t`.
        let ret = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED,
            )
        };
        if ret < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        // SAFETY: the kernel filled `info` for an exited child.
        let (code, status) = unsafe { (info.si_code, info.si_status()) };
        return Ok(if code == libc::CLD_EXITED {
            status
        } else {
            128 + status
        });
    }
}

/// `unshare(CLONE_NEWUTS)`: does this process get namespace calls? (`Ok` or the errno.)
pub fn unshare_probe() -> Result<(), i32> {
    raw_syscall(
        libc::SYS_unshare,
        [libc::CLONE_NEWUTS as libc::c_long, 0, 0, 0, 0],
    )
    .map(drop)
}

/// `prctl(PR_SET_CHILD_SUBREAPER, 1)`.
pub fn subreaper_probe() -> Result<(), i32> {
    raw_syscall(
        libc::SYS_prctl,
        [libc::PR_SET_CHILD_SUBREAPER as libc::c_long, 1, 0, 0, 0],
    )
    .map(drop)
}

/// `fork()`: `Ok(0)` in the child, `Ok(pid)` in the parent. Only for a single-threaded
/// caller: the child runs Rust code (the watchdog) afterwards.
pub fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: fork(2); the tool calls it before it starts any thread, so the child inherits
    // no lock held by another thread.
    let pid = unsafe { libc::fork() };
    check(pid.into()).map(|p| p as libc::pid_t)
}

/// `waitpid(pid, 0)`: exit code, or 128 + signal.
pub fn wait_pid(pid: libc::pid_t) -> io::Result<i32> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid(2) with a pointer to a live int.
        let ret = unsafe { libc::waitpid(pid, &mut status, 0) };
        if ret < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        return Ok(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        });
    }
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2(2) with a pointer to two live ints.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }.into())?;
    // SAFETY: pipe2 returned two new fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// `flock(fd, LOCK_EX)`, waiting for the holder.
pub fn lock_exclusive(fd: &OwnedFd) -> io::Result<()> {
    loop {
        // SAFETY: flock(2) on a live fd.
        let ret = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX) };
        if ret < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(e);
        }
        return Ok(());
    }
}

/// Leaves this process's session and ignores the signals a terminal or a test harness sends
/// to a group, so that only the end of its pipe ends it.
pub fn detach_and_ignore_signals() {
    // SAFETY: setsid(2) and signal(2) with SIG_IGN, integer arguments only.
    unsafe {
        libc::setsid();
        for sig in [
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
            libc::SIGPIPE,
        ] {
            libc::signal(sig, libc::SIG_IGN);
        }
    }
}

/// `prctl(PR_SET_PDEATHSIG, SIGKILL)`: this process dies with its parent thread.
pub fn die_with_parent() -> io::Result<()> {
    // SAFETY: prctl(2) with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) }.into()).map(drop)
}

/// `_exit(code)`: leaves without running destructors or flushing (a forked child's exit).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) never returns.
    unsafe { libc::_exit(code) }
}
