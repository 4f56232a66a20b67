//! What Python sees of the pool's events: small frozen classes (`Output`, `Message`,
//! `ChannelClosed`, `StdinClosed`, `Exited`, `Done` and the `Outcome` inside `Done`), and
//! the one function that turns a Rust [`Event`] into one of them.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use pyo3::{intern, IntoPyObjectExt};

use pidring::{
    ChannelEnd, Chunk, Event, ExitStatus, Outcome as RustOutcome, Reason, StreamId, WriteError,
};

use crate::errors::write_error;

/// Output read from one of a task's streams: ``task`` is its id (``Task.id``), ``stream``
/// ``"stdout"``, ``"stderr"`` or ``"channel<k>"`` (``spawn(raw_channels=n)``), ``data``
/// the bytes as read (a chunk of at most 64 KiB, not a line).
#[pyclass(frozen, module = "pidring", get_all)]
pub(crate) struct Output {
    task: u64,
    stream: Py<PyString>,
    data: Py<PyBytes>,
}

/// A whole frame the task sent on framed channel ``channel`` (``spawn(channels=n)``: 0 to
/// n - 1): ``frame`` is its payload, without the 4-byte length. Answer with
/// ``Task.send(channel, reply)``.
#[pyclass(frozen, module = "pidring", get_all)]
pub(crate) struct Message {
    task: u64,
    channel: u8,
    frame: Py<PyBytes>,
}

/// Framed channel ``channel`` is closed for good, in both directions; the task goes on.
///
/// ``reason``: ``"closed"`` (the child closed its end between two frames, or the task
/// ended), ``"truncated"`` (closed, or the child died, in the middle of a frame: ``partial``
/// bytes of it, header included, were dropped), ``"frame_too_large"`` (the child announced a
/// frame of ``frame_length`` bytes, over ``max_frame``: pidring closed the channel) or
/// ``"error"`` (reading failed with ``errno``). ``unsent``: bytes queued by ``Task.send``
/// (headers included) that were never written.
#[pyclass(frozen, module = "pidring", get_all)]
pub(crate) struct ChannelClosed {
    task: u64,
    channel: u8,
    reason: &'static str,
    unsent: u64,
    partial: Option<u64>,
    frame_length: Option<u64>,
    max_frame: Option<u32>,
    errno: Option<i32>,
}

/// The task's stdin (``spawn(stdin=True)``) is closed: by ``Task.close_stdin`` once
/// everything queued was written, because the task stopped reading it, or because the task
/// ended. ``error`` is ``None``, or the exception that closed it, which ``Task.write`` raises
/// from then on (``TaskBrokenPipeError`` when the task closed its stdin or exited).
/// ``unwritten``: bytes queued by ``Task.write`` that were never written.
#[pyclass(frozen, module = "pidring", get_all)]
pub(crate) struct StdinClosed {
    task: u64,
    error: Option<Py<PyAny>>,
    unwritten: u64,
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
        Ok(format!(
            "Output(task={}, stream={}, data={})",
            self.task,
            self.stream.bind(py).repr()?,
            bytes_repr(self.data.bind(py))?
        ))
    }
}

#[pymethods]
impl Message {
    #[classattr]
    fn __match_args__() -> (&'static str, &'static str, &'static str) {
        ("task", "channel", "frame")
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Message(task={}, channel={}, frame={})",
            self.task,
            self.channel,
            bytes_repr(self.frame.bind(py))?
        ))
    }
}

#[pymethods]
impl ChannelClosed {
    #[classattr]
    fn __match_args__() -> (&'static str, &'static str, &'static str) {
        ("task", "channel", "reason")
    }

    fn __repr__(&self) -> String {
        let mut s = format!(
            "ChannelClosed(task={}, channel={}, reason='{}'",
            self.task, self.channel, self.reason
        );
        if let Some(partial) = self.partial {
            s.push_str(&format!(", partial={partial}"));
        }
        if let (Some(len), Some(max)) = (self.frame_length, self.max_frame) {
            s.push_str(&format!(", frame_length={len}, max_frame={max}"));
        }
        if let Some(errno) = self.errno {
            s.push_str(&format!(", errno={errno}"));
        }
        s.push_str(&format!(", unsent={})", self.unsent));
        s
    }
}

#[pymethods]
impl StdinClosed {
    #[classattr]
    fn __match_args__() -> (&'static str, &'static str, &'static str) {
        ("task", "error", "unwritten")
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let error = match &self.error {
            Some(error) => error.bind(py).repr()?.to_string(),
            None => "None".to_owned(),
        };
        Ok(format!(
            "StdinClosed(task={}, error={error}, unwritten={})",
            self.task, self.unwritten
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

/// `bytes` as `repr` shows them, cut to their first 64 bytes (with the length) when longer.
fn bytes_repr(data: &Bound<'_, PyBytes>) -> PyResult<String> {
    const SHOWN: usize = 64;
    let len = data.as_bytes().len();
    if len <= SHOWN {
        return Ok(data.repr()?.to_string());
    }
    let head = PyBytes::new(data.py(), &data.as_bytes()[..SHOWN]);
    Ok(format!("<{len} bytes: {}...>", head.repr()?))
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

/// The one place a chunk (output or a frame) becomes Python `bytes`: one copy, then the
/// chunk is dropped, which returns its task's budget at once (the task's reads resume if
/// they were paused), whatever Python then does with the `bytes`.
fn payload(py: Python<'_>, chunk: Chunk) -> Py<PyBytes> {
    let bytes = PyBytes::new(py, &chunk).unbind();
    drop(chunk);
    bytes
}

fn channel_closed(task: u64, channel: u8, end: ChannelEnd, unsent: u64) -> ChannelClosed {
    let mut closed = ChannelClosed {
        task,
        channel,
        reason: "closed",
        unsent,
        partial: None,
        frame_length: None,
        max_frame: None,
        errno: None,
    };
    match end {
        ChannelEnd::Closed => {}
        ChannelEnd::Truncated { partial } => {
            closed.reason = "truncated";
            closed.partial = Some(partial);
        }
        ChannelEnd::FrameTooLarge { len, max } => {
            closed.reason = "frame_too_large";
            closed.frame_length = Some(len);
            closed.max_frame = Some(max);
        }
        ChannelEnd::Error(errno) => {
            closed.reason = "error";
            closed.errno = Some(errno);
        }
    }
    closed
}

/// The exception a `WriteError` raises, as an object (`StdinClosed.error`).
fn exception(py: Python<'_>, error: WriteError) -> Py<PyAny> {
    write_error(error).into_value(py).into_any()
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
        Event::Message {
            task,
            channel,
            frame,
        } => Message {
            task: task.0,
            channel,
            frame: payload(py, frame),
        }
        .into_py_any(py),
        Event::ChannelClosed {
            task,
            channel,
            end,
            unsent,
        } => channel_closed(task.0, channel, end, unsent).into_py_any(py),
        Event::StdinClosed {
            task,
            error,
            unwritten,
        } => StdinClosed {
            task: task.0,
            error: error.map(|e| exception(py, e)),
            unwritten,
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
        // `Event` is non-exhaustive: a kind of event added to the library after this binding
        // was written is reported rather than dropped without a word.
        other => Err(PyRuntimeError::new_err(format!(
            "pidring event this binding does not know (update the binding): {other:?}"
        ))),
    }
}
