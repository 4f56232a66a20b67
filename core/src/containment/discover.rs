//! Where the cgroup hierarchies are, from `/proc/self/mountinfo` and `/proc/self/cgroup`
//! (never guessed): the v2 mount and the v1 mounts of the `pids` and `memory` controllers,
//! each with the directory of the cgroup the supervisor sits in.
use std::path::PathBuf;

/// One mounted hierarchy and our place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    /// Where it is mounted.
    pub(crate) mount_point: PathBuf,
    /// The supervisor's cgroup, as a directory (mount point + path inside the mount).
    pub(crate) own_dir: PathBuf,
    /// The supervisor's cgroup path as `/proc/<pid>/cgroup` shows it (e.g. `/` or
    /// `/user.slice/x.scope`); a child cgroup `c` of `own_dir` shows as `own_path + "/c"`.
    pub(crate) own_path: String,
}

/// What this host offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Hierarchies {
    pub(crate) v2: Option<Hierarchy>,
    pub(crate) v1_pids: Option<Hierarchy>,
    pub(crate) v1_memory: Option<Hierarchy>,
}

/// One line of mountinfo that is a cgroup mount.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupMount {
    root: String,
    mount_point: PathBuf,
    v2: bool,
    /// v1 only: the controllers (super options such as `pids`, `memory`, `name=systemd`).
    controllers: Vec<String>,
}

/// Reads `/proc/self/mountinfo` and `/proc/self/cgroup`.
pub(crate) fn discover() -> std::io::Result<Hierarchies> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")?;
    Ok(from_texts(&mountinfo, &cgroup))
}

/// The parsing part of [`discover`], on the texts of the two files.
pub(crate) fn from_texts(mountinfo: &str, proc_cgroup: &str) -> Hierarchies {
    let mounts: Vec<CgroupMount> = mountinfo.lines().filter_map(parse_mount_line).collect();
    // /proc/self/cgroup: "id:controllers:path"; v2 is "0::path".
    let mut v2_path: Option<&str> = None;
    let mut v1_paths: Vec<(Vec<&str>, &str)> = Vec::new();
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if id == "0" && ctrls.is_empty() {
            v2_path = Some(path);
        } else {
            v1_paths.push((ctrls.split(',').collect(), path));
        }
    }

    let mut out = Hierarchies::default();
    if let Some(m) = mounts.iter().find(|m| m.v2) {
        out.v2 = Some(hierarchy(m, v2_path.unwrap_or("/")));
    }
    for (controller, slot) in [("pids", &mut out.v1_pids), ("memory", &mut out.v1_memory)] {
        let Some(m) = mounts
            .iter()
            .find(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))
        else {
            continue;
        };
        let path = v1_paths
            .iter()
            .find(|(ctrls, _)| ctrls.contains(&controller))
            .map(|(_, p)| *p)
            .unwrap_or("/");
        *slot = Some(hierarchy(m, path));
    }
    out
}

/// Our cgroup in mount `m`, given our path from `/proc/self/cgroup`.
fn hierarchy(m: &CgroupMount, path: &str) -> Hierarchy {
    // The path is relative to the hierarchy's root; the mount shows the subtree at `root`.
    // Outside that subtree (e.g. "/../.." across cgroup namespaces) we use the mount point.
    let root = m.root.trim_end_matches('/');
    let inside = if root.is_empty() {
        Some(path)
    } else if path == root {
        Some("/")
    } else {
        path.strip_prefix(root).filter(|rest| rest.starts_with('/'))
    };
    let (own_dir, own_path) = match inside {
        Some(rel) if !rel.split('/').any(|c| c == "..") => {
            let rel_trimmed = rel.trim_start_matches('/');
            let dir = if rel_trimmed.is_empty() {
                m.mount_point.clone()
            } else {
                m.mount_point.join(rel_trimmed)
            };
            (dir, path.to_owned())
        }
        _ => (m.mount_point.clone(), root_path(root)),
    };
    Hierarchy {
        mount_point: m.mount_point.clone(),
        own_dir,
        own_path,
    }
}

fn root_path(root: &str) -> String {
    if root.is_empty() {
        "/".to_owned()
    } else {
        root.to_owned()
    }
}

