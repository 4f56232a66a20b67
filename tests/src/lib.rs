//! Shared helpers of the integration tests: where the `pidring helper` test program is,
//! collecting a pool's events per task (checking their order), and the leak checks every
//! test ends with (fds, zombies, surviving descendants).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use pidring::{
    Backend, ChannelEnd, Event, ExitStatus, Outcome, Pool, PoolBuilder, StreamId, TaskId,
    WriteError,
};

thread_local! {
    /// The driver the pools of the running test use (see [`on_both_backends!`]).
    static BACKEND: std::cell::Cell<Backend> = const { std::cell::Cell::new(Backend::Auto) };
}

/// `Pool::builder()` on the driver of the running test.
pub fn builder() -> PoolBuilder {
    Pool::builder().backend(BACKEND.with(|b| b.get()))
}

/// Runs `test` with the pools it builds through [`builder`] on `backend`.
pub fn on_backend<R>(backend: Backend, test: impl FnOnce() -> R) -> R {
    let old = BACKEND.with(|b| b.replace(backend));
    let result = test();
    BACKEND.with(|b| b.set(old));
    result
}

/// Turns each named `fn name()` of the file into two tests, `uring::name` and
/// `epoll::name`, whose pools (built with [`builder`]) run on that driver.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $(#[test] fn $name() { $crate::on_backend(pidring::Backend::Uring, super::$name) })*
        }
        mod epoll {
            $(#[test] fn $name() { $crate::on_backend(pidring::Backend::Epoll, super::$name) })*
        }
    };
}

/// Tests in one binary share the process's fd table and children: they run one at a time.
/// Also turns on the library's logs when `PIDRING_TEST_LOG` holds a filter (e.g. `debug`).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    static LOG: OnceLock<()> = OnceLock::new();
    LOG.get_or_init(|| {
        if let Ok(filter) = std::env::var("PIDRING_TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
                .with_writer(std::io::stderr)
                .try_init();
        }
    });
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// The test program (`pidring helper`'s code, built by this crate, so always current).
/// Cargo builds a package's binaries before running its integration tests, next to them:
/// the test runs from `target/<profile>/deps/`, the helper sits in `target/<profile>/`.
pub fn pidring_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("current_exe");
        let bin = exe
            .parent()
            .and_then(Path::parent)
            .expect("test binary lives in target/<profile>/deps")
            .join("pidring-helper");
        assert!(
            bin.exists(),
            "{} is missing: run the tests through cargo",
            bin.display()
        );
        bin
    })
}

/// A spec running `pidring helper STEPS...`.
pub fn helper(steps: &[&str]) -> pidring::TaskSpec {
    pidring::TaskSpec::new(pidring_bin())
        .arg("helper")
        .args(steps)
}

/// The byte pattern of the helper's `out=N` / `err=N`.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Everything one task produced, in order.
#[derive(Debug, Default)]
pub struct TaskRecord {
    pub output: HashMap<StreamId, Vec<u8>>,
    /// Frames received per framed channel, in order.
    pub messages: HashMap<u8, Vec<Vec<u8>>>,
    /// How each framed channel ended, and its unsent bytes.
    pub channel_closed: HashMap<u8, (ChannelEnd, u64)>,
    /// How stdin closed, and its unwritten bytes.
    pub stdin_closed: Option<(Option<WriteError>, u64)>,
    pub exited: Option<ExitStatus>,
    pub outcome: Option<Outcome>,
}

impl TaskRecord {
    pub fn stdout(&self) -> &[u8] {
        self.output
            .get(&StreamId::STDOUT)
            .map_or(&[], Vec::as_slice)
    }

    pub fn stderr(&self) -> &[u8] {
        self.output
            .get(&StreamId::STDERR)
            .map_or(&[], Vec::as_slice)
    }

    pub fn outcome(&self) -> &Outcome {
        self.outcome.as_ref().expect("task has no Done")
    }
}

