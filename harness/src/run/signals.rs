//! Signals: their names (as GNU `timeout -s`, `kill -l` and tini's `-p` spell them), sets of
//! them, and what each personality does with each one it receives.
//!
//! Every signal but SIGKILL and SIGSTOP is *handled* by pidring: blocked in all its threads
//! from the first instruction of `main` and read from a signalfd by the event loop, so none
//! can end pidring alone and leave the tree behind. Signals ignored when pidring started
//! (`nohup`, a background job of a non-interactive shell) stay ignored, except where the
//! personality says otherwise (see [`Policy`]).

use libc::c_int;

/// A set of signals 1..=64, as the kernel's 64-bit `sigset_t`: bit `n - 1` is signal `n`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SigSet(pub u64);

impl SigSet {
    pub const EMPTY: SigSet = SigSet(0);

    pub fn contains(self, sig: i32) -> bool {
        (1..=64).contains(&sig) && self.0 & (1u64 << (sig - 1)) != 0
    }
    pub fn with(self, sig: i32) -> SigSet {
        if (1..=64).contains(&sig) {
            SigSet(self.0 | 1u64 << (sig - 1))
        } else {
            self
        }
    }
    pub fn without(self, sig: i32) -> SigSet {
        if (1..=64).contains(&sig) {
            SigSet(self.0 & !(1u64 << (sig - 1)))
        } else {
            self
        }
    }
    pub fn iter(self) -> impl Iterator<Item = i32> {
        (1..=64).filter(move |&s| self.contains(s))
    }
}

/// The signals that no process can catch or block.
pub fn uncatchable(sig: i32) -> bool {
    sig == libc::SIGKILL || sig == libc::SIGSTOP
}

/// glibc's own real-time signals (SIGCANCEL 32, SIGSETXID 33), below `SIGRTMIN`.
pub fn reserved_by_libc(sig: i32) -> bool {
    (32..libc::SIGRTMIN()).contains(&sig)
}

/// Names without the `SIG` prefix, as `kill -l` and GNU's `str2sig` know them (aliases after
/// the main name).
const NAMES: &[(&str, c_int)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("POLL", libc::SIGIO),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
    // Aliases.
    ("IOT", libc::SIGABRT),
    ("CLD", libc::SIGCHLD),
    ("IO", libc::SIGIO),
];

/// The name of `sig` as GNU's `sig2str` writes it (`TERM`, `RTMIN+2`, `RTMAX-1`), or its
/// number when it has none (0 included, as GNU timeout's `--verbose` prints it).
pub fn name(sig: i32) -> String {
    if let Some((n, _)) = NAMES.iter().find(|&&(_, s)| s == sig) {
        return (*n).to_string();
    }
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    if (min..=max).contains(&sig) {
        let half = (min + max) / 2;
        return if sig == min {
            "RTMIN".into()
        } else if sig == max {
            "RTMAX".into()
        } else if sig <= half {
            format!("RTMIN+{}", sig - min)
        } else {
            format!("RTMAX-{}", max - sig)
        };
    }
    sig.to_string()
}

/// A signal operand as GNU's `operand2sig` reads it (`timeout -s`, `pidring run -s`): a
/// number (0..=64; like a shell status, 128+N and 256+N are N), or a name in any case with
/// or without `SIG` (`TERM`, `sigterm`, `RTMIN+1`, `EXIT` for 0). `None` if invalid.
pub fn parse(operand: &str) -> Option<i32> {
    let signum: i64 = if operand.bytes().next().is_some_and(|b| b.is_ascii_digit()) {
        if !operand.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: i64 = operand.parse().ok().filter(|&n| n <= i64::from(i32::MAX))?;
        n & if n >= 0xff { 0xff } else { 0x7f }
    } else {
        let upper = operand.to_ascii_uppercase();
        let bare = |s: &str| -> Option<i32> { by_name(s) };
        let found = bare(&upper).or_else(|| upper.strip_prefix("SIG").and_then(bare))?;
        i64::from(found)
    };
    (0..=64).contains(&signum).then_some(signum as i32)
}

