//! Spawn tests on real processes, each on both spawn methods (clone3 and clone(2)).
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use super::test_util::*;
use super::{prepare, spawn, spawn_method, SpawnMethod};
use crate::error::SpawnError;
use crate::spec::{Session, Stdio, TaskSpec};
use crate::task::{ExitStatus, StreamId};

const T: Duration = Duration::from_secs(10);

fn spawn_err(spec: TaskSpec) -> SpawnError {
    match prepare(&spec).and_then(|p| spawn(&p, &no_placement())) {
        Ok(child) => {
            let status = wait_exit(&child.pidfd, T);
            panic!("expected an error, the child ran and ended with {status:?}")
        }
        Err(e) => e,
    }
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("pidring-spawn-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_file(path: &std::path::Path, content: &[u8], mode: u32) {
    std::fs::write(path, content).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn captures_stdout_and_stderr_and_exit_code() {
    let _g = serial();
    each_method(|_| {
        let mut child = start(sh("echo out; echo err >&2; exit 3"));
        assert_eq!(
            child.streams.iter().map(|s| s.0).collect::<Vec<_>>(),
            vec![StreamId::STDOUT, StreamId::STDERR]
        );
        assert_eq!(read_all(&mut child, StreamId::STDOUT), b"out\n");
        assert_eq!(read_all(&mut child, StreamId::STDERR), b"err\n");
        assert_eq!(wait_exit(&child.pidfd, T), ExitStatus::Code(3));
    });
}

#[test]
fn death_by_signal() {
    let _g = serial();
    each_method(|_| {
        let child = start(sh("kill -KILL $$").stdout(Stdio::Null).stderr(Stdio::Null));
        assert!(child.streams.is_empty());
        assert_eq!(
            wait_exit(&child.pidfd, T),
            ExitStatus::Signal(libc::SIGKILL)
        );
    });
}

#[test]
fn missing_program_is_not_found() {
    let _g = serial();
    each_method(|_| {
        assert!(matches!(
            spawn_err(TaskSpec::new("pidring-no-such-program-xyz")),
            SpawnError::NotFound(_)
        ));
        assert!(matches!(
            spawn_err(TaskSpec::new("/nonexistent/dir/prog")),
            SpawnError::NotFound(_)
        ));
        assert!(matches!(
            spawn_err(TaskSpec::new("")),
            SpawnError::NotFound(_)
        ));
    });
}

#[test]
fn non_executable_file_is_permission_denied() {
    let _g = serial();
    each_method(|_| {
        let dir = temp_dir("eacces");
        let path = dir.join("noexec");
        write_file(&path, b"#!/bin/sh\necho hi\n", 0o644);
        assert!(matches!(
            spawn_err(TaskSpec::new(&path)),
            SpawnError::PermissionDenied(_)
        ));
        // Through PATH: EACCES is remembered over a later ENOENT, like execvp.
        let spec = TaskSpec::new("noexec").env("PATH", format!("{}:/nonexistent", dir.display()));
        assert!(matches!(spawn_err(spec), SpawnError::PermissionDenied(_)));
        // A later PATH entry that works wins over an earlier EACCES.
        let dir2 = temp_dir("eacces2");
        write_file(&dir2.join("noexec"), b"#!/bin/sh\necho second\n", 0o755);
        let mut child = start(
            TaskSpec::new("noexec").env("PATH", format!("{}:{}", dir.display(), dir2.display())),
        );
        assert_eq!(read_all(&mut child, StreamId::STDOUT), b"second\n");
        assert_eq!(wait_exit(&child.pidfd, T), ExitStatus::Code(0));
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir_all(&dir2);
    });
}

#[test]
fn garbage_file_is_not_executable() {
    let _g = serial();
    each_method(|_| {
        let dir = temp_dir("enoexec");
        let path = dir.join("garbage");
        write_file(&path, b"\x7fELF but not really, nor a script\n", 0o755);
        assert!(matches!(
            spawn_err(TaskSpec::new(&path)),
            SpawnError::NotExecutable(_)
        ));
        let _ = std::fs::remove_dir_all(&dir);
    });
}

#[test]
fn invalid_specs_are_rejected_without_panic() {
    let bad = [
        TaskSpec::new("a\0b"),
        TaskSpec::new("/bin/sh").arg("x\0y"),
        TaskSpec::new("/bin/sh").env("K", "v\0"),
        TaskSpec::new("/bin/sh").env("K=", "v"),
        TaskSpec::new("/bin/sh").env("", "v"),
        TaskSpec::new("/bin/sh").cwd("/tmp\0x"),
        TaskSpec::new("/bin/sh").channel(2),
        TaskSpec::new("/bin/sh").channel(-1),
        TaskSpec::new("/bin/sh").channel(5).channel(5),
        TaskSpec::new("/bin/sh").channel(i32::MAX),
    ];
    for spec in bad {
        assert!(
            matches!(prepare(&spec), Err(SpawnError::InvalidSpec(_))),
            "{spec:?}"
        );
    }
    let mut many = TaskSpec::new("/bin/sh");
    for fd in 3..300 {
        many = many.channel(fd);
    }
    assert!(matches!(prepare(&many), Err(SpawnError::InvalidSpec(_))));
}

#[test]
fn bad_cwd_is_a_cwd_error() {
    let _g = serial();
    each_method(|_| {
        for (dir, kind) in [
            ("/nonexistent-pidring-dir", std::io::ErrorKind::NotFound),
            ("/etc/passwd", std::io::ErrorKind::NotADirectory),
        ] {
            match spawn_err(sh("true").cwd(dir)) {
                SpawnError::Cwd { path, source } => {
                    assert_eq!(path, std::path::Path::new(dir));
                    assert_eq!(source.kind(), kind, "{source}");
                }
                other => panic!("{dir}: {other:?}"),
            }
        }
    });
}

#[test]
fn cwd_env_and_default_path() {
    let _g = serial();
    each_method(|_| {
        // env_clear: no PATH, so "sh" is found through the default PATH.
        let mut child = start(
            TaskSpec::new("sh")
                .arg("-c")
                .arg("pwd; echo \"$A|$B|$HOME\"")
                .env_clear()
                .env("A", "1")
                .env("B", "2")
                .env_remove("B")
                .cwd("/tmp"),
        );
        assert_eq!(read_all(&mut child, StreamId::STDOUT), b"/tmp\n1||\n");
        assert_eq!(wait_exit(&child.pidfd, T), ExitStatus::Code(0));
    });
}

#[test]
fn channels_land_on_their_fds() {
    let _g = serial();
    each_method(|_| {
        // Targets among the fd numbers our own pipes are likely to have, to exercise collisions.
        let spec = sh("echo three >&3; echo four >&4; echo seven >&7; echo nine >&9; ls /proc/self/fd | sort -n | tr '\\n' ' ' >&2")
            .stdout(Stdio::Null)
            .channel(4)
            .channel(3)
            .channel(9)
            .channel(7);
        let mut child = start(spec);
        let ids: Vec<_> = child.streams.iter().map(|s| s.0).collect();
        assert_eq!(
            ids,
            vec![
                StreamId::STDERR,
                StreamId::channel(0),
                StreamId::channel(1),
                StreamId::channel(2),
                StreamId::channel(3)
            ]
        );
        assert_eq!(read_all(&mut child, StreamId::channel(0)), b"four\n");
        assert_eq!(read_all(&mut child, StreamId::channel(1)), b"three\n");
        assert_eq!(read_all(&mut child, StreamId::channel(2)), b"nine\n");
        assert_eq!(read_all(&mut child, StreamId::channel(3)), b"seven\n");
        // The shell's fd table: 0-2, the channels and whatever ls itself opens (its dir fd).
        let fds = String::from_utf8(read_all(&mut child, StreamId::STDERR)).unwrap();
        let fds: Vec<i32> = fds.split_whitespace().map(|s| s.parse().unwrap()).collect();
        for want in [0, 1, 2, 3, 4, 7, 9] {
            assert!(fds.contains(&want), "{fds:?}");
        }
        assert!(
            fds.len() <= 8,
            "unexpected fds leaked into the child: {fds:?}"
        );
        assert_eq!(wait_exit(&child.pidfd, T), ExitStatus::Code(0));
    });
}

#[test]
fn child_has_clean_signals_own_session_and_no_extra_fds() {
    let _g = serial();
    each_method(|_| {
        // Keep an inheritable (non-CLOEXEC) fd open in the parent: the child must not get it.
        let leak = rustix::io::dup(std::io::stdin().as_fd()).unwrap();
        let mut child = start(
            TaskSpec::new("/bin/cat")
                .arg("/proc/self/status")
                .arg("/proc/self/stat"),
        );
        let out = String::from_utf8(read_all(&mut child, StreamId::STDOUT)).unwrap();
        assert_eq!(wait_exit(&child.pidfd, T), ExitStatus::Code(0));
        drop(leak);
        let field = |name: &str| {
            out.lines()
                .find(|l| l.starts_with(name))
                .map(|l| l[name.len()..].trim().to_owned())
                .unwrap()
        };
        assert_eq!(
            field("SigIgn:"),
            "0000000000000000",
            "SIGPIPE and others must be default"
        );
        assert_eq!(field("SigBlk:"), "0000000000000000");
        // pid == pgrp == session.
        let stat = out.lines().last().unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split(' ').collect();
        let pid = stat.split(' ').next().unwrap();
        assert_eq!(f[2], pid, "pgrp");
        assert_eq!(f[3], pid, "session");
        assert_eq!(pid.parse::<i32>().unwrap(), child.pid);
        // PDEATHSIG set? Not visible in /proc; see `pdeathsig_follows_spawning_thread`.
    });
}

#[test]
fn no_fd_leak_and_no_zombie() {
    let _g = serial();
    each_method(|_| {
        let before = fd_count();
        for i in 0..40 {
            if i % 3 == 0 {
                assert!(matches!(
                    spawn_err(TaskSpec::new("pidring-missing")),
                    SpawnError::NotFound(_)
                ));
            } else {
                let mut child = start(sh("echo x; echo y >&3").channel(3));
                let _ = read_all(&mut child, StreamId::STDOUT);
                assert_eq!(wait_exit(&child.pidfd, T), ExitStatus::Code(0));
            }
        }
        assert!(matches!(
            spawn_err(sh("true").cwd("/nonexistent")),
            SpawnError::Cwd { .. }
        ));
        assert_eq!(fd_count(), before, "fd leak");
        assert!(
            zombie_children().is_empty(),
            "zombies: {:?}",
            zombie_children()
        );
    });
}

/// EMFILE while creating the pipes → `TooManyFiles`, and nothing leaks. Runs in a copy of
/// this test binary, because lowering RLIMIT_NOFILE affects the whole process.
#[test]
fn out_of_fds_is_too_many_files_without_leak() {
    let _g = serial();
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "sys::spawn::tests::emfile_inner",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PIDRING_EMFILE_INNER", "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("emfile inner ok"), "{text}");
}

#[test]
fn emfile_inner() {
    if std::env::var_os("PIDRING_EMFILE_INNER").is_none() {
        return; // only in the copy started by `out_of_fds_is_too_many_files_without_leak`
    }
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    each_method(|_| {
        let spec = sh("echo x").channel(3).channel(4);
        let prepared = prepare(&spec).unwrap();
        let hard = getrlimit(Resource::Nofile).maximum;
        // Room for 0..=5 extra fds: each attempt fails at a different step.
        for room in 0..6u64 {
            let before = fd_count();
            // Fill the gaps in the fd table (new fds take the lowest free number), so that the
            // limit below leaves exactly `room` free numbers.
            let highest = std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u64>().ok()))
                .max()
                .unwrap();
            let mut fillers = Vec::new();
            let max_fd = loop {
                let fd = rustix::fs::open(
                    "/dev/null",
                    rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                    rustix::fs::Mode::empty(),
                )
                .unwrap();
                let n = std::os::fd::AsRawFd::as_raw_fd(&fd) as u64;
                fillers.push(fd);
                if n >= highest {
                    break n; // every number up to n is now in use, none above it
                }
            };
            setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(max_fd + 1 + room),
                    maximum: hard,
                },
            )
            .unwrap();
            let r = spawn(&prepared, &no_placement());
            setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: hard,
                    maximum: hard,
                },
            )
            .unwrap();
            drop(fillers);
            match r {
                Err(SpawnError::TooManyFiles) => {}
                Ok(child) => panic!("spawned with room {room}: {child:?}"),
                Err(e) => panic!("room {room}: {e:?}"),
            }
            assert_eq!(fd_count(), before, "leak at room {room}");
        }
    });
    println!("emfile inner ok");
}

