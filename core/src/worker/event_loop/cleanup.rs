//! After a release: the task's cgroup removed off the loop, orphans reaped.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use super::*;
use crate::worker::cleanup_thread::Job;

impl<D: Driver> Worker<D> {
    /// Removes a released task's cgroup without blocking the loop: a single v2 directory
    /// through the driver where it can (io_uring's `UNLINKAT`), anything else on the pool's
    /// cleanup thread.
    pub(super) fn remove_cgroup(&mut self, id: TaskId, tree: TaskContainment) {
        let dir = match tree.into_single_dir() {
            Ok(None) => return,
            Ok(Some(dir)) => dir,
            Err(tree) => {
                self.cleanup.submit(Job::RemoveTree(tree));
                return;
            }
        };
        let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else {
            // A cgroup path never holds a NUL byte.
            tracing::error!(task = %id, dir = %dir.display(), "cgroup path with a NUL byte");
            return;
        };
        self.rmdir_seq = self.rmdir_seq.wrapping_add(1);
        let user_data = pack(Tag {
            slot: self.rmdir_seq,
            generation: 0,
            op: OpTag::Rmdir,
        });
        if let Err(path) = self.driver.remove_dir(path, user_data) {
            self.cleanup.submit(Job::RemoveDir(path_of(path)));
        }
    }

    /// A removal by the driver ended; on failure (the task made cgroups below its own, or
    /// the kernel still counted it busy) the cleanup thread removes it, with retries.
    pub(super) fn removed(&mut self, path: CString, result: Result<(), i32>) {
        match result {
            Ok(()) | Err(libc::ENOENT) => {}
            Err(_) => self.cleanup.submit(Job::RemoveDir(path_of(path))),
        }
    }

    // ---- orphans --------------------------------------------------------------------

    /// Reaps the pool's orphans (and kills its escapers whose task ended): soon after one of this worker's runners died (they may
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
        let Some(orphans) = &self.orphans else { return };
        let report = orphans.sweep(Instant::now());
        if report.again_soon {
            self.orphans_pending = true;
        }
        if report.reaped > 0 || report.killed > 0 {
            tracing::debug!(
                reaped = report.reaped,
                killed = report.killed,
                "swept the pool's orphans"
            );
        }
    }
}

fn path_of(path: CString) -> PathBuf {
    PathBuf::from(OsString::from_vec(path.into_bytes()))
}
