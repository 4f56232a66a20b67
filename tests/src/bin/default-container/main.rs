//! `default-container`: runs a command in what a default container allows, on a bare host
//! (root), for the container tests of issue 9 (see `/work/shared/CONTAINERS.md`).
//!
//! ```text
//! default-container [OPTIONS] -- COMMAND [ARGS...]
//! default-container [OPTIONS] probe
//! ```
//!
//! - A seccomp filter like Docker's default profile for the calls that matter to pidring:
//!   `io_uring_setup`/`_enter`/`_register` refused (`--io-uring eperm`, the default: Docker,
//!   containerd; `enosys`: Podman, CRI-O, gVisor; `allow`), `clone3` refused with `ENOSYS`
//!   (`--clone3 enosys`, the default; `allow` as Podman does), `clone` with a `CLONE_NEW*` flag,
//!   `unshare`, `setns`, `mount`, `umount2` and `pidfd_getfd` refused with `EPERM` (capabilities
//!   a default container lacks). A raw BPF program installed with `PR_SET_NO_NEW_PRIVS` +
//!   `PR_SET_SECCOMP`; it checks the architecture (another one is killed) and, on x86_64,
//!   refuses x32 system calls. Every child inherits it.
//! - In a private mount namespace (`unshare(CLONE_NEWNS)`, `/` made recursively private),
//!   every cgroup and cgroup2 mount of `/proc/self/mountinfo`, and a tmpfs that holds them,
//!   remounted read-only (`MS_REMOUNT | MS_BIND | MS_RDONLY`, its other flags kept), as Docker
//!   mounts `/sys/fs/cgroup` without `--privileged`: `mkdir` there gives `EROFS`. `--cgroup rw`
//!   leaves them writable.
//! - `--io-uring-disabled N`: sets `kernel.io_uring_disabled` to N while the command runs and
//!   restores the old value after. The setting is global (other programs on the host use
//!   io_uring), so a watchdog process holds it: it takes an exclusive `flock` on
//!   `/tmp/pidring-io_uring_disabled.lock` (so holders run one at a time), writes N, and
//!   restores the old value as soon as this tool ends by any path, a crash or SIGKILL
//!   included (it waits for EOF on a pipe whose only writer is this tool); it leaves the
//!   tool's session and ignores terminal and group signals so it always gets there.
//! - `probe`: instead of a command, reports what the environment allows, one `name=result`
//!   line each (`ok` or the errno's name): `io_uring_setup`, `clone3`, `clone_pidfd`,
//!   `unshare`, `subreaper`, `cgroup_mkdir <mount point>` for every cgroup mount, and
//!   `io_uring_disabled` (the sysctl's value).
//!
//! Exit status: the command's (128 + N if a signal killed it), or 125 if the environment
//! could not be set up (one line on stderr says why).

#![deny(unsafe_code)]

#[allow(unsafe_code)]
mod sys;

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

const SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";
const SYSCTL_LOCK: &str = "/tmp/pidring-io_uring_disabled.lock";
const SETUP_FAILED: i32 = 125;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IoUring {
    Eperm,
    Enosys,
    Allow,
}

#[derive(Debug)]
struct Options {
    io_uring: IoUring,
    clone3_enosys: bool,
    cgroup_readonly: bool,
    io_uring_disabled: Option<u32>,
    /// `None`: probe.
    command: Option<Vec<CString>>,
}

