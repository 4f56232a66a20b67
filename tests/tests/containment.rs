//! Whole-tree containment on real process trees, in both modes: when pidring ends a task,
//! nothing of its tree survives (issue 4). Each test records the pids of the tree through
//! the helper's `pidfile=` step and checks `/proc` afterwards; a guard kills leftovers if an
//! assertion fails.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pidring::{
    BuildError, Containment, ContainmentError, ContainmentKind, Pool, Reason, SpawnError, TaskSpec,
};
use pidring_tests::*;

const LIMIT: Duration = Duration::from_secs(60);

/// A pool in `mode`, or `None` (with the reason printed) where this host cannot do it.
/// On CI, as root, a missing cgroup v2 is a failure, not a skip.
fn pool_in(mode: Containment) -> Option<Pool> {
    match builder().workers(2).containment(mode).build() {
        Ok(pool) => Some(pool),
        Err(BuildError::Containment(e @ ContainmentError::NoCgroupV2(_))) => {
            let root = rustix_is_root();
            if std::env::var_os("CI").is_some() && root {
                panic!("CI runs as root and must have a writable cgroup v2: {e}");
            }
            eprintln!("SKIP: cgroup containment unavailable here ({e}); root: {root}");
            None
        }
        Err(e) => panic!("cannot build a pool in {mode:?} mode: {e}"),
    }
}

fn rustix_is_root() -> bool {
    // SAFETY: getuid cannot fail.
    unsafe { libc::getuid() == 0 }
}

fn all_dead(pids: &[i32]) -> bool {
    pids.iter().all(|pid| !alive(*pid))
}

fn assert_all_dead(pids: &[i32], what: &str) {
    assert!(
        eventually(Duration::from_secs(2), || all_dead(pids)),
        "{what}: survivors {:?}",
        pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
}

/// 1. The Airflow case: the runner starts a child interpreter that keeps writing its ppid;
///    a terminate request ends both within the grace, and the grandchild never runs on with
///    ppid 1.
fn airflow_runner_and_its_interpreter_die_together(mode: Containment) {
    let Some(pool) = pool_in(mode) else { return };
    let dir = TempDir::new(&format!("airflow-{mode:?}"));
    let pids = dir.path("pids");
    let ppid_file = dir.path("ppid");
    let _reaper = Reaper(vec![pids.clone()]);
    let script = format!(
        "python3 -c 'import os, time\nwhile True:\n    open(\"{ppid}.tmp\", \"w\").write(str(os.getppid()))\n    os.rename(\"{ppid}.tmp\", \"{ppid}\")\n    time.sleep(0.01)\n' &\necho $! >> {pids}\necho $$ >> {pids}\nwait",
        ppid = ppid_file.display(),
        pids = pids.display()
    );
    let task = pool
        .spawn(
            TaskSpec::new("sh")
                .args(["-c", &script])
                .grace(Duration::from_secs(3)),
        )
        .unwrap();
    assert!(eventually(LIMIT, || read_pids(&pids).len() == 2 && ppid_file.exists()));
    let runner = task.pid() as i32;
    let recorded = read_pids(&pids);
    assert!(recorded.contains(&runner));
    let started = Instant::now();
    task.terminate().unwrap();
    let records = collect(&pool, &[task.id()], LIMIT);
    let outcome = records[&task.id()].outcome();
    assert_eq!(outcome.reason, Reason::Terminated);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "SIGTERM sufficed: no grace wait"
    );
    assert_all_dead(&recorded, "runner and interpreter");
    std::thread::sleep(Duration::from_millis(50));
    let last_ppid = std::fs::read_to_string(&ppid_file).unwrap_or_default();
    assert_eq!(
        last_ppid.trim(),
        runner.to_string(),
        "the interpreter ran on with another parent"
    );
    pool.shutdown();
}

