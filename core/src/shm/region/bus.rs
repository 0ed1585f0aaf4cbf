#![allow(unsafe_code)] // The SIGBUS handler: sigaction and remapping zero pages over a fault.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Once;

/// Registered ranges at most (two per shared store generation); beyond, mappings work
/// unprotected.
const SLOTS: usize = 16384;

static STARTS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static ENDS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static FAULTED: [AtomicBool; SLOTS] = [const { AtomicBool::new(false) }; SLOTS];
static FAULTS: AtomicU64 = AtomicU64::new(0);
static PAGE_BYTES: AtomicUsize = AtomicUsize::new(4096);
/// The handler this one replaced (`sa_sigaction` as an address, and `sa_flags`).
static PREVIOUS_HANDLER: AtomicUsize = AtomicUsize::new(libc::SIG_DFL);
static PREVIOUS_FLAGS: AtomicUsize = AtomicUsize::new(0);
static INSTALL: Once = Once::new();

pub fn fault_count() -> u64 {
    FAULTS.load(Ordering::Relaxed)
}

pub fn faulted(slot: usize) -> bool {
    FAULTED.get(slot).is_some_and(|f| f.load(Ordering::Acquire))
}

/// Registers `[start, start + len)`; `None` if the registry is full.
pub fn register(start: usize, len: usize) -> Option<usize> {
    INSTALL.call_once(install);
    let end = start.checked_add(len)?;
    for (slot, cell) in STARTS.iter().enumerate() {
        if cell
            .compare_exchange(0, start, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
        {
            FAULTED[slot].store(false, Ordering::Release);
            ENDS[slot].store(end, Ordering::Release);
            return Some(slot);
        }
    }
    None
}

/// Forgets a range (before it is unmapped).
pub fn unregister(slot: usize) {
    if let (Some(end), Some(start)) = (ENDS.get(slot), STARTS.get(slot)) {
        end.store(0, Ordering::Release);
        start.store(0, Ordering::Release);
    }
}

fn install() {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if let Ok(page) = usize::try_from(page) {
        if page.is_power_of_two() {
            PAGE_BYTES.store(page, Ordering::Relaxed);
        }
    }
    // SAFETY: `action` and `previous` are valid sigaction structs for the call; the new
    // handler has the SA_SIGINFO signature and lives for the whole program; the previous
    // disposition is recorded before the handler can run for a registered range (no
    // range is registered before this returns).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut action.sa_mask);
        let mut previous: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, &action, &mut previous) == 0 {
            PREVIOUS_FLAGS.store(previous.sa_flags as usize, Ordering::Relaxed);
            PREVIOUS_HANDLER.store(previous.sa_sigaction, Ordering::Release);
        }
    }
}

/// # Safety
/// Called by the kernel as a SA_SIGINFO signal handler for SIGBUS.
unsafe extern "C" fn on_sigbus(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo_t; si_code > 0 means it reports a fault
    // at si_addr (not a signal sent by a process).
    let fault_address = unsafe {
        match info.as_ref() {
            Some(info) if info.si_code > 0 => Some(info.si_addr() as usize),
            _ => None,
        }
    };
    if let Some(address) = fault_address {
        let page = PAGE_BYTES.load(Ordering::Relaxed);
        for slot in 0..SLOTS {
            let start = STARTS[slot].load(Ordering::Acquire);
            let end = ENDS[slot].load(Ordering::Acquire);
            if start == 0 || address < start || address >= end {
                continue;
            }
            let page_start = address & !(page - 1);
            // SAFETY: `page_start` is a page inside a live mapping we own (registered
            // ranges are unregistered before munmap); replacing that one page with a
            // private anonymous page is what the mapping's users are prepared for
            // (INV-S6): its contents become zeros visible to this process only.
            let mapped = unsafe {
                libc::mmap(
                    page_start as *mut libc::c_void,
                    page,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_FIXED | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if mapped != libc::MAP_FAILED {
                FAULTED[slot].store(true, Ordering::Release);
                FAULTS.fetch_add(1, Ordering::AcqRel);
                return;
            }
            break;
        }
    }
    // Not ours: what would have happened without this handler.
    let previous = PREVIOUS_HANDLER.load(Ordering::Acquire);
    let flags = PREVIOUS_FLAGS.load(Ordering::Relaxed) as libc::c_int;
    if previous == libc::SIG_DFL || previous == libc::SIG_IGN {
        // SAFETY: restores the default disposition (valid struct); returning re-executes
        // the faulting access (or, for a sent signal, re-raising delivers it once this
        // handler returns), which now takes the default action.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = libc::SIG_DFL;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
            if fault_address.is_none() {
                libc::raise(libc::SIGBUS);
            }
        }
        return;
    }
    // SAFETY: `previous` is the handler installed before ours, with the signature its
    // flags declare; it is called as the kernel would have called it.
    unsafe {
        if flags & libc::SA_SIGINFO != 0 {
            let handler: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                std::mem::transmute(previous);
            handler(signal, info, context);
        } else {
            let handler: extern "C" fn(libc::c_int) = std::mem::transmute(previous);
            handler(signal);
        }
    }
}