fn by_name(upper: &str) -> Option<i32> {
    if upper == "EXIT" {
        return Some(0);
    }
    if let Some((_, s)) = NAMES.iter().find(|&&(n, _)| n == upper) {
        return Some(*s);
    }
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let offset = |rest: &str| -> Option<i32> {
        (!rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
            .then(|| rest.parse::<i32>().ok())
            .flatten()
    };
    let sig = if upper == "RTMIN" {
        min
    } else if upper == "RTMAX" {
        max
    } else if let Some(rest) = upper.strip_prefix("RTMIN+") {
        min + offset(rest)?
    } else if let Some(rest) = upper.strip_prefix("RTMAX-") {
        max - offset(rest)?
    } else {
        return None;
    };
    (min..=max).contains(&sig).then_some(sig)
}

/// tini's `-p` names: exactly `SIGHUP` … `SIGSYS`, case-sensitive, the 28 of its table.
pub fn parse_tini(name: &str) -> Option<i32> {
    const TINI: &[&str] = &[
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGSYS",
    ];
    if !TINI.contains(&name) {
        return None;
    }
    by_name(name.strip_prefix("SIG")?)
}

/// `strsignal(3)`-style description, for tini's messages.
pub fn describe(sig: i32) -> String {
    let text = match sig {
        libc::SIGHUP => "Hangup",
        libc::SIGINT => "Interrupt",
        libc::SIGQUIT => "Quit",
        libc::SIGILL => "Illegal instruction",
        libc::SIGTRAP => "Trace/breakpoint trap",
        libc::SIGABRT => "Aborted",
        libc::SIGBUS => "Bus error",
        libc::SIGFPE => "Floating point exception",
        libc::SIGKILL => "Killed",
        libc::SIGUSR1 => "User defined signal 1",
        libc::SIGSEGV => "Segmentation fault",
        libc::SIGUSR2 => "User defined signal 2",
        libc::SIGPIPE => "Broken pipe",
        libc::SIGALRM => "Alarm clock",
        libc::SIGTERM => "Terminated",
        libc::SIGCHLD => "Child exited",
        libc::SIGCONT => "Continued",
        libc::SIGSTOP => "Stopped (signal)",
        libc::SIGTSTP => "Stopped",
        libc::SIGTTIN => "Stopped (tty input)",
        libc::SIGTTOU => "Stopped (tty output)",
        libc::SIGWINCH => "Window changed",
        _ => return format!("Signal {sig}"),
    };
    text.to_string()
}

/// What pidring does with a signal it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// End the whole tree: SIGTERM to every process of it (the task's cgroup or process
    /// group), SIGKILL after the grace period; a second such signal (but SIGHUP) kills at
    /// once. pidring exits with PROGRAM's status.
    Terminate,
    /// As if the timeout fired now (GNU timeout's SIGALRM): exit status 124.
    TimeoutNow,
    /// Sent on, as itself, to PROGRAM's main process.
    ForwardMain,
    /// Sent on, as itself, to PROGRAM and its process group (GNU timeout's `cleanup`; tini's
    /// `-g`).
    ForwardGroup,
    /// Job control (`^Z` while pidring's group has the terminal): PROGRAM's tree is stopped,
    /// then pidring stops itself; the SIGCONT that resumes pidring resumes the tree.
    Stop,
    /// SIGCONT: the tree is continued (and given the terminal back if it had it).
    Continue,
    /// SIGCHLD: orphans are reaped; PROGRAM stopped by the terminal stops pidring too.
    Child,
    /// Read and dropped.
    Ignore,
}

/// The three command lines pidring answers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personality {
    /// `pidring run`.
    Run,
    /// `timeout` (a symlink) or `pidring timeout`: GNU timeout's command line.
    Timeout,
    /// `tini` (a symlink) or `pidring init`: tini's command line.
    Tini,
}

/// What one personality does with each signal.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub personality: Personality,
    /// `timeout -s SIG` / `pidring run -s SIG`: GNU handles it even if ignored on entry.
    pub timeout_signal: i32,
    /// tini `-g` / `TINI_KILL_PROCESS_GROUP`.
    pub to_group: bool,
    /// `timeout --foreground`: signals go to PROGRAM only, not to its group.
    pub main_only: bool,
}

impl Policy {
    /// The action for `sig` (1..=64, not SIGKILL/SIGSTOP).
    pub fn action(&self, sig: i32) -> Action {
        use libc::*;
        if reserved_by_libc(sig) {
            return Action::Ignore;
        }
        if sig == SIGCHLD {
            return Action::Child;
        }
        match self.personality {
            Personality::Run => match sig {
                SIGALRM => Action::TimeoutNow,
                SIGTERM | SIGINT | SIGHUP | SIGQUIT | SIGABRT | SIGBUS | SIGFPE | SIGILL
                | SIGSEGV | SIGSYS | SIGTRAP | SIGXCPU | SIGXFSZ | SIGVTALRM | SIGPROF
                | SIGSTKFLT => Action::Terminate,
                SIGTSTP | SIGTTIN | SIGTTOU => Action::Stop,
                SIGCONT => Action::Continue,
                // USR1, USR2, WINCH, URG, IO, PWR, PIPE and the real-time signals.
                _ => Action::ForwardMain,
            },
            Personality::Timeout => match sig {
                SIGALRM => Action::TimeoutNow,
                s if s == self.timeout_signal || gnu_term_signal(s) => {
                    if self.main_only {
                        Action::ForwardMain
                    } else {
                        Action::ForwardGroup
                    }
                }
                SIGTSTP | SIGTTIN | SIGTTOU => Action::Stop,
                SIGCONT => Action::Continue,
                // WINCH, URG: GNU timeout leaves them at their default (ignore).
                _ => Action::Ignore,
            },
            Personality::Tini => match sig {
                // tini ignores these itself (it hands the terminal to PROGRAM).
                SIGTTIN | SIGTTOU => Action::Ignore,
                _ if self.to_group => Action::ForwardGroup,
                _ => Action::ForwardMain,
            },
        }
    }

