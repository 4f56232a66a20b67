//! `container-check`: the scenarios of issue 9's default-container tests, run from inside
//! the environment `default-container` makes (the test starts `default-container [OPTIONS]
//! -- container-check ...`), so that everything here, the library and `pidring run`
//! included, lives under the container's seccomp filter and read-only cgroupfs.
//!
//! ```text
//! container-check pool|run|all DIR --expect-io-uring WORD[,WORD...] [--expect-backend epoll|uring]
//!                 [--pidring BIN] [--helper BIN]
//! ```
//!
//! - `pool`: a `Pool` with `Containment::Auto`, `Backend::Auto` and `subreaper(true)`.
//! - `run`: `pidring run` (BIN) with its `--report`.
//!
//! Each runs the seed scenario (a runner whose child interpreter loops; the tree is ended on
//! timeout; nothing survives), a pipe holder, a 300-process tree and 50 MB of output checked
//! byte for byte, and checks that the driver is `epoll` and the containment `process-group`,
//! with reasons: the backend's mentions one of the WORDs (how io_uring was refused: `EPERM`,
//! `ENOSYS`, ...), the containment's mentions `EROFS`. With `--expect-backend uring` (an
//! environment that allows io_uring but not cgroups) only the containment is checked so. Pid files go to DIR, so the test can
//! check from outside too that nothing survived.
//!
//! Output: one line per check, `ok NAME` or `FAIL NAME: why`; exit status 0 if all passed.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use pidring::{Backend, BackendKind, Containment, ContainmentKind, Pool, Reason, TaskSpec};
use pidring_tests::{alive, collect, eventually, pattern, read_pids};

const LIMIT: Duration = Duration::from_secs(60);
const FIFTY_MB: usize = 50 * 1024 * 1024;
/// What a failure most likely means while issue 9 is open, from its message.
fn needs(message: &str) -> &'static str {
    if message.contains("io_uring") {
        "(needs issue 9's epoll driver and Backend::Auto's fallback)"
    } else if message.contains("Function not implemented") || message.contains("ENOSYS") {
        "(needs issue 9's clone(2) spawn fallback: clone3 gives ENOSYS here)"
    } else {
        ""
    }
}

struct Args {
    dir: PathBuf,
    expect_io_uring: Vec<String>,
    expect_backend: String,
    pidring: PathBuf,
    helper: PathBuf,
}

struct Checks {
    failed: usize,
}

impl Checks {
    fn report(&mut self, name: &str, result: Result<(), String>) {
        match result {
            Ok(()) => println!("ok {name}"),
            Err(why) => {
                self.failed += 1;
                println!("FAIL {name}: {}", why.replace('\n', " | "));
            }
        }
    }
}

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (what, args) = match parse(&argv) {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("container-check: {msg}");
            std::process::exit(2);
        }
    };
    let mut checks = Checks { failed: 0 };
    if what == "pool" || what == "all" {
        pool_checks(&args, &mut checks);
    }
    if what == "run" || what == "all" {
        run_checks(&args, &mut checks);
    }
    std::process::exit(i32::from(checks.failed > 0));
}

fn parse(argv: &[String]) -> Result<(String, Args), String> {
    let what = argv.first().cloned().unwrap_or_default();
    if !["pool", "run", "all"].contains(&what.as_str()) {
        return Err("usage: container-check pool|run|all DIR --expect-io-uring WORDS [--pidring BIN] [--helper BIN]".into());
    }
    let dir = PathBuf::from(argv.get(1).ok_or("no DIR")?);
    let mut args = Args {
        dir,
        expect_io_uring: Vec::new(),
        expect_backend: "epoll".into(),
        pidring: PathBuf::from("pidring"),
        helper: PathBuf::from("pidring-helper"),
    };
    let mut i = 2;
    while i < argv.len() {
        let value = argv
            .get(i + 1)
            .ok_or(format!("{} needs a value", argv[i]))?;
        match argv[i].as_str() {
            "--expect-io-uring" => {
                args.expect_io_uring = value.split(',').map(str::to_owned).collect()
            }
            "--expect-backend" => args.expect_backend = value.clone(),
            "--pidring" => args.pidring = PathBuf::from(value),
            "--helper" => args.helper = PathBuf::from(value),
            other => return Err(format!("unknown option {other}")),
        }
        i += 2;
    }
    if args.expect_io_uring.is_empty() && args.expect_backend == "epoll" {
        return Err("--expect-io-uring is required".into());
    }
    Ok((what, args))
}

