//! The hidden `pidring helper` that every other test runs as its child.

mod common;

use std::time::{Duration, Instant};

use common::*;

const LIMIT: Duration = Duration::from_secs(30);

#[test]
fn writes_patterns_and_lines() {
    let r = run(
        ["helper", "out=100", "err=30", "lines=2", "chan=1:3"],
        LIMIT,
    );
    assert_eq!(r.code, Some(0));
    let mut expect: Vec<u8> = (0..100).map(|i| b'a' + (i % 26) as u8).collect();
    expect.extend_from_slice(b"line 0\nline 1\nabc");
    assert_eq!(r.stdout, expect);
    assert_eq!(r.stderr.len(), 30);
    let r = run(["helper", "out=3000000"], LIMIT);
    assert_eq!(fnv1a(&r.stdout), pattern_hash(3_000_000));
}

#[test]
fn exits_and_signals() {
    assert_eq!(run(["helper", "exit=3", "out=5"], LIMIT).code, Some(3));
    assert_eq!(run(["helper"], LIMIT).code, Some(0));
    let r = run(["helper", "raise=TERM"], LIMIT);
    assert_eq!(r.signal, Some(libc::SIGTERM));
    let r = run(["helper", "ignore-term", "raise=SIGTERM", "exit=4"], LIMIT);
    assert_eq!(
        r.signal,
        Some(libc::SIGTERM),
        "raise restores the default disposition"
    );
    let r = run(["helper", "raise=CHLD", "exit=4"], LIMIT);
    assert_eq!(
        r.code,
        Some(4),
        "a signal that does not kill lets the next step run"
    );
}

#[test]
fn bad_steps_exit_2_before_running_anything() {
    let t = TempDir::new("helper-bad");
    let p = t.path("pids");
    for bad in [
        "bogus",
        "out=x",
        "exit=300",
        "spawn=out=1;nope",
        "raise=NOPE",
        "sleep",
    ] {
        let r = run(["helper", &format!("pidfile={}", p.display()), bad], LIMIT);
        assert_eq!(r.code, Some(2), "{bad}");
        assert!(
            r.stderr_text().contains("bad step"),
            "{bad}: {}",
            r.stderr_text()
        );
        assert_eq!(r.stderr_text().lines().count(), 1);
    }
    assert!(!p.exists(), "a step ran before the bad one was reported");
}

#[test]
fn monotonic_is_a_number() {
    let r = run(["helper", "monotonic"], LIMIT);
    let text = String::from_utf8(r.stdout).unwrap();
    assert!(text.ends_with('\n'));
    assert!(text.trim().parse::<u128>().unwrap() > 0);
}

#[test]
fn forktree_records_every_pid_before_continuing() {
    let t = TempDir::new("helper-tree");
    let p = t.path("pids");
    let mut guard = Guard::default();
    guard.pidfile(&p);
    // The forked processes keep stdout: do not wait for its EOF.
    let mut cmd = command([
        "helper",
        &format!("pidfile={}", p.display()),
        "forktree=13",
        "exit=0",
    ]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let r = start(cmd).finish(LIMIT);
    assert_eq!(r.code, Some(0));
    let pids = read_pids(&p);
    assert_eq!(pids.len(), 14, "{pids:?}");
    assert!(
        pids[1..].iter().all(|&p| alive(p)),
        "forked processes sleep forever"
    );
}

#[test]
fn spawn_holds_the_pipe_and_daemon_does_not() {
    let t = TempDir::new("helper-spawn");
    let p = t.path("pids");
    let mut guard = Guard::default();
    guard.pidfile(&p);
    // spawn: the grandchild inherits stdout, so the reader sees EOF only when it exits.
    let start = Instant::now();
    let r = run(
        [
            "helper",
            &format!("spawn=pidfile={};sleep=700;out=2", p.display()),
            "out=1",
        ],
        LIMIT,
    );
    assert_eq!(r.stdout, b"aab");
    assert!(start.elapsed() >= Duration::from_millis(600));
    // daemon: its own session, stdio on /dev/null, so the reader is not held.
    let d = t.path("daemon");
    guard.pidfile(&d);
    let start = Instant::now();
    let r = run(
        [
            "helper",
            &format!("daemon=pidfile={};sleep=60000", d.display()),
        ],
        LIMIT,
    );
    assert_eq!(r.code, Some(0));
    assert!(start.elapsed() < Duration::from_secs(20));
    let pid = wait_pids(&d, 1, Duration::from_secs(5));
    assert_eq!(pid.len(), 1);
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid[0])).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // pgrp and session are its own, not ours.
    assert_ne!(f[2], std::process::id().to_string());
    assert_eq!(f[2], f[3], "pgid == sid after setsid: {after}");
    let fd1 = std::fs::read_link(format!("/proc/{}/fd/1", pid[0])).unwrap();
    assert_eq!(fd1.to_str(), Some("/dev/null"));
}

#[test]
fn ppid_loop_reports_the_parent() {
    let t = TempDir::new("helper-ppid");
    let f = t.path("ppid");
    let running = start(command([
        "helper",
        &format!("ppid-loop={}:20", f.display()),
    ]));
    let mut guard = Guard::default();
    guard.child(running.pid());
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = String::new();
    while Instant::now() < deadline {
        seen = std::fs::read_to_string(&f).unwrap_or_default();
        if !seen.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(seen.trim(), std::process::id().to_string());
    running.signal(libc::SIGKILL);
    let _ = running.finish(LIMIT);
}
