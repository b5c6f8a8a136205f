"""Static decoding of self-extracting wrappers: `exec(L.decompress(B.b85decode("...")))` and friends.

Nothing is executed. The argument of `exec(...)`/`eval(...)`/`compile(...)` is evaluated by a tiny interpreter that
knows only pure, bounded functions: lzma (raw LZMA2/xz/alone), zlib, gzip, bz2, base85/base64/ascii85/base32/hex,
`.decode()/.encode()`, adjacent and `+`-concatenated string literals, `bytes.fromhex`, module-level string constants.
Decompression is capped (`max_bytes`), so a decompression bomb yields a `DecodeError`, never memory exhaustion.
Wrappers may nest: the decoded source is decoded again (`max_depth` levels).
"""

from __future__ import annotations

import base64
import binascii
import bz2
import lzma
import posixpath
import zlib
from dataclasses import dataclass

import libcst as cst

from auditor.cstwalk import dotted, walk

MAX_DECODED_BYTES = 8 * 1024 * 1024
MAX_TOTAL_DECODED_BYTES = 24 * 1024 * 1024  # every decompression in one submission's nesting tree together
MAX_DECODED_UNITS = 32  # decoded payloads in one submission's nesting tree
MAX_DEPTH = 6
_CHUNK = 64 * 1024


class DecodeError(Exception):
    """The wrapper could not be decoded statically (unknown function, corrupt payload, size cap exceeded)."""


class Budget:
    """Decoding budget shared by a whole nesting tree: bytes every decompression produces (intermediate layers
    included) and the number of decoded payloads. A 16 KB tree of nested wrappers cannot decode gigabytes."""

    def __init__(self, total_bytes: int = MAX_TOTAL_DECODED_BYTES, units: int = MAX_DECODED_UNITS):
        self.bytes_left = total_bytes
        self.total_bytes = total_bytes
        self.units_left = units
        self.total_units = units

    def cap(self, per_call: int) -> int:
        return max(0, min(per_call, self.bytes_left))

    def charge(self, n: int) -> None:
        self.bytes_left -= n
        if self.bytes_left < 0:
            raise DecodeError(f"decoded payloads exceed the {self.total_bytes}-byte total for one submission")


@dataclass
class Decoded:
    source: str  # decoded Python source
    line: int  # 1-based line of the exec(...) in the wrapper
    col: int
    layers: list  # e.g. ["b85decode", "lzma(raw)"]
    blob: bool = False  # not exec'd here: a decoded module-level constant (written to files and run from there?)


def _bounded_stream(decomp, data: bytes, max_bytes: int, what: str) -> bytes:
    out = bytearray()
    buf = data
    while True:
        chunk = decomp.decompress(buf, max_length=_CHUNK)
        buf = b""
        out += chunk
        if len(out) > max_bytes:
            raise DecodeError(f"{what} output exceeds the {max_bytes}-byte cap (decompression bomb?)")
        if decomp.eof:
            return bytes(out)
        if decomp.needs_input:
            raise DecodeError(f"{what} payload is truncated")


def lzma_decompress(data: bytes, fmt=None, filters=None, max_bytes: int = MAX_DECODED_BYTES) -> bytes:
    try:
        if fmt == lzma.FORMAT_RAW:
            d = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=filters or [{"id": lzma.FILTER_LZMA2}])
        else:
            d = lzma.LZMADecompressor(format=fmt if fmt is not None else lzma.FORMAT_AUTO)
        return _bounded_stream(d, data, max_bytes, "lzma")
    except lzma.LZMAError as exc:
        raise DecodeError(f"lzma payload is corrupt: {exc}") from None


