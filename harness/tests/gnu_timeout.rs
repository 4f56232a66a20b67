//! GNU timeout's behaviours through the `timeout` personality (a symlink named `timeout` to
//! pidring, first on PATH), written after GNU coreutils' `tests/timeout/*.sh` and
//! `timeout-blocked.pl`: each test below is one of their assertions, run as a shell line the
//! way they run it. Where pidring differs on purpose, the test says so and checks pidring's
//! behaviour instead.

mod common;

use std::os::unix::process::CommandExt;
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(60);

/// Runs `script` under `sh` with `timeout` being pidring; returns the run.
fn sh(p: &Personalities, script: &str) -> Run {
    start(p.sh(script)).finish(LIMIT)
}

/// `returns_ CODE timeout ...`: the script's status.
fn status(p: &Personalities, script: &str) -> i32 {
    let r = sh(p, script);
    if !r.stderr.is_empty() {
        eprintln!("{script}: stderr: {}", r.stderr_text());
    }
    r.code.unwrap_or(-1)
}

#[test]
fn timeout_sh() {
    let p = Personalities::new("gnu-timeout-sh");
    // no timeout; suffix; disabled timeout
    assert_eq!(status(&p, "timeout 10 true"), 0);
    assert_eq!(status(&p, "timeout 1d true"), 0);
    assert_eq!(status(&p, "timeout 0 true"), 0);
    // exit status propagation
    assert_eq!(status(&p, "timeout 10 sh -c 'exit 2'"), 2);
    // timeout
    assert_eq!(status(&p, "timeout .1 sleep 10"), 124);
    // exit status propagation even on timeout: 128+TERM, not 124
    assert_eq!(status(&p, "timeout --preserve-status .1 sleep 10"), 143);
    // kill delay: once the initial signal (0 here) has no effect, KILL: 128+KILL, not 124
    assert_eq!(status(&p, "timeout -s0 -k1 .1 sleep 10"), 137);
    assert_eq!(status(&p, "timeout --foreground -s0 -k1 .1 sleep 10"), 137);
    // immune to the parent's SIGCHLD disposition
    assert_eq!(status(&p, "(trap '' CHLD; exec timeout 10 true)"), 0);
}

#[test]
fn timeout_sh_starting_with_a_child() {
    // Bug#9098: timeout starts with a child it did not fork (the shell's `&` before `exec`).
    let p = Personalities::new("gnu-timeout-child");
    let r = sh(
        &p,
        "out=$(setsid sleep .1 & exec timeout .5 sh -c 'sleep 2; echo foo'); \
         status=$?; echo \"[$out] $status\"",
    );
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "[] 124\n",
        "{}",
        r.stderr_text()
    );
}

#[test]
fn timeout_sh_verbose() {
    let p = Personalities::new("gnu-timeout-verbose");
    for opt in ["-v", "--verbose"] {
        let r = sh(&p, &format!("timeout {opt} -s0 -k .1 .1 sleep 10"));
        assert_eq!(r.code, Some(137), "{opt}");
        // As GNU's test does (`sed '/^Killed/d'`): the shell's own report of the kill goes.
        let err: String = r
            .stderr_text()
            .lines()
            .filter(|l| !l.starts_with("Killed"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            err,
            "timeout: sending signal 0 to command 'sleep'\n\
             timeout: sending signal KILL to command 'sleep'\n",
            "{opt}"
        );
    }
}

#[test]
fn timeout_sh_sigpipe() {
    let p = Personalities::new("gnu-timeout-pipe");
    // Its own SIGPIPE (a --verbose line to a closed pipe) does not kill timeout and leave
    // the sleep running: 124.
    let r = sh(
        &p,
        "{ timeout -v .1 sleep 10 2>&1; echo $? >timeout.status; } | :; cat timeout.status",
    );
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "124\n",
        "{}",
        r.stderr_text()
    );
    // An ignored SIGPIPE is not caught or passed on: `yes` meets EPIPE itself.
    let r = sh(
        &p,
        "(trap '' PIPE && timeout 10 yes |:) 2>&1 | grep 'Broken pipe'",
    );
    assert_eq!(r.code, Some(0), "{:?}", r);
}