/// Parses one mountinfo line if it is a cgroup or cgroup2 mount.
/// Format: `id parent maj:min root mount_point options [optional...] - fstype source super_options`.
fn parse_mount_line(line: &str) -> Option<CgroupMount> {
    let (left, right) = line.split_once(" - ")?;
    let mut l = left.split(' ');
    let _id = l.next()?;
    let _parent = l.next()?;
    let _dev = l.next()?;
    let root = unescape(l.next()?);
    let mount_point = PathBuf::from(unescape(l.next()?));
    let mut r = right.split(' ');
    let fstype = r.next()?;
    let _source = r.next()?;
    let super_options = r.next().unwrap_or("");
    match fstype {
        "cgroup2" => Some(CgroupMount {
            root,
            mount_point,
            v2: true,
            controllers: Vec::new(),
        }),
        "cgroup" => Some(CgroupMount {
            root,
            mount_point,
            v2: false,
            controllers: super_options.split(',').map(str::to_owned).collect(),
        }),
        _ => None,
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'\\' {
            if let Some(&[d0, d1, d2]) = b.get(i + 1..i + 4) {
                let oct = |d: u8| {
                    if (b'0'..=b'7').contains(&d) {
                        Some(u32::from(d - b'0'))
                    } else {
                        None
                    }
                };
                if let (Some(a), Some(m), Some(z)) = (oct(d0), oct(d1), oct(d2)) {
                    if let Ok(v) = u8::try_from(a * 64 + m * 8 + z) {
                        out.push(v);
                        i += 4;
                        continue;
                    }
                }
            }
        }
        out.push(c);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime shared:5 - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CG: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/f90a
1:cpu:/
0::/
";

    #[test]
    fn hybrid_host() {
        let h = from_texts(HYBRID, HYBRID_CG);
        let v2 = h.v2.unwrap();
        assert_eq!(v2.own_dir, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(v2.own_path, "/");
        let pids = h.v1_pids.unwrap();
        assert_eq!(pids.own_dir, PathBuf::from("/sys/fs/cgroup/pids"));
        let mem = h.v1_memory.unwrap();
        assert_eq!(
            mem.own_dir,
            PathBuf::from("/sys/fs/cgroup/memory/process_api/f90a")
        );
        assert_eq!(mem.own_path, "/process_api/f90a");
    }

    #[test]
    fn pure_v2_host() {
        let mi = "25 1 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
        let h = from_texts(mi, "0::/user.slice/user-1000.slice/session-2.scope\n");
        let v2 = h.v2.unwrap();
        assert_eq!(
            v2.own_dir,
            PathBuf::from("/sys/fs/cgroup/user.slice/user-1000.slice/session-2.scope")
        );
        assert_eq!(v2.own_path, "/user.slice/user-1000.slice/session-2.scope");
        assert!(h.v1_pids.is_none() && h.v1_memory.is_none());
    }

    #[test]
    fn container_with_mount_root_and_escapes() {
        // A bind of a subtree (root /docker/abc) at a path with a space.
        let mi = "50 40 0:30 /docker/abc /sys/fs/my\\040cgroup rw - cgroup2 cgroup2 rw\n\
                  51 40 0:31 /docker/abc /sys/fs/pids rw - cgroup cgroup rw,pids,cpu\n";
        let h = from_texts(mi, "3:cpu,pids:/docker/abc/sub\n0::/docker/abc\n");
        let v2 = h.v2.unwrap();
        assert_eq!(v2.mount_point, PathBuf::from("/sys/fs/my cgroup"));
        assert_eq!(v2.own_dir, PathBuf::from("/sys/fs/my cgroup"));
        let pids = h.v1_pids.unwrap();
        assert_eq!(pids.own_dir, PathBuf::from("/sys/fs/pids/sub"));
        // Outside the mounted subtree: fall back to the mount point.
        let h = from_texts(mi, "0::/../../elsewhere\n");
        assert_eq!(h.v2.unwrap().own_dir, PathBuf::from("/sys/fs/my cgroup"));
    }

    #[test]
    fn no_cgroups_and_garbage_do_not_panic() {
        assert_eq!(from_texts("", ""), Hierarchies::default());
        let junk = "x\n - \n1 2 3\n1 2 3 4 5 6 - cgroup2\n\\\\\\0 \\777 - cgroup2 x y\n";
        let _ = from_texts(junk, "::\n:\n0::\n");
        assert_eq!(unescape("a\\040b\\\\c\\"), "a b\\\\c\\");
        assert_eq!(unescape("\\999\\04"), "\\999\\04");
    }
}
