//! GNU timeout's command line, as `timeout` 9.x parses it (`getopt_long` with `+fk:ps:v`:
//! options stop at the first operand, long options may be abbreviated, `-k5`, `-sKILL`,
//! `--kill-after=5` and `-fpv` all work), with its messages and exit statuses.

use std::ffi::OsString;
use std::time::Duration;

use super::config::{quote, Config};
use super::exit;
use super::relay;
use super::signals::{self, Personality};
use crate::duration;

/// The outcome of parsing: a run, or an exit at once (`--help`, `--version`, a usage error).
#[derive(Debug)]
pub enum Parsed {
    Run(Box<Config>),
    Exit(i32),
}

const LONG: &[(&str, bool)] = &[
    ("foreground", false),
    ("kill-after", true),
    ("preserve-status", false),
    ("signal", true),
    ("verbose", false),
    ("help", false),
    ("version", false),
];

/// Parses the arguments after the program name; `name` is the name in messages.
pub fn parse(args: &[OsString], name: &str) -> Parsed {
    let usage_error = |msg: Option<String>| -> Parsed {
        let mut text = String::new();
        if let Some(m) = msg {
            text += &format!("{name}: {m}\n");
        }
        text += &format!("Try '{name} --help' for more information.\n");
        relay::write_stderr(text.as_bytes());
        Parsed::Exit(i32::from(exit::PIDRING_FAILED))
    };
    let mut foreground = false;
    let mut preserve = false;
    let mut verbose = false;
    let mut kill_after: Option<Duration> = None;
    let mut signal = libc::SIGTERM;
    let mut i = 0;
    // Applies one option; Err(message or None) on a usage error; Ok(Some(code)) to exit.
    let mut apply = |opt: &str, value: Option<String>| -> Result<Option<i32>, Option<String>> {
        match opt {
            "f" | "foreground" => foreground = true,
            "p" | "preserve-status" => preserve = true,
            "v" | "verbose" => verbose = true,
            "k" | "kill-after" => {
                let v = value.unwrap_or_default();
                match duration::parse_gnu(&v) {
                    Ok(d) => kill_after = Some(d),
                    Err(_) => return Err(Some(format!("invalid time interval {}", quote(&v)))),
                }
            }
            "s" | "signal" => {
                let v = value.unwrap_or_default();
                match signals::parse(&v) {
                    Some(s) => signal = s,
                    None => return Err(Some(format!("{}: invalid signal", quote(&v)))),
                }
            }
            "help" => {
                relay::write_stdout(help(name).as_bytes());
                return Ok(Some(0));
            }
            "version" => {
                relay::write_stdout(
                    format!(
                        "{name} (pidring {})\nGNU timeout's command line; the whole process tree \
                         ends with {name}.\n",
                        env!("CARGO_PKG_VERSION")
                    )
                    .as_bytes(),
                );
                return Ok(Some(0));
            }
            _ => return Err(None),
        }
        Ok(None)
    };
    while i < args.len() {
        let word = args[i].to_string_lossy().into_owned();
        if word == "--" {
            i += 1;
            break;
        }
        if let Some(long) = word.strip_prefix("--") {
            let (key, inline) = match long.split_once('=') {
                Some((k, v)) => (k, Some(v.to_string())),
                None => (long, None),
            };
            let exact = LONG.iter().find(|(n, _)| *n == key);
            let matches: Vec<&(&str, bool)> = match exact {
                Some(e) => vec![e],
                None => LONG.iter().filter(|(n, _)| n.starts_with(key)).collect(),
            };
            let (opt, takes_value) = match matches.as_slice() {
                [] => return usage_error(Some(format!("unrecognized option '--{key}'"))),
                [one] => **one,
                many => {
                    let names: Vec<String> = many.iter().map(|(n, _)| format!("'--{n}'")).collect();
                    return usage_error(Some(format!(
                        "option '--{key}' is ambiguous; possibilities: {}",
                        names.join(" ")
                    )));
                }
            };
            let value = if takes_value {
                match inline {
                    Some(v) => Some(v),
                    None => {
                        i += 1;
                        match args.get(i) {
                            Some(v) => Some(v.to_string_lossy().into_owned()),
                            None => {
                                return usage_error(Some(format!(
                                    "option '--{opt}' requires an argument"
                                )))
                            }
                        }
                    }
                }
            } else {
                if inline.is_some() {
                    return usage_error(Some(format!(
                        "option '--{opt}' doesn't allow an argument"
                    )));
                }
                None
            };
            match apply(opt, value) {
                Ok(None) => {}
                Ok(Some(code)) => return Parsed::Exit(code),
                Err(msg) => return usage_error(msg),
            }
            i += 1;
            continue;
        }
        if word.len() > 1 && word.starts_with('-') {
            let chars: Vec<char> = word.chars().skip(1).collect();
            let mut j = 0;
            while j < chars.len() {
                let c = chars[j];
                let opt = match c {
                    'f' => "f",
                    'p' => "p",
                    'v' => "v",
                    'k' => "k",
                    's' => "s",
                    _ => return usage_error(Some(format!("invalid option -- '{c}'"))),
                };
                let value = if c == 'k' || c == 's' {
                    let rest: String = chars[j + 1..].iter().collect();
                    j = chars.len();
                    if rest.is_empty() {
                        i += 1;
                        match args.get(i) {
                            Some(v) => Some(v.to_string_lossy().into_owned()),
                            None => {
                                return usage_error(Some(format!(
                                    "option requires an argument -- '{c}'"
                                )))
                            }
                        }
                    } else {
                        Some(rest)
                    }
                } else {
                    j += 1;
                    None
                };
                match apply(opt, value) {
                    Ok(None) => {}
                    Ok(Some(code)) => return Parsed::Exit(code),
                    Err(msg) => return usage_error(msg),
                }
            }
            i += 1;
            continue;
        }
        break; // the first operand: options end here (`+` in GNU's optstring)
    }
    let operands = &args[i..];
    if operands.len() < 2 {
        return usage_error(None);
    }
    let shown = operands[0].to_string_lossy();
    let timeout = match duration::parse_gnu(&shown) {
        Ok(d) => d,
        Err(_) => return usage_error(Some(format!("invalid time interval {}", quote(&shown)))),
    };
    let mut cfg = Config::new(Personality::Timeout, operands[1..].to_vec());
    cfg.timeout = Some(timeout).filter(|d| !d.is_zero());
    cfg.timeout_signal = signal;
    cfg.kill_after = kill_after.filter(|d| !d.is_zero());
    // GNU timeout exits when its child does and leaves the rest; pidring ends the rest of
    // the tree at once (SIGTERM, SIGKILL a second later).
    cfg.drain = Duration::ZERO;
    cfg.grace = Duration::from_secs(1);
    cfg.main_only = foreground;
    cfg.preserve_status = preserve;
    cfg.verbose = u8::from(verbose);
    Parsed::Run(Box::new(cfg))
}

