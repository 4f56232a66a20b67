//! Starting a child: `clone3` with `CLONE_PIDFD` (and `CLONE_INTO_CGROUP`), child setup with
//! raw syscalls only, `execve`.
//!
//! Two halves:
//! - [`prepare`] runs in the supervisor, may allocate, and resolves everything the child will
//!   need (argv, envp, the candidate paths of the program, the cwd) into C strings and pointer
//!   arrays. It validates the spec and never panics.
//! - [`spawn`] creates the pipes and socketpairs, clones, and waits on an error pipe for the
//!   outcome of `execve`. The code that runs in the child ([`child_main`]) is self-contained:
//!   it only reads memory prepared before the clone and issues raw syscalls, so a later
//!   vfork-class spawn (`CLONE_VM | CLONE_VFORK` on its own stack) can call the same function.
use std::ffi::{CStr, CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use libc::c_char;

use crate::containment::Placement;
use crate::error::SpawnError;
use crate::spec::{Stdio, TaskSpec};
use crate::task::StreamId;

/// The real value of `CLONE_INTO_CGROUP` (`libc::CLONE_INTO_CGROUP` overflows a `c_int` and is 0).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
/// Default search path when the child's environment has no `PATH` (as glibc's `execvp`).
const DEFAULT_PATH: &[u8] = b"/usr/local/bin:/usr/bin:/bin";
/// At most this many extra channels: `StreamId` is a `u8`, channels start at 2, 255 is stdin.
const MAX_CHANNELS: usize = 253;
/// At most this many framed channels.
const MAX_FRAMED: u8 = 200;
/// Names the child's framed channel fds, comma-separated, in channel order.
use crate::child::CHANNEL_FDS_VAR;
/// Exit code of a child whose setup or exec failed.
const CHILD_FAILED: i32 = 127;

/// Everything the child needs, resolved in the parent before the clone (the child may not allocate).
pub(crate) struct Prepared {
    /// The program as the user gave it, for error messages.
    program: String,
    /// Kept alive for `argv_ptrs`.
    _argv: Vec<CString>,
    argv_ptrs: Vec<*const c_char>,
    /// Kept alive for `envp_ptrs`.
    _envp: Vec<CString>,
    envp_ptrs: Vec<*const c_char>,
    /// Paths to try with `execve`, in order.
    candidates: Vec<CString>,
    cwd: Option<CString>,
    cwd_display: Option<PathBuf>,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
    /// Child fd numbers of the channels, in `StreamId::channel(k)` order: the raw ones, then
    /// the framed ones.
    channels: Vec<i32>,
    /// The same, sorted (the fds kept open across exec besides 0, 1, 2).
    channels_sorted: Vec<i32>,
}

// SAFETY: the raw pointers in `argv_ptrs` / `envp_ptrs` point into the heap buffers of the
// `CString`s owned by the same `Prepared` (`_argv`, `_envp`), which are never mutated or
// dropped before the `Prepared` itself; moving the `Prepared` does not move those buffers.
// Sharing is read-only.
unsafe impl Send for Prepared {}
// SAFETY: see `Send`: nothing is ever written through the pointers.
unsafe impl Sync for Prepared {}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("program", &self.program)
            .field("candidates", &self.candidates)
            .field("cwd", &self.cwd_display)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

#[allow(dead_code)]
impl Prepared {
    /// The program as given, for messages.
    pub(crate) fn program(&self) -> &str {
        &self.program
    }

    /// The streams that [`spawn`] will return, in order.
    pub(crate) fn streams(&self) -> Vec<StreamId> {
        let mut out = Vec::with_capacity(3 + self.channels.len());
        if self.stdin == Stdio::Capture {
            out.push(StreamId::STDIN);
        }
        if self.stdout == Stdio::Capture {
            out.push(StreamId::STDOUT);
        }
        if self.stderr == Stdio::Capture {
            out.push(StreamId::STDERR);
        }
        for k in 0..self.channels.len() {
            out.push(StreamId::channel(k as u8));
        }
        out
    }
}

fn invalid(msg: impl Into<String>) -> SpawnError {
    SpawnError::InvalidSpec(msg.into())
}

fn cstring(what: &str, bytes: &[u8]) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| invalid(format!("{what} contains a NUL byte")))
}

