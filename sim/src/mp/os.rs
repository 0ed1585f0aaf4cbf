//! The only `unsafe` of the simulator: sending SIGSTOP / SIGCONT to a worker (std can only
//! SIGKILL a child). Also reads a process's state from /proc (safe code).
//!
//! The crate denies `unsafe_code`; this module alone allows it, every other module forbids it.

use std::io;

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
