"""One error root: every exception class blocker defines derives from `BlockerError`.

The CLI's hook and the daemon tell "a problem we explain in one line" from a bug by that one base
class, so a new error class that forgets it would turn a user's mistake into exit 70 and a crash
log. Checked over every module of the package, not a list kept by hand.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import blocker
from blocker.errors import BlockerError, where


def _exception_classes() -> list[type[BaseException]]:
    found = []
    for info in pkgutil.walk_packages(blocker.__path__, "blocker."):
        if info.name == "blocker.__main__":
            continue
        module = importlib.import_module(info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == module.__name__:
                found.append(value)
    return found


def test_every_exception_class_of_the_package_derives_from_blocker_error() -> None:
    classes = _exception_classes()
    assert len(classes) >= 12  # the walk found the package's errors (ConfigError, PublishError, ...)
    outside = [f"{c.__module__}.{c.__qualname__}" for c in classes
               if not issubclass(c, BlockerError) and not c.__name__.startswith("_")]
    assert outside == []


def test_located_errors_name_file_key_and_line_in_one_shape() -> None:
    class Sample(BlockerError):
        pass

    error = Sample(file="orders/a.yaml", key="duration", line=7, msg="expected a duration")
    assert str(error) == "orders/a.yaml: duration: expected a duration (line 7)"
    assert (error.file, error.key, error.line) == ("orders/a.yaml", "duration", 7)
    assert str(Sample("plain words")) == "plain words" and Sample("x").file is None
    assert where(None, None, None, "m") == "m"
