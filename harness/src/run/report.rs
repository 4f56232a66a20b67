//! `--report FILE`: one JSON object describing how the run ended.
//!
//! The file is opened (created) before PROGRAM starts, so that an unwritable path fails fast
//! with status 125 instead of after a long run; it is truncated and written at the end.

use std::fs::File;
use std::io::{Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// The report's fields. `exit_code` is pidring's own exit status.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Report {
    /// pidring's exit status.
    pub exit_code: u8,
    /// Why it ended: exited, signaled, timed_out, terminated, drain_expired, status_unknown,
    /// spawn_failed, or error (pidring failed before or around PROGRAM).
    pub reason: &'static str,
    /// The signal that ended PROGRAM's main process, if one did.
    pub signal: Option<i32>,
    /// PROGRAM's own exit code, if it exited.
    pub status_code: Option<i32>,
    /// `--timeout` fired.
    pub timed_out: bool,
    /// From the spawn to the end of the task (or of pidring's attempt).
    pub duration_ms: f64,
    /// Descendants (not the main process) alive when the tree was signalled, plus orphans
    /// pidring killed before exiting.
    pub descendants_killed: u64,
    /// pidring had to signal the tree.
    pub tree_signalled: bool,
    /// `cgroup` or `process-group`; null when no pool could be built.
    pub containment: Option<&'static str>,
    /// Why that containment: "requested", or why no cgroup could be made (a read-only
    /// cgroupfs in a container, ...); null when no pool could be built.
    pub containment_reason: Option<String>,
    /// `uring` or `epoll`; null when no pool could be built.
    pub backend: Option<&'static str>,
    /// Why that driver: "requested", or why io_uring was refused (seccomp,
    /// `kernel.io_uring_disabled`, a missing opcode); null when no pool could be built.
    pub backend_reason: Option<String>,
    /// Bytes PROGRAM's tree wrote to stdout / stderr, when pidring relayed that stream
    /// (`--stdio`); null when PROGRAM wrote to pidring's own stream directly. With stdout
    /// and stderr on the same pipe, one relay carries both and counts them as stdout.
    pub stdout_bytes: Option<u64>,
    pub stderr_bytes: Option<u64>,
    /// Of those, bytes pidring could not pass on (its reader went away, or did not read
    /// before pidring had to exit).
    pub stdout_dropped: Option<u64>,
    pub stderr_dropped: Option<u64>,
    /// A signal pidring received that made it terminate the tree.
    pub received_signal: Option<i32>,
    /// PROGRAM as given, and its pid when it started.
    pub program: String,
    pub pid: Option<u32>,
    /// What went wrong, for pidring's own failures and failed spawns.
    pub error: Option<String>,
}

/// The report file, opened early.
pub struct ReportFile {
    path: PathBuf,
    file: File,
}

impl ReportFile {
    /// Opens (creates) `path` for writing without truncating it yet.
    pub fn open(path: &Path) -> Result<ReportFile, String> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            // A FIFO without a reader would block the open: fail with ENXIO instead.
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| format!("cannot write report {}: {e}", path.display()))?;
        let meta = file
            .metadata()
            .map_err(|e| format!("cannot write report {}: {e}", path.display()))?;
        if !meta.is_file() && !meta.file_type_is_char_device() {
            return Err(format!(
                "cannot write report {}: not a regular file",
                path.display()
            ));
        }
        // Back to blocking writes.
        if let Ok(flags) = rustix::fs::fcntl_getfl(&file) {
            let _ = rustix::fs::fcntl_setfl(&file, flags - rustix::fs::OFlags::NONBLOCK);
        }
        Ok(ReportFile {
            path: path.to_owned(),
            file,
        })
    }

    /// Replaces the file's content with the report.
    pub fn write(mut self, report: &Report) -> Result<(), String> {
        let err = |e: std::io::Error| format!("cannot write report {}: {e}", self.path.display());
        let mut text =
            serde_json::to_vec_pretty(report).map_err(|e| err(std::io::Error::other(e)))?;
        text.push(b'\n');
        if self.file.metadata().map(|m| m.is_file()).unwrap_or(false) {
            self.file.set_len(0).map_err(err)?;
            self.file.rewind().map_err(err)?;
        }
        self.file.write_all(&text).map_err(err)?;
        self.file.flush().map_err(err)
    }
}

trait CharDevice {
    fn file_type_is_char_device(&self) -> bool;
}

impl CharDevice for std::fs::Metadata {
    fn file_type_is_char_device(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.file_type().is_char_device() || self.file_type().is_fifo()
    }
}
