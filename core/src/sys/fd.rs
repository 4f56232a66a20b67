//! Taking ownership of descriptors the kernel hands back as plain numbers.

use std::os::fd::{FromRawFd, OwnedFd};

/// Adopts the descriptor an `IORING_OP_FIXED_FD_INSTALL` completion returned.
pub(crate) fn adopt_installed(fd: i32) -> OwnedFd {
    assert!(fd >= 0, "an install completion with an error has no fd");
    // SAFETY: a successful install completion's result is a new descriptor in our table
    // that nothing else refers to; each completion is seen once, so it is owned once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}
