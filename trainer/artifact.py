"""The compressed model artifact: quantize a state dict, serialize it deterministically, fit it under the byte cap.

Container (before compression): b"PGA" + version byte + uint32 LE header length + header JSON (sorted keys) +
data. The header lists tensors in state-dict order with kind, shape, original dtype, bits, packing and byte
offsets; the data holds every code section first (grouped by bit width, so like values sit together), then the
fp16 row scales, then fp16, fp32 and raw (non-float) tensors. Nothing in it depends on paths, time or the process,
so the same weights give the same bytes. The whole container then goes through trainer.compress.

Kinds: "q" (int codes, int8 containers or bit-packed, + fp16 per-row scale), "fp16", "fp32", "raw".

Budget fitter (export_artifact): code + model ≤ MAX_ARTIFACT_BYTES is guaranteed. When over the cap it tries, in
order, bit packing (lossless), selective pruning (zero the ±1 codes whose removal costs the least error, as few as
needed), and stepping the largest precision group down one rung (fp32 → fp16 → int8 → … → int4), repeating. With
every eligible matrix at int4, packed, the raw container bounds the compressed size; if even that cannot fit it
raises PgolfError with the numbers. artifact_size_bound() computes those raw sizes ahead of training.
"""

from __future__ import annotations

import json
import struct

import numpy as np
import torch

from trainer.compress import compress, decompress
from trainer.errors import PgolfError
from trainer.gptq import gptq_quantize, hessian_key
from trainer.packing import pack_ints, packed_size, unpack_ints
from trainer.quantize import (
    dequantize_rows, parse_clip_search, parse_quant_scheme, precision_bits, precision_for, quantize_rows,
)

ARTIFACT_MAGIC = b"PGA"
ARTIFACT_VERSION = 1
# Precision ladder the fitter steps down; int4 is the floor (below it the model is not worth shipping).
FIT_LADDER = ("fp32", "fp16", "int8", "int7", "int6", "int5", "int4")
# Worst-case expansion of incompressible data: zstd's documented bound (n/256 + margin) is the largest of the four
# compressors (zlib ~n/4096, LZMA2 3 bytes per 64 KiB chunk, brotli 4 bytes per 16 KiB); +16 for our header.
_ART_COMPRESS_SLACK = 64 + 16
_ART_PREFIX = struct.Struct("<3sBI")
_ART_FLOAT_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
                     "float64": torch.float64}
_ART_PRUNE_PROBES = 6
# Stepping a tensor one int rung down saves about one bit per parameter after compression; aim 25% past the need.
_ART_STEP_MARGIN = 1.25


def compress_bound(n: int) -> int:
    """Upper bound on compress(data) for any len(data) == n and any of our methods."""
    return n + (n >> 8) + _ART_COMPRESS_SLACK


def artifact_label(h) -> str:
    """Log label of a configuration: 'int8+zlib', 'int6+lzma', 'mixed_int4_int6+zstd' (the catch-all '*' rule's
    precision is named only when no other rule quantizes)."""
    rules = parse_quant_scheme(h.quant_scheme)
    ints = sorted({p for pat, p in rules if pat != "*" and p.startswith("int")}, key=precision_bits)
    if not ints:
        ints = sorted({p for _pat, p in rules if p.startswith("int")}, key=precision_bits)
    if not ints:
        body = "fp16" if any(p == "fp16" for _pat, p in rules) else "fp32"
    elif len(ints) == 1:
        body = ints[0]
    else:
        body = "mixed_" + "_".join(ints)
    return f"{body}+{h.compressor}"


# ------------------------------------------------------------------------------------------------ serialization
def _tensor_dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


