//! Who is left: every child a scenario starts carries `PIDRING_BENCH_TAG=<tag>` in its
//! environment, inherited by its whole tree (forks, `spawn=`, `setsid` escapees). A scan of
//! `/proc/*/environ` finds them all, wherever they were reparented; this is how survivors are
//! counted, and how every backend's leftovers are killed and reaped after a scenario.

use std::time::{Duration, Instant};

/// The environment variable that marks a scenario's processes.
pub const TAG_VAR: &str = "PIDRING_BENCH_TAG";

#[derive(Debug, Default, Clone)]
pub struct Census {
    /// Live (not zombie) processes carrying the tag.
    pub alive: Vec<i32>,
}

/// Scans `/proc` for processes whose environment holds `TAG_VAR=tag`.
pub fn census(tag: &str) -> Census {
    let needle = format!("{TAG_VAR}={tag}\0").into_bytes();
    let me = std::process::id() as i32;
    let mut out = Census::default();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        // A zombie's environ reads empty: it is dead, only waiting to be reaped.
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.windows(needle.len()).any(|w| w == needle.as_slice()) && !is_zombie(pid) {
            out.alive.push(pid);
        }
    }
    out
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
        })
        .unwrap_or(true)
}

/// Makes this process a child subreaper, so orphans of a scenario's trees come back here to
/// be reaped by [`cleanup`] instead of lingering under PID 1.
pub fn become_subreaper() {
    crate::sys::become_subreaper();
}

/// Reaps every exited child of this process without blocking. Only call it when no backend
/// is still waiting for its own children.
pub fn reap_all() -> u64 {
    let mut n = 0;
    while crate::sys::reap_any().is_some() {
        n += 1;
    }
    n
}

/// SIGKILLs every live process carrying the tag (through pidfds; a pid that just went away
/// is skipped).
pub fn kill_tagged(tag: &str) -> usize {
    let c = census(tag);
    for &pid in &c.alive {
        crate::sys::kill_via_pidfd(pid);
    }
    c.alive.len()
}

/// Kills and reaps whatever of `tag` is still alive, until none is or `limit` passes.
/// Returns how many were still alive at the end (0 is the only good answer).
pub fn cleanup(tag: &str, limit: Duration) -> usize {
    let until = Instant::now() + limit;
    loop {
        let killed = kill_tagged(tag);
        reap_all();
        if killed == 0 {
            return 0;
        }
        if Instant::now() >= until {
            return census(tag).alive.len();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
