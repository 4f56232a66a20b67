//! The terminal: when pidring runs in the foreground of a terminal, PROGRAM gets it, as
//! under a shell or tini.
//!
//! PROGRAM always leads its own process group (process-group containment signals that
//! group). Which session and which terminal access it gets:
//! - one of fds 0, 1, 2 (as PROGRAM gets them: relayed streams are pipes) is pidring's
//!   controlling terminal and pidring's process group is its foreground group:
//!   [`Session::Foreground`]: PROGRAM's group becomes the foreground group (it reads the
//!   terminal, and `^C`, `^\`, `^Z` and window-size changes reach it directly);
//! - that terminal, but pidring is in the background (`pidring run … &` from an interactive
//!   shell, or from a script: a shell without job control starts background commands in its
//!   own process group, which may be the foreground one, but with SIGINT ignored, and that is
//!   how pidring, like GNU timeout, tells):
//!   [`Session::Group`]: PROGRAM stays in pidring's session, in the background, and stops
//!   on a terminal read as any background job does (see job control below);
//! - no terminal: [`Session::New`], PROGRAM's own session, no controlling terminal.
//!
//! Job control: when PROGRAM is stopped by the terminal (`^Z`, a background read), pidring
//! takes the terminal back and stops itself, so the shell that started it sees the job
//! stopped; when pidring is continued (`fg`, `bg`), it gives the terminal back to PROGRAM if
//! pidring has it, and continues PROGRAM's tree. When PROGRAM's main process ends, the
//! terminal goes back to pidring's group (the shell or script that started pidring finds it
//! as it left it).

use pidring::Session;

use crate::sys;

/// pidring's controlling terminal, as one of its standard fds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terminal {
    /// 0, 1 or 2.
    pub fd: i32,
    /// pidring's own process group.
    pub own_group: i32,
}

/// The session PROGRAM gets, and the terminal involved (see the module docs). `relayed`
/// tells which of fds 0, 1, 2 PROGRAM gets as a relay pipe instead of pidring's own;
/// `background` that pidring was started as a background command (SIGINT ignored).
pub fn choose(relayed: [bool; 3], background: bool) -> (Session, Option<Terminal>) {
    let Some(session) = sys::own_session() else {
        return (Session::New, None);
    };
    let own_group = sys::own_process_group();
    let fd = (0..3).find(|&fd| {
        !relayed[fd as usize] && sys::is_terminal(fd) && sys::terminal_session(fd) == Some(session)
    });
    let Some(fd) = fd else {
        return (Session::New, None);
    };
    let terminal = Terminal { fd, own_group };
    if !background && terminal.foreground() == Some(own_group) {
        (Session::Foreground, Some(terminal))
    } else {
        (Session::Group, Some(terminal))
    }
}

impl Terminal {
    pub fn foreground(&self) -> Option<i32> {
        sys::foreground_group(self.fd)
    }

    /// pidring's group is the foreground group.
    pub fn we_have_it(&self) -> bool {
        self.foreground() == Some(self.own_group)
    }

    /// Gives the terminal to PROGRAM's group (`pgrp`) if pidring's group has it.
    pub fn give_to(&self, pgrp: i32) {
        if self.we_have_it() {
            if let Err(e) = sys::set_foreground_group(self.fd, pgrp) {
                tracing::debug!(error = %e, "cannot give the terminal to PROGRAM");
            }
        }
    }

    /// Takes the terminal back for pidring's group if PROGRAM's group (`pgrp`) has it.
    pub fn take_back_from(&self, pgrp: i32) {
        if self.foreground() == Some(pgrp) {
            if let Err(e) = sys::set_foreground_group(self.fd, self.own_group) {
                tracing::debug!(error = %e, "cannot take the terminal back");
            }
        }
    }
}
