//! What one run is asked to do, whichever command line it came from (`pidring run`, GNU
//! timeout's or tini's), and how pidring speaks in each personality.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use pidring::{Backend, Containment};

use super::relay::{self, StdioMode};
use super::signals::{Personality, Policy, SigSet};

/// One run, as parsed from a command line.
#[derive(Debug, Clone)]
pub struct Config {
    pub personality: Personality,
    /// PROGRAM and its arguments.
    pub command: Vec<OsString>,
    /// When PROGRAM's main process is still running after this long, `timeout_signal` goes to
    /// the tree. `None`: no timeout.
    pub timeout: Option<Duration>,
    pub timeout_signal: i32,
    /// `timeout -k`: SIGKILL to the whole tree this long after the first signal pidring
    /// passed on. `None`: never (GNU timeout without `-k`). `pidring run` escalates after
    /// `grace` instead, on every termination.
    pub kill_after: Option<Duration>,
    /// Between SIGTERM and SIGKILL when the tree is terminated (a signal to pidring, the
    /// timeout, the drain).
    pub grace: Duration,
    /// After the main process exits, how long the rest of the tree may live.
    pub drain: Duration,
    pub containment: Containment,
    pub backend: Backend,
    pub report: Option<PathBuf>,
    pub preserve_status: bool,
    pub stdio: StdioMode,
    /// `timeout --foreground`: signals go to PROGRAM's main process only.
    pub main_only: bool,
    /// tini `-g`: signals go to PROGRAM's process group.
    pub to_group: bool,
    /// tini `-e CODE`: exit statuses reported as 0 (bit per status).
    pub remap_to_zero: [u64; 4],
    /// tini `-p SIG`: the signal pidring gets when its parent dies.
    pub parent_death_signal: Option<i32>,
    /// tini `-w`: a warning per orphan reaped.
    pub warn_on_reap: bool,
    /// `-v` count (tini: its verbosity level, default 1).
    pub verbose: u8,
}

impl Config {
    /// `pidring run`'s defaults for everything but the command.
    pub fn new(personality: Personality, command: Vec<OsString>) -> Config {
        Config {
            personality,
            command,
            timeout: None,
            timeout_signal: libc::SIGTERM,
            kill_after: None,
            grace: Duration::from_secs(5),
            drain: Duration::from_secs(1),
            containment: Containment::Auto,
            backend: Backend::Auto,
            report: None,
            preserve_status: false,
            stdio: StdioMode::Inherit,
            main_only: false,
            to_group: false,
            remap_to_zero: [0; 4],
            parent_death_signal: None,
            warn_on_reap: false,
            verbose: 0,
        }
    }

    pub fn policy(&self) -> Policy {
        Policy {
            personality: self.personality,
            timeout_signal: self.timeout_signal,
            to_group: self.to_group,
            main_only: self.main_only,
        }
    }

    pub fn remapped_to_zero(&self, code: u8) -> bool {
        self.remap_to_zero[usize::from(code / 64)] & (1u64 << (code % 64)) != 0
    }

    pub fn program_shown(&self) -> String {
        self.command
            .first()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// What pidring was started with, captured first thing in `main`, before it changes
/// anything: PROGRAM inherits it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Signals whose disposition was `SIG_IGN`.
    pub ignored: SigSet,
    /// The signal mask.
    pub blocked: SigSet,
    /// Children pidring already had (a shell's `sleep 9 & exec pidring …`), as `/proc`
    /// numbers them: they are not PROGRAM's, so pidring never kills them.
    pub children: Vec<i32>,
}

impl Entry {
    /// Reads the signal dispositions and mask pidring was started with, and its children.
    /// Changes nothing.
    pub fn capture() -> Entry {
        let mut ignored = SigSet::EMPTY;
        for sig in 1..=64 {
            if crate::sys::signal_ignored(sig) {
                ignored = ignored.with(sig);
            }
        }
        Entry {
            ignored,
            blocked: SigSet(crate::sys::blocked_signals()),
            children: super::sweep::children_in_proc(),
        }
    }