#[test]
fn pdeathsig_follows_spawning_thread() {
    let _g = serial();
    each_method(|method| {
        // PR_SET_PDEATHSIG follows the creating thread: a child spawned on a thread that ends
        // is killed with SIGKILL. (This is why workers spawn on long-lived spawner threads.)
        let child = std::thread::spawn(move || {
            with_method(method, || {
                start(
                    TaskSpec::new("sleep")
                        .arg("30")
                        .stdout(Stdio::Null)
                        .stderr(Stdio::Null),
                )
            })
        })
        .join()
        .unwrap();
        assert_eq!(
            wait_exit(&child.pidfd, Duration::from_secs(5)),
            ExitStatus::Signal(libc::SIGKILL)
        );
    });
}

/// Spawn + reap rate of `/bin/true`: ours vs `std::process::Command`, same run, one thread.
/// `cargo test --release -p pidring --lib -- --ignored spawn_rate --nocapture`
#[test]
#[ignore]
fn spawn_rate_vs_std() {
    let _g = serial();
    let n = 2000;
    let spec = TaskSpec::new("/bin/true")
        .stdin(Stdio::Null)
        .stdout(Stdio::Null)
        .stderr(Stdio::Null);
    let prepared = prepare(&spec).unwrap();
    for round in 0..2 {
        let t = Instant::now();
        for _ in 0..n {
            let child = spawn(&prepared, &no_placement()).unwrap();
            assert_eq!(wait_exit(&child.pidfd, T), ExitStatus::Code(0));
        }
        let ours = n as f64 / t.elapsed().as_secs_f64();
        let t = Instant::now();
        for _ in 0..n {
            let status = std::process::Command::new("/bin/true")
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let std_rate = n as f64 / t.elapsed().as_secs_f64();
        // With captured stdout+stderr pipes.
        let spec2 = TaskSpec::new("/bin/true");
        let p2 = prepare(&spec2).unwrap();
        let t = Instant::now();
        for _ in 0..n {
            let child = spawn(&p2, &no_placement()).unwrap();
            assert_eq!(wait_exit(&child.pidfd, T), ExitStatus::Code(0));
        }
        let ours_pipes = n as f64 / t.elapsed().as_secs_f64();
        println!("round {round}: pidring spawn {ours:.0}/s, with 2 pipes {ours_pipes:.0}/s; std::process::Command {std_rate:.0}/s");
    }
}

/// Fields of `/proc/<pid>/stat` after the command: (pid, pgrp, session, tty_nr, tpgid).
fn stat_ids(stat: &str) -> (i32, i32, i32, i32, i32) {
    let pid = stat.split(' ').next().unwrap().parse().unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<i32> = rest
        .split(' ')
        .skip(2)
        .take(4)
        .map(|s| s.parse().unwrap())
        .collect();
    (pid, f[0], f[1], f[2], f[3])
}

/// `/proc/self/status` and `/proc/self/stat` of a child started from `spec`.
fn status_and_stat(spec: TaskSpec) -> (String, (i32, i32, i32, i32, i32)) {
    let mut child = start(spec.arg("/proc/self/status").arg("/proc/self/stat"));
    let out = String::from_utf8(read_all(&mut child, StreamId::STDOUT)).unwrap();
    assert_eq!(wait_exit(&child.pidfd, T), ExitStatus::Code(0), "{out}");
    let ids = stat_ids(out.lines().last().unwrap());
    assert_eq!(ids.0, child.pid);
    (out, ids)
}

fn status_field(status: &str, name: &str) -> String {
    status
        .lines()
        .find(|l| l.starts_with(name))
        .map(|l| l[name.len()..].trim().to_owned())
        .unwrap()
}

fn mask_of(signals: &[i32]) -> String {
    format!(
        "{:016x}",
        signals.iter().fold(0u64, |m, &s| m | 1 << (s - 1))
    )
}

#[test]
fn ignored_and_blocked_signals_are_the_ones_asked_for() {
    let _g = serial();
    each_method(|_| {
        let ignored = [libc::SIGHUP, libc::SIGPIPE, libc::SIGUSR1, 40];
        let blocked = [libc::SIGUSR2, libc::SIGTERM, libc::SIGINT, 64];
        let (status, _) = status_and_stat(
            TaskSpec::new("/bin/cat")
                .ignore_signals(ignored)
                .block_signals(blocked),
        );
        assert_eq!(status_field(&status, "SigIgn:"), mask_of(&ignored));
        assert_eq!(status_field(&status, "SigBlk:"), mask_of(&blocked));
    });
}

/// What the supervisor ignores and blocks does not reach the child: SIGUSR1 ignored by the
/// whole process, SIGUSR2 blocked by the spawning thread. Done on a thread of its own, so
/// the mask change cannot leak into other tests.
#[test]
fn supervisor_dispositions_and_mask_are_reset() {
    let _g = serial();
    std::thread::spawn(|| {
        // SAFETY: a process-wide disposition change, restored below; the handler is SIG_IGN.
        let old = unsafe { libc::signal(libc::SIGUSR1, libc::SIG_IGN) };
        // SAFETY: plain sigset_t values on this thread's stack.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGUSR2);
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        }
        let own_status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        assert_ne!(status_field(&own_status, "SigBlk:"), "0000000000000000");
        let (status, _) = status_and_stat(TaskSpec::new("/bin/cat"));
        // SAFETY: restores the disposition saved above.
        unsafe { libc::signal(libc::SIGUSR1, old) };
        assert_eq!(status_field(&status, "SigIgn:"), "0000000000000000");
        assert_eq!(status_field(&status, "SigBlk:"), "0000000000000000");
        // Asked for, an ignored signal is kept.
        let (status, _) =
            status_and_stat(TaskSpec::new("/bin/cat").ignore_signals([libc::SIGUSR1]));
        assert_eq!(status_field(&status, "SigIgn:"), mask_of(&[libc::SIGUSR1]));
    })
    .join()
    .unwrap();
}