/// 2. The runner exits while a grandchild holds its stdout for 60 s: `Done` comes after
///    drain + grace, the grandchild is dead, and the runner's output is complete.
fn runner_exits_while_grandchild_holds_stdout(mode: Containment) {
    let Some(pool) = pool_in(mode) else { return };
    let dir = TempDir::new(&format!("holder-{mode:?}"));
    let pids = dir.path("pids");
    let _reaper = Reaper(vec![pids.clone()]);
    let grandchild = format!("pidfile={};out=5;sleep=60000", pids.display());
    let task = pool
        .spawn(
            helper(&[
                "out=100000",
                &format!("spawn={grandchild}"),
                "sleep=100",
                "exit=0",
            ])
            .drain(Duration::from_millis(300))
            .grace(Duration::from_millis(500)),
        )
        .unwrap();
    let started = Instant::now();
    let records = collect(&pool, &[task.id()], LIMIT);
    let elapsed = started.elapsed();
    let record = &records[&task.id()];
    let outcome = record.outcome();
    assert_eq!(outcome.reason, Reason::DrainExpired);
    assert!(outcome.tree_signalled);
    assert!(outcome.descendants_killed >= 1, "{outcome:?}");
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    let mut expected = pattern(100_000);
    expected.extend_from_slice(b"abcde");
    assert_eq!(record.stdout().len(), expected.len());
    assert!(record.stdout() == expected, "runner output incomplete");
    assert_all_dead(&read_pids(&pids), "grandchild");
    pool.shutdown();
}

/// 3. A double-forked `setsid` daemon that closed its fds: killed in cgroup mode; in
///    process-group mode it escapes, which is the documented limit of that mode.
fn setsid_daemon(mode: Containment) {
    let Some(pool) = pool_in(mode) else { return };
    let dir = TempDir::new(&format!("daemon-{mode:?}"));
    let pids = dir.path("pids");
    let _reaper = Reaper(vec![pids.clone()]);
    let task = pool
        .spawn(
            helper(&[
                &format!("daemon=pidfile={};sleep=60000", pids.display()),
                "sleep=200",
                "exit=0",
            ])
            .drain(Duration::from_millis(200))
            .grace(Duration::from_millis(300)),
        )
        .unwrap();
    assert!(eventually(LIMIT, || !read_pids(&pids).is_empty()));
    let records = collect(&pool, &[task.id()], LIMIT);
    let daemon = read_pids(&pids);
    match pool.containment() {
        ContainmentKind::Cgroup => {
            assert_eq!(records[&task.id()].outcome().reason, Reason::DrainExpired);
            assert_all_dead(&daemon, "setsid daemon in cgroup mode");
        }
        ContainmentKind::ProcessGroup => {
            assert_eq!(records[&task.id()].outcome().reason, Reason::Exited(0));
            assert!(
                daemon.iter().all(|pid| alive(*pid)),
                "expected the documented limit: a setsid daemon escapes process-group mode"
            );
            eprintln!("process-group mode: the setsid daemon escaped, as documented; killing it");
        }
    }
    pool.shutdown();
}

/// 4. A tree that ignores SIGTERM gets SIGKILL after the grace.
fn sigterm_ignoring_tree_is_killed_after_grace(mode: Containment) {
    let Some(pool) = pool_in(mode) else { return };
    let dir = TempDir::new(&format!("stubborn-{mode:?}"));
    let pids = dir.path("pids");
    let _reaper = Reaper(vec![pids.clone()]);
    let pidfile = format!("pidfile={}", pids.display());
    let task = pool
        .spawn(
            helper(&[
                "ignore-term",
                &pidfile,
                &format!("spawn={pidfile};sleep=60000"),
                &format!("spawn={pidfile};sleep=60000"),
                "sleep=60000",
            ])
            .grace(Duration::from_millis(400)),
        )
        .unwrap();
    assert!(eventually(LIMIT, || read_pids(&pids).len() == 3));
    let started = Instant::now();
    task.terminate().unwrap();
    let records = collect(&pool, &[task.id()], LIMIT);
    let elapsed = started.elapsed();
    let outcome = records[&task.id()].outcome();
    assert_eq!(outcome.reason, Reason::Terminated);
    assert_eq!(outcome.status, pidring::ExitStatus::Signal(9));
    assert!(
        elapsed >= Duration::from_millis(400),
        "SIGKILL came before the grace: {elapsed:?}"
    );
    assert_all_dead(&read_pids(&pids), "SIGTERM-ignoring tree");
    pool.shutdown();
}

