//! PID-namespace mode of the replay (`--pid-ns`): every worker runs in a PID namespace of its
//! own, like processes of different containers that share `/dev/shm` (one cache directory)
//! but not a PID namespace. The lock owner check of the shared store (`kill(pid, 0)` and the
//! start time from `/proc/<pid>/stat`, both in the *waiter's* namespace) cannot judge a writer
//! of another namespace; this mode lets the replay show what that does.
//!
//! # How a worker is started
//!
//! For each worker slot, [`PidNamespaces::create`] starts a holder process with
//! `clone(CLONE_NEWPID | SIGCHLD)` (plus `CLONE_NEWNS` and a fresh `/proc` mount for
//! [`ProcView::Own`]): pid 1 of the new namespace, a child of the driver, doing nothing but
//! keeping the namespace alive (`os::clone_pid_ns_init`). Every incarnation of the worker is
//! then spawned *by the driver* with its thread's namespace-for-children switched to the
//! holder's for the duration of the fork (`setns(CLONE_NEWPID)`, `os::spawn_in_pid_ns`;
//! with [`ProcView::Own`] the child also enters the holder's mount namespace before exec).
//! So the worker
//! * is an ordinary `std::process::Child` of the driver: its pid in the driver's namespace
//!   (`Child::id`) is what SIGKILL, SIGSTOP / SIGCONT and the driver's `/proc/<pid>/stat`
//!   checks address; death detection (end of its stdout, `wait`) and exit statuses work
//!   unchanged;
//! * is pid 2 (3, 4, ... after restarts) of its namespace, never pid 1: a namespace's init
//!   ignores signals it sends itself, so the failpoints' `raise(SIGKILL)` / `raise(SIGSTOP)`
//!   would do nothing in a pid 1;
//! * sees its namespace's `/proc` ([`ProcView::Own`], as in a container) or the driver's
//!   ([`ProcView::Host`]).
//!
//! After every spawn the worker's namespace is checked against the holder's (and against the
//! driver's own) through `/proc/<pid>/ns/pid`: the mode never silently runs without
//! namespaces. Where `clone(CLONE_NEWPID)` is not permitted (no CAP_SYS_ADMIN), creating the
//! namespaces fails with a harness error naming the step.
//!
//! With [`ProcView::Own`] consecutive spawns are at least one clock tick apart, so no two
//! workers share (namespace pid, start time): with equal owner words each would take the
//! other's lock for its own (a different failure, the one [`ProcView::Host`] shows, where
//! every first incarnation is pid 2 and reads the same host `/proc/2`).
#![forbid(unsafe_code)]

use std::fmt;
use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::str::FromStr;
use std::time::{Duration, Instant};

use super::os;

/// Which `/proc` a worker in its own PID namespace sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcView {
    /// A `/proc` of its own namespace, mounted in a mount namespace of its own (a container).
    Own,
    /// The driver's `/proc` (`unshare --pid --fork` without `--mount-proc`).
    Host,
}

impl ProcView {
    pub fn name(self) -> &'static str {
        match self {
            ProcView::Own => "own-proc",
            ProcView::Host => "host-proc",
        }
    }
}

impl fmt::Display for ProcView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ProcView {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "own-proc" => Ok(ProcView::Own),
            "host-proc" => Ok(ProcView::Host),
            _ => Err(format!("{text:?} is not own-proc or host-proc")),
        }
    }
}

/// The holder process of a namespace (pid 1 inside), killed and reaped on drop; the kernel
/// then kills anything left in its namespace.
struct Holder(u32);

impl Drop for Holder {
    fn drop(&mut self) {
        os::kill_and_reap(self.0);
    }
}

/// One worker slot's namespace: its holder and open namespace files.
struct WorkerNamespace {
    pid_ns: File,
    mount_ns: Option<File>,
    /// `readlink /proc/<holder>/ns/pid`, e.g. `pid:[4026532298]`.
    pid_ns_id: PathBuf,
    _holder: Holder,
}

impl WorkerNamespace {
    fn create(view: ProcView) -> Result<WorkerNamespace, String> {
        let holder = os::clone_pid_ns_init(view == ProcView::Own).map_err(|e| {
            format!(
                "--pid-ns: cannot {}: {} (PID namespaces need root or CAP_SYS_ADMIN; {})",
                e.step,
                e.error,
                match e.error.raw_os_error() {
                    Some(libc::EPERM) => "not permitted here",
                    Some(libc::EINVAL) => "not supported by this kernel",
                    _ => "see the error",
                }
            )
        })?;
        let holder = Holder(holder);
        let ns_path = |kind: &str| format!("/proc/{}/ns/{kind}", holder.0);
        let open = |kind: &str| {
            File::open(ns_path(kind))
                .map_err(|e| format!("--pid-ns: cannot open {}: {e}", ns_path(kind)))
        };
        let pid_ns = open("pid")?;
        let mount_ns = match view {
            ProcView::Own => Some(open("mnt")?),
            ProcView::Host => None,
        };
        let pid_ns_id = std::fs::read_link(ns_path("pid"))
            .map_err(|e| format!("--pid-ns: cannot read {}: {e}", ns_path("pid")))?;
        Ok(WorkerNamespace {
            pid_ns,
            mount_ns,
            pid_ns_id,
            _holder: holder,
        })
    }
}

