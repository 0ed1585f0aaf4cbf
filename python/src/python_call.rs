//! Calls of the wrapped function (INV-11): the one place where a cached call runs arbitrary Python code
//! for as long as that code likes, and so the place that must survive two things `lru_cache`
//! survives.
//!
//! - **Interpreter exit.** While the interpreter finalizes, CPython (3.9 to 3.13) ends every
//!   daemon thread that tries to take the GIL back with `pthread_exit`, a forced unwind of the
//!   thread's stack. Rust aborts the process when such an unwind reaches a `catch_unwind` or a
//!   call declared as one that cannot unwind. So the call is made through a `"C-unwind"`
//!   declaration and a guard in the calling frame stops the unwind there: the thread parks
//!   forever instead (it holds no GIL and nothing of ours; the process is exiting, which ends
//!   it), and no frame further out, with its `catch_unwind`, is ever reached.
//! - **Deep recursion.** A cached recursive function nests one C-level call per level. The
//!   call is refused with `RecursionError` when CPython's recursion limit is reached
//!   (`Py_EnterRecursiveCall`, as `lru_cache`'s call does) or when less than
//!   [`STACK_MARGIN_BYTES`] of the thread's C stack are left, so a raised recursion limit
//!   ends in an exception, never in a segfault.

use std::ffi::CStr;
use std::os::raw::c_int;
use std::ptr;

use pyo3::ffi;

/// Python-facing calls that may run Python code, declared `"C-unwind"` so that a forced unwind
/// coming out of them enters the calling Rust frame (and its guard) instead of aborting.
mod unwinding {
    use pyo3::ffi;

    pub type VectorcallUnwind = unsafe extern "C-unwind" fn(
        *mut ffi::PyObject,
        *const *mut ffi::PyObject,
        usize,
        *mut ffi::PyObject,
    ) -> *mut ffi::PyObject;

    extern "C-unwind" {
        /// Exported by CPython 3.9+ (what `PyObject_Vectorcall` does for a callable without a
        /// vectorcall slot).
        pub fn _PyObject_MakeTpCall(
            tstate: *mut ffi::PyThreadState,
            callable: *mut ffi::PyObject,
            args: *const *mut ffi::PyObject,
            nargs: ffi::Py_ssize_t,
            keywords: *mut ffi::PyObject,
        ) -> *mut ffi::PyObject;

        pub fn PyObject_Call(
            callable: *mut ffi::PyObject,
            args: *mut ffi::PyObject,
            kwargs: *mut ffi::PyObject,
        ) -> *mut ffi::PyObject;

        /// Retakes the GIL; during finalization it ends a daemon thread (`pthread_exit`).
        pub fn PyEval_RestoreThread(tstate: *mut ffi::PyThreadState);
    }
}

/// Ends a forced unwind (thread exit at interpreter finalization) in the frame that owns it.
/// Only ever dropped by an unwind: normal returns `forget` it. A Rust panic cannot start inside
/// the guarded C call, but if one ever came through, it is let through to the `catch_unwind`
/// further out.
struct ParkOnForcedUnwind;

impl Drop for ParkOnForcedUnwind {
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        // The thread is being ended without the GIL while the interpreter goes away: touching
        // Python or letting the unwind reach a `catch_unwind` (which aborts) are both worse
        // than never running again. Process exit ends the thread.
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}

/// Stack bytes a cached call leaves to the code it calls (and to raising and reporting the
/// exception): at most this, and at most an eighth of a small thread stack.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))] // measured on Linux only
pub const STACK_MARGIN_BYTES: usize = 256 * 1024;

const RECURSION_WHERE: &CStr = c" in a cached function";

/// `func(*args)` with the caller's vector, guarded as the module docs say. Returns a new
/// reference, or NULL with an exception set (`RecursionError` when refused).
///
/// # Safety
/// The thread is attached; `func` is a live object; `args`/`nargsf`/`kwnames` follow the
/// vectorcall protocol and stay alive for the call.
#[inline(always)]
pub unsafe fn vectorcall(
    func: *mut ffi::PyObject,
    args: *const *mut ffi::PyObject,
    nargsf: usize,
    kwnames: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: attached thread (function contract).
    if unsafe { !enter() } {
        return ptr::null_mut();
    }
    let guard = ParkOnForcedUnwind;
    // SAFETY: `func` is live (function contract); its type's vectorcall slot, when present,
    // has the vectorcall signature, and "C-unwind" differs from "C" only in allowing an
    // unwind out of it (same calling convention).
    let result = unsafe {
        match ffi::PyVectorcall_Function(func) {
            Some(slot) => {
                let slot: unwinding::VectorcallUnwind = std::mem::transmute(slot);
                slot(func, args, nargsf, kwnames)
            }
            None => unwinding::_PyObject_MakeTpCall(
                ffi::PyThreadState_Get(),
                func,
                args,
                ffi::PyVectorcall_NARGS(nargsf),
                kwnames,
            ),
        }
    };
    std::mem::forget(guard);
    // SAFETY: paired with `enter` above.
    unsafe { ffi::Py_LeaveRecursiveCall() };
    result
}