#[test]
fn invalid_signal_numbers_are_rejected() {
    for bad in [0, -1, 65, i32::MAX, libc::SIGKILL, libc::SIGSTOP] {
        for spec in [
            TaskSpec::new("/bin/true").ignore_signals([libc::SIGHUP, bad]),
            TaskSpec::new("/bin/true").block_signals([bad]),
        ] {
            assert!(
                matches!(prepare(&spec), Err(SpawnError::InvalidSpec(_))),
                "{spec:?}"
            );
        }
    }
}

#[test]
fn session_modes_without_a_terminal() {
    let _g = serial();
    each_method(|_| {
        // SAFETY: getsid(0) reads our own session id.
        let our_session = unsafe { libc::getsid(0) };
        let (_, (pid, pgrp, session, _, _)) =
            status_and_stat(TaskSpec::new("/bin/cat").session(Session::New));
        assert_eq!((pgrp, session), (pid, pid), "New: own session and group");
        for mode in [Session::Group, Session::Foreground] {
            let (_, (pid, pgrp, session, _, _)) =
                status_and_stat(TaskSpec::new("/bin/cat").session(mode));
            assert_eq!(
                (pgrp, session),
                (pid, our_session),
                "{mode:?}: own group in our session"
            );
        }
    });
}

/// With a controlling terminal: `Foreground` makes the task's group the terminal's
/// foreground group (and is not stopped by SIGTTOU doing so), `Group` leaves it in the
/// background, `New` has no terminal. Runs in a copy of this test binary that leads a new
/// session with a pseudo-terminal as its controlling terminal and stdin.
#[test]
fn session_modes_with_a_terminal() {
    let _g = serial();
    // SAFETY: posix_openpt/grantpt/unlockpt/ptsname_r on the master fd we own; the name
    // buffer is a live stack array of the size passed.
    let (master, slave_name) = unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(
            master >= 0,
            "posix_openpt: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        (
            <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(master),
            std::ffi::CStr::from_ptr(name.as_ptr())
                .to_string_lossy()
                .into_owned(),
        )
    };
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&slave_name)
        .unwrap();
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "sys::spawn::tests::terminal_inner",
        "--nocapture",
        "--test-threads=1",
    ])
    .env("PIDRING_TTY_INNER", "1")
    .stdin(slave);
    // SAFETY: setsid and TIOCSCTTY are async-signal-safe syscalls; fd 0 is the slave.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    drop(master);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("terminal inner ok"), "{text}");
}

