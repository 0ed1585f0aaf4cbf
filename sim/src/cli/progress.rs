//! The progress bar of the hit-rate report on standard error.

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use crate::report::Progress;

/// A progress bar on standard error, drawn only when standard error is a terminal.
pub struct TerminalProgress {
    enabled: bool,
    total: u64,
    last_draw: Option<Instant>,
}

impl TerminalProgress {
    pub fn new() -> TerminalProgress {
        TerminalProgress {
            enabled: io::stderr().is_terminal(),
            total: 0,
            last_draw: None,
        }
    }
}

impl Default for TerminalProgress {
    fn default() -> Self {
        Self::new()
    }
}

/// One line of progress bar: `[#####.....]  50%  lru @ 490`.
pub fn progress_line(done: u64, total: u64, what: &str) -> String {
    const WIDTH: u64 = 30;
    let fraction = if total == 0 {
        1.0
    } else {
        (done.min(total) as f64) / total as f64
    };
    let filled = (fraction * WIDTH as f64) as u64;
    format!(
        "[{}{}] {:>3}%  {what}",
        "#".repeat(filled as usize),
        ".".repeat((WIDTH - filled) as usize),
        (fraction * 100.0) as u64
    )
}

impl Progress for TerminalProgress {
    fn start(&mut self, total: u64) {
        self.total = total;
        self.last_draw = None;
    }

    fn update(&mut self, done: u64, what: &str) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self
            .last_draw
            .is_some_and(|last| now.duration_since(last) < Duration::from_millis(100))
        {
            return;
        }
        self.last_draw = Some(now);
        let mut stderr = io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[2K{}", progress_line(done, self.total, what));
        let _ = stderr.flush();
    }

    fn finish(&mut self) {
        if self.enabled && self.last_draw.is_some() {
            let mut stderr = io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[2K");
            let _ = stderr.flush();
        }
    }
}
