//! Spawning through the Pool on real processes: a typed error for every way a spawn fails,
//! argv and environment byte for byte, no descriptor crossing between concurrent spawns on
//! every worker, the supervisor's signal state kept from tasks, and nothing left over after
//! 10,000 spawns. The whole file runs a second time on the `clone(2)` path
//! (`PIDRING_SPAWN_METHOD=clone`), the one taken where `clone3` is refused.
//!
//! Tests that change process-wide state (fd and process limits, the uid) run in a copy of
//! this binary (`inner`).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pidring::{
    Containment, Pool, Reason, Session, SpawnError, SpawnMethod, Stdio, StreamId, TaskSpec,
};
use pidring_tests::*;

const LIMIT: Duration = Duration::from_secs(60);

/// Runs test `name` of this binary in a fresh process with `env` set; returns its output.
fn inner(name: &str, env: &[(&str, &str)]) -> String {
    let _serial = serial(); // its pipes count among this process's fds
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env("PIDRING_SPAWN_INNER", name);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{name}: {text}");
    text
}

/// Whether this process is the copy started by `inner(name)`.
fn is_inner(name: &str) -> bool {
    std::env::var("PIDRING_SPAWN_INNER").is_ok_and(|n| n == name)
}

fn one_error(pool: &Pool, spec: TaskSpec) -> SpawnError {
    match pool.spawn(spec) {
        Err(e) => e,
        Ok(task) => {
            let records = collect(pool, &[task.id()], LIMIT);
            panic!("expected an error, the task ran: {:?}", records[&task.id()])
        }
    }
}

/// The cgroup v2 mount point, from `/proc/self/mountinfo`.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split(' ').next() != Some("cgroup2") {
            return None;
        }
        left.split(' ').nth(4).map(PathBuf::from)
    })
}

/// Cgroup directories of this process's pools (`pidring-<pid>-<n>`), a few levels deep.
fn our_pool_cgroups() -> Vec<PathBuf> {
    fn walk(dir: &Path, depth: usize, prefix: &str, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if !path.is_dir() {
                continue;
            }
            if e.file_name().to_string_lossy().starts_with(prefix) {
                out.push(path);
            } else if depth > 0 {
                walk(&path, depth - 1, prefix, out);
            }
        }
    }
    let mut out = Vec::new();
    if let Some(mount) = cgroup2_mount() {
        walk(
            &mount,
            3,
            &format!("pidring-{}-", std::process::id()),
            &mut out,
        );
    }
    out
}

#[test]
fn the_spawn_method_is_probed_and_can_be_forced() {
    let (method, reason) = pidring::spawn_method();
    eprintln!("spawn method: {} ({reason})", method.as_str());
    match std::env::var(pidring::SPAWN_METHOD_VAR).as_deref() {
        Ok("clone") => assert_eq!(method, SpawnMethod::Clone, "{reason}"),
        Ok("clone3") => assert_eq!(method, SpawnMethod::Clone3, "{reason}"),
        _ => assert!(!reason.is_empty()),
    }
}