#[test]
fn terminal_inner() {
    if std::env::var_os("PIDRING_TTY_INNER").is_none() {
        return; // only in the copy started by `session_modes_with_a_terminal`
    }
    // SAFETY: plain queries of our own ids and of fd 0.
    let (me, tty_pgrp) = unsafe { (libc::getpid(), libc::tcgetpgrp(0)) };
    assert_eq!(
        tty_pgrp, me,
        "the inner process leads the terminal's session"
    );
    let cat = || TaskSpec::new("/bin/cat").stdin(Stdio::Inherit);
    let (_, (pid, pgrp, session, tty, tpgid)) = status_and_stat(cat().session(Session::Group));
    assert_eq!((pgrp, session), (pid, me));
    assert_ne!(tty, 0, "Group keeps the controlling terminal");
    assert_eq!(tpgid, me, "Group stays in the background");
    let (_, (pid, pgrp, session, tty, tpgid)) = status_and_stat(cat().session(Session::Foreground));
    assert_eq!((pgrp, session), (pid, me));
    assert_ne!(tty, 0);
    assert_eq!(tpgid, pid, "Foreground takes the terminal");
    // The terminal is found on fd 2 too, when 0 and 1 are not it.
    // SAFETY: tcsetpgrp on our controlling terminal, SIGTTOU ignored around it (we are in the
    // background now), restored after.
    unsafe {
        let old = libc::signal(libc::SIGTTOU, libc::SIG_IGN);
        assert_eq!(libc::tcsetpgrp(0, me), 0);
        libc::signal(libc::SIGTTOU, old);
    }
    let stderr_tty = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/tty")
        .unwrap();
    let saved_stderr = rustix::io::dup(std::io::stderr().as_fd()).unwrap();
    rustix::stdio::dup2_stderr(&stderr_tty).unwrap();
    let spec = TaskSpec::new("/bin/cat")
        .stderr(Stdio::Inherit)
        .session(Session::Foreground);
    let result = status_and_stat(spec);
    rustix::stdio::dup2_stderr(&saved_stderr).unwrap();
    let (_, (pid, _, _, _, tpgid)) = result;
    assert_eq!(tpgid, pid, "Foreground through fd 2");
    let (_, (pid, pgrp, session, tty, _)) = status_and_stat(cat().session(Session::New));
    assert_eq!((pgrp, session, tty), (pid, pid, 0), "New has no terminal");
    println!("terminal inner ok");
}

