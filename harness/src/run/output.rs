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
use std::time::Duration;

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

/// Bytes dropped per stream, shared by the writer thread and the event loop.
#[derive(Default)]
pub struct Counters {
    dropped_stdout: AtomicU64,
    dropped_stderr: AtomicU64,
}

impl Counters {
    pub fn add(&self, fd: i32, n: u64) {
        if fd == 1 {
            &self.dropped_stdout
        } else {
            &self.dropped_stderr
        }
        .fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> Dropped {
        Dropped {
            stdout: self.dropped_stdout.load(Ordering::Relaxed),
            stderr: self.dropped_stderr.load(Ordering::Relaxed),
        }
    }
}

/// Writes one chunk unless its stream is dead; marks it dead on failure (reporting `EPIPE` on
/// `broken`) and counts what it could not write.
pub fn write_chunk(chunk: &Chunk, dead: &mut [bool; 3], counters: &Counters, broken: &Sender<i32>) {
    let Some(slot) = usize::try_from(chunk.fd)
        .ok()
        .filter(|&fd| fd == 1 || fd == 2)
    else {
        return;
    };
    if !dead[slot] {
        match write_all(chunk.fd, &chunk.bytes) {
            Ok(()) => return,
            Err(errno) => {
                dead[slot] = true;
                if errno == libc::EPIPE {
                    let _ = broken.send(chunk.fd);
                }
                tracing::debug!(
                    fd = chunk.fd,
                    error = %std::io::Error::from_raw_os_error(errno),
                    "output stream closed; dropping its further output"
                );
            }
        }
    }
    counters.add(chunk.fd, chunk.bytes.len() as u64);
}

pub struct Writer {
    done: Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    /// Starts the writer thread; `depth` chunks may wait in its queue. The first time a
    /// stream fails with `EPIPE`, its fd is sent on `broken`.
    pub fn start(
        depth: usize,
        broken: Sender<i32>,
        counters: Arc<Counters>,
    ) -> std::io::Result<(Sender<Chunk>, Writer)> {
        let (tx, rx) = crossbeam_channel::bounded::<Chunk>(depth);
        let (done_tx, done) = crossbeam_channel::bounded::<()>(1);
        let thread = std::thread::Builder::new()
            .name("pidring-output".into())
            .spawn(move || {
                let mut dead = [false; 3];
                for chunk in rx {
                    write_chunk(&chunk, &mut dead, &counters, &broken);
                }
                let _ = done_tx.send(());
            })?;
        Ok((
            tx,
            Writer {
                done,
                thread: Some(thread),
            },
        ))
    }

    /// Fires once the queue is closed and every chunk was written (or dropped).
    pub fn done(&self) -> &Receiver<()> {
        &self.done
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

/// `write(2)` all of `buf` to `fd` (1 or 2). Err(errno) on a real failure.
pub fn write_all(fd: i32, mut buf: &[u8]) -> Result<(), i32> {
    while !buf.is_empty() {
        let n = match crate::sys::write_stdio(fd, buf) {
            Ok(n) => n,
            Err(libc::EINTR) => continue,
            // Someone set O_NONBLOCK on a description we share: wait until writable.
            Err(libc::EAGAIN) => {
                crate::sys::wait_writable(fd, Duration::from_secs(1));
                continue;
            }
            Err(errno) => return Err(errno),
        };
        if n == 0 {
            return Err(libc::EIO);
        }
        buf = &buf[n..];
    }
    Ok(())
}