/// Each `SpawnError` from a real failure, through `Pool::spawn`; the pool goes on working.
/// `TooManyFiles`, `AtCapacity` and `TooManyProcesses` need process-wide limits: see the
/// tests below. (`Setup` comes from a child killed before exec, with the test-only stall
/// point of the library's own tests; `PoolClosed` cannot happen while a caller of `spawn`
/// holds the pool.)
#[test]
fn every_spawn_error_from_a_real_case() {
    let _serial = serial();
    let fds = fd_count();
    {
        let pool = Pool::builder().workers(2).build().unwrap();
        let dir = TempDir::new("spawn-errors");
        assert!(matches!(
            one_error(&pool, TaskSpec::new("no-such-program-pidring")),
            SpawnError::NotFound(_)
        ));
        let text = dir.path("text");
        std::fs::write(&text, "#!/bin/sh\necho hi\n").unwrap();
        assert!(matches!(
            one_error(&pool, TaskSpec::new(&text)),
            SpawnError::PermissionDenied(_)
        ));
        let garbage = dir.path("garbage");
        std::fs::write(&garbage, b"\x7fELF\x02\x01 garbage").unwrap();
        set_mode(&garbage, 0o755);
        assert!(matches!(
            one_error(&pool, TaskSpec::new(&garbage)),
            SpawnError::NotExecutable(_)
        ));
        for invalid in [
            TaskSpec::new("a\0b"),
            TaskSpec::new("/bin/true").ignore_signals([libc::SIGKILL]),
            TaskSpec::new("/bin/true").block_signals([65]),
        ] {
            assert!(matches!(
                one_error(&pool, invalid),
                SpawnError::InvalidSpec(_)
            ));
        }
        match one_error(&pool, TaskSpec::new("/bin/true").cwd(dir.path("missing"))) {
            SpawnError::Cwd { path, source } => {
                assert_eq!(path, dir.path("missing"));
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
        // An argument over the kernel's 128 KiB per string: E2BIG from execve.
        match one_error(&pool, TaskSpec::new("/bin/true").arg("x".repeat(200_000))) {
            SpawnError::Io(e) => assert_eq!(e.raw_os_error(), Some(libc::E2BIG), "{e}"),
            other => panic!("{other:?}"),
        }
        // A symlink loop as the program: ELOOP.
        let looped = dir.path("loop");
        std::os::unix::fs::symlink(&looped, &looped).unwrap();
        match one_error(&pool, TaskSpec::new(&looped)) {
            SpawnError::Io(e) => assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}"),
            other => panic!("{other:?}"),
        }
        let ok = pool
            .spawn(TaskSpec::new("/bin/sh").arg("-c").arg("exit 4"))
            .unwrap();
        let records = collect(&pool, &[ok.id()], LIMIT);
        assert_eq!(records[&ok.id()].outcome().reason, Reason::Exited(4));
        pool.shutdown();
    }
    assert_clean(fds);
}

/// `Containment`: the pool's cgroup removed behind its back (by an administrator or a
/// service manager): the task's cgroup cannot be made.
#[test]
fn a_missing_pool_cgroup_is_a_containment_error() {
    let _serial = serial();
    let pool = match Pool::builder()
        .workers(1)
        .containment(Containment::Cgroup)
        .build()
    {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("SKIP a_missing_pool_cgroup_is_a_containment_error: {e}");
            return;
        }
    };
    let dirs = our_pool_cgroups();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    std::fs::remove_dir(&dirs[0]).unwrap();
    assert!(matches!(
        one_error(&pool, TaskSpec::new("/bin/true")),
        SpawnError::Containment(_)
    ));
    drop(pool);
    assert!(our_pool_cgroups().is_empty());
}

/// `TooManyFiles` (no fd left for the pipes) and `AtCapacity` (the rings' fixed-file tables
/// are full), under a low `RLIMIT_NOFILE`.
#[test]
fn fd_limits_give_too_many_files_and_at_capacity() {
    inner("fd_limits_inner", &[]);
}

#[test]
fn fd_limits_inner() {
    if !is_inner("fd_limits_inner") {
        return;
    }
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let _ = getrlimit(Resource::Nofile);
    // 64 fds: fixed-file tables of 64 slots, room for 21 typical tasks.
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(64),
            maximum: Some(64),
        },
    )
    .unwrap();
    let pool = Pool::builder()
        .workers(1)
        .containment(Containment::ProcessGroup)
        .build()
        .unwrap();
    assert_eq!(pool.capacity(), 21);
    let quiet = || {
        TaskSpec::new("sleep")
            .arg("60")
            .stdout(Stdio::Null)
            .stderr(Stdio::Null)
    };
    let held: Vec<_> = (0..21).map(|_| pool.spawn(quiet()).unwrap()).collect();
    assert!(matches!(
        pool.spawn(quiet()),
        Err(SpawnError::AtCapacity(_))
    ));
    for task in &held {
        task.kill().unwrap();
    }
    let ids: Vec<_> = held.iter().map(|t| t.id()).collect();
    collect(&pool, &ids, LIMIT);
    // Every free fd taken: the spawn finds none for its pipes.
    let mut fillers = Vec::new();
    while let Ok(fd) = std::fs::File::open("/dev/null") {
        fillers.push(fd);
    }
    assert!(matches!(
        pool.spawn(TaskSpec::new("/bin/true")),
        Err(SpawnError::TooManyFiles)
    ));
    drop(fillers);
    let ok = pool.spawn(TaskSpec::new("/bin/true")).unwrap();
    collect(&pool, &[ok.id()], LIMIT);
    pool.shutdown();
    println!("fd limits inner ok");
}

/// The epoll driver holds exactly `Pool::capacity()` typical tasks (pidfd, stdout, stderr in
/// the process fd table), no fewer: the last one fits, the next is `AtCapacity`. In
/// process-group mode a task needs no `cgroup.events` descriptor, and its room must not be
/// counted as if it did.
#[test]
fn the_epoll_driver_holds_exactly_its_capacity() {
    inner("epoll_capacity_inner", &[]);
}

