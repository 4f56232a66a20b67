//! Cgroups left behind by a supervisor that died without cleaning up (SIGKILL, OOM kill, a
//! stopped container): `PDEATHSIG` ends its task runners, but their descendants live on in
//! the dead pool's cgroups. A new pool kills them and removes those cgroups when it starts,
//! so a crashed supervisor's tree is gone at the latest when the next one starts.
//!
//! A pool is dead when nobody holds the `flock` on its directory (see `ownership`): that
//! holds across PID namespaces, so a pool in `unshare --pid` never kills a live host pool's
//! tasks, and a crashed namespaced pool is swept by the next pool wherever it runs.
//!
//! The sweep never waits: it writes `cgroup.kill` and hands the directory to the pool's
//! [`Remover`], which removes it once its processes are gone.

use std::path::Path;

use super::discover::Hierarchies;
use super::removal::{Removal, Remover};
use super::{cgroup, ownership};

/// Kills and schedules the removal of every dead pool cgroup in the places where pools are
/// created. Returns how many dead pool cgroups it found.
pub(crate) fn sweep(h: &Hierarchies, remover: &Remover) -> usize {
    let mut found = 0;
    // v2 first: the members of a dead pool's v1 directories (limits on a hybrid host) are in
    // its v2 task cgroups too, and only v2 has `cgroup.kill`.
    for hierarchy in [&h.v2, &h.v1_pids, &h.v1_memory].into_iter().flatten() {
        found += sweep_dir(&hierarchy.own_dir, remover);
        if hierarchy.own_dir != hierarchy.mount_point {
            found += sweep_dir(&hierarchy.mount_point, remover);
        }
    }
    found
}

fn sweep_dir(base: &Path, remover: &Remover) -> usize {
    let Ok(entries) = std::fs::read_dir(base) else {
        return 0;
    };
    let mut found = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_str().is_some_and(ownership::is_pool_name) {
            continue;
        }
        let dir = entry.path();
        let Some(lock) = ownership::take_if_dead(&dir) else {
            continue; // a live pool, or another sweeper is on it
        };
        found += 1;
        match cgroup::kill(&dir) {
            Ok(_) => {}
            // A v1 directory has no cgroup.kill (NotFound is Ok(false)); anything else is
            // worth a line, but the removal is still tried.
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot kill a dead pool's cgroup")
            }
        }
        tracing::info!(dir = %dir.display(), "a dead supervisor's cgroup: its processes were killed; removing it");
        remover.remove_later(
            Removal {
                dirs: vec![dir],
                _held: Some(lock),
            },
            true,
        );
    }
    found
}
