//! Rust errors to Python exceptions. The exception classes live in `pidring/errors.py`
//! (where multiple inheritance from `FileNotFoundError` and friends is plain Python); this
//! file only picks the class and its arguments for each Rust error.

use pyo3::PyErr;
use rustix::io::Errno;

use pidring::{BuildError, ContainmentError, ControlError, SpawnError, WriteError};

mod classes {
    pyo3::import_exception!(pidring.errors, BackendUnavailableError);
    pyo3::import_exception!(pidring.errors, InvalidOptionError);
    pyo3::import_exception!(pidring.errors, PoolSetupError);
    pyo3::import_exception!(pidring.errors, PoolContainmentError);
    pyo3::import_exception!(pidring.errors, ProgramNotFoundError);
    pyo3::import_exception!(pidring.errors, ProgramPermissionError);
    pyo3::import_exception!(pidring.errors, NotExecutableError);
    pyo3::import_exception!(pidring.errors, InvalidSpecError);
    pyo3::import_exception!(pidring.errors, TooManyFilesError);
    pyo3::import_exception!(pidring.errors, TooManyProcessesError);
    pyo3::import_exception!(pidring.errors, PoolFullError);
    pyo3::import_exception!(pidring.errors, TaskContainmentError);
    pyo3::import_exception!(pidring.errors, SpawnOSError);
    pyo3::import_exception!(pidring.errors, InvalidSignalError);
    pyo3::import_exception!(pidring.errors, PoolClosedError);
    pyo3::import_exception!(pidring.errors, StdinNotCapturedError);
    pyo3::import_exception!(pidring.errors, NoSuchChannelError);
    pyo3::import_exception!(pidring.errors, FrameTooLargeError);
    pyo3::import_exception!(pidring.errors, StreamClosedError);
    pyo3::import_exception!(pidring.errors, TaskBrokenPipeError);
    pyo3::import_exception!(pidring.errors, WriteOSError);
}

pub(crate) use classes::PoolClosedError;

/// `OSError(errno, strerror, filename)` arguments, so `.errno`, `.strerror` and `.filename`
/// are set as `subprocess` users expect.
fn os_args(errno: i32, message: &str, filename: Option<&str>) -> (i32, String, Option<String>) {
    (errno, message.to_owned(), filename.map(str::to_owned))
}

pub(crate) fn spawn_error(error: SpawnError) -> PyErr {
    let message = error.to_string();
    match error {
        SpawnError::NotFound(program) => classes::ProgramNotFoundError::new_err(os_args(
            Errno::NOENT.raw_os_error(),
            "program not found",
            Some(&program),
        )),
        SpawnError::PermissionDenied(program) => classes::ProgramPermissionError::new_err(os_args(
            Errno::ACCESS.raw_os_error(),
            "permission denied",
            Some(&program),
        )),
        SpawnError::NotExecutable(program) => classes::NotExecutableError::new_err(os_args(
            Errno::NOEXEC.raw_os_error(),
            "not an executable format",
            Some(&program),
        )),
        SpawnError::InvalidSpec(_) => classes::InvalidSpecError::new_err(message),
        SpawnError::TooManyFiles => classes::TooManyFilesError::new_err(os_args(
            Errno::MFILE.raw_os_error(),
            &message,
            None,
        )),
        SpawnError::TooManyProcesses => classes::TooManyProcessesError::new_err(os_args(
            Errno::AGAIN.raw_os_error(),
            &message,
            None,
        )),
        SpawnError::AtCapacity(_) => classes::PoolFullError::new_err(message),
        SpawnError::Containment(e) => classes::TaskContainmentError::new_err(containment(&e)),
        SpawnError::PoolClosed => classes::PoolClosedError::new_err(message),
        // The binding never installs an `on_event` callback, so this cannot come from Python;
        // mapped for completeness.
        SpawnError::FromCallback => classes::SpawnOSError::new_err(message),
        SpawnError::Cwd { path, source } => {
            let path = path.to_string_lossy().into_owned();
            match source.raw_os_error() {
                Some(errno) => {
                    classes::SpawnOSError::new_err(os_args(errno, &message, Some(&path)))
                }
                None => classes::SpawnOSError::new_err(message),
            }
        }
        SpawnError::Setup { source, .. } => match source.raw_os_error() {
            Some(errno) => classes::SpawnOSError::new_err(os_args(errno, &message, None)),
            None => classes::SpawnOSError::new_err(message),
        },
        SpawnError::Io(e) => match e.raw_os_error() {
            Some(errno) => classes::SpawnOSError::new_err(os_args(errno, &message, None)),
            None => classes::SpawnOSError::new_err(message),
        },
    }
}

pub(crate) fn build_error(error: BuildError) -> PyErr {
    let message = error.to_string();
    match error {
        BuildError::BackendUnavailable(..) => classes::BackendUnavailableError::new_err(message),
        BuildError::InvalidOption(_) => classes::InvalidOptionError::new_err(message),
        BuildError::Containment(e) => classes::PoolContainmentError::new_err(containment(&e)),
        BuildError::Driver(_, e) | BuildError::Cleanup(e) | BuildError::Thread(e) => {
            match e.raw_os_error() {
                Some(errno) => classes::PoolSetupError::new_err(os_args(errno, &message, None)),
                None => classes::PoolSetupError::new_err(message),
            }
        }
    }
}

pub(crate) fn control_error(error: ControlError) -> PyErr {
    let message = error.to_string();
    match error {
        ControlError::PoolClosed => classes::PoolClosedError::new_err(message),
        ControlError::InvalidSignal(_) => classes::InvalidSignalError::new_err(message),
    }
}

/// An option of `Pool()` the binding itself rejects (an unknown containment name, ...).
pub(crate) fn invalid_option(message: String) -> PyErr {
    classes::InvalidOptionError::new_err(message)
}

fn containment(error: &ContainmentError) -> String {
    format!("containment: {error}")
}

/// What `Task.write`, `close_stdin` and `send` raise, and what `StdinClosed.error` holds.
pub(crate) fn write_error(error: WriteError) -> PyErr {
    let message = error.to_string();
    match error {
        WriteError::PoolClosed => classes::PoolClosedError::new_err(message),
        WriteError::NotCaptured => classes::StdinNotCapturedError::new_err(
            "the task's stdin is not captured: spawn it with stdin=True to write to it",
        ),
        WriteError::NoSuchChannel(channel) => no_such_channel(i64::from(channel)),
        WriteError::FrameTooLarge { len, max } => {
            classes::FrameTooLargeError::new_err((message, len, max))
        }
        WriteError::Closed => classes::StreamClosedError::new_err(os_args(
            Errno::PIPE.raw_os_error(),
            "closed (by close_stdin, by the child, or because the task ended)",
            None,
        )),
        WriteError::BrokenPipe => classes::TaskBrokenPipeError::new_err(os_args(
            Errno::PIPE.raw_os_error(),
            "the task no longer reads it (broken pipe)",
            None,
        )),
        WriteError::Io(errno) => classes::WriteOSError::new_err(os_args(errno, &message, None)),
    }
}

/// `Task.send` to a channel index the task does not have (also one outside 0 to 255).
pub(crate) fn no_such_channel(channel: i64) -> PyErr {
    classes::NoSuchChannelError::new_err(format!("the task has no framed channel {channel}"))
}
