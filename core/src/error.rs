//! Typed errors of the public API, one enum per operation.

use std::io;
use std::path::PathBuf;

use crate::containment::ContainmentError;

/// Why `Pool::spawn` failed. The pool and its other tasks are unaffected.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// The program does not exist (`ENOENT`: not at the path given, or a bare name found in
    /// no directory of the child's `PATH`); carries the program as given.
    #[error("program not found: {0}")]
    NotFound(String),
    /// The program exists but may not be executed (`EACCES`/`EPERM`: no execute bit, a
    /// `noexec` mount, ...); carries the program as given.
    #[error("permission denied: cannot execute {0}")]
    PermissionDenied(String),
    /// The kernel does not know the file's format (`ENOEXEC`: a script without `#!`, a
    /// binary for another architecture); carries the program as given.
    #[error("not an executable format: {0}")]
    NotExecutable(String),
    /// The [`TaskSpec`](crate::TaskSpec) cannot be run as given (a NUL byte in a string, an
    /// invalid signal or channel fd, too many channels, ...); found before anything is
    /// created. Carries what is wrong.
    #[error("invalid task: {0}")]
    InvalidSpec(String),
    /// The supervisor's or the system's fd table is full (`EMFILE`/`ENFILE`): the task's
    /// pipes, pidfd or channels could not be made. Retry once tasks have ended.
    #[error("out of file descriptors (EMFILE/ENFILE)")]
    TooManyFiles,
    /// The kernel refused a new process (`EAGAIN`): `RLIMIT_NPROC`, `pids.max` of an
    /// enclosing cgroup, `kernel.threads-max`, or memory.
    #[error("the system refused a new process (EAGAIN): process or memory limit")]
    TooManyProcesses,
    /// The child could not change to the task's working directory.
    #[error("cannot change directory to {}: {source}", path.display())]
    Cwd {
        /// The directory of [`TaskSpec::cwd`](crate::TaskSpec::cwd).
        path: PathBuf,
        /// The `chdir(2)` error.
        #[source]
        source: io::Error,
    },
    /// A step of the child's set-up before exec failed (joining its cgroup, its session,
    /// the death signal, ...): `step` names it.
    #[error("child set-up failed while {step}: {source}")]
    Setup {
        /// The step that failed, in words ("joining the task's cgroup", ...).
        step: &'static str,
        /// The system call's error.
        #[source]
        source: io::Error,
    },
    /// Even the least loaded worker holds as many tasks (live, plus spawns under way) as it can
    /// ([`Pool::capacity`](crate::Pool::capacity) is the whole pool's); carries that worker's
    /// live tasks. Retry once tasks have ended, or build the pool with a larger
    /// [`max_tasks`](crate::PoolBuilder::max_tasks).
    #[error("the pool is full: {0} tasks are live")]
    AtCapacity(usize),
    /// The task's containment could not be set up: its cgroup could not be made, or a
    /// [`Limits`](crate::Limits) needs a controller that does not exist here.
    #[error("containment: {0}")]
    Containment(#[from] ContainmentError),
    /// The pool is shutting down (its worker stopped): nothing was started.
    #[error("the pool is shut down")]
    PoolClosed,
    /// `Pool::spawn` was called from an [`on_event`](crate::PoolBuilder::on_event)
    /// callback, which runs on a worker: the spawn would wait for that worker. Nothing was
    /// started.
    #[error("spawn called from an on_event callback: it runs on a worker, which would wait for itself; hand the spawn to another thread")]
    FromCallback,
    /// Any other system error while starting the task (`fork`, `clone3`, `pipe`, `exec`, ...).
    #[error("spawn failed: {0}")]
    Io(#[source] io::Error),
}

impl SpawnError {
    /// Maps an errno from fork/exec/pipe into the most specific variant.
    pub(crate) fn from_errno(errno: i32, program: &str) -> SpawnError {
        match errno {
            libc::ENOENT => SpawnError::NotFound(program.to_owned()),
            libc::EACCES | libc::EPERM => SpawnError::PermissionDenied(program.to_owned()),
            libc::ENOEXEC => SpawnError::NotExecutable(program.to_owned()),
            libc::EMFILE | libc::ENFILE => SpawnError::TooManyFiles,
            libc::EAGAIN => SpawnError::TooManyProcesses,
            _ => SpawnError::Io(io::Error::from_raw_os_error(errno)),
        }
    }
}

/// Why a request on a `TaskHandle` could not be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The pool is shutting down (the task's worker stopped): the request was not delivered.
    #[error("the pool is shut down")]
    PoolClosed,
    /// The signal number is outside `1..=64`; nothing was sent.
    #[error("invalid signal number {0}")]
    InvalidSignal(i32),
}

