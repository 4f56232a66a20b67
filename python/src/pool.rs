//! `Pool`: a pidring pool owned by Python. Every call that can wait (building the pool,
//! spawning, closing) runs with the GIL released; the pool's worker threads never touch
//! Python at all.

use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use pidring::{Backend, Containment, SpawnError};

use crate::errors::{build_error, invalid_option, spawn_error, PoolClosedError};
use crate::spec::{channel_count, SpawnArgs};
use crate::stream::{EventQueue, EventStream};
use crate::task::Task;

/// What a pool chose, kept after it is closed.
struct PoolInfo {
    backend: &'static str,
    backend_reason: String,
    containment: &'static str,
    containment_reason: String,
    capacity: usize,
    workers: usize,
}

/// The pool and its event channel, shared by the `Pool` object, its `EventStream`s and the
/// registry that closes pools at interpreter exit.
pub(crate) struct PoolCore {
    /// `None` once closed. Spawns hold the read lock; `close` takes the write lock.
    pool: RwLock<Option<pidring::Pool>>,
    pub(crate) queue: EventQueue,
    info: PoolInfo,
    /// The process that built the pool: a forked child has none of its threads.
    owner_pid: u32,
}

impl PoolCore {
    fn in_owner(&self) -> bool {
        std::process::id() == self.owner_pid
    }

    /// Kills every tree, waits for them, joins the workers. Idempotent. Call detached.
    fn close(&self) {
        let pool = self
            .pool
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(pool) = pool {
            if self.in_owner() {
                pool.shutdown();
            } else {
                // A forked child: the workers (and their tasks) belong to the parent.
                std::mem::forget(pool);
            }
        }
    }
}

impl Drop for PoolCore {
    fn drop(&mut self) {
        if !self.in_owner() {
            let pool = self
                .pool
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            std::mem::forget(pool);
        }
    }
}

/// Pools alive in this process, closed by `_close_all` at interpreter exit.
static LIVE_POOLS: Mutex<Vec<Weak<PoolCore>>> = Mutex::new(Vec::new());

/// Closes every pool still open (registered with `atexit` by `pidring/__init__.py`), so
/// no task outlives the interpreter.
#[pyfunction]
pub(crate) fn _close_all(py: Python<'_>) {
    let pools: Vec<Arc<PoolCore>> = {
        let mut live = LIVE_POOLS.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|w| w.strong_count() > 0);
        live.iter().filter_map(Weak::upgrade).collect()
    };
    py.detach(|| pools.iter().for_each(|p| p.close()));
}

/// A pool of worker threads supervising child processes, each with its whole process tree.
///
/// ``workers``: worker threads (default: one per core, more if ``max_tasks`` needs them).
/// ``containment``: ``"auto"`` (a cgroup v2 per task where one is writable, else the task's
/// process group), ``"cgroup"`` or ``"process-group"``. ``backend``: ``"auto"``,
/// ``"uring"`` or ``"epoll"``. ``max_tasks``: the most tasks held at once (sizes the
/// rings). ``subreaper``: make this process a child subreaper, so orphaned descendants of
/// tasks come back to it (and are reaped) instead of going to PID 1; the pool then also
/// reaps every other child of this process that exits (``subprocess.Popen``'s included), so
/// use it only where pidring starts all of them. ``task_budget``: each task's budget, in
/// bytes, of output and messages read from it and not yet taken by Python (default 256
/// KiB; see :meth:`events`).
///
/// Use it as a context manager: leaving the ``with`` block (or :meth:`close`) kills every
/// task's tree and waits for them. Pools still open when the interpreter exits are closed
/// then. Building a pool raises this process's soft ``RLIMIT_NOFILE`` to the hard limit.
#[pyclass(frozen, module = "pidring")]
pub(crate) struct Pool {
    core: Arc<PoolCore>,
}

