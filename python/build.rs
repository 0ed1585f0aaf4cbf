//! Exposes pyo3's interpreter cfgs (notably `Py_GIL_DISABLED` for free-threaded CPython) to
//! this crate, so that `cell.rs` picks the locking store on free-threaded builds.
fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
