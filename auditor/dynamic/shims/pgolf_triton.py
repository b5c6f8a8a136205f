"""A stand-in `triton` for CPU-only machines: the import, `@triton.jit`/`autotune`/`heuristics`, the `triton.language`
symbols kernels use, `TensorDescriptor`, and kernel launches `kernel[grid](...)` executed by a small interpreter on
torch tensors (one Python call per program id, like `TRITON_INTERPRET=1`): pointers are (flat storage view, element
offsets), blocks are torch tensors. A kernel the interpreter cannot execute raises `PgolfNeedsGPU` naming it; the
harness reports that as a "needs GPU" note instead of a crash.
"""

from __future__ import annotations

import builtins
import itertools
import sys
import types

import torch

LAUNCH_OPTIONS = {"num_warps", "num_stages", "num_ctas", "maxnreg", "enable_fp_fusion", "launch_cooperative_grid",
                  "warmup", "grid", "stream", "device", "enable_warp_specialization"}


class PgolfNeedsGPU(RuntimeError):
    """A GPU-only operation the CPU shims cannot execute (the message names the kernel or function)."""


# ------------------------------------------------------------------------------------------------ pointers
def _flat(t: torch.Tensor) -> torch.Tensor:
    """A 1-D view of the tensor's whole storage from its first element (stores through it land in the tensor)."""
    n = t.untyped_storage().nbytes() // t.element_size() - t.storage_offset()
    return torch.as_strided(t, (max(n, 0),), (1,), t.storage_offset())


class _PtrType:
    def __init__(self, dtype):
        self.element_ty = dtype

    def is_ptr(self):
        return True


class Pointer:
    """Base tensor + int64 element offsets (a scalar pointer has a 0-d offset)."""

    def __init__(self, base: torch.Tensor, offs=None):
        self.base = base
        self.offs = torch.zeros((), dtype=torch.int64) if offs is None else offs

    @property
    def dtype(self):
        return _PtrType(self.base.dtype)

    def _shift(self, other, sign=1):
        o = other if isinstance(other, torch.Tensor) else torch.tensor(int(other))
        return Pointer(self.base, self.offs + sign * o.to(torch.int64))

    def __add__(self, other):
        return self._shift(other)

    __radd__ = __add__

    def __sub__(self, other):
        return self._shift(other, -1)

    def __getitem__(self, idx):
        return Pointer(self.base, self.offs[idx])

    @property
    def shape(self):
        return tuple(self.offs.shape)

    def to(self, *a, **k):
        return self


def _gather(ptr: Pointer, mask=None, other=None):
    offs = ptr.offs
    n = ptr.base.numel()
    if mask is not None:
        mask = torch.as_tensor(mask, dtype=torch.bool)
        offs, mask = torch.broadcast_tensors(offs, mask)
        safe = torch.where(mask, offs, torch.zeros_like(offs))
    else:
        safe = offs
    if safe.numel() and (int(safe.min()) < 0 or int(safe.max()) >= n):
        raise IndexError(f"load out of bounds (offset range [{int(safe.min())}, {int(safe.max())}], size {n})")
    val = ptr.base[safe.reshape(-1)].reshape(safe.shape)
    if mask is not None:
        fill = torch.as_tensor(0 if other is None else other, dtype=val.dtype)
        val = torch.where(mask, val, fill)
    return val


def _scatter(ptr: Pointer, value, mask=None):
    offs = ptr.offs
    value = torch.as_tensor(value)
    if mask is not None:
        offs, value, mask = torch.broadcast_tensors(offs, value, torch.as_tensor(mask, dtype=torch.bool))
        offs, value = offs[mask], value[mask]
    else:
        offs, value = torch.broadcast_tensors(offs, value)
    ptr.base[offs.reshape(-1)] = value.reshape(-1).to(ptr.base.dtype)


