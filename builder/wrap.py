"""Minify and self-extracting wrappers for the shipped train_gpt.py.

Counted code bytes are the bytes of train_gpt.py, so the readable source can be shipped compressed: a short
wrapper decodes a base85 payload (raw LZMA2 or brotli) and executes it. The decoded source is registered in
`linecache` under a pseudo file name, so tracebacks, `inspect.getsource` (torch.compile, Triton kernels) work.
"""

from __future__ import annotations

import base64
import lzma

from builder.inline import InlineError, check_parses

WRAPS = ("none", "lzma", "brotli")
# The decoded source's file name in tracebacks and linecache (no such file exists on disk).
DECODED_NAME_SUFFIX = "::decoded.py"
# pb=0 (no position-alignment context) suits text: ~0.2 % smaller than the default pb=2. The decoder needs no
# settings: raw LZMA2 chunks carry lc/lp/pb, and the default dictionary exceeds any train_gpt.py.
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "pb": 0}]


def minify(source: str) -> str:
    """python-minifier keeping global names (env-facing class fields, BAKED_CONFIG, entry functions) and without
    literal hoisting (hoisting makes the LZMA/brotli output larger)."""
    import python_minifier

    try:
        out = python_minifier.minify(
            source,
            rename_globals=False,
            hoist_literals=False,
            rename_locals=True,
            remove_literal_statements=True,
            remove_asserts=False,
            remove_debug=False,
            constant_folding=False,
        )
    except Exception as exc:  # the minifier raises assorted internal errors on odd input
        raise InlineError(f"python-minifier failed: {type(exc).__name__}: {exc}") from None
    out = out.rstrip("\n") + "\n"
    check_parses(out, "minified source")
    return out


def compress_lzma(data: bytes) -> bytes:
    return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)


def compress_brotli(data: bytes) -> bytes:
    import brotli

    return brotli.compress(data, quality=11, lgwin=24)


def wrap(source: str, method: str) -> str:
    """A two-line train_gpt.py that decodes and runs `source`; 'none' returns the source unchanged."""
    if method == "none":
        return source
    raw = source.encode("utf-8")
    if method == "lzma":
        payload = base64.b85encode(compress_lzma(raw)).decode("ascii")
        head = "import lzma as L,base64 as B,linecache as C"
        decode = f'L.decompress(B.b85decode("{payload}"),format=L.FORMAT_RAW,filters=[{{"id":L.FILTER_LZMA2}}])'
    elif method == "brotli":
        payload = base64.b85encode(compress_brotli(raw)).decode("ascii")
        head = "import brotli,base64 as B,linecache as C"
        decode = f'brotli.decompress(B.b85decode("{payload}"))'
    else:
        raise InlineError(f"unknown wrap method {method!r}: expected one of {', '.join(WRAPS)}")
    # exec in this module's globals: __file__ (code-size accounting) and __name__ == "__main__" stay as for the plain file.
    body = (
        f"{head}\n"
        f"s={decode}.decode()\n"
        f'f=__file__+"{DECODED_NAME_SUFFIX}"\n'
        "C.cache[f]=(len(s),None,s.splitlines(True),f)\n"
        'exec(compile(s,f,"exec"))\n'
    )
    check_parses(body, f"{method} wrapper")
    return body


def unwrap(text: str) -> str:
    """The source inside a wrapper produced by `wrap` (the text itself when it is not a wrapper)."""
    import re

    m = re.search(r'b85decode\("([^"]*)"\)', text)
    if not m or "linecache as C" not in text:
        return text
    blob = base64.b85decode(m.group(1))
    if text.startswith("import lzma"):
        return lzma.decompress(blob, format=lzma.FORMAT_RAW, filters=[{"id": lzma.FILTER_LZMA2}]).decode("utf-8")
    import brotli

    return brotli.decompress(blob).decode("utf-8")
