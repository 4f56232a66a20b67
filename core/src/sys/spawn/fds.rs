//! The child's descriptors, made in the supervisor before the clone: capture pipes,
//! channel socketpairs, `/dev/null`, and the `cgroup.procs` files the child writes itself
//! into. Also the fd limit the child gets back.
//!
//! Every fd made here is close-on-exec in the supervisor, so no spawn's fd reaches another
//! spawn's program. The child ends, and the supervisor's write ends (stdin, channels), are
//! also guarded (see `guarded`): a child closes them before anything that can block, so
//! one stuck before exec holds nothing another task waits on. Sources are moved above the
//! highest target here, so the child's `dup3`s never clobber one another.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::guarded;
use super::prepare::Prepared;
use crate::containment::Placement;
use crate::error::SpawnError;
use crate::spec::Stdio;
use crate::task::StreamId;

/// The soft `RLIMIT_NOFILE` before the pool raised it (its rings' fixed-file tables are
/// capped by it), given back to every child: programs that `select()` or size tables from
/// it expect the usual value (Go does the same since 1.19).
static ORIGINAL_NOFILE_SOFT: OnceLock<u64> = OnceLock::new();

/// Records the soft `RLIMIT_NOFILE` as it is now, if nothing recorded it before. Call it
/// before raising the limit; children then get this value back.
pub(crate) fn remember_nofile_limit() {
    ORIGINAL_NOFILE_SOFT.get_or_init(|| {
        rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX)
    });
}

/// The `(soft, hard)` limit a child must set, when ours differs from the original soft one.
fn nofile_for_child() -> Option<(u64, u64)> {
    let original = *ORIGINAL_NOFILE_SOFT.get()?;
    let now = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let (soft, hard) = (
        now.current.unwrap_or(u64::MAX),
        now.maximum.unwrap_or(u64::MAX),
    );
    (soft != original).then_some((original.min(hard), hard))
}

