//! The system layer: the only place with `unsafe` and raw syscalls.
//!
//! - `spawn`: a vfork-class clone with a pidfd, the child's set-up, exec.
//! - `pidfd`: signals, reaping, exit info through pidfds.
//! - `ring`: the io_uring ring, its fixed-file table and provided buffer ring.
#![allow(unsafe_code)]

pub(crate) mod fd;
pub(crate) mod pidfd;
pub(crate) mod ring;
pub(crate) mod spawn;