fn main() {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "--run-probe") {
        probe::run();
        return;
    }
    let options = match parse(&args) {
        Ok(o) => o,
        Err(msg) => fail(&msg),
    };
    let holder = match options.io_uring_disabled {
        Some(value) => match sysctl::hold(value) {
            Ok(h) => Some(h),
            Err(msg) => fail(&format!("--io-uring-disabled {value}: {msg}")),
        },
        None => None,
    };
    let command = options.command.clone().unwrap_or_else(|| {
        let me = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("default-container"));
        vec![cstring(me.as_os_str().as_bytes()), cstring(b"--run-probe")]
    });
    let Some(holder) = holder else {
        // Become the command: nothing to restore afterwards.
        if let Err(msg) = enter(&options) {
            fail(&msg);
        }
        let err = sys::exec(&command);
        fail(&format!("cannot run {:?}: {err}", command[0]));
    };
    // Run the command as a child, then let the watchdog restore the sysctl.
    let status = match sys::fork() {
        Ok(0) => {
            let _ = sys::die_with_parent();
            if let Err(msg) = enter(&options) {
                eprintln!("default-container: {msg}");
                sys::exit_now(SETUP_FAILED);
            }
            let err = sys::exec(&command);
            eprintln!("default-container: cannot run {:?}: {err}", command[0]);
            sys::exit_now(127);
        }
        Ok(child) => sys::wait_pid(child).unwrap_or(SETUP_FAILED),
        Err(e) => {
            eprintln!("default-container: fork: {e}");
            SETUP_FAILED
        }
    };
    if let Err(msg) = holder.release() {
        eprintln!("default-container: {msg}");
        std::process::exit(SETUP_FAILED);
    }
    std::process::exit(status);
}

fn fail(msg: &str) -> ! {
    eprintln!("default-container: {msg}");
    std::process::exit(SETUP_FAILED);
}

fn cstring(bytes: &[u8]) -> CString {
    CString::new(bytes).unwrap_or_else(|_| fail("an argument holds a NUL byte"))
}

fn parse(args: &[std::ffi::OsString]) -> Result<Options, String> {
    let mut o = Options {
        io_uring: IoUring::Eperm,
        clone3_enosys: true,
        cgroup_readonly: true,
        io_uring_disabled: None,
        command: None,
    };
    let mut i = 0;
    let value = |i: usize| -> Result<String, String> {
        args.get(i + 1)
            .and_then(|v| v.to_str())
            .map(str::to_owned)
            .ok_or_else(|| format!("{:?} needs a value", args[i]))
    };
    while let Some(arg) = args.get(i) {
        match arg.to_str().unwrap_or("") {
            "--io-uring" => {
                o.io_uring = match value(i)?.as_str() {
                    "eperm" => IoUring::Eperm,
                    "enosys" => IoUring::Enosys,
                    "allow" => IoUring::Allow,
                    v => return Err(format!("--io-uring {v}: eperm, enosys or allow")),
                };
                i += 2;
            }
            "--clone3" => {
                o.clone3_enosys = match value(i)?.as_str() {
                    "enosys" => true,
                    "allow" => false,
                    v => return Err(format!("--clone3 {v}: enosys or allow")),
                };
                i += 2;
            }
            "--cgroup" => {
                o.cgroup_readonly = match value(i)?.as_str() {
                    "ro" => true,
                    "rw" => false,
                    v => return Err(format!("--cgroup {v}: ro or rw")),
                };
                i += 2;
            }
            "--io-uring-disabled" => {
                let v = value(i)?;
                o.io_uring_disabled = Some(
                    v.parse()
                        .ok()
                        .filter(|n| *n <= 2)
                        .ok_or_else(|| format!("--io-uring-disabled {v}: 0, 1 or 2"))?,
                );
                i += 2;
            }
            "probe" if i + 1 == args.len() => return Ok(o),
            "--" => {
                let command: Vec<CString> = args[i + 1..]
                    .iter()
                    .map(|a| cstring(a.as_bytes()))
                    .collect();
                if command.is_empty() {
                    return Err("no command after --".into());
                }
                o.command = Some(command);
                return Ok(o);
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?}; usage: default-container [--io-uring \
                     eperm|enosys|allow] [--clone3 enosys|allow] [--cgroup ro|rw] \
                     [--io-uring-disabled N] (probe | -- COMMAND [ARGS...])"
                ))
            }
        }
    }
    Err("nothing to run: give `probe` or `-- COMMAND`".into())
}

/// Makes this process's environment the container's: read-only cgroup mounts, then the
/// seccomp filter (last: it refuses `mount`).
fn enter(o: &Options) -> Result<(), String> {
    if o.cgroup_readonly {
        mounts::make_cgroups_readonly()?;
    }
    let filter = seccomp::filter(o.io_uring, o.clone3_enosys);
    sys::set_no_new_privs().map_err(|e| format!("PR_SET_NO_NEW_PRIVS: {e}"))?;
    sys::install_seccomp_filter(&filter).map_err(|e| format!("PR_SET_SECCOMP: {e}"))
}

