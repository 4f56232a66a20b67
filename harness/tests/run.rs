//! `pidring run` end to end: the built binary supervising `pidring helper` processes.
//! Every case checks pidring's exit status and its `--report`.

mod common;

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(60);

fn s(v: &serde_json::Value, k: &str) -> String {
    v[k].as_str().unwrap_or_default().to_string()
}

#[test]
fn exit_code_of_program() {
    let t = TempDir::new("exit");
    let r = run_helper(&t.path("r.json"), &[], &["out=3", "exit=3"], LIMIT);
    assert_eq!(r.code, Some(3), "{}", r.stderr_text());
    assert_eq!(r.stdout, b"abc");
    assert!(
        r.stderr.is_empty(),
        "pidring printed something of its own: {}",
        r.stderr_text()
    );
    let rep = report(&t.path("r.json"));
    assert_eq!(rep["exit_code"], 3);
    assert_eq!(rep["status_code"], 3);
    assert_eq!(rep["signal"], serde_json::Value::Null);
    assert_eq!(rep["timed_out"], false);
    assert_eq!(s(&rep, "reason"), "exited");
    assert_eq!(rep["stdout_bytes"], 3);
    assert_eq!(rep["stderr_bytes"], 0);
    assert_eq!(rep["descendants_killed"], 0);
    assert!(
        ["cgroup", "process-group"].contains(&s(&rep, "containment").as_str()),
        "{rep}"
    );
    assert_eq!(s(&rep, "backend"), "uring");
    assert!(
        rep["duration_ms"].as_f64().is_some_and(|d| d >= 0.0),
        "{rep}"
    );

    let r = run_helper(&t.path("r0.json"), &[], &[], LIMIT);
    assert_eq!(r.code, Some(0));
    assert_eq!(report(&t.path("r0.json"))["exit_code"], 0);
}

#[test]
fn death_by_signal_is_128_plus_n() {
    let t = TempDir::new("signal");
    for (sig, name) in [(9, "KILL"), (15, "TERM"), (6, "ABRT")] {
        let path = t.path(&format!("{name}.json"));
        let r = run_helper(&path, &[], &["out=1", &format!("raise={name}")], LIMIT);
        assert_eq!(r.code, Some(128 + sig), "{name}: {}", r.stderr_text());
        let rep = report(&path);
        assert_eq!(rep["exit_code"], 128 + sig);
        assert_eq!(rep["signal"], sig);
        assert_eq!(rep["status_code"], serde_json::Value::Null);
        assert_eq!(s(&rep, "reason"), "signaled");
        assert_eq!(rep["timed_out"], false);
    }
}

#[test]
fn timeout_is_124() {
    let t = TempDir::new("timeout");
    let r = run_helper(
        &t.path("r.json"),
        &["--timeout", "300ms"],
        &["out=2", "sleep=60000"],
        LIMIT,
    );
    assert_eq!(r.code, Some(124), "{}", r.stderr_text());
    assert_eq!(r.stdout, b"ab");
    assert!(r.elapsed < Duration::from_secs(20), "{:?}", r.elapsed);
    let rep = report(&t.path("r.json"));
    assert_eq!(rep["exit_code"], 124);
    assert_eq!(rep["timed_out"], true);
    assert_eq!(s(&rep, "reason"), "timed_out");
    assert_eq!(rep["signal"], 15, "{rep}");
    assert_eq!(rep["tree_signalled"], true);

    // --preserve-status: PROGRAM's own status instead.
    let r = run_helper(
        &t.path("p.json"),
        &["--timeout", "0.3", "--preserve-status"],
        &["sleep=60000"],
        LIMIT,
    );
    assert_eq!(r.code, Some(128 + 15), "{}", r.stderr_text());
    assert_eq!(report(&t.path("p.json"))["timed_out"], true);

    // --timeout 0 disables the timeout, as in GNU timeout.
    let r = run_helper(
        &t.path("z.json"),
        &["--timeout", "0"],
        &["sleep=300", "exit=5"],
        LIMIT,
    );
    assert_eq!(r.code, Some(5));
    assert_eq!(report(&t.path("z.json"))["timed_out"], false);
}

