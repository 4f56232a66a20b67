//! Turns "the pool's event channel has something" into a readable eventfd, for asyncio.
//!
//! The events stay in the pool's own channel (so an event Python has not taken still holds
//! its task's budget, and a task Python does not keep up with is paused): nothing is moved
//! or copied here. An async consumer
//! that finds the channel empty *arms* its stream's eventfd; one thread per pool, started
//! on the first arm, blocks until the channel has a message (or is disconnected) and then
//! writes every armed eventfd once. It sleeps in the kernel whenever nobody waits, and it
//! never polls.
//!
//! No wake-up is lost: a consumer arms before its last look at the channel, so a message
//! that arrives after that look finds the waker armed. A wake-up may be spurious (another
//! consumer took the message): the consumer looks again and re-arms.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Select, Sender};
use rustix::event::{eventfd, EventfdFlags};

use pidring::Event;

/// A stream's eventfd, and whether it is waiting for the waker.
pub(crate) struct WakeFd {
    fd: OwnedFd,
    armed: AtomicBool,
}

impl WakeFd {
    pub(crate) fn new() -> io::Result<Arc<WakeFd>> {
        let fd = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        Ok(Arc::new(WakeFd {
            fd,
            armed: AtomicBool::new(false),
        }))
    }

    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Clears the counter (so the fd is not readable until the next wake-up).
    pub(crate) fn reset(&self) {
        let mut buf = [0u8; 8];
        // EAGAIN: nothing to clear. Nothing else can fail on an eventfd we own.
        let _ = rustix::io::read(self.fd.as_fd(), &mut buf);
    }

    fn wake(&self) {
        self.armed.store(false, Ordering::SeqCst);
        // Fails only if the counter would overflow, and then the fd is readable anyway.
        let _ = rustix::io::write(self.fd.as_fd(), &1u64.to_ne_bytes());
    }
}

/// The handle of a pool's waker thread.
pub(crate) struct Waker {
    arms: Sender<Arc<WakeFd>>,
}

impl Waker {
    /// Starts the thread. It ends once every `Waker` handle is gone and the channel has
    /// said what it had to (a message, or disconnection when the pool stops).
    pub(crate) fn start(events: Receiver<Event>) -> io::Result<Waker> {
        let (arms, armed) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("pidring-py-waker".into())
            .spawn(move || run(&events, &armed))?;
        Ok(Waker { arms })
    }

    /// Asks for one write to `fd` once the channel has a message or is disconnected.
    pub(crate) fn arm(&self, fd: &Arc<WakeFd>) {
        if !fd.armed.swap(true, Ordering::SeqCst) {
            // The thread outlives every `Waker`, so the send cannot fail while we hold one.
            let _ = self.arms.send(Arc::clone(fd));
        }
    }
}

fn run(events: &Receiver<Event>, armed: &Receiver<Arc<WakeFd>>) {
    while let Ok(first) = armed.recv() {
        let mut select = Select::new();
        select.recv(events);
        // Blocks until a message is there or every sender is gone; receives nothing.
        select.ready();
        first.wake();
        for fd in armed.try_iter() {
            fd.wake();
        }
    }
}
