//! What Python sees of the pool's events: small frozen classes (`Output`, `Exited`, `Done`
//! and the `Outcome` inside `Done`), and the one function that turns a Rust [`Event`] into
//! one of them.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use pyo3::{intern, IntoPyObjectExt};

use pidring::{Event, ExitStatus, Outcome as RustOutcome, Reason, StreamId};

/// Output read from one of a task's streams: ``task`` is its id (``Task.id``), ``stream``
/// ``"stdout"``, ``"stderr"`` or ``"channel<k>"``, ``data`` the bytes as read (a chunk of
/// at most 16 KiB, not a line).
#[pyclass(frozen, module = "pidring", get_all)]
pub(crate) struct Output {
    task: u64,
    stream: Py<PyString>,
    data: Py<PyBytes>,
}

/// The task's main process was reaped and every stream reached EOF. ``status`` follows
/// ``subprocess.Popen.returncode``: the exit code, ``-N`` when killed by signal N, ``None``
/// when a foreign reaper took the status.
#[pyclass(frozen, module = "pidring", get_all)]
pub(crate) struct Exited {
    task: u64,
    status: Option<i32>,
}

/// The task is over: its tree is gone and pidring released it. The last event of a task.
#[pyclass(frozen, module = "pidring", get_all)]
pub(crate) struct Done {
    task: u64,
    outcome: Py<Outcome>,
}

/// Why and how a task ended.
///
/// ``reason``: ``"exited"`` (on its own, ``exit_code`` says how), ``"signaled"`` (killed by
/// a signal pidring did not send), ``"status_unknown"``, ``"timed_out"``, ``"terminated"``
/// (``Task.terminate``/``kill``), ``"drain_expired"`` (it exited, and what it left running
/// was killed after the drain period) or ``"spawn_failed"``.
#[pyclass(frozen, module = "pidring", get_all)]
pub(crate) struct Outcome {
    reason: &'static str,
    /// ``subprocess`` convention: exit code, ``-N`` for signal N, ``None`` if unknown.
    returncode: Option<i32>,
    exit_code: Option<i32>,
    signal: Option<i32>,
    /// Seconds from spawn to the end.
    duration: f64,
    stdout_bytes: u64,
    stderr_bytes: u64,
    /// pidring had to signal the tree (SIGTERM and/or SIGKILL).
    tree_signalled: bool,
    /// Descendants (not the main process) alive when pidring signalled the tree.
    descendants_killed: u64,
    /// The errno of a failed spawn.
    errno: Option<i32>,
}

#[pymethods]
impl Output {
    #[classattr]
    fn __match_args__() -> (&'static str, &'static str, &'static str) {
        ("task", "stream", "data")
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        const SHOWN: usize = 64;
        let data = self.data.bind(py);
        let len = data.as_bytes().len();
        let shown = if len <= SHOWN {
            data.repr()?.to_string()
        } else {
            let head = PyBytes::new(py, &data.as_bytes()[..SHOWN]);
            format!("<{len} bytes: {}...>", head.repr()?)
        };
        Ok(format!(
            "Output(task={}, stream={}, data={shown})",
            self.task,
            self.stream.bind(py).repr()?
        ))
    }
}

#[pymethods]
impl Exited {
    #[classattr]
    fn __match_args__() -> (&'static str, &'static str) {
        ("task", "status")
    }

    fn __repr__(&self) -> String {
        format!(
            "Exited(task={}, status={})",
            self.task,
            py_option(self.status)
        )
    }
}

#[pymethods]
impl Done {
    #[classattr]
    fn __match_args__() -> (&'static str, &'static str) {
        ("task", "outcome")
    }

    fn __repr__(&self) -> String {
        format!(
            "Done(task={}, outcome={})",
            self.task,
            self.outcome.get().repr()
        )
    }
}

#[pymethods]
impl Outcome {
    /// True when the main process exited on its own with status 0.
    #[getter]
    fn ok(&self) -> bool {
        self.reason == "exited" && self.exit_code == Some(0)
    }

