//! Passing PROGRAM's output through to pidring's own stdout and stderr.
//!
//! A writer thread does the `write(2)`s, so that a consumer that stops reading pidring's
//! stdout can block that thread but never the thread that handles signals and events: a
//! SIGTERM to pidring still ends the tree. Writes are raw (no `LineWriter`: a partial line is
//! passed on at once), in order across both streams, and survive partial writes, `EINTR` and
//! an `O_NONBLOCK` descriptor shared with someone else. A stream whose reader went away
//! (`EPIPE`) or that fails otherwise is dropped from then on; the bytes dropped are counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

/// One chunk for fd 1 or 2.
pub struct Chunk {
    pub fd: i32,
    pub bytes: Vec<u8>,
}

/// What the writer could not deliver.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Dropped {
    pub stdout: u64,
    pub stderr: u64,
}

#[derive(Default)]
struct Counters {
    dropped_stdout: AtomicU64,
    dropped_stderr: AtomicU64,
}

pub struct Writer {
    done: Receiver<()>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread; `depth` chunks may wait in its queue. The first time a
    /// stream fails with `EPIPE`, its fd is sent on `broken`.
    pub fn start(depth: usize, broken: Sender<i32>) -> std::io::Result<(Sender<Chunk>, Writer)> {
        let (tx, rx) = crossbeam_channel::bounded::<Chunk>(depth);
        let (done_tx, done) = crossbeam_channel::bounded::<()>(1);
        let counters = Arc::new(Counters::default());
        let c = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("pidring-output".into())
            .spawn(move || {
                let mut dead = [false; 3];
                for chunk in rx {
                    let fd = chunk.fd as usize;
                    if fd > 2 {
                        continue;
                    }
                    if !dead[fd] {
                        if let Err(errno) = write_all(chunk.fd, &chunk.bytes) {
                            dead[fd] = true;
                            if errno == libc::EPIPE {
                                let _ = broken.send(chunk.fd);
                            }
                            tracing::debug!(
                                fd,
                                error = %std::io::Error::from_raw_os_error(errno),
                                "output stream closed; dropping its further output"
                            );
                        } else {
                            continue;
                        }
                    }
                    let n = chunk.bytes.len() as u64;
                    if fd == 1 {
                        &c.dropped_stdout
                    } else {
                        &c.dropped_stderr
                    }
                    .fetch_add(n, Ordering::Relaxed);
                }
                let _ = done_tx.send(());
            })?;
        Ok((
            tx,
            Writer {
                done,
                counters,
                thread: Some(thread),
            },
        ))
    }

    /// Fires once the queue is closed and every chunk was written (or dropped).
    pub fn done(&self) -> &Receiver<()> {
        &self.done
    }

    /// Counts a chunk pidring had to drop itself (the queue was abandoned).
    pub fn count_dropped(&self, fd: i32, n: u64) {
        if fd == 1 {
            &self.counters.dropped_stdout
        } else {
            &self.counters.dropped_stderr
        }
        .fetch_add(n, Ordering::Relaxed);
    }

    pub fn dropped(&self) -> Dropped {
        Dropped {
            stdout: self.counters.dropped_stdout.load(Ordering::Relaxed),
            stderr: self.counters.dropped_stderr.load(Ordering::Relaxed),
        }
    }

    /// Joins the thread if it has finished; a thread blocked on a stuck consumer is left.
    pub fn finish(mut self, wait: bool) {
        if let Some(t) = self.thread.take() {
            if wait || t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// `write(2)` all of `buf` to `fd`. Err(errno) on a real failure.
pub fn write_all(fd: i32, mut buf: &[u8]) -> Result<(), i32> {
    while !buf.is_empty() {
        // SAFETY: buf is a valid readable slice for its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let errno = std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO);
            match errno {
                libc::EINTR => continue,
                // Someone set O_NONBLOCK on a description we share: wait until writable.
                libc::EAGAIN => {
                    let mut pfd = libc::pollfd {
                        fd,
                        events: libc::POLLOUT,
                        revents: 0,
                    };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut pfd, 1, 1000) };
                    continue;
                }
                _ => return Err(errno),
            }
        }
        if n == 0 {
            return Err(libc::EIO);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}