def zlib_decompress(data: bytes, wbits: int = 15, max_bytes: int = MAX_DECODED_BYTES) -> bytes:
    try:
        d = zlib.decompressobj(wbits)
        out = bytearray()
        buf = data
        while True:
            chunk = d.decompress(buf, _CHUNK)
            out += chunk
            if len(out) > max_bytes:
                raise DecodeError(f"zlib output exceeds the {max_bytes}-byte cap (decompression bomb?)")
            buf = d.unconsumed_tail
            if d.eof or (not chunk and not buf):
                break
        return bytes(out)
    except zlib.error as exc:
        raise DecodeError(f"zlib payload is corrupt: {exc}") from None


def bz2_decompress(data: bytes, max_bytes: int = MAX_DECODED_BYTES) -> bytes:
    try:
        return _bounded_stream(bz2.BZ2Decompressor(), data, max_bytes, "bz2")
    except (OSError, ValueError) as exc:
        raise DecodeError(f"bz2 payload is corrupt: {exc}") from None


def brotli_decompress(data: bytes, max_bytes: int = MAX_DECODED_BYTES) -> bytes:
    try:
        import brotli
    except ImportError:
        raise DecodeError("brotli payload, but the brotli module is not installed") from None
    try:
        d = brotli.Decompressor()
        try:
            out = bytearray(d.process(data, output_buffer_limit=_CHUNK))
        except TypeError:  # brotli < 1.2 cannot bound the output; the isolated child's memory limit still holds
            out = bytearray(brotli.decompress(data))
            if len(out) > max_bytes:
                raise DecodeError(f"brotli output exceeds the {max_bytes}-byte cap (decompression bomb?)") from None
            return bytes(out)
        while not d.is_finished():
            if len(out) > max_bytes:
                raise DecodeError(f"brotli output exceeds the {max_bytes}-byte cap (decompression bomb?)")
            chunk = d.process(b"", output_buffer_limit=_CHUNK)
            if not chunk and d.can_accept_more_data():
                raise DecodeError("brotli payload is truncated")
            out += chunk
        if len(out) > max_bytes:
            raise DecodeError(f"brotli output exceeds the {max_bytes}-byte cap (decompression bomb?)")
        return bytes(out)
    except brotli.error as exc:
        raise DecodeError(f"brotli payload is corrupt: {exc}") from None


# --------------------------------------------------------------------------------------------------------------
# The interpreter


@dataclass(frozen=True)
class _FsPath:
    """A path derived from `__file__`, relative to the submission folder ("" is the folder itself)."""

    rel: str


@dataclass(frozen=True)
class _Opened:
    path: _FsPath
    binary: bool


def _fs_join(base: _FsPath, *parts) -> _FsPath:
    if not all(isinstance(p, str) for p in parts):
        raise DecodeError("path join of non-strings")
    rel = posixpath.normpath(posixpath.join(base.rel or ".", *parts))
    if rel.startswith("/") or rel == ".." or rel.startswith("../"):
        raise DecodeError("the payload is read from outside the submission folder")
    return _FsPath("" if rel == "." else rel)


