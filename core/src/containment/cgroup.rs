//! Operations on one cgroup directory (v2, and the few that v1 shares): create, write a
//! control file, list members, kill, watch, remove.
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use super::ContainmentError;

pub(crate) fn io_err(path: &Path, source: io::Error) -> ContainmentError {
    ContainmentError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `content` to a control file in one `write`.
pub(crate) fn write_file(path: &Path, content: &str) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
    f.write_all(content.as_bytes())
}

/// Creates a cgroup directory. Task cgroups are named after task ids, which a pool never
/// reuses, so an existing directory of the same name is an error, not something to remove.
pub(crate) fn make_dir(path: &Path) -> Result<(), ContainmentError> {
    std::fs::create_dir(path).map_err(|e| io_err(path, e))
}

/// One `rmdir`, never a wait: `EBUSY` (members still exiting, or cgroups below it) comes
/// back to the caller, who retries later (the pool's cleanup thread does). A directory that
/// is already gone is fine.
pub(crate) fn remove_dir(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes a cgroup and every cgroup below it, deepest first (best effort: the first
/// error is returned after trying the rest).
pub(crate) fn remove_tree(path: &Path) -> io::Result<()> {
    let mut first_err = None;
    for sub in subdirs(path) {
        if let Err(e) = remove_tree(&sub) {
            first_err.get_or_insert(e);
        }
    }
    if let Err(e) = remove_dir(path) {
        first_err.get_or_insert(e);
    }
    first_err.map_or(Ok(()), Err)
}

fn subdirs(path: &Path) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(path) else {
        return Vec::new();
    };
    dir.flatten()
        .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
        .map(|e| e.path())
        .collect()
}

/// Pids in `cgroup.procs` of `dir` and of every cgroup below it.
pub(crate) fn procs_recursive(dir: &Path) -> io::Result<Vec<i32>> {
    let mut out = Vec::new();
    collect_procs(dir, &mut out, true)?;
    Ok(out)
}

fn collect_procs(dir: &Path, out: &mut Vec<i32>, top: bool) -> io::Result<()> {
    match std::fs::read_to_string(dir.join("cgroup.procs")) {
        Ok(text) => out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok())),
        // A sub-cgroup that vanished meanwhile is not an error; the task's own is.
        Err(e) if !top && e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    for sub in subdirs(dir) {
        collect_procs(&sub, out, false)?;
    }
    Ok(())
}

/// `populated` from `cgroup.events` (v2).
pub(crate) fn populated(dir: &Path) -> io::Result<bool> {
    let text = std::fs::read_to_string(dir.join("cgroup.events"))?;
    parse_populated(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "no `populated` in cgroup.events",
        )
    })
}

pub(crate) fn parse_populated(text: &str) -> Option<bool> {
    text.lines()
        .find_map(|l| match l.trim().strip_prefix("populated ") {
            Some("0") => Some(false),
            Some(_) => Some(true),
            None => None,
        })
}

/// `populated` read through an open `cgroup.events` (from offset 0, so the same fd can be
/// read again after each notification; reading it also re-arms its `POLLPRI`).
pub(crate) fn populated_fd(events: std::os::fd::BorrowedFd<'_>) -> io::Result<bool> {
    let mut buf = [0u8; 256];
    let n = rustix::io::pread(events, &mut buf, 0)?;
    let text = std::str::from_utf8(&buf[..n]).unwrap_or_default();
    parse_populated(text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "no `populated` in cgroup.events",
        )
    })
}

/// How many processes `cgroup.procs` of `dir` lists (this cgroup only, not the ones below).
pub(crate) fn procs_count(dir: &Path) -> io::Result<u64> {
    let text = std::fs::read_to_string(dir.join("cgroup.procs"))?;
    Ok(text.lines().filter(|l| !l.trim().is_empty()).count() as u64)
}

/// `cgroup.events` opened for a `POLLPRI` watch.
pub(crate) fn open_events(dir: &Path) -> io::Result<OwnedFd> {
    Ok(OwnedFd::from(std::fs::File::open(
        dir.join("cgroup.events"),
    )?))
}

/// The cgroup directory as an `O_PATH` fd for `CLONE_INTO_CGROUP`.
pub(crate) fn open_dir(dir: &Path) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    Ok(rustix::fs::open(
        dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// `cgroup.kill` (Linux 5.14+): SIGKILL to every process of the subtree. `Ok(false)` when
/// the kernel has no `cgroup.kill`.
pub(crate) fn kill(dir: &Path) -> io::Result<bool> {
    match write_file(&dir.join("cgroup.kill"), "1") {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Signals every member of the v2 cgroup at `dir` (and below) through pidfds, and returns
/// how many processes were signalled.
///
/// `cgroup.procs` numbers its members in the PID namespace of the reader, which is the one
/// `pidfd_open` takes pids in, whatever `/proc` is mounted (a supervisor in its own PID
/// namespace that kept the outer `/proc` would find other processes, or none, there; pid 0
/// stands for a member outside the reader's namespace). A pid can be reused by an unrelated
/// process between the read and `pidfd_open`, so the members are read again once every pidfd
/// is open, and a pidfd is signalled only if its pid is still listed: the pinned process keeps
/// its pid while it lives, so a listed pid means the pinned process is that member (and a
/// pinned process that has died meanwhile gives ESRCH). Never `kill(2)` on a bare pid.
pub(crate) fn signal_members(dir: &Path, signal: i32) -> io::Result<u64> {
    let mut pinned = Vec::new();
    for pid in procs_recursive(dir)? {
        if pid <= 0 {
            continue;
        }
        match crate::sys::pidfd::open(pid) {
            Ok(fd) => pinned.push((pid, fd)),
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => continue,
            Err(e) => return Err(e),
        }
    }
    if pinned.is_empty() {
        return Ok(0);
    }
    let members: std::collections::HashSet<i32> = procs_recursive(dir)?.into_iter().collect();
    let mut count = 0;
    for (pid, pidfd) in &pinned {
        if !members.contains(pid) {
            continue;
        }
        match crate::sys::pidfd::send_signal(pidfd.as_fd(), signal, false) {
            Ok(()) => count += 1,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(count)
}

/// The path of `child` below `parent` as `/proc/<pid>/cgroup` shows it.
pub(crate) fn join_rel(parent: &str, child: &str) -> String {
    if parent.ends_with('/') {
        format!("{parent}{child}")
    } else {
        format!("{parent}/{child}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_events_and_paths() {
        assert_eq!(parse_populated("populated 1\nfrozen 0\n"), Some(true));
        assert_eq!(parse_populated("populated 0\nfrozen 0\n"), Some(false));
        assert_eq!(parse_populated("frozen 0\n"), None);
        assert_eq!(join_rel("/", "a"), "/a");
        assert_eq!(join_rel("/x", "a"), "/x/a");
    }
}
