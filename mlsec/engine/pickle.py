"""mlsec's pickle engine: a symbolic pickle machine that never executes anything.

Why our own engine: scanners built on ``pickletools.genops`` or on regexes see imports but not
what is *called*, lose track of values that travel through the memo, stop at the first STOP,
give up on damaged streams, and materialize every byte string (a 1 GiB tensor costs 1 GiB of
RAM). This engine simulates the unpickler's stack, mark stack and memo with symbolic values:

* every global a stream can reach (GLOBAL, STACK_GLOBAL, INST, EXT1/2/4) is resolved to
  ``module.name`` — with Python 2 names mapped and dotted/dunder attribute chains examined;
* every call (REDUCE, NEWOBJ, NEWOBJ_EX, INST, OBJ) records its target and a short preview
  of its arguments, so evidence reads like ``posix.system('curl … | sh')``;
* allowlist first: a pickle is clean only if each global is on ``rules/pickle/safe.toml``;
  ``unsafe.toml`` entries are CRITICAL; anything else is HIGH when called, MEDIUM when only
  imported;
* large byte strings are skipped on the stream, not read, so memory stays flat;
* damage is a finding: what was seen before it is still reported.

The engine reads one pickle (up to STOP) per :meth:`PickleMachine.run`; callers decide what
follows (another pickle, joblib array data, legacy torch storages, trailing data).
"""

from __future__ import annotations

import _compat_pickle
import codecs
import functools
import io
import pickletools
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlsec import catalog
from mlsec.engine.context import DeadlineExceeded, Inspection
from mlsec.engine.stream import Stream, StreamError

# ---------------------------------------------------------------------------------------------
# Symbolic values
# ---------------------------------------------------------------------------------------------

_KEEP_ITEMS = 64        # items kept per container for previews and small-value logic
_SMALL_STR = 4096       # strings longer than this are kept only as their length
_LINE_LIMIT = 64 << 20  # protocol-0 argument lines
_SHORT_LINE = 4096


# The symbolic values below are created per opcode: plain slotted classes, not dataclasses,
# because they are mutable working state and dataclass creation costs start-up time.


class Global:
    """An imported ``module.name``."""

    __slots__ = ("module", "name", "offset", "opcode")

    def __init__(self, module: str, name: str, offset: int, opcode: str) -> None:
        self.module, self.name, self.offset, self.opcode = module, name, offset, opcode

    def __repr__(self) -> str:
        return f"Global({self.module!r}, {self.name!r}, {self.offset}, {self.opcode!r})"

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


class Blob:
    """A bytes/bytearray literal: its place in the stream, and its data when small enough."""

    __slots__ = ("data", "length", "offset")

    def __init__(self, offset: int, length: int, data: bytes | None) -> None:
        self.offset, self.length, self.data = offset, length, data


class Call:
    """The object produced by calling ``func`` (REDUCE/NEWOBJ/INST/OBJ)."""

    __slots__ = ("args", "func", "offset", "state")

    def __init__(self, func: Any, args: Any, offset: int, state: Any = None) -> None:
        self.func, self.args, self.offset, self.state = func, args, offset, state


class Persistent:
    """A persistent id (PERSID/BINPERSID): resolved by the loader, e.g. torch storages."""

    __slots__ = ("pid",)

    def __init__(self, pid: Any) -> None:
        self.pid = pid


class Container:
    """A tuple/list/dict/set; keeps the first items, counts the rest."""

    __slots__ = ("count", "items", "kind")

    def __init__(self, kind: str, items: list[Any] | None = None, count: int = 0) -> None:
        self.kind, self.items, self.count = kind, items if items is not None else [], count

    def add(self, *values: Any) -> None:
        for v in values:
            self.count += 1
            if len(self.items) < _KEEP_ITEMS:
                self.items.append(v)

    def as_dict(self) -> dict[Any, Any]:
        """Key/value pairs of a dict container whose keys are constants."""
        out = {}
        it = iter(self.items)
        for k, v in zip(it, it):
            if isinstance(k, (str, int, bytes, bool)) or k is None:
                out[k] = v
        return out


class LongText:
    """A text literal too long to keep (only its length is recorded)."""

    __slots__ = ("length",)

    def __init__(self, length: int) -> None:
        self.length = length


