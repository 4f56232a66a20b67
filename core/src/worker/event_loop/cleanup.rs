//! After a release: the task's cgroup removed through the ring, orphans reaped.

use super::*;

impl Worker {
    /// Removes a released task's cgroup. A single v2 directory goes through the ring
    /// (`IORING_OP_UNLINKAT`), so the kernel's teardown does not hold up this loop during a
    /// kill-all; anything more is removed here and now.
    pub(super) fn remove_cgroup(&mut self, id: TaskId, tree: TaskContainment) {
        let tree = match tree.into_single_dir() {
            Ok(None) => return,
            Ok(Some(dir)) => match CString::new(dir.into_os_string().into_vec()) {
                Ok(path) => {
                    self.rmdir_seq = self.rmdir_seq.wrapping_add(1);
                    let user_data = pack(Tag {
                        slot: self.rmdir_seq,
                        generation: 0,
                        op: OpTag::Rmdir,
                    });
                    if let Err(e) = self.ring.push_rmdir(path, user_data) {
                        tracing::error!(error = %e, "cannot submit to the ring");
                    }
                    return;
                }
                Err(_) => return, // A cgroup path never holds a NUL byte.
            },
            Err(tree) => tree,
        };
        if let Err(e) = tree.remove() {
            tracing::warn!(task = %id, error = %e, "cannot remove the task's cgroup");
        }
    }

    /// A cgroup removal completed; on failure (the task made cgroups below its own, or the
    /// kernel still counted it busy) it is removed here, with retries.
    pub(super) fn removed(&mut self, completion: Completion) {
        let Some(path) = self.ring.take_path(completion.user_data) else {
            return;
        };
        if completion.result >= 0 || completion.result == -libc::ENOENT {
            return;
        }
        let dir = std::path::PathBuf::from(std::ffi::OsString::from_vec(path.into_bytes()));
        if let Err(e) = crate::containment::remove_task_dir(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a task's cgroup");
        }
    }

    // ---- orphans --------------------------------------------------------------------

    /// Reaps orphaned descendants: soon after one of this worker's runners died (they may
    /// have left orphans), at most every `ORPHAN_SCAN_MIN_GAP`; and, on worker 0, every
    /// `ORPHAN_SCAN_INTERVAL` for orphans of trees that outlive their runner.
    pub(super) fn scan_orphans(&mut self) {
        let since = self.last_orphan_scan.elapsed();
        let due = (self.orphans_pending && since >= ORPHAN_SCAN_MIN_GAP)
            || (self.periodic_orphan_scan && since >= ORPHAN_SCAN_INTERVAL);
        if !due {
            return;
        }
        self.orphans_pending = false;
        self.last_orphan_scan = Instant::now();
        let Some(runners) = &self.runners else { return };
        let reaped = runners.with(|is_runner| crate::containment::reap_orphans(is_runner));
        if reaped > 0 {
            tracing::debug!(reaped, "reaped orphaned descendants");
        }
    }
}
