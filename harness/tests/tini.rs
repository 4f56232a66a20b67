//! tini's behaviours through the `tini` personality (a symlink named `tini` to pidring), written
//! after tini's own `test/run_inner_tests.py` and `test/run_outer_tests.py` (the exit-code,
//! reaping, signal, process-group, signal-configuration and parent-death tests, and the
//! container ones as PID 1 of a PID namespace). Where pidring differs on purpose, the test
//! says so and checks pidring's behaviour instead.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(60);

fn tini(p: &Personalities, args: &[&str]) -> Command {
    let mut cmd = Command::new(p.tini());
    cmd.args(args)
        .current_dir(&p.dir.0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn script(p: &Personalities, name: &str, text: &str) -> String {
    let path = p.dir.path(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

#[test]
fn exit_code_remapping() {
    let p = Personalities::new("tini-exit");
    for code in [0, 1, 2, 3, 42, 126, 127, 128, 130, 143, 200, 254, 255] {
        // Inclusive: `-e CODE` maps CODE to 0.
        let r = start(tini(
            &p,
            &[
                "-e",
                &code.to_string(),
                "--",
                "sh",
                "-c",
                &format!("exit {code}"),
            ],
        ))
        .finish(LIMIT);
        assert_eq!(r.code, Some(0), "-e {code}: {}", r.stderr_text());
        // Exclusive: every other code remapped, CODE itself comes through (POSIXLY_CORRECT:
        // no `--` needed).
        let mut args: Vec<String> = (0..=255u32)
            .filter(|&c| c != code)
            .flat_map(|c| ["-e".to_string(), c.to_string()])
            .collect();
        args.extend(["sh".into(), "-c".into(), format!("exit {code}")]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = tini(&p, &args);
        cmd.env("POSIXLY_CORRECT", "1");
        let r = start(cmd).finish(LIMIT);
        assert_eq!(
            r.code,
            Some(code as i32),
            "all but {code}: {}",
            r.stderr_text()
        );
    }
}

/// tini's reaping test (stage_1 / stage_2): stage 2 starts many short sleeps and exits; they
/// come back to tini as orphans; stage 1 then checks that no zombie is left in its group.
const REAPING_STAGE_1: &str = "#!/bin/sh
pg=$(ps -o pgid= -p $$)
sh -c 'for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do sleep 0.1 & done'
sleep 1
z=$(ps -eo pgid=,stat= | awk -v g=$pg '$1 == g && $2 ~ /^Z/' | wc -l)
echo zombies=$z
test $z = 0
";

#[test]
fn reaping() {
    let p = Personalities::new("tini-reaping");
    let stage_1 = script(&p, "stage_1.sh", REAPING_STAGE_1);
    for (args, env) in [
        (vec!["-s", stage_1.as_str()], None),
        (vec![stage_1.as_str()], Some(("TINI_SUBREAPER", ""))),
        // DIFFERS ON PURPOSE: tini without -s (not PID 1) warns "zombie reaping won't work"
        // and the test fails (tini's own suite expects that); pidring is always a subreaper.
        (vec![stage_1.as_str()], Some(("TINI_VERBOSITY", "1"))),
    ] {
        let mut cmd = tini(&p, &args);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let r = start(cmd).finish(LIMIT);
        assert_eq!(
            r.code,
            Some(0),
            "{args:?} {env:?}: {:?} {}",
            String::from_utf8_lossy(&r.stdout),
            r.stderr_text()
        );
        assert!(
            !r.stderr_text().contains("zombie reaping won't work"),
            "{}",
            r.stderr_text()
        );
        assert!(
            !r.stderr_text().contains("Reaped zombie process with pid="),
            "{}",
            r.stderr_text()
        );
    }
    // -w: a warning per zombie reaped.
    let r = start(tini(&p, &["-w", &stage_1])).finish(LIMIT);
    assert_eq!(r.code, Some(0), "{}", r.stderr_text());
    assert!(
        r.stderr_text().contains("Reaped zombie process with pid="),
        "{}",
        r.stderr_text()
    );
}

/// tini's signals test: PROGRAM (a shell running a child) gets the signal tini got, as
/// itself, and dies of it: 128 + N. pidring also ends the child left behind.
#[test]
fn signals_are_passed_on_as_themselves() {
    let p = Personalities::new("tini-signals");
    for sig in [libc::SIGTERM, libc::SIGUSR1, libc::SIGUSR2] {
        let mark = p.dir.path(&format!("signals-{sig}-{}", std::process::id()));
        let running = start(tini(
            &p,
            &[
                "--",
                "sh",
                "-c",
                &format!("{BIN} helper pidfile={} sleep=100000; true", mark.display()),
            ],
        ));
        assert_eq!(wait_pids(&mark, 1, Duration::from_secs(10)).len(), 1);
        running.signal(sig);
        let r = running.finish(LIMIT);
        let mark = mark.display().to_string();
        let left = with_marker(&mark);
        kill_marked(&mark);
        assert_eq!(r.code, Some(128 + sig), "signal {sig}: {}", r.stderr_text());
        assert!(left.is_empty(), "signal {sig}: survivors {left:?}");
    }
}

#[test]
fn a_reload_signal_stays_a_reload() {
    // `docker kill -s HUP`: the application reloads and goes on; nothing is terminated.
    let p = Personalities::new("tini-hup");
    let running = start(tini(
        &p,
        &[
            "--",
            "sh",
            "-c",
            "trap 'echo hup >> reloads' HUP; touch ready; while :; do sleep 0.05; done",
        ],
    ));
    assert!((0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        p.dir.path("ready").exists()
    }));
    for n in 1..=2 {
        running.signal(libc::SIGHUP);
        assert!(
            (0..500).any(|_| {
                std::thread::sleep(Duration::from_millis(10));
                std::fs::read_to_string(p.dir.path("reloads"))
                    .unwrap_or_default()
                    .lines()
                    .count()
                    == n
            }),
            "reload {n} not seen"
        );
    }
    running.signal(libc::SIGTERM);
    let r = running.finish(LIMIT);
    assert_eq!(r.code, Some(143), "{}", r.stderr_text());
}

#[test]
fn process_group_signals() {
    // tini -g (or TINI_KILL_PROCESS_GROUP): PROGRAM ignores SIGUSR1, its child does not; the
    // signal to tini reaches the whole group, the child dies, PROGRAM returns, tini exits.
    let p = Personalities::new("tini-pgroup");
    // (The child writes its pid once it has SIGUSR1 back at its default: a signal before that
    // would be ignored.)
    let stage_1 = "trap '' USR1; \
                   env --default-signal=USR1 sh -c 'echo $$ > child; exec sleep 1000' & wait $!";
    for (args, env) in [
        (vec!["-g", "--", "sh", "-c", stage_1], None),
        (
            vec!["--", "sh", "-c", stage_1],
            Some(("TINI_KILL_PROCESS_GROUP", "1")),
        ),
    ] {
        let _ = std::fs::remove_file(p.dir.path("child"));
        let mut cmd = tini(&p, &args);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let running = start(cmd);
        assert!((0..500).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            std::fs::read_to_string(p.dir.path("child")).is_ok_and(|s| !s.trim().is_empty())
        }));
        running.signal(libc::SIGUSR1);
        let r = running.finish(Duration::from_secs(10));
        assert_eq!(
            r.code,
            Some(128 + libc::SIGUSR1),
            "{args:?}: {}",
            r.stderr_text()
        );
    }
    // Without -g only PROGRAM gets it (and ignores it): still running until SIGTERM.
    let _ = std::fs::remove_file(p.dir.path("child"));
    let mut running = start(tini(&p, &["--", "sh", "-c", stage_1]));
    assert!((0..500).any(|_| {
        std::thread::sleep(Duration::from_millis(10));
        std::fs::read_to_string(p.dir.path("child")).is_ok_and(|s| !s.trim().is_empty())
    }));
    running.signal(libc::SIGUSR1);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        running.child.try_wait().unwrap().is_none(),
        "PROGRAM's child got the signal"
    );
    running.signal(libc::SIGTERM);
    let r = running.finish(LIMIT);
    assert_eq!(r.code, Some(143), "{}", r.stderr_text());
}

#[test]
fn signal_configuration() {
    // sigconf-test: started with TTOU, SEGV, INT ignored and TTIN, ILL, TERM blocked, PROGRAM
    // has them so too.
    let p = Personalities::new("tini-sigconf");
    let mut cmd = tini(&p, &["cat", "/proc/self/status"]);
    // SAFETY: signal(2) and sigprocmask(2) are async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            for sig in [libc::SIGTTOU, libc::SIGSEGV, libc::SIGINT] {
                libc::signal(sig, libc::SIG_IGN);
            }
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for sig in [libc::SIGTTIN, libc::SIGILL, libc::SIGTERM] {
                libc::sigaddset(&mut set, sig);
            }
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    let r = start(cmd).finish(LIMIT);
    assert_eq!(r.code, Some(0), "{}", r.stderr_text());
    let masks = sig_masks(&String::from_utf8_lossy(&r.stdout));
    for sig in [libc::SIGTTOU, libc::SIGSEGV, libc::SIGINT] {
        assert_ne!(masks["SigIgn"] & bit(sig), 0, "{sig} missing in SigIgn");
    }
    for sig in [libc::SIGTTIN, libc::SIGILL, libc::SIGTERM] {
        assert_ne!(masks["SigBlk"] & bit(sig), 0, "{sig} missing in SigBlk");
    }
}