class _Env:
    def __init__(self, module: cst.Module, max_bytes: int, budget: Budget | None = None, file_rel: str | None = None,
                 read_file=None):
        self.budget = budget or Budget()
        self.max_bytes = max_bytes
        self.file_rel = file_rel  # `__file__` of the code (the wrapper's file for decoded code)
        self.read_file = read_file  # rel -> bytes of a regular file in the submission (DecodeError when refused)
        self.aliases: dict[str, str] = {}  # local name -> module or module.attr
        self.consts: dict[str, cst.BaseExpression] = {}
        for stmt in module.body:
            if not isinstance(stmt, cst.SimpleStatementLine):
                continue
            for small in stmt.body:
                if isinstance(small, cst.Import):
                    for alias in small.names:
                        full = dotted(alias.name)
                        local = (
                            alias.asname.name.value
                            if alias.asname and isinstance(alias.asname.name, cst.Name)
                            else full.split(".")[0]
                        )
                        self.aliases[local] = full if alias.asname else full.split(".")[0]
                elif (
                    isinstance(small, cst.ImportFrom)
                    and small.module is not None
                    and not isinstance(small.names, cst.ImportStar)
                ):
                    mod = dotted(small.module)
                    for alias in small.names:
                        name = dotted(alias.name)
                        local = (
                            alias.asname.name.value
                            if alias.asname and isinstance(alias.asname.name, cst.Name)
                            else name
                        )
                        self.aliases[local] = f"{mod}.{name}"
                elif (
                    isinstance(small, cst.Assign)
                    and len(small.targets) == 1
                    and isinstance(small.targets[0].target, cst.Name)
                ):
                    self.consts[small.targets[0].target.value] = small.value

    def charged(self, data: bytes) -> bytes:
        self.budget.charge(len(data))
        return data

    def resolve(self, node: cst.BaseExpression) -> str | None:
        """Dotted name of a function reference with import aliases resolved (`L.decompress` -> `lzma.decompress`)."""
        if isinstance(node, cst.Name):
            return self.aliases.get(node.value, node.value)
        if isinstance(node, cst.Attribute):
            base = self.resolve(node.value)
            return f"{base}.{node.attr.value}" if base else None
        return None


_LZMA_CONSTS = {
    "lzma.FORMAT_RAW": lzma.FORMAT_RAW,
    "lzma.FORMAT_XZ": lzma.FORMAT_XZ,
    "lzma.FORMAT_ALONE": lzma.FORMAT_ALONE,
    "lzma.FORMAT_AUTO": lzma.FORMAT_AUTO,
    "lzma.FILTER_LZMA2": lzma.FILTER_LZMA2,
    "lzma.FILTER_LZMA1": lzma.FILTER_LZMA1,
    "lzma.FILTER_DELTA": lzma.FILTER_DELTA,
    "lzma.FILTER_X86": lzma.FILTER_X86,
    "lzma.PRESET_EXTREME": lzma.PRESET_EXTREME,
    "zlib.MAX_WBITS": zlib.MAX_WBITS,
}


def _eval(node: cst.BaseExpression, env: _Env, layers: list, depth: int = 0):
    if depth > 60:
        raise DecodeError("expression nests too deeply")
    if isinstance(node, cst.SimpleString):
        return node.evaluated_value
    if isinstance(node, cst.ConcatenatedString):
        # "a" "b" "c" ... nests one level per literal (wrappers split payloads over hundreds of lines): iterate
        parts = []
        while isinstance(node, cst.ConcatenatedString):
            parts.append(_eval(node.left, env, layers, depth + 1))
            node = node.right
        parts.append(_eval(node, env, layers, depth + 1))
        if len({type(p) for p in parts}) != 1 or not isinstance(parts[0], (str, bytes)):
            raise DecodeError("adjacent literals of mixed types")
        return parts[0][:0].join(parts)
    if isinstance(node, cst.Integer):
        return int(node.value.replace("_", ""), 0)
    if isinstance(node, cst.UnaryOperation) and isinstance(node.operator, cst.Minus):
        return -_eval(node.expression, env, layers, depth + 1)
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Add):
        # "a" + "b" + ... is left-nested: walk down the left spine instead of recursing once per operand
        operands = []
        while isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Add):
            operands.append(node.right)
            node = node.left
        operands.append(node)
        operands.reverse()
        parts = [_eval(o, env, layers, depth + 1) for o in operands]
        if len({type(p) for p in parts}) != 1 or not isinstance(parts[0], (str, bytes)):
            raise DecodeError("'+' of non-string operands")
        if sum(len(p) for p in parts) > env.max_bytes:
            raise DecodeError(f"string exceeds the {env.max_bytes}-byte cap")
        return parts[0][:0].join(parts)
    if isinstance(node, cst.Name) and node.value == "__file__" and env.file_rel is not None:
        return _FsPath(env.file_rel)
    if isinstance(node, cst.Attribute) and node.attr.value == "parent":
        base = _eval(node.value, env, layers, depth + 1)
        if not isinstance(base, _FsPath):
            raise DecodeError(".parent of a non-path")
        return _fs_join(base, "..")
    if isinstance(node, cst.BinaryOperation) and isinstance(node.operator, cst.Divide):
        base = _eval(node.left, env, layers, depth + 1)
        if not isinstance(base, _FsPath):
            raise DecodeError("'/' of a non-path")
        return _fs_join(base, _eval(node.right, env, layers, depth + 1))
    if isinstance(node, cst.Subscript) and len(node.slice) == 1:
        return _subscript(_eval(node.value, env, layers, depth + 1), node.slice[0].slice, env, layers, depth)
    if isinstance(node, (cst.Name, cst.Attribute)):
        resolved = env.resolve(node)
        if resolved in _LZMA_CONSTS:
            return _LZMA_CONSTS[resolved]
        if isinstance(node, cst.Name) and node.value in env.consts:
            value = env.consts.pop(node.value)  # pop: no self-referential loops
            try:
                return _eval(value, env, layers, depth + 1)
            finally:
                env.consts[node.value] = value
        raise DecodeError(f"unknown name {dotted(node) or '?'}")
    if isinstance(node, cst.List):
        return [_eval(e.value, env, layers, depth + 1) for e in node.elements]
    if isinstance(node, cst.Tuple):
        return tuple(_eval(e.value, env, layers, depth + 1) for e in node.elements)
    if isinstance(node, cst.Dict):
        out = {}
        for el in node.elements:
            if not isinstance(el, cst.DictElement):
                raise DecodeError("dict unpacking")
            out[_eval(el.key, env, layers, depth + 1)] = _eval(el.value, env, layers, depth + 1)
        return out
    if isinstance(node, cst.Call):
        return _eval_call(node, env, layers, depth)
    raise DecodeError(f"unsupported expression {type(node).__name__}")