/// 4b. A `setsid()` child (as Python's `start_new_session=True` makes) that holds the
///     task's stdout, with forked children of its own, while its parent still runs: a
///     terminate ends it in both modes, without a subreaper (process-group mode finds it
///     from the main process). The main process ignores nothing; the escaper ignores
///     SIGTERM in the second round, after its parent died of it, so the SIGKILL after the
///     grace must reach it as remembered from the first signal.
fn setsid_child_of_a_live_parent_is_reached(mode: Containment) {
    let Some(pool) = pool_in(mode) else { return };
    for escaper_ignores_term in [false, true] {
        let dir = TempDir::new(&format!("setsid-child-{mode:?}-{escaper_ignores_term}"));
        let pids = dir.path("pids");
        let _reaper = Reaper(vec![pids.clone()]);
        let pidfile = format!("pidfile={}", pids.display());
        let ignore = if escaper_ignores_term {
            "ignore-term;"
        } else {
            ""
        };
        let task = pool
            .spawn(
                helper(&[
                    &pidfile,
                    &format!("spawn={ignore}setsid;{pidfile};forktree=2;sleep=60000"),
                    "sleep=60000",
                ])
                .grace(Duration::from_millis(300))
                .drain(Duration::from_secs(30)),
            )
            .unwrap();
        assert!(eventually(LIMIT, || read_pids(&pids).len() == 4));
        let started = Instant::now();
        task.terminate().unwrap();
        let records = collect(&pool, &[task.id()], LIMIT);
        let elapsed = started.elapsed();
        assert_eq!(records[&task.id()].outcome().reason, Reason::Terminated);
        assert_all_dead(&read_pids(&pids), "the setsid child and its children");
        // Not by the drain (30 s): the escaper died, so the pipe closed.
        assert!(
            elapsed < Duration::from_secs(10),
            "the task ended only after {elapsed:?}"
        );
    }
    pool.shutdown();
}

/// 5. A fork tree of 500 processes: all dead after a kill; prints kill-to-Done time.
fn five_hundred_process_tree(mode: Containment) {
    let Some(pool) = pool_in(mode) else { return };
    let dir = TempDir::new(&format!("tree-{mode:?}"));
    let pids = dir.path("pids");
    let _reaper = Reaper(vec![pids.clone()]);
    let task = pool
        .spawn(helper(&[
            &format!("pidfile={}", pids.display()),
            "forktree=500",
            "sleep=60000",
        ]))
        .unwrap();
    assert!(
        eventually(LIMIT, || read_pids(&pids).len() == 501),
        "tree incomplete"
    );
    let tree = read_pids(&pids);
    let started = Instant::now();
    task.kill().unwrap();
    let records = collect(&pool, &[task.id()], LIMIT);
    let elapsed = started.elapsed();
    assert_eq!(records[&task.id()].outcome().reason, Reason::Terminated);
    assert_all_dead(&tree, "500-process tree");
    eprintln!("{mode:?}: 500-process tree, kill to Done in {elapsed:.2?}");
    assert!(
        elapsed < Duration::from_secs(10),
        "kill to Done took {elapsed:?}"
    );
    pool.shutdown();
}

