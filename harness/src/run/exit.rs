//! Exit statuses of `pidring run`, as GNU `timeout` users expect them.

use pidring::{ExitStatus, Reason, SpawnError};

/// `--timeout` fired (the tree was terminated).
pub const TIMED_OUT: u8 = 124;
/// pidring itself failed: bad options, no pool, no report, a lost status.
pub const PIDRING_FAILED: u8 = 125;
/// PROGRAM was found but cannot be executed.
pub const CANNOT_EXECUTE: u8 = 126;
/// PROGRAM was not found.
pub const NOT_FOUND: u8 = 127;

/// pidring's own failure (bad options, no pool): 125 as GNU timeout, 1 as tini.
pub fn failure_code(personality: super::signals::Personality) -> u8 {
    match personality {
        super::signals::Personality::Tini => 1,
        _ => PIDRING_FAILED,
    }
}

/// The shell's encoding of a status: the code, or 128 + the signal.
pub fn from_status(status: ExitStatus) -> Option<u8> {
    match status {
        ExitStatus::Code(c) => Some((c & 0xff) as u8),
        ExitStatus::Signal(s) => Some(signal_code(s)),
        ExitStatus::Unknown => None,
    }
}

fn signal_code(sig: i32) -> u8 {
    128u8.saturating_add(sig.clamp(0, 127) as u8)
}

/// The exit status of pidring for a task's outcome. `preserve_status`: on timeout, exit with
/// PROGRAM's own status instead of 124 (GNU `timeout --preserve-status`).
pub fn from_outcome(reason: Reason, status: ExitStatus, preserve_status: bool) -> u8 {
    match reason {
        Reason::Exited(c) => (c & 0xff) as u8,
        Reason::Signaled(s) => signal_code(s),
        Reason::TimedOut if preserve_status => from_status(status).unwrap_or(TIMED_OUT),
        Reason::TimedOut => TIMED_OUT,
        // Terminated at pidring's request (a signal to pidring) or after the drain period:
        // PROGRAM's own status; a status nobody can know is pidring's failure.
        Reason::Terminated | Reason::DrainExpired => from_status(status).unwrap_or(PIDRING_FAILED),
        Reason::StatusUnknown => PIDRING_FAILED,
        Reason::SpawnFailed(errno) => from_errno(errno),
    }
}

/// The status for an exec failure, as a shell reports it.
pub fn from_errno(errno: i32) -> u8 {
    match errno {
        libc::ENOENT | libc::ENOTDIR => NOT_FOUND,
        libc::EACCES
        | libc::EPERM
        | libc::ENOEXEC
        | libc::EISDIR
        | libc::ETXTBSY
        | libc::ELIBBAD => CANNOT_EXECUTE,
        _ => PIDRING_FAILED,
    }
}

/// The status for a failed `Pool::spawn`.
pub fn from_spawn_error(e: &SpawnError) -> u8 {
    match e {
        SpawnError::NotFound(_) => NOT_FOUND,
        SpawnError::PermissionDenied(_) | SpawnError::NotExecutable(_) => CANNOT_EXECUTE,
        SpawnError::Io(io) => io.raw_os_error().map(from_errno).unwrap_or(PIDRING_FAILED),
        _ => PIDRING_FAILED,
    }
}

/// The name of a reason in `--report`.
pub fn reason_name(reason: Reason) -> &'static str {
    match reason {
        Reason::Exited(_) => "exited",
        Reason::Signaled(_) => "signaled",
        Reason::StatusUnknown => "status_unknown",
        Reason::TimedOut => "timed_out",
        Reason::Terminated => "terminated",
        Reason::DrainExpired => "drain_expired",
        Reason::SpawnFailed(_) => "spawn_failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_codes() {
        assert_eq!(
            from_outcome(Reason::Exited(0), ExitStatus::Code(0), false),
            0
        );
        assert_eq!(
            from_outcome(Reason::Exited(3), ExitStatus::Code(3), false),
            3
        );
        assert_eq!(
            from_outcome(Reason::Exited(255), ExitStatus::Code(255), false),
            255
        );
        assert_eq!(
            from_outcome(Reason::Signaled(9), ExitStatus::Signal(9), false),
            137
        );
        assert_eq!(
            from_outcome(Reason::Signaled(15), ExitStatus::Signal(15), false),
            143
        );
        assert_eq!(
            from_outcome(Reason::TimedOut, ExitStatus::Signal(15), false),
            124
        );
        assert_eq!(
            from_outcome(Reason::TimedOut, ExitStatus::Signal(9), true),
            137
        );
        assert_eq!(
            from_outcome(Reason::TimedOut, ExitStatus::Unknown, true),
            124
        );
        assert_eq!(
            from_outcome(Reason::Terminated, ExitStatus::Signal(15), false),
            143
        );
        assert_eq!(
            from_outcome(Reason::Terminated, ExitStatus::Code(0), false),
            0
        );
        assert_eq!(
            from_outcome(Reason::Terminated, ExitStatus::Unknown, false),
            125
        );
        assert_eq!(
            from_outcome(Reason::DrainExpired, ExitStatus::Code(4), false),
            4
        );
        assert_eq!(
            from_outcome(Reason::StatusUnknown, ExitStatus::Unknown, false),
            125
        );
        assert_eq!(
            from_outcome(
                Reason::SpawnFailed(libc::ENOENT),
                ExitStatus::Unknown,
                false
            ),
            127
        );
        assert_eq!(
            from_outcome(
                Reason::SpawnFailed(libc::EACCES),
                ExitStatus::Unknown,
                false
            ),
            126
        );
        assert_eq!(
            from_outcome(
                Reason::SpawnFailed(libc::ENOEXEC),
                ExitStatus::Unknown,
                false
            ),
            126
        );
        assert_eq!(
            from_outcome(
                Reason::SpawnFailed(libc::EAGAIN),
                ExitStatus::Unknown,
                false
            ),
            125
        );
        // Out-of-range values never wrap into a misleading small code or panic.
        assert_eq!(
            from_outcome(Reason::Signaled(200), ExitStatus::Signal(200), false),
            255
        );
        assert_eq!(
            from_outcome(Reason::Signaled(-1), ExitStatus::Signal(-1), false),
            128
        );
    }

    #[test]
    fn spawn_error_codes() {
        assert_eq!(from_spawn_error(&SpawnError::NotFound("x".into())), 127);
        assert_eq!(
            from_spawn_error(&SpawnError::PermissionDenied("x".into())),
            126
        );
        assert_eq!(
            from_spawn_error(&SpawnError::NotExecutable("x".into())),
            126
        );
        assert_eq!(from_spawn_error(&SpawnError::TooManyFiles), 125);
        assert_eq!(from_spawn_error(&SpawnError::InvalidSpec("x".into())), 125);
    }
}