#[test]
fn the_probe_agrees_with_the_kernel() {
    let (method, reason) = spawn_method();
    assert!(!reason.is_empty());
    if std::env::var_os(super::SPAWN_METHOD_VAR).is_some() {
        return; // forced: nothing to compare
    }
    // SAFETY: clone3 with a NULL argument and size 0 fails before reading anything.
    let ret = unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<u8>(), 0usize) };
    let errno = std::io::Error::last_os_error().raw_os_error();
    let refused = ret < 0 && matches!(errno, Some(libc::ENOSYS | libc::EPERM));
    if cfg!(target_arch = "x86_64") {
        assert_eq!(method == SpawnMethod::Clone, refused, "{reason}");
    } else {
        assert_eq!(method, SpawnMethod::Clone, "{reason}");
    }
}

/// Arguments and environment with spaces, newlines, tabs, globs, empty strings and bytes
/// that are not UTF-8 reach the program byte for byte.
#[test]
fn argv_and_env_arrive_byte_exact() {
    let _g = serial();
    use std::ffi::OsStr;
    let args: [&[u8]; 7] = [
        b"two words",
        b"line one\nline two\n",
        b"\xff\xfe not utf-8 \xc3\x28",
        b"",
        b"tab\there",
        b"*",
        b"$HOME `x` \\ '\"",
    ];
    let env: [(&[u8], &[u8]); 3] = [
        (b"SPACED", b"a value with spaces"),
        (b"MULTI", b"first\nsecond\n"),
        (b"BYTES\xe9", b"\x80\x81\xfe"),
    ];
    each_method(|_| {
        let mut spec = TaskSpec::new("/bin/sh")
            .arg("-c")
            .arg("cat /proc/$$/cmdline; printf '|'; cat /proc/$$/environ")
            .arg("argv0 of the script")
            .env_clear();
        for a in args {
            spec = spec.arg(OsStr::from_bytes(a));
        }
        for (k, v) in env {
            spec = spec.env(OsStr::from_bytes(k), OsStr::from_bytes(v));
        }
        let mut child = start(spec);
        let out = read_all(&mut child, StreamId::STDOUT);
        assert_eq!(wait_exit(&child.pidfd, T), ExitStatus::Code(0));
        let mut want = b"/bin/sh\0-c\0cat /proc/$$/cmdline; printf '|'; cat /proc/$$/environ\0argv0 of the script\0".to_vec();
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
        assert_eq!(
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&want)
        );
        assert_eq!(out, want);
    });
}

