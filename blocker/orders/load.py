"""A folder of order files -> the valid orders and the problems of the others.

Every entry named like an order file is either parsed or refused with a reason (a FIFO, a
dangling link, an undecodable name: never skipped). Unchanged files come from an `OrderCache`;
many files to parse are parsed by worker processes, with the same outcome as here.
"""

from __future__ import annotations

import ast
import contextlib
import errno
import gc
import hashlib
import os
import select
import signal
import stat
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from functools import lru_cache
from pathlib import Path
from typing import Any

from blocker.orders.model import LoadResult, Order, OrderCache, OrderError, make_target
from blocker.orders.parse import parse_order
from blocker.orders.rules import OrderRules
from blocker.orders.yamlio import DEFAULT_MAX_BYTES, YamlError
from blocker.textsafe import display_path

ORDER_SUFFIXES = (".yaml", ".yml")
_ORDER_FIELDS = tuple(f.name for f in fields(Order) if f.name != "targets")


def _order_entries(folder: Path) -> list[os.DirEntry[str]]:
    """Every entry of `folder` named like an order file (hidden ones aside), by name: one
    scandir. Whatever its type: a FIFO, a folder or a dangling link named `x.yaml` is a file a
    person meant as an order, so it is refused with a reason (`_refusal`), never skipped."""
    with os.scandir(folder) as listing:
        found = [e for e in listing if e.name.endswith(ORDER_SUFFIXES) and not e.name.startswith(".")]
    found.sort(key=lambda e: e.name)
    return found