def _subscript(value, sl, env, layers, depth):
    if not isinstance(value, (str, bytes, list, tuple)):
        raise DecodeError("subscript of a non-sequence")

    def ev(x):
        if x is None:
            return None
        v = _eval(x, env, layers, depth + 1)
        if not isinstance(v, int):
            raise DecodeError("non-integer index")
        return v

    try:
        if isinstance(sl, cst.Index):
            return value[ev(sl.value)]
        if isinstance(sl, cst.Slice):
            return value[ev(sl.lower) : ev(sl.upper) : ev(sl.step)]
    except IndexError:
        raise DecodeError("index out of range") from None
    raise DecodeError("unsupported subscript")


def _read(env, opened: _Opened):
    if env.read_file is None:
        raise DecodeError("the payload is read from a file")
    data = env.read_file(opened.path.rel)
    return data if opened.binary else data.decode("utf-8", errors="strict")


def _args(call: cst.Call, env, layers, depth):
    pos, kw = [], {}
    for a in call.args:
        if a.star:
            raise DecodeError("star arguments")
        v = _eval(a.value, env, layers, depth + 1)
        if a.keyword is not None:
            kw[a.keyword.value] = v
        else:
            pos.append(v)
    return pos, kw


def _as_bytes(v) -> bytes:
    if isinstance(v, str):
        return v.encode("ascii", errors="strict") if v.isascii() else v.encode("utf-8")
    if isinstance(v, (bytes, bytearray)):
        return bytes(v)
    raise DecodeError(f"expected bytes, got {type(v).__name__}")


