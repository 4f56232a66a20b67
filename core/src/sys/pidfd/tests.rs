//! pidfd tests on real processes.
use std::os::fd::AsFd;
use std::time::Duration;

use super::{exit_info, pid, reap, send_signal};
use crate::spec::Stdio;
use crate::sys::spawn::test_util::*;
use crate::task::ExitStatus;

const T: Duration = Duration::from_secs(10);

#[test]
fn reap_is_none_while_running_then_signal_status() {
    let _g = serial();
    let child = start(sh("sleep 30").stdout(Stdio::Null).stderr(Stdio::Null));
    assert_eq!(reap(child.pidfd.as_fd()).unwrap(), None);
    send_signal(child.pidfd.as_fd(), libc::SIGTERM, false).unwrap();
    assert_eq!(
        wait_exit(&child.pidfd, T),
        ExitStatus::Signal(libc::SIGTERM)
    );
    // Reaped: signalling now is ESRCH, a second reap is ECHILD → exit info from the pidfd.
    let err = send_signal(child.pidfd.as_fd(), libc::SIGKILL, false).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
    assert_eq!(
        reap(child.pidfd.as_fd()).unwrap(),
        Some(ExitStatus::Signal(libc::SIGTERM))
    );
}

#[test]
fn foreign_reaper_keeps_real_status() {
    let _g = serial();
    let child = start(sh("exit 7").stdout(Stdio::Null).stderr(Stdio::Null));
    assert!(eventually(T, || matches!(
        stat_of(child.pid),
        Some(('Z', _))
    )));
    // A foreign reaper (as Celery's SIGCHLD handler with waitpid(-1)). We reap by pid, not
    // -1, so as not to steal other tests' children in this process; for the kernel it is
    // the same: the zombie is gone before we ask.
    let mut status = 0;
    // SAFETY: waitpid on our own zombie child with a pointer to a live int.
    let r = unsafe { libc::waitpid(child.pid, &mut status, 0) };
    assert_eq!(r, child.pid);
    assert_eq!(
        exit_info(child.pidfd.as_fd()).unwrap(),
        Some(ExitStatus::Code(7))
    );
    assert_eq!(
        reap(child.pidfd.as_fd()).unwrap(),
        Some(ExitStatus::Code(7))
    );
}

#[test]
fn exit_info_is_none_before_reap() {
    let _g = serial();
    let child = start(sh("sleep 30").stdout(Stdio::Null).stderr(Stdio::Null));
    assert_eq!(exit_info(child.pidfd.as_fd()).unwrap(), None);
    send_signal(child.pidfd.as_fd(), libc::SIGKILL, false).unwrap();
    assert_eq!(
        wait_exit(&child.pidfd, T),
        ExitStatus::Signal(libc::SIGKILL)
    );
}

#[test]
fn group_signal_kills_the_process_group() {
    let _g = serial();
    // The child is a session and group leader; its children share its group.
    let mut child = start(sh("sleep 30 & echo $!; sleep 30 & echo $!; wait").stderr(Stdio::Null));
    let mut out = Vec::new();
    let pids: Vec<i32> = {
        use std::io::Read;
        let (_, fd) = child.streams.remove(0);
        let mut f = std::fs::File::from(fd);
        let mut buf = [0u8; 256];
        while out.iter().filter(|&&b| b == b'\n').count() < 2 {
            let n = f.read(&mut buf).unwrap();
            assert!(n > 0);
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8(out)
            .unwrap()
            .split_whitespace()
            .map(|s| s.parse().unwrap())
            .collect()
    };
    assert!(pids.iter().all(|&p| alive(p)));
    send_signal(child.pidfd.as_fd(), 0, true).unwrap();
    send_signal(child.pidfd.as_fd(), libc::SIGKILL, true).unwrap();
    assert_eq!(
        wait_exit(&child.pidfd, T),
        ExitStatus::Signal(libc::SIGKILL)
    );
    assert!(
        eventually(T, || pids.iter().all(|&p| !alive(p))),
        "group members survived"
    );
    // After the leader was reaped the group probe still works: ESRCH once all are gone.
    assert!(eventually(T, || send_signal(child.pidfd.as_fd(), 0, true)
        .err()
        .and_then(|e| e.raw_os_error())
        == Some(libc::ESRCH)));
}

#[test]
fn pid_names_the_process_until_it_is_reaped() {
    let _g = serial();
    let child = start(sh("sleep 30").stdout(Stdio::Null).stderr(Stdio::Null));
    assert_eq!(pid(child.pidfd.as_fd()), Some(child.pid));
    send_signal(child.pidfd.as_fd(), libc::SIGKILL, false).unwrap();
    assert_eq!(
        wait_exit(&child.pidfd, T),
        ExitStatus::Signal(libc::SIGKILL)
    );
    assert_eq!(pid(child.pidfd.as_fd()), None, "reaped");
}