class Damage(Exception):
    """The stream is corrupt or truncated at ``offset``."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(message)
        self.offset = offset


class LimitHit(Exception):
    """A resource limit stopped the parse."""


def preview(value: Any, budget: int = 120) -> str:
    """Short, safe, printable rendering of a symbolic value for evidence."""

    def r(v: Any, depth: int) -> str:
        if depth > 4:
            return "…"
        if isinstance(v, Global):
            return v.qualname
        if isinstance(v, Call):
            return f"{r(v.func, depth + 1)}{r(v.args, depth + 1) if isinstance(v.args, Container) and v.args.kind == 'tuple' else '(…)'}"
        if isinstance(v, Blob):
            if v.data is not None and v.length <= 48:
                return repr(v.data)
            return f"<{v.length} bytes>"
        if isinstance(v, LongText):
            return f"<{v.length}-char str>"
        if isinstance(v, Persistent):
            return f"persistent_id({r(v.pid, depth + 1)})"
        if isinstance(v, Container):
            inner = ", ".join(r(i, depth + 1) for i in v.items[:8])
            if v.count > 8:
                inner += ", …"
            if v.kind == "tuple":
                return f"({inner}{',' if v.count == 1 else ''})"
            if v.kind == "list":
                return f"[{inner}]"
            if v.kind == "dict":
                pairs = list(zip(v.items[::2], v.items[1::2]))[:6]
                return "{" + ", ".join(f"{r(k, depth + 1)}: {r(x, depth + 1)}" for k, x in pairs) + "}"
            return "{" + inner + "}"
        if isinstance(v, str):
            return repr(v if len(v) <= 80 else v[:77] + "...")
        if v is None or isinstance(v, (int, float, bool)):
            return repr(v)
        return "?"

    text = r(value, 0)
    text = "".join(ch if ch.isprintable() else "\\x%02x" % (ord(ch) & 0xFF) for ch in text)
    return text if len(text) <= budget else text[: budget - 1] + "…"


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


@dataclass
class ImportSite:
    """Where and how a global was used in one pickle."""

    module: str
    name: str
    offset: int
    opcode: str
    called: bool = False
    call_offset: int | None = None
    call_args: str = ""


@dataclass
class PickleInfo:
    """What one run of the machine saw (one pickle, up to STOP or damage)."""

    start: int
    end: int = 0
    protocol: int = 0
    opcodes: int = 0
    stopped: bool = False
    result: Any = None
    imports: dict[str, ImportSite] = field(default_factory=dict)
    persistent_ids: list[Any] = field(default_factory=list)
    payloads: list[tuple[Global, Blob]] = field(default_factory=list)
    damage: Damage | None = None


# Hook signature for joblib-style inline data: called after BUILD on an object whose class is
# ``qualname``; it may consume bytes from the stream (array data, nested pickles).
BuildHook = Callable[["PickleMachine", Call, Any], None]

_PY2_NAMES = {
    "__builtin__": "builtins",
    "copy_reg": "copyreg",
    "cPickle": "pickle",
    "exceptions": "builtins",
}


def normalize(module: str, name: str) -> tuple[str, str]:
    """Map Python 2 spellings to what a Python 3 unpickler imports (fix_imports=True)."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    if module in _compat_pickle.IMPORT_MAPPING:
        return _compat_pickle.IMPORT_MAPPING[module], name
    return _PY2_NAMES.get(module, module), name


# ---------------------------------------------------------------------------------------------
# The machine
# ---------------------------------------------------------------------------------------------


