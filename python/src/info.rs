//! `CacheInfo`: the one statistics type of both backends, turned into the package's
//! `warp_cache.CacheInfo` (`python/warp_cache/_info.py`: a named tuple of the four counts
//! `lru_cache` has, with the backend-specific counters as attributes outside the tuple).

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

/// Statistics of one cached function, as `cache_info()` returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheInfo {
    pub hits: u64,
    pub misses: u64,
    pub max_size: u64,
    pub current_size: u64,
    /// Counted by the shared backend only; `None` for the memory backend.
    pub oversize_skips: Option<u64>,
    /// Counted by the shared backend only (its file could not grow); `None` for memory.
    pub space_skips: Option<u64>,
    /// Contention counted by the shared backend only; `None` for memory.
    pub read_retries: Option<u64>,
    pub lock_waits: Option<u64>,
    pub lock_skips: Option<u64>,
}

impl From<warp_cache_core::CacheStats> for CacheInfo {
    fn from(stats: warp_cache_core::CacheStats) -> Self {
        CacheInfo {
            hits: stats.hits,
            misses: stats.misses,
            max_size: stats.max_size,
            current_size: stats.current_size,
            oversize_skips: stats.oversize_skips,
            space_skips: stats.space_skips,
            read_retries: stats.read_retries,
            lock_waits: stats.lock_waits,
            lock_skips: stats.lock_skips,
        }
    }
}

/// The class `warp_cache.CacheInfo`, looked up once.
static CACHE_INFO_CLASS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn cache_info_class(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    CACHE_INFO_CLASS
        .get_or_try_init(py, || load_cache_info_class(py))
        .map(|class| class.bind(py))
}

/// The package's own class (imported, so that `isinstance(info, warp_cache.CacheInfo)`).
#[cfg(not(test))]
fn load_cache_info_class(py: Python<'_>) -> PyResult<Py<PyAny>> {
    Ok(py
        .import("warp_cache._info")?
        .getattr("CacheInfo")?
        .unbind())
}

/// Under `cargo test` the package is not importable (its `__init__` needs the built
/// extension): the same file, compiled from its source.
#[cfg(test)]
fn load_cache_info_class(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let source = std::ffi::CString::new(include_str!("../python/warp_cache/_info.py"))
        .expect("no NUL in _info.py");
    let module = PyModule::from_code(py, &source, c"_info.py", c"warp_cache._info")?;
    Ok(module.getattr("CacheInfo")?.unbind())
}

impl<'py> IntoPyObject<'py> for CacheInfo {
    type Target = PyAny;
    type Output = Bound<'py, PyAny>;
    type Error = PyErr;

    fn into_pyobject(self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let extras = PyDict::new(py);
        extras.set_item("oversize_skips", self.oversize_skips)?;
        extras.set_item("space_skips", self.space_skips)?;
        extras.set_item("read_retries", self.read_retries)?;
        extras.set_item("lock_waits", self.lock_waits)?;
        extras.set_item("lock_skips", self.lock_skips)?;
        cache_info_class(py)?.call(
            (self.hits, self.misses, self.max_size, self.current_size),
            Some(&extras),
        )
    }
}

#[cfg(test)]
mod tests {
    use pyo3::prelude::*;
    use pyo3::types::PyDict;

    use super::CacheInfo;

    fn eval<'py>(py: Python<'py>, source: &str, info: CacheInfo) -> Bound<'py, PyAny> {
        let locals = PyDict::new(py);
        locals.set_item("info", info).unwrap();
        py.eval(
            &std::ffi::CString::new(source).unwrap(),
            None,
            Some(&locals),
        )
        .unwrap()
    }

    fn text(value: Bound<'_, PyAny>) -> String {
        value.str().unwrap().to_string()
    }

    fn memory() -> CacheInfo {
        CacheInfo {
            hits: 1,
            misses: 2,
            max_size: 100,
            current_size: 3,
            oversize_skips: None,
            space_skips: None,
            read_retries: None,
            lock_waits: None,
            lock_skips: None,
        }
    }

    fn shared() -> CacheInfo {
        CacheInfo {
            oversize_skips: Some(9),
            space_skips: None,
            read_retries: None,
            lock_waits: None,
            lock_skips: None,
            ..memory()
        }
    }

    #[test]
    fn memory_info_is_a_tuple_of_four_counts() {
        Python::attach(|py| {
            assert_eq!(
                text(eval(py, "repr(info)", memory())),
                "CacheInfo(hits=1, misses=2, max_size=100, current_size=3)"
            );
            for check in [
                "isinstance(info, tuple) and info == (1, 2, 100, 3) and len(info) == 4",
                "info[-1] == 3 and info._fields == ('hits', 'misses', 'max_size', 'current_size')",
                "info._asdict() == {'hits': 1, 'misses': 2, 'max_size': 100, 'current_size': 3}",
                "info.oversize_skips is None and info.fallback is None",
                "hash(info) == hash((1, 2, 100, 3))",
            ] {
                assert_eq!(text(eval(py, check, memory())), "True", "{check}");
            }
        });
    }

    #[test]
    fn shared_counters_are_attributes_outside_the_tuple() {
        Python::attach(|py| {
            assert_eq!(
                text(eval(py, "repr(info)", shared())),
                "CacheInfo(hits=1, misses=2, max_size=100, current_size=3, oversize_skips=9)"
            );
            for check in [
                "info == (1, 2, 100, 3) and len(info) == 4 and info.oversize_skips == 9",
                "'oversize_skips' not in info._asdict()",
                "info._replace(hits=5) == (5, 2, 100, 3) and info._replace(hits=5).oversize_skips == 9",
                "info._replace(oversize_skips=1).oversize_skips == 1",
            ] {
                assert_eq!(text(eval(py, check, shared())), "True", "{check}");
            }
        });
    }
}
