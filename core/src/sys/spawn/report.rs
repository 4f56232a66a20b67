//! Decoding: what the child recorded (step, index, errno) turned into the typed
//! [`SpawnError`] that `Pool::spawn`'s caller gets.

use std::io;

use super::child::Step;
use super::prepare::Prepared;
use crate::containment::Placement;
use crate::error::SpawnError;

/// The error for a child that failed at `step` with `errno` (`index`: which cgroup file, fd
/// or signal of the step). `joined_v2`: the child's first `cgroup.procs` was the v2 one.
pub(super) fn setup_error(
    prepared: &Prepared,
    placement: &Placement,
    joined_v2: bool,
    step: Step,
    index: u32,
    errno: i32,
) -> SpawnError {
    let os = io::Error::from_raw_os_error(errno);
    let setup = |step: &'static str| SpawnError::Setup {
        step,
        source: io::Error::from_raw_os_error(errno),
    };
    match step {
        Step::Exec => SpawnError::from_errno(errno, &prepared.program),
        _ if matches!(errno, libc::EMFILE | libc::ENFILE | libc::EAGAIN) => {
            SpawnError::from_errno(errno, &prepared.program)
        }
        Step::Chdir => SpawnError::Cwd {
            path: prepared.cwd_display.clone().unwrap_or_default(),
            source: os,
        },
        Step::JoinCgroup => {
            // The child's list is [v2 (when it joined v2 itself), v1...].
            let v1_index = (index as usize).checked_sub(usize::from(joined_v2));
            let what = v1_index
                .and_then(|i| placement.v1_procs.get(i))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|| "the task's cgroup".into());
            SpawnError::Setup {
                step: "joining the task's cgroup",
                source: io::Error::new(os.kind(), format!("writing {what}: {os}")),
            }
        }
        Step::Fds => setup(if index == u32::MAX >> 8 {
            "closing the supervisor's descriptors"
        } else {
            "placing its standard streams and channels"
        }),
        Step::Session => setup("starting its session or process group"),
        Step::DeathSignal => setup("arming the parent-death signal"),
        Step::ParentGone => setup("checking its parent: the supervisor is gone"),
        Step::Terminal => setup("taking the terminal's foreground"),
        Step::FdLimit => setup("restoring RLIMIT_NOFILE"),
        Step::Signals => setup("resetting its signal dispositions and mask"),
    }
}

/// The error for a clone that made no child: the process limits (`EAGAIN`), the fd limit
/// (the pidfd), or a refusal of the call itself.
pub(super) fn clone_error(errno: i32) -> SpawnError {
    match errno {
        libc::EAGAIN => SpawnError::TooManyProcesses,
        libc::EMFILE | libc::ENFILE => SpawnError::TooManyFiles,
        _ => SpawnError::Setup {
            step: "creating the process",
            source: io::Error::from_raw_os_error(errno),
        },
    }
}

/// The error for a child that ended before `execve` without recording why: it was killed
/// (a SIGKILL from a shutdown, the OOM killer, or another process).
pub(super) fn died_before_exec() -> SpawnError {
    SpawnError::Setup {
        step: "starting",
        source: io::Error::new(
            io::ErrorKind::Interrupted,
            "the child was killed before it could exec",
        ),
    }
}
