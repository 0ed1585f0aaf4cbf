//! Counter stripes: which stripe a thread counts on ([`StripeHint`]).

use super::STRIPE_REFRESH_COUNTS;

/// A counter-stripe hint: the CPU of the thread using it, sampled once per
/// [`STRIPE_REFRESH_COUNTS`] uses instead of on every count (`sched_getcpu` on every hit was a
/// sizeable share of it: docs/performance.md, "Figures behind the code"). A migrated thread, or a forked child that inherited its
/// parent's hint, moves to its own CPU's stripe within that many counts. Only contention
/// depends on the stripe, never a count's correctness.
///
/// Each thread has one ([`ShmStore::get_hashed`]); a caller that already keeps per-thread
/// (or, under a global lock such as Python's GIL, per-process) state can keep one there and
/// pass its value to [`ShmStore::get_hashed_on_stripe`], which saves the thread-local lookup
/// (`__tls_get_addr` in a shared library).
#[derive(Debug, Clone, Copy, Default)]
pub struct StripeHint {
    pub(super) cpu: u32,
    /// Uses left before the next sample.
    pub(super) left: u32,
}

impl StripeHint {
    /// A hint that samples the CPU on its first use.
    pub const fn new() -> StripeHint {
        StripeHint { cpu: 0, left: 0 }
    }

    /// The stripe hint for one count.
    #[inline]
    pub fn stripe(&mut self) -> u32 {
        if self.left == 0 {
            self.cpu = super::super::raw::current_cpu();
            self.left = STRIPE_REFRESH_COUNTS;
        } else {
            self.left -= 1;
        }
        self.cpu
    }
}

/// The calling thread's counter stripe hint ([`StripeHint`]).
#[inline]
pub(super) fn stripe_hint() -> u32 {
    use std::cell::Cell;
    thread_local! {
        static HINT: Cell<StripeHint> = const { Cell::new(StripeHint::new()) };
    }
    HINT.try_with(|cell| {
        let mut hint = cell.get();
        let stripe = hint.stripe();
        cell.set(hint);
        stripe
    })
    .unwrap_or_else(|_| super::super::raw::current_cpu())
}
