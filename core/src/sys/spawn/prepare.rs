//! Resolution, in the supervisor: a [`TaskSpec`] validated and turned into everything the
//! child will read (argv, envp, the program's candidate paths, the cwd, signal sets) as C
//! strings and pointer arrays, so that the child never allocates. Runs on the caller's
//! thread (`Pool::spawn`), never on a worker; never panics on user input.

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use libc::c_char;

use crate::child::CHANNEL_FDS_VAR;
use crate::error::SpawnError;
use crate::spec::{Session, Stdio, TaskSpec};

/// Default search path when the child's environment has no `PATH` (as glibc's `execvp`).
const DEFAULT_PATH: &[u8] = b"/usr/local/bin:/usr/bin:/bin";
/// At most this many extra channels: `StreamId` is a `u8`, channels start at 2, 255 is stdin.
const MAX_CHANNELS: usize = 253;
/// At most this many framed channels.
const MAX_FRAMED: u8 = 200;

/// Everything the child needs, resolved before the clone (the child may not allocate).
pub(crate) struct Prepared {
    /// The program as the user gave it, for error messages.
    pub(super) program: String,
    /// Kept alive (and unchanged) for `argv_ptrs`.
    _argv: CStrings,
    pub(super) argv_ptrs: Vec<*const c_char>,
    /// Kept alive (and unchanged) for `envp_ptrs`.
    _envp: CStrings,
    pub(super) envp_ptrs: Vec<*const c_char>,
    /// Paths to try with `execve`, in order.
    pub(super) candidates: Vec<CString>,
    pub(super) cwd: Option<CString>,
    pub(super) cwd_display: Option<PathBuf>,
    pub(super) stdin: Stdio,
    pub(super) stdout: Stdio,
    pub(super) stderr: Stdio,
    /// Child fd numbers of the channels, in `StreamId::channel(k)` order: the raw ones, then
    /// the framed ones.
    pub(super) channels: Vec<i32>,
    /// The same, sorted (the fds kept open across exec besides 0, 1, 2).
    pub(super) channels_sorted: Vec<i32>,
    pub(super) session: Session,
    /// Kernel signal sets (bit `n - 1` for signal `n`): started with `SIG_IGN`, and blocked.
    pub(super) ignored_mask: u64,
    pub(super) blocked_mask: u64,
    /// Test builds only: the child waits at the stall point before exec (see
    /// `child::TEST_STALL`). Asked for with the environment variable `PIDRING_TEST_STALL`.
    #[cfg(test)]
    pub(super) stall: bool,
}

// SAFETY: the raw pointers in `argv_ptrs` / `envp_ptrs` point into the heap buffers of the
// `CStrings` owned by the same `Prepared` (`_argv`, `_envp`), which are never mutated or
// dropped before the `Prepared` itself; moving the `Prepared` does not move those buffers.
// Sharing is read-only.
unsafe impl Send for Prepared {}
// SAFETY: see `Send`: nothing is ever written through the pointers.
unsafe impl Sync for Prepared {}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("program", &self.program)
            .field("candidates", &self.candidates)
            .field("cwd", &self.cwd_display)
            .field("channels", &self.channels)
            .finish_non_exhaustive()
    }
}

fn invalid(msg: impl Into<String>) -> SpawnError {
    SpawnError::InvalidSpec(msg.into())
}

fn cstring(what: &str, bytes: &[u8]) -> Result<CString, SpawnError> {
    CString::new(bytes).map_err(|_| invalid(format!("{what} contains a NUL byte")))
}

/// The kernel signal set of `signals` (bit `n - 1` for signal `n`). Numbers 1 to 64 other
/// than SIGKILL and SIGSTOP (which can be neither ignored nor blocked).
fn signal_set(what: &str, signals: &[i32]) -> Result<u64, SpawnError> {
    let mut set = 0u64;
    for &sig in signals {
        if !(1..=64).contains(&sig) || sig == libc::SIGKILL || sig == libc::SIGSTOP {
            return Err(invalid(format!(
                "cannot {what} signal {sig}: signals are 1 to 64, other than SIGKILL and SIGSTOP"
            )));
        }
        set |= 1u64 << (sig - 1);
    }
    Ok(set)
}