fn null_terminated(strings: &[CString]) -> Vec<*const c_char> {
    let mut v: Vec<*const c_char> = strings.iter().map(|s| s.as_ptr()).collect();
    v.push(std::ptr::null());
    v
}

/// Validates the spec and resolves argv, envp, the program's candidate paths and the cwd.
pub(crate) fn prepare(spec: &TaskSpec) -> Result<Prepared, SpawnError> {
    let program_bytes = spec.program.as_bytes();
    let program = spec.program.to_string_lossy().into_owned();
    if program_bytes.is_empty() {
        return Err(SpawnError::NotFound(program));
    }
    if program_bytes.contains(&0) {
        return Err(invalid("program contains a NUL byte"));
    }

    // argv[0] is the program as given, like std's Command.
    let mut argv = Vec::with_capacity(1 + spec.args.len());
    argv.push(cstring("program", program_bytes)?);
    for arg in &spec.args {
        argv.push(cstring("argument", arg.as_bytes())?);
    }

    // The child's environment: the supervisor's (unless cleared), then the edits in order.
    let mut env: Vec<(OsString, OsString)> = if spec.env_clear {
        Vec::new()
    } else {
        std::env::vars_os().collect()
    };
    for (key, value) in &spec.env {
        let k = key.as_bytes();
        if k.is_empty() || k.contains(&b'=') || k.contains(&0) {
            return Err(invalid(format!(
                "environment variable name {:?} is empty or contains '=' or NUL",
                key
            )));
        }
        match value {
            Some(v) => {
                if v.as_bytes().contains(&0) {
                    return Err(invalid(format!(
                        "environment variable {key:?} contains a NUL byte"
                    )));
                }
                match env.iter_mut().find(|(k2, _)| k2 == key) {
                    Some(slot) => slot.1 = v.clone(),
                    None => env.push((key.clone(), v.clone())),
                }
            }
            None => env.retain(|(k2, _)| k2 != key),
        }
    }
    // Framed channels: the lowest fds from 3 up that no raw channel uses, named in the
    // child's environment (a stale value inherited from our own supervisor is dropped).
    if spec.framed > MAX_FRAMED {
        return Err(invalid(format!("at most {MAX_FRAMED} framed channels")));
    }
    let mut framed_fds = Vec::with_capacity(usize::from(spec.framed));
    let mut next_fd = 3;
    while framed_fds.len() < usize::from(spec.framed) {
        if !spec.channels.contains(&next_fd) {
            framed_fds.push(next_fd);
        }
        next_fd += 1;
    }
    let var = OsString::from(CHANNEL_FDS_VAR);
    if !framed_fds.is_empty() {
        let list: Vec<String> = framed_fds.iter().map(i32::to_string).collect();
        let value = OsString::from(list.join(","));
        match env.iter_mut().find(|(k, _)| *k == var) {
            Some(slot) => slot.1 = value,
            None => env.push((var, value)),
        }
    } else if !spec.env.iter().any(|(k, _)| *k == var) {
        env.retain(|(k, _)| *k != var);
    }
    let mut envp = Vec::with_capacity(env.len());
    for (k, v) in &env {
        let mut kv = Vec::with_capacity(k.len() + 1 + v.len());
        kv.extend_from_slice(k.as_bytes());
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        envp.push(cstring("environment", &kv)?);
    }

    // Resolve like execvp, against the child's PATH.
    let mut candidates = Vec::new();
    if program_bytes.contains(&b'/') {
        candidates.push(cstring("program", program_bytes)?);
    } else {
        let path: &[u8] = env
            .iter()
            .find(|(k, _)| k.as_bytes() == b"PATH")
            .map(|(_, v)| v.as_bytes())
            .unwrap_or(DEFAULT_PATH);
        for dir in path.split(|&b| b == b':') {
            let mut full = Vec::with_capacity(dir.len() + 1 + program_bytes.len());
            if !dir.is_empty() {
                // An empty entry means the current directory.
                full.extend_from_slice(dir);
                full.push(b'/');
            }
            full.extend_from_slice(program_bytes);
            candidates.push(cstring("PATH entry", &full)?);
        }
    }

    let cwd = match &spec.cwd {
        Some(dir) => Some(cstring("cwd", dir.as_os_str().as_bytes())?),
        None => None,
    };

    // Channels: child fds 3 and up, distinct, below RLIMIT_NOFILE.
    let mut channels = spec.channels.clone();
    channels.extend_from_slice(&framed_fds);
    if channels.len() > MAX_CHANNELS {
        return Err(invalid(format!("at most {MAX_CHANNELS} channels")));
    }
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let mut channels_sorted = channels.clone();
    channels_sorted.sort_unstable();
    for (i, &fd) in channels_sorted.iter().enumerate() {
        if fd < 3 {
            return Err(invalid(format!("channel fd {fd} must be 3 or more")));
        }
        if fd as u64 >= nofile || fd >= i32::MAX - 1 {
            return Err(invalid(format!(
                "channel fd {fd} is not below RLIMIT_NOFILE ({nofile})"
            )));
        }
        if i > 0 && channels_sorted.get(i - 1) == Some(&fd) {
            return Err(invalid(format!("channel fd {fd} is given twice")));
        }
    }

    let argv_ptrs = null_terminated(&argv);
    let envp_ptrs = null_terminated(&envp);
    Ok(Prepared {
        program,
        _argv: argv,
        argv_ptrs,
        _envp: envp,
        envp_ptrs,
        candidates,
        cwd,
        cwd_display: spec.cwd.clone(),
        stdin: spec.stdin,
        stdout: spec.stdout,
        stderr: spec.stderr,
        channels,
        channels_sorted,
    })
}

