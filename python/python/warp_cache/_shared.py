"""How the shared backend names a function's cache: the name every process derives for the
same function, from which the native store derives (and sanitizes) its two file names.

What identifies a cached function (INV-10)
==========================================

``<module>.<qualname>.<fingerprint>``, where the fingerprint is a 64-bit BLAKE2b digest of:

* the key/value format version of the shared backend (``KEY_SCHEMA``);
* ``typed=True`` (a typed and an untyped function never share files: their keys differ);
* ``__module__`` (``__mp_main__``, the name multiprocessing's spawn gives the main script in
  a child, counts as ``__main__``) and ``__qualname__``;
* the **code object**, recursively: bytecode, constants (nested code objects included;
  frozensets in a canonical order, so ``PYTHONHASHSEED`` does not matter), names, variable
  names, free and cell variables, argument counts, flags and exception table. Line numbers
  are not included (moving a function does not change it);
* the absolute path of the file that defines it, and the SHA-256 of that file's contents
  when it can be read: any edit of the module (the function, a constant it reads, a helper
  defined beside it) gives a new cache after a deploy, and one program installed in two
  places never shares by accident;
* ``__defaults__``, ``__kwdefaults__`` and the values in ``__closure__``: two closures made by
  one ``def`` (same qualname, same code) with different captured values are different
  functions;
* for a ``functools.partial``: the wrapped callable and the bound ``args``/``keywords``; for a
  bound method: the function and its ``__self__``; for a callable instance: its class, the
  class's ``__call__`` and the instance's state (its pickle);
* for code whose file does not exist (``python -c``, the REPL, notebooks) run as
  ``__main__``: the process id, so two unrelated sessions never share (children started with
  ``fork`` inherit the parent's cache).

Values captured by the function (defaults, closure cells, partial arguments, instance state)
must be identifiable: ``None``/``bool``/``int``/``float``/``complex``/``str``/``bytes``,
containers of them (sets and dicts in a canonical order), functions, classes, modules and
enum members are; anything else is identified by its pickle, and an object that cannot be
pickled is a ``TypeError`` at decoration (processes could not tell two such functions apart).

Not part of the identity: values of *other* modules that the function reads at call time
(configuration loaded at runtime, constants imported from elsewhere). When they change
meaning, change the function or call ``cache_clear()``.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import inspect
import os
import pickle
import struct
import types
from typing import Any, Callable, Optional

#: Version of the key/value layout the native code writes (``convert.rs``); part of every
#: fingerprint so that a new layout never reads entries written by an old one.
#: 2: ``typed=False`` keys write ``True``/``False`` and integral floats as the equal int.
KEY_SCHEMA = 2

_DIGEST_BYTES = 8
_MAX_DEPTH = 48
_MAX_ITEMS = 200_000

# (path, size, mtime_ns) -> sha256 hex of the file, so that decorating many functions of a
# module reads it once.
_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


class _Unidentifiable(TypeError):
    pass


def _module_of(func: Any) -> str:
    module = getattr(func, "__module__", None)
    if not isinstance(module, str):
        module = getattr(type(func), "__module__", None) or "?"
    return "__main__" if module == "__mp_main__" else module


def _qualname_of(func: Any) -> str:
    qualname = getattr(func, "__qualname__", None)
    if isinstance(qualname, str):
        return qualname
    if isinstance(func, functools.partial):
        return f"partial.{_qualname_of(func.func)}"
    return f"{type(func).__qualname__}.instance"


def _absolute(path: str) -> str:
    if path.startswith("<") or not path:
        return path
    try:
        return os.path.abspath(path)
    except (OSError, ValueError):  # cwd removed, embedded NUL...
        return path


def _file_digest(path: str) -> Optional[str]:
    """SHA-256 of a source file's contents, or None when it cannot be read."""
    if not path or path.startswith("<"):
        return None
    try:
        st = os.stat(path)
        key = (path, st.st_size, st.st_mtime_ns)
        digest = _FILE_DIGESTS.get(key)
        if digest is None:
            with open(path, "rb") as source:
                digest = hashlib.sha256(source.read()).hexdigest()
            _FILE_DIGESTS[key] = digest
        return digest
    except (OSError, ValueError):
        return None