def _eval_call(call: cst.Call, env: _Env, layers: list, depth: int):
    func = call.func
    # Method calls on a value: x.decode(), x.encode(), bytes.fromhex(x), x.replace(a, b)
    if isinstance(func, cst.Attribute) and env.resolve(func.value) not in (
        "lzma",
        "zlib",
        "base64",
        "bz2",
        "gzip",
        "codecs",
        "binascii",
        "bytes",
        "str",
        "brotli",
        "os",
        "os.path",
        "pathlib",
        "io",
        "builtins",
    ):
        recv = _eval(func.value, env, layers, depth + 1)
        pos, kw = _args(call, env, layers, depth)
        meth = func.attr.value
        if isinstance(recv, _FsPath):
            if meth in ("resolve", "absolute", "expanduser") and not pos:
                return recv
            if meth in ("read_bytes", "read_text"):
                return _read(env, _Opened(recv, meth == "read_bytes"))
            if meth == "open":
                return _Opened(recv, "b" in (pos[0] if pos else kw.get("mode", "r")))
            if meth == "joinpath":
                return _fs_join(recv, *pos)
            raise DecodeError(f"unsupported path method .{meth}()")
        if isinstance(recv, _Opened) and meth == "read" and not pos:
            return _read(env, recv)
        if meth in ("split", "rsplit") and isinstance(recv, (str, bytes)) and len(pos) <= 2:
            return getattr(recv, meth)(*pos, **{k: v for k, v in kw.items() if k in ("sep", "maxsplit")})
        if meth == "decode" and isinstance(recv, (bytes, bytearray)):
            enc = pos[0] if pos else kw.get("encoding", "utf-8")
            return bytes(recv).decode(enc, errors=kw.get("errors", "strict"))
        if meth == "encode" and isinstance(recv, str):
            enc = pos[0] if pos else kw.get("encoding", "utf-8")
            return recv.encode(enc)
        if meth in ("strip", "rstrip", "lstrip") and isinstance(recv, (str, bytes)) and len(pos) <= 1:
            return getattr(recv, meth)(*pos)
        if meth == "replace" and isinstance(recv, (str, bytes)) and len(pos) == 2:
            out = recv.replace(pos[0], pos[1])
            if len(out) > env.max_bytes:
                raise DecodeError("replace exceeds the size cap")
            return out
        if meth == "join" and isinstance(recv, (str, bytes)) and len(pos) == 1 and isinstance(pos[0], (list, tuple)):
            return recv.join(pos[0])
        raise DecodeError(f"unsupported method .{meth}()")
    name = env.resolve(func) or ""
    if name in ("compile", "builtins.compile") and call.args:
        # compile(source, filename, mode): only the source matters (the filename is often __file__-based)
        return _eval(call.args[0].value, env, layers, depth + 1)
    pos, kw = _args(call, env, layers, depth)
    mb = env.budget.cap(env.max_bytes)
    try:
        return _eval_named(name, pos, kw, env, layers, mb)
    except DecodeError as exc:
        if mb < env.max_bytes and "cap" in str(exc):  # the shared budget, not this payload's own cap, ran out
            raise DecodeError(f"decoded payloads exceed the {env.budget.total_bytes}-byte total for one submission "
                              "(nested decompression bomb?)") from None
        raise