fn mentions_any(text: &str, words: &[String]) -> bool {
    let text = text.to_lowercase();
    words.iter().any(|w| text.contains(&w.to_lowercase()))
}

fn check_reasons(
    backend: &str,
    backend_reason: &str,
    containment: &str,
    containment_reason: &str,
    args: &Args,
) -> Result<(), String> {
    let mut wrong = Vec::new();
    if backend != args.expect_backend {
        wrong.push(format!(
            "backend is {backend:?}, not {}",
            args.expect_backend
        ));
    }
    if args.expect_backend == "epoll" && !mentions_any(backend_reason, &args.expect_io_uring) {
        wrong.push(format!(
            "backend reason {backend_reason:?} mentions none of {:?}",
            args.expect_io_uring
        ));
    }
    if containment != "process-group" {
        wrong.push(format!("containment is {containment:?}, not process-group"));
    }
    if !containment_reason.contains("EROFS") {
        wrong.push(format!(
            "containment reason {containment_reason:?} does not name EROFS"
        ));
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("; "))
    }
}

fn pidfile(args: &Args, name: &str) -> PathBuf {
    args.dir.join(format!("{name}.pids"))
}

fn all_dead(pids: &[i32]) -> Result<(), String> {
    if eventually(Duration::from_secs(3), || pids.iter().all(|p| !alive(*p))) {
        Ok(())
    } else {
        Err(format!(
            "survivors: {:?}",
            pids.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        ))
    }
}

/// The seed scenario's runner: a shell whose child interpreter loops forever (python3 if
/// present, else a shell loop), both recording their pids.
fn seed_script(pids: &Path) -> String {
    let interpreter = if Command::new("python3")
        .arg("-c")
        .arg("pass")
        .status()
        .is_ok_and(|s| s.success())
    {
        "python3 -c 'while True: pass'"
    } else {
        "sh -c 'while :; do :; done'"
    };
    format!(
        "{interpreter} & echo $! >> {p}; echo $$ >> {p}; wait",
        p = pids.display()
    )
}

/// `expected` is `pattern(n)`: compares without building a second 50 MB buffer.
fn is_pattern(bytes: &[u8], n: usize) -> Result<(), String> {
    if bytes.len() != n {
        return Err(format!("{} bytes, expected {n}", bytes.len()));
    }
    match bytes
        .iter()
        .enumerate()
        .position(|(i, b)| *b != b'a' + (i % 26) as u8)
    {
        None => Ok(()),
        Some(i) => Err(format!("byte {i} differs")),
    }
}

// ---- the library ----------------------------------------------------------------------------