class PickleMachine:
    """Simulates one pickle on ``stream``; report findings into ``insp``.

    ``member`` labels findings with the container member the stream came from;
    ``base_offset`` is added to stream offsets in evidence (for payloads inside payloads);
    ``build_hooks`` lets container formats handle data written inline after BUILD (joblib).
    """

    def __init__(
        self,
        stream: Stream,
        insp: Inspection,
        *,
        member: str | None = None,
        build_hooks: dict[str, BuildHook] | None = None,
    ) -> None:
        self.stream = stream
        self.insp = insp
        self.member = member
        self.lists = catalog.pickle_globals()
        self.build_hooks = build_hooks or {}
        self.kept_bytes = 0

    # -- helpers -------------------------------------------------------------------------------
    def _need(self, n: int, what: str) -> bytes:
        data = self.stream.read_exact(n)
        if data is None:
            raise Damage(f"truncated {what}", self.stream.tell())
        return data

    def _line(self, limit: int, what: str) -> bytes:
        line = self.stream.readline(limit)
        if not line.endswith(b"\n"):
            if len(line) >= limit:
                raise Damage(f"{what} argument longer than {limit} bytes", self.stream.tell())
            raise Damage(f"truncated {what} argument", self.stream.tell())
        return line[:-1]

    def _blob(self, length: int, kind: str) -> Blob:
        offset = self.stream.tell()
        remaining = self.stream.remaining()
        if remaining is not None and length > remaining:
            raise Damage(f"{kind} of {length} bytes runs past the end ({remaining} left)", offset)
        if length <= self.insp.limits.keep_bytes - self.kept_bytes:
            data = self._need(length, kind)
            self.kept_bytes += length
            return Blob(offset, length, data)
        if self.stream.skip(length) != length:
            raise Damage(f"truncated {kind}", offset)
        return Blob(offset, length, None)

    def _text(self, length: int, kind: str) -> str | LongText:
        offset = self.stream.tell()
        remaining = self.stream.remaining()
        if remaining is not None and length > remaining:
            raise Damage(f"{kind} of {length} bytes runs past the end", offset)
        if length > _SMALL_STR:
            if self.stream.skip(length) != length:
                raise Damage(f"truncated {kind}", offset)
            return LongText(length)
        return _utf8(self._need(length, kind), kind, offset)

    # -- globals -------------------------------------------------------------------------------
    def _global(self, info: PickleInfo, module: str, name: str, offset: int, opcode: str) -> Global:
        module, name = normalize(module, name)
        g = Global(module, name, offset, opcode)
        site = info.imports.get(g.qualname)
        if site is None:
            info.imports[g.qualname] = ImportSite(module, name, offset, opcode)
        return g

    def _note_call(self, info: PickleInfo, func: Any, args: Any, offset: int) -> None:
        if isinstance(func, Global):
            # EXT globals are reported as PICKLE-006 on sight and have no import site.
            site = info.imports.get(func.qualname)
            if site is not None and not site.called:
                site.called = True
                site.call_offset = offset
                site.call_args = preview(args)
            if self.lists.loads_payload(func.module, func.name) and isinstance(args, Container):
                first = args.items[0] if args.items else None
                if isinstance(first, Blob):
                    info.payloads.append((func, first))
        elif not isinstance(func, (Persistent,)):
            self.insp.add(
                "MLSEC-PICKLE-002",
                f"Pickle calls a computed object: {preview(func)}{preview(args)}",
                key=f"computed-call {preview(func, 60)}",
                member=self.member,
                offset=offset,
                evidence={"offset": str(offset), "callable": preview(func), "args": preview(args)},
            )

    # -- main loop -----------------------------------------------------------------------------
    def run(self) -> PickleInfo:
        """Simulate one pickle from the current position up to STOP (or damage)."""
        info = PickleInfo(start=self.stream.tell())
        try:
            self._run(info)
        except Damage as exc:
            info.damage = exc
        except (StreamError, DeadlineExceeded):
            # The container gave out under us: report what this pickle showed so far, then let
            # the container reader turn the stream error into its own finding.
            info.end = self.stream.tell()
            self.report(info)
            raise
        except LimitHit as exc:
            self.insp.add(
                "MLSEC-PICKLE-009",
                f"Pickle exceeds a resource limit: {exc}",
                key=f"limit {exc}",
                member=self.member,
                offset=self.stream.tell(),
                evidence={"limit": str(exc)},
            )
        info.end = self.stream.tell()
        self.report(info)
        return info

    def _run(self, info: PickleInfo) -> None:
        stream = self.stream
        limits = self.insp.limits
        stack: list[Any] = []
        marks: list[list[Any]] = []
        memo: dict[int, Any] = {}
        depth = 0

        def pop() -> Any:
            if not stack:
                raise Damage("stack underflow", offset)
            return stack.pop()

        def pop_mark() -> list[Any]:
            nonlocal stack, depth
            if not marks:
                raise Damage("MARK expected", offset)
            items = stack
            stack = marks.pop()
            depth -= 1
            return items

        def container(kind: str, items: list[Any]) -> Container:
            c = Container(kind)
            c.add(*items)
            return c

        while True:
            offset = stream.tell()
            code = stream.read(1)
            if not code:
                raise Damage("missing STOP opcode (stream ends early)", offset)
            info.opcodes += 1
            if info.opcodes > limits.max_opcodes:
                raise LimitHit(f"more than {limits.max_opcodes} opcodes")
            if info.opcodes & 0xFFF == 0:
                self.insp.check_time()
                if len(stack) + depth > limits.max_stack:
                    raise LimitHit(f"stack deeper than {limits.max_stack}")
            op = code[0]

            if op == 0x2E:  # STOP
                info.result = stack[-1] if stack else None
                if not stack:
                    raise Damage("STOP with an empty stack", offset)
                info.stopped = True
                return
            elif op == 0x80:  # PROTO
                info.protocol = self._need(1, "PROTO")[0]
                if info.protocol > 5:
                    raise Damage(f"unsupported pickle protocol {info.protocol}", offset)
            elif op == 0x95:  # FRAME
                self._need(8, "FRAME")
            elif op == 0x28:  # MARK
                marks.append(stack)
                stack = []
                depth += 1
                if depth > limits.max_stack:
                    raise LimitHit(f"more than {limits.max_stack} nested marks")
            elif op == 0x30:  # POP
                if stack:
                    stack.pop()
                else:
                    pop_mark()
            elif op == 0x31:  # POP_MARK
                pop_mark()
            elif op == 0x32:  # DUP
                v = pop()
                stack.extend((v, v))
            # -- constants --
            elif op == 0x4E:  # NONE
                stack.append(None)
            elif op == 0x88:
                stack.append(True)
            elif op == 0x89:
                stack.append(False)
            elif op == 0x4B:  # BININT1
                stack.append(self._need(1, "BININT1")[0])
            elif op == 0x4D:  # BININT2
                stack.append(struct.unpack("<H", self._need(2, "BININT2"))[0])
            elif op == 0x4A:  # BININT
                stack.append(struct.unpack("<i", self._need(4, "BININT"))[0])
            elif op == 0x49:  # INT
                line = self._line(_SHORT_LINE, "INT")
                try:
                    stack.append(True if line == b"01" else False if line == b"00" else int(line))
                except ValueError:
                    raise Damage(f"bad INT argument {line[:20]!r}", offset) from None
            elif op == 0x4C:  # LONG
                line = self._line(_LINE_LIMIT, "LONG").rstrip(b"L")
                try:
                    stack.append(int(line) if len(line) < 4300 else 0)
                except ValueError:
                    raise Damage("bad LONG argument", offset) from None
            elif op == 0x8A:  # LONG1
                n = self._need(1, "LONG1")[0]
                stack.append(int.from_bytes(self._need(n, "LONG1"), "little", signed=True))
            elif op == 0x8B:  # LONG4
                n = struct.unpack("<i", self._need(4, "LONG4"))[0]
                if n < 0:
                    raise Damage("negative LONG4 length", offset)
                self._blob(n, "LONG4")
                stack.append(0)
            elif op == 0x46:  # FLOAT
                line = self._line(_SHORT_LINE, "FLOAT")
                try:
                    stack.append(float(line))
                except ValueError:
                    raise Damage("bad FLOAT argument", offset) from None
            elif op == 0x47:  # BINFLOAT
                stack.append(struct.unpack(">d", self._need(8, "BINFLOAT"))[0])
            # -- strings and bytes --
            elif op == 0x53:  # STRING (repr-quoted)
                line = self._line(_LINE_LIMIT, "STRING")
                if len(line) < 2 or line[0] != line[-1] or line[:1] not in (b"'", b'"'):
                    raise Damage("STRING argument is not quoted", offset)
                try:
                    stack.append(codecs.escape_decode(line[1:-1])[0].decode("latin-1"))
                except Exception:
                    raise Damage("bad STRING escape", offset) from None
            elif op == 0x54:  # BINSTRING
                n = struct.unpack("<i", self._need(4, "BINSTRING"))[0]
                if n < 0:
                    raise Damage("negative BINSTRING length", offset)
                b = self._blob(n, "BINSTRING")
                stack.append(b.data.decode("latin-1") if b.data is not None and n <= _SMALL_STR else b)
            elif op == 0x55:  # SHORT_BINSTRING
                n = self._need(1, "SHORT_BINSTRING")[0]
                stack.append(self._need(n, "SHORT_BINSTRING").decode("latin-1"))
            elif op == 0x56:  # UNICODE
                line = self._line(_LINE_LIMIT, "UNICODE")
                stack.append(line.decode("raw-unicode-escape", "replace"))
            elif op == 0x58:  # BINUNICODE
                n = struct.unpack("<I", self._need(4, "BINUNICODE"))[0]
                stack.append(self._text(n, "BINUNICODE"))
            elif op == 0x8C:  # SHORT_BINUNICODE
                n = self._need(1, "SHORT_BINUNICODE")[0]
                stack.append(_utf8(self._need(n, "SHORT_BINUNICODE"), "SHORT_BINUNICODE", offset))
            elif op == 0x8D:  # BINUNICODE8
                n = struct.unpack("<Q", self._need(8, "BINUNICODE8"))[0]
                stack.append(self._text(n, "BINUNICODE8"))
            elif op == 0x42:  # BINBYTES
                n = struct.unpack("<I", self._need(4, "BINBYTES"))[0]
                stack.append(self._blob(n, "BINBYTES"))
            elif op == 0x43:  # SHORT_BINBYTES
                n = self._need(1, "SHORT_BINBYTES")[0]
                stack.append(self._blob(n, "SHORT_BINBYTES"))
            elif op == 0x8E:  # BINBYTES8
                n = struct.unpack("<Q", self._need(8, "BINBYTES8"))[0]
                stack.append(self._blob(n, "BINBYTES8"))
            elif op == 0x96:  # BYTEARRAY8
                n = struct.unpack("<Q", self._need(8, "BYTEARRAY8"))[0]
                stack.append(self._blob(n, "BYTEARRAY8"))
            elif op == 0x97:  # NEXT_BUFFER (out-of-band buffer supplied by the loader)
                stack.append(Blob(offset, 0, b""))
            elif op == 0x98:  # READONLY_BUFFER
                pass
            # -- containers --
            elif op == 0x29:  # EMPTY_TUPLE
                stack.append(container("tuple", []))
            elif op == 0x74:  # TUPLE
                items = pop_mark()  # before touching `stack`: pop_mark rebinds it
                stack.append(container("tuple", items))
            elif op in (0x85, 0x86, 0x87):  # TUPLE1/2/3
                n = op - 0x84
                if len(stack) < n:
                    raise Damage("stack underflow in TUPLE", offset)
                items = stack[-n:]
                del stack[-n:]
                stack.append(container("tuple", items))
            elif op == 0x5D:  # EMPTY_LIST
                stack.append(container("list", []))
            elif op == 0x6C:  # LIST
                items = pop_mark()  # before touching `stack`: pop_mark rebinds it
                stack.append(container("list", items))
            elif op == 0x7D:  # EMPTY_DICT
                stack.append(container("dict", []))
            elif op == 0x64:  # DICT
                items = pop_mark()
                if len(items) % 2:
                    raise Damage("odd number of items for DICT", offset)
                stack.append(container("dict", items))
            elif op == 0x8F:  # EMPTY_SET
                stack.append(container("set", []))
            elif op == 0x91:  # FROZENSET
                items = pop_mark()  # before touching `stack`: pop_mark rebinds it
                stack.append(container("set", items))
            elif op == 0x61:  # APPEND
                v = pop()
                target = stack[-1] if stack else None
                if target is None and not stack:
                    raise Damage("APPEND with an empty stack", offset)
                if isinstance(target, Container):
                    target.add(v)
            elif op in (0x65, 0x90):  # APPENDS, ADDITEMS
                items = pop_mark()
                if not stack:
                    raise Damage("APPENDS with an empty stack", offset)
                if isinstance(stack[-1], Container):
                    stack[-1].add(*items)
            elif op == 0x73:  # SETITEM
                v = pop()
                k = pop()
                if not stack:
                    raise Damage("SETITEM with an empty stack", offset)
                if isinstance(stack[-1], Container):
                    stack[-1].add(k, v)
            elif op == 0x75:  # SETITEMS
                items = pop_mark()
                if len(items) % 2:
                    raise Damage("odd number of items for SETITEMS", offset)
                if not stack:
                    raise Damage("SETITEMS with an empty stack", offset)
                if isinstance(stack[-1], Container):
                    stack[-1].add(*items)
            # -- memo --
            elif op in (0x70, 0x71, 0x72, 0x94):  # PUT, BINPUT, LONG_BINPUT, MEMOIZE
                if op == 0x70:
                    try:
                        idx = int(self._line(_SHORT_LINE, "PUT"))
                    except ValueError:
                        raise Damage("bad PUT index", offset) from None
                elif op == 0x71:
                    idx = self._need(1, "BINPUT")[0]
                elif op == 0x72:
                    idx = struct.unpack("<I", self._need(4, "LONG_BINPUT"))[0]
                else:
                    idx = len(memo)
                if not stack:
                    raise Damage("memoize with an empty stack", offset)
                memo[idx] = stack[-1]
                if len(memo) > limits.max_memo:
                    raise LimitHit(f"more than {limits.max_memo} memo entries")
            elif op in (0x67, 0x68, 0x6A):  # GET, BINGET, LONG_BINGET
                if op == 0x67:
                    try:
                        idx = int(self._line(_SHORT_LINE, "GET"))
                    except ValueError:
                        raise Damage("bad GET index", offset) from None
                elif op == 0x68:
                    idx = self._need(1, "BINGET")[0]
                else:
                    idx = struct.unpack("<I", self._need(4, "LONG_BINGET"))[0]
                if idx not in memo:
                    raise Damage(f"memo index {idx} read before it was written", offset)
                stack.append(memo[idx])
            # -- imports and calls --
            elif op == 0x63:  # GLOBAL
                module = self._line(_SHORT_LINE, "GLOBAL").decode("utf-8", "replace")
                name = self._line(_SHORT_LINE, "GLOBAL").decode("utf-8", "replace")
                stack.append(self._global(info, module, name, offset, "GLOBAL"))
            elif op == 0x93:  # STACK_GLOBAL
                name = pop()
                module = pop()
                if isinstance(module, str) and isinstance(name, str):
                    stack.append(self._global(info, module, name, offset, "STACK_GLOBAL"))
                else:
                    self.insp.add(
                        "MLSEC-PICKLE-004",
                        f"STACK_GLOBAL with computed operands: module={preview(module)} name={preview(name)}",
                        key=f"stack-global {preview(module, 60)} {preview(name, 60)}",
                        member=self.member,
                        offset=offset,
                        evidence={"offset": str(offset), "module": preview(module), "name": preview(name)},
                    )
                    stack.append(Call(Global("?", "?", offset, "STACK_GLOBAL"), None, offset))
            elif op in (0x82, 0x83, 0x84):  # EXT1/2/4
                size = {0x82: 1, 0x83: 2, 0x84: 4}[op]
                ext = int.from_bytes(self._need(size, "EXT"), "little", signed=(size == 4))
                self.insp.add(
                    "MLSEC-PICKLE-006",
                    f"Pickle imports through copyreg extension code {ext}",
                    key=f"ext {ext}",
                    member=self.member,
                    offset=offset,
                    evidence={"offset": str(offset), "extension_code": str(ext)},
                )
                stack.append(Global("copyreg", f"<extension {ext}>", offset, "EXT"))
            elif op == 0x69:  # INST
                module = self._line(_SHORT_LINE, "INST").decode("utf-8", "replace")
                name = self._line(_SHORT_LINE, "INST").decode("utf-8", "replace")
                cls = self._global(info, module, name, offset, "INST")
                args = container("tuple", pop_mark())
                self._note_call(info, cls, args, offset)
                stack.append(Call(cls, args, offset))
            elif op == 0x6F:  # OBJ
                items = pop_mark()
                if not items:
                    raise Damage("OBJ without a class", offset)
                cls, args = items[0], container("tuple", items[1:])
                self._note_call(info, cls, args, offset)
                stack.append(Call(cls, args, offset))
            elif op == 0x52:  # REDUCE
                args = pop()
                func = pop()
                self._note_call(info, func, args, offset)
                stack.append(Call(func, args, offset))
            elif op == 0x81:  # NEWOBJ
                args = pop()
                cls = pop()
                self._note_call(info, cls, args, offset)
                stack.append(Call(cls, args, offset))
            elif op == 0x92:  # NEWOBJ_EX
                kwargs = pop()
                args = pop()
                cls = pop()
                self._note_call(info, cls, args, offset)
                stack.append(Call(cls, args, offset))
                del kwargs
            elif op == 0x62:  # BUILD
                state = pop()
                if not stack:
                    raise Damage("BUILD with an empty stack", offset)
                obj = stack[-1]
                if isinstance(obj, Global):
                    self.insp.add(
                        "MLSEC-PICKLE-008",
                        f"BUILD sets state on imported object {obj.qualname}: {preview(state)}",
                        key=f"build-global {obj.qualname}",
                        member=self.member,
                        offset=offset,
                        evidence={"offset": str(offset), "target": obj.qualname, "state": preview(state)},
                    )
                elif isinstance(obj, Call):
                    obj.state = state
                    made_by = _class_of(obj)
                    hook = self.build_hooks.get(made_by.qualname) if made_by is not None else None
                    if hook is not None:
                        hook(self, obj, state)
            elif op == 0x50:  # PERSID
                pid = self._line(_SHORT_LINE, "PERSID").decode("ascii", "replace")
                info.persistent_ids.append(pid)
                stack.append(Persistent(pid))
            elif op == 0x51:  # BINPERSID
                pid = pop()
                info.persistent_ids.append(pid)
                stack.append(Persistent(pid))
            else:
                raise Damage(f"unknown opcode 0x{op:02x}", offset)

    # -- reporting -----------------------------------------------------------------------------
    def report(self, info: PickleInfo) -> None:
        """Turn what one run saw into findings (imports, damage)."""
        lists = self.lists
        for site in info.imports.values():
            qual = f"{site.module}.{site.name}"
            evidence = {"offset": str(site.offset), "opcode": site.opcode, "global": qual}
            if site.called:
                evidence["call"] = f"{qual}{site.call_args}"
                evidence["call_offset"] = str(site.call_offset)
            reason = _unsafe_reason(lists, site.module, site.name)
            call_text = f" and calls it: {qual}{site.call_args}" if site.called else ""
            if reason is not None:
                self.insp.add(
                    "MLSEC-PICKLE-001",
                    f"Imports {qual} ({reason}){call_text}",
                    key=f"GLOBAL {qual}",
                    member=self.member,
                    offset=site.offset,
                    evidence=evidence | {"reason": reason},
                )
            elif _dunder_chain(site.name):
                self.insp.add(
                    "MLSEC-PICKLE-004",
                    f"Import walks dunder attributes: {qual}",
                    key=f"GLOBAL {qual}",
                    member=self.member,
                    offset=site.offset,
                    evidence=evidence,
                )
            elif lists.is_safe(site.module, site.name):
                continue
            elif site.called:
                self.insp.add(
                    "MLSEC-PICKLE-002",
                    f"Calls {qual}, which is not on the allowlist{call_text.replace(' and calls it', '')}",
                    key=f"GLOBAL {qual}",
                    member=self.member,
                    offset=site.offset,
                    evidence=evidence,
                )
            else:
                self.insp.add(
                    "MLSEC-PICKLE-003",
                    f"Imports {qual}, which is not on the allowlist",
                    key=f"GLOBAL {qual}",
                    member=self.member,
                    offset=site.offset,
                    evidence=evidence,
                )
        if info.damage is not None:
            self.insp.add(
                "MLSEC-PICKLE-005",
                f"Pickle stream is damaged: {info.damage} (after {info.opcodes} opcodes)",
                key="damage",
                member=self.member,
                offset=info.damage.offset,
                evidence={"offset": str(info.damage.offset), "error": str(info.damage)},
            )


