//! `CacheInfo`: the one statistics type of both backends.

use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

/// Statistics of one cached function: `CacheInfo(hits=1, misses=1, max_size=100,
/// current_size=1)`. `oversize_skips` is set by the shared backend only (then it is part of
/// the repr, the fields and iteration); it is `None` for the memory backend.
#[pyclass(frozen, eq, hash, module = "warp_cache", name = "CacheInfo")]
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheInfo {
    #[pyo3(get)]
    pub hits: u64,
    #[pyo3(get)]
    pub misses: u64,
    #[pyo3(get)]
    pub max_size: u64,
    #[pyo3(get)]
    pub current_size: u64,
    #[pyo3(get)]
    pub oversize_skips: Option<u64>,
    /// Why a function decorated with `backend="shared"` is cached in this process only (the
    /// shared cache could not be used); `None` normally. Not one of the fields.
    #[pyo3(get)]
    pub fallback: Option<String>,
}

impl From<warp_cache_core::CacheStats> for CacheInfo {
    fn from(stats: warp_cache_core::CacheStats) -> Self {
        CacheInfo::new(
            stats.hits,
            stats.misses,
            stats.max_size,
            stats.current_size,
            stats.oversize_skips,
        )
    }
}

impl CacheInfo {
    pub fn new(
        hits: u64,
        misses: u64,
        max_size: u64,
        current_size: u64,
        oversize_skips: Option<u64>,
    ) -> Self {
        CacheInfo {
            hits,
            misses,
            max_size,
            current_size,
            oversize_skips,
            fallback: None,
        }
    }

    fn values<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        match self.oversize_skips {
            None => PyTuple::new(
                py,
                [self.hits, self.misses, self.max_size, self.current_size],
            ),
            Some(skips) => PyTuple::new(
                py,
                [
                    self.hits,
                    self.misses,
                    self.max_size,
                    self.current_size,
                    skips,
                ],
            ),
        }
    }

    fn field_names(&self) -> &'static [&'static str] {
        const MEMORY: &[&str] = &["hits", "misses", "max_size", "current_size"];
        const SHARED: &[&str] = &[
            "hits",
            "misses",
            "max_size",
            "current_size",
            "oversize_skips",
        ];
        if self.oversize_skips.is_some() {
            SHARED
        } else {
            MEMORY
        }
    }
}

#[pymethods]
impl CacheInfo {
    #[new]
    #[pyo3(signature = (hits, misses, max_size, current_size, oversize_skips = None, *, fallback = None))]
    fn py_new(
        hits: u64,
        misses: u64,
        max_size: u64,
        current_size: u64,
        oversize_skips: Option<u64>,
        fallback: Option<String>,
    ) -> Self {
        CacheInfo {
            fallback,
            ..CacheInfo::new(hits, misses, max_size, current_size, oversize_skips)
        }
    }

    fn __repr__(&self) -> String {
        let mut out = format!(
            "CacheInfo(hits={}, misses={}, max_size={}, current_size={}",
            self.hits, self.misses, self.max_size, self.current_size
        );
        if let Some(skips) = self.oversize_skips {
            out.push_str(&format!(", oversize_skips={skips}"));
        }
        if let Some(fallback) = &self.fallback {
            out.push_str(&format!(", fallback={fallback:?}"));
        }
        out.push(')');
        out
    }

    fn __len__(&self) -> usize {
        self.field_names().len()
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        Ok(self.values(py)?.into_any().try_iter()?.into_any())
    }

    fn __getitem__<'py>(&self, py: Python<'py>, index: isize) -> PyResult<Bound<'py, PyAny>> {
        self.values(py)?.into_any().get_item(index)
    }

    /// The fields present, in order (like a named tuple's `_fields`).
    #[getter]
    fn _fields(&self) -> Vec<&'static str> {
        self.field_names().to_vec()
    }

    /// A dict of the fields present.
    fn _asdict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let dict = PyDict::new(py);
        for (name, value) in self.field_names().iter().zip(self.values(py)?.iter()) {
            dict.set_item(name, value)?;
        }
        Ok(dict)
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let this = slf.get();
        if let Some(fallback) = &this.fallback {
            // `fallback` is keyword-only: rebuild through a helper that passes it.
            let rebuild = slf
                .py()
                .import("warp_cache")?
                .getattr("_rebuild_cache_info")?;
            let args = (
                slf.get_type(),
                this.hits,
                this.misses,
                this.max_size,
                this.current_size,
                this.oversize_skips,
                fallback.clone(),
            )
                .into_pyobject(slf.py())?;
            return Ok((rebuild, args));
        }
        let args = PyTuple::new(
            slf.py(),
            [
                this.hits.into_pyobject(slf.py())?.into_any(),
                this.misses.into_pyobject(slf.py())?.into_any(),
                this.max_size.into_pyobject(slf.py())?.into_any(),
                this.current_size.into_pyobject(slf.py())?.into_any(),
                this.oversize_skips.into_pyobject(slf.py())?.into_any(),
            ],
        )?;
        Ok((slf.get_type().into_any(), args))
    }
}

