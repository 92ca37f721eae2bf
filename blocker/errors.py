"""The one root of every error blocker raises on purpose.

Why one root: the CLI's error hook and the daemon's loop need a single `except BlockerError` to tell
"a problem we can explain in one line" (exit 1/2/4/5, a log line, an alert) from a bug (exit 70, a
crash log with the traceback). Modelled on dnspython's `DNSException`: a class carries a message
template (`fmt`) and the fields it names, so callers raise `OrderFileError(file=..., key=..., line=...)`
and every sink (terminal, log, audit, `/healthz`) prints the same words. Messages are escaped by the
sinks (`blocker.textsafe.printable`), never here, so the raw fields stay available to code.
"""

from __future__ import annotations

from typing import Any, ClassVar


class BlockerError(Exception):
    """An expected failure with a one-line, user-facing message.

    Raise with a plain message (`BlockerError("orders folder /x does not exist")`) or with the fields
    of the class's `fmt` template (`ConfigError(file="a.yaml", key="http.listen", line=3, msg="...")`).
    `file`, `key` and `line` are kept as attributes (None when not given) so a caller can point at
    the place without parsing the text.
    """

    fmt: ClassVar[str | None] = None
    supp_kwargs: ClassVar[frozenset[str]] = frozenset()

    file: str | None
    key: str | None
    line: int | None

    def __init__(self, *args: object, **kwargs: Any) -> None:
        unknown = set(kwargs) - self._allowed_kwargs()
        if unknown:
            raise TypeError(f"{type(self).__name__} got unexpected keyword arguments {sorted(unknown)}")
        self.kwargs = kwargs
        self.file = kwargs.get("file")
        self.key = kwargs.get("key")
        self.line = kwargs.get("line")
        if args or not kwargs:
            self.msg = str(args[0]) if args else (self.__doc__ or type(self).__name__).strip().splitlines()[0]
            super().__init__(*args)
        else:
            self.msg = self._fmt_kwargs(kwargs)
            super().__init__(self.msg)

    @classmethod
    def _allowed_kwargs(cls) -> frozenset[str]:
        return frozenset({"file", "key", "line", "msg"}) | cls.supp_kwargs

    def _fmt_kwargs(self, kwargs: dict[str, Any]) -> str:
        if self.fmt is None:
            return where(kwargs.get("file"), kwargs.get("key"), kwargs.get("line"), str(kwargs.get("msg", "")))
        return self.fmt.format(**{k: kwargs.get(k, "") for k in self._allowed_kwargs()})

    def __str__(self) -> str:
        return self.msg


def where(file: str | None, key: str | None, line: int | None, msg: str) -> str:
    """`FILE: key: message (line N)`: the one shape every located error line takes."""
    head = ": ".join(part for part in (file, key) if part)
    text = f"{head}: {msg}" if head else msg
    return f"{text} (line {line})" if line else text