/// 7. A fork bomb under `pids_max = 50` is contained and the pool keeps serving.
fn fork_bomb_is_contained_by_pids_max(mode: Containment) {
    let Some(pool) = pool_in(mode) else { return };
    let dir = TempDir::new(&format!("bomb-{mode:?}"));
    let pids = dir.path("pids");
    let _reaper = Reaper(vec![pids.clone()]);
    let bomb = helper(&[
        &format!("pidfile={}", pids.display()),
        "forktree=5000",
        "sleep=60000",
    ])
    .pids_max(50);
    match pool.containment() {
        ContainmentKind::ProcessGroup => match pool.spawn(bomb) {
            Err(SpawnError::Containment(ContainmentError::ControllerMissing { .. })) => {
                eprintln!(
                    "process-group mode: pids_max is refused with a clear error, as documented"
                );
            }
            other => panic!("pids_max without a cgroup must be refused, got {other:?}"),
        },
        ContainmentKind::Cgroup => {
            let bomb = pool.spawn(bomb).unwrap();
            // The bomb's forks fail past the limit; the helper continues to its sleep.
            std::thread::sleep(Duration::from_millis(500));
            let forked = read_pids(&pids).len();
            assert!(forked <= 50, "the limit did not hold: {forked} processes");
            // The pool still serves other tasks meanwhile.
            let other = pool.spawn(helper(&["out=3", "exit=4"])).unwrap();
            let records = collect(&pool, &[other.id()], LIMIT);
            assert_eq!(records[&other.id()].outcome().reason, Reason::Exited(4));
            bomb.kill().unwrap();
            let records = collect(&pool, &[bomb.id()], LIMIT);
            assert_eq!(records[&bomb.id()].outcome().reason, Reason::Terminated);
            assert_all_dead(&read_pids(&pids), "fork bomb");
        }
    }
    pool.shutdown();
}

/// 6. The supervisor itself killed with SIGKILL: its task runners die within a second
///    (`PDEATHSIG`). Their own children survive the supervisor in its cgroups; in cgroup mode
///    the next pool that starts kills them and removes the dead supervisor's cgroups.
fn supervisor_death_takes_its_runners(mode: &str) {
    let _serial = serial();
    let bin = pidring_bin().parent().unwrap().join("mini-supervisor");
    let dir = TempDir::new(&format!("pdeath-{mode}"));
    let runners_file = dir.path("runners");
    let grandchildren_file = dir.path("grandchildren");
    let _reaper = Reaper(vec![runners_file.clone(), grandchildren_file.clone()]);
    let mut supervisor = std::process::Command::new(&bin)
        .args([mode, "4"])
        .arg(pidring_bin())
        .args([
            "helper",
            &format!("pidfile={}", runners_file.display()),
            &format!("spawn=pidfile={};sleep=60000", grandchildren_file.display()),
            "sleep=60000",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let supervisor_pid = supervisor.id() as i32;
    let ready = eventually(LIMIT, || {
        read_pids(&runners_file).len() == 4 && read_pids(&grandchildren_file).len() == 4
    });
    if !ready {
        let _ = supervisor.kill();
        let out = supervisor.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stderr.contains("no writable cgroup v2") && std::env::var_os("CI").is_none() {
            eprintln!("SKIP: {stderr}");
            return;
        }
        panic!("supervisor did not start its tasks: {stderr}");
    }
    let runners = read_pids(&runners_file);
    let grandchildren = read_pids(&grandchildren_file);
    supervisor.kill().unwrap();
    supervisor.wait().unwrap();
    assert!(
        eventually(Duration::from_secs(1), || all_dead(&runners)),
        "runners outlived their supervisor by more than 1 s: {:?}",
        runners.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
    );
    if mode == "cgroup" {
        // The next pool sweeps the dead supervisor's cgroups and what still ran in them.
        let pool = Pool::builder()
            .workers(1)
            .containment(Containment::Cgroup)
            .build()
            .unwrap();
        assert_all_dead(
            &grandchildren,
            "grandchildren of a dead supervisor after the sweep",
        );
        // Removal waits for the killed processes to leave (the pool's cleanup thread).
        assert!(
            eventually(Duration::from_secs(5), || stale_cgroups(supervisor_pid)
                .is_empty()),
            "left: {:?}",
            stale_cgroups(supervisor_pid)
        );
        drop(pool);
    } else {
        eprintln!(
            "process-group mode: the runners died with their supervisor; their children \
             ({} of them) outlive it, as documented — the test kills them",
            grandchildren.iter().filter(|p| alive(**p)).count()
        );
    }
}

/// Cgroup directories named after supervisor `pid`, anywhere in the cgroup mounts.
fn stale_cgroups(pid: i32) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, prefix: &str, found: &mut Vec<std::path::PathBuf>, depth: usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !path.is_dir() || depth > 6 {
                continue;
            }
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                found.push(path);
            } else {
                walk(&path, prefix, found, depth + 1);
            }
        }
    }
    let prefix = format!("pidring-{pid}-");
    let mut found = Vec::new();
    for root in [
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/pids",
        "/sys/fs/cgroup/memory",
    ] {
        walk(Path::new(root), &prefix, &mut found, 0);
    }
    found
}

