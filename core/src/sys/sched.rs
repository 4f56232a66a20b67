//! The worker threads' scheduling: they sleep most of the time and run briefly when a task
//! writes, so they ask the scheduler for a short slice (EEVDF's custom slice, Linux 6.12 and
//! later: `sched_attr.sched_runtime` for `SCHED_OTHER`). With an earlier virtual deadline, a
//! woken worker preempts the CPU-bound tasks it supervises sooner, and output, messages and
//! exits are handled promptly on busy machines. Older kernels ignore the field; nothing else
//! changes (same policy and nice value), and children spawned from the thread get the default
//! slice back (`SCHED_FLAG_RESET_ON_FORK`). No privilege is needed.

use std::io;
use std::time::Duration;

/// Asks for a slice of `slice` (the kernel clamps it to 0.1–100 ms) for the calling thread.
pub(crate) fn request_short_slice(slice: Duration) -> io::Result<()> {
    // The current nice value: `sched_setattr` sets it too, and it must not change.
    let nice = rustix::process::getpriority_process(None)?;
    // SAFETY: `sched_attr` is plain integers; all-zero is a valid start.
    let mut attr: libc::sched_attr = unsafe { std::mem::zeroed() };
    attr.size = std::mem::size_of::<libc::sched_attr>() as u32;
    attr.sched_policy = libc::SCHED_OTHER as u32;
    attr.sched_flags = libc::SCHED_FLAG_RESET_ON_FORK as u64;
    attr.sched_nice = nice;
    attr.sched_runtime = slice.as_nanos().min(u128::from(u64::MAX)) as u64;
    // SAFETY: sched_setattr(2) on the calling thread (tid 0) with a pointer to a live,
    // fully initialised `sched_attr` whose `size` field is its size; flags 0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            0,
            &attr as *const libc::sched_attr,
            0,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}