def _utf8(raw: bytes, what: str, offset: int) -> str:
    """Decode like the unpickler does; invalid UTF-8 is damage (the real loader raises too)."""
    try:
        return raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        raise Damage(f"{what} is not valid UTF-8", offset) from None


_CONSTRUCTOR_HELPERS = ("copyreg._reconstructor", "copyreg.__newobj__", "copyreg.__newobj_ex__")


def _class_of(obj: Call) -> Global | None:
    """The class an object was made from, seeing through copyreg's constructor helpers."""
    func = obj.func
    if not isinstance(func, Global):
        return None
    if func.qualname in _CONSTRUCTOR_HELPERS and isinstance(obj.args, Container) and obj.args.items:
        first = obj.args.items[0]
        return first if isinstance(first, Global) else None
    return func


def _dunder_chain(name: str) -> bool:
    """Does a (dotted) name walk through dunder attributes such as ``__dict__`` or ``__globals__``?

    ``find_class`` resolves dotted names attribute by attribute, so ``builtins.__dict__.get``
    reaches any builtin. A bare dunder name (``pkg.__version__``) is an ordinary import.
    """
    parts = name.split(".")
    if len(parts) > 1 and any(p.startswith("__") and p.endswith("__") and len(p) > 4 for p in parts):
        return True
    return any(
        p in ("__globals__", "__builtins__", "__subclasses__", "__code__", "__getattribute__")
        for p in parts
    )