mod seccomp {
    //! The BPF program: what Docker's default profile does to the calls pidring makes.
    use super::IoUring;

    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xC000_00B7;
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    compile_error!("default-container knows the audit arch of x86_64 and aarch64 only");

    /// `struct seccomp_data`: nr at 0, arch at 4, args from 16 (8 bytes each; the low half
    /// first on these little-endian targets).
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    const ARG0_LOW: u32 = 16;
    /// Every `CLONE_NEW*` flag (Docker refuses `clone` with any of them).
    const CLONE_NEW_MASK: u32 = 0x7E02_0000;

    const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

    fn stmt(code: u16, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }

    fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter { code, jt, jf, k }
    }

    fn errno(e: i32) -> u32 {
        libc::SECCOMP_RET_ERRNO | (e as u32 & 0xffff)
    }

    pub(super) fn filter(io_uring: IoUring, clone3_enosys: bool) -> Vec<libc::sock_filter> {
        let mut refused: Vec<(libc::c_long, u32)> = Vec::new();
        let io_uring_errno = match io_uring {
            IoUring::Eperm => Some(libc::EPERM),
            IoUring::Enosys => Some(libc::ENOSYS),
            IoUring::Allow => None,
        };
        if let Some(e) = io_uring_errno {
            for nr in [
                libc::SYS_io_uring_setup,
                libc::SYS_io_uring_enter,
                libc::SYS_io_uring_register,
            ] {
                refused.push((nr, errno(e)));
            }
        }
        if clone3_enosys {
            refused.push((libc::SYS_clone3, errno(libc::ENOSYS)));
        }
        for nr in [
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_mount,
            libc::SYS_umount2,
            libc::SYS_pidfd_getfd,
        ] {
            refused.push((nr, errno(libc::EPERM)));
        }

        let mut prog = vec![
            stmt(LD_W_ABS, ARCH),
            jump(JEQ_K, AUDIT_ARCH, 1, 0),
            // Another architecture's calls (x86 `int 0x80`, or an arm32 binary) bypass the
            // numbers below: refuse to run them at all.
            stmt(RET_K, libc::SECCOMP_RET_KILL_PROCESS),
            stmt(LD_W_ABS, NR),
        ];
        #[cfg(target_arch = "x86_64")]
        {
            // x32 calls are numbered from 0x40000000: the same calls under other numbers.
            prog.push(jump(JGE_K, 0x4000_0000, 0, 1));
            prog.push(stmt(RET_K, errno(libc::ENOSYS)));
        }
        for (nr, action) in refused {
            prog.push(jump(JEQ_K, nr as u32, 0, 1));
            prog.push(stmt(RET_K, action));
        }
        // clone: allowed unless a namespace flag is set.
        prog.push(jump(JEQ_K, libc::SYS_clone as u32, 0, 3));
        prog.push(stmt(LD_W_ABS, ARG0_LOW));
        prog.push(jump(JSET_K, CLONE_NEW_MASK, 0, 1));
        prog.push(stmt(RET_K, errno(libc::EPERM)));
        prog.push(stmt(RET_K, libc::SECCOMP_RET_ALLOW));
        prog
    }
}

mod mounts {
    //! Read-only cgroup mounts in a private mount namespace.
    use super::*;

    /// One line of `/proc/self/mountinfo`.
    struct Mount {
        mount_point: PathBuf,
        /// Per-mount options (`rw,nosuid,nodev,...`).
        options: String,
        fstype: String,
    }

    fn parse(mountinfo: &str) -> Vec<Mount> {
        mountinfo
            .lines()
            .filter_map(|line| {
                let (left, right) = line.split_once(" - ")?;
                let l: Vec<&str> = left.split(' ').collect();
                Some(Mount {
                    mount_point: PathBuf::from(unescape(l.get(4)?)),
                    options: (*l.get(5)?).to_owned(),
                    fstype: right.split(' ').next()?.to_owned(),
                })
            })
            .collect()
    }