class _Fingerprint:
    """A canonical, typed, length-prefixed serialization of what identifies a function, fed
    into BLAKE2b. Deterministic across processes and hash seeds."""

    def __init__(self) -> None:
        self._hash = hashlib.blake2b(digest_size=_DIGEST_BYTES, person=b"warp_cache")
        self._active: dict[int, int] = {}  # id -> position, for cycles (recursive closures)
        self._items = 0

    def digest(self) -> str:
        return self._hash.hexdigest()

    # -- primitives
    def _tag(self, tag: bytes) -> None:
        self._items += 1
        if self._items > _MAX_ITEMS:
            raise _Unidentifiable("captured values are too large to fingerprint")
        self._hash.update(tag)

    def _blob(self, tag: bytes, data: bytes) -> None:
        self._tag(tag)
        self._hash.update(struct.pack("<Q", len(data)))
        self._hash.update(data)

    def _text(self, tag: bytes, text: str) -> None:
        self._blob(tag, text.encode("utf-8", "surrogatepass"))

    # -- values
    def value(self, obj: Any, depth: int = 0) -> None:
        if depth > _MAX_DEPTH:
            raise _Unidentifiable("captured values are nested too deeply to fingerprint")
        kind = type(obj)
        if obj is None or obj is Ellipsis or obj is NotImplemented:
            self._text(b"S", repr(obj))
        elif kind is bool:
            self._tag(b"T" if obj else b"F")
        elif kind is int:
            self._text(b"I", str(obj))
        elif kind is float:
            self._blob(b"D", struct.pack("<d", obj))
        elif kind is complex:
            self._blob(b"J", struct.pack("<dd", obj.real, obj.imag))
        elif kind is str:
            self._text(b"U", obj)
        elif kind is bytes:
            self._blob(b"B", obj)
        elif kind in (tuple, list):
            self._sequence(b"(" if kind is tuple else b"[", obj, depth)
        elif kind in (frozenset, set):
            self._unordered(b"{" if kind is frozenset else b"<", obj, depth)
        elif kind is dict:
            self._mapping(obj, depth)
        elif kind is types.CodeType:
            self.code(obj, depth)
        elif isinstance(obj, enum.Enum):
            self._text(b"E", f"{_module_of(kind)}:{kind.__qualname__}.{obj.name}")
        elif isinstance(obj, type):
            self._text(b"K", f"{_module_of(obj)}:{obj.__qualname__}")
        elif isinstance(obj, types.ModuleType):
            self._text(b"M", obj.__name__)
        elif callable(obj):
            self.callable(obj, depth)
        else:
            self._opaque(obj)

    def _sequence(self, tag: bytes, items: Any, depth: int) -> None:
        self._blob(tag, struct.pack("<Q", len(items)))
        for item in items:
            self.value(item, depth + 1)

    def _sub_digest(self, obj: Any, depth: int) -> bytes:
        sub = _Fingerprint()
        sub._active = self._active
        sub._items = self._items
        sub.value(obj, depth + 1)
        self._items = sub._items
        return sub._hash.digest()

    def _unordered(self, tag: bytes, items: Any, depth: int) -> None:
        digests = sorted(self._sub_digest(item, depth) for item in items)
        self._blob(tag, b"".join(digests))

    def _mapping(self, mapping: dict[Any, Any], depth: int) -> None:
        pairs = sorted(
            self._sub_digest(key, depth) + self._sub_digest(value, depth)
            for key, value in mapping.items()
        )
        self._blob(b"{d", b"".join(pairs))

    def _opaque(self, obj: Any) -> None:
        kind = type(obj)
        try:
            pickled = pickle.dumps(obj, protocol=5)
        except Exception as exc:
            raise _Unidentifiable(
                f"it captures a {kind.__module__}.{kind.__qualname__} object that cannot be "
                f"pickled ({exc})"
            ) from exc
        self._text(b"O", f"{_module_of(kind)}:{kind.__qualname__}")
        self._blob(b"P", pickled)

    # -- code and callables
    def code(self, code: types.CodeType, depth: int = 0) -> None:
        self._tag(b"C")
        for number in (
            code.co_argcount,
            code.co_posonlyargcount,
            code.co_kwonlyargcount,
            code.co_flags,
        ):
            self._text(b"i", str(number))
        self._blob(b"c", code.co_code)
        self._blob(b"x", getattr(code, "co_exceptiontable", b""))
        for names in (code.co_names, code.co_varnames, code.co_freevars, code.co_cellvars):
            self._sequence(b"n", names, depth)
        self._sequence(b"k", code.co_consts, depth)

    def function(self, func: types.FunctionType, depth: int) -> None:
        self._text(b"f", f"{_module_of(func)}:{func.__qualname__}")
        code = func.__code__
        self.code(code, depth)
        self._text(b"p", _absolute(code.co_filename))
        self._text(b"h", _file_digest(_absolute(code.co_filename)) or "")
        self.value(func.__defaults__, depth + 1)
        self.value(func.__kwdefaults__, depth + 1)
        cells = func.__closure__ or ()
        self._blob(b"z", struct.pack("<Q", len(cells)))
        for name, cell in zip(code.co_freevars, cells):
            self._text(b"v", name)
            try:
                contents = cell.cell_contents
            except ValueError:  # an empty cell (a variable assigned later)
                self._tag(b"-")
                continue
            try:
                self.value(contents, depth + 1)
            except _Unidentifiable as exc:
                raise _Unidentifiable(f"its closure variable {name!r}: {exc}") from exc

    def callable(self, func: Any, depth: int = 0) -> None:
        key = id(func)
        if key in self._active:
            # A cycle (a recursive closure refers to itself): a back reference.
            self._text(b"^", str(self._active[key]))
            return
        self._active[key] = len(self._active)
        try:
            self._callable(func, depth)
        finally:
            del self._active[key]

    def _callable(self, func: Any, depth: int) -> None:
        wrapped = getattr(type(func), "__module__", "") == "warp_cache" and getattr(
            func, "__wrapped__", None
        )
        if wrapped is not None and wrapped is not False:
            # Another cached function: what it wraps identifies it.
            self._tag(b"W")
            self.callable(wrapped, depth + 1)
        elif isinstance(func, types.FunctionType):
            self.function(func, depth)
        elif isinstance(func, functools.partial):
            self._tag(b"Q")
            self.callable(func.func, depth + 1)
            self.value(func.args, depth + 1)
            self.value(func.keywords, depth + 1)
        elif isinstance(func, types.MethodType):
            self._tag(b"m")
            self.callable(func.__func__, depth + 1)
            self.value(func.__self__, depth + 1)
        elif isinstance(func, (classmethod, staticmethod)):
            self._tag(b"s")
            self.callable(func.__func__, depth + 1)
        elif isinstance(
            func,
            (
                types.BuiltinFunctionType,
                types.MethodDescriptorType,
                types.WrapperDescriptorType,
                types.MethodWrapperType,
                types.ClassMethodDescriptorType,
            ),
        ):
            owner = getattr(func, "__self__", None)
            self._text(b"b", f"{_module_of(func)}:{getattr(func, '__qualname__', repr(func))}")
            if owner is not None and not isinstance(owner, types.ModuleType):
                self.value(owner, depth + 1)
        elif isinstance(func, type):
            self._text(b"K", f"{_module_of(func)}:{func.__qualname__}")
            init = func.__dict__.get("__init__")
            if isinstance(init, types.FunctionType):
                self.function(init, depth + 1)
        else:
            # A callable instance: its class, the class's __call__, its state.
            kind = type(func)
            self._text(b"o", f"{_module_of(kind)}:{kind.__qualname__}")
            call = inspect.getattr_static(kind, "__call__", None)
            if isinstance(call, (types.FunctionType, classmethod, staticmethod)):
                self.callable(call, depth + 1)
            self._opaque(func)


