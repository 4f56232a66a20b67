//! `Pool.spawn`'s Python arguments to a [`TaskSpec`]: argument checks and conversions only.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::time::Duration;

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyMapping, PyString};

use pidring::{AfterExit, Session, Stdio, TaskSpec};

/// Child-side fd of the first raw channel (`spawn(raw_channels=n)`: fds 3 to 3 + n - 1;
/// framed channels take the next fds, as listed in `PIDRING_CHANNEL_FDS`).
const FIRST_RAW_CHANNEL_FD: i32 = 3;

/// The most framed channels a task may have (as `TaskSpec::channels` documents).
const MAX_FRAMED_CHANNELS: i64 = 200;
/// The most raw channels: every stream id between stdout/stderr and stdin.
const MAX_RAW_CHANNELS: i64 = 253;

/// `spawn(channels=…)` or `raw_channels=…`: a count in range, or a `ValueError` that says
/// which (instead of PyO3's bare "out of range integral type conversion").
pub(crate) fn channel_count(name: &str, n: i64) -> PyResult<u8> {
    let max = if name == "channels" {
        MAX_FRAMED_CHANNELS
    } else {
        MAX_RAW_CHANNELS
    };
    match u8::try_from(n) {
        Ok(count) if n <= max => Ok(count),
        _ => Err(PyValueError::new_err(format!(
            "{name} must be from 0 to {max}, not {n}"
        ))),
    }
}

/// Everything `spawn` takes, as Python gave it.
pub(crate) struct SpawnArgs<'a, 'py> {
    pub argv: &'a Bound<'py, PyAny>,
    pub env: Option<&'a Bound<'py, PyAny>>,
    pub extra_env: Option<&'a Bound<'py, PyAny>>,
    pub cwd: Option<&'a Bound<'py, PyAny>>,
    pub timeout: Option<f64>,
    pub grace: f64,
    pub drain: f64,
    pub channels: u8,
    pub raw_channels: u8,
    pub stdin: bool,
    pub max_frame: Option<u32>,
    pub budget: Option<usize>,
    pub stdout: &'a str,
    pub stderr: &'a str,
    pub after_exit: &'a str,
    pub session: &'a str,
    pub pids_max: Option<u64>,
    pub memory_max: Option<u64>,
    pub ignore_signals: Vec<i32>,
    pub block_signals: Vec<i32>,
}

impl SpawnArgs<'_, '_> {
    pub(crate) fn to_spec(&self) -> PyResult<TaskSpec> {
        let argv = argv(self.argv)?;
        let mut args = argv.into_iter();
        let program = args
            .next()
            .ok_or_else(|| PyValueError::new_err("argv is empty: it needs at least the program"))?;
        let mut spec = TaskSpec::new(program).args(args);

        if let Some(env) = self.env {
            spec = spec.env_clear();
            for (key, value) in env_items(env, "env")? {
                spec = spec.env(key, value);
            }
        }
        if let Some(extra) = self.extra_env {
            for (key, value) in env_items(extra, "extra_env")? {
                spec = spec.env(key, value);
            }
        }
        if let Some(cwd) = self.cwd {
            spec = spec.cwd(OsString::from_vec(fsencode(cwd)?));
        }
        if let Some(timeout) = self.timeout {
            let timeout = duration(timeout, "timeout")?;
            if timeout.is_zero() {
                return Err(PyValueError::new_err("timeout must be positive (or None)"));
            }
            spec = spec.timeout(timeout);
        }
        spec = spec
            .grace(duration(self.grace, "grace")?)
            .drain(duration(self.drain, "drain")?);
        for k in 0..self.raw_channels {
            spec = spec.channel(FIRST_RAW_CHANNEL_FD + i32::from(k));
        }
        spec = spec.channels(self.channels);
        if let Some(max) = self.max_frame {
            spec = spec.max_frame(max);
        }
        if let Some(budget) = self.budget {
            if budget == 0 {
                return Err(PyValueError::new_err("budget must be positive (or None)"));
            }
            spec = spec.budget(budget);
        }
        spec = spec
            .stdin(if self.stdin {
                Stdio::Capture
            } else {
                Stdio::Null
            })
            .stdout(stdio(self.stdout, "stdout")?)
            .stderr(stdio(self.stderr, "stderr")?)
            .after_exit(after_exit(self.after_exit)?)
            .session(session(self.session)?)
            .ignore_signals(self.ignore_signals.iter().copied())
            .block_signals(self.block_signals.iter().copied());
        if let Some(max) = self.pids_max {
            spec = spec.pids_max(max);
        }
        if let Some(max) = self.memory_max {
            spec = spec.memory_max(max);
        }
        Ok(spec)
    }
}

/// `os.fsencode(obj)`: `str` (with the file system encoding), `bytes` or `os.PathLike`.
fn fsencode(obj: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(bytes) = obj.cast::<PyBytes>() {
        return Ok(bytes.as_bytes().to_vec());
    }
    static FSENCODE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let encoded = FSENCODE.import(obj.py(), "os", "fsencode")?.call1((obj,))?;
    Ok(encoded.cast::<PyBytes>()?.as_bytes().to_vec())
}

fn argv(obj: &Bound<'_, PyAny>) -> PyResult<Vec<OsString>> {
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyBytes>() {
        return Err(PyTypeError::new_err(
            "argv must be a sequence of arguments such as ['ls', '-l'], not a single string",
        ));
    }
    obj.try_iter()?
        .map(|item| Ok(OsString::from_vec(fsencode(&item?)?)))
        .collect()
}

fn env_items(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<(OsString, OsString)>> {
    let mapping = obj
        .cast::<PyMapping>()
        .map_err(|_| PyTypeError::new_err(format!("{what} must be a mapping of str to str")))?;
    mapping
        .items()?
        .iter()
        .map(|item| {
            let (key, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) = item.extract()?;
            Ok((
                OsString::from_vec(fsencode(&key)?),
                OsString::from_vec(fsencode(&value)?),
            ))
        })
        .collect()
}

fn duration(seconds: f64, what: &str) -> PyResult<Duration> {
    Duration::try_from_secs_f64(seconds).map_err(|_| {
        PyValueError::new_err(format!(
            "{what} must be a finite number of seconds >= 0, not {seconds}"
        ))
    })
}

fn stdio(name: &str, what: &str) -> PyResult<Stdio> {
    match name {
        "capture" => Ok(Stdio::Capture),
        "inherit" => Ok(Stdio::Inherit),
        "null" => Ok(Stdio::Null),
        _ => Err(PyValueError::new_err(format!(
            "{what} must be 'capture', 'inherit' or 'null', not {name:?}"
        ))),
    }
}

fn after_exit(name: &str) -> PyResult<AfterExit> {
    match name {
        "kill_tree" => Ok(AfterExit::KillTree),
        "drain_until_eof" => Ok(AfterExit::DrainUntilEof),
        _ => Err(PyValueError::new_err(format!(
            "after_exit must be 'kill_tree' or 'drain_until_eof', not {name:?}"
        ))),
    }
}

fn session(name: &str) -> PyResult<Session> {
    match name {
        "new" => Ok(Session::New),
        "group" => Ok(Session::Group),
        "foreground" => Ok(Session::Foreground),
        _ => Err(PyValueError::new_err(format!(
            "session must be 'new', 'group' or 'foreground', not {name:?}"
        ))),
    }
}