def _unsafe_reason(lists: catalog.GlobalLists, module: str, name: str) -> str | None:
    """Deny-list check for ``module.name`` and for every prefix of a dotted name.

    ``find_class('torch', 'serialization.load')`` resolves an attribute chain, so each step
    (``torch.serialization`` then ``load``) is checked as if it were imported directly.
    """
    reason = lists.unsafe_reason(module, name)
    if reason is not None:
        return reason
    parts = name.split(".")
    if len(parts) == 1:
        return None
    # Every step of the walk, seen both from the full path and as a re-export: ``uuid.os.system``
    # is ``os.system`` reached through ``uuid``'s module attribute ``os``.
    chain = [*module.split("."), *parts]
    if len(chain) > _MAX_CHAIN:
        # The pairs below are quadratic in names and their joins cubic in text: a 4 KB GLOBAL
        # line "a.a.a..." took minutes, past any --timeout. No real class sits this deep.
        return f"attribute chain of {len(chain)} names (more than {_MAX_CHAIN}, not checked step by step)"
    by_root = _unsafe_by_root(lists)
    first = len(module.split("."))
    for i in range(first, len(chain)):
        for j in (0, *range(first, i)):
            # A denylist entry matches only modules under its own top-level name.
            candidates = by_root.get(chain[j], ())
            mod = ".".join(chain[j:i]) if candidates else ""
            reason = next((p.reason for p in candidates if p.matches(mod, chain[i])), None)
            if reason is not None:
                return reason
    return None