def _entry_nbytes(e: dict, packed: bool) -> dict:
    """Byte sizes of the sections of one entry (without data)."""
    numel = int(np.prod(e["shape"])) if e["shape"] else 1
    if e["kind"] == "q":
        rows = numel // e["shape"][-1] if len(e["shape"]) > 1 else 1
        codes = packed_size(numel, e["bits"]) if packed else numel
        return {"codes": codes, "scale": 2 * rows}
    if e["kind"] == "fp16":
        return {"values": 2 * numel}
    if e["kind"] == "fp32":
        return {"values": 4 * numel}
    return {"values": numel * np.dtype(e["np_dtype"]).itemsize}


def _artifact_layout(entries: list, packed: bool):
    """Assign byte offsets to every section (deterministic order) -> (header dict, ordered [(entry idx, section)])."""
    order = []
    qs = [i for i, e in enumerate(entries) if e["kind"] == "q"]
    for bits in sorted({entries[i]["bits"] for i in qs}):
        order += [(i, "codes") for i in qs if entries[i]["bits"] == bits]
    order += [(i, "scale") for i in qs]
    for kind in ("fp16", "fp32", "raw"):
        order += [(i, "values") for i, e in enumerate(entries) if e["kind"] == kind]
    offsets = {}
    off = 0
    for i, sec in order:
        n = _entry_nbytes(entries[i], packed)[sec]
        offsets[(i, sec)] = (off, n)
        off += n
    tensors = []
    for i, e in enumerate(entries):
        rec = {"name": e["name"], "kind": e["kind"], "shape": list(e["shape"]), "dtype": e["dtype"]}
        if e["kind"] == "q":
            rec.update(bits=e["bits"], codes=list(offsets[(i, "codes")]), scale=list(offsets[(i, "scale")]))
        else:
            rec["values"] = list(offsets[(i, "values")])
            if e["kind"] == "raw":
                rec["np_dtype"] = e["np_dtype"]
        tensors.append(rec)
    header = {"format": ARTIFACT_VERSION, "packed": bool(packed), "tensors": tensors, "data_bytes": off}
    return header, order


def _header_bytes(header: dict) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")


def raw_container_size(entries: list, packed: bool) -> int:
    """Exact uncompressed container size for these entries (data not needed)."""
    header, _ = _artifact_layout(entries, packed)
    return _ART_PREFIX.size + len(_header_bytes(header)) + header["data_bytes"]


def serialize_entries(entries: list, packed: bool) -> bytes:
    """Uncompressed container bytes. Entries: dicts with name, kind, shape, dtype, bits and data
    (q: 'q' int8 numpy codes + 'scale' fp16 numpy; others: 'values' numpy array of the stored dtype)."""
    header, order = _artifact_layout(entries, packed)
    hb = _header_bytes(header)
    parts = [_ART_PREFIX.pack(ARTIFACT_MAGIC, ARTIFACT_VERSION, len(hb)), hb]
    for i, sec in order:
        e = entries[i]
        if sec == "codes":
            parts.append(pack_ints(e["q"], e["bits"]) if packed else np.ascontiguousarray(e["q"], np.int8).tobytes())
        elif sec == "scale":
            parts.append(np.ascontiguousarray(e["scale"], np.float16).tobytes())
        else:
            parts.append(np.ascontiguousarray(e["values"]).tobytes())
    return b"".join(parts)