/// Collects events until every task in `tasks` is `Done`, asserting the per-task order
/// the pool promises: every `Output` and `Message` (a channel's `ChannelClosed` after its
/// messages), then one `Exited`, then one `Done`, last; `StdinClosed` once, before `Done`.
pub fn collect(pool: &Pool, tasks: &[TaskId], limit: Duration) -> HashMap<TaskId, TaskRecord> {
    let mut records: HashMap<TaskId, TaskRecord> =
        tasks.iter().map(|t| (*t, TaskRecord::default())).collect();
    let mut remaining = tasks.len();
    let deadline = Instant::now() + limit;
    while remaining > 0 {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = match pool.events().recv_timeout(left) {
            Ok(event) => event,
            Err(_) => panic!(
                "{remaining} of {} tasks not Done within {limit:?}",
                tasks.len()
            ),
        };
        let record = records.entry(event.task()).or_default();
        assert!(record.outcome.is_none(), "event after Done: {event:?}");
        match event {
            Event::Output { stream, bytes, .. } => {
                assert!(record.exited.is_none(), "Output after Exited");
                record
                    .output
                    .entry(stream)
                    .or_default()
                    .extend_from_slice(&bytes);
            }
            Event::Message { channel, frame, .. } => {
                assert!(record.exited.is_none(), "Message after Exited");
                assert!(
                    !record.channel_closed.contains_key(&channel),
                    "Message after ChannelClosed"
                );
                record
                    .messages
                    .entry(channel)
                    .or_default()
                    .push(frame.into_vec());
            }
            Event::ChannelClosed {
                channel,
                end,
                unsent,
                ..
            } => {
                assert!(record.exited.is_none(), "ChannelClosed after Exited");
                let old = record.channel_closed.insert(channel, (end, unsent));
                assert!(old.is_none(), "two ChannelClosed for channel {channel}");
            }
            Event::StdinClosed {
                error, unwritten, ..
            } => {
                assert!(record.stdin_closed.is_none(), "two StdinClosed events");
                record.stdin_closed = Some((error, unwritten));
            }
            Event::Exited { status, .. } => {
                assert!(record.exited.is_none(), "two Exited events");
                record.exited = Some(status);
            }
            Event::Done { task, outcome } => {
                if tasks.contains(&task) {
                    remaining -= 1;
                }
                record.outcome = Some(outcome);
            }
            other => panic!("an event this collector does not know: {other:?}"),
        }
    }
    records
}

/// Number of open fds of this process.
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Parsed `/proc/<pid>/stat`: (state, ppid).
pub fn proc_stat(pid: i32) -> Option<(char, i32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Children of this process that are zombies (nobody reaped them).
pub fn our_zombies() -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|(state, ppid)| state == 'Z' && ppid == me))
        .collect()
}

/// Whether `pid` is a running process (a zombie counts as dead).
pub fn alive(pid: i32) -> bool {
    proc_stat(pid).is_some_and(|(state, _)| state != 'Z' && state != 'X')
}

/// Waits up to `limit` for `condition`.
pub fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Pids recorded by the helper's `pidfile=` steps.
pub fn read_pids(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("pidring-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn dir(&self) -> &Path {
        &self.0
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Kills (through pidfds) every recorded pid still alive when dropped, so a failing test
/// leaves nothing behind.
pub struct Reaper(pub Vec<PathBuf>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for file in &self.0 {
            for pid in read_pids(file) {
                kill_by_pidfd(pid);
            }
        }
    }
}

/// SIGKILL through a pidfd, after checking the pid still names a live process.
pub fn kill_by_pidfd(pid: i32) {
    // SAFETY: plain syscalls with integer arguments; the fd is closed right after.
    unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, pid, 0) as i32;
        if fd >= 0 {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd,
                libc::SIGKILL,
                std::ptr::null::<u8>(),
                0,
            );
            libc::close(fd);
        }
    }
}

/// Every test ends here: no fd of ours left open (within 5 s: the pool's threads close theirs
/// as they stop) and no zombie child.
pub fn assert_clean(fds_before: usize) {
    assert!(
        eventually(Duration::from_secs(5), || fd_count() <= fds_before),
        "fd leak: {} open, {fds_before} before",
        fd_count()
    );
    assert_eq!(our_zombies(), Vec::<i32>::new(), "zombies left");
}

/// This process's resident set, in KiB (`VmRSS`), or 0 if unreadable.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