class TensorDescriptor:
    """`triton.tools.tensor_descriptor.TensorDescriptor`: block loads/stores at element coordinates, zero padding out
    of bounds, stores clipped to the tensor."""

    def __init__(self, base, shape, strides, block_shape, padding="zero"):
        self.base, self.shape, self.strides, self.block_shape = base, list(shape), list(strides), list(block_shape)

    @classmethod
    def from_tensor(cls, tensor, block_shape, padding="zero"):
        return cls(tensor, tensor.shape, tensor.stride(), block_shape, padding)

    def _slices(self, offsets):
        return tuple(builtins.slice(int(o), int(o) + b) for o, b in zip(offsets, self.block_shape))

    def load(self, offsets):
        part = self.base[self._slices(offsets)]
        out = torch.zeros(self.block_shape, dtype=self.base.dtype)
        out[tuple(builtins.slice(0, s) for s in part.shape)] = part
        return out

    def store(self, offsets, value):
        part = self.base[self._slices(offsets)]
        part.copy_(torch.as_tensor(value)[tuple(builtins.slice(0, s) for s in part.shape)].to(part.dtype))


# ------------------------------------------------------------------------------------------------ language
_PROGRAM: dict = {"id": (0, 0, 0), "grid": (1, 1, 1)}


def _t(x):
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(x)


class constexpr:  # noqa: N801 - triton's name
    """Annotation marker; `tl.constexpr(v)` is v."""

    def __new__(cls, value=None):
        return value


def program_id(axis=0):
    return torch.tensor(_PROGRAM["id"][int(axis)], dtype=torch.int32)


def num_programs(axis=0):
    return torch.tensor(_PROGRAM["grid"][int(axis)], dtype=torch.int32)


def arange(start, end):
    return torch.arange(int(start), int(end), dtype=torch.int32)


def cdiv(a, b):
    return (a + b - 1) // b


def load(pointer, mask=None, other=None, **_):
    if isinstance(pointer, Pointer):
        return _gather(pointer, mask, other)
    raise TypeError(f"tl.load of {type(pointer).__name__}")


def store(pointer, value, mask=None, **_):
    if isinstance(pointer, Pointer):
        return _scatter(pointer, value, mask)
    raise TypeError(f"tl.store to {type(pointer).__name__}")


def zeros(shape, dtype=torch.float32):
    return torch.zeros(tuple(int(s) for s in shape), dtype=dtype)


def full(shape, value, dtype=torch.float32):
    return torch.full(tuple(int(s) for s in shape), value, dtype=dtype)


def zeros_like(x):
    return torch.zeros_like(_t(x))


def where(cond, a, b):
    a, b = _t(a), _t(b)
    dt = torch.promote_types(a.dtype, b.dtype)
    return torch.where(_t(cond).to(torch.bool), a.to(dt), b.to(dt))


def _reduce(fn, x, axis, keep_dims):
    x = _t(x)
    if axis is None:
        out = fn(x.reshape(-1), 0)
        return out.reshape([1] * x.ndim) if keep_dims else out
    return fn(x, int(axis), keepdim=keep_dims) if keep_dims else fn(x, int(axis))


def sum(x, axis=None, keep_dims=False, **_):  # noqa: A001 - triton's name
    return _reduce(lambda t, d, keepdim=False: t.sum(d, keepdim=keepdim), x, axis, keep_dims)


def max(x, axis=None, keep_dims=False, **_):  # noqa: A001
    return _reduce(lambda t, d, keepdim=False: t.amax(d, keepdim=keepdim), x, axis, keep_dims)


def min(x, axis=None, keep_dims=False, **_):  # noqa: A001
    return _reduce(lambda t, d, keepdim=False: t.amin(d, keepdim=keepdim), x, axis, keep_dims)


def argmax(x, axis=None, keep_dims=False, **_):
    return _reduce(lambda t, d, keepdim=False: t.argmax(d, keepdim=keepdim), x, axis, keep_dims)


def argmin(x, axis=None, keep_dims=False, **_):
    return _reduce(lambda t, d, keepdim=False: t.argmin(d, keepdim=keepdim), x, axis, keep_dims)