/// The namespaces of one run, one per worker slot (restarted workers reuse their slot's).
pub struct PidNamespaces {
    view: ProcView,
    spaces: Vec<WorkerNamespace>,
    driver_pid_ns: PathBuf,
    last_spawn: Option<Instant>,
    tick: Duration,
}

impl PidNamespaces {
    /// A namespace (and its holder process) for each of `workers` slots.
    pub fn create(view: ProcView, workers: u16) -> Result<PidNamespaces, String> {
        let driver_pid_ns = std::fs::read_link("/proc/self/ns/pid")
            .map_err(|e| format!("--pid-ns: cannot read /proc/self/ns/pid: {e}"))?;
        let spaces = (0..workers)
            .map(|_| WorkerNamespace::create(view))
            .collect::<Result<Vec<_>, _>>()?;
        let tick = Duration::from_micros(1_000_000 / os::clock_ticks_per_second().max(1));
        Ok(PidNamespaces {
            view,
            spaces,
            driver_pid_ns,
            last_spawn: None,
            tick,
        })
    }

    pub fn view(&self) -> ProcView {
        self.view
    }

    /// Spawns `command` as worker `worker` inside that slot's namespace, then checks that it
    /// runs there (an error, with the child killed, if not).
    pub fn spawn(&mut self, worker: u16, command: &mut Command) -> io::Result<Child> {
        let space = self.spaces.get(usize::from(worker)).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no namespace for worker")
        })?;
        if self.view == ProcView::Own {
            // Distinct start times (see the module comment).
            if let Some(last) = self.last_spawn {
                let gap = self.tick + Duration::from_millis(1);
                if let Some(rest) = gap.checked_sub(last.elapsed()) {
                    std::thread::sleep(rest);
                }
            }
        }
        let mut child = os::spawn_in_pid_ns(command, &space.pid_ns, space.mount_ns.as_ref())?;
        self.last_spawn = Some(Instant::now());
        if let Err(message) = self.check(space, child.id()) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::other(message));
        }
        Ok(child)
    }

    fn check(&self, space: &WorkerNamespace, pid: u32) -> Result<(), String> {
        let link = format!("/proc/{pid}/ns/pid");
        let found = match std::fs::read_link(&link) {
            Ok(found) => found,
            // Already dead (its namespaces are gone): the driver reports the death.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("--pid-ns: cannot read {link}: {e}")),
        };
        if found == self.driver_pid_ns || found != space.pid_ns_id {
            return Err(format!(
                "--pid-ns: worker pid {pid} runs in PID namespace {} instead of {} (the driver's is {})",
                found.display(),
                space.pid_ns_id.display(),
                self.driver_pid_ns.display()
            ));
        }
        Ok(())
    }
}

/// Whether `--pid-ns` can run here: creates one namespace of each kind and removes it.
/// `Err` says why not.
pub fn available() -> Result<(), String> {
    PidNamespaces::create(ProcView::Own, 1)?;
    PidNamespaces::create(ProcView::Host, 1)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::process::Stdio;

    fn run_in(view: ProcView, script: &str) -> Option<String> {
        if let Err(reason) = available() {
            println!("skipped: {reason}");
            return None;
        }
        let mut spaces = PidNamespaces::create(view, 1).unwrap();
        let mut command = Command::new("sh");
        command.args(["-c", script]).stdout(Stdio::piped());
        let mut child = spaces.spawn(0, &mut command).unwrap();
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .unwrap();
        assert!(child.wait().unwrap().success());
        Some(out)
    }

    #[test]
    fn a_worker_is_pid_2_of_its_namespace_and_sees_its_own_proc() {
        let Some(out) = run_in(ProcView::Own, "echo $$; ls /proc | grep -c '^[0-9]'") else {
            return;
        };
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "2", "{out}");
        // Its /proc lists the holder (1) and itself plus the child running `ls`/`grep`.
        let processes: u32 = lines[1].parse().unwrap();
        assert!(processes <= 4, "{out}");
    }

    #[test]
    fn with_the_host_proc_a_worker_sees_the_drivers_processes() {
        let script = format!("echo $$; test -d /proc/{}", std::process::id());
        let Some(out) = run_in(ProcView::Host, &script) else {
            return;
        };
        assert_eq!(out.trim(), "2");
    }

    #[test]
    fn signals_from_the_driver_reach_the_worker_and_it_can_signal_itself() {
        if available().is_err() {
            return;
        }
        let mut spaces = PidNamespaces::create(ProcView::Own, 1).unwrap();
        // Killing itself works because the worker is not the namespace's pid 1.
        let mut child = spaces
            .spawn(0, Command::new("sh").args(["-c", "kill -KILL $$; sleep 5"]))
            .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
        let mut child = spaces.spawn(0, Command::new("sleep").arg("30")).unwrap();
        let pid = child.id();
        os::send_signal(pid, os::Signal::Stop).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while os::process_state(pid) != os::ProcState::Stopped && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(os::process_state(pid), os::ProcState::Stopped);
        os::send_signal(pid, os::Signal::Cont).unwrap();
        child.kill().unwrap();
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    }
}
