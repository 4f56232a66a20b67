//! `SIGPIPE` on the worker threads: a write to a pipe nobody reads raises it on the writing
//! thread, and its default action ends the whole supervisor. The Rust runtime ignores it in
//! binaries, but a library cannot count on its host (a C program, an embedding
//! interpreter): each worker thread blocks it for its life and discards the one a failed
//! write left pending, so a broken pipe is only ever an `EPIPE`.

/// Blocks `SIGPIPE` on the calling thread (inherited by threads it starts; a child resets
/// its mask before exec).
pub(crate) fn block_sigpipe() {
    // SAFETY: `sigset_t` is plain data, initialised by `sigemptyset` before use; the
    // pointers are to live stack values; `pthread_sigmask` only changes this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Takes a pending `SIGPIPE` off the calling thread (where [`block_sigpipe`] keeps it), if
/// there is one; returns at once otherwise.
pub(crate) fn discard_sigpipe() {
    // SAFETY: as above; a zero timeout makes `sigtimedwait` return at once (EAGAIN when
    // nothing is pending); the siginfo out-pointer may be null.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        libc::sigtimedwait(&set, std::ptr::null_mut(), &zero);
    }
}