def cumsum(x, axis=0, reverse=False):
    x = _t(x)
    return x.flip(axis).cumsum(axis).flip(axis) if reverse else x.cumsum(int(axis))


def _binary(fn):
    def op(a, b, *_, **__):
        a, b = _t(a), _t(b)
        dt = torch.promote_types(a.dtype, b.dtype)
        return fn(a.to(dt), b.to(dt))

    return op


maximum = _binary(torch.maximum)
minimum = _binary(torch.minimum)


def _float_unary(fn):
    def op(x, *_, **__):
        x = _t(x)
        return fn(x if x.is_floating_point() else x.float())

    return op


exp, log, sqrt, rsqrt = (_float_unary(f) for f in (torch.exp, torch.log, torch.sqrt, torch.rsqrt))
exp2, log2, sigmoid, tanh = (_float_unary(f) for f in (torch.exp2, torch.log2, torch.sigmoid, torch.tanh))
sin, cos, erf, floor, ceil = (_float_unary(f) for f in (torch.sin, torch.cos, torch.erf, torch.floor, torch.ceil))
log1p = _float_unary(torch.log1p)


def abs(x):  # noqa: A001
    return torch.abs(_t(x))


def fma(a, b, c):
    return _t(a) * _t(b) + _t(c)


def clamp(x, lo, hi, **_):
    return torch.clamp(_t(x), lo, hi)


def dot(a, b, acc=None, *_, out_dtype=torch.float32, **__):
    out = _t(a).to(torch.float32) @ _t(b).to(torch.float32)
    if acc is not None:
        out = out + acc
    return out.to(out_dtype)


def trans(x, *dims):
    x = _t(x)
    return x.permute(*dims) if dims else x.transpose(-1, -2)


def permute(x, *dims):
    dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
    return _t(x).permute(*dims)


def reshape(x, shape, *_, can_reorder=False):
    return _t(x).reshape(tuple(int(s) for s in shape))


view = reshape


def split(x):
    x = _t(x)
    return x[..., 0], x[..., 1]


def join(a, b):
    a, b = torch.broadcast_tensors(_t(a), _t(b))
    return torch.stack([a, b], -1)


def expand_dims(x, axis):
    return _t(x).unsqueeze(int(axis))


def broadcast_to(x, shape):
    return _t(x).expand(tuple(int(s) for s in shape))


def cast(x, dtype, *_, **__):
    return _t(x).to(dtype)


def range(*args, **_):  # noqa: A001 - tl.range(start, end, step, num_stages=..., flatten=...)
    return builtins.range(*(int(a) for a in args))


static_range = range


def multiple_of(x, *_):
    return x


max_contiguous = multiple_of


def debug_barrier(*_, **__):
    return None


def static_assert(cond, msg=""):
    assert cond, msg


device_assert = static_assert


def static_print(*a, **k):
    return None