/// Children spawned at the same time from several threads (each with its own cloner, as
/// spawner threads have) see only their own descriptors: 0, 1, 2 and their channel.
#[test]
fn concurrent_spawns_never_share_descriptors() {
    let _g = serial();
    each_method(|method| {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    with_method(method, || {
                        let mut seen = Vec::new();
                        for _ in 0..25 {
                            let mut child = start(sh("ls /proc/$$/fd; echo x >&5").channel(5));
                            let fds =
                                String::from_utf8(read_all(&mut child, StreamId::STDOUT)).unwrap();
                            assert_eq!(read_all(&mut child, StreamId::channel(0)), b"x\n");
                            assert_eq!(wait_exit(&child.pidfd, T), ExitStatus::Code(0));
                            seen.push(fds);
                        }
                        seen
                    })
                })
            })
            .collect();
        for t in threads {
            for fds in t.join().unwrap() {
                assert_eq!(
                    fds, "0\n1\n2\n5\n",
                    "the shell holds a descriptor it was not given"
                );
            }
        }
    });
}

/// A child stuck before exec (the test-only stall point: a futex wait where a hung mount
/// would block `execve`) is published with its pid and pidfd while its spawning thread is
/// suspended, holds no guarded descriptor and nothing else that survives exec, and can be
/// killed; then the spawn fails with a typed error. Released instead, the same spawn
/// succeeds.
#[test]
fn a_child_stuck_before_exec_is_visible_and_killable() {
    let _g = serial();
    // A write end someone waits on (as a task's stdin end on the epoll driver: guarded), and
    // a read end no one waits on (not guarded: the child may hold it until exec closes it).
    let (waited_read, waited_write) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    drop(waited_read);
    super::guarded::guard(waited_write.as_raw_fd());
    let (idle_read, idle_write) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    drop(idle_write);
    let link = |fd: &OwnedFd| {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let (waited, idle) = (link(&waited_write), link(&idle_read));
    each_method(|method| {
        for kill in [true, false] {
            super::TEST_STALL.store(1, std::sync::atomic::Ordering::Release);
            let mut cloner = super::Cloner::new().unwrap();
            let in_flight = std::sync::Arc::clone(cloner.in_flight());
            let prepared = prepare(&sh("echo ran").env("PIDRING_TEST_STALL", "1")).unwrap();
            // The spawning thread outlives the child (its death signal follows that thread).
            let (result_tx, result) = std::sync::mpsc::channel();
            let (end_tx, end) = std::sync::mpsc::channel::<()>();
            let spawner = std::thread::spawn(move || {
                let r = super::spawn_with(&mut cloner, &prepared, &no_placement(), method);
                cloner.settle();
                result_tx.send(r).unwrap();
                let _ = end.recv();
            });
            assert!(eventually(T, || in_flight.pid().is_some()));
            let pid = in_flight.pid().unwrap();
            assert!(alive(pid));
            // Stuck after its set-up: besides 0, 1 and 2 it holds only close-on-exec fds, and
            // not the guarded write end; the unguarded read end it may hold until exec.
            assert!(eventually(T, || {
                let held = held_fds(pid);
                let targets: Vec<&str> = held.iter().map(|(_, t, _)| t.as_str()).collect();
                [0, 1, 2]
                    .iter()
                    .all(|fd| held.iter().any(|(f, _, _)| f == fd))
                    && held.iter().all(|(fd, _, cloexec)| *fd < 3 || *cloexec)
                    && !targets.contains(&waited.as_str())
            }));
            assert!(
                held_fds(pid).iter().any(|(_, t, _)| *t == idle),
                "the unguarded fds are marked close-on-exec, not closed, before exec"
            );
            if kill {
                assert!(eventually(T, || in_flight.kill()));
                match result.recv().unwrap() {
                    Err(SpawnError::Setup {
                        step: "starting", ..
                    }) => {}
                    other => panic!("{other:?}"),
                }
                release_stall();
            } else {
                release_stall();
                let mut child = result.recv().unwrap().expect("released spawn");
                assert_eq!(child.pid, pid);
                let out = read_all(&mut child, StreamId::STDOUT);
                let err = read_all(&mut child, StreamId::STDERR);
                assert_eq!(wait_exit(&child.pidfd, T), ExitStatus::Code(0), "{err:?}");
                assert_eq!(out, b"ran\n");
            }
            assert_eq!(in_flight.pid(), None, "settled");
            assert!(!in_flight.kill(), "nothing in flight");
            drop(end_tx);
            spawner.join().unwrap();
        }
    });
    super::guarded::unguard(waited_write.as_raw_fd());
    assert!(zombie_children().is_empty());
}

/// The supervisor's ends that a stuck child must not hold (stdin's write end, channel ends)
/// are guarded when the spawn returns, and so are the child ends while in flight; a plan
/// dropped before its spawn (a failure) leaves none of its marks.
#[test]
fn write_ends_are_guarded_and_a_failed_spawn_leaves_no_mark() {
    use super::guarded::{is_guarded, unguard};
    let _g = serial();
    each_method(|_| {
        let spec = sh("cat >/dev/null").stdin(Stdio::Capture).channels(2);
        let child = spawn(&prepare(&spec).unwrap(), &no_placement()).unwrap();
        for (id, fd) in &child.streams {
            if *id != StreamId::STDOUT && *id != StreamId::STDERR {
                assert!(is_guarded(fd.as_raw_fd()), "{id:?}");
            }
        }
        // What a driver does when it closes them.
        for (_, fd) in &child.streams {
            unguard(fd.as_raw_fd());
        }
        drop(child.streams);
        assert_eq!(wait_exit(&child.pidfd, T), ExitStatus::Code(0));
    });
    let prepared = prepare(&sh("true").stdin(Stdio::Capture).channels(3)).unwrap();
    let plan = super::fds::Plan::new(&prepared, &no_placement(), false, None).unwrap();
    let marked = plan.guarded_fds();
    // Both ends of stdin and of the 3 channels, the child's ends of stdout and stderr.
    assert_eq!(marked.len(), 2 * 4 + 2);
    assert!(marked.iter().all(|&fd| is_guarded(fd)));
    drop(plan);
    // Unmarked, unless the number was opened and guarded again meanwhile by another test.
    let open = |fd: i32| rustix::io::fcntl_getfd(unsafe_borrow(fd)).is_ok();
    assert!(marked.iter().all(|&fd| !is_guarded(fd) || open(fd)));
}

/// A borrowed fd from a number that may be closed (`fcntl` then answers EBADF).
fn unsafe_borrow(fd: i32) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: only used for F_GETFD, which reads the fd table and accepts any number.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

/// The fds of `pid`: number, link target, and whether close-on-exec is set.
fn held_fds(pid: i32) -> Vec<(i32, String, bool)> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path())
                .ok()?
                .to_string_lossy()
                .into_owned();
            let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
            let flags = info
                .lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())?;
            Some((fd, target, flags & libc::O_CLOEXEC as u32 != 0))
        })
        .collect()
}

