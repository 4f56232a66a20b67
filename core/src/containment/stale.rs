//! Cgroups left behind by a supervisor that died without cleaning up (SIGKILL, OOM kill,
//! power loss of a container): `PDEATHSIG` ends its task runners, but their descendants live
//! on in the dead pool's cgroups. A new pool kills and removes them when it starts, so a
//! crashed supervisor loses its tree at the latest when the next one starts.

use std::path::Path;
use std::time::{Duration, Instant};

use super::cgroup;
use super::discover::Hierarchies;

/// Kills and removes every `pidring-<pid>-<n>` cgroup whose `<pid>` no longer runs, in the
/// places where pools are created. Returns how many pool cgroups were removed.
pub(crate) fn sweep(h: &Hierarchies) -> usize {
    let mut removed = 0;
    for hierarchy in [&h.v2, &h.v1_pids, &h.v1_memory].into_iter().flatten() {
        removed += sweep_dir(&hierarchy.own_dir);
        if hierarchy.own_dir != hierarchy.mount_point {
            removed += sweep_dir(&hierarchy.mount_point);
        }
    }
    removed
}

fn sweep_dir(base: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(base) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(owner_pid) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue; // A live supervisor (or a reused pid: leave it alone to be safe).
        }
        let dir = entry.path();
        // v2 has cgroup.kill for the whole subtree; a v1 hierarchy's members are also in
        // the v2 tree of the same pool, which is killed first (v2 sorts first above).
        let _ = cgroup::kill(&dir);
        let deadline = Instant::now() + Duration::from_secs(1);
        while cgroup::populated(&dir).unwrap_or(false) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        match cgroup::remove_tree(&dir) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "removed the cgroup of a dead supervisor (its processes were killed)");
                removed += 1;
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove the cgroup of a dead supervisor")
            }
        }
    }
    removed
}

/// `pidring-<pid>-<n>` → `<pid>`.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("pidring-")?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok().filter(|p| *p > 0)
}

#[cfg(test)]
mod tests {
    use super::owner_pid;

    #[test]
    fn only_pool_names_are_recognised() {
        assert_eq!(owner_pid("pidring-123-0"), Some(123));
        assert_eq!(owner_pid("pidring-123-x"), None);
        assert_eq!(owner_pid("pidring-0-1"), None);
        assert_eq!(owner_pid("task-5"), None);
        assert_eq!(owner_pid("pidring--1"), None);
        assert_eq!(owner_pid("pidring-99999999999999999999-1"), None);
    }
}