_MAX_CHAIN = 16  # module + attribute names checked step by step (at most ~130 pairs)


@functools.cache
def _unsafe_by_root(lists: catalog.GlobalLists) -> dict[str, tuple[catalog.GlobalPattern, ...]]:
    """The denylist grouped by the top-level name of its module pattern, in list order."""
    out: dict[str, list[catalog.GlobalPattern]] = {}
    for p in lists.unsafe:
        out.setdefault(p.module.split(".", 1)[0], []).append(p)
    return {root: tuple(ps) for root, ps in out.items()}


def looks_like_pickle(head: bytes) -> bool:
    """Sniff: do these leading bytes start a plausible pickle (any protocol)?

    Only protocol 2+ writers emit PROTO, and the loader accepts any opcode first (``PROTO 0``,
    ``NEWTRUE POP``, a bare ``FRAME``...), so there is no magic to trust: the prefix is run
    through the symbolic machine and accepted when it parses cleanly up to STOP or up to the
    end of the sniffed bytes. Text fails fast (a stray byte is an unknown opcode, a bare word
    is a malformed INST/GLOBAL line, a leading digit pops an empty stack).
    """
    if len(head) >= 2 and head[0] == 0x80 and head[1] <= 5:
        return True
    if not head or head[0] not in _OPCODE_BYTES:
        return False
    if head[0] == 0x63:  # GLOBAL: module and name must look like identifiers
        lines = head[1:].split(b"\n", 2)
        return len(lines) >= 3 and all(_ident(x) for x in lines[:2])
    from mlsec.engine.stream import bytes_stream

    probe = Inspection(path="<sniff>", scanner="sniff")
    machine = PickleMachine(bytes_stream(head), probe)
    info = PickleInfo(start=0)
    try:
        machine._run(info)
    except Damage as exc:
        # Running out of the sniffed prefix is fine; any other damage means "not a pickle".
        if not any(m in str(exc) for m in ("truncated", "missing STOP", "runs past the end")):
            return False
        if info.imports or probe.findings:
            return True  # it imports something before the head ends: inspect it, whatever it is
        return info.opcodes >= 2 and not _text_posing_as_opcodes(head)
    except Exception:
        return False
    if not info.stopped:
        return False
    # A pickle that imports nothing cannot run code; if it also reads like text that merely
    # parses (b"Git 1.7.12" is BINFLOAT, DUP, STOP) it is text.
    return bool(info.imports or probe.findings) or (info.opcodes >= 2 and not _text_posing_as_opcodes(head))