#[test]
fn timeout_against_a_sigterm_ignoring_program_escalates_to_sigkill() {
    let t = TempDir::new("ignore-term");
    let (timeout, grace) = (0.5, 1.0);
    let r = run_helper(
        &t.path("r.json"),
        &["--timeout", "500ms", "--grace", "1s"],
        &["ignore-term", "sleep=60000"],
        LIMIT,
    );
    assert_eq!(r.code, Some(124), "{}", r.stderr_text());
    let rep = report(&t.path("r.json"));
    assert_eq!(rep["timed_out"], true);
    assert_eq!(
        rep["signal"], 9,
        "SIGTERM was ignored, so SIGKILL ended it: {rep}"
    );
    // Within timeout + grace + a generous margin; and not before the grace period ran out.
    let secs = r.elapsed.as_secs_f64();
    assert!(secs < timeout + grace + 10.0, "took {secs}s");
    assert!(
        secs >= timeout + grace - 0.1,
        "SIGKILL came before the grace period ended: {secs}s"
    );
}

#[test]
fn program_not_found_is_127() {
    let t = TempDir::new("notfound");
    for (i, prog) in [
        "/nonexistent/pidring-no-such-program",
        "pidring-no-such-program-on-path",
    ]
    .iter()
    .enumerate()
    {
        let path = t.path(&format!("{i}.json"));
        let r = run(
            ["run", "--report", path.to_str().unwrap(), "--", prog, "x"],
            LIMIT,
        );
        assert_eq!(r.code, Some(127), "{prog}: {}", r.stderr_text());
        let line = r.stderr_text();
        assert!(
            line.starts_with("pidring: ") && line.lines().count() == 1,
            "one line: {line:?}"
        );
        let rep = report(&path);
        assert_eq!(rep["exit_code"], 127);
        assert_eq!(s(&rep, "reason"), "spawn_failed");
        assert!(s(&rep, "error").contains("not found"), "{rep}");
        assert_eq!(rep["pid"], serde_json::Value::Null);
    }
}

#[test]
fn program_not_executable_is_126() {
    use std::os::unix::fs::PermissionsExt;
    let t = TempDir::new("noexec");
    let file = t.path("not-executable");
    std::fs::write(&file, "#!/bin/sh\necho no\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let garbage = t.path("garbage");
    std::fs::write(&garbage, [0u8, 1, 2, 3, 0xff, 0xfe, 0, 0]).unwrap();
    std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o755)).unwrap();
    for (i, prog) in [file.clone(), t.0.clone(), garbage.clone()]
        .iter()
        .enumerate()
    {
        let path = t.path(&format!("{i}.json"));
        let r = run(
            [
                "run".as_ref(),
                "--report".as_ref(),
                path.as_os_str(),
                "--".as_ref(),
                prog.as_os_str(),
            ],
            LIMIT,
        );
        // Root bypasses permission bits for reading, not for execute: EACCES stays EACCES.
        assert_eq!(r.code, Some(126), "{}: {}", prog.display(), r.stderr_text());
        let rep = report(&path);
        assert_eq!(rep["exit_code"], 126);
        assert_eq!(s(&rep, "reason"), "spawn_failed");
        assert!(!s(&rep, "error").is_empty());
    }
}