/// The child gets the soft `RLIMIT_NOFILE` the process had before a pool raised it. In a
/// copy of this test binary: the limit is process-wide.
#[test]
fn the_original_fd_limit_is_restored_in_children() {
    let _g = serial();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sys::spawn::tests::nofile_inner",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PIDRING_NOFILE_INNER", "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("nofile inner ok"), "{text}");
}

#[test]
fn nofile_inner() {
    if std::env::var_os("PIDRING_NOFILE_INNER").is_none() {
        return; // only in the copy started by `the_original_fd_limit_is_restored_in_children`
    }
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let hard = getrlimit(Resource::Nofile).maximum;
    let limits = |soft: u64| Rlimit {
        current: Some(soft),
        maximum: hard,
    };
    setrlimit(Resource::Nofile, limits(777)).unwrap();
    super::remember_nofile_limit();
    setrlimit(Resource::Nofile, limits(hard.unwrap_or(4096).min(4096))).unwrap();
    let hard_text = hard.map_or("unlimited".to_string(), |h| h.to_string());
    each_method(|_| {
        let mut child = start(TaskSpec::new("/bin/cat").arg("/proc/self/limits"));
        let out = String::from_utf8(read_all(&mut child, StreamId::STDOUT)).unwrap();
        assert_eq!(wait_exit(&child.pidfd, T), ExitStatus::Code(0));
        let line = out
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap();
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&cols[3..5], ["777", hard_text.as_str()], "{line}");
    });
    println!("nofile inner ok");
}

