//! The worker processes of a run: starting them (in their PID namespaces with `--pid-ns`),
//! sending them commands, signalling planned asynchronous faults, their deaths and their exit
//! after the last step.
#![forbid(unsafe_code)]

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command as Process, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Instant;

use warp_cache_core::clock::monotonic_now_ns;
use warp_cache_core::shm::failpoint::FAILPOINT_ENV;

use super::{Driver, Event, Expect, Proc, TICK};
use crate::mp::faults::FaultKind;
use crate::mp::options::Launcher;
use crate::mp::os::{self, Signal};
use crate::mp::outcome::{Failure, FailureKind};
use crate::mp::protocol::{Command, WorkerConfig, WORKER_DIR_ENV, WORKER_ENV};

impl Driver<'_> {
    pub(super) fn spawn(&mut self, workers: &[u16]) -> Result<(), Failure> {
        for &worker in workers {
            let slot = &mut self.slots[worker as usize];
            if slot.started_once {
                slot.incarnation = slot.incarnation.wrapping_add(1);
            }
            slot.started_once = true;
            let config = WorkerConfig {
                worker,
                incarnation: slot.incarnation,
                name: self.store_name.clone(),
                capacity: self.capacity,
                sabotage: self.options.sabotage,
                slow_write_ms: self.options.slow_write_ms,
            };
            let (program, args) = match &self.options.launcher {
                Launcher::CurrentExe => (
                    std::env::current_exe().map_err(|e| {
                        Failure::new(
                            FailureKind::Harness,
                            Some(self.step),
                            format!("cannot find this executable to start workers: {e}"),
                        )
                    })?,
                    Vec::new(),
                ),
                Launcher::Program { path, args } => (path.clone(), args.clone()),
            };
            let mut command = Process::new(&program);
            command
                .args(&args)
                .env(WORKER_ENV, config.to_line())
                .env(WORKER_DIR_ENV, &self.dir.path)
                .env_remove(FAILPOINT_ENV)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            let spawned = match self.namespaces.as_mut() {
                Some(namespaces) => namespaces.spawn(worker, &mut command),
                None => command.spawn(),
            };
            let mut child = spawned.map_err(|e| {
                Failure::new(
                    FailureKind::Harness,
                    Some(self.step),
                    format!("cannot start worker {}: {e}", program.display()),
                )
            })?;
            let stdout = child.stdout.take().expect("piped stdout");
            let stdin = child.stdin.take().expect("piped stdin");
            let (commands, pending) = mpsc::channel::<String>();
            std::thread::spawn(move || {
                let mut stdin = BufWriter::new(stdin);
                for text in pending {
                    // An error means the worker died; its end-of-file event reports that.
                    if stdin
                        .write_all(text.as_bytes())
                        .and_then(|()| stdin.flush())
                        .is_err()
                    {
                        return;
                    }
                }
            });
            let tx = self.tx.clone();
            let incarnation = slot.incarnation;
            std::thread::spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx
                        .send(Event::Line {
                            worker,
                            incarnation,
                            line,
                        })
                        .is_err()
                    {
                        return;
                    }
                }
                let _ = tx.send(Event::Eof {
                    worker,
                    incarnation,
                    at_ns: monotonic_now_ns(),
                });
            });
            let pid = child.id();
            slot.proc = Some(Proc {
                child,
                commands: Some(commands),
                pid,
            });
            slot.ready = false;
            slot.stalled_since = None;
            slot.outstanding = None;
            slot.expect = Expect::Nothing;
            slot.last_progress = Instant::now();
        }
        while workers.iter().any(|&w| !self.slots[w as usize].ready) {
            self.pump()?;
        }
        Ok(())
    }

    pub(super) fn send(&mut self, worker: u16, commands: &[Command]) {
        let Some(proc) = self.slots[worker as usize].proc.as_mut() else {
            return;
        };
        let Some(sender) = proc.commands.as_ref() else {
            return;
        };
        let mut text = String::new();
        for command in commands {
            text.push_str(&command.to_line());
            text.push('\n');
        }
        let _ = sender.send(text);
    }

    pub(super) fn quit_all(&mut self) -> Result<(), Failure> {
        for worker in 0..self.slots.len() as u16 {
            self.send(worker, &[Command::Quit]);
            if let Some(proc) = self.slots[worker as usize].proc.as_mut() {
                proc.commands = None;
            }
        }
        let deadline = Instant::now() + self.options.watchdog;
        for index in 0..self.slots.len() {
            let Some(mut proc) = self.slots[index].proc.take() else {
                continue;
            };
            let status = loop {
                match proc.child.try_wait() {
                    Ok(Some(status)) => break status,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(TICK);
                    }
                    _ => {
                        let _ = proc.child.kill();
                        let _ = proc.child.wait();
                        return Err(self.fail(
                            FailureKind::Liveness,
                            format!("worker {index} did not exit after the last step"),
                        ));
                    }
                }
            };
            if !status.success() {
                return Err(self.fail(
                    FailureKind::Crash,
                    format!("worker {index} ended with {}", describe_status(&status)),
                ));
            }
        }
        Ok(())
    }

    /// Sends a planned asynchronous SIGKILL / SIGSTOP once enough results are in.
    pub(super) fn maybe_deliver(&mut self, worker: u16) -> Result<(), Failure> {
        let slot = &mut self.slots[worker as usize];
        let Expect::Async {
            kill,
            after,
            delivered: false,
        } = slot.expect
        else {
            return Ok(());
        };
        let reported = slot.outstanding.as_ref().map_or(0, |o| o.reported);
        if reported < after {
            return Ok(());
        }
        let Some(proc) = slot.proc.as_mut() else {
            return Ok(());
        };
        let sent = if kill {
            proc.child.kill()
        } else {
            os::send_signal(proc.pid, Signal::Stop)
        };
        slot.expect = Expect::Async {
            kill,
            after,
            delivered: true,
        };
        slot.last_progress = Instant::now();
        sent.map_err(|e| {
            self.fail(
                FailureKind::Harness,
                format!("cannot signal worker {worker}: {e}"),
            )
        })
    }

    pub(super) fn handle_death(
        &mut self,
        worker: u16,
        incarnation: u16,
        at_ns: u64,
    ) -> Result<(), Failure> {
        let slot = &mut self.slots[worker as usize];
        let Some(mut proc) = slot.proc.take() else {
            return Ok(());
        };
        let status = proc.child.wait();
        let expected = matches!(
            slot.expect,
            Expect::FailpointDeath { .. }
                | Expect::Async {
                    kill: true,
                    delivered: true,
                    ..
                }
        );
        slot.ready = false;
        slot.outstanding = None;
        slot.stalled_since = None;
        slot.expect = Expect::Nothing;
        let status_text = status
            .as_ref()
            .map_or_else(|e| format!("unknown status ({e})"), describe_status);
        if !expected {
            return Err(self.fail(
                FailureKind::Crash,
                format!("worker {worker}.{incarnation} died unexpectedly: {status_text}"),
            ));
        }
        if status.as_ref().ok().and_then(|s| s.signal()) != Some(libc::SIGKILL) {
            return Err(self.fail(
                FailureKind::Crash,
                format!("worker {worker}.{incarnation} was to be killed by SIGKILL but ended with {status_text}"),
            ));
        }
        self.timing.kills_observed += 1;
        self.checker
            .worker_lost(worker, incarnation, self.step as u32);
        let fault = self.current_fault.unwrap_or(FaultKind::KillAsync);
        self.last_death = Some((at_ns, fault));
        Ok(())
    }
}

fn describe_status(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(101), _) => "exit status 101 (the worker panicked)".to_owned(),
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}
