//! `Task`: a spawned task's id and pid, and the requests it takes.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes};

use pidring::TaskHandle;

use crate::errors::{control_error, no_such_channel, write_error};

/// A task started by :meth:`Pool.spawn`.
///
/// Requests (``terminate``, ``kill``, ``signal``) are queued to the pool's worker and return
/// at once; what happened comes as events (``Exited``, then ``Done``, whose ``task`` is this
/// task's ``id``). Requests to a task that already ended are ignored.
///
/// Writing to the task (``write``, ``close_stdin``, ``send``) is queued the same way and
/// never blocks; the GIL is released while the request is handed to the pool.
#[pyclass(frozen, module = "pidring")]
pub(crate) struct Task {
    handle: TaskHandle,
}

impl Task {
    pub(crate) fn new(handle: TaskHandle) -> Task {
        Task { handle }
    }
}

#[pymethods]
impl Task {
    /// The task's id, unique in its pool: the ``task`` of its events.
    #[getter]
    fn id(&self) -> u64 {
        self.handle.id().0
    }

    /// The main process's pid, for display and logs. pidring signals through pidfds only,
    /// so use :meth:`signal` rather than ``os.kill(task.pid, ...)``, which can hit a reused pid.
    #[getter]
    fn pid(&self) -> u32 {
        self.handle.pid()
    }

    /// SIGTERM to the whole tree, then SIGKILL after the task's ``grace``.
    fn terminate(&self) -> PyResult<()> {
        self.handle.terminate().map_err(control_error)
    }

    /// SIGKILL to the whole tree at once.
    fn kill(&self) -> PyResult<()> {
        self.handle.kill().map_err(control_error)
    }

    /// Sends ``sig`` (an ``int`` or a ``signal.Signals``) to the main process only.
    fn signal(&self, sig: i32) -> PyResult<()> {
        self.handle.signal(sig).map_err(control_error)
    }

    /// Queues ``data`` (``bytes`` or any bytes-like object) for the task's stdin
    /// (``spawn(stdin=True)``) and returns at once: the pool writes it in order after
    /// everything queued before, as fast as the task reads, without ever blocking this
    /// thread or the pool.
    ///
    /// Raises ``StdinNotCapturedError`` (a ``ValueError``) without ``stdin=True``,
    /// ``StreamClosedError`` (a ``BrokenPipeError``) after :meth:`close_stdin` or once the
    /// task ended, ``TaskBrokenPipeError`` (a ``StreamClosedError``) once the task stopped
    /// reading its stdin (closed it or exited: a write found the pipe broken; pidring never
    /// lets ``SIGPIPE`` reach this process), ``PoolClosedError``. A write queued just before
    /// the task stopped reading is not written; the ``StdinClosed`` event counts such bytes
    /// (``unwritten``).
    fn write(&self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let handle = &self.handle;
        with_bytes(data, |bytes| py.detach(|| handle.write(bytes.to_vec())))?.map_err(write_error)
    }

    /// Closes the task's stdin once everything queued was written: the task then reads end
    /// of file, and a ``StdinClosed`` event follows. Closing it again does nothing.
    ///
    /// Raises ``StdinNotCapturedError`` without ``spawn(stdin=True)``, ``PoolClosedError``.
    fn close_stdin(&self, py: Python<'_>) -> PyResult<()> {
        let handle = &self.handle;
        py.detach(|| handle.close_stdin()).map_err(write_error)
    }

    /// Sends one frame (``bytes`` or any bytes-like object, at most the task's ``max_frame``)
    /// on framed channel ``channel`` (``spawn(channels=n)``: 0 to n - 1). The child reads a
    /// 4-byte big-endian length, then the frame. Frames are queued and go out whole and in
    /// order; this returns at once.
    ///
    /// Raises ``NoSuchChannelError`` (a ``ValueError``) for an index the task does not have,
    /// ``FrameTooLargeError`` (a ``ValueError``) for a frame over the maximum,
    /// ``StreamClosedError`` (a ``BrokenPipeError``) once the channel is closed (by the child,
    /// or because the task ended; a ``ChannelClosed`` event says why), ``TaskBrokenPipeError``
    /// when a write found it broken, ``PoolClosedError``.
    fn send(&self, py: Python<'_>, channel: i64, frame: &Bound<'_, PyAny>) -> PyResult<()> {
        let channel = u8::try_from(channel).map_err(|_| no_such_channel(channel))?;
        let handle = &self.handle;
        with_bytes(frame, |bytes| py.detach(|| handle.send(channel, bytes)))?.map_err(write_error)
    }

    fn __repr__(&self) -> String {
        format!("<pidring.Task id={} pid={}>", self.id(), self.pid())
    }
}

/// Runs `f` on the bytes of a bytes-like object. `bytes` is immutable, so its buffer is lent
/// as is (and `f` may release the GIL while using it); `bytearray`, `memoryview` and other
/// buffers are copied first (`bytes(memoryview(obj))`), since Python code could change them
/// once the GIL is released. `str` and other non-buffers raise `TypeError`.
fn with_bytes<T>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> T) -> PyResult<T> {
    if let Ok(bytes) = obj.cast::<PyBytes>() {
        return Ok(f(bytes.as_bytes()));
    }
    if let Ok(array) = obj.cast::<PyByteArray>() {
        return Ok(f(&array.to_vec()));
    }
    static MEMORYVIEW: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let view = MEMORYVIEW
        .import(obj.py(), "builtins", "memoryview")?
        .call1((obj,))?;
    let copy = view.call_method0("tobytes")?;
    Ok(f(copy.cast::<PyBytes>()?.as_bytes()))
}