fn help(name: &str) -> String {
    format!(
        "\
Usage: {name} [OPTION]... DURATION COMMAND [ARG]...
Start COMMAND, and kill it if still running after DURATION.
(pidring: GNU timeout's command line; when {name} exits, nothing of COMMAND's process tree
is alive, grandchildren and setsid() daemons included.)

Mandatory arguments to long options are mandatory for short options too.
  -f, --foreground
         when not running timeout directly from a shell prompt,
         allow COMMAND to read from the TTY and get TTY signals;
         signals are sent to COMMAND only, not to its process group
  -k, --kill-after=DURATION
         also send a KILL signal if COMMAND is still running
         this long after the initial signal was sent
  -p, --preserve-status
         exit with the same status as COMMAND,
         even when the command times out
  -s, --signal=SIGNAL
         specify the signal to be sent on timeout;
         SIGNAL may be a name like 'HUP' or a number;
         see 'kill -l' for a list of signals
  -v, --verbose
         diagnose to standard error any signal sent upon timeout
      --help        display this help and exit
      --version     output version information and exit

DURATION is a floating point number with an optional suffix:
's' for seconds (the default), 'm' for minutes, 'h' for hours or 'd' for days.
A duration of 0 disables the associated timeout.

Upon timeout, send the TERM signal to COMMAND, if no other SIGNAL specified.
The TERM signal kills any process that does not block or catch that signal.
It may be necessary to use the KILL signal, since this signal can't be caught.
When COMMAND exits, the rest of its process tree gets TERM, and KILL a second later.

Exit status:
  124  if COMMAND times out, and --preserve-status is not specified
  125  if the timeout command itself fails
  126  if COMMAND is found but cannot be invoked
  127  if COMMAND cannot be found
  137  if COMMAND (or timeout itself) is sent the KILL (9) signal (128+9)
  -    the exit status of COMMAND otherwise
"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    fn cfg(words: &[&str]) -> Config {
        match parse(&args(words), "timeout") {
            Parsed::Run(c) => *c,
            Parsed::Exit(code) => panic!("{words:?}: exit {code}"),
        }
    }

    fn exit_code(words: &[&str]) -> i32 {
        match parse(&args(words), "timeout") {
            Parsed::Run(_) => panic!("{words:?} parsed"),
            Parsed::Exit(code) => code,
        }
    }

    #[test]
    fn gnu_command_lines() {
        let c = cfg(&["10", "sleep", "1"]);
        assert_eq!(c.timeout, Some(Duration::from_secs(10)));
        assert_eq!(c.command, args(&["sleep", "1"]));
        assert_eq!(c.timeout_signal, libc::SIGTERM);
        assert_eq!(c.kill_after, None);
        assert_eq!(cfg(&["0", "true"]).timeout, None);
        let c = cfg(&["-s0", "-k1", ".1", "sleep", "10"]);
        assert_eq!(c.timeout_signal, 0);
        assert_eq!(c.kill_after, Some(Duration::from_secs(1)));
        let c = cfg(&["--signal=KILL", "--kill-after", "2", "-fpv", "1", "x"]);
        assert_eq!(c.timeout_signal, 9);
        assert_eq!(c.kill_after, Some(Duration::from_secs(2)));
        assert!(c.main_only && c.preserve_status && c.verbose == 1);
        // Abbreviations, `--` and options after the duration belonging to COMMAND.
        let c = cfg(&["--sig=HUP", "--pres", "--k=1", "--", "5", "cmd", "-v"]);
        assert_eq!(c.timeout_signal, libc::SIGHUP);
        assert!(c.preserve_status);
        assert_eq!(c.command, args(&["cmd", "-v"]));
        let c = cfg(&["1", "--bogus"]);
        assert_eq!(c.command, args(&["--bogus"]));
        let c = cfg(&["-sKILL", "-v", "2.34e+5d", "true"]);
        assert_eq!(c.timeout, Some(Duration::from_secs(234_000 * 86_400)));
    }

    #[test]
    fn usage_errors_are_125() {
        for bad in [
            &[][..],
            &["10"],
            &["--bogus", "1", "true"],
            &["-k", "invalid", "1", "true"],
            &["--kill-after=invalid", "1", "sleep", "0"],
            &["-s", "invalid", "1", "true"],
            &["--signal=invalid", "1", "sleep", "0"],
            &["42D", "true"],
            &["invalid", "sleep", "0"],
            &[" -0.1", "sleep", "0"],
            &[" -1e-10000", "sleep", "0"],
            &["-x"],
            &["--kill-after"],
            &["--", "-1", "true"],
            &["--v", "1", "true"],
            &["--verbose=1", "1", "true"],
            &["-k"],
        ] {
            assert_eq!(exit_code(bad), 125, "{bad:?}");
        }
    }
}