    fn __repr__(&self) -> String {
        self.repr()
    }
}

impl Outcome {
    fn repr(&self) -> String {
        let mut s = format!(
            "Outcome(reason='{}', returncode={}, duration={:.3}",
            self.reason,
            py_option(self.returncode),
            self.duration
        );
        if self.tree_signalled {
            s.push_str(&format!(
                ", tree_signalled=True, descendants_killed={}",
                self.descendants_killed
            ));
        }
        if let Some(errno) = self.errno {
            s.push_str(&format!(", errno={errno}"));
        }
        s.push(')');
        s
    }
}

fn py_option(value: Option<i32>) -> String {
    value.map_or_else(|| "None".to_owned(), |v| v.to_string())
}

/// `subprocess.Popen.returncode` of a status.
fn returncode(status: ExitStatus) -> Option<i32> {
    match status {
        ExitStatus::Code(code) => Some(code),
        ExitStatus::Signal(signal) => Some(-signal),
        ExitStatus::Unknown => None,
    }
}

fn reason_name(reason: Reason) -> &'static str {
    match reason {
        Reason::Exited(_) => "exited",
        Reason::Signaled(_) => "signaled",
        Reason::StatusUnknown => "status_unknown",
        Reason::TimedOut => "timed_out",
        Reason::Terminated => "terminated",
        Reason::DrainExpired => "drain_expired",
        Reason::SpawnFailed(_) => "spawn_failed",
    }
}

fn stream_name<'py>(py: Python<'py>, stream: StreamId) -> Bound<'py, PyString> {
    match stream {
        StreamId::STDOUT => intern!(py, "stdout").clone(),
        StreamId::STDERR => intern!(py, "stderr").clone(),
        StreamId(n) => PyString::new(py, &format!("channel{}", n - 2)),
    }
}

fn outcome(outcome: RustOutcome) -> Outcome {
    let bytes_of = |id: StreamId| {
        outcome
            .stream_bytes
            .iter()
            .find(|(s, _)| *s == id)
            .map_or(0, |(_, n)| *n)
    };
    Outcome {
        reason: reason_name(outcome.reason),
        returncode: returncode(outcome.status),
        exit_code: match outcome.status {
            ExitStatus::Code(code) => Some(code),
            _ => None,
        },
        signal: match outcome.status {
            ExitStatus::Signal(signal) => Some(signal),
            _ => None,
        },
        duration: outcome.duration.as_secs_f64(),
        stdout_bytes: bytes_of(StreamId::STDOUT),
        stderr_bytes: bytes_of(StreamId::STDERR),
        tree_signalled: outcome.tree_signalled,
        descendants_killed: outcome.descendants_killed,
        errno: match outcome.reason {
            Reason::SpawnFailed(errno) => Some(errno),
            _ => None,
        },
    }
}

/// The one place an output payload becomes Python `bytes`. The Rust payload is dropped
/// here, so whatever it holds (a buffer, flow-control credit) is released as soon as Python
/// has its own copy.
fn payload(py: Python<'_>, bytes: Vec<u8>) -> Py<PyBytes> {
    PyBytes::new(py, &bytes).unbind()
}

/// A Rust event as its Python object.
pub(crate) fn to_python(py: Python<'_>, event: Event) -> PyResult<Py<PyAny>> {
    match event {
        Event::Output {
            task,
            stream,
            bytes,
        } => Output {
            task: task.0,
            stream: stream_name(py, stream).unbind(),
            data: payload(py, bytes),
        }
        .into_py_any(py),
        Event::Exited { task, status } => Exited {
            task: task.0,
            status: returncode(status),
        }
        .into_py_any(py),
        Event::Done { task, outcome: o } => Done {
            task: task.0,
            outcome: Py::new(py, outcome(o))?,
        }
        .into_py_any(py),
    }
}