# Opcodes a protocol-0 (text) pickle never contains.
_BINARY_OPCODES = frozenset(op.code.encode("latin-1")[0] for op in pickletools.opcodes if op.proto >= 1)
_NUMERIC_LINE_OPCODES = frozenset(b"ILF")
_NUMERIC_TEXT = frozenset(b"0123456789+-.eEL_xXabcdefABCDEFnNiI \t\r")


def _text_posing_as_opcodes(head: bytes) -> bool:
    """Is this a text file whose first bytes merely happen to parse as opcodes?

    ``Copyright ...`` is SHORT_BINBYTES, ``MATLAB 5.0`` is BININT2 then a LONG line. Protocol-0
    pickles are text too, but only use line-oriented opcodes with numeric or repr arguments;
    text that needs a length-prefixed binary opcode, or whose numeric line is not a number,
    is text. Only consulted when the head ran out before STOP and imported nothing.
    """
    codes = []
    buf = io.BytesIO(head)
    last = 0  # where the opcode that ran out starts
    try:
        for op, _arg, _pos in pickletools.genops(buf):
            codes.append(op.code.encode("latin-1")[0])
            last = buf.tell()
    except ValueError:
        pass
    if b"\0" not in head and any(code in _BINARY_OPCODES for code in codes):
        return True
    # The opcode that ran out: a numeric line that is not a number is prose.
    if last < len(head) and head[last] in _NUMERIC_LINE_OPCODES:
        return not set(head[last + 1 :]) <= _NUMERIC_TEXT
    return False


# Every byte the unpickler accepts as an opcode (protocols 0-5).
_OPCODE_BYTES = frozenset(b"(.012FIJKLMNPQRSTUVXabcdeghijlopqrstu}])\x80\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x8b"
                          b"\x8c\x8d\x8e\x8f\x90\x91\x92\x93\x94\x95\x96\x97\x98BCG")


def _ident(raw: bytes) -> bool:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return False
    return bool(text) and all(p.isidentifier() for p in text.split("."))