/// A started child.
#[derive(Debug)]
pub(crate) struct Child {
    pub(crate) pid: i32,
    /// Blocking pidfd, `O_CLOEXEC`.
    pub(crate) pidfd: OwnedFd,
    /// Supervisor ends of the captured streams, `O_CLOEXEC`, in the order of
    /// [`Prepared::streams`] (stdin's is a pipe's write end).
    pub(crate) streams: Vec<(StreamId, OwnedFd)>,
}

/// Where the child's setup failed (sent through the error pipe with the errno).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
enum Stage {
    Exec = 1,
    Signals = 2,
    Setsid = 3,
    DeathSignal = 4,
    JoinCgroup = 5,
    Fds = 6,
    Chdir = 7,
}

impl Stage {
    fn from_u32(v: u32) -> Option<Stage> {
        Some(match v {
            1 => Stage::Exec,
            2 => Stage::Signals,
            3 => Stage::Setsid,
            4 => Stage::DeathSignal,
            5 => Stage::JoinCgroup,
            6 => Stage::Fds,
            7 => Stage::Chdir,
            _ => return None,
        })
    }
}

/// What the child reads. Built in the parent before the clone; the child only reads it
/// (and rewrites `redirects` in place, which in a fork-style child is its own copy, and in a
/// vfork-style child is memory the parent no longer looks at).
struct ChildCtx<'a> {
    parent_pid: i32,
    err_fd: RawFd,
    /// (source fd, target fd) pairs: pipes, socketpair ends, `/dev/null`.
    redirects: &'a mut [(RawFd, RawFd)],
    /// Highest target fd (at least 2).
    max_target: RawFd,
    /// Channel targets, sorted: kept open across exec besides 0, 1, 2.
    keep: &'a [RawFd],
    v1_procs: &'a [CString],
    cwd: Option<&'a CStr>,
    candidates: &'a [CString],
    argv: *const *const c_char,
    envp: *const *const c_char,
}

fn errno_of(e: rustix::io::Errno) -> i32 {
    e.raw_os_error()
}

