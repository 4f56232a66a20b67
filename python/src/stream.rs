//! `Pool.events()`: an iterator over the pool's events that is also an async iterator.
//!
//! Both read the pool's own event channel. `for ev in stream` takes what is there while
//! holding the GIL and, when nothing is, blocks with the GIL released (waking every 100 ms
//! only to let Ctrl-C through). `async for ev in stream` runs `pidring._aio.next_event`,
//! which calls [`EventStream::_poll`] and, while the channel is empty, waits for the
//! stream's eventfd in the running event loop (`loop.add_reader`); see `waker.rs`.

use std::os::fd::AsRawFd;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use pyo3::exceptions::{PyOSError, PyStopAsyncIteration};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use pidring::Event;

use crate::events::to_python;
use crate::pool::PoolCore;
use crate::waker::{WakeFd, Waker};

/// How long a blocking `next()` stays detached before it checks for signals (Ctrl-C).
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// The pool's event channel, shared by every stream of the pool.
pub(crate) struct EventQueue {
    events: Receiver<Event>,
    waker: OnceLock<std::io::Result<Waker>>,
}

impl EventQueue {
    pub(crate) fn new(events: Receiver<Event>) -> EventQueue {
        EventQueue {
            events,
            waker: OnceLock::new(),
        }
    }

    fn waker(&self) -> PyResult<&Waker> {
        self.waker
            .get_or_init(|| Waker::start(self.events.clone()))
            .as_ref()
            .map_err(|e| PyOSError::new_err(format!("cannot start the event waker thread: {e}")))
    }
}

/// What a non-blocking look at the channel found.
enum Polled {
    Event(Event),
    Empty,
    End,
}

fn try_take(events: &Receiver<Event>) -> Polled {
    match events.try_recv() {
        Ok(event) => Polled::Event(event),
        Err(TryRecvError::Empty) => Polled::Empty,
        Err(TryRecvError::Disconnected) => Polled::End,
    }
}

/// Iterator over a pool's events, as returned by :meth:`Pool.events`.
///
/// ``for event in stream`` blocks (with the GIL released) until the next event;
/// ``async for event in stream`` awaits it in the running asyncio loop. Iteration ends once
/// the pool is closed and every event was read, or, with a ``timeout``, when no event came
/// within that many seconds. Several streams of one pool share its events: each event goes
/// to exactly one of them.
#[pyclass(frozen, module = "pidring")]
pub(crate) struct EventStream {
    /// Keeps the pool (and so its event channel's senders) alive while a stream is read.
    core: Arc<PoolCore>,
    timeout: Option<Duration>,
    /// Created on the first async wait.
    wake_fd: OnceLock<Arc<WakeFd>>,
}

impl EventStream {
    pub(crate) fn new(core: Arc<PoolCore>, timeout: Option<Duration>) -> EventStream {
        EventStream {
            core,
            timeout,
            wake_fd: OnceLock::new(),
        }
    }

    fn queue(&self) -> &EventQueue {
        &self.core.queue
    }

    fn wake_fd(&self) -> PyResult<&Arc<WakeFd>> {
        if let Some(fd) = self.wake_fd.get() {
            return Ok(fd);
        }
        let fd = WakeFd::new()
            .map_err(|e| PyOSError::new_err(format!("cannot create an eventfd: {e}")))?;
        Ok(self.wake_fd.get_or_init(|| fd))
    }
}

#[pymethods]
impl EventStream {
    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let events = &self.queue().events;
        match try_take(events) {
            Polled::Event(event) => return to_python(py, event).map(Some),
            Polled::End => return Ok(None),
            Polled::Empty => {}
        }
        let deadline = self.timeout.map(|t| Instant::now() + t);
        loop {
            let slice = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    left.min(SIGNAL_CHECK)
                }
                None => SIGNAL_CHECK,
            };
            match py.detach(|| events.recv_timeout(slice)) {
                Ok(event) => return to_python(py, event).map(Some),
                Err(RecvTimeoutError::Disconnected) => return Ok(None),
                Err(RecvTimeoutError::Timeout) => py.check_signals()?,
            }
        }
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        static NEXT_EVENT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
        let py = slf.py();
        NEXT_EVENT
            .import(py, "pidring._aio", "next_event")?
            .call1((slf,))
    }

    /// Seconds without an event after which iteration ends (``None``: never).
    #[getter]
    fn timeout(&self) -> Option<f64> {
        self.timeout.map(|t| t.as_secs_f64())
    }

    /// The eventfd an asyncio loop watches: readable after :meth:`_poll` returned ``None``
    /// and an event (or the end) arrived since.
    fn fileno(&self) -> PyResult<i32> {
        Ok(self.wake_fd()?.fd().as_raw_fd())
    }

    /// The next event without blocking: an event, ``None`` when there is none yet (then the
    /// fd of :meth:`fileno` becomes readable when there is), or ``StopAsyncIteration`` once
    /// the pool is closed and drained. For ``pidring._aio``.
    fn _poll(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let events = &self.queue().events;
        match try_take(events) {
            Polled::Event(event) => return to_python(py, event).map(Some),
            Polled::End => return Err(PyStopAsyncIteration::new_err(())),
            Polled::Empty => {}
        }
        let fd = self.wake_fd()?;
        fd.reset();
        self.queue().waker()?.arm(fd);
        // Armed before this last look: whatever arrives after it wakes the fd.
        match try_take(events) {
            Polled::Event(event) => to_python(py, event).map(Some),
            Polled::End => Err(PyStopAsyncIteration::new_err(())),
            Polled::Empty => Ok(None),
        }
    }

    fn __repr__(&self) -> String {
        match self.timeout {
            Some(t) => format!("<pidring.EventStream timeout={}>", t.as_secs_f64()),
            None => "<pidring.EventStream>".to_owned(),
        }
    }
}
