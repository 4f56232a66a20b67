//! What a user asks to run: [`TaskSpec`], a builder in the style of `std::process::Command`.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

pub use crate::task::AfterExit;

/// Where a child's standard stream goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio {
    /// stdout/stderr: read by the supervisor and delivered as `Event::Output`. stdin: a pipe
    /// the supervisor writes (`TaskHandle::write`, `close_stdin`).
    Capture,
    /// The supervisor's own stream.
    Inherit,
    /// `/dev/null`.
    Null,
}

/// Where the task's main process stands with respect to sessions, process groups and the
/// supervisor's controlling terminal. In every mode the main process leads its own process
/// group (pid == pgid), which is what process-group containment signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Session {
    /// `setsid()`: its own session and process group, no controlling terminal. The default
    /// for a worker pool: a task can never read from or be stopped by the supervisor's tty.
    #[default]
    New,
    /// `setpgid(0, 0)`: its own process group in the supervisor's session. It keeps the
    /// controlling terminal but stays in the background.
    Group,
    /// Its own process group, made the foreground group of the controlling terminal before
    /// exec (`tcsetpgrp` on the first of fds 0, 1, 2 that is that terminal), as a shell or
    /// `tini` does for an interactive program. Without a controlling terminal it is
    /// [`Session::Group`].
    Foreground,
}

/// The longest frame a framed channel takes by default: 16 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 16 << 20;

/// Resource limits for one task's cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// `pids.max`: at most this many processes and threads in the task's tree.
    pub pids_max: Option<u64>,
    /// `memory.max` in bytes.
    pub memory_max: Option<u64>,
}

/// One task to supervise.
#[derive(Debug, Clone)]
pub struct TaskSpec {
    pub(crate) program: OsString,
    pub(crate) args: Vec<OsString>,
    pub(crate) env: Vec<(OsString, Option<OsString>)>,
    pub(crate) env_clear: bool,
    pub(crate) cwd: Option<PathBuf>,
    pub(crate) stdin: Stdio,
    pub(crate) stdout: Stdio,
    pub(crate) stderr: Stdio,
    /// Child-side fd numbers of extra raw socketpair channels, in `StreamId::channel(k)`
    /// order.
    pub(crate) channels: Vec<i32>,
    /// Framed request channels (socketpairs at fds named in `PIDRING_CHANNEL_FDS`).
    pub(crate) framed: u8,
    /// The longest frame a framed channel accepts from the child.
    pub(crate) max_frame: u32,
    /// Bytes of output and messages delivered and not yet consumed, at most (the pool's
    /// default when `None`).
    pub(crate) budget: Option<usize>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) grace: Duration,
    pub(crate) drain: Duration,
    pub(crate) after_exit: AfterExit,
    pub(crate) limits: Limits,
    pub(crate) session: Session,
    /// Signals the program starts with ignored (`SIG_IGN`); every other disposition is the
    /// default.
    pub(crate) ignored_signals: Vec<i32>,
    /// Signals blocked when the program starts.
    pub(crate) blocked_signals: Vec<i32>,
}