#[test]
fn parent_death_signal() {
    // tini -p SIGUSR1: when tini's parent dies, tini gets SIGUSR1 and passes it on.
    let p = Personalities::new("tini-pdeath");
    script(
        &p,
        "stage_2.sh",
        "#!/bin/sh\ntrap 'echo ok > \"$2\"; exit 0' USR1\nkill -9 \"$1\"\nsleep 5 & wait\n",
    );
    let stage_1 = script(
        &p,
        "stage_1.sh",
        "#!/bin/sh\ntini -vvv -p SIGUSR1 -- ./stage_2.sh $$ \"$1\"\ntrue\n",
    );
    let ret = p.dir.path("ret");
    let mut cmd = p.sh(&format!("{stage_1} {}", ret.display()));
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let _ = cmd.status();
    assert!(
        (0..1000).any(|_| {
            std::thread::sleep(Duration::from_millis(10));
            std::fs::read_to_string(&ret).is_ok_and(|s| s == "ok\n")
        }),
        "PROGRAM did not get the parent-death signal"
    );
}

#[test]
fn command_line_exits() {
    // run_outer_tests.py's exit code tests.
    let p = Personalities::new("tini-exits");
    for (args, code) in [
        (&["-z"][..], 1),
        (&["-h"], 0),
        (&["zzzz"], 127),
        // tini's own suite expects 0 here, but tini 0.19 exits 1 (no program given): as tini.
        (&["-w"], 1),
        (&["--version"], 0),
        (&["-l"], 0),
        (&["-p", "KILL", "true"], 1),
        (&["-e", "256", "true"], 1),
    ] {
        let r = start(tini(&p, args)).finish(LIMIT);
        assert_eq!(r.code, Some(code), "{args:?}: {}", r.stderr_text());
    }
    let r = start(tini(&p, &["zzzz"])).finish(LIMIT);
    assert!(
        r.stderr_text()
            .contains("] exec zzzz failed: No such file or directory"),
        "{}",
        r.stderr_text()
    );
    let r = start(tini(&p, &["-z"])).finish(LIMIT);
    assert!(
        r.stderr_text().contains("invalid option -- 'z'"),
        "{}",
        r.stderr_text()
    );
    // As glibc's getopt permutes arguments, PROGRAM's own options need `--` (tini's usage
    // says so): `tini sh -c …` is an invalid option `-c`.
    let r = start(tini(&p, &["sh", "-c", "exit 0"])).finish(LIMIT);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr_text().contains("invalid option -- 'c'"),
        "{}",
        r.stderr_text()
    );
    // `pidring init` is the same command line.
    let r = run(["init", "--", "sh", "-c", "exit 5"], LIMIT);
    assert_eq!(r.code, Some(5));
}