def _undecodable(name: str) -> bool:
    """A name that was not UTF-8 on disk (an SMB or Windows client writing Latin-1): Python
    hands it over with lone surrogates, which SQLite, JSON and UTF-8 logs cannot carry."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def _kind(mode: int) -> str:
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def _refusal(folder: Path, entry: os.DirEntry[str]) -> tuple[str, OrderError | None, os.stat_result | None]:
    """The key of one entry, and why it is not an order file (None: a regular file, or a link
    to one: links are followed, as a folder of links into a case archive is a normal layout; the
    content read is what is checked and stored, whatever the link points to)."""
    if _undecodable(entry.name) or _undecodable(str(folder)):
        key = display_path(folder / entry.name)
        return key, OrderError(key, "(file)", "file name is not valid UTF-8: rename the file "
                               "(its name is shown with the undecodable bytes escaped)", path_escaped=True), None
    key = str(folder / entry.name)
    try:
        st = entry.stat()  # follows a link
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return key, OrderError(key, "(file)", "symbolic link loop"), None
        if exc.errno == errno.ENOENT and entry.is_symlink():
            try:
                dest = os.readlink(folder / entry.name)
            except OSError:
                dest = "?"
            return key, OrderError(key, "(file)", f"dangling symbolic link (to {display_path(dest)})"), None
        return key, OrderError(key, "(file)", f"cannot read: {exc.strerror or exc}"), None
    if not stat.S_ISREG(st.st_mode):
        return key, OrderError(key, "(file)", f"is {_kind(st.st_mode)}, not an order file"), None
    return key, None, st


def read_order_file(path: Path) -> bytes:
    """The bytes of a regular file, opened without blocking: a FIFO put there between the
    listing and the open must not hang the loader."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise YamlError(f"is {_kind(st.st_mode)}, not an order file")
        # A regular file ignores O_NONBLOCK. The size is capped before the file is read whole.
        chunks, size = [], 0
        while size <= DEFAULT_MAX_BYTES:
            chunk = os.read(fd, min(1 << 20, DEFAULT_MAX_BYTES + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > DEFAULT_MAX_BYTES:
        raise YamlError(f"file larger than {DEFAULT_MAX_BYTES} bytes")
    return b"".join(chunks)


PARALLEL_MIN_FILES = 64  # fewer files to parse than this: in this process, no worker start-up


def _read_and_parse(key: str, rules: OrderRules) -> tuple[Order | list[OrderError], bool]:
    """One file's outcome, and whether it may be cached (a failed read is retried next time)."""
    try:
        return parse_order(read_order_file(Path(key)), key, rules), True
    except YamlError as exc:
        return [OrderError(key, "(file)", exc.message, exc.line)], False
    except OSError as exc:
        return [OrderError(key, "(file)", f"cannot read: {exc.strerror or exc}")], False


# A worker process returns each order in a compact form: its targets as a list of names and one
# byte of flags each (subdomains, url-escalated, source written differently), the few sources
# that differ from their name, and the other fields as they are. Pickling a million Target
# objects and rebuilding them through the dataclass costs more than parsing them.
_SUB, _URL, _SOURCE = 1, 2, 4
_WORKER_RULES: OrderRules | None = None


def _pack(item: Order | list[OrderError]) -> Any:
    if not isinstance(item, Order):
        return item
    names, flags, sources = [], bytearray(), []
    for t in item.targets:
        names.append(t.name)
        flag = (_SUB if t.subdomains else 0) | (_URL if t.kind == "url-escalated" else 0)
        if t.source != t.name:
            flag |= _SOURCE
            sources.append(t.source)
        flags.append(flag)
    fields = {f: getattr(item, f) for f in _ORDER_FIELDS}
    return fields, names, bytes(flags), sources


def _unpack(packed: Any) -> Order | list[OrderError]:
    if isinstance(packed, list):
        return packed
    fields, names, flags, sources = packed
    more = iter(sources)
    targets = tuple(
        make_target(name, bool(flag & _SUB), "url-escalated" if flag & _URL else "domain",
                next(more) if flag & _SOURCE else name)
        for name, flag in zip(names, flags, strict=True))
    return Order(targets=targets, **fields)


def _die_with(parent: int) -> None:
    """A worker must not outlive the process that asked for its work: after a `kill -9` of
    `apply` nobody will read its results, and it would wait on its queue forever (it holds the
    queue's write end itself, so it never sees an end of file). Its own parent is the
    forkserver, which lives as long as the workers do: PR_SET_PDEATHSIG covers it, and a thread
    waiting on a pidfd of the requesting process (or polling it) covers the requester."""
    import ctypes
    import threading

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() == 1:
        os._exit(1)

    def watch() -> None:
        try:
            fd = os.pidfd_open(parent)
        except (AttributeError, OSError):
            fd = -1
        if fd >= 0:
            select.select([fd], [], [])  # readable once the process has exited
        else:
            while True:
                time.sleep(1.0)
                try:
                    os.kill(parent, 0)
                except ProcessLookupError:
                    break
                except PermissionError:
                    continue
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _init_worker(rules: OrderRules, parent: int | None = None) -> None:
    global _WORKER_RULES
    _WORKER_RULES = rules
    if parent is not None:
        _die_with(parent)
    # A worker only parses, and parsing makes no reference cycle: the cyclic collector would
    # only walk the YAML nodes of each document again and again (~40% of a worker's time).
    gc.disable()


@contextmanager
def _bulk(active: bool) -> Iterator[None]:
    """Around a bulk load: no cyclic collection while a million targets are made (each one
    would walk all of them again), then `gc.freeze()`, so that later collections skip them."""
    if not active:
        yield
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def _parse_in_worker(keys: list[str]) -> list[tuple[Any, bool]]:
    assert _WORKER_RULES is not None
    out = []
    for key in keys:
        item, cacheable = _read_and_parse(key, _WORKER_RULES)
        out.append((_pack(item), cacheable))
    return out


def _workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _main_is_safe() -> bool:
    """Can a worker process start without running this program again? Each one imports the
    main module (as `__mp_main__`) unless it is a package's `__main__` (`python -m blocker`):
    then only what a script runs outside its `if __name__ == "__main__":` block runs again.
    That must be nothing but imports, definitions and bindings of plain values (the `blocker`
    console script, pytest's): anything else, and the files are parsed here."""
    main = sys.modules.get("__main__")
    name = getattr(getattr(main, "__spec__", None), "name", None)
    if name is not None:
        return bool(name == "__main__" or name.endswith(".__main__"))
    path = getattr(main, "__file__", None)
    if path is None:
        return True  # interactive, or `python -c`: nothing to import
    return _script_is_inert(str(path))


@lru_cache(maxsize=8)
def _script_is_inert(path: str) -> bool:
    """Does running the script at `path` as a module other than `__main__` only import, define
    and bind? Decided on its syntax tree, conservatively: any call outside a function body or
    the `__main__` block (a decorator, a default value, a statement) makes it not inert."""
    try:
        tree = ast.parse(Path(path).read_bytes(), path)
    except (OSError, SyntaxError, ValueError):
        return False
    return all(_inert(stmt) for stmt in tree.body)


def _calls_nothing(*nodes: ast.AST | None) -> bool:
    return not any(isinstance(sub, ast.Call | ast.Await | ast.Yield | ast.YieldFrom | ast.NamedExpr)
                   for node in nodes if node is not None for sub in ast.walk(node))


def _is_main_guard(test: ast.expr) -> bool:
    """`__name__ == "__main__"`, either way round."""
    if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
        return False
    sides = (test.left, test.comparators[0])
    return (any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
            and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides))


def _inert(stmt: ast.stmt) -> bool:
    if isinstance(stmt, ast.Import | ast.ImportFrom | ast.Pass):
        return True
    if isinstance(stmt, ast.Expr):
        return isinstance(stmt.value, ast.Constant)  # a docstring
    if isinstance(stmt, ast.Assign | ast.AnnAssign):
        return _calls_nothing(stmt.value)
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef):
        return _calls_nothing(*stmt.decorator_list, stmt.args)  # the body runs only when called
    if isinstance(stmt, ast.ClassDef):
        return _calls_nothing(*stmt.decorator_list, *stmt.bases, *stmt.keywords) and all(map(_inert, stmt.body))
    if isinstance(stmt, ast.If):
        return _is_main_guard(stmt.test) and all(map(_inert, stmt.orelse))
    if isinstance(stmt, ast.Try):  # `try: import fast except ImportError: import slow`
        return all(map(_inert, [*stmt.body, *stmt.orelse, *stmt.finalbody,
                                *(s for h in stmt.handlers for s in h.body)]))
    return False