#[test]
fn timeout_parameters_sh() {
    let p = Personalities::new("gnu-timeout-parameters");
    for (script, expected) in [
        // invalid timeouts
        ("timeout invalid sleep 0", 125),
        ("timeout ' -0.1' sleep 0", 125),
        ("timeout ' -1e-10000' sleep 0", 125),
        // invalid kill delay
        ("timeout --kill-after=invalid 1 sleep 0", 125),
        // invalid timeout suffix
        ("timeout 42D sleep 0", 125),
        // floating point notation; nanoseconds
        ("timeout 10.34 sleep 0", 0),
        ("timeout 9.999999999 sleep 0", 0),
        // round underflow up to 1 ns
        ("timeout 1e-10000 sleep 10", 124),
        // invalid signal spec
        ("timeout --signal=invalid 1 sleep 0", 125),
        // invalid command; no such command
        ("timeout 10 .", 126),
        ("timeout 10 no_such", 127),
    ] {
        assert_eq!(status(&p, script), expected, "{script}");
    }
    // Usage errors say why, and how to get help, as GNU's do.
    let r = sh(&p, "timeout 42D sleep 0");
    assert_eq!(
        r.stderr_text(),
        "timeout: invalid time interval '42D'\nTry 'timeout --help' for more information.\n"
    );
    let r = sh(&p, "timeout 10 no_such");
    assert_eq!(
        r.stderr_text(),
        "timeout: failed to run command 'no_such': No such file or directory\n"
    );
}

#[test]
fn timeout_large_parameters_sh() {
    let p = Personalities::new("gnu-timeout-large");
    // TIME_T_OFLOW must not time out at once.
    assert_eq!(status(&p, "timeout 9223372036854775808 sleep 0.5"), 0);
    for script in [
        "timeout 4294967296 sleep 0",                   // UINT_OFLOW
        "timeout 9223372036854775808d sleep 0",         // TIME_T_OFLOW d
        "timeout 2.34e+5d sleep 0",                     // floating point notation
        "timeout 1.18973149535723176502e+4932 sleep 0", // LDBL_MAX
    ] {
        assert_eq!(status(&p, script), 0, "{script}");
    }
    assert_eq!(
        status(&p, "timeout -- -1.18973149535723176502e+4932 sleep 0"),
        125
    );
}

#[test]
fn timeout_blocked_pl() {
    // SIGALRM blocked by whoever started timeout: the timeout still fires.
    let p = Personalities::new("gnu-timeout-blocked");
    let mut cmd = std::process::Command::new(p.timeout());
    cmd.args([".1", "sleep", "10"]);
    // SAFETY: sigprocmask(2) is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGALRM);
            libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
    assert_eq!(cmd.status().unwrap().code(), Some(124));
}

/// timeout-group.sh's `timeout.cmd`: traps USR1 (touches sig.received and exits), else
/// counts down $1 seconds. (It records its pid in timeout.running, where GNU's only touches
/// the file.)
const TIMEOUT_CMD: &str = "#!/bin/sh
trap 'touch sig.received; exit' USR1
echo $$ > timeout.running
count=$1
until test -e sig.received || test $count = 0; do
  sleep 1
  count=$(expr $count - 1)
done
";

fn timeout_cmd(p: &Personalities) {
    use std::os::unix::fs::PermissionsExt;
    let path = p.dir.path("timeout.cmd");
    std::fs::write(&path, TIMEOUT_CMD).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn timeout_group_sh_a_signal_to_the_group() {
    // A terminating signal sent to timeout's (foreground) process group reaches COMMAND.
    let p = Personalities::new("gnu-timeout-group");
    timeout_cmd(&p);
    std::fs::write(
        p.dir.path("group.sh"),
        "trap '' USR1\nenv --default-signal=USR1 timeout -v --foreground 25 ./timeout.cmd 20&\nwait\n",
    )
    .unwrap();
    let r = sh(
        &p,
        "setsid sh ./group.sh & pid=$!; \
         until test -e timeout.running; do sleep .1; done; \
         kill -USR1 -$pid; wait; test -e sig.received && echo RECEIVED",
    );
    assert_eq!(String::from_utf8_lossy(&r.stdout), "RECEIVED\n", "{r:?}");
}

#[test]
fn timeout_group_sh_timeout_killed() {
    // timeout killed with SIGKILL: GNU's COMMAND gets the timeout signal (PR_SET_PDEATHSIG)
    // and handles it. DIFFERS ON PURPOSE: pidring's PROGRAM gets SIGKILL (every task runner
    // dies with its supervisor, whatever it does with signals), so COMMAND is dead but did
    // not touch sig.received.
    let p = Personalities::new("gnu-timeout-killed");
    timeout_cmd(&p);
    let r = sh(
        &p,
        "timeout -sUSR1 25 ./timeout.cmd 20 & pid=$!; \
         until test -e timeout.running; do sleep .1; done; \
         kill -KILL -- $pid; wait; sleep .3; \
         if kill -0 $(cat timeout.running) 2>/dev/null; then echo ALIVE; else echo DEAD; fi",
    );
    assert_eq!(String::from_utf8_lossy(&r.stdout), "DEAD\n", "{r:?}");
}

#[test]
fn timeout_group_sh_cascaded() {
    // Cascaded timeouts: the outer one's SIGALRM makes the inner one time out, whose USR1
    // reaches a command that has its own process group.
    let p = Personalities::new("gnu-timeout-cascade");
    timeout_cmd(&p);
    let r = sh(
        &p,
        "timeout -sALRM 30 timeout -sUSR1 25 ./timeout.cmd 20 & pid=$!; \
         until test -e timeout.running; do sleep .1; done; \
         kill -ALRM $pid; wait $pid; echo status=$?; test -e sig.received && echo RECEIVED",
    );
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "status=124\nRECEIVED\n",
        "{r:?}"
    );
}