    /// Whether a signal that was ignored (`SIG_IGN`) when pidring started is handled anyway.
    /// GNU timeout cannot ignore SIGALRM and its `-s` signal; tini blocks and forwards
    /// everything; `pidring run` leaves them all ignored.
    pub fn handles_ignored(&self, sig: i32) -> bool {
        match self.personality {
            Personality::Run => sig == libc::SIGCHLD,
            Personality::Timeout => {
                sig == libc::SIGALRM || sig == self.timeout_signal || sig == libc::SIGCHLD
            }
            Personality::Tini => true,
        }
    }
}

/// GNU timeout's `term_sig` list plus the real-time signals: the signals it catches and
/// passes on (its `cleanup` handler).
pub fn gnu_term_signal(sig: i32) -> bool {
    use libc::*;
    matches!(
        sig,
        SIGALRM
            | SIGINT
            | SIGQUIT
            | SIGHUP
            | SIGTERM
            | SIGPIPE
            | SIGUSR1
            | SIGUSR2
            | SIGILL
            | SIGTRAP
            | SIGABRT
            | SIGBUS
            | SIGFPE
            | SIGSEGV
            | SIGXCPU
            | SIGXFSZ
            | SIGSYS
            | SIGVTALRM
            | SIGPROF
            | SIGIO
            | SIGPWR
            | SIGSTKFLT
    ) || (SIGRTMIN()..=SIGRTMAX()).contains(&sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for sig in 0..=64 {
            assert_eq!(parse(&name(sig)), Some(sig), "{sig} {}", name(sig));
        }
        assert_eq!(name(0), "0");
        assert_eq!(name(9), "KILL");
        assert_eq!(name(libc::SIGRTMIN()), "RTMIN");
        assert_eq!(name(libc::SIGRTMIN() + 1), "RTMIN+1");
        assert_eq!(name(libc::SIGRTMAX() - 1), "RTMAX-1");
    }

    #[test]
    fn operands_as_gnu_reads_them() {
        assert_eq!(parse("TERM"), Some(15));
        assert_eq!(parse("term"), Some(15));
        assert_eq!(parse("SIGTERM"), Some(15));
        assert_eq!(parse("sigkill"), Some(9));
        assert_eq!(parse("0"), Some(0));
        assert_eq!(parse("EXIT"), Some(0));
        assert_eq!(parse("9"), Some(9));
        assert_eq!(parse("137"), Some(9)); // a shell status: 128 + KILL
        assert_eq!(parse("265"), Some(9)); // ksh: 256 + KILL
        assert_eq!(parse("IOT"), Some(libc::SIGABRT));
        assert_eq!(parse("rtmin+2"), Some(libc::SIGRTMIN() + 2));
        for bad in [
            "invalid",
            "",
            "-1",
            "+9",
            "9x",
            "SIG",
            "RTMIN+",
            "RTMIN+99",
            "RTMAX-99",
            "65",
            "127",
            "99999999999999999999",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(parse_tini("SIGKILL"), Some(9));
        assert_eq!(parse_tini("SIGUSR1"), Some(libc::SIGUSR1));
        assert_eq!(parse_tini("KILL"), None);
        assert_eq!(parse_tini("sigkill"), None);
        assert_eq!(parse_tini("SIGPWR"), None);
    }

    #[test]
    fn every_catchable_signal_has_a_decision() {
        for personality in [Personality::Run, Personality::Timeout, Personality::Tini] {
            let p = Policy {
                personality,
                timeout_signal: libc::SIGTERM,
                to_group: false,
                main_only: false,
            };
            for sig in (1..=64).filter(|&s| !uncatchable(s)) {
                let a = p.action(sig);
                if reserved_by_libc(sig) {
                    assert_eq!(a, Action::Ignore);
                }
            }
            assert_eq!(p.action(libc::SIGCHLD), Action::Child);
        }
        let run = Policy {
            personality: Personality::Run,
            timeout_signal: libc::SIGTERM,
            to_group: false,
            main_only: false,
        };
        for sig in [
            libc::SIGALRM,
            libc::SIGVTALRM,
            libc::SIGPROF,
            libc::SIGXCPU,
            libc::SIGXFSZ,
            libc::SIGIO,
            libc::SIGPWR,
            libc::SIGSYS,
            libc::SIGTRAP,
            libc::SIGABRT,
            libc::SIGRTMIN(),
            libc::SIGRTMAX(),
        ] {
            assert_ne!(run.action(sig), Action::Ignore, "{}", name(sig));
        }
    }
}