#[test]
fn pidring_own_failures_are_125_with_one_line() {
    let t = TempDir::new("usage");
    let report_path = t.path("r.json");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["run", "--timeout", "abc", "--", "true"],
            "invalid duration 'abc' for --timeout",
        ),
        (
            vec!["run", "--timeout", "-1", "--", "true"],
            "invalid duration '-1' for --timeout",
        ),
        (
            vec!["run", "--grace", "nan", "--", "true"],
            "invalid duration 'nan' for --grace",
        ),
        (
            vec!["run", "--drain", "", "--", "true"],
            "invalid duration '' for --drain",
        ),
        (
            vec!["run", "--timeout", "-inf", "--", "true"],
            "negative durations are not allowed",
        ),
        (
            vec!["run", "--timeout", "1x", "--", "true"],
            "unknown unit 'x'",
        ),
        (
            vec!["run", "--signal", "NOPE", "--", "true"],
            "invalid signal 'NOPE' for --signal",
        ),
        (
            vec!["run", "--backend", "kqueue", "--", "true"],
            "invalid value 'kqueue'",
        ),
        (
            vec!["run", "--report", "/nonexistent-dir/r.json", "--", "true"],
            "cannot write report",
        ),
        (
            vec!["run", "--report", "/", "--", "true"],
            "cannot write report",
        ),
    ];
    for (args, expect) in cases {
        let r = run(&args, LIMIT);
        r.assert_no_panic(&format!("{args:?}"));
        assert_eq!(r.code, Some(125), "{args:?}: {}", r.stderr_text());
        let err = r.stderr_text();
        assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err:?}");
        assert!(
            err.starts_with("pidring: ") && err.contains(expect),
            "{args:?}: {err:?}"
        );
    }
    // The report says which driver and containment ran, and why.
    let r = run(
        [
            "run",
            "--report",
            report_path.to_str().unwrap(),
            "--backend",
            "epoll",
            "--containment",
            "process-group",
            "--",
            "true",
        ],
        LIMIT,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr_text());
    let rep = report(&report_path);
    assert_eq!(rep["backend"], "epoll", "{rep}");
    assert_eq!(rep["backend_reason"], "requested", "{rep}");
    assert_eq!(rep["containment"], "process-group", "{rep}");
    assert_eq!(rep["containment_reason"], "requested", "{rep}");
    // An unwritable report is refused before PROGRAM runs.
    let marker = t.path("ran");
    let r = run(
        [
            "run",
            "--report",
            "/nonexistent-dir/r.json",
            "--",
            BIN,
            "helper",
            &format!("pidfile={}", marker.display()),
        ],
        LIMIT,
    );
    assert_eq!(r.code, Some(125));
    assert!(
        !marker.exists(),
        "PROGRAM ran although the report could not be written"
    );

    // Huge timeouts mean "forever", as in GNU timeout 9.x (issue 12, defect 4: they were
    // refused with 125 before).
    for huge in [
        "1e400",
        "99999999999999999999999h",
        "inf",
        "3650000d",
        "2.34e+5d",
    ] {
        let r = run(["run", "--timeout", huge, "--", "true"], LIMIT);
        assert_eq!(r.code, Some(0), "--timeout {huge}: {}", r.stderr_text());
    }

    // clap's usage errors are 125 too; --help and --version are 0.
    for args in [
        vec!["run", "--no-such-option", "true"],
        vec!["run"],
        vec![],
        vec!["no-such-command"],
    ] {
        let r = run(&args, LIMIT);
        assert_eq!(r.code, Some(125), "{args:?}: {}", r.stderr_text());
    }
    // A missing argument is named, on the one line.
    for args in [vec!["run"], vec!["run", "--timeout", "1", "--"]] {
        let r = run(&args, LIMIT);
        let text = r.stderr_text();
        assert_eq!(r.code, Some(125), "{args:?}: {text}");
        assert_eq!(text.lines().count(), 1, "{args:?}: {text}");
        assert!(text.contains("<PROGRAM>"), "{args:?}: {text}");
    }
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["--version"],
        vec!["help", "run"],
    ] {
        let r = run(&args, LIMIT);
        assert_eq!(r.code, Some(0), "{args:?}: {}", r.stderr_text());
        assert!(!r.stdout.is_empty());
    }
    let help = String::from_utf8(run(["run", "--help"], LIMIT).stdout).unwrap();
    for word in [
        "--timeout",
        "--grace",
        "--drain",
        "--containment",
        "--backend",
        "--report",
        "--verbose",
        "124",
        "127",
    ] {
        assert!(help.contains(word), "--help lacks {word}");
    }
    assert!(
        !String::from_utf8(run(["--help"], LIMIT).stdout)
            .unwrap()
            .contains("helper"),
        "helper must be hidden"
    );
}