def _eval_named(name: str, pos: list, kw: dict, env: _Env, layers: list, mb: int):
    if name in ("os.path.dirname", "os.path.abspath", "os.path.realpath", "os.path.normpath", "pathlib.Path",
                "pathlib.PurePath", "os.path.join", "open", "builtins.open", "io.open"):
        return _path_call(name, pos, kw)
    if name in ("base64.b85decode",):
        layers.append("b85decode")
        return _wrap_binascii(base64.b85decode, _as_bytes(pos[0]))
    if name in ("base64.a85decode",):
        layers.append("a85decode")
        return _wrap_binascii(
            lambda b: base64.a85decode(
                b, **{k: v for k, v in kw.items() if k in ("foldspaces", "adobe", "ignorechars")}
            ),
            _as_bytes(pos[0]),
        )
    if name in ("base64.b64decode", "base64.standard_b64decode", "base64.decodebytes", "binascii.a2b_base64"):
        layers.append("b64decode")
        return _wrap_binascii(base64.b64decode, _as_bytes(pos[0]))
    if name == "base64.urlsafe_b64decode":
        layers.append("b64decode")
        return _wrap_binascii(base64.urlsafe_b64decode, _as_bytes(pos[0]))
    if name in ("base64.b32decode",):
        layers.append("b32decode")
        return _wrap_binascii(base64.b32decode, _as_bytes(pos[0]))
    if name in ("base64.b16decode", "binascii.unhexlify", "binascii.a2b_hex", "bytes.fromhex"):
        layers.append("hex")
        arg = pos[0]
        return _wrap_binascii(lambda b: bytes.fromhex(b.decode("ascii")), _as_bytes(arg))
    if name == "lzma.decompress":
        fmt = kw.get("format", pos[1] if len(pos) > 1 else None)
        filters = kw.get("filters", pos[3] if len(pos) > 3 else None)
        layers.append("lzma(raw)" if fmt == lzma.FORMAT_RAW else "lzma")
        return env.charged(lzma_decompress(_as_bytes(pos[0]), fmt, filters, mb))
    if name in ("zlib.decompress",):
        layers.append("zlib")
        wbits = kw.get("wbits", pos[1] if len(pos) > 1 else 15)
        return env.charged(zlib_decompress(_as_bytes(pos[0]), wbits, mb))
    if name == "gzip.decompress":
        layers.append("gzip")
        return env.charged(zlib_decompress(_as_bytes(pos[0]), 31, mb))
    if name == "bz2.decompress":
        layers.append("bz2")
        return env.charged(bz2_decompress(_as_bytes(pos[0]), mb))
    if name == "brotli.decompress":
        layers.append("brotli")
        return env.charged(brotli_decompress(_as_bytes(pos[0]), mb))
    if name in ("codecs.decode",):
        enc = (pos[1] if len(pos) > 1 else kw.get("encoding", "utf-8")).lower().replace("-", "_")
        data = pos[0]
        if enc in ("base64", "base64_codec"):
            return _wrap_binascii(base64.b64decode, _as_bytes(data))
        if enc in ("hex", "hex_codec"):
            return _wrap_binascii(lambda b: bytes.fromhex(b.decode("ascii")), _as_bytes(data))
        if enc in ("zlib", "zlib_codec"):
            return env.charged(zlib_decompress(_as_bytes(data), 15, mb))
        if enc in ("bz2", "bz2_codec"):
            return env.charged(bz2_decompress(_as_bytes(data), mb))
        if isinstance(data, (bytes, bytearray)):
            return bytes(data).decode(enc)
        raise DecodeError(f"codecs.decode with {enc!r}")
    if name in ("str", "bytes") and pos and len(pos) <= 3:
        if name == "str" and isinstance(pos[0], (bytes, bytearray)) and len(pos) >= 2:
            return bytes(pos[0]).decode(pos[1])
        if name == "bytes" and isinstance(pos[0], str) and len(pos) >= 2:
            return pos[0].encode(pos[1])
        if name == "bytes" and isinstance(pos[0], (bytes, bytearray)):
            return bytes(pos[0])
    raise DecodeError(f"unsupported call {name or '?'}()")


def _path_call(name: str, pos: list, kw: dict):
    if not pos or not isinstance(pos[0], _FsPath):
        raise DecodeError(f"{name}() of something other than a path derived from __file__")
    p = pos[0]
    if name == "os.path.dirname":
        return _fs_join(p, "..")
    if name == "os.path.join":
        return _fs_join(p, *pos[1:])
    if name in ("open", "builtins.open", "io.open"):
        mode = pos[1] if len(pos) > 1 else kw.get("mode", "r")
        if not isinstance(mode, str) or any(c in mode for c in "wax+"):
            raise DecodeError("open() for writing")
        return _Opened(p, "b" in mode)
    return p  # abspath / realpath / normpath / Path(): the same file