# ------------------------------------------------------------------------------------------------ jit and launch
class JITFunction:
    def __init__(self, fn, meta_fns=(), configs=()):
        self.fn, self.meta_fns, self.configs = fn, list(meta_fns), list(configs)
        self.__name__ = getattr(fn, "__name__", "kernel")
        self.__doc__ = getattr(fn, "__doc__", None)

    def __call__(self, *a, **k):  # a jit function called from another kernel is an ordinary call
        return self.fn(*a, **k)

    def __getitem__(self, grid):
        return lambda *args, **kwargs: self.launch(grid, args, kwargs)

    def run(self, *args, grid=None, **kwargs):
        return self.launch(grid, args, kwargs)

    def launch(self, grid, args, kwargs):
        meta = {k: v for k, v in kwargs.items() if k not in LAUNCH_OPTIONS}
        if self.configs:  # autotune: the first config (every config computes the same result)
            meta = {**self.configs[0].kwargs, **meta}
        import inspect

        names = list(inspect.signature(self.fn).parameters)
        named = dict(zip(names, args), **meta)
        for f in self.meta_fns:  # heuristics
            for k, fn in f.items():
                if k not in named:
                    named[k] = fn(named)
                    meta[k] = named[k]
        g = grid(named) if callable(grid) else grid
        g = tuple(int(x) for x in (g if isinstance(g, (tuple, list)) else (g,)))
        g = (g + (1, 1, 1))[:3]
        bound = [Pointer(_flat(a)) if isinstance(a, torch.Tensor) else a for a in args]
        kw = {k: (Pointer(_flat(v)) if isinstance(v, torch.Tensor) else v) for k, v in meta.items() if k in names}
        prev = dict(_PROGRAM)
        try:
            with torch.no_grad():
                for pid in itertools.product(*(builtins.range(n) for n in g[::-1])):
                    _PROGRAM.update(id=pid[::-1], grid=g)
                    self.fn(*bound, **kw)
        except PgolfNeedsGPU:
            raise
        except Exception as e:  # noqa: BLE001 - anything the interpreter cannot do means the kernel needs a GPU
            raise PgolfNeedsGPU(f"triton kernel {self.__name__} needs a GPU (the CPU interpreter failed: "
                                f"{type(e).__name__}: {str(e)[:200]})") from e
        finally:
            _PROGRAM.update(prev)


def jit(fn=None, **_):
    if fn is None:
        return lambda f: JITFunction(f)
    return JITFunction(fn)


class Config:
    def __init__(self, kwargs=None, num_warps=4, num_stages=2, num_ctas=1, pre_hook=None, **_):
        self.kwargs, self.num_warps, self.num_stages, self.pre_hook = dict(kwargs or {}), num_warps, num_stages, pre_hook


def autotune(configs=(), key=(), **_):
    def deco(fn):
        j = fn if isinstance(fn, JITFunction) else JITFunction(fn)
        j.configs = list(configs) + j.configs
        return j

    return deco


def heuristics(values):
    def deco(fn):
        j = fn if isinstance(fn, JITFunction) else JITFunction(fn)
        j.meta_fns.append(dict(values))
        return j

    return deco


def next_power_of_2(n):
    n = int(n)
    return 1 if n <= 1 else 1 << (n - 1).bit_length()


# ------------------------------------------------------------------------------------------------ modules
_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
           "int8": torch.int8, "int16": torch.int16, "int32": torch.int32, "int64": torch.int64,
           "uint8": torch.uint8, "int1": torch.bool, "float8e4nv": getattr(torch, "float8_e4m3fn", torch.float16),
           "float8e5": getattr(torch, "float8_e5m2", torch.float16)}
_LANG = ["constexpr", "program_id", "num_programs", "arange", "cdiv", "load", "store", "zeros", "full", "zeros_like",
         "where", "sum", "max", "min", "argmax", "argmin", "cumsum", "maximum", "minimum", "exp", "log", "sqrt", "rsqrt",
         "exp2", "log2", "sigmoid", "tanh", "sin", "cos", "erf", "floor", "ceil", "log1p", "abs", "fma", "clamp", "dot",
         "trans", "permute", "reshape", "view", "split", "join", "expand_dims", "broadcast_to", "cast", "range",
         "static_range", "multiple_of", "max_contiguous", "debug_barrier", "static_assert", "device_assert",
         "static_print"]