def _main_code(func: Any) -> tuple[bool, Any]:
    """Whether ``func`` is defined by ``__main__`` code, and that code object (``None`` when it
    has none)."""
    target = func
    for _ in range(8):
        if isinstance(target, functools.partial):
            target = target.func
        elif isinstance(target, types.MethodType):
            target = target.__func__
        else:
            break
    if _module_of(target) != "__main__":
        return False, None
    code = getattr(target, "__code__", None)
    if code is None:  # a callable instance: where its class's __call__ is defined
        call = inspect.getattr_static(type(target), "__call__", None)
        code = getattr(getattr(call, "__func__", call), "__code__", None)
    return True, code


def _main_without_file(func: Any) -> bool:
    """Whether ``func`` is defined by ``__main__`` code that has no file on disk."""
    is_main, code = _main_code(func)
    if not is_main:
        return False
    if code is None:
        return True
    filename = _absolute(code.co_filename)
    return filename.startswith("<") or not os.path.isfile(filename)


def _family_module(func: Any, module: str) -> str:
    """The module part of the file names. Every script runs as ``__main__``: a script's
    functions are named after its path too (``__main__-<8 hex>``), so that two unrelated
    scripts are never taken for two versions of one function (the store removes the files
    of other versions of a ``<module>.<qualname>`` that nobody uses)."""
    is_main, code = _main_code(func)
    if not is_main:
        return module
    where = _absolute(code.co_filename) if code is not None else "<no file>"
    digest = hashlib.blake2b(where.encode("utf-8", "surrogatepass"), digest_size=4).hexdigest()
    return f"{module}-{digest}"


def cache_name(func: Callable[..., Any], typed: bool = False) -> str:
    """The name of ``func``'s shared cache: ``<module>.<qualname>.<16 hex digits>`` (for
    ``__main__`` code the module part also names the script, ``_family_module``)."""
    module = _module_of(func)
    qualname = _qualname_of(func)
    fingerprint = _Fingerprint()
    fingerprint._text(b"schema", str(KEY_SCHEMA))
    if typed:
        fingerprint._text(b"typed", "1")
    fingerprint._text(b"name", f"{module}:{qualname}")
    if _main_without_file(func):
        fingerprint._text(b"pid", str(os.getpid()))
    try:
        fingerprint.callable(func)
    except _Unidentifiable as exc:
        raise TypeError(
            f"cannot use backend='shared' for {qualname}: {exc}; processes could not tell "
            "two such functions apart. Pass that value as an argument, or make it a module "
            "global"
        ) from None
    except RecursionError:
        raise TypeError(
            f"cannot use backend='shared' for {qualname}: its captured values are nested too "
            "deeply to fingerprint"
        ) from None
    return f"{_family_module(func, module)}.{qualname}.{fingerprint.digest()}"
