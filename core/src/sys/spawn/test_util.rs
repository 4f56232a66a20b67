//! Helpers shared by the system layer's and containment's tests (real processes).

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::containment::Placement;
use crate::spec::TaskSpec;
use crate::sys::spawn::{self, Child, SpawnMethod};
use crate::task::{ExitStatus, StreamId};

static PROCESS_TESTS: Mutex<()> = Mutex::new(());

thread_local! {
    /// The method `spawn::spawn` uses on this thread (tests only); `None`: the probed one.
    static METHOD: std::cell::Cell<Option<SpawnMethod>> = const { std::cell::Cell::new(None) };
}

/// Runs `f` once with each spawn method (on this thread).
pub(crate) fn each_method(f: impl Fn(SpawnMethod)) {
    for method in [SpawnMethod::Clone3, SpawnMethod::Clone] {
        METHOD.set(Some(method));
        f(method);
    }
    METHOD.set(None);
}

/// Runs `f` with `method` on this thread (for tests that spawn from threads of their own).
pub(crate) fn with_method<T>(method: SpawnMethod, f: impl FnOnce() -> T) -> T {
    let old = METHOD.replace(Some(method));
    let out = f();
    METHOD.set(old);
    out
}

/// The method `spawn::spawn` uses now on this thread.
pub(crate) fn current_method() -> SpawnMethod {
    METHOD.get().unwrap_or_else(|| spawn::spawn_method().0)
}

/// Serialises the tests that count fds, look for zombies, reap by pid or change
/// process-wide state (subreaper): they would see each other's children otherwise.
pub(crate) fn serial() -> MutexGuard<'static, ()> {
    PROCESS_TESTS.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn no_placement() -> Placement {
    Placement {
        cgroup_dir: None,
        v1_procs: Vec::new(),
    }
}

pub(crate) fn start(spec: TaskSpec) -> Child {
    let prepared = spawn::prepare(&spec).expect("prepare");
    spawn::spawn(&prepared, &no_placement()).expect("spawn")
}

pub(crate) fn sh(script: &str) -> TaskSpec {
    TaskSpec::new("/bin/sh").arg("-c").arg(script)
}

/// Waits (poll on the pidfd) for the child to exit and reaps it.
pub(crate) fn wait_exit(pidfd: &OwnedFd, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = crate::sys::pidfd::reap(pidfd.as_fd()).expect("reap") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "child did not exit within {timeout:?}"
        );
        let mut fds = [rustix::event::PollFd::new(
            pidfd,
            rustix::event::PollFlags::IN,
        )];
        let _ = rustix::event::poll(
            &mut fds,
            Some(&rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 20_000_000,
            }),
        );
    }
}

/// Reads a stream to EOF.
pub(crate) fn read_all(child: &mut Child, id: StreamId) -> Vec<u8> {
    let pos = child
        .streams
        .iter()
        .position(|(s, _)| *s == id)
        .expect("stream");
    let (_, fd) = child.streams.remove(pos);
    let mut file = std::fs::File::from(fd);
    let mut out = Vec::new();
    file.read_to_end(&mut out).expect("read");
    out
}

pub(crate) fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Our children (any thread's) that are zombies.
pub(crate) fn zombie_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    for pid in pids_with(|_, state, ppid| state == 'Z' && ppid == me) {
        out.push(pid);
    }
    out
}

/// Pids whose `/proc/<pid>/stat` (pid, state, ppid) matches.
pub(crate) fn pids_with(f: impl Fn(i32, char, i32) -> bool) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some((state, ppid)) = stat_of(pid) {
            if f(pid, state, ppid) {
                out.push(pid);
            }
        }
    }
    out
}

/// (state, ppid) from `/proc/<pid>/stat`.
pub(crate) fn stat_of(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut it = rest.split(' ');
    let state = it.next()?.chars().next()?;
    let ppid = it.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Whether `pid` exists and is not a zombie.
pub(crate) fn alive(pid: i32) -> bool {
    matches!(stat_of(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// Waits until `cond` holds, up to `timeout`.
pub(crate) fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Lets children waiting at the test stall point go on to exec.
pub(crate) fn release_stall() {
    spawn::TEST_STALL.store(0, std::sync::atomic::Ordering::Release);
    // SAFETY: FUTEX_WAKE on a static word: wakes every waiter, touches nothing else.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            spawn::TEST_STALL.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
        );
    }
}