#[test]
fn big_output_just_before_exit_arrives_byte_for_byte() {
    let t = TempDir::new("big");
    let (out, err) = (50 << 20, 1 << 20);
    let r = run_helper(
        &t.path("r.json"),
        &[],
        &[&format!("out={out}"), &format!("err={err}"), "exit=7"],
        LIMIT,
    );
    assert_eq!(
        r.code,
        Some(7),
        "{}",
        String::from_utf8_lossy(&r.stderr[..r.stderr.len().min(300)])
    );
    assert_eq!(r.stdout.len(), out);
    assert_eq!(r.stderr.len(), err);
    assert_eq!(fnv1a(&r.stdout), pattern_hash(out), "stdout differs");
    assert_eq!(fnv1a(&r.stderr), pattern_hash(err), "stderr differs");
    let rep = report(&t.path("r.json"));
    assert_eq!(rep["stdout_bytes"], out as u64);
    assert_eq!(rep["stderr_bytes"], err as u64);
    assert_eq!(rep["exit_code"], 7);
}

#[test]
fn lines_and_interleaved_streams_pass_through() {
    let t = TempDir::new("lines");
    let r = run_helper(
        &t.path("r.json"),
        &[],
        &["lines=1000", "err=5", "lines=2"],
        LIMIT,
    );
    assert_eq!(r.code, Some(0));
    let mut expect = String::new();
    for i in 0..1000 {
        expect += &format!("line {i}\n");
    }
    expect += "line 0\nline 1\n";
    assert_eq!(String::from_utf8(r.stdout).unwrap(), expect);
    assert_eq!(r.stderr, b"abcde");
}

#[test]
fn stdin_is_passed_through() {
    let mut cmd = command(["run", "--", "cat"]);
    cmd.stdin(std::process::Stdio::piped());
    let mut running = start(cmd);
    {
        use std::io::Write;
        let mut stdin = running.child.stdin.take().unwrap();
        stdin.write_all(b"hello through pidring\n").unwrap();
    }
    let r = running.finish(LIMIT);
    assert_eq!(r.code, Some(0), "{}", r.stderr_text());
    assert_eq!(r.stdout, b"hello through pidring\n");
}

#[test]
fn grandchild_holding_stdout_is_killed_after_drain() {
    let t = TempDir::new("drain");
    let pids = t.path("pids");
    let mut guard = Guard::default();
    guard.pidfile(&pids);
    let (drain, grace) = (0.5, 1.0);
    let spawn = format!("spawn=ignore-term;pidfile={};sleep=60000", pids.display());
    let r = run_helper(
        &t.path("r.json"),
        &["--drain", "500ms", "--grace", "1s"],
        &[
            "out=4",
            &spawn,
            &format!("wait-lines={}:1", pids.display()),
            "exit=0",
        ],
        LIMIT,
    );
    assert_eq!(r.code, Some(0), "PROGRAM's own status: {}", r.stderr_text());
    assert_eq!(r.stdout, b"abcd");
    let secs = r.elapsed.as_secs_f64();
    assert!(secs < drain + grace + 10.0, "took {secs}s");
    let grandchild = read_pids(&pids);
    assert_eq!(grandchild.len(), 1);
    assert!(
        wait_dead(&grandchild, Duration::from_millis(500)).is_empty(),
        "grandchild {grandchild:?} survived"
    );
    let rep = report(&t.path("r.json"));
    assert_eq!(s(&rep, "reason"), "drain_expired", "{rep}");
    assert_eq!(rep["exit_code"], 0);
    assert_eq!(rep["status_code"], 0);
    assert_eq!(rep["tree_signalled"], true);
    assert_eq!(rep["descendants_killed"], 1, "{rep}");
}