/// Starts the child described by `prepared`, placed as `placement` says.
pub(crate) fn spawn(prepared: &Prepared, placement: &Placement) -> Result<Child, SpawnError> {
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
    use rustix::pipe::{pipe_with, PipeFlags};

    let map = |e: rustix::io::Errno| SpawnError::from_errno(errno_of(e), &prepared.program);

    // Supervisor ends (returned) and child ends (closed after the clone).
    let mut streams: Vec<(StreamId, OwnedFd)> = Vec::with_capacity(2 + prepared.channels.len());
    let mut child_ends: Vec<OwnedFd> = Vec::with_capacity(4 + prepared.channels.len());
    let mut redirects: Vec<(RawFd, RawFd)> = Vec::with_capacity(3 + prepared.channels.len());

    let needs_null = prepared.stdin == Stdio::Null
        || prepared.stdout == Stdio::Null
        || prepared.stderr == Stdio::Null;
    let dev_null = if needs_null {
        Some(
            rustix::fs::open(
                c"/dev/null",
                rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(map)?,
        )
    } else {
        None
    };
    let null_raw = dev_null.as_ref().map(|fd| fd.as_raw_fd());

    match prepared.stdin {
        Stdio::Null => {
            if let Some(n) = null_raw {
                redirects.push((n, 0));
            }
        }
        Stdio::Capture => {
            let (r, w) = pipe_with(PipeFlags::CLOEXEC).map_err(map)?;
            redirects.push((r.as_raw_fd(), 0));
            child_ends.push(r);
            streams.push((StreamId::STDIN, w));
        }
        Stdio::Inherit => {}
    }
    for (mode, target, id) in [
        (prepared.stdout, 1, StreamId::STDOUT),
        (prepared.stderr, 2, StreamId::STDERR),
    ] {
        match mode {
            Stdio::Capture => {
                let (r, w) = pipe_with(PipeFlags::CLOEXEC).map_err(map)?;
                redirects.push((w.as_raw_fd(), target));
                child_ends.push(w);
                streams.push((id, r));
            }
            Stdio::Null => {
                if let Some(n) = null_raw {
                    redirects.push((n, target));
                }
            }
            Stdio::Inherit => {}
        }
    }
    for (k, &target) in prepared.channels.iter().enumerate() {
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(map)?;
        redirects.push((theirs.as_raw_fd(), target));
        child_ends.push(theirs);
        streams.push((StreamId::channel(k as u8), ours));
    }
    let (err_r, err_w) = pipe_with(PipeFlags::CLOEXEC).map_err(map)?;

    let max_target = prepared.channels_sorted.last().copied().unwrap_or(2).max(2);
    let mut ctx = ChildCtx {
        parent_pid: rustix::process::getpid().as_raw_nonzero().get(),
        err_fd: err_w.as_raw_fd(),
        redirects: &mut redirects,
        max_target,
        keep: &prepared.channels_sorted,
        v1_procs: &placement.v1_procs,
        cwd: prepared.cwd.as_deref(),
        candidates: &prepared.candidates,
        argv: prepared.argv_ptrs.as_ptr(),
        envp: prepared.envp_ptrs.as_ptr(),
    };
    let cgroup_fd = placement.cgroup_dir.as_ref().map(|fd| fd.as_raw_fd());

    let (pid, pidfd) = clone_child(&mut ctx, cgroup_fd)
        .map_err(|errno| SpawnError::from_errno(errno, &prepared.program))?;

    // Our copies of the child's ends: the child has its own now.
    drop(child_ends);
    drop(dev_null);
    drop(err_w);

    match read_child_error(&err_r) {
        Ok(None) => Ok(Child {
            pid,
            pidfd,
            streams,
        }),
        Ok(Some((stage, index, errno))) => {
            reap_blocking(&pidfd);
            Err(setup_error(prepared, placement, stage, index, errno))
        }
        Err(errno) => {
            // Reading the error pipe failed: we cannot know whether exec worked. Kill the
            // child (a pidfd cannot hit a reused pid) and report.
            let _ =
                super::pidfd::send_signal(std::os::fd::AsFd::as_fd(&pidfd), libc::SIGKILL, false);
            reap_blocking(&pidfd);
            Err(SpawnError::Io(io::Error::from_raw_os_error(errno)))
        }
    }
}

fn setup_error(
    prepared: &Prepared,
    placement: &Placement,
    stage: Stage,
    index: u32,
    errno: i32,
) -> SpawnError {
    let os = io::Error::from_raw_os_error(errno);
    match stage {
        Stage::Exec => SpawnError::from_errno(errno, &prepared.program),
        _ if matches!(errno, libc::EMFILE | libc::ENFILE | libc::EAGAIN) => {
            SpawnError::from_errno(errno, &prepared.program)
        }
        Stage::Chdir => SpawnError::Io(io::Error::new(
            os.kind(),
            format!(
                "cannot change directory to {:?}: {os}",
                prepared
                    .cwd_display
                    .as_deref()
                    .unwrap_or(std::path::Path::new(""))
            ),
        )),
        Stage::JoinCgroup => {
            let path = placement
                .v1_procs
                .get(index as usize)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            SpawnError::Io(io::Error::new(
                os.kind(),
                format!("child could not join {path}: {os}"),
            ))
        }
        Stage::Signals | Stage::Setsid | Stage::DeathSignal | Stage::Fds => SpawnError::Io(
            io::Error::new(os.kind(), format!("child setup ({stage:?}) failed: {os}")),
        ),
    }
}

/// Reads the error pipe until EOF. `Ok(None)`: exec succeeded.
fn read_child_error(fd: &OwnedFd) -> Result<Option<(Stage, u32, i32)>, i32> {
    let mut buf = [0u8; 12];
    let mut got = 0;
    while got < buf.len() {
        let rest = match buf.get_mut(got..) {
            Some(r) => r,
            None => break,
        };
        match rustix::io::read(fd, rest) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(errno_of(e)),
        }
    }
    if got == 0 {
        return Ok(None);
    }
    if got < buf.len() {
        return Err(libc::EIO);
    }
    let word = |i: usize| {
        let mut w = [0u8; 4];
        if let Some(s) = buf.get(i..i + 4) {
            w.copy_from_slice(s);
        }
        w
    };
    let stage = Stage::from_u32(u32::from_ne_bytes(word(0))).ok_or(libc::EIO)?;
    Ok(Some((
        stage,
        u32::from_ne_bytes(word(4)),
        i32::from_ne_bytes(word(8)),
    )))
}

