//! The only `unsafe` of the simulator: sending SIGSTOP / SIGCONT to a worker (std can only
//! SIGKILL a child), and the PID-namespace primitives of `--pid-ns` ([`clone_pid_ns_init`],
//! [`spawn_in_pid_ns`], [`kill_and_reap`]; the design is in `super::pidns`). Also reads a
//! process's state from /proc (safe code).
//!
//! The crate denies `unsafe_code`; this module alone allows it, every other module forbids it.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// Signals the parent sends to a worker besides SIGKILL (`Child::kill`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGSTOP: stall the worker wherever it is.
    Stop,
    /// SIGCONT: let a stopped worker continue.
    Cont,
}

/// Sends `signal` to the process `pid` (a worker this process spawned and has not reaped).
pub fn send_signal(pid: u32, signal: Signal) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not a single-process pid"))?;
    let signal = match signal {
        Signal::Stop => libc::SIGSTOP,
        Signal::Cont => libc::SIGCONT,
    };
    // SAFETY: kill(2) has no memory-safety preconditions. `pid` is positive, so it names one
    // process, never a process group; it is a child of ours that has not been reaped, so the
    // pid cannot have been reused by an unrelated process.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// What /proc says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcState {
    Running,
    /// Stopped by a signal (`T`) or a tracer (`t`).
    Stopped,
    /// Dead, not yet reaped.
    Zombie,
    /// No such process, or /proc is unavailable.
    Unknown,
}

/// The state letter of `/proc/<pid>/stat` (the field after the parenthesized command name).
pub fn process_state(pid: u32) -> ProcState {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return ProcState::Unknown;
    };
    let Some(after_name) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return ProcState::Unknown;
    };
    match after_name.trim_start().chars().next() {
        Some('T') | Some('t') => ProcState::Stopped,
        Some('Z') | Some('X') => ProcState::Zombie,
        Some(_) => ProcState::Running,
        None => ProcState::Unknown,
    }
}

// -------------------------------------------------------------------------------------------
// PID namespaces (`--pid-ns`)

/// Where [`clone_pid_ns_init`] failed: the step, and the OS error.
#[derive(Debug)]
pub struct NsError {
    pub step: &'static str,
    pub error: io::Error,
}

/// Steps of the namespace's init, reported back through its status pipe.
const INIT_STEPS: [&str; 3] = [
    "start the namespace's init",
    "make the new mount namespace private (mount --make-rprivate /)",
    "mount a /proc of the new PID namespace",
];

/// Starts a process that is pid 1 of a new PID namespace (and, with `own_proc`, of a new
/// mount namespace in which it mounted a `/proc` of that PID namespace) and otherwise does
/// nothing: it holds the namespace for the processes [`spawn_in_pid_ns`] starts in it. It is a
/// child of ours (its pid, returned here, is in our namespace); it dies with SIGKILL
/// ([`kill_and_reap`], or the kernel's parent-death signal if this process dies first), and
/// then the kernel kills whatever still runs in its namespace.
pub fn clone_pid_ns_init(own_proc: bool) -> Result<u32, NsError> {
    let fail = |step: usize| {
        let error = io::Error::last_os_error();
        move || NsError {
            step: INIT_STEPS[step],
            error,
        }
    };
    let mut fds: [libc::c_int; 2] = [-1, -1];
    // SAFETY: pipe2 stores two new descriptors into the array it is given, which is ours and
    // has room for exactly two.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(fail(0)());
    }
    // SAFETY: both descriptors were just created by pipe2 and belong to nobody else.
    let (status_read, status_write) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let mut flags = libc::CLONE_NEWPID | libc::SIGCHLD;
    if own_proc {
        flags |= libc::CLONE_NEWNS;
    }
    let write_fd = status_write.as_raw_fd();
    // SAFETY: a fork-like clone (no new stack: the child runs on a copy of this stack, as
    // after fork). The child is a copy of a possibly multi-threaded process, so it must only
    // make async-signal-safe calls: `init_main` makes raw system calls only (no allocation,
    // no locks, no return) and ends in `_exit` or in an endless `pause`.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::c_long::from(flags), 0, 0, 0, 0) };
    if pid == 0 {
        init_main(write_fd, own_proc);
    }
    if pid < 0 {
        return Err(fail(0)());
    }
    let pid = pid as u32;
    drop(status_write);
    // The init writes [step, errno] (8 bytes) once: errno 0 = ready. End of file: it died.
    let mut status = File::from(status_read);
    let mut buf = [0u8; 8];
    let ready = io::Read::read_exact(&mut status, &mut buf);
    let step = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
    match ready {
        Ok(()) if errno == 0 => Ok(pid),
        Ok(()) => {
            kill_and_reap(pid);
            Err(NsError {
                step: INIT_STEPS[step.min(INIT_STEPS.len() - 1)],
                error: io::Error::from_raw_os_error(errno),
            })
        }
        Err(error) => {
            kill_and_reap(pid);
            Err(NsError {
                step: INIT_STEPS[0],
                error,
            })
        }
    }
}

