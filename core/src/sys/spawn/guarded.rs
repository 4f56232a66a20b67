//! The descriptors a child must close for real before anything that can block, because
//! someone waits for their last copy to close: every spawn's child ends while they are in
//! flight (pipe write ends, channel ends), and the supervisor's own write ends that stay in
//! the process fd table (a task's stdin pipe and channel ends on the epoll driver). A child
//! stuck in `chdir` or `execve` on a hung mount must hold none of them: another task's
//! stdout would never reach EOF, and `close_stdin()` would never reach its task.
//!
//! Every other inherited fd the child only marks close-on-exec (`CLOSE_RANGE_CLOEXEC`), and
//! `execve` closes it after the kernel has released the cloning thread (`CLONE_VFORK` ends
//! at the new program's memory switch, before its close-on-exec pass). Closing before exec
//! is paid while the spawner waits: with an epoll pool's fleet in the fd table (a pidfd and
//! two pipe read ends per task), `filp_flush` of every inherited fd was a third of the
//! supervisor's CPU and cut spawns to a third. Holding those until exec harms no one: no one
//! waits for a read end or a pidfd to close.
//!
//! A bitmap of atomics over fd numbers below [`GUARDED_FDS`], read by the child without a
//! lock or an allocation; fds at or above it are always closed for real. Races stay on the
//! safe side: an fd guarded just after a clone is not in that child's table copy, or is
//! closed at its exec like any other; a bit left set (an error path that dropped a guarded
//! fd without [`unguard`]) makes children close an unrelated fd early, which costs one
//! close and changes nothing the program sees (it was close-on-exec).

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

/// Guarded fd numbers are below this; the child closes every fd from here up for real.
pub(super) const GUARDED_FDS: usize = 1 << 16;

const WORDS: usize = GUARDED_FDS / 64;

static GUARDED: [AtomicU64; WORDS] = [const { AtomicU64::new(0) }; WORDS];

/// Marks `fd` as one a child must close before anything that can block.
pub(crate) fn guard(fd: RawFd) {
    if let Some((word, bit)) = slot(fd) {
        GUARDED[word].fetch_or(bit, Ordering::SeqCst);
    }
}

/// Clears `fd`'s mark. Call it before the fd is closed (or handed out of the process fd
/// table); clearing an fd that was never guarded does nothing.
pub(crate) fn unguard(fd: RawFd) {
    if let Some((word, bit)) = slot(fd) {
        GUARDED[word].fetch_and(!bit, Ordering::SeqCst);
    }
}

/// Whether `fd` is guarded now (tests).
#[cfg(test)]
pub(crate) fn is_guarded(fd: RawFd) -> bool {
    slot(fd).is_some_and(|(word, bit)| GUARDED[word].load(Ordering::SeqCst) & bit != 0)
}

fn slot(fd: RawFd) -> Option<(usize, u64)> {
    let fd = usize::try_from(fd).ok().filter(|&fd| fd < GUARDED_FDS)?;
    Some((fd / 64, 1 << (fd % 64)))
}

/// Calls `f` with every guarded fd, lowest first. For the child: atomic loads only.
#[inline(always)]
pub(super) fn for_each(mut f: impl FnMut(RawFd)) {
    for (w, word) in GUARDED.iter().enumerate() {
        let mut bits = word.load(Ordering::SeqCst);
        while bits != 0 {
            let b = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            f((w * 64 + b) as RawFd);
        }
    }
}