fn daemon_case(containment: &str) {
    let t = TempDir::new(&format!("daemon-{containment}"));
    let pids = t.path("pids");
    let mut guard = Guard::default();
    guard.pidfile(&pids);
    let daemon = format!("daemon=pidfile={};ignore-term;sleep=60000", pids.display());
    let r = run_helper(
        &t.path("r.json"),
        &[
            "--containment",
            containment,
            "--drain",
            "300ms",
            "--grace",
            "500ms",
        ],
        &[
            &daemon,
            &format!("wait-lines={}:1", pids.display()),
            "exit=0",
        ],
        LIMIT,
    );
    if containment == "cgroup"
        && r.code == Some(125)
        && r.stderr_text().contains("--containment cgroup")
    {
        eprintln!("SKIPPED: no writable cgroup v2 here: {}", r.stderr_text());
        return;
    }
    assert_eq!(r.code, Some(0), "{}", r.stderr_text());
    let d = wait_pids(&pids, 1, Duration::from_secs(2));
    assert_eq!(d.len(), 1, "the daemon did not record its pid");
    assert!(
        wait_dead(&d, Duration::from_millis(500)).is_empty(),
        "daemon {d:?} survived pidring ({containment})"
    );
    let rep = report(&t.path("r.json"));
    assert_eq!(s(&rep, "containment"), containment);
    assert_eq!(rep["descendants_killed"], 1, "{rep}");
}

#[test]
fn double_forked_setsid_daemon_is_dead_after_exit_cgroup() {
    daemon_case("cgroup");
}

#[test]
fn double_forked_setsid_daemon_is_dead_after_exit_process_group() {
    daemon_case("process-group");
}

fn fork_tree_case(containment: &str) {
    let t = TempDir::new(&format!("forktree-{containment}"));
    let pids = t.path("pids");
    let mut guard = Guard::default();
    guard.pidfile(&pids);
    // 20 forked processes holding stdout, plus a setsid'd child with 3 forked children of its
    // own: 24 descendants, 25 pids recorded with the main process.
    let r = run_helper(
        &t.path("r.json"),
        &[
            "--containment",
            containment,
            "--drain",
            "200ms",
            "--grace",
            "500ms",
        ],
        &[
            &format!("pidfile={}", pids.display()),
            "forktree=20",
            &format!(
                "spawn=setsid;pidfile={};forktree=3;sleep=60000",
                pids.display()
            ),
            &format!("wait-lines={}:25", pids.display()),
            "exit=9",
        ],
        LIMIT,
    );
    assert_eq!(r.code, Some(9), "{}", r.stderr_text());
    let all = read_pids(&pids);
    let left = wait_dead(&all, Duration::from_millis(500));
    assert!(left.is_empty(), "survivors ({containment}): {left:?}");
    assert_eq!(all.len(), 25, "{all:?}");
    let rep = report(&t.path("r.json"));
    if containment == "cgroup" {
        assert_eq!(rep["descendants_killed"], 24, "{rep}");
    } else {
        // KNOWN LIBRARY LIMITATION: in process-group mode the pool counts a group signal as one
        // process (core/src/containment/process_group.rs `signal` returns Ok(1)), so only the
        // 4 setsid'd processes pidring's own sweep killed are counted exactly, plus 1.
        let n = rep["descendants_killed"].as_u64().unwrap_or(0);
        assert!((5..=24).contains(&n), "{rep}");
    }
    assert_eq!(s(&rep, "reason"), "drain_expired");
}

#[test]
fn fork_tree_is_dead_after_exit_cgroup() {
    fork_tree_case("cgroup");
}

#[test]
fn fork_tree_is_dead_after_exit_process_group() {
    fork_tree_case("process-group");
}

#[test]
fn sigterm_to_pidring_ends_the_whole_tree() {
    let t = TempDir::new("sigterm");
    let pids = t.path("pids");
    let mut guard = Guard::default();
    guard.pidfile(&pids);
    let steps = [
        format!("pidfile={}", pids.display()),
        "forktree=4".to_string(),
        format!("spawn=pidfile={};sleep=60000", pids.display()),
        format!("daemon=pidfile={};sleep=60000", pids.display()),
        "sleep=60000".to_string(),
    ];
    let steps: Vec<&str> = steps.iter().map(String::as_str).collect();
    let running = start(command(helper_args(
        &t.path("r.json"),
        &["--grace", "2s"],
        &steps,
    )));
    guard.child(running.pid());
    let before = wait_pids(&pids, 7, Duration::from_secs(20));
    assert_eq!(before.len(), 7, "tree did not start: {before:?}");
    running.signal(libc::SIGTERM);
    let r = running.finish(LIMIT);
    assert_eq!(r.code, Some(128 + 15), "{}", r.stderr_text());
    assert!(r.elapsed < Duration::from_secs(30));
    let left = wait_dead(&before, Duration::from_millis(500));
    assert!(
        left.is_empty(),
        "survivors after SIGTERM to pidring: {left:?}"
    );
    let rep = report(&t.path("r.json"));
    assert_eq!(s(&rep, "reason"), "terminated", "{rep}");
    assert_eq!(rep["received_signal"], 15);
    assert_eq!(rep["signal"], 15);
    assert_eq!(rep["timed_out"], false);
    assert_eq!(rep["exit_code"], 143);
}

