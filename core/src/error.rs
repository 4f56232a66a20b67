//! Typed errors of the public API, one enum per operation.

use std::io;
use std::path::PathBuf;

use crate::containment::ContainmentError;

/// Why `Pool::spawn` failed. The pool and its other tasks are unaffected.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("program not found: {0}")]
    NotFound(String),
    #[error("permission denied: cannot execute {0}")]
    PermissionDenied(String),
    #[error("not an executable format: {0}")]
    NotExecutable(String),
    #[error("invalid task: {0}")]
    InvalidSpec(String),
    #[error("out of file descriptors (EMFILE/ENFILE)")]
    TooManyFiles,
    #[error("the system refused a new process (EAGAIN): process or memory limit")]
    TooManyProcesses,
    /// The child could not change to the task's working directory.
    #[error("cannot change directory to {}: {source}", path.display())]
    Cwd {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A step of the child's set-up before exec failed (joining its cgroup, its session,
    /// the death signal, ...): `step` names it.
    #[error("child set-up failed while {step}: {source}")]
    Setup {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("the pool is full: {0} tasks are live")]
    AtCapacity(usize),
    #[error("containment: {0}")]
    Containment(#[from] ContainmentError),
    #[error("the pool is shut down")]
    PoolClosed,
    #[error("spawn called from an on_event callback: it runs on a worker, which would wait for itself; hand the spawn to another thread")]
    FromCallback,
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
    #[error("the pool is shut down")]
    PoolClosed,
    #[error("invalid signal number {0}")]
    InvalidSignal(i32),
}

/// Why `PoolBuilder::build` failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("backend {0} is not available: {1}")]
    BackendUnavailable(&'static str, String),
    #[error("cannot start the {0} driver: {1}")]
    Driver(&'static str, #[source] io::Error),
    #[error("cannot start the cleanup thread: {0}")]
    Cleanup(#[source] io::Error),
    #[error("containment: {0}")]
    Containment(#[from] ContainmentError),
    #[error("cannot start worker thread: {0}")]
    Thread(#[source] io::Error),
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