def _parse_parallel(keys: list[str], rules: OrderRules,
                    workers: int) -> Iterator[tuple[Order | list[OrderError], bool]]:
    """`_read_and_parse` of every key, in order, by `workers` processes started by forkserver
    (the daemon has threads: a plain fork could copy a lock one of them holds). When the pool
    cannot start or breaks, the files not yet parsed are parsed here: same outcome."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    done = 0
    try:
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["blocker.orders.load"])
        size = max(1, min(32, len(keys) // (workers * 8)))  # small batches: the workers finish together
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                                 initargs=(rules, os.getpid())) as pool:
            futures = [pool.submit(_parse_in_worker, keys[i:i + size]) for i in range(0, len(keys), size)]
            try:
                for future in futures:
                    for packed, cacheable in future.result():
                        done += 1
                        yield _unpack(packed), cacheable
            finally:
                for future in futures:
                    future.cancel()
    except (BrokenProcessPool, OSError, ValueError, ImportError, NotImplementedError):
        # No worker (no semaphores or sockets here, a killed worker, ...): no different outcome.
        pass
    for key in keys[done:]:
        yield _read_and_parse(key, rules)


def load_orders(folder: Path, rules: OrderRules, cache: OrderCache | None = None, *,
                workers: int | None = None, verify: bool = False) -> LoadResult:
    """Every order file of `folder`, parsed (or taken from `cache` when unchanged on disk).

    When more than `PARALLEL_MIN_FILES` files need parsing, they are parsed by one worker
    process per core (`workers`: how many, whatever the count; 1: all here). Same outcome,
    errors and order. With `verify`, a cached file is read again and kept only if its bytes
    still have the digest parsed: an edit in place that kept size and mtime (`touch -r`) fools
    the stat key, not the digest.
    """
    result = LoadResult()
    if not folder.is_dir():
        result.errors.append(OrderError(display_path(folder), "(folder)", "orders folder does not exist",
                                        path_escaped=True))
        return result
    items: list[Order | list[OrderError]] = []  # per file, in path order
    paths: list[str] = []
    todo: list[tuple[int, str, tuple[int, int, int]]] = []  # (index in items, path, stamp) to parse
    seen_paths: set[str] = set()
    for entry in _order_entries(folder):
        key, refused, st = _refusal(folder, entry)
        seen_paths.add(key)
        paths.append(key)
        if refused is not None or st is None:
            items.append([refused] if refused is not None else [])
            continue
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        hit = cache.entries.get(key) if cache is not None else None
        if hit is not None and hit[0] == stamp and (not verify or _still(key, hit[1])):
            items.append(hit[1])
        else:
            todo.append((len(items), key, stamp))
            items.append([])
    if workers is None:
        workers = _workers() if len(todo) > PARALLEL_MIN_FILES and _main_is_safe() else 1
    keys = [key for _, key, _ in todo]
    with _bulk(len(todo) > PARALLEL_MIN_FILES):
        if workers > 1 and len(todo) > 1:
            outcomes: Iterable[tuple[Order | list[OrderError], bool]] = _parse_parallel(keys, rules, min(workers, 8))
        else:
            outcomes = (_read_and_parse(key, rules) for key in keys)
        for (index, key, stamp), (item, cacheable) in zip(todo, outcomes, strict=True):
            items[index] = item
            if cache is not None and cacheable:
                cache.entries[key] = (stamp, item)
    parsed: list[Order] = []
    for key, item in zip(paths, items, strict=True):
        if isinstance(item, Order):
            parsed.append(item)
            result.warnings.extend(item.warnings)
        else:
            result.errors.extend(item)
            result.invalid_files.add(key)
    if cache is not None:
        for gone in set(cache.entries) - seen_paths:
            del cache.entries[gone]
    by_id: dict[str, list[Order]] = {}
    for order in parsed:
        by_id.setdefault(order.id, []).append(order)
    for order_id, group in sorted(by_id.items()):
        if len(group) == 1:
            result.orders[order_id] = group[0]
            continue
        for order in group:  # which one is meant is for a human to say: none of them is trusted
            others = ", ".join(o.path for o in group if o is not order)
            result.errors.append(OrderError(order.path, "id", f"duplicate id {order_id!r} (also in {others})"))
            result.invalid_files.add(order.path)
    result.errors.sort(key=lambda e: (e.path, e.line or 0))
    return result


def _still(key: str, item: Order | list[OrderError]) -> bool:
    """Does the file still hold the bytes `item` was parsed from? (An invalid file's outcome
    has no digest: it is parsed again, and invalid files are few.)"""
    if not isinstance(item, Order):
        return False
    try:
        return hashlib.sha256(read_order_file(Path(key))).hexdigest() == item.digest
    except (OSError, YamlError):
        return False


def stat_signature(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """A cheap fingerprint of the folder: the daemon polls it to notice edits within seconds."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return ()
    out = []
    for name in names:
        if name.endswith(ORDER_SUFFIXES):
            try:
                st = os.stat(folder / name)
            except OSError:
                # A dangling link or a loop appearing is a change too (refused by the loader).
                out.append((name, -1, -1))
                continue
            out.append((name, st.st_mtime_ns, st.st_size))
    return tuple(out)