#[test]
fn epoll_capacity_inner() {
    if !is_inner("epoll_capacity_inner") {
        return;
    }
    use rustix::process::{setrlimit, Resource, Rlimit};
    // 256 fds are left to the program; 60 more make room for 20 tasks of 3 fds. (The pool
    // raises the soft limit to the hard one: both are set.)
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(316),
            maximum: Some(316),
        },
    )
    .unwrap();
    let pool = Pool::builder()
        .workers(1)
        .backend(pidring::Backend::Epoll)
        .containment(Containment::ProcessGroup)
        .build()
        .unwrap();
    let cap = pool.capacity();
    assert_eq!(cap, 20);
    let busy = || TaskSpec::new("sleep").arg("60");
    let held: Vec<_> = (0..cap)
        .map(|i| {
            pool.spawn(busy())
                .unwrap_or_else(|e| panic!("task {i} of {cap}: {e}"))
        })
        .collect();
    assert!(matches!(pool.spawn(busy()), Err(SpawnError::AtCapacity(_))));
    for task in &held {
        task.kill().unwrap();
    }
    let ids: Vec<_> = held.iter().map(|t| t.id()).collect();
    collect(&pool, &ids, LIMIT);
    pool.shutdown();
    println!("epoll capacity inner ok");
}

/// `TooManyProcesses`: the kernel refuses a new process (`EAGAIN`), here because the
/// supervisor runs as a user over its `RLIMIT_NPROC`. Needs root (to change user).
#[test]
fn a_process_limit_gives_too_many_processes() {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        eprintln!("SKIP a_process_limit_gives_too_many_processes: needs root to change user");
        return;
    }
    let text = inner("nproc_inner", &[]);
    assert!(text.contains("nproc inner ok"), "{text}");
}

#[test]
fn nproc_inner() {
    if !is_inner("nproc_inner") {
        return;
    }
    let pool = Pool::builder()
        .workers(1)
        .containment(Containment::ProcessGroup)
        .build()
        .unwrap();
    use rustix::process::{setrlimit, Resource, Rlimit};
    setrlimit(
        Resource::Nproc,
        Rlimit {
            current: Some(1),
            maximum: Some(1),
        },
    )
    .unwrap();
    // SAFETY: setuid to `nobody`: glibc applies it to every thread of the process.
    assert_eq!(unsafe { libc::setuid(65534) }, 0);
    match pool.spawn(TaskSpec::new("/bin/true")) {
        Err(SpawnError::TooManyProcesses) => {}
        other => panic!("{other:?}"),
    }
    pool.shutdown();
    println!("nproc inner ok");
}

#[test]
fn argv_and_env_arrive_byte_exact() {
    let _serial = serial();
    let args: [&[u8]; 6] = [
        b"two words",
        b"line one\nline two\n",
        b"\xff\xfe not utf-8 \xc3\x28",
        b"",
        b"tab\there *",
        b"$HOME `x` \\ '\"",
    ];
    let env: [(&[u8], &[u8]); 3] = [
        (b"SPACED", b"a value with spaces"),
        (b"MULTI", b"first\nsecond\n"),
        (b"BYTES\xe9", b"\x80\x81\xfe"),
    ];
    let pool = Pool::builder().workers(2).build().unwrap();
    let script = "cat /proc/$$/cmdline; printf '|'; cat /proc/$$/environ";
    let mut spec = TaskSpec::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .arg("zero")
        .env_clear();
    for a in args {
        spec = spec.arg(OsStr::from_bytes(a));
    }
    for (k, v) in env {
        spec = spec.env(OsStr::from_bytes(k), OsStr::from_bytes(v));
    }
    let task = pool.spawn(spec).unwrap();
    let records = collect(&pool, &[task.id()], LIMIT);
    let mut want = format!("/bin/sh\0-c\0{script}\0zero\0").into_bytes();
    for a in args {
        want.extend_from_slice(a);
        want.push(0);
    }
    want.push(b'|');
    for (k, v) in env {
        want.extend_from_slice(k);
        want.push(b'=');
        want.extend_from_slice(v);
        want.push(0);
    }
    assert_eq!(records[&task.id()].stdout(), want);
    assert_eq!(records[&task.id()].outcome().reason, Reason::Exited(0));
    pool.shutdown();
}