#[test]
fn second_sigint_kills_at_once() {
    let t = TempDir::new("sigint");
    let pids = t.path("pids");
    let mut guard = Guard::default();
    guard.pidfile(&pids);
    let pidfile = format!("pidfile={}", pids.display());
    let running = start(command(helper_args(
        &t.path("r.json"),
        &["--grace", "120s"],
        &["ignore-term", &pidfile, "sleep=60000"],
    )));
    guard.child(running.pid());
    assert_eq!(wait_pids(&pids, 1, Duration::from_secs(20)).len(), 1);
    running.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(300));
    running.signal(libc::SIGINT);
    let r = running.finish(Duration::from_secs(30));
    assert_eq!(r.code, Some(128 + 9), "{}", r.stderr_text());
    let rep = report(&t.path("r.json"));
    assert_eq!(rep["received_signal"], 2);
    assert_eq!(rep["signal"], 9);
}

#[test]
fn sigusr1_is_forwarded_to_program() {
    let t = TempDir::new("usr1");
    let pids = t.path("pids");
    let mut guard = Guard::default();
    guard.pidfile(&pids);
    let pidfile = format!("pidfile={}", pids.display());
    let running = start(command(helper_args(
        &t.path("r.json"),
        &[],
        &[&pidfile, "sleep=60000"],
    )));
    guard.child(running.pid());
    assert_eq!(wait_pids(&pids, 1, Duration::from_secs(20)).len(), 1);
    running.signal(libc::SIGUSR1);
    let r = running.finish(LIMIT);
    // The helper does not handle SIGUSR1: its default action ends it.
    assert_eq!(r.code, Some(128 + libc::SIGUSR1), "{}", r.stderr_text());
    let rep = report(&t.path("r.json"));
    assert_eq!(s(&rep, "reason"), "signaled");
    assert_eq!(rep["signal"], libc::SIGUSR1);
    assert_eq!(rep["received_signal"], serde_json::Value::Null);
}

#[test]
fn closed_stdout_does_not_kill_pidring() {
    // The reader of pidring's stdout goes away: pidring must not panic or die of SIGPIPE; the
    // program gets the SIGPIPE it would have had writing to that pipe itself.
    let t = TempDir::new("epipe");
    let mut running = start_with(
        command(helper_args(&t.path("r.json"), &[], &["out=100000000"])),
        false,
    );
    drop(running.child.stdout.take());
    let r = running.finish(LIMIT);
    r.assert_no_panic("closed stdout");
    assert_eq!(r.code, Some(128 + libc::SIGPIPE), "{}", r.stderr_text());
    let rep = report(&t.path("r.json"));
    assert_eq!(rep["signal"], libc::SIGPIPE, "{rep}");
    assert!(rep["stdout_dropped"].as_u64().unwrap_or(0) > 0, "{rep}");

    // `pidring run -- yes | head -1` ends, as `timeout 10 yes | head -1` does.
    let mut running = start_with(command(["run", "--", "yes"]), false);
    {
        use std::io::Read;
        let mut out = running.child.stdout.take().unwrap();
        let mut first = [0u8; 2];
        out.read_exact(&mut first).unwrap();
        assert_eq!(&first, b"y\n");
    } // the reader goes away here
    let r = running.finish(LIMIT);
    r.assert_no_panic("yes | head");
    assert_eq!(r.code, Some(128 + libc::SIGPIPE), "{}", r.stderr_text());
}

