//! Futex wait and wake on the owner half of the lock file's state word, so that a writer
//! waiting for the writer lock sleeps in the kernel until the holder releases it, instead of
//! yielding and sleeping in fixed 50 us steps that overshoot the release (issue 12: writers
//! that do not convoy when processes outnumber cores). The futexes are shared (no
//! `FUTEX_PRIVATE_FLAG`): the word lives in a `MAP_SHARED` file mapping, and the kernel keys
//! it by file and offset, so waiters and wakers in different processes meet.
//!
//! Only the kernel reads the 32-bit half through the address: these calls never dereference
//! it in Rust. Other systems sleep briefly instead (no cross-process wait primitive there).
#![allow(unsafe_code)] // Two futex system calls on an address inside a live atomic.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

/// Byte offset of the word's high 32 bits (the lock owner, `seqlock.rs`) inside it.
#[cfg(target_os = "linux")]
const HIGH_HALF_OFFSET: usize = if cfg!(target_endian = "little") { 4 } else { 0 };

/// The address of `word`'s high half, for the kernel (4-aligned: the word is 8-aligned).
#[cfg(target_os = "linux")]
fn high_half(word: &AtomicU64) -> *const u32 {
    (word as *const AtomicU64)
        .cast::<u8>()
        .wrapping_add(HIGH_HALF_OFFSET)
        .cast::<u32>()
}

/// Sleeps while `word`'s high half is `expected` (checked atomically by the kernel against
/// a concurrent wake), at most `timeout`. Returns early on a wake, a signal or a changed
/// value: the caller always looks again.
pub fn wait_while_high(word: &AtomicU64, expected: u32, timeout: Duration) {
    #[cfg(target_os = "linux")]
    {
        let ts = libc::timespec {
            tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: the address is 4 bytes inside `word`, an atomic borrowed for the whole call
        // (so mapped and aligned); FUTEX_WAIT only loads the u32 there atomically in the
        // kernel and compares it with `expected`, it never writes. `ts` is a valid timespec
        // for the call; the unused uaddr2/val3 arguments are null and 0. Every error (EAGAIN:
        // the value differs, EINTR, ETIMEDOUT, EFAULT on a truncated file) means "look again",
        // so the result is ignored.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                high_half(word),
                libc::FUTEX_WAIT,
                expected,
                &ts as *const libc::timespec,
                std::ptr::null::<u32>(),
                0u32,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (word, expected);
        std::thread::sleep(timeout.min(Duration::from_micros(50)));
    }
}

/// Wakes one process or thread sleeping in [`wait_while_high`] on `word`.
pub fn wake_one(word: &AtomicU64) {
    #[cfg(target_os = "linux")]
    // SAFETY: FUTEX_WAKE uses the address only to find the futex queue (it reads no memory
    // through it); the address is inside `word`, borrowed for the call. The count is 1; the
    // remaining arguments are unused. Failure (EFAULT) just wakes nobody: waiters time out.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            high_half(word),
            libc::FUTEX_WAKE,
            1i32,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = word;
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::SeqCst;
    use std::sync::Arc;
    use std::time::Instant;

    #[test]
    fn a_wait_on_a_changed_value_returns_at_once_and_a_wake_ends_a_wait() {
        let word = Arc::new(AtomicU64::new(7u64 << 32 | 3));
        let start = Instant::now();
        wait_while_high(&word, 8, Duration::from_secs(5));
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "value differs: no sleep"
        );
        let sleeper = {
            let word = Arc::clone(&word);
            std::thread::spawn(move || {
                let start = Instant::now();
                while word.load(SeqCst) >> 32 == 7 {
                    wait_while_high(&word, 7, Duration::from_secs(20));
                }
                start.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        word.store(3, SeqCst); // the low half (the sequence) is not what the sleeper watches
        wake_one(&word);
        let slept = sleeper.join().unwrap();
        assert!(
            slept < Duration::from_secs(10),
            "woken, not timed out: {slept:?}"
        );
    }

    #[test]
    fn a_wait_times_out() {
        let word = AtomicU64::new(7u64 << 32);
        let start = Instant::now();
        wait_while_high(&word, 7, Duration::from_millis(20));
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(15), "slept {waited:?}");
    }
}
