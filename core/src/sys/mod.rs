//! The system layer: the only place with `unsafe` and raw syscalls.
//!
//! - `spawn`: a vfork-class clone with a pidfd, the child's set-up, exec.
//! - `pidfd`: signals, reaping, exit info through pidfds.
//! - `ring`: the io_uring ring, its fixed-file table and provided buffer ring.
//! - `signals`: keeping `SIGPIPE` off the worker threads.
//! - `sched`: a short scheduler slice for the worker threads.
//! - `fd`: taking ownership of descriptors handed over as numbers.
#![allow(unsafe_code)]

pub(crate) mod fd;
pub(crate) mod pidfd;
pub(crate) mod ring;
pub(crate) mod sched;
pub(crate) mod signals;
pub(crate) mod spawn;