#[test]
fn as_pid_1_of_a_pid_namespace() {
    // The container tests (`docker kill -s TERM|USR1|USR2` → 143|138|140; reaping as PID 1),
    // with `unshare --pid --fork` standing in for the container runtime.
    let ok = Command::new("unshare")
        .args(["--pid", "--fork", "true"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("SKIPPED: unshare --pid --fork is unavailable");
        return;
    }
    let p = Personalities::new("tini-pid1");
    for (sig, code) in [
        (libc::SIGTERM, 143),
        (libc::SIGUSR1, 138),
        (libc::SIGUSR2, 140),
    ] {
        let mark = p.dir.path(&format!("pid1-{sig}-{}", std::process::id()));
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork"])
            .arg(p.tini())
            .args(["--", "sh", "-c"])
            .arg(format!(
                "{BIN} helper pidfile={} sleep=100000; true",
                mark.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let running = start(cmd);
        assert_eq!(wait_pids(&mark, 1, Duration::from_secs(10)).len(), 1);
        // The personality's pid as this (outer) namespace sees it: unshare's child.
        let unshare = running.pid();
        let tini_pid: i32 =
            std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
                .unwrap_or_default()
                .split_whitespace()
                .next()
                .and_then(|s| s.parse().ok())
                .expect("tini's pid");
        // SAFETY: kill(2) on a process this test started (through unshare).
        unsafe { libc::kill(tini_pid, sig) };
        let r = running.finish(LIMIT);
        let mark = mark.display().to_string();
        let left = with_marker(&mark);
        kill_marked(&mark);
        assert_eq!(r.code, Some(code), "signal {sig}: {}", r.stderr_text());
        assert!(left.is_empty(), "signal {sig}: survivors {left:?}");
    }
}