impl TaskSpec {
    /// Defaults: stdin `/dev/null`, stdout and stderr captured, no channels, no timeout,
    /// grace 5 s, drain 1 s, the tree killed after the drain ([`AfterExit::KillTree`]).
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        TaskSpec {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            env_clear: false,
            cwd: None,
            stdin: Stdio::Null,
            stdout: Stdio::Capture,
            stderr: Stdio::Capture,
            channels: Vec::new(),
            framed: 0,
            max_frame: DEFAULT_MAX_FRAME,
            budget: None,
            timeout: None,
            grace: Duration::from_secs(5),
            drain: Duration::from_secs(1),
            after_exit: AfterExit::KillTree,
            limits: Limits::default(),
            session: Session::New,
            ignored_signals: Vec::new(),
            blocked_signals: Vec::new(),
        }
    }

    /// Appends one argument (`argv[1..]`; `argv[0]` is the program as given).
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Appends each of `args`, in order.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets one environment variable of the child.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), Some(value.as_ref().to_owned())));
        self
    }

    /// Removes one inherited environment variable.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.env.push((key.as_ref().to_owned(), None));
        self
    }

    /// Starts from an empty environment instead of the supervisor's.
    pub fn env_clear(mut self) -> Self {
        self.env_clear = true;
        self.env.clear();
        self
    }

    /// The child's working directory (default: the supervisor's). A directory the child
    /// cannot enter makes `spawn` fail with [`SpawnError::Cwd`](crate::SpawnError::Cwd).
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Where stdin comes from (default `/dev/null`). With [`Stdio::Capture`] it is a pipe
    /// the supervisor writes: `TaskHandle::write` queues bytes (written in order, through
    /// the pool's driver, partial writes resumed), `TaskHandle::close_stdin` closes it once
    /// they are written, and `Event::StdinClosed` says when and why it closed.
    pub fn stdin(mut self, stdin: Stdio) -> Self {
        self.stdin = stdin;
        self
    }

    /// Where stdout goes (default [`Stdio::Capture`]: delivered as `Event::Output` on
    /// [`StreamId::STDOUT`](crate::StreamId::STDOUT)).
    pub fn stdout(mut self, stdout: Stdio) -> Self {
        self.stdout = stdout;
        self
    }

    /// Where stderr goes (default [`Stdio::Capture`]: delivered as `Event::Output` on
    /// [`StreamId::STDERR`](crate::StreamId::STDERR)).
    pub fn stderr(mut self, stderr: Stdio) -> Self {
        self.stderr = stderr;
        self
    }

    /// Adds a raw socketpair channel whose child end is fd `child_fd` in the child (3 or
    /// more). What the child writes to it arrives unframed as `Event::Output` on
    /// `StreamId::channel(k)`, k counting raw channels in the order added.
    pub fn channel(mut self, child_fd: i32) -> Self {
        self.channels.push(child_fd);
        self
    }

    /// Gives the task `n` framed request channels (socketpairs, at most 200). The child
    /// finds its ends at the lowest fds from 3 up that no raw [`channel`](Self::channel)
    /// uses (3, 4, ... without raw channels), listed in order, comma-separated, in its
    /// `PIDRING_CHANNEL_FDS` environment variable (`pidring::child::channels()` reads it).
    ///
    /// A frame is a 4-byte big-endian length, then that many bytes of payload, in both
    /// directions. Each frame from the child arrives whole as `Event::Message { channel, .. }`
    /// (channel `k` from 0); `TaskHandle::send(k, payload)` sends one. A frame from the
    /// child over [`max_frame`](Self::max_frame) closes that channel (`Event::ChannelClosed`
    /// with `ChannelEnd::FrameTooLarge`), and so does the child closing its end; the task
    /// goes on either way.
    pub fn channels(mut self, n: u8) -> Self {
        self.framed = n;
        self
    }

    /// The longest frame a framed channel accepts from the child (default 16 MiB), and the
    /// longest `TaskHandle::send` takes.
    pub fn max_frame(mut self, bytes: u32) -> Self {
        self.max_frame = bytes;
        self
    }

    /// This task's budget: bytes of output and messages delivered and not yet consumed
    /// (dropped) by the application, at most, before the pool stops reading the task
    /// (default: the pool's, `PoolBuilder::task_budget`).
    pub fn budget(mut self, bytes: usize) -> Self {
        self.budget = Some(bytes);
        self
    }

    /// Terminates the tree (SIGTERM, grace, SIGKILL) once the task has run this long.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Time between SIGTERM and SIGKILL on any termination.
    pub fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// How long descendants may hold the output open after the main process exits.
    pub fn drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// What happens when the main process has exited but its tree lives on or still holds
    /// the output open (default [`AfterExit::KillTree`]: terminated after the
    /// [`drain`](Self::drain)).
    pub fn after_exit(mut self, policy: AfterExit) -> Self {
        self.after_exit = policy;
        self
    }

    /// At most `max` processes and threads in the task's tree at once (the cgroup's
    /// `pids.max`): a `fork` beyond fails with `EAGAIN` in the task. Needs the pids
    /// controller (cgroup v2, or its v1 hierarchy); without it, or in process-group mode,
    /// `spawn` fails with [`SpawnError::Containment`](crate::SpawnError::Containment)
    /// ([`ContainmentError::ControllerMissing`](crate::ContainmentError::ControllerMissing)).
    pub fn pids_max(mut self, max: u64) -> Self {
        self.limits.pids_max = Some(max);
        self
    }

    /// At most `bytes` of memory for the task's tree (the cgroup's `memory.max`): beyond it
    /// the kernel reclaims, then the OOM killer kills inside the tree. Needs the memory
    /// controller (cgroup v2, or its v1 hierarchy); without it, or in process-group mode,
    /// `spawn` fails with [`SpawnError::Containment`](crate::SpawnError::Containment)
    /// ([`ContainmentError::ControllerMissing`](crate::ContainmentError::ControllerMissing)).
    pub fn memory_max(mut self, bytes: u64) -> Self {
        self.limits.memory_max = Some(bytes);
        self
    }

    /// Session, process group and terminal of the main process (default [`Session::New`]).
    pub fn session(mut self, session: Session) -> Self {
        self.session = session;
        self
    }

    /// Signals the program starts with ignored, as if it had inherited `SIG_IGN` (what
    /// `nohup` or `trap '' PIPE` give a program). By default every signal has its default
    /// disposition, whatever the supervisor's own are. Numbers 1 to 64 other than SIGKILL
    /// and SIGSTOP; anything else makes `spawn` fail with `SpawnError::InvalidSpec`.
    pub fn ignore_signals(mut self, signals: impl IntoIterator<Item = i32>) -> Self {
        self.ignored_signals.extend(signals);
        self
    }

    /// Signals blocked in the program when it starts (the mask survives exec). By default
    /// none, whatever the supervisor's own mask is. Numbers 1 to 64 other than SIGKILL and
    /// SIGSTOP; anything else makes `spawn` fail with `SpawnError::InvalidSpec`.
    pub fn block_signals(mut self, signals: impl IntoIterator<Item = i32>) -> Self {
        self.blocked_signals.extend(signals);
        self
    }

    /// The program to run, as given to [`new`](Self::new).
    pub fn program(&self) -> &OsStr {
        &self.program
    }
}