/// With cgroup containment the child runs its program in the task's cgroup on both paths:
/// born there (clone3 + CLONE_INTO_CGROUP) or written into it before exec (clone).
#[test]
fn the_program_starts_in_its_cgroup_on_both_paths() {
    let _g = serial();
    let pool =
        match crate::containment::PoolContainment::new(crate::containment::Containment::Cgroup) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("SKIP the_program_starts_in_its_cgroup_on_both_paths: {e}");
                return;
            }
        };
    each_method(|method| {
        let tree = pool
            .prepare(1000 + method as u64, &crate::spec::Limits::default())
            .unwrap();
        let dir = tree.cgroup_dir().unwrap().to_owned();
        let placement = tree.placement().unwrap();
        let prepared = prepare(&TaskSpec::new("/bin/cat").arg("/proc/self/cgroup")).unwrap();
        let mut child = spawn(&prepared, &placement).unwrap();
        drop(placement);
        let out = String::from_utf8(read_all(&mut child, StreamId::STDOUT)).unwrap();
        assert_eq!(wait_exit(&child.pidfd, T), ExitStatus::Code(0));
        let v2 = out
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap_or_else(|| panic!("{out}"));
        assert!(
            dir.ends_with(v2.trim_start_matches('/')),
            "{method:?}: in {v2}, not {}",
            dir.display()
        );
        tree.remove().unwrap();
    });
}

/// Cost of `prepare` (runs on the caller's thread for every spawn).
/// `cargo test --release -p pidring --lib -- --ignored prepare_cost --nocapture`
#[test]
#[ignore]
fn prepare_cost() {
    let spec = TaskSpec::new("/bin/true").env("PIDRING_BENCH_TAG", "x");
    let n = 20_000;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(prepare(&spec).unwrap());
    }
    println!(
        "prepare: {:.1} µs each ({} env vars)",
        t.elapsed().as_secs_f64() * 1e6 / n as f64,
        std::env::vars_os().count()
    );
}