    /// From here on every catchable signal is blocked, in this thread and in every thread
    /// created after (the pool's): the event loop reads them from a signalfd, so none can
    /// end pidring and leave the tree behind. Call before any thread starts. Returns the set.
    ///
    /// SIGCHLD ignored on entry (`trap '' CHLD`) would make the kernel reap PROGRAM before the
    /// pool can: it is set back to its default. glibc's own signals 32 and 33 are ignored if
    /// nothing handles them: glibc unblocks 32 in every new thread, and its default action
    /// would end pidring.
    pub fn take_signals(&self) -> SigSet {
        if self.ignored.contains(libc::SIGCHLD) {
            crate::sys::set_signal_disposition(libc::SIGCHLD, false);
        }
        for sig in 32..libc::SIGRTMIN() {
            if crate::sys::signal_default(sig) {
                crate::sys::set_signal_disposition(sig, true);
            }
        }
        let all = (1..=64)
            .filter(|&s| !super::signals::uncatchable(s))
            .fold(SigSet::EMPTY, SigSet::with);
        crate::sys::block_signals(all.0);
        all
    }

    /// The signals PROGRAM starts with ignored: those pidring was started with, but SIGCHLD
    /// (an ignored SIGCHLD makes the kernel reap a program's children behind its back; GNU
    /// timeout's child never inherits it either).
    pub fn ignored_for_program(&self) -> SigSet {
        self.ignored.without(libc::SIGCHLD)
    }
}

/// How pidring speaks: `pidring: …` lines, GNU timeout's `timeout: …` lines, or tini's
/// `[FATAL tini (PID)] …` lines at its verbosity levels.
#[derive(Debug, Clone)]
pub struct Voice {
    pub personality: Personality,
    /// The name in messages (`pidring`, `timeout`).
    pub name: String,
    pub verbose: u8,
}

impl Voice {
    /// One error line on stderr (never more: newlines in `msg` are flattened).
    pub fn error(&self, msg: &str) {
        let msg = msg.replace('\n', " ");
        let line = match self.personality {
            Personality::Tini => format!("[FATAL tini ({})] {msg}\n", crate::sys::own_pid()),
            _ => format!("{}: {msg}\n", self.name),
        };
        relay::write_stderr(line.as_bytes());
    }

    /// GNU timeout's `--verbose` line for a signal it sends.
    pub fn sending(&self, sig: i32, command: &str) {
        if self.personality == Personality::Timeout && self.verbose > 0 {
            let line = format!(
                "{}: sending signal {} to command {}\n",
                self.name,
                if sig == 0 {
                    "0".to_string()
                } else {
                    super::signals::name(sig)
                },
                quote(command)
            );
            relay::write_stderr(line.as_bytes());
        }
    }

    /// tini's leveled messages: WARN on stderr from level 1, INFO (2), DEBUG (3) and TRACE
    /// (4) on stdout, as tini prints them.
    pub fn tini(&self, level: u8, msg: &str) {
        if self.personality != Personality::Tini || self.verbose < level {
            return;
        }
        let tag = match level {
            0 => "FATAL",
            1 => "WARN ",
            2 => "INFO ",
            3 => "DEBUG",
            _ => "TRACE",
        };
        let line = format!("[{tag} tini ({})] {msg}\n", crate::sys::own_pid());
        if level <= 1 {
            relay::write_stderr(line.as_bytes());
        } else {
            relay::write_stdout(line.as_bytes());
        }
    }
}

/// A word quoted as GNU's `quote` shows it in the C locale: `'word'`, with shell-style
/// escaping where needed.
pub fn quote(word: &str) -> String {
    if word.chars().all(|c| !c.is_control() && c != '\'') {
        format!("'{word}'")
    } else {
        let mut out = String::from("'");
        for c in word.chars() {
            match c {
                '\'' => out.push_str("'\\''"),
                c if c.is_control() => out.push_str(&format!("'$'\\{:03o}''", c as u32)),
                c => out.push(c),
            }
        }
        out.push('\'');
        out
    }
}