/// Why `PoolBuilder::build` failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The backend asked for explicitly (`"uring"`) cannot run here; the message says why
    /// (seccomp, `kernel.io_uring_disabled`, a missing opcode) and how to allow it.
    /// [`Backend::Auto`](crate::Backend::Auto) falls back to epoll instead.
    #[error("backend {0} is not available: {1}")]
    BackendUnavailable(&'static str, String),
    /// Setting up a worker's driver (`"uring"`, `"epoll"`, or the io_uring probe) failed for a
    /// reason that is not a refusal of the environment (`ENOMEM`, `EMFILE`, ...).
    #[error("cannot start the {0} driver: {1}")]
    Driver(&'static str, #[source] io::Error),
    /// The pool's cleanup thread (cgroup removal off the event loop) could not be started.
    #[error("cannot start the cleanup thread: {0}")]
    Cleanup(#[source] io::Error),
    /// The containment asked for is not available ([`Containment::Cgroup`](crate::Containment::Cgroup)
    /// without a writable cgroup v2), or making the pool's cgroup failed.
    #[error("containment: {0}")]
    Containment(#[from] ContainmentError),
    /// A worker thread could not be started.
    #[error("cannot start worker thread: {0}")]
    Thread(#[source] io::Error),
    /// An option of [`PoolBuilder`](crate::PoolBuilder) is out of range (no workers, a
    /// submission queue outside `1..=32768`, a zero task budget, ...) or cannot be honoured
    /// (the subreaper); carries what is wrong.
    #[error("invalid pool option: {0}")]
    InvalidOption(String),
}

/// Why writing to a task (`TaskHandle::write`, `close_stdin`, `send`) failed, or what
/// closed its stdin ([`crate::Event::StdinClosed`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The pool was shut down.
    #[error("the pool is shut down")]
    PoolClosed,
    /// The task's stdin is not captured (`TaskSpec::stdin(Stdio::Capture)`).
    #[error("the task's stdin is not captured")]
    NotCaptured,
    /// The task has no framed channel with this index (`TaskSpec::channels`).
    #[error("the task has no framed channel {0}")]
    NoSuchChannel(u8),
    /// A frame longer than the channel's maximum (`TaskSpec::max_frame`).
    #[error("a frame of {len} bytes is longer than the maximum of {max}")]
    FrameTooLarge {
        /// The frame's length.
        len: u64,
        /// The maximum.
        max: u32,
    },
    /// Closed: by `close_stdin`, by the child (a channel), or because the task ended.
    #[error("closed")]
    Closed,
    /// Nobody reads it any more (`EPIPE`): the task closed its end or exited.
    #[error("the task no longer reads it (broken pipe)")]
    BrokenPipe,
    /// Writing failed with this errno.
    #[error("write failed: {}", std::io::Error::from_raw_os_error(*.0))]
    Io(i32),
}

impl WriteError {
    /// The error a failed write's errno stands for.
    pub(crate) fn from_errno(errno: i32) -> WriteError {
        match errno {
            libc::EPIPE | libc::ECONNRESET => WriteError::BrokenPipe,
            errno => WriteError::Io(errno),
        }
    }
}
