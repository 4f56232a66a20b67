//! tini's command line, as tini 0.19 parses it: glibc `getopt` with `p:hvwgle:s` (options
//! may follow PROGRAM unless `--` or `POSIXLY_CORRECT` stops them, as glibc permutes
//! arguments), `--version` alone, and the environment variables `TINI_SUBREAPER`,
//! `TINI_KILL_PROCESS_GROUP` and `TINI_VERBOSITY`.

use std::ffi::OsString;
use std::time::Duration;

use super::config::Config;
use super::relay;
use super::signals::{self, Personality};

/// The version of tini whose command line this is.
pub const TINI_VERSION: &str = "0.19.0";

#[derive(Debug)]
pub enum Parsed {
    Run(Box<Config>),
    Exit(i32),
}

/// Parses tini's arguments (after `argv0`, how pidring was invoked).
pub fn parse(argv0: &str, args: &[OsString]) -> Parsed {
    let env = |key: &str| std::env::var_os(key);
    parse_with(argv0, args, &env)
}

fn parse_with(argv0: &str, args: &[OsString], env: &dyn Fn(&str) -> Option<OsString>) -> Parsed {
    let pid = crate::sys::own_pid();
    let fatal = |msg: String| {
        relay::write_stderr(format!("[FATAL tini ({pid})] {msg}\n").as_bytes());
        Parsed::Exit(1)
    };
    if args.len() == 1 && args[0] == "--version" {
        relay::write_stdout(version().as_bytes());
        return Parsed::Exit(0);
    }
    let permute = env("POSIXLY_CORRECT").is_none();
    let mut verbosity: u32 = 1;
    let mut to_group = false;
    let mut warn_on_reap = false;
    let mut remap = [0u64; 4];
    let mut pdeathsig = None;
    let mut operands: Vec<OsString> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let word = &args[i];
        let bytes = word.as_encoded_bytes();
        if bytes == b"--" {
            operands.extend(args[i + 1..].iter().cloned());
            break;
        }
        if bytes.len() < 2 || bytes[0] != b'-' {
            if !permute {
                operands.extend(args[i..].iter().cloned());
                break;
            }
            operands.push(word.clone());
            i += 1;
            continue;
        }
        let text = word.to_string_lossy().into_owned();
        let chars: Vec<char> = text.chars().skip(1).collect();
        let mut j = 0;
        while j < chars.len() {
            let c = chars[j];
            j += 1;
            match c {
                'h' => {
                    relay::write_stdout(usage(argv0).as_bytes());
                    return Parsed::Exit(0);
                }
                's' => {} // pidring is always a child subreaper
                'v' => verbosity += 1,
                'w' => warn_on_reap = true,
                'g' => to_group = true,
                'l' => {
                    relay::write_stdout(LICENSE.as_bytes());
                    return Parsed::Exit(0);
                }
                'p' | 'e' => {
                    let value: String = if j < chars.len() {
                        let v = chars[j..].iter().collect();
                        j = chars.len();
                        v
                    } else {
                        i += 1;
                        match args.get(i) {
                            Some(v) => v.to_string_lossy().into_owned(),
                            None => {
                                relay::write_stderr(
                                    format!("{argv0}: option requires an argument -- '{c}'\n")
                                        .as_bytes(),
                                );
                                relay::write_stderr(usage(argv0).as_bytes());
                                return Parsed::Exit(1);
                            }
                        }
                    };
                    if c == 'p' {
                        match signals::parse_tini(&value) {
                            Some(sig) => pdeathsig = Some(sig),
                            None => return fatal(format!("Not a valid option for -p: {value}")),
                        }
                    } else {
                        match parse_status(&value) {
                            Some(code) => remap[usize::from(code / 64)] |= 1u64 << (code % 64),
                            None => return fatal(format!("Not a valid option for -e: {value}")),
                        }
                    }
                }
                _ => {
                    relay::write_stderr(format!("{argv0}: invalid option -- '{c}'\n").as_bytes());
                    relay::write_stderr(usage(argv0).as_bytes());
                    return Parsed::Exit(1);
                }
            }
        }
        i += 1;
    }
    if operands.is_empty() {
        relay::write_stderr(usage(argv0).as_bytes());
        return Parsed::Exit(1);
    }
    if env("TINI_KILL_PROCESS_GROUP").is_some() {
        to_group = true;
    }
    if let Some(v) = env("TINI_VERBOSITY") {
        verbosity = atoi(&v.to_string_lossy());
    }
    let mut cfg = Config::new(Personality::Tini, operands);
    cfg.to_group = to_group;
    cfg.warn_on_reap = warn_on_reap;
    cfg.remap_to_zero = remap;
    cfg.parent_death_signal = pdeathsig;
    cfg.verbose = verbosity.min(255) as u8;
    // tini exits when its child does (as PID 1 of a container, the kernel then kills the
    // rest); pidring ends the rest of the tree at once: SIGTERM, SIGKILL a second later.
    cfg.drain = Duration::ZERO;
    cfg.grace = Duration::from_secs(1);
    Parsed::Run(Box::new(cfg))
}

/// `strtol(s, &end, 10)` with the whole string used, in 0..=255.
fn parse_status(s: &str) -> Option<u8> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().unwrap_or(u64::MAX);
    if negative {
        return (n == 0).then_some(0);
    }
    u8::try_from(n).ok()
}