/// `func(*args, **kwargs)`, guarded like [`vectorcall`].
///
/// # Safety
/// The thread is attached; `func` and `args` (a tuple) are live; `kwargs` is a dict or null.
pub unsafe fn call(
    func: *mut ffi::PyObject,
    args: *mut ffi::PyObject,
    kwargs: *mut ffi::PyObject,
) -> *mut ffi::PyObject {
    // SAFETY: attached thread (function contract).
    if unsafe { !enter() } {
        return ptr::null_mut();
    }
    let guard = ParkOnForcedUnwind;
    // SAFETY: function contract.
    let result = unsafe { unwinding::PyObject_Call(func, args, kwargs) };
    std::mem::forget(guard);
    // SAFETY: paired with `enter` above.
    unsafe { ffi::Py_LeaveRecursiveCall() };
    result
}

/// Runs `body` with the GIL released (every release in this crate goes through it: single
/// flight's waits, the shared store's opens, clears and removals), guarded like [`vectorcall`]:
/// retaking the GIL while the interpreter finalizes may end the thread with a forced unwind,
/// which parks here instead of reaching a `catch_unwind` (pyo3's `detach` retakes it through a
/// call that cannot unwind: the process would abort). `body` must not touch Python.
pub fn detached<T>(py: pyo3::Python<'_>, body: impl FnOnce() -> T) -> T {
    let _attached = py;
    // SAFETY: the thread is attached (we hold `py`); it is detached until restored below.
    let state = unsafe { ffi::PyEval_SaveThread() };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
    let guard = ParkOnForcedUnwind;
    // SAFETY: `state` is this thread's, saved above.
    unsafe { unwinding::PyEval_RestoreThread(state) };
    std::mem::forget(guard);
    outcome.unwrap_or_else(|payload| std::panic::resume_unwind(payload))
}

/// Enters one level of Python recursion if both the recursion limit and the C stack allow it;
/// otherwise sets `RecursionError` and returns false.
///
/// # Safety
/// The thread is attached.
#[inline(always)]
unsafe fn enter() -> bool {
    if stack_is_low() {
        // SAFETY: attached thread; a valid C string.
        unsafe {
            ffi::PyErr_SetString(
                ffi::PyExc_RecursionError,
                c"maximum recursion depth exceeded in a cached function (the thread's C stack \
                  is nearly used up)"
                    .as_ptr(),
            )
        };
        return false;
    }
    // SAFETY: attached thread; a valid C string that outlives the call.
    let refused: c_int = unsafe { ffi::Py_EnterRecursiveCall(RECURSION_WHERE.as_ptr()) };
    refused == 0
}

/// Whether this thread has less than its margin of C stack left.
#[inline(always)]
fn stack_is_low() -> bool {
    let marker = 0u8;
    let here = ptr::addr_of!(marker) as usize;
    here < stack_floor::get()
}

#[cfg(target_os = "linux")]
mod stack_floor {
    use std::cell::Cell;

    thread_local! {
        /// The lowest stack address a cached call may start at: `usize::MAX` until measured,
        /// 0 when the stack cannot be measured (which disables the check).
        static FLOOR: Cell<usize> = const { Cell::new(usize::MAX) };
    }

    /// This thread's floor (its stack's lowest address plus the margin).
    #[inline(always)]
    pub fn get() -> usize {
        FLOOR.with(|floor| {
            let value = floor.get();
            if value != usize::MAX {
                return value;
            }
            let measured = measure().unwrap_or(0);
            floor.set(measured);
            measured
        })
    }

    #[cold]
    fn measure() -> Option<usize> {
        // SAFETY: `attr` is initialised by `pthread_getattr_np` before it is read and
        // destroyed once; `pthread_self` is always valid for the calling thread.
        unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
                return None;
            }
            let mut low: *mut libc::c_void = std::ptr::null_mut();
            let mut size: libc::size_t = 0;
            let got = libc::pthread_attr_getstack(&attr, &mut low, &mut size);
            libc::pthread_attr_destroy(&mut attr);
            if got != 0 || size == 0 {
                return None;
            }
            let margin = super::STACK_MARGIN_BYTES.min(size / 8);
            Some(low as usize + margin)
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod stack_floor {
    /// No stack measurement on this platform: only the recursion limit applies.
    #[inline(always)]
    pub fn get() -> usize {
        0
    }
}
