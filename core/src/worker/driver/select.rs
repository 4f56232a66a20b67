//! Choosing a pool's driver, once, at start: io_uring where the kernel and the sandbox allow
//! every opcode the driver uses, epoll otherwise, and a clear error when the user insisted on
//! io_uring where it is refused. See `shared/CONTAINERS.md` for who refuses it and how.

use std::io;

use crate::error::BuildError;
use crate::pool::{Backend, BackendKind};
use crate::sys::ring::ProbeReport;

/// The driver a pool runs, and why (for `Pool::backend_reason`, the log and reports).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BackendChoice {
    pub(crate) kind: BackendKind,
    pub(crate) reason: String,
}

/// What a pool may be told about io_uring instead of asking the kernel (tests simulate a
/// kernel without an opcode, or a sandbox that refuses `io_uring_setup`).
/// Public (feature `test-support`) for the integration tests; built by nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(not(feature = "test-support"), allow(dead_code))]
pub enum UringProbe {
    /// `io_uring_setup` fails with this errno.
    SetupFails(i32),
    /// The ring starts but lacks these opcodes (names as in `IORING_OP_*`).
    Missing(Vec<&'static str>),
}

/// Decides the driver from the request and the probe's outcome. `EPERM`, `ENOSYS` and
/// `EINVAL` mean "io_uring is refused here" (seccomp profiles, `kernel.io_uring_disabled`,
/// old kernels) and fall back to epoll under [`Backend::Auto`]; any other errno (`ENOMEM`,
/// `EMFILE`, ...) is a real failure that falling back would hide, and stays fatal.
pub(crate) fn select(
    requested: Backend,
    probe: impl FnOnce() -> io::Result<ProbeReport>,
) -> Result<BackendChoice, BuildError> {
    if requested == Backend::Epoll {
        return Ok(BackendChoice {
            kind: BackendKind::Epoll,
            reason: "requested".to_owned(),
        });
    }
    let refusal = match probe() {
        Ok(report) if report.missing.is_empty() => {
            return Ok(BackendChoice {
                kind: BackendKind::Uring,
                reason: if requested == Backend::Uring {
                    "requested".to_owned()
                } else {
                    "io_uring is available with every opcode the driver uses".to_owned()
                },
            });
        }
        Ok(report) => format!(
            "the kernel's io_uring lacks {} (a kernel older than 6.8?)",
            report.missing.join(", ")
        ),
        Err(e) => match e.raw_os_error() {
            Some(errno @ (libc::EPERM | libc::ENOSYS | libc::EINVAL)) => refused_because(errno, &e),
            _ => return Err(BuildError::Driver("io_uring", e)),
        },
    };
    match requested {
        Backend::Uring => Err(BuildError::BackendUnavailable(
            "uring",
            format!(
                "{refusal}. To allow it: in a container, a seccomp profile that permits \
                 io_uring_setup, io_uring_enter and io_uring_register \
                 (`--security-opt seccomp=PROFILE`); on the host, `sysctl \
                 kernel.io_uring_disabled=0`. Or use the epoll backend"
            ),
        )),
        _ => {
            tracing::info!(backend = "epoll", reason = %refusal, "io_uring refused: using epoll");
            Ok(BackendChoice {
                kind: BackendKind::Epoll,
                reason: format!("io_uring refused: {refusal}"),
            })
        }
    }
}

/// Why `io_uring_setup` said `errno`, in words a user can act on.
fn refused_because(errno: i32, e: &io::Error) -> String {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse::<u8>().ok())
        .filter(|v| *v > 0);
    let who = match (errno, disabled) {
        (libc::EPERM, Some(v)) => format!("kernel.io_uring_disabled is {v}"),
        (libc::EPERM, None) => {
            "a seccomp profile refuses it (Docker ≥ 25, containerd ≥ 2.0 default profiles)"
                .to_owned()
        }
        (libc::ENOSYS, _) => {
            "not available here (Podman/CRI-O default profile, gVisor, or a kernel built without io_uring)"
                .to_owned()
        }
        _ => "the kernel does not support the ring's set-up (too old?)".to_owned(),
    };
    format!("io_uring_setup: {e}: {who}")
}

/// The probe as `select` takes it: the real kernel, or what a test said.
pub(crate) fn probe_with(
    simulated: Option<&UringProbe>,
) -> impl FnOnce() -> io::Result<ProbeReport> + '_ {
    move || match simulated {
        None => crate::sys::ring::probe(),
        Some(UringProbe::SetupFails(errno)) => Err(io::Error::from_raw_os_error(*errno)),
        Some(UringProbe::Missing(missing)) => Ok(ProbeReport {
            missing: missing.clone(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(p: UringProbe) -> impl FnOnce() -> io::Result<ProbeReport> {
        move || probe_with(Some(&p))()
    }

    #[test]
    fn auto_falls_back_on_refusals_and_a_missing_opcode() {
        for errno in [libc::EPERM, libc::ENOSYS, libc::EINVAL] {
            let choice = select(Backend::Auto, sim(UringProbe::SetupFails(errno))).unwrap();
            assert_eq!(choice.kind, BackendKind::Epoll);
            assert!(
                choice.reason.contains("io_uring_setup"),
                "{}",
                choice.reason
            );
        }
        let choice = select(
            Backend::Auto,
            sim(UringProbe::Missing(vec!["FIXED_FD_INSTALL"])),
        )
        .unwrap();
        assert_eq!(choice.kind, BackendKind::Epoll);
        assert!(choice.reason.contains("FIXED_FD_INSTALL"));
    }

    #[test]
    fn real_failures_stay_fatal_and_a_forced_uring_says_how_to_fix_it() {
        for errno in [libc::ENOMEM, libc::EMFILE] {
            let err = select(Backend::Auto, sim(UringProbe::SetupFails(errno))).unwrap_err();
            assert!(matches!(err, BuildError::Driver("io_uring", _)), "{err}");
        }
        let err = select(Backend::Uring, sim(UringProbe::SetupFails(libc::EPERM))).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("seccomp") && text.contains("io_uring_disabled"),
            "{text}"
        );
        let ok = select(Backend::Epoll, sim(UringProbe::SetupFails(libc::ENOMEM))).unwrap();
        assert_eq!(ok.kind, BackendKind::Epoll);
    }
}