fn pool_checks(args: &Args, checks: &mut Checks) {
    let pool = match Pool::builder()
        .workers(2)
        .containment(Containment::Auto)
        .backend(Backend::Auto)
        .subreaper(true)
        .build()
    {
        Ok(pool) => pool,
        Err(e) => {
            checks.report(
                "pool-build",
                Err(format!("Pool::build: {e} {}", needs(&e.to_string()))),
            );
            return;
        }
    };
    checks.report("pool-build", Ok(()));
    checks.report(
        "pool-reasons",
        check_reasons(
            match pool.backend() {
                BackendKind::Uring => "uring",
                BackendKind::Epoll => "epoll",
            },
            pool.backend_reason(),
            match pool.containment() {
                ContainmentKind::Cgroup => "cgroup",
                ContainmentKind::ProcessGroup => "process-group",
            },
            pool.containment_reason(),
            args,
        ),
    );
    println!(
        "info pool backend={} backend_reason={:?} containment={} containment_reason={:?}",
        pool.backend().as_str(),
        pool.backend_reason(),
        pool.containment().as_str(),
        pool.containment_reason()
    );
    let helper = |steps: &[&str]| TaskSpec::new(&args.helper).arg("helper").args(steps);

    // Seed: the tree is ended on timeout; nothing survives.
    checks.report("pool-seed", {
        let pids = pidfile(args, "pool-seed");
        pool.spawn(
            TaskSpec::new("sh")
                .args(["-c", &seed_script(&pids)])
                .timeout(Duration::from_secs(1))
                .grace(Duration::from_millis(500)),
        )
        .map_err(|e| format!("spawn: {e} {}", needs(&e.to_string())))
        .and_then(|task| {
            let records = collect(&pool, &[task.id()], LIMIT);
            let reason = &records[&task.id()].outcome().reason;
            if *reason != Reason::TimedOut {
                return Err(format!("outcome {reason:?}, expected TimedOut"));
            }
            let recorded = read_pids(&pids);
            if recorded.len() != 2 {
                return Err(format!("pids recorded: {recorded:?}"));
            }
            all_dead(&recorded)
        })
    });

    // A grandchild holds the pipe after the runner exited.
    checks.report("pool-pipe-holder", {
        let pids = pidfile(args, "pool-pipe-holder");
        let holder = format!("pidfile={};out=5;sleep=60000", pids.display());
        pool.spawn(
            helper(&[
                "out=1000",
                &format!("spawn={holder}"),
                "sleep=100",
                "exit=0",
            ])
            .drain(Duration::from_millis(300))
            .grace(Duration::from_millis(500)),
        )
        .map_err(|e| format!("spawn: {e} {}", needs(&e.to_string())))
        .and_then(|task| {
            let records = collect(&pool, &[task.id()], LIMIT);
            let record = &records[&task.id()];
            if record.outcome().reason != Reason::DrainExpired {
                return Err(format!("outcome {:?}", record.outcome()));
            }
            let mut expected = pattern(1000);
            expected.extend_from_slice(b"abcde");
            if record.stdout() != expected {
                return Err(format!(
                    "stdout: {} bytes, not the expected 1005",
                    record.stdout().len()
                ));
            }
            all_dead(&read_pids(&pids))
        })
    });

    // 300 processes, killed.
    checks.report("pool-tree-300", {
        let pids = pidfile(args, "pool-tree-300");
        pool.spawn(helper(&[
            &format!("pidfile={}", pids.display()),
            "forktree=300",
            "sleep=60000",
        ]))
        .map_err(|e| format!("spawn: {e} {}", needs(&e.to_string())))
        .and_then(|task| {
            if !eventually(LIMIT, || read_pids(&pids).len() == 301) {
                let _ = task.kill();
                return Err(format!("tree incomplete: {}", read_pids(&pids).len()));
            }
            task.kill().map_err(|e| e.to_string())?;
            let records = collect(&pool, &[task.id()], LIMIT);
            if records[&task.id()].outcome().reason != Reason::Terminated {
                return Err(format!("outcome {:?}", records[&task.id()].outcome()));
            }
            all_dead(&read_pids(&pids))
        })
    });

    // 50 MB of output, byte for byte.
    checks.report("pool-output-50mb", {
        pool.spawn(helper(&[&format!("out={FIFTY_MB}")]))
            .map_err(|e| format!("spawn: {e} {}", needs(&e.to_string())))
            .and_then(|task| {
                let records = collect(&pool, &[task.id()], LIMIT);
                let record = &records[&task.id()];
                if record.outcome().reason != Reason::Exited(0) {
                    return Err(format!("outcome {:?}", record.outcome()));
                }
                is_pattern(record.stdout(), FIFTY_MB)
            })
    });

    // A setsid daemon escapes the process group; the subreaper pool kills it once its task
    // has ended.
    checks.report("pool-setsid-escaper", {
        let pids = pidfile(args, "pool-setsid-escaper");
        pool.spawn(helper(&[
            &format!("daemon=pidfile={};sleep=60000", pids.display()),
            "sleep=200",
            "exit=0",
        ]))
        .map_err(|e| format!("spawn: {e} {}", needs(&e.to_string())))
        .and_then(|task| {
            collect(&pool, &[task.id()], LIMIT);
            let daemon = read_pids(&pids);
            if daemon.is_empty() {
                return Err("the daemon did not start".into());
            }
            all_dead(&daemon)
        })
    });
    pool.shutdown();
}

// ---- pidring run ----------------------------------------------------------------------------

struct RunResult {
    status: i32,
    stdout: Vec<u8>,
    stderr: String,
    report: Option<serde_json::Value>,
}

fn pidring_run(args: &Args, name: &str, options: &[&str], command: &[&str]) -> RunResult {
    let report = args.dir.join(format!("{name}.json"));
    let mut child = match Command::new(&args.pidring)
        .arg("run")
        .arg("--report")
        .arg(&report)
        .args(options)
        .arg("--")
        .args(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            return RunResult {
                status: -1,
                stdout: Vec::new(),
                stderr: format!("cannot start {}: {e}", args.pidring.display()),
                report: None,
            }
        }
    };
    let mut stderr_pipe = child.stderr.take();
    let stderr_thread = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(pipe) = stderr_pipe.as_mut() {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    });
    let mut stdout = Vec::new();
    if let Some(mut pipe) = child.stdout.take() {
        let _ = pipe.read_to_end(&mut stdout);
    }
    let status = child.wait().ok().and_then(|s| s.code()).unwrap_or(-1);
    let stderr = stderr_thread.join().unwrap_or_default();
    let report = std::fs::read_to_string(&report)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    RunResult {
        status,
        stdout,
        stderr,
        report,
    }
}

