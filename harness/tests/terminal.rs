//! PROGRAM gets the terminal (issue 12, defect 6): `pidring run -- bash` on a real pty gives a
//! usable shell, `^C` reaches PROGRAM, `^Z` stops PROGRAM and pidring together, and the
//! terminal goes back to whoever started pidring. Also tini's own TTY tests (`tini -- dash`,
//! `^C` on a loop) through the `init` personality.

mod common;

use std::time::Duration;

use common::pty::{Pty, State};
use common::*;

const LIMIT: Duration = Duration::from_secs(20);

fn shell() -> Option<&'static str> {
    ["/bin/bash", "/usr/bin/bash"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
}

#[test]
fn bash_under_pidring_run_is_a_usable_interactive_shell() {
    let Some(bash) = shell() else {
        eprintln!("SKIPPED: no bash here");
        return;
    };
    for personality in [&["run", "--"][..], &["init", "--"], &["timeout", "60"]] {
        let mut args: Vec<&str> = personality.to_vec();
        args.extend_from_slice(&[bash, "--norc", "--noprofile", "-i"]);
        let mut pty = Pty::spawn(BIN, &args);
        pty.send("PS1='READY> '\n");
        assert!(
            pty.expect("READY> ", LIMIT),
            "{args:?}: no prompt: {:?}",
            pty.text()
        );
        // The shell's process group is the terminal's foreground group; stdin and stdout are
        // the terminal itself.
        pty.send("test -t 0 && test -t 1 && echo IS-A-TTY; [ $(ps -o tpgid= -p $$) = $(ps -o pgid= -p $$) ] && echo IN-FOREGROUND\n");
        assert!(pty.expect("IS-A-TTY", LIMIT), "{args:?}: {:?}", pty.text());
        assert!(
            pty.expect("IN-FOREGROUND", LIMIT),
            "{args:?}: {:?}",
            pty.text()
        );
        // Job control inside works: a background job, then `fg`.
        pty.send("sleep 0.2 & fg; echo JOB-DONE-$?\n");
        assert!(
            pty.expect("JOB-DONE-0", LIMIT),
            "{args:?}: {:?}",
            pty.text()
        );
        pty.send("exit 7\n");
        assert_eq!(
            pty.wait(LIMIT),
            Some(State::Exited(7)),
            "{args:?}: {:?}",
            pty.text()
        );
    }
}

#[test]
fn ctrl_c_reaches_program_and_pidring_exits_with_its_status() {
    // tini's outer test: `dash -c 'while true; do echo \#; sleep 0.1; done'` and ^C → 130.
    for personality in [&["run", "--"][..], &["init", "--"], &["timeout", "60"]] {
        let mut args: Vec<&str> = personality.to_vec();
        args.extend_from_slice(&["sh", "-c", "while true; do echo TICK; sleep 0.1; done"]);
        let mut pty = Pty::spawn(BIN, &args);
        assert!(pty.expect("TICK", LIMIT), "{args:?}: {:?}", pty.text());
        pty.send("\x03");
        let state = pty.wait(LIMIT);
        // `timeout` dies of the signal its child died of, as GNU timeout does; the others
        // exit with 128 + 2.
        let expected = if personality[0] == "timeout" {
            State::Signaled(libc::SIGINT)
        } else {
            State::Exited(130)
        };
        assert_eq!(state, Some(expected), "{args:?}: {:?}", pty.text());
    }
}

#[test]
fn tini_dash_in_a_terminal_exits_0_on_exit_0() {
    // tini's outer test `test_tty_handling(..., "dash", attach_and_type_exit_0, 0)`.
    let mut pty = Pty::spawn(BIN, ["init", "--", "sh", "-i"]);
    assert!(
        pty.expect("# ", LIMIT) || pty.expect("$ ", LIMIT),
        "{:?}",
        pty.text()
    );
    pty.send("\n");
    pty.send("exit 0\n");
    assert_eq!(pty.wait(LIMIT), Some(State::Exited(0)), "{:?}", pty.text());
}

#[test]
fn ctrl_z_stops_program_and_pidring_and_fg_resumes_both() {
    // pidring's parent (this test, as a shell would) sees pidring stopped after ^Z; SIGCONT
    // (what `fg` sends) resumes PROGRAM, which has the terminal again.
    let mut pty = Pty::spawn(
        BIN,
        [
            "run",
            "--",
            "sh",
            "-c",
            "echo READY; read line; echo GOT-$line",
        ],
    );
    assert!(pty.expect("READY", LIMIT), "{:?}", pty.text());
    pty.send("\x1a");
    assert_eq!(
        pty.wait(LIMIT),
        Some(State::Stopped(libc::SIGSTOP)),
        "pidring did not stop with PROGRAM: {:?}",
        pty.text()
    );
    pty.signal(libc::SIGCONT);
    std::thread::sleep(Duration::from_millis(200));
    pty.send("hello\n");
    assert!(pty.expect("GOT-hello", LIMIT), "{:?}", pty.text());
    assert_eq!(pty.wait(LIMIT), Some(State::Exited(0)), "{:?}", pty.text());
}

#[test]
fn the_terminal_goes_back_to_the_caller_when_program_ends() {
    // A non-interactive script (no job control) runs pidring in the foreground, then reads
    // the terminal itself: the terminal must be its process group's again, or the read
    // would stop it (SIGTTIN) or fail.
    let script = format!(
        "{BIN} run -- sh -c 'test -t 0 && echo CHILD-HAS-TTY'; \
         [ $(ps -o tpgid= -p $$) = $(ps -o pgid= -p $$) ] && echo BACK-IN-FOREGROUND; \
         read line; echo SCRIPT-GOT-$line"
    );
    let mut pty = Pty::spawn("sh", ["-c", &script]);
    assert!(pty.expect("CHILD-HAS-TTY", LIMIT), "{:?}", pty.text());
    assert!(pty.expect("BACK-IN-FOREGROUND", LIMIT), "{:?}", pty.text());
    pty.send("bye\n");
    assert!(pty.expect("SCRIPT-GOT-bye", LIMIT), "{:?}", pty.text());
    assert_eq!(pty.wait(LIMIT), Some(State::Exited(0)), "{:?}", pty.text());
}

#[test]
fn a_background_pidring_does_not_take_the_terminal() {
    // `pidring run … &` from a script: PROGRAM stays in the background (its own group in the
    // same session) and the script keeps the terminal.
    let script = format!(
        "{BIN} run -- sh -c 'sleep 0.3; [ $(ps -o tpgid= -p $$) != $(ps -o pgid= -p $$) ] && echo CHILD-IN-BACKGROUND' & \
         sleep 0.1; [ $(ps -o tpgid= -p $$) = $(ps -o pgid= -p $$) ] && echo SCRIPT-KEEPS-TTY; wait"
    );
    let mut pty = Pty::spawn("sh", ["-c", &script]);
    assert!(pty.expect("SCRIPT-KEEPS-TTY", LIMIT), "{:?}", pty.text());
    assert!(pty.expect("CHILD-IN-BACKGROUND", LIMIT), "{:?}", pty.text());
    assert_eq!(pty.wait(LIMIT), Some(State::Exited(0)), "{:?}", pty.text());
}

#[test]
fn without_a_terminal_program_gets_its_own_session() {
    let r = run(
        [
            "run",
            "--",
            "sh",
            "-c",
            "[ $(ps -o sid= -p $$) = $$ ] && echo OWN-SESSION",
        ],
        LIMIT,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr_text());
    assert_eq!(String::from_utf8_lossy(&r.stdout), "OWN-SESSION\n");
}