def modules() -> dict[str, types.ModuleType]:
    """{name: module} for `triton`, `triton.language` (+ `.math`, `.extra.cuda.libdevice`), `triton.tools.
    tensor_descriptor`, `triton.runtime`, `triton.testing`."""
    me = sys.modules[__name__]
    lang = types.ModuleType("triton.language")
    for name in _LANG:
        setattr(lang, name, getattr(me, name))
    for name, dt in _DTYPES.items():
        setattr(lang, name, dt)
    lang.dtype = torch.dtype
    lang.tensor = torch.Tensor
    lang.math = lang
    lang.make_tensor_descriptor = lambda base, shape, strides, block_shape, **k: TensorDescriptor(
        base.base if isinstance(base, Pointer) else base, shape, strides, block_shape)
    libdevice = types.ModuleType("triton.language.extra.cuda.libdevice")
    for name in ("exp", "log", "sqrt", "rsqrt", "exp2", "log2", "tanh", "sin", "cos", "erf", "floor", "ceil", "log1p"):
        setattr(libdevice, name, getattr(me, name))
    libdevice.pow = lambda a, b: _t(a).float() ** b
    extra = types.ModuleType("triton.language.extra")
    cuda = types.ModuleType("triton.language.extra.cuda")
    extra.cuda, cuda.libdevice, extra.libdevice = cuda, libdevice, libdevice
    lang.extra = extra
    tools = types.ModuleType("triton.tools")
    td = types.ModuleType("triton.tools.tensor_descriptor")
    td.TensorDescriptor = TensorDescriptor
    tools.tensor_descriptor = td
    runtime = types.ModuleType("triton.runtime")
    runtime.JITFunction = JITFunction
    runtime.driver = types.SimpleNamespace(active=types.SimpleNamespace(
        get_current_device=lambda: 0, get_current_stream=lambda *a: 0,
        utils=types.SimpleNamespace(get_device_properties=lambda *a: {"multiprocessor_count": 132,
                                                                       "max_shared_mem": 232448})))
    runtime.set_allocator = lambda *a, **k: None
    testing = types.ModuleType("triton.testing")
    testing.do_bench = lambda fn, *a, **k: (fn(), 1.0)[1]
    top = types.ModuleType("triton")
    top.__version__ = "3.3.0-pgolf-cpu-interpreter"
    top.__pgolf_shim__ = True
    top.jit, top.autotune, top.heuristics, top.Config = jit, autotune, heuristics, Config
    top.cdiv, top.next_power_of_2, top.JITFunction = cdiv, next_power_of_2, JITFunction
    top.language, top.tools, top.runtime, top.testing = lang, tools, runtime, testing
    top.set_allocator = runtime.set_allocator
    top.PgolfNeedsGPU = PgolfNeedsGPU
    return {"triton": top, "triton.language": lang, "triton.language.math": lang, "triton.language.extra": extra,
            "triton.language.extra.cuda": cuda, "triton.language.extra.cuda.libdevice": libdevice,
            "triton.language.extra.libdevice": libdevice, "triton.tools": tools,
            "triton.tools.tensor_descriptor": td, "triton.runtime": runtime, "triton.testing": testing}


class _HideFromTorch:
    """Meta-path finder: torch's own triton-compatibility modules are executed with `import triton` failing, so
    torch records that triton is absent (importing them eagerly instead costs ~1 s of start-up)."""

    TARGETS = ("torch._inductor.runtime.triton_compat", "torch.utils._triton")

    def find_spec(self, name, path=None, target=None):
        if name not in self.TARGETS:
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            saved = {k: sys.modules.pop(k) for k in list(sys.modules) if k == "triton" or k.startswith("triton.")}
            sys.modules["triton"] = None  # `import triton` raises ImportError, which torch expects without triton
            try:
                run(module)
            finally:
                sys.modules.pop("triton", None)
                sys.modules.update(saved)

        spec.loader.exec_module = exec_module
        return spec


def install() -> None:
    """Put the stand-in in sys.modules (a real triton cannot launch on CPU tensors either) and tell torch there is
    no usable triton, so torch's own optional triton paths stay off."""
    sys.meta_path.insert(0, _HideFromTorch())
    for name, mod in modules().items():
        sys.modules[name] = mod
    try:
        import torch.utils._triton as tt

        for name in ("has_triton", "has_triton_package", "has_triton_tma", "has_triton_tma_device"):
            if hasattr(tt, name):
                fn = getattr(tt, name)
                if hasattr(fn, "cache_clear"):
                    fn.cache_clear()
                setattr(tt, name, lambda *a, **k: False)
    except Exception:  # noqa: BLE001 - older torch: nothing to switch off
        pass