def _wrap_binascii(fn, data: bytes) -> bytes:
    try:
        return fn(data)
    except (ValueError, binascii.Error) as exc:
        raise DecodeError(f"payload does not decode: {exc}") from None


# --------------------------------------------------------------------------------------------------------------


_EXEC_NAMES = ("exec", "eval", "builtins.exec", "builtins.eval", "compile")


def _is_static_payload(node: cst.BaseExpression, reads: bool = False) -> bool:
    """True when the exec argument is built from calls/literals only (a wrapper), not `open(...).read()` or code.
    `reads`: reading files is allowed (the payload is a compressed blob read via a `__file__`-derived path)."""
    if isinstance(node, cst.Call):
        f = node.func
        if not reads and isinstance(f, cst.Attribute) and f.attr.value in ("read", "read_bytes", "read_text"):
            return False
        if not reads and isinstance(f, cst.Name) and f.value == "open":
            return False
        return all(_is_static_payload(a.value, reads) for a in node.args) and (
            not isinstance(f, cst.Attribute)
            or _is_static_payload(f.value, reads)
            or isinstance(f.value, (cst.Name, cst.Attribute))
        )
    if isinstance(node, cst.Subscript):
        return _is_static_payload(node.value, reads)
    return isinstance(
        node,
        (
            cst.SimpleString,
            cst.ConcatenatedString,
            cst.Name,
            cst.Attribute,
            cst.Integer,
            cst.BinaryOperation,
            cst.List,
            cst.Dict,
            cst.Tuple,
            cst.UnaryOperation,
        ),
    )


_DECODER_MODULES = ("lzma", "zlib", "gzip", "bz2", "base64", "binascii", "codecs", "brotli")


def _mentions_decoder(node, env: _Env, seen: frozenset = frozenset()) -> bool:
    """A decoder call in `node`, or in the module-level constants it names (`_p=_b.decode().split(...)`)."""
    for n in walk(node):
        if type(n) is cst.Call and (env.resolve(n.func) or "").split(".")[0] in _DECODER_MODULES:
            return True
        if type(n) is cst.Name and n.value in env.consts and n.value not in seen and len(seen) < 8:
            if _mentions_decoder(env.consts[n.value], env, seen | {n.value}):
                return True
    return False


def _payload_expr(arg: cst.BaseExpression, env: _Env):
    """The expression to decode for an exec argument, or None when it is not a static wrapper payload.
    `exec(<call chain over literals>)`, and `exec(name)` / `exec(compile(name, ...))` where `name` is a module-level
    constant built by decoder calls (pgolf's own wrapper: `s=L.decompress(...).decode()` ...
    `exec(compile(s,f,"exec"))`)."""
    if isinstance(arg, cst.Call) and (env.resolve(arg.func) or "") in ("compile", "builtins.compile") and arg.args:
        inner = arg.args[0].value
        if isinstance(inner, cst.Name):
            return _payload_expr(inner, env)
    if isinstance(arg, cst.Name):
        value = env.consts.get(arg.value)
        if value is None or not _mentions_decoder(value, env) or not _is_static_payload(value, _reads_self(value)):
            return None
        return arg
    if isinstance(arg, cst.Call) and _is_static_payload(arg, _reads_self(arg) and _mentions_decoder(arg, env)):
        return arg
    return None


def _reads_self(node) -> bool:
    """The expression reads a file located through `__file__` (`open(__file__,'rb').read()[n:]`,
    `Path(__file__).with...`): such a payload is decoded here; plain `exec(open(x).read())` is the helper follower's."""
    return any(isinstance(n, cst.Name) and n.value == "__file__" for n in walk(node))