    /// mountinfo writes space, tab, newline and backslash as `\ooo`.
    fn unescape(s: &str) -> String {
        let mut out = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let octal = |c: &u8| (b'0'..=b'7').contains(c);
            if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(octal) {
                let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
                out.push(v);
                i += 4;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The flags of a mount's options that a bind remount must keep.
    fn kept_flags(options: &str) -> libc::c_ulong {
        options
            .split(',')
            .map(|o| match o {
                "nosuid" => libc::MS_NOSUID,
                "nodev" => libc::MS_NODEV,
                "noexec" => libc::MS_NOEXEC,
                "noatime" => libc::MS_NOATIME,
                "nodiratime" => libc::MS_NODIRATIME,
                "relatime" => libc::MS_RELATIME,
                "strictatime" => libc::MS_STRICTATIME,
                _ => 0,
            })
            .fold(0, |a, b| a | b)
    }

    pub(super) fn make_cgroups_readonly() -> Result<(), String> {
        sys::unshare_mount_namespace().map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
        sys::mount_flags(c"/", libc::MS_REC | libc::MS_PRIVATE)
            .map_err(|e| format!("mount --make-rprivate /: {e}"))?;
        let text = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
        let mounts = parse(&text);
        let cgroup_points: Vec<&Path> = mounts
            .iter()
            .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
            .map(|m| m.mount_point.as_path())
            .collect();
        if cgroup_points.is_empty() {
            return Err("no cgroup mount in /proc/self/mountinfo".into());
        }
        for m in &mounts {
            let holds_cgroups = m.fstype == "tmpfs"
                && cgroup_points
                    .iter()
                    .any(|p| p.parent() == Some(m.mount_point.as_path()));
            if !(m.fstype == "cgroup" || m.fstype == "cgroup2" || holds_cgroups) {
                continue;
            }
            let path = CString::new(m.mount_point.as_os_str().as_bytes())
                .map_err(|_| "a mount point holds a NUL byte".to_owned())?;
            let flags = libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY | kept_flags(&m.options);
            sys::mount_flags(&path, flags).map_err(|e| {
                format!("mount -o remount,bind,ro {}: {e}", m.mount_point.display())
            })?;
        }
        Ok(())
    }

    /// The cgroup mount points, for the probe.
    pub(super) fn cgroup_mount_points() -> Vec<PathBuf> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        parse(&text)
            .into_iter()
            .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
            .map(|m| m.mount_point)
            .collect()
    }
}

mod sysctl {
    //! Holding `kernel.io_uring_disabled` for the command's duration (see the module doc).
    use super::*;

    pub(super) struct Holder {
        watchdog: libc::pid_t,
        /// Its read end in the watchdog sees EOF once this closes (or this process dies).
        hold: OwnedFd,
        old: String,
    }

    /// Starts the watchdog, which waits for the lock, saves the old value and writes `value`.
    pub(super) fn hold(value: u32) -> Result<Holder, String> {
        if !Path::new(SYSCTL).exists() {
            return Err(format!("{SYSCTL} does not exist (Linux 6.6+)"));
        }
        let (ready_r, ready_w) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
        let (hold_r, hold_w) = sys::pipe().map_err(|e| format!("pipe: {e}"))?;
        match sys::fork().map_err(|e| format!("fork: {e}"))? {
            0 => {
                drop(ready_r);
                drop(hold_w);
                watchdog(value, ready_w, hold_r)
            }
            pid => {
                drop(ready_w);
                drop(hold_r);
                let mut answer = String::new();
                let _ = std::fs::File::from(ready_r).read_to_string(&mut answer);
                match answer.strip_prefix("ok ") {
                    Some(old) => Ok(Holder {
                        watchdog: pid,
                        hold: hold_w,
                        old: old.trim().to_owned(),
                    }),
                    None => {
                        let _ = sys::wait_pid(pid);
                        Err(if answer.is_empty() {
                            "the watchdog died".to_owned()
                        } else {
                            answer
                        })
                    }
                }
            }
        }
    }