/// Waits for a child that is about to exit (or already has), EINTR-safe. A foreign reaper
/// (`ECHILD`) is fine: either way no zombie of ours remains.
fn reap_blocking(pidfd: &OwnedFd) {
    use rustix::process::{waitid, WaitId, WaitIdOptions};
    loop {
        match waitid(
            WaitId::PidFd(std::os::fd::AsFd::as_fd(pidfd)),
            WaitIdOptions::EXITED,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            _ => return,
        }
    }
}

/// Blocks every signal of the calling thread until dropped (so no handler of the supervisor
/// runs in the child between the clone and the reset of the dispositions).
struct SignalsBlocked {
    old: libc::sigset_t,
}

impl SignalsBlocked {
    fn new() -> SignalsBlocked {
        // SAFETY: `sigset_t` is plain data; all-zero is a valid (empty) set that
        // `sigfillset` / `pthread_sigmask` overwrite.
        let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: both pointers are to live, properly aligned `sigset_t`s on our stack.
        unsafe {
            libc::sigfillset(&mut all);
            libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        }
        SignalsBlocked { old }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved in `new`; the pointer is to a live `sigset_t`.
        unsafe {
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

/// `clone3` (fork-style: no `CLONE_VM`) with `CLONE_PIDFD` and, with `cgroup_fd`,
/// `CLONE_INTO_CGROUP`. Returns the child's pid and pidfd in the parent; the child runs
/// [`child_main`] and never returns. Errors are errnos.
fn clone_child(ctx: &mut ChildCtx<'_>, cgroup_fd: Option<RawFd>) -> Result<(i32, OwnedFd), i32> {
    let mut pidfd: libc::c_int = -1;
    // SAFETY: `clone_args` is plain integers; all-zero means "no flag, no field".
    let mut args: libc::clone_args = unsafe { std::mem::zeroed() };
    args.flags = libc::CLONE_PIDFD as u64;
    args.pidfd = std::ptr::addr_of_mut!(pidfd) as u64;
    args.exit_signal = libc::SIGCHLD as u64;
    if let Some(fd) = cgroup_fd {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }

    let blocked = SignalsBlocked::new();
    // SAFETY: clone3 with a valid, fully initialised `clone_args` of the size we pass, no
    // CLONE_VM and no stack: like fork(), the child gets a copy of our address space and
    // returns 0 on a copy of this stack. In the child we only call `child_main`, which
    // issues raw async-signal-safe syscalls, touches no lock and does not allocate, and
    // never returns (it ends in execve or _exit), so the duplicated state of other threads
    // (locks, allocator) is never used.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of_mut!(args),
            std::mem::size_of::<libc::clone_args>(),
        )
    };
    if ret == 0 {
        child_main(ctx);
    }
    let errno = io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO);
    drop(blocked);
    if ret < 0 {
        return Err(errno);
    }
    if pidfd < 0 {
        // Cannot happen with CLONE_PIDFD; never leave a child without a handle on it.
        return Err(libc::EIO);
    }
    // SAFETY: with CLONE_PIDFD the kernel stored a new pidfd (O_CLOEXEC) in `pidfd`, owned
    // by nobody else.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok((ret as i32, pidfd))
}