/// Each test in both containment modes, on both drivers.
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {
        both_modes!(@mode cgroup, Containment::Cgroup, $($name),*);
        both_modes!(@mode process_group, Containment::ProcessGroup, $($name),*);
    };
    (@mode $mode:ident, $containment:expr, $($name:ident),*) => {
        mod $mode {
            use super::*;
            mod uring {
                use super::*;
                $(#[test] fn $name() { on_backend(pidring::Backend::Uring, || { let _serial = serial(); let fds = fd_count(); super::super::$name($containment); finish(fds); }) })*
            }
            mod epoll {
                use super::*;
                $(#[test] fn $name() { on_backend(pidring::Backend::Epoll, || { let _serial = serial(); let fds = fd_count(); super::super::$name($containment); finish(fds); }) })*
            }
        }
    };
}

fn finish(fds_before: usize) {
    assert!(
        eventually(Duration::from_secs(5), || fd_count() <= fds_before),
        "fd leak"
    );
    assert_eq!(our_zombies(), Vec::<i32>::new(), "zombies left");
    let ours = stale_cgroups(std::process::id() as i32);
    assert!(
        ours.is_empty(),
        "cgroups left after the pool was shut down: {ours:?}"
    );
}

both_modes!(
    host_children_stay_the_hosts,
    setsid_daemon_is_killed_by_a_subreaper_pool,
    airflow_runner_and_its_interpreter_die_together,
    runner_exits_while_grandchild_holds_stdout,
    setsid_daemon,
    sigterm_ignoring_tree_is_killed_after_grace,
    setsid_child_of_a_live_parent_is_reached,
    five_hundred_process_tree,
    fork_bomb_is_contained_by_pids_max,
);

#[test]
fn supervisor_killed_with_sigkill_takes_its_runners_cgroup() {
    supervisor_death_takes_its_runners("cgroup");
}

#[test]
fn supervisor_killed_with_sigkill_takes_its_runners_process_group() {
    supervisor_death_takes_its_runners("process-group");
}

// ---- the pool's orphans (PoolBuilder::subreaper) ------------------------------------------

/// A subreaper pool in `mode`. The test process stays a subreaper afterwards unless the test
/// calls [`stop_subreaper`], which every test here does before its leak checks.
fn subreaper_pool_in(mode: Containment) -> Option<Pool> {
    match builder()
        .workers(2)
        .containment(mode)
        .subreaper(true)
        .build()
    {
        Ok(pool) => Some(pool),
        Err(BuildError::Containment(e @ ContainmentError::NoCgroupV2(_))) => {
            if std::env::var_os("CI").is_some() && rustix_is_root() {
                panic!("CI runs as root and must have a writable cgroup v2: {e}");
            }
            eprintln!("SKIP: cgroup containment unavailable here ({e})");
            None
        }
        Err(e) => panic!("cannot build a subreaper pool in {mode:?} mode: {e}"),
    }
}

fn stop_subreaper() {
    pidring::containment::stop_being_subreaper().unwrap();
}

/// Issue 11, finding 9: while a subreaper pool runs and its tasks leave orphans behind (which
/// it reaps), children the host started itself stay the host's: `wait()` gets their status.
/// The old sweep reaped every zombie child that was not a runner, so `wait()` failed with
/// ECHILD.
fn host_children_stay_the_hosts(mode: Containment) {
    use std::os::unix::process::CommandExt;
    let Some(pool) = subreaper_pool_in(mode) else {
        return;
    };
    let dir = TempDir::new(&format!("host-children-{mode:?}"));
    let pids = dir.path("pids");
    let _reaper = Reaper(vec![pids.clone()]);
    // Exit before the tasks do, so their zombies wait through many sweeps.
    let mut in_session = std::process::Command::new("sh")
        .args(["-c", "exit 7"])
        .spawn()
        .unwrap();
    let mut in_group = std::process::Command::new("sh")
        .args(["-c", "exit 9"])
        .process_group(0)
        .spawn()
        .unwrap();
    // Tasks whose runners exit at once, leaving orphans that exit a little later.
    let orphan = format!("pidfile={};sleep=150", pids.display());
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            pool.spawn(
                helper(&[&format!("spawn={orphan}"), "exit=0"])
                    .stdout(pidring::Stdio::Null)
                    .stderr(pidring::Stdio::Null),
            )
            .unwrap()
        })
        .collect();
    let ids: Vec<_> = tasks.iter().map(|t| t.id()).collect();
    collect(&pool, &ids, LIMIT);
    let orphans = read_pids(&pids);
    assert_eq!(orphans.len(), 4);
    // The orphans came back to us and were reaped by the pool, while the host's zombies
    // stayed.
    assert!(
        eventually(Duration::from_secs(5), || orphans
            .iter()
            .all(|p| proc_stat(*p).is_none())),
        "the pool did not reap its orphans: {:?}",
        orphans
            .iter()
            .map(|p| (p, proc_stat(*p)))
            .collect::<Vec<_>>()
    );
    std::thread::sleep(Duration::from_millis(300)); // several more sweeps
    assert_eq!(in_session.wait().unwrap().code(), Some(7));
    assert_eq!(in_group.wait().unwrap().code(), Some(9));
    pool.shutdown();
    stop_subreaper();
}