#[test]
fn program_gets_default_sigpipe_disposition() {
    // As under a shell: `yes | head` ends quietly by SIGPIPE, not with a "Broken pipe" error.
    let r = run(
        [
            "run",
            "--",
            "sh",
            "-c",
            "yes | head -c 1 >/dev/null; grep -E '^Sig(Ign|Blk)' /proc/self/status",
        ],
        LIMIT,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr_text());
    assert!(r.stderr.is_empty(), "{}", r.stderr_text());
    let status = String::from_utf8(r.stdout).unwrap();
    for line in status.lines() {
        let mask = u64::from_str_radix(line.split_whitespace().nth(1).unwrap_or("0"), 16).unwrap();
        assert_eq!(
            mask & (1 << (libc::SIGPIPE - 1)),
            0,
            "SIGPIPE ignored or blocked in PROGRAM: {line}"
        );
    }
}

#[test]
fn verbose_logs_to_stderr_and_quiet_otherwise() {
    let r = run(["run", "-v", "--", BIN, "helper", "out=1"], LIMIT);
    assert_eq!(r.code, Some(0));
    assert_eq!(r.stdout, b"a", "logs must not go to stdout");
    assert!(r.stderr_text().contains("started"), "{}", r.stderr_text());
    let r = run(["run", "--", BIN, "helper", "out=1"], LIMIT);
    assert!(r.stderr.is_empty(), "{}", r.stderr_text());
}

#[test]
fn odd_inputs_never_panic() {
    let bad_utf8 = OsString::from_vec(vec![b'x', 0xff, 0xfe]);
    let cases: Vec<Vec<OsString>> = vec![
        vec!["run".into(), "--".into()],
        vec!["run".into(), "--".into(), "".into()],
        vec!["run".into(), "".into()],
        vec!["run".into(), "--".into(), "--".into()],
        vec!["run".into(), "--".into(), "-".into()],
        vec![
            "run".into(),
            "--timeout".into(),
            "99999999999999999999s".into(),
            "--".into(),
            "true".into(),
        ],
        vec![
            "run".into(),
            "--timeout".into(),
            "36500d".into(),
            "--".into(),
            "true".into(),
        ],
        vec![
            "run".into(),
            "--grace".into(),
            "18446744073709551615".into(),
            "--".into(),
            "true".into(),
        ],
        vec![
            "run".into(),
            "--drain".into(),
            "0".into(),
            "--grace".into(),
            "0".into(),
            "--".into(),
            "true".into(),
        ],
        vec![
            "run".into(),
            "--timeout".into(),
            "1ns".into(),
            "--".into(),
            "true".into(),
        ],
        vec![
            "run".into(),
            "--timeout".into(),
            bad_utf8.clone(),
            "--".into(),
            "true".into(),
        ],
        vec!["run".into(), "--".into(), bad_utf8.clone()],
        vec!["run".into(), "--".into(), "echo".into(), bad_utf8.clone()],
        vec![
            "run".into(),
            "--report".into(),
            bad_utf8.clone(),
            "--".into(),
            "true".into(),
        ],
        vec!["run".into(), bad_utf8.clone()],
        vec![bad_utf8.clone()],
        vec![
            "run".into(),
            "--containment".into(),
            "weird".into(),
            "true".into(),
        ],
        vec!["run".into(), "--".into(), "/".into()],
        vec!["run".into(), "--".into(), "/dev/null".into()],
        vec!["run".into(), "--".into(), "a".repeat(5000).into()],
        vec![
            "run".into(),
            "--".into(),
            "true".into(),
            "x".repeat(100_000).into(),
        ],
        vec!["helper".into(), bad_utf8.clone()],
        vec!["helper".into(), "out=99999999999999999999999".into()],
        vec!["helper".into(), "spawn=".into(), "daemon=".into()],
        vec!["helper".into(), "exit=-1".into()],
    ];
    let t = TempDir::new("odd");
    for args in cases {
        let r = {
            let mut cmd = command(&args);
            cmd.current_dir(&t.0); // a non-UTF-8 report path lands here
            start(cmd).finish(LIMIT)
        };
        r.assert_no_panic(&format!("{args:?}"));
        assert!(r.code.is_some(), "{args:?}");
    }
}