/// C's `atoi` into tini's `unsigned int`: leading blanks, a sign, digits; anything else 0; a
/// negative value wraps to a huge one.
fn atoi(s: &str) -> u32 {
    let t = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (negative, rest) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().unwrap_or(0);
    if negative && n > 0 {
        u32::MAX
    } else {
        n.min(u64::from(u32::MAX)) as u32
    }
}

fn version() -> String {
    format!(
        "tini version {TINI_VERSION} - pidring {}\n",
        env!("CARGO_PKG_VERSION")
    )
}

fn usage(argv0: &str) -> String {
    let name = argv0.rsplit('/').next().unwrap_or(argv0);
    format!(
        "\
{name} (tini version {TINI_VERSION} - pidring {})
Usage: {name} [OPTIONS] PROGRAM -- [ARGS] | --version

Execute a program under the supervision of a valid init process ({name})
(pidring: tini's command line; when {name} exits, nothing of PROGRAM's process tree is alive)

Command line options:

  --version: Show version and exit.
  -h: Show this help message and exit.
  -s: Register as a process subreaper (requires Linux >= 3.4).
  -p SIGNAL: Trigger SIGNAL when parent dies, e.g. \"-p SIGKILL\".
  -v: Generate more verbose output. Repeat up to 3 times.
  -w: Print a warning when processes are getting reaped.
  -g: Send signals to the child's process group.
  -e EXIT_CODE: Remap EXIT_CODE (from 0 to 255) to 0 (can be repeated).
  -l: Show license and exit.

Environment variables:

  TINI_SUBREAPER: Register as a process subreaper (requires Linux >= 3.4).
  TINI_VERBOSITY: Set the verbosity level (default: 1).
  TINI_KILL_PROCESS_GROUP: Send signals to the child's process group.

",
        env!("CARGO_PKG_VERSION")
    )
}

const LICENSE: &str = "\
pidring is licensed under the MIT license or the Apache License, Version 2.0, at your option.
Its `init`/`tini` personality implements tini's command line (tini: Copyright (c) 2015
Thomas Orozco, MIT license); it contains no code of tini.
";

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    fn parse_env(words: &[&str], vars: &[(&str, &str)]) -> Parsed {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = move |key: &str| {
            vars.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| OsString::from(v))
        };
        parse_with("tini", &args(words), &env)
    }

    fn cfg(words: &[&str], vars: &[(&str, &str)]) -> Config {
        match parse_env(words, vars) {
            Parsed::Run(c) => *c,
            Parsed::Exit(code) => panic!("{words:?}: exit {code}"),
        }
    }

    #[test]
    fn tini_command_lines() {
        let c = cfg(&["--", "sh", "-c", "exit 3"], &[]);
        assert_eq!(c.command, args(&["sh", "-c", "exit 3"]));
        assert_eq!(c.verbose, 1);
        // glibc permutes: options after PROGRAM are tini's, unless POSIXLY_CORRECT.
        let c = cfg(&["sleep", "-g", "10"], &[]);
        assert_eq!(c.command, args(&["sleep", "10"]));
        assert!(c.to_group);
        let c = cfg(&["sleep", "-g", "10"], &[("POSIXLY_CORRECT", "1")]);
        assert_eq!(c.command, args(&["sleep", "-g", "10"]));
        assert!(!c.to_group);
        let c = cfg(
            &["-e", "3", "-e4", "-vvv", "-w", "-s", "-p", "SIGUSR1", "x"],
            &[],
        );
        assert!(c.remapped_to_zero(3) && c.remapped_to_zero(4) && !c.remapped_to_zero(5));
        assert_eq!(c.verbose, 4);
        assert!(c.warn_on_reap);
        assert_eq!(c.parent_death_signal, Some(libc::SIGUSR1));
        let c = cfg(
            &["x"],
            &[("TINI_KILL_PROCESS_GROUP", ""), ("TINI_VERBOSITY", "3")],
        );
        assert!(c.to_group);
        assert_eq!(c.verbose, 3);
        assert_eq!(cfg(&["-v", "x"], &[("TINI_VERBOSITY", "0")]).verbose, 0);
        assert!(cfg(&["-e", "255", "x"], &[]).remapped_to_zero(255));
        assert!(cfg(&["-e", "0", "x"], &[]).remapped_to_zero(0));
    }

    #[test]
    fn tini_exits() {
        for (words, code) in [
            (&["--version"][..], 0),
            (&["-h"], 0),
            (&["-l"], 0),
            (&["-z"], 1),
            (&["-w"], 1),
            (&[], 1),
            (&["-p", "KILL", "x"], 1),
            (&["-p"], 1),
            (&["-e", "256", "x"], 1),
            (&["-e", "x", "x"], 1),
            (&["-e", "-1", "x"], 1),
            (&["--version", "x"], 1),
        ] {
            match parse_env(words, &[]) {
                Parsed::Exit(c) => assert_eq!(c, code, "{words:?}"),
                Parsed::Run(_) => panic!("{words:?} parsed"),
            }
        }
        assert_eq!(parse_status(" +7"), Some(7));
        assert_eq!(parse_status("-0"), Some(0));
        assert_eq!(atoi(" 3x"), 3);
        assert_eq!(atoi("x"), 0);
        assert_eq!(atoi("-1"), u32::MAX);
    }
}