/// Process-group mode with `subreaper(true)`: a double-forked `setsid` daemon, which the
/// group signal cannot reach, comes back to the subreaper and is killed once its task ends.
fn setsid_daemon_is_killed_by_a_subreaper_pool(mode: Containment) {
    let Some(pool) = subreaper_pool_in(mode) else {
        return;
    };
    let dir = TempDir::new(&format!("daemon-subreaper-{mode:?}"));
    let pids = dir.path("pids");
    let _reaper = Reaper(vec![pids.clone()]);
    let task = pool
        .spawn(
            helper(&[
                &format!("daemon=pidfile={};sleep=60000", pids.display()),
                "sleep=200",
                "exit=0",
            ])
            .drain(Duration::from_millis(200))
            .grace(Duration::from_millis(300)),
        )
        .unwrap();
    assert!(eventually(LIMIT, || !read_pids(&pids).is_empty()));
    let daemon = read_pids(&pids);
    assert!(alive(daemon[0]), "the daemon runs while its task does");
    collect(&pool, &[task.id()], LIMIT);
    assert!(
        eventually(Duration::from_secs(5), || daemon
            .iter()
            .all(|p| proc_stat(*p).is_none())),
        "{mode:?}: the setsid daemon outlived its task in a subreaper pool"
    );
    pool.shutdown();
    stop_subreaper();
}

// ---- stale pools across PID namespaces (issue 11, finding 2) ------------------------------

/// `unshare --pid --fork [--mount-proc] ARGS...`, or `None` (with the reason) where this
/// process may not make namespaces. CI runs as root and must be able to.
fn unshare_pid(mount_proc: bool) -> Option<std::process::Command> {
    let probe = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "true"])
        .status();
    match probe {
        Ok(s) if s.success() => {}
        other => {
            if std::env::var_os("CI").is_some() && rustix_is_root() {
                panic!("CI runs as root and must be able to run unshare --pid: {other:?}");
            }
            eprintln!("SKIP: cannot make a PID namespace here: {other:?}");
            return None;
        }
    }
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child"]);
    if mount_proc {
        cmd.arg("--mount-proc");
    }
    Some(cmd)
}

fn mini_supervisor() -> PathBuf {
    pidring_bin().parent().unwrap().join("mini-supervisor")
}

/// Pool directories of pidring (current format) at the top of the v2 hierarchy.
fn pool_dirs() -> Vec<PathBuf> {
    let Some(root) = v2_root() else {
        return Vec::new();
    };
    std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("pidring-") && name.contains("-ns")
        })
        .map(|e| e.path())
        .collect()
}

