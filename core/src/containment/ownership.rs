//! Who owns a pool's cgroup directory, in a way every PID namespace agrees on.
//!
//! A pool directory is named `pidring-<pid>-<n>-ns<inode>` (the creator's pid, a per-process
//! counter, and the inode of the creator's PID namespace, so two pools in different
//! namespaces never pick the same name), and its owner holds an exclusive `flock` on the
//! directory for as long as the pool lives. Liveness is that lock, never `/proc/<pid>`: a pid
//! means nothing in another PID namespace (`unshare --pid`, a container sharing the host's
//! cgroups), where the old check took a live pool for dead, or a dead one for alive.
//!
//! - The kernel drops the lock when the last fd of the open file description closes, so a
//!   supervisor killed with SIGKILL, OOM-killed or whose container stopped loses it at once.
//! - `flock` works on cgroupfs directories and is a property of the inode, so it is seen
//!   through every mount of the hierarchy (bind mounts, a fresh `mount -t cgroup2` in a
//!   cgroup namespace) and from every PID namespace (checked by the tests).
//! - Limit: the lock fd is close-on-exec, but a `fork()` without `exec` (Python's
//!   `multiprocessing` with the fork start method) shares it; while such a child lives, a
//!   dead pool's directory counts as alive and is not swept. The error is on the safe side:
//!   nothing alive is ever killed.
//! - Limit: a killed supervisor's runners die when its spawner thread exits (`PDEATHSIG`),
//!   but the lock goes only with its fd table, when its last thread has exited. A pool that
//!   starts in between sees the lock held and leaves the directory to the next start; a
//!   restart that waits for the old process's exit (systemd, Docker, a shell loop) is never
//!   in between.
//!
//! Creation without a race: `mkdir`, open, `flock(LOCK_EX | LOCK_NB)`, then check the path
//! still names the locked inode. A sweeper that took the lock in between (and may have
//! removed the directory) makes the creator try the next name.
//!
//! Names of the old format (`pidring-<pid>-<n>`, owned by pid, no lock) are left alone: their
//! owners hold no lock, so the lock cannot tell whether they live.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use rustix::fs::{FlockOperation, Mode, OFlags};

/// Pools made by this process so far.
static POOLS: AtomicU64 = AtomicU64::new(0);

/// How many names a creator tries before it reports the last error.
const NAME_ATTEMPTS: usize = 16;

/// A pool directory and the lock that says its owner lives.
#[derive(Debug)]
pub(crate) struct OwnedDir {
    pub(crate) path: PathBuf,
    _lock: OwnedFd,
}

/// The inode of this process's PID namespace (0 if `/proc` cannot tell).
fn pid_namespace() -> u64 {
    static NS: OnceLock<u64> = OnceLock::new();
    *NS.get_or_init(|| {
        std::fs::metadata("/proc/self/ns/pid")
            .map(|m| m.ino())
            .unwrap_or(0)
    })
}

/// A fresh pool name for this process.
pub(crate) fn next_name() -> String {
    format!(
        "pidring-{}-{}-ns{}",
        std::process::id(),
        POOLS.fetch_add(1, Ordering::Relaxed),
        pid_namespace()
    )
}

/// Whether `name` is a pool directory of the current format.
pub(crate) fn is_pool_name(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("pidring-") else {
        return false;
    };
    let mut parts = rest.split('-');
    let (Some(pid), Some(n), Some(ns), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits(pid) && digits(n) && ns.strip_prefix("ns").is_some_and(digits)
}

/// Opens a directory for locking (read-only, close-on-exec).
fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(false)` when someone else holds it.
fn try_lock(fd: &OwnedFd) -> io::Result<bool> {
    match rustix::fs::flock(fd.as_fd(), FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(true),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Creates and locks a pool directory in `base`, named `name` (or, if that name is taken,
/// a fresh one). The `mkdir` error is returned as is, for the caller to classify.
pub(crate) fn create(base: &Path, name: String) -> io::Result<OwnedDir> {
    let mut name = name;
    let mut last_err = None;
    for _ in 0..NAME_ATTEMPTS {
        let path = base.join(&name);
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            // A dead pool of the same name (another namespace, or one the sweep could not
            // remove): take another name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                last_err = Some(e);
                name = next_name();
                continue;
            }
            Err(e) => return Err(e),
        }
        match lock_new(&path) {
            Ok(Some(lock)) => return Ok(OwnedDir { path, _lock: lock }),
            // A sweeper got there first and removes it: take another name.
            Ok(None) => {
                last_err = Some(io::Error::from_raw_os_error(libc::EEXIST));
                name = next_name();
            }
            Err(e) => {
                let _ = std::fs::remove_dir(&path);
                return Err(e);
            }
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EEXIST)))
}

/// Locks a directory this process just made. `Ok(None)` if a sweeper holds it or removed it.
fn lock_new(path: &Path) -> io::Result<Option<OwnedFd>> {
    let fd = match open_dir(path) {
        Ok(fd) => fd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if !try_lock(&fd)? {
        return Ok(None);
    }
    // Still the directory at `path` (not one a sweeper removed before we locked it)?
    let locked = rustix::fs::fstat(&fd)?;
    match std::fs::metadata(path) {
        Ok(m) if m.ino() == locked.st_ino && m.dev() == locked.st_dev => Ok(Some(fd)),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The sweeper's side: the directory's lock if its owner is gone (the caller now holds it
/// and may kill and remove), `None` if a live pool (or another sweeper) holds it or it
/// vanished.
pub(crate) fn take_if_dead(path: &Path) -> Option<OwnedFd> {
    let fd = open_dir(path).ok()?;
    match try_lock(&fd) {
        Ok(true) => Some(fd),
        Ok(false) => None,
        Err(e) => {
            tracing::debug!(dir = %path.display(), error = %e, "cannot test a pool cgroup's lock");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_of_the_current_format_only() {
        let name = next_name();
        assert!(is_pool_name(&name), "{name}");
        assert!(is_pool_name("pidring-123-0-ns4026531836"));
        assert!(
            !is_pool_name("pidring-123-0"),
            "the old format is left alone"
        );
        assert!(!is_pool_name("pidring-123-0-4026531836"));
        assert!(!is_pool_name("pidring-123-x-ns1"));
        assert!(!is_pool_name("pidring--0-ns1"));
        assert!(!is_pool_name("pidring-1-0-ns"));
        assert!(!is_pool_name("pidring-1-0-ns1-2"));
        assert!(!is_pool_name("task-5"));
    }

    /// The lock is the owner: a second open file description cannot take it while the
    /// first holds it, and can once it is closed.
    #[test]
    fn lock_on_a_plain_directory_tells_liveness() {
        let base = std::env::temp_dir().join(format!("pidring-own-{}", std::process::id()));
        std::fs::create_dir_all(&base).unwrap();
        let owned = create(&base, next_name()).unwrap();
        assert!(take_if_dead(&owned.path).is_none(), "a live owner's dir");
        let path = owned.path.clone();
        drop(owned);
        let taken = take_if_dead(&path).expect("a dead owner's dir");
        assert!(take_if_dead(&path).is_none(), "held by the first sweeper");
        drop(taken);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