def find_wrapped_sources(module: cst.Module, positions=None, max_bytes: int = MAX_DECODED_BYTES, calls=None,
                         budget: Budget | None = None, file_rel: str | None = None, read_file=None):
    """Decode every exec/eval of a static payload in `module`.

    Returns (decoded: list[Decoded], errors: list[(line, col, message)]). Only the payload of exec calls whose
    argument is a call chain over literals (or a constant holding one) is attempted; `exec(open(...).read())` is left
    to the helper follower. `budget` is shared by every unit of one submission's nesting tree. `file_rel` is the
    code's `__file__` relative to the submission folder and `read_file(rel) -> bytes` reads a regular file there
    (payloads located through `__file__`)."""
    env = _Env(module, max_bytes, budget, file_rel, read_file)
    if calls is None:
        calls = [n for n in walk(module) if type(n) is cst.Call]
    calls = [n for n in calls if n.args and env.resolve(n.func) in _EXEC_NAMES]
    seen_sources: set = set()
    decoded, errors = [], []
    for call in calls:
        arg = _payload_expr(call.args[0].value, env)
        if arg is None:
            continue
        line, col = 1, 1
        if callable(positions):
            line, col = positions(call) or (1, 1)
        elif positions is not None and call in positions:
            pos = positions[call]
            line, col = pos.start.line, pos.start.column + 1
        layers: list = []
        try:
            value = _eval(arg, env, layers)
        except DecodeError as exc:
            errors.append((line, col, str(exc)))
            continue
        except (
            RecursionError,
            MemoryError,
            OverflowError,
            TypeError,
            ValueError,
            IndexError,
            KeyError,
            LookupError,
        ) as exc:
            errors.append((line, col, f"{type(exc).__name__}: {exc}"))
            continue
        if isinstance(value, (bytes, bytearray)):
            try:
                value = bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                errors.append((line, col, "decoded payload is not UTF-8 text"))
                continue
        if not isinstance(value, str) or value in seen_sources:
            continue  # exec(compile(s, ...)) and compile(s, ...) decode the same payload: one unit
        seen_sources.add(value)
        if env.budget.units_left <= 0:
            errors.append((line, col, f"more than {env.budget.total_units} decoded payloads in one submission"))
            continue
        env.budget.units_left -= 1
        decoded.append(Decoded(source=value, line=line, col=col, layers=layers))
    decoded += _blobs(env, positions, seen_sources)
    return decoded, errors


def _position(positions, node) -> tuple:
    if callable(positions):
        return positions(node) or (1, 1)
    if positions is not None and node in positions:
        return positions[node].start.line, positions[node].start.column + 1
    return 1, 1


def _looks_like_python(text: str) -> bool:
    return len(text) >= 200 and "\n" in text and ("import " in text or "def " in text)


def _blobs(env: _Env, positions, seen: set) -> list:
    """Module-level constants that decode to Python source without being exec'd here: a wrapper that writes its
    payload to files and runs them (`_b=lzma.decompress(...)`, `_p=_b.decode().split(SEP)`, ...,
    `exec(open(tmp/"run.py").read())`). Each Python-looking piece is returned (blob=True); the caller keeps those
    that parse. Failures are silent: a constant that is not code is not a finding."""
    out = []
    for name, value in list(env.consts.items()):
        if not _mentions_decoder(value, env) or not _is_static_payload(value, _reads_self(value)):
            continue
        layers: list = []
        try:
            got = _eval(value, env, layers)
        except (DecodeError, RecursionError, MemoryError, OverflowError, TypeError, ValueError, LookupError):
            continue
        pieces = list(got) if isinstance(got, (list, tuple)) else [got]
        line, col = _position(positions, value)
        for piece in pieces:
            if isinstance(piece, (bytes, bytearray)):
                try:
                    piece = bytes(piece).decode("utf-8")
                except UnicodeDecodeError:
                    continue
            if not isinstance(piece, str) or piece in seen or not _looks_like_python(piece):
                continue
            if env.budget.units_left <= 0:
                return out
            seen.add(piece)
            env.budget.units_left -= 1
            out.append(Decoded(source=piece, line=line, col=col, layers=[*layers, f"constant {name}"], blob=True))
    return out