fn v2_root() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        if !right.starts_with("cgroup2 ") {
            return None;
        }
        Some(PathBuf::from(left.split(' ').nth(4)?))
    })
}

/// Pids (in our namespace) in `cgroup.procs` of `dir` and every cgroup below it.
fn procs_below(dir: &Path) -> Vec<i32> {
    let mut out: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(procs_below(&e.path()));
        }
    }
    out
}

/// Children of `pid`, from `/proc/<pid>/task/*/children`.
fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let text = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(
            text.split_whitespace()
                .filter_map(|s| s.parse::<i32>().ok()),
        );
    }
    out
}

fn pid_namespace_of(pid: i32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|m| m.ino())
}

/// A pool started in another PID namespace sweeps dead pools at start; it must take a live
/// pool of ours for live, though our pid means nothing there (with `--mount-proc` it does not
/// even exist in its `/proc`, which made the old pid-based sweep kill our tasks).
fn live_pool_survives_a_pool_in_another_pid_namespace(mount_proc: bool) {
    let Some(pool) = pool_in(Containment::Cgroup) else {
        return;
    };
    let Some(mut unshare) = unshare_pid(mount_proc) else {
        return;
    };
    let dir = TempDir::new(&format!("ns-live-{mount_proc}"));
    let pids = dir.path("pids");
    let _reaper = Reaper(vec![pids.clone()]);
    let pidfile = format!("pidfile={}", pids.display());
    let task = pool
        .spawn(helper(&[
            &pidfile,
            &format!("spawn={pidfile};sleep=60000"),
            "sleep=60000",
        ]))
        .unwrap();
    assert!(eventually(LIMIT, || read_pids(&pids).len() == 2));
    let ours = stale_cgroups(std::process::id() as i32);
    assert_eq!(ours.len(), 1, "{ours:?}");
    let out = unshare
        .arg(mini_supervisor())
        .args(["cgroup", "0"])
        .arg(pidring_bin())
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ready"),
        "the namespaced pool did not start: {out:?}"
    );
    for pid in read_pids(&pids) {
        assert!(
            alive(pid),
            "a pool in another PID namespace (mount_proc: {mount_proc}) killed our task's process {pid}"
        );
    }
    assert!(ours[0].is_dir(), "our live pool's cgroup was removed");
    task.kill().unwrap();
    collect(&pool, &[task.id()], LIMIT);
    assert_all_dead(&read_pids(&pids), "the task after its kill");
    pool.shutdown();
}