/// Opens `/dev/null` (close-on-exec: children get their own copy by `dup3`).
pub(crate) fn open_dev_null() -> Result<OwnedFd, Errno> {
    rustix::fs::open(c"/dev/null", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
}

/// The descriptors of one spawn.
pub(super) struct Plan {
    /// Supervisor ends of the captured streams, in `StreamId` order.
    pub(super) streams: Vec<(StreamId, OwnedFd)>,
    /// Child ends and `/dev/null`: the child dups them; closed here after the clone.
    child_ends: Vec<OwnedFd>,
    /// (source, target) pairs for the child; every source above every target.
    pub(super) redirects: Vec<(RawFd, RawFd)>,
    /// `cgroup.procs` files the child writes itself into.
    cgroup_procs: Vec<OwnedFd>,
    pub(super) cgroup_procs_raw: Vec<RawFd>,
    pub(super) nofile: Option<(u64, u64)>,
}

impl Plan {
    /// Makes the descriptors. `join_v2`: the child must write itself into the v2 cgroup
    /// (no `CLONE_INTO_CGROUP` with `clone(2)`). `null`: an open `/dev/null` to use, if the
    /// caller keeps one (else one is opened for this spawn).
    pub(super) fn new(
        prepared: &Prepared,
        placement: &Placement,
        join_v2: bool,
        null: Option<&OwnedFd>,
    ) -> Result<Plan, SpawnError> {
        let map = |e: Errno| SpawnError::from_errno(e.raw_os_error(), &prepared.program);
        // `F_DUPFD` answers EINVAL, not EMFILE, when no number at or above its minimum is
        // below RLIMIT_NOFILE: for us that is the same "out of descriptors".
        let dup_above = |fd: &OwnedFd, min: RawFd| -> Result<OwnedFd, Errno> {
            rustix::io::fcntl_dupfd_cloexec(fd, min).map_err(|e| match e {
                Errno::INVAL => Errno::MFILE,
                e => e,
            })
        };
        let max_target = prepared.channels_sorted.last().copied().unwrap_or(2).max(2);
        // Moves `fd` above every target (a rare collision with a channel's number).
        let above = |fd: OwnedFd| -> Result<OwnedFd, SpawnError> {
            if fd.as_raw_fd() > max_target {
                return Ok(fd);
            }
            dup_above(&fd, max_target + 1).map_err(map)
        };

        let mut plan = Plan {
            streams: Vec::with_capacity(3 + prepared.channels.len()),
            child_ends: Vec::with_capacity(3 + prepared.channels.len()),
            redirects: Vec::with_capacity(3 + prepared.channels.len()),
            cgroup_procs: Vec::new(),
            cgroup_procs_raw: Vec::new(),
            nofile: nofile_for_child(),
        };

        let needs_null = [prepared.stdin, prepared.stdout, prepared.stderr].contains(&Stdio::Null);
        let null = match (needs_null, null) {
            (false, _) => None,
            (true, Some(kept)) if kept.as_raw_fd() > max_target => Some(kept.as_raw_fd()),
            (true, kept) => {
                // None kept, or its number is a channel's target: one for this spawn.
                let fd = match kept {
                    Some(kept) => dup_above(kept, max_target + 1),
                    None => open_dev_null().and_then(|fd| {
                        if fd.as_raw_fd() > max_target {
                            Ok(fd)
                        } else {
                            dup_above(&fd, max_target + 1)
                        }
                    }),
                }
                .map_err(map)?;
                let raw = fd.as_raw_fd();
                plan.push_child_end(fd);
                Some(raw)
            }
        };
        match (prepared.stdin, null) {
            (Stdio::Null, Some(n)) => plan.redirects.push((n, 0)),
            (Stdio::Capture, _) => {
                // The child reads the pipe; we keep its write end (stdin comes first in
                // the streams, as in `Prepared::streams`).
                let (r, w) =
                    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(map)?;
                let r = above(r)?;
                plan.redirects.push((r.as_raw_fd(), 0));
                plan.push_child_end(r);
                // Our write end: a stuck child holding it would keep the task from EOF.
                guarded::guard(w.as_raw_fd());
                plan.streams.push((StreamId::STDIN, w));
            }
            _ => {}
        }
        for (mode, target, id) in [
            (prepared.stdout, 1, StreamId::STDOUT),
            (prepared.stderr, 2, StreamId::STDERR),
        ] {
            match (mode, null) {
                (Stdio::Capture, _) => {
                    let (r, w) =
                        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(map)?;
                    let w = above(w)?;
                    plan.redirects.push((w.as_raw_fd(), target));
                    plan.push_child_end(w);
                    plan.streams.push((id, r));
                }
                (Stdio::Null, Some(n)) => plan.redirects.push((n, target)),
                _ => {}
            }
        }
        for (k, &target) in prepared.channels.iter().enumerate() {
            use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
            let (ours, theirs) = socketpair(
                AddressFamily::UNIX,
                SocketType::STREAM,
                SocketFlags::CLOEXEC,
                None,
            )
            .map_err(map)?;
            let theirs = above(theirs)?;
            plan.redirects.push((theirs.as_raw_fd(), target));
            plan.push_child_end(theirs);
            // Ours, as stdin's write end: the task sees EOF only when every copy is closed.
            guarded::guard(ours.as_raw_fd());
            plan.streams.push((StreamId::channel(k as u8), ours));
        }

        if let (true, Some(dir)) = (join_v2, &placement.cgroup_dir) {
            let fd = rustix::fs::openat(
                dir.as_fd(),
                c"cgroup.procs",
                OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| join_error(prepared, "cgroup.procs of the task's cgroup", e))?;
            plan.cgroup_procs.push(fd);
        }
        for path in &placement.v1_procs {
            let fd = rustix::fs::open(
                path.as_c_str(),
                OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| join_error(prepared, &path.to_string_lossy(), e))?;
            plan.cgroup_procs.push(fd);
        }
        plan.cgroup_procs_raw = plan.cgroup_procs.iter().map(|f| f.as_raw_fd()).collect();
        Ok(plan)
    }

    /// The fds this plan guards: child ends, and the supervisor's write ends.
    #[cfg(test)]
    pub(super) fn guarded_fds(&self) -> Vec<RawFd> {
        let mut out: Vec<RawFd> = self.child_ends.iter().map(|f| f.as_raw_fd()).collect();
        out.extend(
            self.streams
                .iter()
                .filter(|(id, _)| *id != StreamId::STDOUT && *id != StreamId::STDERR)
                .map(|(_, f)| f.as_raw_fd()),
        );
        out
    }

    /// A child end in flight: guarded until the supervisor closes its copy, so that no
    /// other spawn's child holds it while stuck before exec.
    fn push_child_end(&mut self, fd: OwnedFd) {
        guarded::guard(fd.as_raw_fd());
        self.child_ends.push(fd);
    }

    /// Closes the supervisor's copies of what the child now holds.
    pub(super) fn close_child_ends(&mut self) {
        for fd in &self.child_ends {
            guarded::unguard(fd.as_raw_fd());
        }
        self.child_ends.clear();
        self.cgroup_procs.clear();
        self.cgroup_procs_raw.clear();
    }
}

/// A plan dropped before its streams were handed out (a failed spawn): nothing it made stays
/// guarded.
impl Drop for Plan {
    fn drop(&mut self) {
        for fd in self
            .child_ends
            .iter()
            .chain(self.streams.iter().map(|(_, fd)| fd))
        {
            guarded::unguard(fd.as_raw_fd());
        }
    }
}

fn join_error(prepared: &Prepared, what: &str, e: Errno) -> SpawnError {
    match e {
        Errno::MFILE | Errno::NFILE => SpawnError::from_errno(e.raw_os_error(), &prepared.program),
        _ => SpawnError::Setup {
            step: "joining the task's cgroup",
            source: std::io::Error::new(
                std::io::Error::from(e).kind(),
                format!("cannot open {what}: {e}"),
            ),
        },
    }
}