/// The child side of [`clone_pid_ns_init`]. Raw system calls only (see the SAFETY comment
/// there); never returns.
fn init_main(status_fd: RawFd, own_proc: bool) -> ! {
    let report = |step: u32, errno: i32| {
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&step.to_ne_bytes());
        buf[4..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: write(2) from a buffer on our stack of exactly the length given.
        unsafe { libc::write(status_fd, buf.as_ptr().cast(), buf.len()) };
    };
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // Hold nothing of the parent's: its pipes to other workers must close when it closes them.
    close_fds_except(status_fd);
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches no memory of ours.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    if own_proc {
        // SAFETY: mount(2) with static NUL-terminated strings and null pointers where the
        // call allows them (no source, type or data for a propagation change).
        let private = unsafe {
            libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        };
        if private != 0 {
            report(1, errno());
            // SAFETY: _exit(2) ends this process at once; it has no preconditions.
            unsafe { libc::_exit(1) };
        }
        // SAFETY: as above: static NUL-terminated strings, no data.
        let proc = unsafe {
            libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            )
        };
        if proc != 0 {
            report(2, errno());
            // SAFETY: _exit(2) has no preconditions.
            unsafe { libc::_exit(1) };
        }
    }
    report(0, 0);
    // SAFETY: closes the status descriptor, which this process owns.
    unsafe { libc::close(status_fd) };
    loop {
        // SAFETY: pause(2) has no preconditions. Pid 1 of a namespace ignores every signal it
        // has no handler for, except SIGKILL from an ancestor namespace, which ends it.
        unsafe { libc::pause() };
    }
}

/// Closes every descriptor but `keep` (async-signal-safe: raw system calls only).
fn close_fds_except(keep: RawFd) {
    let keep = keep as libc::c_uint;
    // SAFETY: close_range(2) only closes descriptors of this process; `keep` is excluded.
    let closed = unsafe {
        (keep == 0 || libc::syscall(libc::SYS_close_range, 0, keep - 1, 0) == 0)
            && libc::syscall(libc::SYS_close_range, keep + 1, libc::c_uint::MAX, 0) == 0
    };
    if !closed {
        // Kernels before 5.9: close them one by one.
        for fd in 0..4096 {
            if fd != keep as RawFd {
                // SAFETY: closing a descriptor that may not be open is harmless (EBADF).
                unsafe { libc::close(fd) };
            }
        }
    }
}

/// Sends SIGKILL to `pid`, a child of ours from [`clone_pid_ns_init`], and reaps it.
pub fn kill_and_reap(pid: u32) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    if pid <= 0 {
        return;
    }
    // SAFETY: kill(2) on a positive pid (one process): our own child, not reaped yet, so the
    // pid cannot name an unrelated process.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let mut status = 0;
    loop {
        // SAFETY: waitpid(2) for our child, writing its status into a local.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc != -1 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Spawns `command` in the PID namespace `pid_ns` (an open `/proc/<pid>/ns/pid` of a
/// [`clone_pid_ns_init`] process) and, if given, its mount namespace `mount_ns`: the child is
/// still *our* child (a `Child` with its pid in our namespace, its pipes, its exit status),
/// but inside the namespace it has its own pid (2, 3, ...; never 1, so it can signal itself).
///
/// How: `setns(CLONE_NEWPID)` on this thread moves only where this thread's *children* go;
/// the fork inside `spawn` creates the child there, and this thread moves back at once
/// (threads cannot be created from a thread whose children's namespace differs from its
/// own). The mount namespace is entered by the child between fork and exec.
pub fn spawn_in_pid_ns(
    command: &mut Command,
    pid_ns: &File,
    mount_ns: Option<&File>,
) -> io::Result<Child> {
    let home = File::open("/proc/thread-self/ns/pid")?;
    let mount_fd = mount_ns.map(AsRawFd::as_raw_fd);
    // Entering a mount namespace moves the working directory to its root: go back to ours.
    let cwd = match mount_fd {
        Some(_) => std::env::current_dir()
            .ok()
            .and_then(|dir| CString::new(dir.as_os_str().as_bytes()).ok()),
        None => None,
    };
    let hook = move || -> io::Result<()> {
        if let Some(fd) = mount_fd {
            // SAFETY: setns(2) on a descriptor the parent keeps open during the spawn; a
            // system call, async-signal-safe, in the single-threaded child before exec.
            if unsafe { libc::setns(fd, libc::CLONE_NEWNS) } != 0 {
                return Err(io::Error::last_os_error());
            }
            if let Some(dir) = &cwd {
                // SAFETY: chdir(2) with a NUL-terminated string allocated before the fork.
                unsafe { libc::chdir(dir.as_ptr()) };
            }
        }
        Ok(())
    };
    // SAFETY: the hook makes only async-signal-safe system calls (setns, chdir) and allocates
    // nothing (see above). A hook is always installed, so std forks (never posix_spawn).
    unsafe { command.pre_exec(hook) };
    // SAFETY: setns(2) on an open namespace descriptor; changes only this thread's
    // namespace for children.
    if unsafe { libc::setns(pid_ns.as_raw_fd(), libc::CLONE_NEWPID) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let spawned = command.spawn();
    // SAFETY: as above, back to this thread's own PID namespace.
    if unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWPID) } != 0 {
        let error = io::Error::last_os_error();
        if let Ok(mut child) = spawned {
            let _ = child.kill();
            let _ = child.wait();
        }
        return Err(io::Error::new(
            error.kind(),
            format!("cannot return this thread to its own PID namespace after a spawn: {error}"),
        ));
    }
    spawned
}

/// Clock ticks per second (the unit of the process start time in `/proc/<pid>/stat`).
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf(3) has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn wait_for(pid: u32, want: ProcState) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if process_state(pid) == want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn stop_and_continue_a_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(wait_for(pid, ProcState::Running));
        send_signal(pid, Signal::Stop).unwrap();
        assert!(wait_for(pid, ProcState::Stopped));
        send_signal(pid, Signal::Cont).unwrap();
        assert!(wait_for(pid, ProcState::Running));
        child.kill().unwrap();
        assert!(wait_for(pid, ProcState::Zombie));
        child.wait().unwrap();
        assert_eq!(process_state(pid), ProcState::Unknown);
        assert!(send_signal(0, Signal::Stop).is_err());
    }
}
