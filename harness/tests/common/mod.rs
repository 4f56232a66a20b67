//! Shared pieces of the `pidring` binary's integration tests: running the built binary with a
//! deadline, reading `--report`, and checking (and cleaning up) processes recorded in pidfiles.
#![allow(dead_code)]

pub mod pty;

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_pidring");

/// A fresh directory for one test, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "pidring-run-test-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
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

/// Kills, on drop, every process recorded in the pidfiles it watches that is still alive (so a
/// failed assertion leaves nothing behind), and the pidring children it was given.
#[derive(Default)]
pub struct Guard {
    pidfiles: Vec<PathBuf>,
    children: Vec<u32>,
}

impl Guard {
    pub fn pidfile(&mut self, p: &Path) {
        self.pidfiles.push(p.to_owned());
    }
    pub fn child(&mut self, pid: u32) {
        self.children.push(pid);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for f in &self.pidfiles {
            for pid in read_pids(f) {
                if alive(pid) {
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        for &pid in &self.children {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

pub fn read_pids(path: &Path) -> Vec<i32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Whether `pid` is a live helper process. A zombie counts as alive only while it is our own
/// child (not yet reaped by us); a zombie of someone else (e.g. reparented to init and about to
/// be reaped) is dead.
pub fn alive(pid: i32) -> bool {
    let Ok(stat) = std::fs::read(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let Some(close) = stat.iter().rposition(|&b| b == b')') else {
        return false;
    };
    let rest = String::from_utf8_lossy(&stat[close + 1..]).into_owned();
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next().unwrap_or("");
    let ppid: u32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    // A reused pid is some other program: only helpers count.
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let is_helper = cmdline.split(|&b| b == 0).any(|a| a == b"helper");
    if !is_helper && state != "Z" {
        return false;
    }
    state != "Z" || ppid == std::process::id()
}

/// Waits until none of `pids` is alive, up to `limit`. Returns those still alive.
pub fn wait_dead(pids: &[i32], limit: Duration) -> Vec<i32> {
    let deadline = Instant::now() + limit;
    loop {
        let left: Vec<i32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `path` holds at least `n` pids.
pub fn wait_pids(path: &Path, n: usize, limit: Duration) -> Vec<i32> {
    let deadline = Instant::now() + limit;
    loop {
        let pids = read_pids(path);
        if pids.len() >= n || Instant::now() >= deadline {
            return pids;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// What one run of the binary gave.
#[derive(Debug)]
pub struct Run {
    pub code: Option<i32>,
    pub signal: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
}

impl Run {
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// Fails the test on a panic exit (101) or a panic message.
    pub fn assert_no_panic(&self, what: &str) {
        assert_ne!(
            self.code,
            Some(101),
            "{what}: pidring panicked: {}",
            self.stderr_text()
        );
        assert!(
            !self.stderr_text().contains("panicked"),
            "{what}: panic message: {}",
            self.stderr_text()
        );
        assert!(
            self.signal.is_none(),
            "{what}: pidring died of signal {:?}",
            self.signal
        );
    }
}

pub fn command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Starts the binary with piped output (read by threads); wait with [`finish`].
pub struct Running {
    pub child: Child,
    started: Instant,
    out: Option<std::thread::JoinHandle<Vec<u8>>>,
    err: Option<std::thread::JoinHandle<Vec<u8>>>,
}

pub fn start(cmd: Command) -> Running {
    start_with(cmd, true)
}

/// Like [`start`]; with `read_stdout` false, `child.stdout` is left for the test to use.
pub fn start_with(mut cmd: Command, read_stdout: bool) -> Running {
    let started = Instant::now();
    let mut child = cmd.spawn().expect("start pidring");
    let stdout = if read_stdout {
        child.stdout.take()
    } else {
        None
    };
    let out = stdout.map(|mut s| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = s.read_to_end(&mut v);
            v
        })
    });
    let err = child.stderr.take().map(|mut s| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = s.read_to_end(&mut v);
            v
        })
    });
    Running {
        child,
        started,
        out,
        err,
    }
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
    /// Waits for the exit (killing pidring after `limit`, which fails the test).
    pub fn finish(mut self, limit: Duration) -> Run {
        use std::os::unix::process::ExitStatusExt;
        let deadline = self.started + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                break s;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!("pidring did not exit within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let elapsed = self.started.elapsed();
        let stdout = self
            .out
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        let stderr = self
            .err
            .take()
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default();
        Run {
            code: status.code(),
            signal: status.signal(),
            stdout,
            stderr,
            elapsed,
        }
    }
}

/// Runs `pidring ARGS` to completion (at most `limit`).
pub fn run<I, S>(args: I, limit: Duration) -> Run
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    start(command(args)).finish(limit)
}

/// `pidring run --report REPORT OPTIONS -- pidring helper STEPS`.
pub fn run_helper(report: &Path, options: &[&str], steps: &[&str], limit: Duration) -> Run {
    run(helper_args(report, options, steps), limit)
}

pub fn helper_args(report: &Path, options: &[&str], steps: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["run".into(), "--report".into(), report.into()];
    args.extend(options.iter().map(OsString::from));
    args.push("--".into());
    args.push(BIN.into());
    args.push("helper".into());
    args.extend(steps.iter().map(OsString::from));
    args
}

pub fn report(path: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("report {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("report {}: {e}: {text}", path.display()))
}

/// FNV-1a, 64 bits.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// FNV-1a of the helper's pattern of `n` bytes (byte i is `b'a' + i % 26`), computed here.
pub fn pattern_hash(n: usize) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for i in 0..n {
        h ^= u64::from(b'a' + (i % 26) as u8);
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

/// A directory holding symlinks named `timeout` and `tini` to the pidring binary (the
/// busybox-style personalities), first on the `PATH` of [`sh`].
pub struct Personalities {
    pub dir: TempDir,
}

impl Personalities {
    pub fn new(name: &str) -> Personalities {
        let dir = TempDir::new(name);
        for link in ["timeout", "tini"] {
            std::os::unix::fs::symlink(BIN, dir.path(link)).expect("symlink");
        }
        Personalities { dir }
    }
    pub fn timeout(&self) -> PathBuf {
        self.dir.path("timeout")
    }
    pub fn tini(&self) -> PathBuf {
        self.dir.path("tini")
    }
    /// `sh -c SCRIPT` in the directory, with the personalities first on PATH and `$PIDRING`
    /// naming the binary.
    pub fn sh(&self, script: &str) -> Command {
        let mut cmd = Command::new("sh");
        let path = format!(
            "{}:{}",
            self.dir.0.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.arg("-c")
            .arg(script)
            .current_dir(&self.dir.0)
            .env("PATH", path)
            .env("PIDRING", BIN)
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }
}

/// Processes whose command line contains `marker` (a unique word a test puts in argv), as
/// seen in this `/proc`.
pub fn with_marker(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if !zombie
            && cmdline
                .split(|&b| b == 0)
                .any(|a| String::from_utf8_lossy(a).contains(marker))
        {
            out.push(pid);
        }
    }
    out
}

/// Kills (SIGKILL) every process whose command line holds `marker`: cleanup after a failed
/// assertion.
pub fn kill_marked(marker: &str) {
    for pid in with_marker(marker) {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `T`, `Z`...), if the process exists.
pub fn proc_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// `SigIgn`, `SigBlk` (and others) of a `/proc/<pid>/status` text, as bit masks.
pub fn sig_masks(status: &str) -> std::collections::HashMap<String, u64> {
    status
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            if !k.starts_with("Sig") && !k.starts_with("Shd") {
                return None;
            }
            Some((k.to_string(), u64::from_str_radix(v.trim(), 16).ok()?))
        })
        .collect()
}

pub fn bit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}
