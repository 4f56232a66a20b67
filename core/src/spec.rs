//! What a user asks to run: [`TaskSpec`], a builder in the style of `std::process::Command`.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

pub use crate::task::AfterExit;

/// Where a child's standard stream goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio {
    /// Read by the supervisor and delivered as `Event::Output`.
    Capture,
    /// The supervisor's own stream.
    Inherit,
    /// `/dev/null`.
    Null,
}

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
    /// Child-side fd numbers of extra socketpair channels, in `StreamId::channel(k)` order.
    pub(crate) channels: Vec<i32>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) grace: Duration,
    pub(crate) drain: Duration,
    pub(crate) after_exit: AfterExit,
    pub(crate) limits: Limits,
}

impl TaskSpec {
    /// Defaults: stdin `/dev/null`, stdout and stderr captured, no timeout, grace 5 s,
    /// drain 1 s, the tree killed after the drain ([`AfterExit::KillTree`]).
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
            timeout: None,
            grace: Duration::from_secs(5),
            drain: Duration::from_secs(1),
            after_exit: AfterExit::KillTree,
            limits: Limits::default(),
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

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

    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    pub fn stdin(mut self, stdin: Stdio) -> Self {
        // Capturing stdin means writing to it, which is not supported yet: treat as null.
        self.stdin = if stdin == Stdio::Capture {
            Stdio::Null
        } else {
            stdin
        };
        self
    }

    pub fn stdout(mut self, stdout: Stdio) -> Self {
        self.stdout = stdout;
        self
    }

    pub fn stderr(mut self, stderr: Stdio) -> Self {
        self.stderr = stderr;
        self
    }

    /// Adds a socketpair channel whose child end is fd `child_fd` in the child (3 or more).
    /// Its output arrives as `StreamId::channel(k)`, k counting channels in the order added.
    pub fn channel(mut self, child_fd: i32) -> Self {
        self.channels.push(child_fd);
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

    pub fn after_exit(mut self, policy: AfterExit) -> Self {
        self.after_exit = policy;
        self
    }

    pub fn pids_max(mut self, max: u64) -> Self {
        self.limits.pids_max = Some(max);
        self
    }

    pub fn memory_max(mut self, bytes: u64) -> Self {
        self.limits.memory_max = Some(bytes);
        self
    }

    pub fn program(&self) -> &OsStr {
        &self.program
    }
}