/// A supervisor in another PID namespace is SIGKILLed; its runners die (PDEATHSIG), their
/// children live on in its cgroups. Our next pool must find that pool dead (its lock is gone)
/// and kill and remove it. The old sweep looked up `/proc/<its pid in its namespace>` here,
/// which named some unrelated process of ours (or nothing), and never swept it.
fn crashed_pool_in_another_pid_namespace_is_swept(mount_proc: bool) {
    if pool_in(Containment::Cgroup).is_none() {
        return;
    }
    let Some(mut unshare) = unshare_pid(mount_proc) else {
        return;
    };
    // The namespace's init is a shell that outlives the supervisor (so the namespace, and the
    // grandchildren re-parented to its init, live on after the supervisor's death).
    let ns = unshare
        .args(["sh", "-c", "\"$0\" \"$@\" >/dev/null 2>&1 & exec sleep 600"])
        .arg(mini_supervisor())
        .args(["cgroup", "2"])
        .arg(pidring_bin())
        .args(["helper", "spawn=sleep=60000", "sleep=60000"])
        .spawn()
        .unwrap();
    let ns = NamespaceGuard(ns);
    // unshare → the namespace's init (sh, then sleep) → the supervisor.
    let mut init = 0;
    let mut supervisor = 0;
    assert!(
        eventually(LIMIT, || {
            init = children_of(ns.0.id() as i32).first().copied().unwrap_or(0);
            supervisor = children_of(init).first().copied().unwrap_or(0);
            init != 0 && supervisor != 0
        }),
        "the namespace did not start"
    );
    let ns_inode = pid_namespace_of(init).unwrap();
    let suffix = format!("-ns{ns_inode}");
    let mut pool_dir = PathBuf::new();
    assert!(
        eventually(LIMIT, || {
            match pool_dirs()
                .into_iter()
                .find(|d| d.to_string_lossy().ends_with(&suffix))
            {
                Some(d) => {
                    let n = procs_below(&d).len();
                    pool_dir = d;
                    n == 4
                }
                None => false,
            }
        }),
        "the namespaced pool did not start its 2 tasks and their children"
    );
    let tree = procs_below(&pool_dir);
    let _kill_tree = PidsGuard(tree.clone());
    kill_by_pidfd(supervisor);
    // Runners die with their supervisor; their children stay, in the dead pool's cgroup.
    assert!(
        eventually(LIMIT, || procs_below(&pool_dir).len() == 2),
        "runners outlived their supervisor: {:?}",
        procs_below(&pool_dir)
    );
    let survivors = procs_below(&pool_dir);
    assert!(survivors.iter().all(|p| alive(*p)));
    // The runners die when the supervisor's spawner thread exits, but its fd table (and the
    // pool's lock in it) goes only with its last thread: wait for that, as a restart by
    // systemd, Docker or a shell loop does by waiting for the exit.
    assert!(
        eventually(LIMIT, || threads_left(supervisor) == 0),
        "the killed supervisor's threads did not exit"
    );
    // Our next pool sweeps it.
    let pool = Pool::builder()
        .workers(1)
        .containment(Containment::Cgroup)
        .build()
        .unwrap();
    assert_all_dead(
        &survivors,
        "children of a crashed namespaced pool after the sweep",
    );
    assert!(
        eventually(Duration::from_secs(5), || !pool_dir.exists()),
        "the crashed namespaced pool's cgroup {} was not removed",
        pool_dir.display()
    );
    drop(pool);
}

/// Threads of `pid` that have not finished exiting (a zombie leader whose threads are all
/// gone counts 0: by then the process's fd table is closed).
fn threads_left(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("stat")).is_ok_and(|stat| {
                let state = stat
                    .rsplit_once(')')
                    .and_then(|(_, r)| r.trim_start().chars().next());
                !matches!(state, Some('Z' | 'X'))
            })
        })
        .count()
}

/// The `unshare` process: on drop, kills the namespace's processes (its init through a pidfd
/// takes everything in it) and reaps `unshare`, also when an assertion failed (a zombie of
/// ours would fail every later test's clean-up check).
struct NamespaceGuard(std::process::Child);

impl Drop for NamespaceGuard {
    fn drop(&mut self) {
        let unshare = self.0.id() as i32;
        for init in children_of(unshare) {
            kill_by_pidfd(init);
        }
        kill_by_pidfd(unshare);
        let _ = self.0.wait();
    }
}

struct PidsGuard(Vec<i32>);

impl Drop for PidsGuard {
    fn drop(&mut self) {
        for pid in &self.0 {
            if alive(*pid) {
                kill_by_pidfd(*pid);
            }
        }
    }
}

mod pid_namespaces {
    use super::*;

    fn run(mount_proc: bool, test: fn(bool)) {
        let _serial = serial();
        let fds = fd_count();
        test(mount_proc);
        finish(fds);
    }

    #[test]
    fn live_pool_survives_a_pool_in_another_pid_namespace() {
        run(
            false,
            super::live_pool_survives_a_pool_in_another_pid_namespace,
        );
    }

    #[test]
    fn live_pool_survives_a_pool_in_another_pid_namespace_with_its_own_proc() {
        run(
            true,
            super::live_pool_survives_a_pool_in_another_pid_namespace,
        );
    }

    #[test]
    fn crashed_pool_in_another_pid_namespace_is_swept() {
        run(false, super::crashed_pool_in_another_pid_namespace_is_swept);
    }

    #[test]
    fn crashed_pool_in_another_pid_namespace_with_its_own_proc_is_swept() {
        run(true, super::crashed_pool_in_another_pid_namespace_is_swept);
    }
}
