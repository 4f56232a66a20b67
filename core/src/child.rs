//! The child's side of framed request channels (`TaskSpec::channels`): a program run by a
//! pidring pool finds its channels and exchanges frames with the supervisor.
//!
//! The pool gives the child one end of a Unix socketpair per channel, at the fds listed in
//! order, comma-separated, in the `PIDRING_CHANNEL_FDS` environment variable (`3,4` for two
//! channels when no raw channel is asked for). A frame is a 4-byte big-endian length, then
//! that many bytes of payload, in both directions. Frames longer than the supervisor's
//! maximum (`TaskSpec::max_frame`, 16 MiB by default) make it close the channel.
//!
//! ```no_run
//! // In the task: ask, wait for the answer, repeat.
//! let channels = pidring::child::channels()?;
//! let requests = &channels[0];
//! requests.send(b"heartbeat")?;
//! let reply = requests.recv()?.expect("the supervisor closed the channel");
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! The same without pidring, in Python with the standard library only: see the README.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::spec::DEFAULT_MAX_FRAME;

/// The environment variable that names the channel fds.
pub const CHANNEL_FDS_VAR: &str = "PIDRING_CHANNEL_FDS";

/// Set once [`channels`] handed the fds out: they have one owner.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// One framed channel to the supervisor. `send` and `recv` take `&self`: one thread may
/// send while another receives; two concurrent senders (or receivers) must take turns.
#[derive(Debug)]
pub struct Channel {
    stream: UnixStream,
    max_frame: u32,
}

/// The channels the supervisor gave this process, in order (channel `k` is the one the
/// supervisor calls `k`). Empty when `PIDRING_CHANNEL_FDS` is not set. The fds are taken
/// once per process: a second call fails with `AlreadyExists`. An fd listed but not open,
/// or a malformed list, is an `InvalidData` error.
pub fn channels() -> io::Result<Vec<Channel>> {
    let Some(list) = std::env::var_os(CHANNEL_FDS_VAR) else {
        return Ok(Vec::new());
    };
    let list = list.to_str().ok_or_else(|| bad_list("not UTF-8"))?;
    let fds: Vec<RawFd> = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse::<RawFd>().map_err(|_| bad_list(s)))
        .collect::<io::Result<_>>()?;
    if TAKEN.swap(true, Ordering::AcqRel) {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "pidring::child::channels() was already called in this process",
        ));
    }
    let mut channels = Vec::with_capacity(fds.len());
    for fd in fds {
        let owned = crate::sys::fd::adopt_inherited(fd).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{CHANNEL_FDS_VAR} names fd {fd}, which is not open: {e}"),
            )
        })?;
        channels.push(Channel::from_fd(owned));
    }
    Ok(channels)
}

fn bad_list(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{CHANNEL_FDS_VAR} is not a comma-separated list of fds: {what:?}"),
    )
}

impl Channel {
    /// A channel over a connected stream socket (for tests, or fds passed another way).
    pub fn from_fd(fd: OwnedFd) -> Channel {
        Channel {
            stream: UnixStream::from(fd),
            max_frame: DEFAULT_MAX_FRAME,
        }
    }

    /// The longest frame [`recv`](Self::recv) accepts (default 16 MiB); a longer one is an
    /// `InvalidData` error and the channel is no longer usable.
    pub fn set_max_frame(&mut self, bytes: u32) {
        self.max_frame = bytes;
    }

    /// Sends one frame: the 4-byte big-endian length of `payload`, then `payload`. A
    /// supervisor that closed the channel is an error (`EPIPE`), never a `SIGPIPE`.
    pub fn send(&self, payload: &[u8]) -> io::Result<()> {
        let len = u32::try_from(payload.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame over 4 GiB"))?;
        // One write for small frames (most are), two for large ones (no copy).
        if payload.len() <= 64 * 1024 {
            let mut frame = Vec::with_capacity(4 + payload.len());
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(payload);
            self.send_all(&frame)
        } else {
            self.send_all(&len.to_be_bytes())?;
            self.send_all(payload)
        }
    }

    fn send_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match rustix::net::send(&self.stream, bytes, rustix::net::SendFlags::NOSIGNAL) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Receives one frame's payload; `None` when the supervisor closed the channel between
    /// frames. A channel closed in the middle of a frame is an `UnexpectedEof` error.
    pub fn recv(&self) -> io::Result<Option<Vec<u8>>> {
        let mut input = &self.stream;
        let mut header = [0u8; 4];
        let mut got = 0;
        while got < header.len() {
            match input.read(&mut header[got..]) {
                Ok(0) if got == 0 => return Ok(None),
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let len = u32::from_be_bytes(header);
        if len > self.max_frame {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("frame of {len} bytes over the maximum {}", self.max_frame),
            ));
        }
        let mut payload = vec![0u8; len as usize];
        input.read_exact(&mut payload)?;
        Ok(Some(payload))
    }

    /// Sends `payload` and waits for the answer.
    pub fn request(&self, payload: &[u8]) -> io::Result<Vec<u8>> {
        self.send(payload)?;
        self.recv()?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "channel closed"))
    }

    /// The socket itself (e.g. to poll it, or to shut one direction down).
    pub fn socket(&self) -> &UnixStream {
        &self.stream
    }
}

impl AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_over_a_socketpair() {
        let (a, b) = UnixStream::pair().unwrap();
        let (a, b) = (Channel::from_fd(a.into()), Channel::from_fd(b.into()));
        let big = vec![9u8; 200_000];
        let sender = std::thread::spawn(move || {
            a.send(b"ping").unwrap();
            a.send(b"").unwrap();
            a.send(&big).unwrap();
            a
        });
        assert_eq!(b.recv().unwrap().unwrap(), b"ping");
        assert_eq!(b.recv().unwrap().unwrap(), b"");
        assert_eq!(b.recv().unwrap().unwrap().len(), 200_000);
        drop(sender.join().unwrap());
        assert!(b.recv().unwrap().is_none());
    }

    #[test]
    fn a_frame_over_the_maximum_or_cut_short_is_an_error() {
        let (a, b) = UnixStream::pair().unwrap();
        let (a, mut b) = (Channel::from_fd(a.into()), Channel::from_fd(b.into()));
        b.set_max_frame(3);
        a.send(b"four").unwrap();
        assert_eq!(b.recv().unwrap_err().kind(), io::ErrorKind::InvalidData);
        let (a, b) = UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut &a, &[0, 0, 0, 9, 1, 2]).unwrap();
        drop(a);
        let b = Channel::from_fd(b.into());
        assert_eq!(b.recv().unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
