//! `pidring bench`'s command line: a knob out of range is a usage error (one line, 125), never
//! a panic or a meaningless run; a small valid run writes its results.

mod common;

use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn knobs_out_of_range_are_usage_errors() {
    for args in [
        ["idle", "--idle-secs=-1"],
        ["idle", "--idle-secs=nan"],
        ["idle", "--idle-secs=inf"],
        ["idle", "--idle-secs=1e300"],
        ["idle", "--tasks=0"],
        ["spawn", "--tasks=0"],
        ["spawn", "--concurrency=0"],
        ["exit-latency", "--tasks=0"],
        ["chatty", "--lines=0"],
        ["reqrep", "--size=8"],
        ["reqrep", "--size=99999999999"],
        ["killtree", "--depth=3"],
        ["killtree", "--trees=0"],
    ] {
        let r = run(["bench", args[0], args[1]], LIMIT);
        let text = r.stderr_text();
        assert_eq!(r.code, Some(125), "{args:?}: {text}");
        assert_eq!(text.lines().count(), 1, "{args:?}: {text}");
        let option = args[1].split('=').next().unwrap();
        assert!(text.contains(option), "{args:?}: {text}");
        assert!(!text.contains("panicked"), "{args:?}: {text}");
    }
}

#[test]
fn a_small_run_at_the_knobs_lower_bounds_writes_its_results() {
    let dir = TempDir::new("bench-cli");
    let out = dir.path("out");
    let r = run(
        [
            "bench".as_ref(),
            "--out-dir".as_ref(),
            out.as_os_str(),
            "--backend".as_ref(),
            "epoll".as_ref(),
            "idle".as_ref(),
            "--tasks=1".as_ref(),
            "--idle-secs=0".as_ref(),
        ],
        LIMIT,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr_text());
    let runs: Vec<_> = std::fs::read_dir(&out).unwrap().flatten().collect();
    assert_eq!(runs.len(), 1);
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs[0].path().join("results.json")).unwrap())
            .unwrap();
    assert_eq!(json["results"][0]["tasks"], 1, "{json}");
    assert_eq!(json["results"][0]["status"], "ok", "{json}");
}