    impl Holder {
        /// Lets the watchdog restore the old value, waits for it, and checks it did.
        pub(super) fn release(self) -> Result<(), String> {
            drop(self.hold);
            let status = sys::wait_pid(self.watchdog).map_err(|e| format!("waitpid: {e}"))?;
            let now = std::fs::read_to_string(SYSCTL).unwrap_or_default();
            if status != 0 || now.trim() != self.old {
                return Err(format!(
                    "{SYSCTL} was not restored to {} (now {}; watchdog status {status})",
                    self.old,
                    now.trim()
                ));
            }
            Ok(())
        }
    }

    fn watchdog(value: u32, ready: OwnedFd, hold: OwnedFd) -> ! {
        sys::detach_and_ignore_signals();
        let mut ready = std::fs::File::from(ready);
        let report = |ready: &mut std::fs::File, msg: &str| {
            let _ = ready.write_all(msg.as_bytes());
        };
        let lock = match std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(SYSCTL_LOCK)
        {
            Ok(f) => OwnedFd::from(f),
            Err(e) => {
                report(&mut ready, &format!("{SYSCTL_LOCK}: {e}"));
                sys::exit_now(1);
            }
        };
        if let Err(e) = sys::lock_exclusive(&lock) {
            report(&mut ready, &format!("flock {SYSCTL_LOCK}: {e}"));
            sys::exit_now(1);
        }
        let old = match std::fs::read_to_string(SYSCTL) {
            Ok(v) => v.trim().to_owned(),
            Err(e) => {
                report(&mut ready, &format!("{SYSCTL}: {e}"));
                sys::exit_now(1);
            }
        };
        if let Err(e) = std::fs::write(SYSCTL, format!("{value}\n")) {
            report(&mut ready, &format!("cannot write {SYSCTL}: {e}"));
            sys::exit_now(1);
        }
        report(&mut ready, &format!("ok {old}\n"));
        drop(ready);
        // Wait for the tool to end (EOF: nothing is ever written on this pipe).
        let mut hold = std::fs::File::from(hold);
        let mut buf = [0u8; 16];
        loop {
            match hold.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        let mut code = 0;
        for _ in 0..100 {
            match std::fs::write(SYSCTL, format!("{old}\n")) {
                Ok(()) => {
                    code = 0;
                    break;
                }
                Err(e) => {
                    eprintln!("default-container watchdog: cannot restore {SYSCTL} to {old}: {e}");
                    code = 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
        // The lock goes with this process, after the value was restored.
        drop(lock);
        sys::exit_now(code)
    }
}

mod probe {
    //! What the environment allows, as this process sees it.
    use super::*;

    fn name(errno: i32) -> String {
        match errno {
            libc::EPERM => "EPERM".into(),
            libc::ENOSYS => "ENOSYS".into(),
            libc::EROFS => "EROFS".into(),
            libc::EACCES => "EACCES".into(),
            libc::EINVAL => "EINVAL".into(),
            libc::ENOENT => "ENOENT".into(),
            libc::EEXIST => "EEXIST".into(),
            e => format!("errno{e}"),
        }
    }

    fn line(key: &str, result: Result<(), i32>) {
        match result {
            Ok(()) => println!("{key}=ok"),
            Err(e) => println!("{key}={}", name(e)),
        }
    }

    pub(super) fn run() {
        line("io_uring_setup", sys::io_uring_setup().map(drop));
        line("clone3", sys::clone3_probe());
        line(
            "clone_pidfd",
            match sys::clone_pidfd_probe() {
                Ok(0) => Ok(()),
                Ok(code) => {
                    println!("clone_pidfd_child_status={code}");
                    Err(0)
                }
                Err(e) => Err(e),
            },
        );
        line("unshare", sys::unshare_probe());
        line("subreaper", sys::subreaper_probe());
        for point in mounts::cgroup_mount_points() {
            let dir = point.join(format!("pidring-probe-{}", std::process::id()));
            let result = std::fs::create_dir(&dir).map_err(|e| e.raw_os_error().unwrap_or(0));
            if result.is_ok() {
                let _ = std::fs::remove_dir(&dir);
            }
            line(&format!("cgroup_mkdir {}", point.display()), result);
        }
        let value = std::fs::read_to_string(SYSCTL).unwrap_or_else(|_| "absent".into());
        println!("io_uring_disabled={}", value.trim());
    }
}