#[test]
fn a_stalled_stdout_consumer_does_not_hold_pidring_past_the_timeout_or_sigterm() {
    // PROGRAM writes ~26 MB at a bounded rate; nobody reads pidring's stdout. pidring must
    // still see the timeout (or SIGTERM) through and exit, dropping what it cannot write.
    let t = TempDir::new("stalled");
    let steps: Vec<&str> = ["out=65536", "sleep=5"]
        .iter()
        .copied()
        .cycle()
        .take(800)
        .collect();
    for case in ["timeout", "sigterm"] {
        let path = t.path(&format!("{case}.json"));
        let options: &[&str] = if case == "timeout" {
            &["--timeout", "1s", "--grace", "1s"]
        } else {
            &["--grace", "1s"]
        };
        let running = start_with(command(helper_args(&path, options, &steps)), false);
        let mut guard = Guard::default();
        guard.child(running.pid());
        if case == "sigterm" {
            std::thread::sleep(Duration::from_millis(1500));
            running.signal(libc::SIGTERM);
        }
        // `running.child.stdout` stays open and unread until `finish` returns.
        let r = running.finish(Duration::from_secs(30));
        r.assert_no_panic(case);
        let rep = report(&path);
        if case == "timeout" {
            assert_eq!(r.code, Some(124), "{}", r.stderr_text());
            assert_eq!(rep["timed_out"], true);
        } else {
            assert_eq!(r.code, Some(128 + 15), "{}", r.stderr_text());
            assert_eq!(rep["received_signal"], 15);
        }
        assert!(rep["stdout_dropped"].as_u64().unwrap_or(0) > 0, "{rep}");
    }
}

#[test]
fn signals_ignored_on_entry_stay_ignored() {
    // As under `nohup`: SIGHUP (and here SIGINT) ignored when pidring starts stay ignored;
    // SIGTERM still ends the tree.
    let t = TempDir::new("nohup");
    let pids = t.path("pids");
    let mut guard = Guard::default();
    guard.pidfile(&pids);
    let pidfile = format!("pidfile={}", pids.display());
    let mut cmd = command(helper_args(
        &t.path("r.json"),
        &[],
        &[&pidfile, "sleep=60000"],
    ));
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: signal(2) is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGHUP, libc::SIG_IGN);
                libc::signal(libc::SIGINT, libc::SIG_IGN);
                Ok(())
            });
        }
    }
    let mut running = start(cmd);
    guard.child(running.pid());
    let program = wait_pids(&pids, 1, Duration::from_secs(20));
    assert_eq!(program.len(), 1);
    running.signal(libc::SIGHUP);
    running.signal(libc::SIGINT);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        running.child.try_wait().unwrap().is_none(),
        "pidring ended on an ignored signal"
    );
    assert!(
        alive(program[0]),
        "PROGRAM ended on a signal pidring ignores"
    );
    running.signal(libc::SIGTERM);
    let r = running.finish(LIMIT);
    assert_eq!(r.code, Some(128 + 15), "{}", r.stderr_text());
    assert_eq!(report(&t.path("r.json"))["received_signal"], 15);
}

#[test]
fn closed_standard_fds_are_survived() {
    // `pidring run … <&- >&- 2>&-`: no panic, PROGRAM's status, its output goes nowhere (not
    // into a file pidring opened on the free fd numbers).
    let t = TempDir::new("closed-fds");
    let path = t.path("r.json");
    let mut cmd = command(helper_args(&path, &[], &["out=5", "err=5", "exit=6"]));
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: close(2) is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                libc::close(0);
                libc::close(1);
                libc::close(2);
                Ok(())
            });
        }
    }
    let r = start(cmd).finish(LIMIT);
    assert_eq!(r.code, Some(6));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with('{') && !text.contains("abcde"), "{text}");
    let rep = report(&path);
    assert_eq!(rep["exit_code"], 6);
    // The /dev/null pidring put on the closed fds is passed through to PROGRAM (a relay is
    // only used for pipes and sockets, issue 12): no byte count. It used to be relayed.
    assert_eq!(rep["stdout_bytes"], serde_json::Value::Null, "{rep}");
}
