//! A real pseudo-terminal for the terminal tests: the program under test runs as the session
//! leader of a new session whose controlling terminal is the pty's slave (as a terminal
//! emulator, `ssh` or `docker run -it` start a shell), and the test types into the master and
//! reads what is echoed.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct Pty {
    pub pid: i32,
    master: Arc<OwnedFd>,
    output: Arc<Mutex<Vec<u8>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    /// The final state once reaped (the pid may be reused after that).
    reaped: Option<State>,
}

/// How the program under test ended or stopped, from `waitpid(WUNTRACED)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Exited(i32),
    Signaled(i32),
    Stopped(i32),
}

impl Pty {
    /// Starts `program ARGS` on a new pty (80x24) as the leader of a new session with that
    /// terminal as its controlling terminal.
    pub fn spawn<I, S>(program: &str, args: I) -> Pty
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let (mut master, mut slave) = (-1, -1);
        let size = libc::winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two fds into the integers given; null name and termios mean
        // defaults; `size` is a valid winsize.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty just returned these fds; each is owned once here.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        // SAFETY: fcntl on a valid fd.
        unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe; they only touch this child.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start the program on the pty");
        let pid = child.id() as i32;
        // `child` is not waited for through std: the test waits with waitpid(WUNTRACED).
        std::mem::forget(child);
        let master = Arc::new(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let reader = {
            let master = Arc::clone(&master);
            let output = Arc::clone(&output);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    // SAFETY: read into a buffer of ours from a valid fd.
                    let n = unsafe {
                        libc::read(master.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len())
                    };
                    if n > 0 {
                        output.lock().unwrap().extend_from_slice(&buf[..n as usize]);
                    } else if n < 0
                        && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
                    {
                        continue;
                    } else {
                        break; // EIO: no slave fd is open any more
                    }
                }
            })
        };
        Pty {
            pid,
            master,
            output,
            reader: Some(reader),
            reaped: None,
        }
    }

    /// Everything read from the terminal so far, lossily as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until the output read so far contains `needle` (after `from` bytes).
    pub fn expect(&self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.text().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Types `bytes` (e.g. `"exit 0\n"`, `"\x03"` for ^C, `"\x1a"` for ^Z).
    pub fn send(&self, bytes: &str) {
        let b = bytes.as_bytes();
        // SAFETY: write from a buffer of ours to a valid fd.
        let n = unsafe { libc::write(self.master.as_raw_fd(), b.as_ptr().cast(), b.len()) };
        assert_eq!(n, b.len() as isize, "write to the pty");
    }

    /// Waits until the program exits, is killed or stops (`WUNTRACED`), up to `limit`;
    /// `None` if it is still running then.
    pub fn wait(&mut self, limit: Duration) -> Option<State> {
        if let Some(s) = self.reaped {
            return Some(s);
        }
        let deadline = Instant::now() + limit;
        loop {
            let mut status = 0;
            // SAFETY: waitpid on our own child, writing an int of ours.
            let rc =
                unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG | libc::WUNTRACED) };
            if rc == self.pid {
                if libc::WIFEXITED(status) {
                    self.reaped = Some(State::Exited(libc::WEXITSTATUS(status)));
                    return self.reaped;
                }
                if libc::WIFSIGNALED(status) {
                    self.reaped = Some(State::Signaled(libc::WTERMSIG(status)));
                    return self.reaped;
                }
                if libc::WIFSTOPPED(status) {
                    return Some(State::Stopped(libc::WSTOPSIG(status)));
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` to the program under test (its pid: the test's own child, not reaped).
    pub fn signal(&self, sig: i32) {
        if self.reaped.is_none() {
            // SAFETY: kill on our own unreaped child.
            unsafe { libc::kill(self.pid, sig) };
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        if self.reaped.is_none() {
            // SAFETY: kill and waitpid on our own unreaped child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
                let mut status = 0;
                libc::waitpid(self.pid, &mut status, 0);
            }
        }
        // The reader ends by itself once no slave fd is open (EIO); not joined, so that a
        // process the test failed to end cannot hang the test.
        drop(self.reader.take());
    }
}