def load_artifact(blob: bytes) -> dict:
    """Decompress and decode an artifact -> {name: tensor} in the original order and dtypes; quantized tensors are
    exactly dequantize_rows(q, scale) cast to their original dtype."""
    raw = decompress(blob)
    if len(raw) < _ART_PREFIX.size:
        raise PgolfError(f"artifact: {len(raw)} bytes is too short for the container header")
    magic, version, hlen = _ART_PREFIX.unpack_from(raw)
    if magic != ARTIFACT_MAGIC or version != ARTIFACT_VERSION:
        raise PgolfError(f"artifact: bad magic/version {magic!r}/{version}, expected {ARTIFACT_MAGIC!r}/{ARTIFACT_VERSION}")
    try:
        header = json.loads(raw[_ART_PREFIX.size:_ART_PREFIX.size + hlen].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PgolfError(f"artifact: unreadable header ({exc})") from None
    data = memoryview(raw)[_ART_PREFIX.size + hlen:]
    if len(data) != header["data_bytes"]:
        raise PgolfError(f"artifact: data section has {len(data)} bytes, header says {header['data_bytes']}")
    packed = header["packed"]
    out = {}
    for rec in header["tensors"]:
        shape = tuple(rec["shape"])
        numel = int(np.prod(shape)) if shape else 1
        dtype = _ART_FLOAT_DTYPES.get(rec["dtype"])
        if rec["kind"] == "q":
            off, n = rec["codes"]
            chunk = bytes(data[off:off + n])
            codes = unpack_ints(chunk, rec["bits"], numel) if packed else np.frombuffer(chunk, np.int8)
            soff, sn = rec["scale"]
            scale = torch.from_numpy(np.frombuffer(bytes(data[soff:soff + sn]), np.float16).copy())
            q = torch.from_numpy(codes.copy()).reshape(shape)
            out[rec["name"]] = dequantize_rows(q, scale, dtype=dtype)
        else:
            off, n = rec["values"]
            np_dtype = {"fp16": np.float16, "fp32": np.float32}.get(rec["kind"]) or np.dtype(rec["np_dtype"])
            arr = np.frombuffer(bytes(data[off:off + n]), np_dtype).copy().reshape(shape)
            t = torch.from_numpy(arr)
            out[rec["name"]] = t.to(dtype) if dtype is not None else t
    return out


# ------------------------------------------------------------------------------------------------ quantization
def _quant_settings(h):
    search = parse_clip_search(h.quant_clip_search)
    return h.quant_clip_pct, search


def _make_entry(name: str, t: torch.Tensor, precision: str, h, hessians) -> dict:
    e = {"name": name, "shape": tuple(t.shape), "dtype": _tensor_dtype_name(t), "precision": precision}
    if precision == "raw":
        arr = t.detach().cpu().numpy()
        e.update(kind="raw", values=arr, np_dtype=arr.dtype.str)
        return e
    if precision in ("fp16", "fp32"):
        np_t = t.detach().to(torch.float16 if precision == "fp16" else torch.float32).cpu().numpy()
        e.update(kind=precision, values=np_t)
        return e
    bits = precision_bits(precision)
    clip_pct, search = _quant_settings(h)
    H = None
    if hessians is not None and t.ndim == 2:
        H = hessians.get(hessian_key(name))
    if H is not None:
        q, scale = gptq_quantize(t, H.to(t.device), bits, search or [clip_pct], h.gptq_block_size, h.gptq_damp)
        e["gptq"] = True
    else:
        q, scale = quantize_rows(t, bits, clip_pct, search or None)
        e["gptq"] = False
    e.update(kind="q", bits=bits, q=q.cpu().numpy().reshape(-1), scale=scale.cpu().numpy(), w=t.detach().float().cpu(),
             hdiag=None if H is None else H.diagonal().float().cpu())
    return e


def _eligible(name: str, t: torch.Tensor, h) -> bool:
    """Tensors the fitter may step down: float matrices above the passthrough size that are not control vectors."""
    return precision_for(name, t.numel(), h, ndim=t.ndim, is_float=torch.is_floating_point(t),
                         rules=[("*", "int8")]) == "int8"


def _step_down(precision: str):
    i = FIT_LADDER.index(precision) if precision in FIT_LADDER else None
    if i is None or i + 1 >= len(FIT_LADDER):
        return None
    return FIT_LADDER[i + 1]


def _prune_candidates(entries: list):
    """All ±1 codes, ordered by the error their zeroing adds: w² − (w − q·s)² (× diag H when GPTQ'd)."""
    tids, fids, costs = [], [], []
    for ti, e in enumerate(entries):
        if e["kind"] != "q":
            continue
        q = torch.from_numpy(e["q"])
        idx = torch.nonzero(q.abs() == 1).reshape(-1)
        if idx.numel() == 0:
            continue
        w = e["w"].reshape(-1)[idx]
        cols = e["shape"][-1]
        s = torch.from_numpy(e["scale"]).float().repeat_interleave(cols)[idx]
        cost = w.square() - (w - q[idx].float() * s).square()
        if e["hdiag"] is not None:
            cost = cost * e["hdiag"][idx % cols]
        tids.append(torch.full((idx.numel(),), ti, dtype=torch.int64))
        fids.append(idx)
        costs.append(cost)
    if not tids:
        return None
    tid, fid, cost = torch.cat(tids), torch.cat(fids), torch.cat(costs)
    order = torch.argsort(cost, stable=True)
    return tid[order], fid[order]


def _pruned_entries(entries: list, cands, k: int) -> list:
    if k <= 0:
        return entries
    tid, fid = cands[0][:k], cands[1][:k]
    out = list(entries)
    for ti in torch.unique(tid).tolist():
        e = dict(entries[ti])
        q = e["q"].copy()
        q[fid[tid == ti].numpy()] = 0
        e["q"] = q
        out[ti] = e
    return out


# ------------------------------------------------------------------------------------------------ export + fitter
def export_artifact(model_sd: dict, h, code_bytes: int, log, hessians=None):
    """Quantize `model_sd` per QUANT_SCHEME (GPTQ where a Hessian is given), serialize, compress and fit under
    MAX_ARTIFACT_BYTES − code_bytes. Returns (blob, report); logs every fitter change as `budget: ...`."""
    cap = int(h.max_artifact_bytes)
    limit = cap - int(code_bytes)
    if limit <= 0:
        raise PgolfError(f"artifact budget: code alone is {code_bytes} bytes, MAX_ARTIFACT_BYTES is {cap}")
    rules = parse_quant_scheme(h.quant_scheme)
    names = list(model_sd)
    tensors = {n: model_sd[n] for n in names}
    precisions = {n: precision_for(n, t.numel(), h, ndim=t.ndim, is_float=torch.is_floating_point(t), rules=rules)
                  for n, t in tensors.items()}
    eligible = {n for n, t in tensors.items() if _eligible(n, t, h)}
    cache = {}

    def entries_for():
        # Quantize each tensor once per precision it is given (the fitter changes a few at a time).
        for n in names:
            if n not in cache or cache[n]["precision"] != precisions[n]:
                cache[n] = _make_entry(n, tensors[n], precisions[n], h, hessians)
        return [cache[n] for n in names]

    def build(entries, packed):
        return compress(serialize_entries(entries, packed), h.compressor, h.byte_shuffle)

    packed = bool(h.bit_pack)
    packing_tried = False
    pruned = 0
    steps = []
    while True:
        entries = final_entries = entries_for()
        blob = build(entries, packed)
        if len(blob) <= limit:
            break
        log(f"budget: {_budget_state(len(blob), code_bytes, cap)} over by {len(blob) - limit} bytes "
            f"({_precision_summary(precisions)}, packed:{int(packed)})")
        at_floor = all(_step_down(precisions[n]) is None for n in eligible)
        # Packing rarely beats int8 containers under an entropy coder: try it once, and again at the floor
        # (where the raw-size bound of the packed layout is what guarantees a fit).
        if not packed and (not packing_tried or at_floor):
            packing_tried = True
            alt = build(entries, True)
            log(f"budget: bit packing -> model {len(alt)} bytes (was {len(blob)})")
            if len(alt) < len(blob):
                packed, blob = True, alt
                if len(blob) <= limit:
                    break
        cands = _prune_candidates(entries)
        if cands is not None:
            found = _fit_by_pruning(entries, cands, packed, build, limit, len(blob), code_bytes, cap, log)
            if found is not None:
                pruned, blob, final_entries = found
                break
        # Step down one rung the largest tensors of the largest group (by raw bytes), as many as the estimated
        # saving (one bit per parameter per int rung) needs to cover the overflow with a margin.
        groups = {}
        for n in eligible:
            if _step_down(precisions[n]) is not None:
                groups.setdefault(precisions[n], []).append(n)
        if not groups:
            raise PgolfError(
                f"artifact budget: model {len(blob)} + code {code_bytes} = {len(blob) + code_bytes} bytes exceeds "
                f"MAX_ARTIFACT_BYTES {cap} even with every matrix at int4, packed, and all ±1 codes pruned"
            )
        sizes = {p: sum(_raw_tensor_bytes(tensors[n].shape, p, packed) for n in ns) for p, ns in groups.items()}
        worst = max(sorted(sizes), key=lambda p: sizes[p])
        new = _step_down(worst)
        need = _ART_STEP_MARGIN * (len(blob) - limit)
        chosen, saved = [], 0.0
        for n in sorted(groups[worst], key=lambda n: (-tensors[n].numel(), names.index(n))):
            chosen.append(n)
            saved += tensors[n].numel() * (precision_bits(worst) - precision_bits(new)) / 8.0
            if saved >= need:
                break
        for n in chosen:
            precisions[n] = new
        steps.append((worst, new, len(chosen)))
        log(f"budget: step {worst} -> {new} for {len(chosen)} of {len(groups[worst])} tensors "
            f"({sum(tensors[n].numel() for n in chosen)} params; estimated saving {int(saved)} bytes)")
    log(f"budget: fits {_budget_state(len(blob), code_bytes, cap)}"
        + (f" after {len(steps)} precision step(s), {pruned} pruned ±1 codes" if steps or pruned else ""))
    report = {
        "label": artifact_label(h),
        "model_bytes": len(blob),
        "code_bytes": int(code_bytes),
        "total_bytes": len(blob) + int(code_bytes),
        "cap": cap,
        "packed": packed,
        "pruned_codes": int(pruned),
        "precision_steps": [f"{a}->{b}:{n}" for a, b, n in steps],
        "precisions": dict(precisions),
        "groups": _group_summary(tensors, precisions, packed),
        "gptq_tensors": sum(1 for e in final_entries if e.get("gptq")),
        "raw_bytes": raw_container_size(final_entries, packed),
    }
    return blob, report


def _fit_by_pruning(entries, cands, packed, build, limit, size0, code_bytes, cap, log):
    """Fewest ±1 prunes (within a few probes) that fit; None if pruning them all does not."""
    n = int(cands[0].numel())
    blob_max = build(_pruned_entries(entries, cands, n), packed)
    log(f"budget: prune all {n} ±1 codes -> {_budget_state(len(blob_max), code_bytes, cap)}")
    if len(blob_max) > limit:
        return None
    # Bracketed false position (Illinois variant) on size(k) - limit: k=0 is over, k=n fits.
    lo, f_lo, hi, hi_blob = 0, float(size0 - limit), n, blob_max
    f_hi = float(len(blob_max) - limit)
    side = 0
    for _ in range(_ART_PRUNE_PROBES):
        if hi - lo <= max(1, n // 100):
            break
        k = lo + int(f_lo / max(f_lo - f_hi, 1e-9) * (hi - lo))
        k = min(max(k, lo + 1), hi - 1)
        blob = build(_pruned_entries(entries, cands, k), packed)
        log(f"budget: prune {k}/{n} ±1 codes -> {_budget_state(len(blob), code_bytes, cap)}")
        f = float(len(blob) - limit)
        if f <= 0:
            hi, f_hi, hi_blob = k, f, blob
            if side == -1:
                f_lo /= 2.0
            side = -1
        else:
            lo, f_lo = k, f
            if side == 1:
                f_hi /= 2.0
            side = 1
    log(f"budget: selective pruning of {hi} ±1 codes (of {n})")
    return hi, hi_blob, _pruned_entries(entries, cands, hi)


def _budget_state(model_bytes: int, code_bytes: int, cap: int) -> str:
    return f"model {model_bytes} + code {code_bytes} = {model_bytes + code_bytes}/{cap}"


def _precision_summary(precisions: dict) -> str:
    counts = {}
    for p in precisions.values():
        counts[p] = counts.get(p, 0) + 1
    return " ".join(f"{p}:{counts[p]}" for p in sorted(counts))


def _raw_tensor_bytes(shape, precision: str, packed: bool) -> int:
    numel = int(np.prod(tuple(shape))) if len(shape) else 1
    if precision.startswith("int"):
        rows = numel // shape[-1] if len(shape) > 1 else 1
        return (packed_size(numel, precision_bits(precision)) if packed else numel) + 2 * rows
    if precision == "fp16":
        return 2 * numel
    if precision == "fp32":
        return 4 * numel
    return 8 * numel  # raw tensors: bounded by int64/float64


def _group_summary(tensors: dict, precisions: dict, packed: bool) -> dict:
    out = {}
    for n, t in tensors.items():
        g = out.setdefault(precisions[n], {"tensors": 0, "numel": 0, "raw_bytes": 0})
        g["tensors"] += 1
        g["numel"] += t.numel()
        g["raw_bytes"] += _raw_tensor_bytes(t.shape, precisions[n], packed)
    return {k: out[k] for k in sorted(out)}


def artifact_size_bound(h, param_shapes, code_bytes: int = 0) -> dict:
    """Raw (pre-compression) container bytes per precision group for `param_shapes` ({name: shape}, float
    tensors), as configured and at the fitter's floor (every eligible matrix int4, packed), and whether the cap
    is guaranteed: compressed ≤ compress_bound(raw) for every method, so raw at the floor bounding the cap means
    the fitter always succeeds."""
    rules = parse_quant_scheme(h.quant_scheme)
    shapes = dict(param_shapes)
    cap = int(h.max_artifact_bytes)
    packed = bool(h.bit_pack)
    fake = {}
    floor = {}
    for n, shape in shapes.items():
        shape = tuple(int(s) for s in shape)
        numel = int(np.prod(shape)) if shape else 1
        p = precision_for(n, numel, h, ndim=len(shape), is_float=True, rules=rules)
        fake[n] = (shape, p)
        elig = precision_for(n, numel, h, ndim=len(shape), is_float=True, rules=[("*", "int8")]) == "int8"
        floor[n] = (shape, FIT_LADDER[-1] if elig else p)

    def summarize(spec, pk):
        groups = {}
        entries = []
        for n, (shape, p) in spec.items():
            g = groups.setdefault(p, {"tensors": 0, "numel": 0, "raw_bytes": 0})
            g["tensors"] += 1
            g["numel"] += int(np.prod(shape)) if shape else 1
            g["raw_bytes"] += _raw_tensor_bytes(shape, p, pk)
            entries.append(_shape_entry(n, shape, p))
        return {k: groups[k] for k in sorted(groups)}, raw_container_size(entries, pk)

    groups, raw_total = summarize(fake, packed)
    floor_groups, floor_total = summarize(floor, True)
    return {
        "cap": cap,
        "code_bytes": int(code_bytes),
        "packed": packed,
        "groups": groups,
        "raw_total": raw_total,
        "raw_bound_total": compress_bound(raw_total) + int(code_bytes),
        "fits_without_fitter": compress_bound(raw_total) + int(code_bytes) <= cap,
        "floor_groups": floor_groups,
        "floor_raw_total": floor_total,
        "fit_guaranteed": compress_bound(floor_total) + int(code_bytes) <= cap,
    }


def _shape_entry(name: str, shape: tuple, precision: str) -> dict:
    e = {"name": name, "shape": shape, "dtype": "float32"}
    if precision.startswith("int"):
        e.update(kind="q", bits=precision_bits(precision))
    else:
        e["kind"] = precision
    return e
