//! `pidring._native`: the Python binding of the pidring library (PyO3, abi3).
//!
//! The Python package `pidring` (`python/pidring/`) re-exports these classes and adds what
//! is plain Python: the exception classes, the asyncio side of `Pool.events()`, the
//! benchmark. One rule throughout: the GIL is held only to convert between Python and
//! Rust values. Waiting (for an event, a spawn, a shutdown) happens detached, and the
//! pool's worker threads never call into Python.
#![deny(unsafe_code)]

mod errors;
mod events;
mod pool;
mod spec;
mod stream;
mod task;
mod waker;

use pyo3::prelude::*;

/// Supervise thousands of child processes on Linux from one Python process, and never lose
/// one. See :class:`Pool`.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<pool::Pool>()?;
    m.add_class::<task::Task>()?;
    m.add_class::<stream::EventStream>()?;
    m.add_class::<events::Output>()?;
    m.add_class::<events::Message>()?;
    m.add_class::<events::ChannelClosed>()?;
    m.add_class::<events::StdinClosed>()?;
    m.add_class::<events::Exited>()?;
    m.add_class::<events::Done>()?;
    m.add_class::<events::Outcome>()?;
    m.add_function(wrap_pyfunction!(pool::_close_all, m)?)?;
    Ok(())
}
