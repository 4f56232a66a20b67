//! Taking ownership of descriptors the kernel hands back as plain numbers.

use std::os::fd::{FromRawFd, OwnedFd};

/// Adopts the descriptor an `IORING_OP_FIXED_FD_INSTALL` completion returned.
pub(crate) fn adopt_installed(fd: i32) -> OwnedFd {
    assert!(fd >= 0, "an install completion with an error has no fd");
    // SAFETY: a successful install completion's result is a new descriptor in our table
    // that nothing else refers to; each completion is seen once, so it is owned once.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Takes ownership of descriptor `fd` that this process was started with (a channel named
/// in `PIDRING_CHANNEL_FDS`), if it is open. The caller guarantees that nothing else in the
/// process owns it: `pidring::child` takes the channels at most once per process.
pub(crate) fn adopt_inherited(fd: i32) -> std::io::Result<OwnedFd> {
    if fd < 0 {
        return Err(std::io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: F_GETFD only reads the descriptor's flags; it fails with EBADF when `fd` is
    // not open.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is open (checked above) and, per the caller's contract, owned by nobody
    // else in this process, so wrapping it once is sound. It is marked close-on-exec like
    // every descriptor Rust opens.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        Ok(OwnedFd::from_raw_fd(fd))
    }
}