#[test]
fn init_parent_sh() {
    // timeout as PID 1 of a new PID namespace (a container's entrypoint).
    let p = Personalities::new("gnu-timeout-init");
    let unshare = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--map-root-user", "true"])
        .status();
    if !unshare.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED: unshare --pid --fork --map-root-user is unavailable");
        return;
    }
    assert_eq!(
        status(
            &p,
            "unshare --pid --fork --map-root-user timeout .1 sleep 10"
        ),
        124
    );
}

#[test]
fn the_whole_tree_ends_with_timeout() {
    // DIFFERS ON PURPOSE (the point of pidring): GNU timeout leaves COMMAND's other
    // processes running when COMMAND exits or times out; here none outlives timeout.
    let p = Personalities::new("gnu-timeout-tree");
    let mark = p.dir.path(&format!("tree-{}", std::process::id()));
    let mark = mark.display().to_string();
    for script in [
        // a background child left behind by COMMAND
        format!("timeout 10 sh -c '{BIN} helper pidfile={mark} sleep=60000 & exit 0'"),
        // a setsid daemon of a command that times out
        format!("timeout .3 sh -c 'setsid {BIN} helper pidfile={mark} sleep=60000 & sleep 10'"),
    ] {
        let r = sh(&p, &script);
        let left = with_marker(&mark);
        kill_marked(&mark);
        assert!(r.code == Some(0) || r.code == Some(124), "{script}: {r:?}");
        assert!(left.is_empty(), "{script}: survivors {left:?}");
    }
}

#[test]
fn help_and_version_and_the_pidring_subcommand() {
    let p = Personalities::new("gnu-timeout-help");
    let r = sh(&p, "timeout --help");
    assert_eq!(r.code, Some(0));
    assert!(String::from_utf8_lossy(&r.stdout)
        .starts_with("Usage: timeout [OPTION]... DURATION COMMAND [ARG]..."));
    let r = sh(&p, "timeout --version");
    assert_eq!(r.code, Some(0));
    assert!(String::from_utf8_lossy(&r.stdout).starts_with("timeout (pidring "));
    // `pidring timeout …` is the same command line.
    assert_eq!(status(&p, "\"$PIDRING\" timeout .1 sleep 10"), 124);
    assert_eq!(status(&p, "\"$PIDRING\" timeout 10 sh -c 'exit 3'"), 3);
    let r = sh(&p, "\"$PIDRING\" timeout");
    assert_eq!(r.code, Some(125));
    assert_eq!(
        r.stderr_text(),
        "Try 'timeout --help' for more information.\n"
    );
}

#[test]
fn a_signal_to_timeout_is_passed_on_and_death_by_signal_is_reraised() {
    // GNU timeout passes a terminating signal on to COMMAND (and its group) and, when COMMAND
    // dies of it, dies of the same signal itself.
    let p = Personalities::new("gnu-timeout-forward");
    let r = sh(
        &p,
        "timeout 30 sleep 30 & pid=$!; sleep .3; kill -USR1 $pid; wait $pid; echo status=$?",
    );
    assert_eq!(String::from_utf8_lossy(&r.stdout), "status=138\n", "{r:?}");
    let mut cmd = std::process::Command::new(p.timeout());
    cmd.args(["30", "sh", "-c", "kill -TERM $$"]);
    let st = cmd.status().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), Some(libc::SIGTERM), "{st:?}");
}