#[pymethods]
impl Pool {
    #[new]
    #[pyo3(signature = (
        workers=None, containment="auto", backend="auto", *, max_tasks=None, subreaper=false,
        task_budget=None
    ))]
    fn new(
        py: Python<'_>,
        workers: Option<usize>,
        containment: &str,
        backend: &str,
        max_tasks: Option<usize>,
        subreaper: bool,
        task_budget: Option<usize>,
    ) -> PyResult<Pool> {
        let containment = match containment {
            "auto" => Containment::Auto,
            "cgroup" => Containment::Cgroup,
            "process-group" | "process_group" => Containment::ProcessGroup,
            other => {
                return Err(invalid_option(format!(
                    "containment must be 'auto', 'cgroup' or 'process-group', not {other:?}"
                )))
            }
        };
        let backend = match backend {
            "auto" => Backend::Auto,
            "uring" => Backend::Uring,
            "epoll" => Backend::Epoll,
            other => {
                return Err(invalid_option(format!(
                    "backend must be 'auto', 'uring' or 'epoll', not {other:?}"
                )))
            }
        };
        let mut builder = pidring::Pool::builder()
            .containment(containment)
            .backend(backend)
            .subreaper(subreaper);
        if let Some(n) = workers {
            builder = builder.workers(n);
        }
        if let Some(n) = max_tasks {
            builder = builder.max_tasks(n);
        }
        if let Some(bytes) = task_budget {
            builder = builder.task_budget(bytes);
        }
        let pool = py.detach(|| builder.build()).map_err(build_error)?;
        let info = PoolInfo {
            backend: pool.backend().as_str(),
            backend_reason: pool.backend_reason().to_owned(),
            containment: pool.containment().as_str(),
            containment_reason: pool.containment_reason().to_owned(),
            capacity: pool.capacity(),
            workers: pool.workers(),
        };
        let core = Arc::new(PoolCore {
            queue: EventQueue::new(pool.events().clone()),
            pool: RwLock::new(Some(pool)),
            info,
            owner_pid: std::process::id(),
        });
        let mut live = LIVE_POOLS.lock().unwrap_or_else(PoisonError::into_inner);
        live.retain(|w| w.strong_count() > 0);
        live.push(Arc::downgrade(&core));
        Ok(Pool { core })
    }

    /// Starts ``argv`` (a sequence of ``str``, ``bytes`` or path-like; ``argv[0]`` is looked
    /// up on ``PATH`` as ``execvp`` does) and returns its :class:`Task` once the program runs.
    ///
    /// ``env``: the whole environment, as in ``subprocess`` (default: this process's);
    /// ``extra_env``: variables added to it. ``cwd``: the working directory. ``timeout``:
    /// seconds after which the tree is terminated (``Done.outcome.reason == "timed_out"``).
    /// ``grace``: seconds between SIGTERM and SIGKILL on any termination. ``drain``: how long
    /// descendants may keep the output open after the main process exited before the rest of
    /// the tree is terminated. ``channels``: framed request channels (socketpairs; at most
    /// 200) whose child ends are at the fds listed, comma-separated, in the child's
    /// ``PIDRING_CHANNEL_FDS`` (3, 4, ... unless ``raw_channels`` takes those first); a
    /// frame is a 4-byte big-endian length and that many bytes, each frame from the child
    /// arrives as a ``Message`` event and :meth:`Task.send` sends one. ``stdin``: ``True``
    /// for a pipe :meth:`Task.write` writes and :meth:`Task.close_stdin` closes; otherwise
    /// ``/dev/null``.
    /// ``stdout``/``stderr``: ``"capture"`` (as ``Output`` events), ``"inherit"`` or
    /// ``"null"``. ``after_exit``: ``"kill_tree"`` (terminate what is left after ``drain``)
    /// or ``"drain_until_eof"``. ``session``: ``"new"`` (``setsid``), ``"group"`` or
    /// ``"foreground"``. ``pids_max``/``memory_max``: cgroup limits of the task's tree.
    /// ``ignore_signals``/``block_signals``: signals the program starts with ignored/blocked.
    /// ``raw_channels``: unframed socketpairs at fds 3, 4, ... whose bytes arrive as
    /// ``Output(stream="channel0")``, ... (what ``channels`` meant before framed channels).
    /// ``max_frame``: the longest frame, in bytes, a framed channel takes in either direction
    /// (default 16 MiB). ``budget``: this task's budget (default: the pool's
    /// ``task_budget``).
    ///
    /// Raises a :class:`SpawnError` subclass (``ProgramNotFoundError`` is a
    /// ``FileNotFoundError``, ``ProgramPermissionError`` a ``PermissionError``).
    #[pyo3(signature = (
        argv, env=None, cwd=None, timeout=None, grace=5.0, drain=1.0, channels=0, stdin=false,
        *, extra_env=None, stdout="capture", stderr="capture", after_exit="kill_tree",
        session="new", pids_max=None, memory_max=None, ignore_signals=Vec::new(),
        block_signals=Vec::new(), raw_channels=0, max_frame=None, budget=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn spawn(
        &self,
        py: Python<'_>,
        argv: &Bound<'_, PyAny>,
        env: Option<&Bound<'_, PyAny>>,
        cwd: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
        grace: f64,
        drain: f64,
        channels: i64,
        stdin: bool,
        extra_env: Option<&Bound<'_, PyAny>>,
        stdout: &str,
        stderr: &str,
        after_exit: &str,
        session: &str,
        pids_max: Option<u64>,
        memory_max: Option<u64>,
        ignore_signals: Vec<i32>,
        block_signals: Vec<i32>,
        raw_channels: i64,
        max_frame: Option<u32>,
        budget: Option<usize>,
    ) -> PyResult<Task> {
        self.check_owner()?;
        let spec = SpawnArgs {
            argv,
            env,
            extra_env,
            cwd,
            timeout,
            grace,
            drain,
            channels: channel_count("channels", channels)?,
            raw_channels: channel_count("raw_channels", raw_channels)?,
            stdin,
            max_frame,
            budget,
            stdout,
            stderr,
            after_exit,
            session,
            pids_max,
            memory_max,
            ignore_signals,
            block_signals,
        }
        .to_spec()?;
        let core = &self.core;
        let handle = py
            .detach(|| {
                let guard = core.pool.read().unwrap_or_else(PoisonError::into_inner);
                match guard.as_ref() {
                    Some(pool) => pool.spawn(spec),
                    None => Err(SpawnError::PoolClosed),
                }
            })
            .map_err(spawn_error)?;
        Ok(Task::new(handle))
    }

    /// The pool's events (``Output``, ``Message``, ``ChannelClosed``, ``StdinClosed``,
    /// ``Exited``, ``Done``), as an iterator that is also an async iterator. Per task they
    /// come in order: every ``Output`` and ``Message`` (and each channel's ``ChannelClosed``
    /// after its last ``Message``), then ``Exited``, then one ``Done``, last;
    /// ``StdinClosed`` comes once, before ``Done``, for a task spawned with ``stdin=True``.
    /// With ``timeout`` (seconds), iteration ends when no event came within it; otherwise it
    /// ends once the pool is closed and every event was read.
    ///
    /// Flow control is per task: output and messages read from a task and not yet taken
    /// from this iterator count against the task's budget (``Pool(task_budget=...)``,
    /// default 256 KiB). When it is full, the pool stops reading that task (its writes
    /// block on the full pipe) until Python takes its events; other tasks go on, and
    /// nothing is lost. The budget is returned as soon as an event becomes a Python object.
    #[pyo3(signature = (timeout=None))]
    fn events(&self, timeout: Option<f64>) -> PyResult<EventStream> {
        let timeout = timeout
            .map(|t| {
                Duration::try_from_secs_f64(t).map_err(|_| {
                    PyValueError::new_err(format!(
                        "timeout must be a finite number of seconds >= 0, not {t}"
                    ))
                })
            })
            .transpose()?;
        Ok(EventStream::new(Arc::clone(&self.core), timeout))
    }

    /// Kills every live task's tree, waits until each is gone, and stops the workers.
    /// Events already produced (including each killed task's ``Done``) can still be read;
    /// then iteration ends. Calling it again does nothing.
    fn close(&self, py: Python<'_>) {
        let core = &self.core;
        py.detach(|| core.close());
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, py: Python<'_>, _exc: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close(py);
        false
    }

    /// Whether :meth:`close` ran.
    #[getter]
    fn closed(&self) -> bool {
        self.core
            .pool
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }

    /// The driver that runs the tasks: ``"uring"`` or ``"epoll"``.
    #[getter]
    fn backend(&self) -> &'static str {
        self.core.info.backend
    }

    /// Why :attr:`backend` was chosen, in one line.
    #[getter]
    fn backend_reason(&self) -> &str {
        &self.core.info.backend_reason
    }

    /// How trees are contained: ``"cgroup"`` (a cgroup v2 per task: every descendant,
    /// ``setsid`` daemons included) or ``"process-group"`` (the task's process group, and
    /// the descendants that left it while their parent still runs, found when the tree is
    /// signalled; a daemon orphaned before that escapes unless ``subreaper=True``).
    #[getter]
    fn containment(&self) -> &'static str {
        self.core.info.containment
    }

    /// Why :attr:`containment` was chosen, in one line.
    #[getter]
    fn containment_reason(&self) -> &str {
        &self.core.info.containment_reason
    }

    /// How many typical tasks (stdout and stderr captured) the pool can hold at once.
    #[getter]
    fn capacity(&self) -> usize {
        self.core.info.capacity
    }

    /// Number of worker threads.
    #[getter]
    fn workers(&self) -> usize {
        self.core.info.workers
    }

    /// Counters summed over the workers: ``live_tasks``, ``spawned``,
    /// ``stale_completions``, ``rejected_events``.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let guard = self
            .core
            .pool
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let pool = guard
            .as_ref()
            .ok_or_else(|| PoolClosedError::new_err("the pool is shut down"))?;
        let stats = pool.stats();
        let dict = PyDict::new(py);
        dict.set_item("live_tasks", stats.live_tasks)?;
        dict.set_item("spawned", stats.spawned)?;
        dict.set_item("stale_completions", stats.stale_completions)?;
        dict.set_item("rejected_events", stats.rejected_events)?;
        Ok(dict)
    }

    fn __repr__(&self) -> String {
        let info = &self.core.info;
        format!(
            "<pidring.Pool backend={} containment={} workers={}{}>",
            info.backend,
            info.containment,
            info.workers,
            if self.closed() { " closed" } else { "" }
        )
    }
}

impl Pool {
    fn check_owner(&self) -> PyResult<()> {
        if self.core.in_owner() {
            Ok(())
        } else {
            Err(PoolClosedError::new_err(format!(
                "this pool belongs to process {}; a forked child cannot use it (make a new Pool)",
                self.core.owner_pid
            )))
        }
    }
}