/// Raw syscall helpers for the child: no errno, no allocation, no locks.
mod raw {
    #[inline(always)]
    pub(super) fn check(ret: libc::c_long) -> Result<libc::c_long, i32> {
        if ret < 0 {
            // SAFETY: reading the calling thread's errno location, set by libc::syscall.
            Err(unsafe { *libc::__errno_location() })
        } else {
            Ok(ret)
        }
    }

    /// The kernel's `struct sigaction` on x86_64 / aarch64 (not glibc's).
    #[repr(C)]
    pub(super) struct KernelSigaction {
        pub handler: usize,
        pub flags: libc::c_ulong,
        pub restorer: usize,
        pub mask: u64,
    }
}

/// Writes (stage, index, errno) to the error pipe and exits. Never returns.
fn child_fail(err_fd: RawFd, stage: Stage, index: u32, errno: i32) -> ! {
    let mut buf = [0u8; 12];
    let (a, rest) = buf.split_at_mut(4);
    let (b, c) = rest.split_at_mut(4);
    a.copy_from_slice(&(stage as u32).to_ne_bytes());
    b.copy_from_slice(&index.to_ne_bytes());
    c.copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: write(2) of a 12-byte stack buffer (atomic on a pipe), then _exit(2):
    // async-signal-safe syscalls only.
    unsafe {
        libc::syscall(libc::SYS_write, err_fd, buf.as_ptr(), buf.len());
        libc::syscall(libc::SYS_exit_group, CHILD_FAILED);
    }
    // exit_group does not return; this loop only satisfies the type checker.
    #[allow(clippy::empty_loop)]
    loop {}
}