fn field<'a>(report: &'a serde_json::Value, key: &str) -> &'a str {
    report.get(key).and_then(|v| v.as_str()).unwrap_or("")
}

fn expect_status(r: &RunResult, status: i32) -> Result<(), String> {
    if r.status == status {
        Ok(())
    } else {
        Err(format!(
            "exit status {}, expected {status}; stderr: {} {}",
            r.status,
            r.stderr.trim(),
            needs(&r.stderr)
        ))
    }
}

fn run_checks(args: &Args, checks: &mut Checks) {
    let helper = args.helper.to_string_lossy().into_owned();

    // `pidring run -- echo hi` works ("done when" of issue 9), and says why it runs as it does.
    let r = pidring_run(args, "run-echo", &[], &["echo", "hi"]);
    checks.report(
        "run-echo",
        expect_status(&r, 0).and_then(|()| {
            if r.stdout == b"hi\n" {
                Ok(())
            } else {
                Err(format!("stdout {:?}", String::from_utf8_lossy(&r.stdout)))
            }
        }),
    );
    checks.report(
        "run-report-reasons",
        match &r.report {
            None => Err("no readable --report".into()),
            Some(rep) => {
                println!(
                    "info run backend={} backend_reason={:?} containment={} containment_reason={:?}",
                    field(rep, "backend"),
                    field(rep, "backend_reason"),
                    field(rep, "containment"),
                    field(rep, "containment_reason")
                );
                check_reasons(
                    field(rep, "backend"),
                    field(rep, "backend_reason"),
                    field(rep, "containment"),
                    field(rep, "containment_reason"),
                    args,
                )
                .map_err(|e| {
                    let missing: Vec<&str> = ["backend_reason", "containment_reason"]
                        .into_iter()
                        .filter(|k| rep.get(*k).is_none())
                        .collect();
                    if missing.is_empty() {
                        e
                    } else {
                        format!("{e} (the report has no {missing:?}: issue 9 asks --report to say why)")
                    }
                })
            }
        },
    );

    // Seed: timeout ends the tree; exit 124; nothing survives.
    let pids = pidfile(args, "run-seed");
    let r = pidring_run(
        args,
        "run-seed",
        &["--timeout", "1s", "--grace", "500ms"],
        &["sh", "-c", &seed_script(&pids)],
    );
    checks.report(
        "run-seed",
        expect_status(&r, 124).and_then(|()| {
            let recorded = read_pids(&pids);
            if recorded.len() != 2 {
                return Err(format!("pids recorded: {recorded:?}"));
            }
            all_dead(&recorded)
        }),
    );

    // Pipe holder.
    let pids = pidfile(args, "run-pipe-holder");
    let holder = format!("spawn=pidfile={};out=5;sleep=60000", pids.display());
    let r = pidring_run(
        args,
        "run-pipe-holder",
        &["--drain", "300ms", "--grace", "500ms"],
        &[
            &helper,
            "helper",
            "out=1000",
            &holder,
            "sleep=100",
            "exit=0",
        ],
    );
    checks.report(
        "run-pipe-holder",
        expect_status(&r, 0).and_then(|()| {
            let mut expected = pattern(1000);
            expected.extend_from_slice(b"abcde");
            if r.stdout != expected {
                return Err(format!(
                    "stdout: {} bytes, not the expected 1005",
                    r.stdout.len()
                ));
            }
            all_dead(&read_pids(&pids))
        }),
    );

    // 300 processes, ended by the timeout.
    let pids = pidfile(args, "run-tree-300");
    let r = pidring_run(
        args,
        "run-tree-300",
        &["--timeout", "3s", "--grace", "500ms"],
        &[
            &helper,
            "helper",
            &format!("pidfile={}", pids.display()),
            "forktree=300",
            "sleep=60000",
        ],
    );
    checks.report(
        "run-tree-300",
        expect_status(&r, 124).and_then(|()| {
            let recorded = read_pids(&pids);
            if recorded.len() != 301 {
                return Err(format!("{} of 301 processes recorded", recorded.len()));
            }
            all_dead(&recorded)
        }),
    );

    // 50 MB, byte for byte.
    let r = pidring_run(
        args,
        "run-output-50mb",
        &[],
        &[&helper, "helper", &format!("out={FIFTY_MB}")],
    );
    checks.report(
        "run-output-50mb",
        expect_status(&r, 0).and_then(|()| is_pattern(&r.stdout, FIFTY_MB)),
    );
}