/// C strings packed in one buffer (`a\0b\0...`): argv and envp cost two allocations each,
/// not one or two per string, which matters with a large environment.
struct CStrings {
    buf: Vec<u8>,
    starts: Vec<usize>,
}

impl CStrings {
    fn with_capacity(strings: usize, bytes: usize) -> CStrings {
        CStrings {
            buf: Vec::with_capacity(bytes),
            starts: Vec::with_capacity(strings),
        }
    }

    /// Appends the concatenation of `parts` as one C string; `what` names it in the error
    /// if it holds a NUL byte.
    fn push(&mut self, what: &str, parts: &[&[u8]]) -> Result<(), SpawnError> {
        if parts.iter().any(|p| p.contains(&0)) {
            return Err(invalid(format!("{what} contains a NUL byte")));
        }
        self.push_checked(parts);
        Ok(())
    }

    /// [`push`](Self::push) of parts known to hold no NUL (the kernel's own environment).
    fn push_checked(&mut self, parts: &[&[u8]]) {
        self.starts.push(self.buf.len());
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.buf.push(0);
    }

    /// The NULL-terminated pointer array. The buffer must not change afterwards.
    fn pointers(&self) -> Vec<*const c_char> {
        let base = self.buf.as_ptr();
        let mut v: Vec<*const c_char> = self
            .starts
            .iter()
            // SAFETY: every start is an offset inside `buf` (each string pushed ends in NUL).
            .map(|&at| unsafe { base.add(at) }.cast::<c_char>())
            .collect();
        v.push(std::ptr::null());
        v
    }
}