/// Four threads spawn at once on every worker; each shell lists its own descriptors: 0, 1,
/// 2 and its channel, never another spawn's pipe or channel.
#[test]
fn no_descriptor_crosses_between_concurrent_spawns_on_every_worker() {
    let _serial = serial();
    let fds = fd_count();
    {
        let pool = Pool::builder().workers(2).build().unwrap();
        let ids: Vec<_> = std::thread::scope(|s| {
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        (0..50)
                            .map(|_| {
                                pool.spawn(
                                    TaskSpec::new("/bin/sh")
                                        .arg("-c")
                                        .arg("ls /proc/$$/fd; echo x >&7")
                                        .channel(7),
                                )
                                .unwrap()
                                .id()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect()
        });
        let records = collect(&pool, &ids, LIMIT);
        for id in &ids {
            let record = &records[id];
            assert_eq!(
                String::from_utf8_lossy(record.stdout()),
                "0\n1\n2\n7\n",
                "{record:?}"
            );
            assert_eq!(
                record.output.get(&StreamId::channel(0)).map(Vec::as_slice),
                Some(&b"x\n"[..])
            );
        }
        pool.shutdown();
    }
    assert_clean(fds);
}

/// What the supervisor ignores does not reach its tasks (the shell ignores SIGHUP and
/// SIGUSR1 before it execs this test, the Rust runtime SIGPIPE); what the spec asks for
/// does.
#[test]
fn the_supervisors_signal_state_does_not_reach_tasks() {
    let _serial = serial();
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg("trap '' HUP USR1; exec \"$0\" --exact signals_inner --nocapture --test-threads=1")
        .arg(exe)
        .env("PIDRING_SPAWN_INNER", "signals_inner")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("signals inner ok"), "{text}");
}

#[test]
fn signals_inner() {
    if !is_inner("signals_inner") {
        return;
    }
    let field = |text: &str, name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap()
    };
    let bit = |sig: i32| 1u64 << (sig - 1);
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let ours = field(&own, "SigIgn:");
    assert_eq!(
        ours & (bit(libc::SIGHUP) | bit(libc::SIGUSR1) | bit(libc::SIGPIPE)),
        bit(libc::SIGHUP) | bit(libc::SIGUSR1) | bit(libc::SIGPIPE)
    );
    let pool = Pool::builder().workers(1).build().unwrap();
    let plain = pool
        .spawn(TaskSpec::new("/bin/cat").arg("/proc/self/status"))
        .unwrap();
    let asked = pool
        .spawn(
            TaskSpec::new("/bin/cat")
                .arg("/proc/self/status")
                .ignore_signals([libc::SIGUSR1])
                .block_signals([libc::SIGTERM])
                .session(Session::Group),
        )
        .unwrap();
    let records = collect(&pool, &[plain.id(), asked.id()], LIMIT);
    let plain = String::from_utf8_lossy(records[&plain.id()].stdout()).into_owned();
    assert_eq!(field(&plain, "SigIgn:"), 0, "{plain}");
    assert_eq!(field(&plain, "SigBlk:"), 0, "{plain}");
    let asked = String::from_utf8_lossy(records[&asked.id()].stdout()).into_owned();
    assert_eq!(field(&asked, "SigIgn:"), bit(libc::SIGUSR1), "{asked}");
    assert_eq!(field(&asked, "SigBlk:"), bit(libc::SIGTERM), "{asked}");
    pool.shutdown();
    println!("signals inner ok");
}

/// 10,000 spawns (3,000 on the clone path) from four threads: afterwards no fd, no zombie,
/// no cgroup of ours is left.
#[test]
fn ten_thousand_spawns_leave_nothing_behind() {
    let _serial = serial();
    let n = if pidring::spawn_method().0 == SpawnMethod::Clone3 {
        10_000
    } else {
        3_000
    };
    let fds = fd_count();
    {
        let pool = Pool::builder().workers(2).build().unwrap();
        let before_spawns = fd_count();
        let reasons: HashMap<String, usize> = std::thread::scope(|s| {
            let events = pool.events().clone();
            let counter = s.spawn(move || {
                let mut reasons = HashMap::new();
                let mut done = 0;
                while done < n {
                    match events.recv_timeout(LIMIT) {
                        Ok(pidring::Event::Done { outcome, .. }) => {
                            *reasons.entry(format!("{:?}", outcome.reason)).or_insert(0) += 1;
                            done += 1;
                        }
                        Ok(_) => {}
                        Err(_) => panic!("only {done} of {n} tasks ended"),
                    }
                }
                reasons
            });
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..n / 4 {
                        pool.spawn(TaskSpec::new("/bin/true")).unwrap();
                    }
                });
            }
            counter.join().unwrap()
        });
        assert_eq!(
            reasons,
            HashMap::from([(format!("{:?}", Reason::Exited(0)), n)])
        );
        assert_eq!(pool.stats().live_tasks, 0);
        assert!(
            eventually(Duration::from_secs(5), || fd_count() <= before_spawns),
            "fds: {} with the pool idle, {before_spawns} before the spawns",
            fd_count()
        );
        pool.shutdown();
    }
    assert_clean(fds);
    assert!(our_pool_cgroups().is_empty(), "{:?}", our_pool_cgroups());
}

/// The clone(2) path, as in a default Docker container (where clone3 gives ENOSYS): every
/// test above again in a copy of this binary with the method forced.
#[test]
fn the_whole_file_again_on_the_clone_path() {
    if std::env::var_os(pidring::SPAWN_METHOD_VAR).is_some() {
        return; // already the copy
    }
    let _serial = serial();
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--skip",
            "the_whole_file_again_on_the_clone_path",
            "--nocapture",
        ])
        .env(pidring::SPAWN_METHOD_VAR, "clone")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("spawn method: clone ("), "{text}");
    assert!(text.contains("test result: ok"), "{text}");
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
