//! `Task`: a spawned task's id and pid, and the requests it takes.

use pyo3::prelude::*;

use pidring::TaskHandle;

use crate::errors::{control_error, data_path_missing};

/// A task started by :meth:`Pool.spawn`.
///
/// Requests (``terminate``, ``kill``, ``signal``) are queued to the pool's worker and return
/// at once; what happened comes as events (``Exited``, then ``Done``, whose ``task`` is this
/// task's ``id``). Requests to a task that already ended are ignored.
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

    /// Writes ``data`` to the task's stdin (``spawn(stdin=True)``).
    ///
    /// Not available yet: raises ``NotImplementedError`` until pidring's data path exists.
    fn write(&self, data: &[u8]) -> PyResult<()> {
        let _ = data;
        Err(data_path_missing("Task.write"))
    }

    /// Closes the task's stdin, so it reads EOF.
    ///
    /// Not available yet: raises ``NotImplementedError`` until pidring's data path exists.
    fn close_stdin(&self) -> PyResult<()> {
        Err(data_path_missing("Task.close_stdin"))
    }

    /// Sends one frame on the task's ``channel`` (``spawn(channels=n)``).
    ///
    /// Not available yet: raises ``NotImplementedError`` until pidring's data path exists.
    fn send(&self, channel: u8, frame: &[u8]) -> PyResult<()> {
        let _ = (channel, frame);
        Err(data_path_missing("Task.send"))
    }

    fn __repr__(&self) -> String {
        format!("<pidring.Task id={} pid={}>", self.id(), self.pid())
    }
}