/// Validates the spec and resolves argv, envp, the program's candidate paths and the cwd.
pub(crate) fn prepare(spec: &TaskSpec) -> Result<Prepared, SpawnError> {
    let program_bytes = spec.program.as_bytes();
    let program = spec.program.to_string_lossy().into_owned();
    if program_bytes.is_empty() {
        return Err(SpawnError::NotFound(program));
    }
    if program_bytes.contains(&0) {
        return Err(invalid("program contains a NUL byte"));
    }

    // argv[0] is the program as given, like std's Command.
    let arg_bytes: usize = spec.args.iter().map(|a| a.len() + 1).sum();
    let mut argv =
        CStrings::with_capacity(1 + spec.args.len(), program_bytes.len() + 1 + arg_bytes);
    argv.push("program", &[program_bytes])?;
    for arg in &spec.args {
        argv.push("argument", &[arg.as_bytes()])?;
    }

    // Framed channels: the lowest fds from 3 up that no raw channel uses.
    if spec.framed > MAX_FRAMED {
        return Err(invalid(format!("at most {MAX_FRAMED} framed channels")));
    }
    let mut framed_fds = Vec::with_capacity(usize::from(spec.framed));
    let mut next_fd = 3;
    while framed_fds.len() < usize::from(spec.framed) {
        if !spec.channels.contains(&next_fd) {
            framed_fds.push(next_fd);
        }
        next_fd += 1;
    }
    let framed_list = framed_fds
        .iter()
        .map(i32::to_string)
        .collect::<Vec<_>>()
        .join(",");

    // The child's environment: the supervisor's (unless cleared) with the spec's edits, the
    // last edit of a name winning; edited names keep their place, new ones come last.
    let mut edits: Vec<(&[u8], Option<&[u8]>)> = Vec::with_capacity(spec.env.len() + 1);
    for (key, value) in &spec.env {
        let k = key.as_bytes();
        if k.is_empty() || k.contains(&b'=') || k.contains(&0) {
            return Err(invalid(format!(
                "environment variable name {:?} is empty or contains '=' or NUL",
                key
            )));
        }
        let v = value.as_ref().map(|v| v.as_bytes());
        if v.is_some_and(|v| v.contains(&0)) {
            return Err(invalid(format!(
                "environment variable {key:?} contains a NUL byte"
            )));
        }
        match edits.iter_mut().find(|(k2, _)| *k2 == k) {
            Some(edit) => edit.1 = v,
            None => edits.push((k, v)),
        }
    }
    // The framed channels are named in `PIDRING_CHANNEL_FDS` (over the spec's own value);
    // without any, a value inherited from our own supervisor is dropped unless the spec
    // sets it.
    let var = CHANNEL_FDS_VAR.as_bytes();
    let framed_edit = (!framed_fds.is_empty()).then_some(framed_list.as_bytes());
    match edits.iter_mut().find(|(k, _)| *k == var) {
        Some(edit) if framed_edit.is_some() => edit.1 = framed_edit,
        Some(_) => {}
        None => edits.push((var, framed_edit)),
    }
    let inherited: Vec<(OsString, OsString)> = if spec.env_clear {
        Vec::new()
    } else {
        std::env::vars_os().collect()
    };
    let env_bytes: usize = inherited
        .iter()
        .map(|(k, v)| k.len() + v.len() + 2)
        .sum::<usize>()
        + edits
            .iter()
            .map(|(k, v)| k.len() + v.map_or(0, <[u8]>::len) + 2)
            .sum::<usize>();
    let mut envp = CStrings::with_capacity(inherited.len() + edits.len(), env_bytes);
    let mut applied = vec![false; edits.len()];
    let mut path: Option<&[u8]> = None;
    for (k, v) in &inherited {
        let (k, mut v) = (k.as_bytes(), v.as_bytes());
        if let Some(i) = edits.iter().position(|(k2, _)| *k2 == k) {
            applied[i] = true;
            match edits[i].1 {
                Some(new) => v = new,
                None => continue,
            }
        }
        if k == b"PATH" {
            path = Some(v);
        }
        envp.push_checked(&[k, b"=", v]);
    }
    for (i, &(k, v)) in edits.iter().enumerate() {
        if let (false, Some(v)) = (applied[i], v) {
            if k == b"PATH" {
                path = Some(v);
            }
            envp.push_checked(&[k, b"=", v]);
        }
    }

    // Resolve like execvp, against the child's PATH.
    let mut candidates = Vec::new();
    if program_bytes.contains(&b'/') {
        candidates.push(cstring("program", program_bytes)?);
    } else {
        for dir in path.unwrap_or(DEFAULT_PATH).split(|&b| b == b':') {
            let mut full = Vec::with_capacity(dir.len() + 1 + program_bytes.len());
            if !dir.is_empty() {
                // An empty entry means the current directory.
                full.extend_from_slice(dir);
                full.push(b'/');
            }
            full.extend_from_slice(program_bytes);
            candidates.push(cstring("PATH entry", &full)?);
        }
    }

    let cwd = match &spec.cwd {
        Some(dir) => Some(cstring("cwd", dir.as_os_str().as_bytes())?),
        None => None,
    };

    // Channels: child fds 3 and up, distinct, below RLIMIT_NOFILE.
    let mut channels = spec.channels.clone();
    channels.extend_from_slice(&framed_fds);
    if channels.len() > MAX_CHANNELS {
        return Err(invalid(format!("at most {MAX_CHANNELS} channels")));
    }
    let nofile = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    let mut channels_sorted = channels.clone();
    channels_sorted.sort_unstable();
    for (i, &fd) in channels_sorted.iter().enumerate() {
        if fd < 3 {
            return Err(invalid(format!("channel fd {fd} must be 3 or more")));
        }
        if fd as u64 >= nofile || fd >= i32::MAX - 1 {
            return Err(invalid(format!(
                "channel fd {fd} is not below RLIMIT_NOFILE ({nofile})"
            )));
        }
        if i > 0 && channels_sorted.get(i - 1) == Some(&fd) {
            return Err(invalid(format!("channel fd {fd} is given twice")));
        }
    }

    let ignored_mask = signal_set("ignore", &spec.ignored_signals)?;
    let blocked_mask = signal_set("block", &spec.blocked_signals)?;

    #[cfg(test)]
    let stall = spec
        .env
        .iter()
        .any(|(k, v)| k == "PIDRING_TEST_STALL" && v.is_some());

    let argv_ptrs = argv.pointers();
    let envp_ptrs = envp.pointers();
    Ok(Prepared {
        program,
        _argv: argv,
        argv_ptrs,
        _envp: envp,
        envp_ptrs,
        candidates,
        cwd,
        cwd_display: spec.cwd.clone(),
        stdin: spec.stdin,
        stdout: spec.stdout,
        stderr: spec.stderr,
        channels,
        channels_sorted,
        session: spec.session,
        ignored_mask,
        blocked_mask,
        #[cfg(test)]
        stall,
    })
}