#[cfg(test)]
mod tests {
    use pyo3::prelude::*;
    use pyo3::types::{PyDict, PyTuple};

    use super::CacheInfo;

    fn eval<'py>(py: Python<'py>, source: &str, info: &Bound<'py, CacheInfo>) -> Bound<'py, PyAny> {
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

    #[test]
    fn memory_info_has_four_fields() {
        Python::attach(|py| {
            let info = Bound::new(py, CacheInfo::new(1, 2, 100, 3, None)).unwrap();
            assert_eq!(
                text(eval(py, "repr(info)", &info)),
                "CacheInfo(hits=1, misses=2, max_size=100, current_size=3)"
            );
            assert_eq!(text(eval(py, "tuple(info)", &info)), "(1, 2, 100, 3)");
            assert_eq!(text(eval(py, "len(info)", &info)), "4");
            assert_eq!(text(eval(py, "info[-1]", &info)), "3");
            assert_eq!(
                text(eval(py, "info._fields", &info)),
                "['hits', 'misses', 'max_size', 'current_size']"
            );
            assert_eq!(
                text(eval(py, "info._asdict()", &info)),
                "{'hits': 1, 'misses': 2, 'max_size': 100, 'current_size': 3}"
            );
            assert_eq!(text(eval(py, "info.oversize_skips", &info)), "None");
            assert_eq!(text(eval(py, "info.fallback", &info)), "None");
        });
    }

    #[test]
    fn shared_info_has_oversize_skips() {
        Python::attach(|py| {
            let info = Bound::new(py, CacheInfo::new(5, 6, 7, 8, Some(9))).unwrap();
            assert_eq!(
                text(eval(py, "repr(info)", &info)),
                "CacheInfo(hits=5, misses=6, max_size=7, current_size=8, oversize_skips=9)"
            );
            assert_eq!(text(eval(py, "tuple(info)", &info)), "(5, 6, 7, 8, 9)");
            assert_eq!(text(eval(py, "len(info)", &info)), "5");
            assert_eq!(
                text(eval(py, "info._asdict()['oversize_skips']", &info)),
                "9"
            );
        });
    }

    #[test]
    fn fallback_is_shown_but_is_not_a_field() {
        Python::attach(|py| {
            let info = CacheInfo {
                fallback: Some("no /dev/shm".to_owned()),
                ..CacheInfo::new(0, 1, 2, 0, None)
            };
            let info = Bound::new(py, info).unwrap();
            assert_eq!(
                text(eval(py, "repr(info)", &info)),
                "CacheInfo(hits=0, misses=1, max_size=2, current_size=0, fallback=\"no /dev/shm\")"
            );
            assert_eq!(text(eval(py, "len(info)", &info)), "4");
        });
    }

    #[test]
    fn equal_infos_are_equal_and_hash_alike() {
        Python::attach(|py| {
            let a = Bound::new(py, CacheInfo::new(1, 2, 3, 4, None)).unwrap();
            let b = Bound::new(py, CacheInfo::new(1, 2, 3, 4, None)).unwrap();
            let c = Bound::new(py, CacheInfo::new(1, 2, 3, 4, Some(0))).unwrap();
            assert!(a.eq(&b).unwrap());
            assert_eq!(a.hash().unwrap(), b.hash().unwrap());
            assert!(!a.eq(&c).unwrap());
        });
    }

    #[test]
    fn reduce_rebuilds_an_equal_info() {
        Python::attach(|py| {
            for oversize_skips in [None, Some(3)] {
                let info = Bound::new(py, CacheInfo::new(1, 2, 3, 4, oversize_skips)).unwrap();
                let reduced = info.call_method0("__reduce__").unwrap();
                let reduced = reduced.cast::<PyTuple>().unwrap();
                let rebuilt = reduced
                    .get_item(0)
                    .unwrap()
                    .call1(reduced.get_item(1).unwrap().cast::<PyTuple>().unwrap())
                    .unwrap();
                assert!(rebuilt.eq(&info).unwrap());
            }
        });
    }
}