/// The child between clone and exec. Raw syscalls only; never returns.
#[inline(never)]
fn child_main(ctx: &mut ChildCtx<'_>) -> ! {
    use raw::check;
    let err_fd_initial = ctx.err_fd;

    // SAFETY (for every block below): each is one raw syscall on arguments that are plain
    // integers or pointers to memory prepared by the parent before the clone (C strings,
    // NULL-terminated pointer arrays, stack buffers), all valid for the call. No lock is
    // taken and nothing is allocated, so this is sound in the child of a multi-threaded
    // process.

    // 1. Default disposition for every signal (the Rust runtime ignores SIGPIPE; ignored
    //    signals would survive exec), then an empty mask.
    let dfl = raw::KernelSigaction {
        handler: libc::SIG_DFL,
        flags: 0,
        restorer: 0,
        mask: 0,
    };
    for sig in 1..65 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: see above; `dfl` is a kernel sigaction of the size passed (sigsetsize 8).
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                &dfl as *const raw::KernelSigaction,
                std::ptr::null_mut::<raw::KernelSigaction>(),
                8usize,
            );
        }
    }
    let empty: u64 = 0;
    // SAFETY: see above; an 8-byte kernel sigset.
    if let Err(e) = check(unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &empty as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        )
    }) {
        child_fail(err_fd_initial, Stage::Signals, 0, e);
    }

    // 2. Own session and process group (the group signal needs pid == pgid).
    // SAFETY: see above.
    if let Err(e) = check(unsafe { libc::syscall(libc::SYS_setsid) }) {
        child_fail(err_fd_initial, Stage::Setsid, 0, e);
    }

    // 3. Die with the supervisor; if it already died, the death signal was missed.
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
        child_fail(err_fd_initial, Stage::DeathSignal, 0, e);
    }
    // SAFETY: see above.
    let ppid = unsafe { libc::syscall(libc::SYS_getppid) };
    if ppid != ctx.parent_pid as libc::c_long {
        // SAFETY: see above.
        unsafe { libc::syscall(libc::SYS_exit_group, CHILD_FAILED) };
    }

    // 4. Join the v1 hierarchies (CLONE_INTO_CGROUP only places into v2).
    for (i, path) in ctx.v1_procs.iter().enumerate() {
        // SAFETY: see above; `path` is a NUL-terminated C string.
        let fd = match check(unsafe {
            libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                path.as_ptr(),
                libc::O_WRONLY | libc::O_CLOEXEC,
                0,
            )
        }) {
            Ok(fd) => fd,
            Err(e) => child_fail(err_fd_initial, Stage::JoinCgroup, i as u32, e),
        };
        // SAFETY: see above; a 1-byte static buffer.
        let w = check(unsafe { libc::syscall(libc::SYS_write, fd, b"0".as_ptr(), 1usize) });
        // SAFETY: see above; closing the fd we just opened.
        unsafe { libc::syscall(libc::SYS_close, fd) };
        if let Err(e) = w {
            child_fail(err_fd_initial, Stage::JoinCgroup, i as u32, e);
        }
    }

    // 5. Streams. First move every source (and the error pipe) above the highest target, so
    //    that no dup2 onto a target clobbers a source that happens to have that number.
    let floor = ctx.max_target as libc::c_long + 1;
    if ctx.err_fd as libc::c_long <= ctx.max_target as libc::c_long {
        // SAFETY: see above.
        match check(unsafe {
            libc::syscall(libc::SYS_fcntl, ctx.err_fd, libc::F_DUPFD_CLOEXEC, floor)
        }) {
            Ok(fd) => ctx.err_fd = fd as RawFd,
            Err(e) => child_fail(err_fd_initial, Stage::Fds, 0, e),
        }
    }
    let err_fd = ctx.err_fd;
    for pair in ctx.redirects.iter_mut() {
        if pair.0 <= ctx.max_target {
            // SAFETY: see above.
            match check(unsafe {
                libc::syscall(libc::SYS_fcntl, pair.0, libc::F_DUPFD_CLOEXEC, floor)
            }) {
                Ok(fd) => pair.0 = fd as RawFd,
                Err(e) => child_fail(err_fd, Stage::Fds, 1, e),
            }
        }
    }
    for &(src, dst) in ctx.redirects.iter() {
        // dup2 clears close-on-exec on the target. `src != dst` since src > max_target.
        // SAFETY: see above.
        if let Err(e) = check(unsafe { libc::syscall(libc::SYS_dup3, src, dst, 0) }) {
            child_fail(err_fd, Stage::Fds, 2, e);
        }
    }
    // Every other fd from 3 up: close-on-exec (the gaps around the channel targets).
    let mut lo: libc::c_uint = 3;
    for &keep in ctx.keep.iter().chain(std::iter::once(&-1)) {
        let hi: libc::c_uint = if keep < 0 {
            libc::c_uint::MAX
        } else {
            (keep as libc::c_uint).wrapping_sub(1)
        };
        if keep < 0 || keep as libc::c_uint > lo {
            // SAFETY: see above.
            if let Err(e) = check(unsafe {
                libc::syscall(libc::SYS_close_range, lo, hi, libc::CLOSE_RANGE_CLOEXEC)
            }) {
                child_fail(err_fd, Stage::Fds, 3, e);
            }
        }
        if keep >= 0 {
            lo = (keep as libc::c_uint).saturating_add(1);
        }
    }

    // 6. Working directory.
    if let Some(cwd) = ctx.cwd {
        // SAFETY: see above; a NUL-terminated C string.
        if let Err(e) = check(unsafe { libc::syscall(libc::SYS_chdir, cwd.as_ptr()) }) {
            child_fail(err_fd, Stage::Chdir, 0, e);
        }
    }

    // 7. execve each candidate, with execvp's error rules: remember EACCES, skip the
    //    "not here" errors, stop at any other.
    let mut saw_eacces = false;
    let mut last = libc::ENOENT;
    for path in ctx.candidates.iter() {
        // SAFETY: see above; `path` is a C string and argv / envp are NULL-terminated
        // arrays of C strings owned by the `Prepared`.
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
    let errno = if saw_eacces
        && matches!(
            last,
            libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT
        ) {
        libc::EACCES
    } else {
        last
    };
    child_fail(err_fd, Stage::Exec, 0, errno)
}

#[cfg(test)]
pub(crate) mod test_util;
#[cfg(test)]
mod tests;
