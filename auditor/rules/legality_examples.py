"""Examples of the PG4xx rules: small excerpts in the challenge's style (Hyperparameters from os.environ, eval_val,
sliding windows, TTT loops, n-gram caches). Each is a dict {name, files, rules, at}: `rules` lists the rules a legal
example must pass, or the one rule an illegal example belongs to; `at` gives, per finding, (file, start of the
evidence line[, which occurrence]). `examples(rule_id)` turns them into the located `Example`s of the rule classes
(auditor.rules.legality); tests/test_audit_rules.py runs those as plain files, lzma+base85 wrappers and
helper-module variants."""

from auditor.rules.base import Example

_HP = """import os, math, torch
import torch.nn.functional as F

class Hyperparameters:
    ttt_enabled = bool(int(os.environ.get("TTT_ENABLED", "1")))
    ttt_epochs = int(os.environ.get("TTT_EPOCHS", 3))
    ttt_chunk_tokens = int(os.environ.get("TTT_CHUNK_TOKENS", 32768))
    seq_len = int(os.environ.get("TRAIN_SEQ_LEN", 1024))
    val_files = os.path.join(os.environ.get("DATA_PATH", "./data"), "fineweb_val_*.bin")

def load_validation_tokens(pattern, seq_len):
    files = sorted(__import__("glob").glob(pattern))
    return torch.cat([torch.from_numpy(__import__("numpy").fromfile(f, dtype="<u2")[512:]) for f in files])

def eval_val(args, model, val_tokens):
    loss_sum, count = torch.zeros((), dtype=torch.float64), 0
    with torch.inference_mode():
        for s in range(0, val_tokens.numel() - 1 - args.seq_len, args.seq_len):
            x = val_tokens[s:s + args.seq_len].long()[None]
            y = val_tokens[s + 1:s + 1 + args.seq_len].long()[None]
            loss = model(x, y)
            loss_sum += loss.double() * y.numel()
            count += y.numel()
    return float(loss_sum / count)
"""

_MAIN = """
def main():
    args = Hyperparameters()
    model = torch.nn.Module()
    val_tokens = load_validation_tokens(args.val_files, args.seq_len)
    base = eval_val(args, model, val_tokens)
    {call}

if __name__ == "__main__":
    main()
"""

_SCORE_FIRST = (
    _HP
    + """
def eval_val_ttt(args, model, val_tokens):
    opt = torch.optim.SGD(model.parameters(), lr=0.002, momentum=0.9)
    loss_sum = torch.zeros((), dtype=torch.float64)
    n_chunks = (val_tokens.numel() - 1) // args.ttt_chunk_tokens
    for ci in range(n_chunks):
        start = ci * args.ttt_chunk_tokens
        chunk = val_tokens[start:start + args.ttt_chunk_tokens + 1].long()
        x, y = chunk[:-1][None], chunk[1:][None]
        model.eval()
        with torch.no_grad():
            nll = F.cross_entropy(model.forward_logits(x).flatten(0, 1), y.flatten(), reduction="none")
            loss_sum += nll.double().sum()
        if ci == n_chunks - 1:
            break
        model.train()
        for epoch in range(args.ttt_epochs):
            opt.zero_grad()
            loss = model(x, y)
            loss.backward()
            opt.step()
    return loss_sum
"""
    + _MAIN.replace("{call}", "if args.ttt_enabled:\n        eval_val_ttt(args, model, val_tokens)")
)

_TRAIN_THEN_SCORE = _SCORE_FIRST.replace(
    """        model.eval()
        with torch.no_grad():
            nll = F.cross_entropy(model.forward_logits(x).flatten(0, 1), y.flatten(), reduction="none")
            loss_sum += nll.double().sum()
        if ci == n_chunks - 1:
            break
        model.train()
        for epoch in range(args.ttt_epochs):
            opt.zero_grad()
            loss = model(x, y)
            loss.backward()
            opt.step()""",
    """        model.train()
        for epoch in range(args.ttt_epochs):
            opt.zero_grad()
            loss = model(x, y)
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            nll = F.cross_entropy(model.forward_logits(x).flatten(0, 1), y.flatten(), reduction="none")
            loss_sum += nll.double().sum()""",
)

_EPOCH_AROUND = (
    _HP
    + """
def eval_val_ttt(args, model, val_tokens):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    n_chunks = (val_tokens.numel() - 1) // args.ttt_chunk_tokens
    for epoch in range(args.ttt_epochs):
        loss_sum = torch.zeros((), dtype=torch.float64)
        for ci in range(n_chunks):
            chunk = val_tokens[ci * args.ttt_chunk_tokens:(ci + 1) * args.ttt_chunk_tokens + 1].long()
            x, y = chunk[:-1][None], chunk[1:][None]
            with torch.no_grad():
                nll = model(x, y)
                loss_sum += nll.double() * y.numel()
            loss = model(x, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return loss_sum
"""
    + _MAIN.replace("{call}", "eval_val_ttt(args, model, val_tokens)")
)

_PREQUANT_FT = (
    _HP
    + """
def _adapt_step(model, opt, x, y):
    loss = model(x, y)
    loss.backward()
    opt.step()
    opt.zero_grad()

def prequant_finetune(args, model, tokens):
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    for s in range(0, tokens.numel() - 1 - args.seq_len, args.seq_len):
        chunk = tokens[s:s + args.seq_len + 1].long()
        _adapt_step(model, opt, chunk[:-1][None], chunk[1:][None])

def main():
    args = Hyperparameters()
    model = torch.nn.Module()
    val_tokens = load_validation_tokens(args.val_files, args.seq_len)
    if int(os.environ.get("PREQUANT_TTT", "0")):
        prequant_finetune(args, model, val_tokens)
    torch.save(model.state_dict(), "final_model.pt")
    print(eval_val(args, model, val_tokens))

if __name__ == "__main__":
    main()
"""
)

_RESCORE = _SCORE_FIRST.replace(
    "eval_val_ttt(args, model, val_tokens)\n",
    "eval_val_ttt(args, model, val_tokens)\n    final = eval_val(args, model, val_tokens)\n",
)

_ORACLE_MIN = (
    _HP
    + """
def eval_two_pass(args, model, ema_model, val_tokens):
    loss_sum = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for s in range(0, val_tokens.numel() - 1 - args.seq_len, args.seq_len):
            x = val_tokens[s:s + args.seq_len].long()[None]
            y = val_tokens[s + 1:s + 1 + args.seq_len].long()[None]
            nll_a = F.cross_entropy(model.forward_logits(x)[0], y[0], reduction="none")
            nll_b = F.cross_entropy(ema_model.forward_logits(x)[0], y[0], reduction="none")
            loss_sum += torch.minimum(nll_a, nll_b).double().sum()
    return loss_sum
"""
    + _MAIN.replace("{call}", "eval_two_pass(args, model, model, val_tokens)")
)

_NGRAM_TGT_KEY = (
    _HP
    + """
def eval_ngram(args, model, val_tokens):
    cache = {}
    loss_sum = 0.0
    toks = val_tokens.tolist()
    with torch.no_grad():
        for t in range(2, len(toks)):
            ctx = toks[t - 2] * 1024 + toks[t - 1]
            y = toks[t]
            key = (ctx * 1000003 ^ y) % 4194304
            hit = cache.get(key, 0)
            p_model = model.prob(toks[:t], y)
            loss_sum += -math.log(0.8 * p_model + 0.2 * min(1.0, hit / 4.0) + 1e-9)
            cache[key] = hit + 1
    return loss_sum
"""
    + _MAIN.replace("{call}", "eval_ngram(args, model, val_tokens)")
)

_NGRAM_PREFIX_TILT = (
    _HP
    + """
def eval_ngram_tilt(args, model, val_tokens, beta=0.3):
    counts = torch.zeros(4096, 1024)
    loss_sum = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for s in range(0, val_tokens.numel() - 1 - args.seq_len, args.seq_len):
            x = val_tokens[s:s + args.seq_len].long()
            y = val_tokens[s + 1:s + 1 + args.seq_len].long()
            logits = model.forward_logits(x[None])[0]
            ctx = (x * 36313) % 4096
            tilt = torch.log1p(counts[ctx])
            logp = torch.log_softmax(logits + beta * tilt, dim=-1)
            nll = -logp.gather(-1, y[:, None]).squeeze(-1)
            loss_sum += nll.double().sum()
            counts.index_put_((ctx, y), torch.ones_like(y, dtype=torch.float), accumulate=True)
    return loss_sum
"""
    + _MAIN.replace("{call}", "eval_ngram_tilt(args, model, val_tokens)")
)

_TWO_PASS = (
    _HP
    + """
def eval_unigram_prior(args, model, val_tokens):
    prior = torch.bincount(val_tokens.long(), minlength=1024).float()
    prior = torch.log(prior / prior.sum())
    loss_sum = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for s in range(0, val_tokens.numel() - 1 - args.seq_len, args.seq_len):
            x = val_tokens[s:s + args.seq_len].long()
            y = val_tokens[s + 1:s + 1 + args.seq_len].long()
            logp = torch.log_softmax(model.forward_logits(x[None])[0] + prior, dim=-1)
            loss_sum += -logp.gather(-1, y[:, None]).sum().double()
    return loss_sum
"""
    + _MAIN.replace("{call}", "eval_unigram_prior(args, model, val_tokens)")
)

_WINDOW_DELTA = (
    _HP
    + """
def eval_sliding_delta(args, model, val_tokens, stride=64):
    loss_sum = torch.zeros((), dtype=torch.float64)
    for ws in range(0, val_tokens.numel() - args.seq_len - 1, stride):
        x = val_tokens[ws:ws + args.seq_len].long()[None]
        y = val_tokens[ws + 1:ws + args.seq_len + 1].long()[None]
        s = args.seq_len - stride
        delta = torch.zeros(1024, requires_grad=True)
        opt = torch.optim.Adam([delta], lr=0.1)
        for _ in range(2):
            with torch.no_grad():
                logits = model.forward_logits(x)
            loss = F.cross_entropy((logits + delta)[0, {sl}], y[0, {sl}])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            nll = F.cross_entropy((model.forward_logits(x) + delta)[0, s:], y[0, s:], reduction="sum")
            loss_sum += nll.double()
    return loss_sum
"""
    + _MAIN.replace("{call}", "eval_sliding_delta(args, model, val_tokens)")
)

_LORA_HELPER_MAIN = """import os, torch
from ttt_lora import eval_lora_ttt

def load_validation_tokens(pattern):
    return torch.load(pattern)

def main():
    model = torch.nn.Module()
    val_tokens = load_validation_tokens(os.environ.get("VAL_PATH", "fineweb_val_000000.pt"))
    print(eval_lora_ttt(model, val_tokens, chunk=48))

main()
"""
_LORA_HELPER = """import torch

def _lora_step(lora, opt, model, x, y):
    loss = model(x, y, lora=lora)
    opt.zero_grad()
    loss.backward()
    opt.step()

def eval_lora_ttt(model, tokens, chunk=48):
    loss_sum = torch.zeros((), dtype=torch.float64)
    lora = torch.nn.Parameter(torch.zeros(8, 512))
    opt = torch.optim.AdamW([lora], lr=1e-4)
    n = (tokens.numel() - 1) // chunk
    for ci in range(n):
        x = tokens[ci * chunk:(ci + 1) * chunk].long()[None]
        y = tokens[ci * chunk + 1:(ci + 1) * chunk + 1].long()[None]
        {body}
    return loss_sum
"""
_LORA_SCORE_FIRST = _LORA_HELPER.replace(
    "{body}",
    """with torch.no_grad():
            nll = model(x, y, lora=lora)
            loss_sum += nll.double() * y.numel()
        if ci < n - 1:
            _lora_step(lora, opt, model, x, y)""",
)
_LORA_TRAIN_FIRST = _LORA_HELPER.replace(
    "{body}",
    """_lora_step(lora, opt, model, x, y)
        with torch.no_grad():
            nll = model(x, y, lora=lora)
            loss_sum += nll.double() * y.numel()""",
)

LEGAL_EXAMPLES = [
    {"name": "score_first_chunked_ttt", "files": {"train_gpt.py": _SCORE_FIRST}, "rules": ["PG401", "PG402", "PG403"]},
    {
        "name": "lora_ttt_helper_score_first",
        "files": {"train_gpt.py": _LORA_HELPER_MAIN, "ttt_lora.py": _LORA_SCORE_FIRST},
        "rules": ["PG401", "PG402", "PG405"],
    },
    {
        "name": "prefix_ngram_tilt_renormalized",
        "files": {"train_gpt.py": _NGRAM_PREFIX_TILT},
        "rules": ["PG404", "PG406"],
    },
    {
        "name": "window_delta_context_only",
        "files": {"train_gpt.py": _WINDOW_DELTA.replace("{sl}", ":s")},
        "rules": ["PG405", "PG401"],
    },
    {"name": "prequant_ft_flag_off", "files": {"train_gpt.py": _PREQUANT_FT}, "rules": ["PG401"]},
]
ILLEGAL_EXAMPLES = [
    {"name": "train_then_score_chunk", "files": {"train_gpt.py": _TRAIN_THEN_SCORE}, "rules": ["PG401"],
     "at": (("train_gpt.py", "loss.backward()"),)},
    {"name": "epoch_loop_around_chunk_scoring", "files": {"train_gpt.py": _EPOCH_AROUND}, "rules": ["PG402"],
     "at": (("train_gpt.py", "loss_sum += nll.double() * y.numel()"),)},
    {
        "name": "prequant_ft_on_val_env_switched",
        "files": {
            "train_gpt.py": _PREQUANT_FT,
            "README.md": "## Run\n```\nPREQUANT_TTT=1 torchrun --standalone --nproc_per_node=8 train_gpt.py\n```\n",
        },
        "rules": ["PG401"], "at": (("train_gpt.py", "prequant_finetune(args, model, val_tokens)"),),
    },
    {"name": "rescore_after_ttt", "files": {"train_gpt.py": _RESCORE}, "rules": ["PG403"],
     "at": (("train_gpt.py", "final = eval_val("),)},
    {"name": "oracle_min_of_two_passes", "files": {"train_gpt.py": _ORACLE_MIN}, "rules": ["PG403"],
     "at": (("train_gpt.py", "loss_sum += torch.minimum(nll_a, nll_b)"),)},
    {"name": "ngram_cache_key_has_target", "files": {"train_gpt.py": _NGRAM_TGT_KEY}, "rules": ["PG404"],
     "at": (("train_gpt.py", "hit = cache.get(key, 0)"),)},
    {"name": "two_pass_unigram_prior", "files": {"train_gpt.py": _TWO_PASS}, "rules": ["PG406"],
     "at": (("train_gpt.py", "prior = torch.bincount("),)},
    {
        "name": "window_delta_on_scored_positions",
        "files": {"train_gpt.py": _WINDOW_DELTA.replace("{sl}", "s:")},
        "rules": ["PG405"], "at": (("train_gpt.py", "loss.backward()"),),
    },
    {
        "name": "lora_ttt_helper_train_first",
        "files": {"train_gpt.py": _LORA_HELPER_MAIN, "ttt_lora.py": _LORA_TRAIN_FIRST},
        "rules": ["PG401"], "at": (("ttt_lora.py", "_lora_step(lora, opt, model, x, y)"),),
    },
]

# Realistic shapes: windows assigned to chunks by their first scored token, batched sliding scoring under
# inference_mode, distributed all-reduce, SGD epochs on the already-scored chunk (never the last one).
_SLIDING_TTT = """import os, math, torch
import torch.distributed as dist
import torch.nn.functional as F

class Hyperparameters:
    val_files = os.path.join(os.environ.get("DATA_PATH", "./data"), "fineweb_val_*.bin")
    train_seq_len = int(os.environ.get("TRAIN_SEQ_LEN", 2048))
    eval_stride = int(os.environ.get("EVAL_STRIDE", 64))
    ttt_enabled = bool(int(os.environ.get("TTT_ENABLED", "0")))
    ttt_lr = float(os.environ.get("TTT_LR", 0.002))
    ttt_epochs = int(os.environ.get("TTT_EPOCHS", 3))
    ttt_chunk_tokens = int(os.environ.get("TTT_CHUNK_TOKENS", 32768))
    ttt_batch_seqs = int(os.environ.get("TTT_BATCH_SEQS", 32))

def eval_val_sliding_ttt(args, base_model, rank, world_size, device, val_tokens, base_bytes_lut):
    seq_len, stride, ttt_chunk = args.train_seq_len, args.eval_stride, args.ttt_chunk_tokens
    total_tokens = val_tokens.numel() - 1
    window_starts = [ws for ws in range(0, total_tokens, stride) if min(ws + seq_len, total_tokens) - ws >= 1]
    num_chunks = (total_tokens + ttt_chunk - 1) // ttt_chunk
    chunk_windows = [[] for _ in range(num_chunks)]
    for ws in window_starts:
        s = 0 if ws == 0 else max(min(ws + seq_len, total_tokens) - ws - stride, 0)
        chunk_windows[min((ws + s) // ttt_chunk, num_chunks - 1)].append(ws)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    token_count = torch.zeros((), device=device, dtype=torch.float64)
    byte_count = torch.zeros((), device=device, dtype=torch.float64)
    optimizer = torch.optim.SGD([p for p in base_model.parameters() if p.requires_grad], lr=args.ttt_lr, momentum=0.9)
    for ci in range(num_chunks):
        windows = chunk_windows[ci]
        my_windows = windows[len(windows) * rank // world_size:len(windows) * (rank + 1) // world_size]
        base_model.eval()
        with torch.inference_mode():
            for bi in range(0, len(my_windows), 32):
                batch_ws = my_windows[bi:bi + 32]
                x_batch = torch.zeros(len(batch_ws), seq_len, dtype=torch.int64, device=device)
                y_batch = torch.zeros(len(batch_ws), seq_len, dtype=torch.int64, device=device)
                wlens = []
                for i, ws in enumerate(batch_ws):
                    end = min(ws + seq_len, total_tokens)
                    wlen = end - ws
                    wlens.append(wlen)
                    chunk_tok = val_tokens[ws:end + 1].to(dtype=torch.int64, device=device)
                    x_batch[i, :wlen] = chunk_tok[:-1]
                    y_batch[i, :wlen] = chunk_tok[1:]
                logits = base_model.forward_logits(x_batch)
                nll = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y_batch.reshape(-1),
                                      reduction="none").reshape(len(batch_ws), seq_len)
                for i, ws in enumerate(batch_ws):
                    wlen = wlens[i]
                    s = 0 if ws == 0 else max(wlen - stride, 0)
                    scored_nll = nll[i, s:wlen].to(torch.float64)
                    loss_sum += scored_nll.sum()
                    token_count += float(wlen - s)
                    byte_count += base_bytes_lut[y_batch[i, s:wlen]].to(torch.float64).sum()
        is_last_chunk = ci == num_chunks - 1
        if not is_last_chunk and args.ttt_epochs > 0:
            base_model.train()
            chunk_start = ci * ttt_chunk
            chunk_end = min((ci + 1) * ttt_chunk, total_tokens)
            chunk_seqs = (chunk_end - chunk_start) // seq_len
            cos_lr = args.ttt_lr * 0.5 * (1.0 + math.cos(math.pi * ci / max(num_chunks - 1, 1)))
            for pg in optimizer.param_groups:
                pg["lr"] = cos_lr
            for _ep in range(args.ttt_epochs):
                for bs in range(0, chunk_seqs, args.ttt_batch_seqs):
                    be = min(bs + args.ttt_batch_seqs, chunk_seqs)
                    start_tok = chunk_start + bs * seq_len
                    end_tok = chunk_start + be * seq_len + 1
                    local = val_tokens[start_tok:end_tok].to(device=device, dtype=torch.int64)
                    x = local[:-1].reshape(-1, seq_len)
                    y = local[1:].reshape(-1, seq_len)
                    optimizer.zero_grad(set_to_none=True)
                    with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
                        loss = base_model(x, y)
                    loss.backward()
                    if world_size > 1:
                        for p in base_model.parameters():
                            if p.grad is not None:
                                dist.all_reduce(p.grad, op=dist.ReduceOp.AVG)
                    torch.nn.utils.clip_grad_norm_(base_model.parameters(), 1.0)
                    optimizer.step()
    if world_size > 1:
        for t in (loss_sum, token_count, byte_count):
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
    val_loss = (loss_sum / token_count).item()
    return val_loss, val_loss / math.log(2.0) * (token_count.item() / byte_count.item())

def main():
    args = Hyperparameters()
    device = torch.device("cuda")
    val_tokens = torch.load("val.pt")
    eval_model = torch.nn.Module()
    lut = torch.ones(1024)
    if args.ttt_enabled:
        print(eval_val_sliding_ttt(args, eval_model, 0, 1, device, val_tokens, lut))

if __name__ == "__main__":
    main()
"""

# Pre-quantization "TTT": score-first inside, but the adapted weights are then quantized, serialized and scored
# again - every token of the final score was seen by the weights.
_PREQUANT_TTT = _SLIDING_TTT.replace(
    """    if args.ttt_enabled:
        print(eval_val_sliding_ttt(args, eval_model, 0, 1, device, val_tokens, lut))""",
    """    base_model = torch.nn.Module()
    if args.ttt_enabled:
        eval_val_sliding_ttt(args, base_model, 0, 1, device, val_tokens, lut)
    torch.save(base_model.state_dict(), "final_model.pt")
    eval_model.load_state_dict(torch.load("final_model.pt"))
    print(eval_val_sliding(args, eval_model, device, val_tokens))""",
).replace(
    """def main():""",
    """def eval_val_sliding(args, model, device, val_tokens):
    nll_sum = torch.zeros((), dtype=torch.float64)
    with torch.inference_mode():
        for ws in range(0, val_tokens.numel() - args.train_seq_len, args.eval_stride):
            x = val_tokens[ws:ws + args.train_seq_len].long()[None]
            y = val_tokens[ws + 1:ws + args.train_seq_len + 1].long()[None]
            s = 0 if ws == 0 else args.train_seq_len - args.eval_stride
            nll_sum += F.cross_entropy(model.forward_logits(x)[0, s:], y[0, s:], reduction="sum").double()
    return nll_sum

def main():""",
)

LEGAL_EXAMPLES.append(
    {
        "name": "sliding_window_score_first_ttt_distributed",
        "rules": ["PG401", "PG402", "PG403", "PG404"],
        "files": {
            "train_gpt.py": _SLIDING_TTT,
            "README.md": "```\nTTT_ENABLED=1 torchrun --nproc_per_node=8 train_gpt.py\n```\n",
        },
    }
)
ILLEGAL_EXAMPLES.append(
    {
        "name": "prequant_ttt_then_quantized_eval",
        "rules": ["PG403"], "at": (("train_gpt.py", "print(eval_val_sliding(args, eval_model, device, val_tokens))"),),
        "files": {
            "train_gpt.py": _PREQUANT_TTT,
            "README.md": "```\nTTT_ENABLED=1 torchrun --nproc_per_node=8 train_gpt.py\n```\n",
        },
    }
)

_PER_DOC_RESCORE = (
    _HP
    + """
def split_docs(tokens, bos_id=1):
    starts = (tokens == bos_id).nonzero().flatten().tolist() + [tokens.numel()]
    return [tokens[a:b + 1] for a, b in zip(starts[:-1], starts[1:])]

def eval_doc_ttt(args, model, val_tokens):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    nll_total = torch.zeros((), dtype=torch.float64)
    for doc in split_docs(val_tokens):
        x, y = doc[:-1].long()[None], doc[1:].long()[None]
        for ep in range(args.ttt_epochs):
            nll = F.cross_entropy(model.forward_logits(x)[0], y[0], reduction="sum")
            if ep == args.ttt_epochs - 1:
                nll_total += nll.detach().double()
            opt.zero_grad()
            model(x, y).backward()
            opt.step()
    return nll_total
"""
    + _MAIN.replace("{call}", "eval_doc_ttt(args, model, val_tokens)")
)

_ONLINE_DICT_CACHE = (
    _HP
    + """
class BigramHash(torch.nn.Module):
    def __init__(self, buckets=2048, dim=128):
        super().__init__()
        self.buckets = buckets
        self.embed = torch.nn.Embedding(buckets, dim)

    def forward(self, input_ids):
        t = input_ids.to(torch.int64)
        h = torch.empty_like(t)
        h[..., 0] = self.buckets - 1
        h[..., 1:] = ((36313 * t[..., 1:]) ^ (27191 * t[..., :-1])) % (self.buckets - 1)
        return self.embed(h)

def eval_online_cache(args, model, val_tokens, vocab=1024, lam=0.1):
    cache = {}
    loss_sum = 0.0
    toks = val_tokens.tolist()
    with torch.no_grad():
        logp_all = torch.log_softmax(model.forward_logits(val_tokens[None, :-1].long())[0], dim=-1)
        for t in range(1, len(toks)):
            ctx = toks[t - 1]
            row = cache.get(ctx)
            p_model = logp_all[t - 1].exp()
            if row is not None:
                p_cache = row / row.sum()
                p = (1 - lam) * p_model + lam * p_cache
            else:
                p = p_model
            loss_sum += -math.log(float(p[toks[t]]))
            if row is None:
                row = cache[ctx] = torch.zeros(vocab)
            row[toks[t]] += 1.0
    return loss_sum
"""
    + _MAIN.replace("{call}", "eval_online_cache(args, model, val_tokens)")
)

_ORACLE_MAX = _ORACLE_MIN.replace("torch.minimum(nll_a, nll_b)", "-torch.maximum(-nll_a, -nll_b)")

ILLEGAL_EXAMPLES.append(
    {
        "name": "per_document_multi_epoch_last_epoch_scored",
        "files": {"train_gpt.py": _PER_DOC_RESCORE},
        "rules": ["PG402"], "at": (("train_gpt.py", "nll_total += nll.detach().double()"),),
    }
)
ILLEGAL_EXAMPLES.append(
    {"name": "oracle_max_logprob_of_two_models", "files": {"train_gpt.py": _ORACLE_MAX}, "rules": ["PG403"],
     "at": (("train_gpt.py", "loss_sum += -torch.maximum("),)}
)
LEGAL_EXAMPLES.append(
    {
        "name": "online_context_keyed_cache_and_bigram_hash",
        "files": {"train_gpt.py": _ONLINE_DICT_CACHE},
        "rules": ["PG404", "PG406", "PG401"],
    }
)

_UPDATE_BEFORE_SCORE = _ONLINE_DICT_CACHE.replace(
    """            p_model = logp_all[t - 1].exp()
            if row is not None:""",
    """            p_model = logp_all[t - 1].exp()
            if row is None:
                row = cache[ctx] = torch.zeros(vocab)
            row[toks[t]] += 1.0
            if row is not None:""",
)
ILLEGAL_EXAMPLES.append(
    {
        "name": "cache_updated_with_token_before_scoring_it",
        "files": {"train_gpt.py": _UPDATE_BEFORE_SCORE},
        "rules": ["PG406"], "at": (("train_gpt.py", "row[toks[t]] += 1.0", 1),),
    }
)

_GPTQ_ON = (
    _HP
    + """
def collect_hessians(model, tokens, n_batches=16):
    hessians = {}
    def hook(mod, inp, out):
        x = inp[0].flatten(0, -2).float()
        hessians[mod] = hessians.get(mod, 0) + x.T @ x
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        for i in range(n_batches):
            model.forward_logits(tokens[i * 2048:(i + 1) * 2048].long()[None])
    for h in handles:
        h.remove()
    return hessians

def main():
    args = Hyperparameters()
    model = torch.nn.Module()
    val_tokens = load_validation_tokens(args.val_files, args.seq_len)
    calib = {source}
    H = collect_hessians(model, calib)
    torch.save({{"w": model.state_dict(), "h": len(H)}}, "final_model.int6.ptz")
    print(eval_val(args, model, val_tokens))

if __name__ == "__main__":
    main()
"""
)
ILLEGAL_EXAMPLES.append(
    {
        "name": "gptq_hessians_on_validation_tokens",
        "rules": ["PG401"], "at": (("train_gpt.py", "H = collect_hessians(model, calib)"),),
        "files": {
            "train_gpt.py": _GPTQ_ON.replace("{source}", "val_tokens[:32768]").replace("{{", "{").replace("}}", "}")
        },
    }
)
LEGAL_EXAMPLES.append(
    {
        "name": "gptq_hessians_on_self_generated_tokens",
        "rules": ["PG401"],
        "files": {
            "train_gpt.py": _GPTQ_ON.replace("{source}", "torch.randint(0, 1024, (32768,))")
            .replace("{{", "{")
            .replace("}}", "}")
        },
    }
)

_ITER_TTT = (
    _HP
    + """
def chunk_batches(val_tokens, n):
    for ci in range((val_tokens.numel() - 1) // n):
        c = val_tokens[ci * n:(ci + 1) * n + 1].long()
        yield c[:-1][None], c[1:][None]

def eval_iter_ttt(args, model, val_tokens):
    opt = torch.optim.SGD(model.parameters(), lr=0.002)
    it = chunk_batches(val_tokens, args.ttt_chunk_tokens)
    n = (val_tokens.numel() - 1) // args.ttt_chunk_tokens
    loss_sum = torch.zeros((), dtype=torch.float64)
    for i in range(n):
        x, y = next(it)
        with torch.no_grad():
            loss_sum += model(x, y).double() * y.numel()
        if i < n - 1:
            opt.zero_grad()
            model(x, y).backward()
            opt.step()
    return loss_sum
"""
    + _MAIN.replace("{call}", "eval_iter_ttt(args, model, val_tokens)")
)
LEGAL_EXAMPLES.append(
    {"name": "iterator_fed_score_first_ttt", "files": {"train_gpt.py": _ITER_TTT}, "rules": ["PG401", "PG402"]}
)
ILLEGAL_EXAMPLES.append(
    {
        "name": "iterator_fed_ttt_inside_epoch_loop",
        "rules": ["PG402"], "at": (("train_gpt.py", "loss_sum += model(x, y).double() * y.numel()"),),
        "files": {
            "train_gpt.py": _ITER_TTT.replace(
                """    loss_sum = torch.zeros((), dtype=torch.float64)
    for i in range(n):
        x, y = next(it)""",
                """    loss_sum = torch.zeros((), dtype=torch.float64)
    for epoch in range(args.ttt_epochs):
      it = chunk_batches(val_tokens, args.ttt_chunk_tokens)
      for i in range(n):
        x, y = next(it)""",
            ).replace(
                """        with torch.no_grad():
            loss_sum += model(x, y).double() * y.numel()
        if i < n - 1:
            opt.zero_grad()
            model(x, y).backward()
            opt.step()""",
                """        with torch.no_grad():
            loss_sum += model(x, y).double() * y.numel()
        opt.zero_grad()
        model(x, y).backward()
        opt.step()""",
            )
        },
    }
)

# Two passes in one function: a score-first TTT pass, then the adapted model rescores every token and that second
# sum is the one reported.
_TWO_PASS_RESCORE = _SCORE_FIRST.replace(
    """            loss.backward()
            opt.step()
    return loss_sum
""",
    """            loss.backward()
            opt.step()
    rescored = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for ci in range(n_chunks):
            chunk = val_tokens[ci * args.ttt_chunk_tokens:(ci + 1) * args.ttt_chunk_tokens + 1].long()
            rescored += model(chunk[:-1][None], chunk[1:][None]).double() * args.ttt_chunk_tokens
    return rescored
""",
)
ILLEGAL_EXAMPLES.append(
    {
        "name": "two_pass_rescoring_after_ttt_loop",
        "files": {"train_gpt.py": _TWO_PASS_RESCORE},
        "rules": ["PG403"], "at": (("train_gpt.py", "rescored += model("),),
    }
)

_NGRAM_ORDER_ORACLE = _HP + """
def eval_ngram_orders(args, model, val_tokens, vocab=1024):
    uni = torch.ones(vocab)
    bi = torch.ones(vocab, vocab)
    loss_sum = 0.0
    toks = val_tokens.long()
    with torch.no_grad():
        logp = torch.log_softmax(model.forward_logits(toks[None, :-1])[0], dim=-1)
        for t in range(1, toks.numel() - 1):
            y = toks[t + 1]
            p_uni = uni[y] / uni.sum()
            p_bi = bi[toks[t], y] / bi[toks[t]].sum()
            p_best = torch.maximum(p_uni, p_bi)
            loss_sum += -torch.logaddexp(logp[t, y] + math.log(0.9), torch.log(p_best) + math.log(0.1)).item()
            uni[y] += 1
            bi[toks[t], y] += 1
    return loss_sum
""" + _MAIN.replace("{call}", "eval_ngram_orders(args, model, val_tokens)")
ILLEGAL_EXAMPLES.append({"name": "ngram_order_chosen_by_target_probability", "rules": ["PG403"],
                         "at": (("train_gpt.py", "p_best = torch.maximum(p_uni, p_bi)"),),
                         "files": {"train_gpt.py": _NGRAM_ORDER_ORACLE}})
LEGAL_EXAMPLES.append({"name": "ngram_orders_mixed_with_fixed_weights", "rules": ["PG403", "PG404", "PG406"],
                       "files": {"train_gpt.py": _NGRAM_ORDER_ORACLE.replace(
                           "p_best = torch.maximum(p_uni, p_bi)", "p_best = 0.3 * p_uni + 0.7 * p_bi")}})


def _line_of(text: str, needle: str, nth: int = 0) -> int:
    """1-based line of the statement line starting with `needle` (the example's evidence line): the only one, or
    the nth (1-based) when the example repeats it."""
    hits = [i for i, ln in enumerate(text.splitlines(), 1) if ln.strip().startswith(needle)]
    if (len(hits) != 1 and not nth) or len(hits) < max(nth, 1):
        raise ValueError(f"example evidence {needle!r}: expected one line starting with it, found {len(hits)}")
    return hits[max(nth, 1) - 1]


def _example(d: dict) -> Example:
    at = tuple((loc[0], _line_of(d["files"][loc[0]], *loc[1:])) for loc in d.get("at", ()))
    return Example(d["name"], dict(d["files"]), points_at=at, env=dict(d.get("env", {})), note=d.get("note", ""))


def examples(rule_id: str) -> tuple:
    """(LEGAL, ILLEGAL) Examples of one rule: the legal ones that list it, the illegal ones that are its own."""
    legal = tuple(_example(d) for d in LEGAL_EXAMPLES if rule_id in d["rules"])
    illegal = tuple(_example(d) for d in ILLEGAL_EXAMPLES if d["rules"] == [rule_id])
    return legal, illegal


# ---- calibration on real submissions: shapes that were false positives / negatives -------------------------------

# Per-window TTT on the already-scored context prefix only, weights restored after each window; the caller then
# evaluates again (legal: the restored weights carry nothing from validation tokens).
_PREFIX_TTT_RESTORED = _HP + """
def eval_prefix_ttt(args, model, val_tokens, stride=64):
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    loss_sum = torch.zeros((), dtype=torch.float64)
    for ws in range(0, val_tokens.numel() - 1 - args.seq_len, stride):
        chunk = val_tokens[ws:ws + args.seq_len + 1].long()
        x, y = chunk[:-1][None], chunk[1:][None]
        s = 0 if ws == 0 else args.seq_len - stride
        if s > 0:
            opt = torch.optim.Adam(model.parameters(), lr=1e-4)
            for _ in range(2):
                opt.zero_grad()
                ttt_loss = model(x[:, :s], y[:, :s])
                ttt_loss.backward()
                opt.step()
        with torch.inference_mode():
            nll = F.cross_entropy(model.forward_logits(x)[0], y[0], reduction="none")
        loss_sum += nll[s:].double().sum()
        model.load_state_dict(saved)
    return loss_sum
""" + _MAIN.replace("{call}", "eval_prefix_ttt(args, model, val_tokens)\n    final = eval_val(args, model, val_tokens)")

# A logit bias tensor created per call and fitted on context positions only; the model is untouched, so scoring
# again afterwards is not a rescoring of adapted weights.
_CONTEXT_BIAS = _HP + """
def eval_context_bias(args, model, val_tokens, stride=64):
    bias = torch.zeros(1024)
    loss_sum = torch.zeros((), dtype=torch.float64)
    for ws in range(0, val_tokens.numel() - 1 - args.seq_len, stride):
        chunk = val_tokens[ws:ws + args.seq_len + 1].long()
        x, y = chunk[:-1], chunk[1:]
        with torch.inference_mode():
            logits = model.forward_logits(x[None])[0]
        s = 0 if ws == 0 else args.seq_len - stride
        if s > 0:
            b = bias.clone().detach().requires_grad_(True)
            opt = torch.optim.SGD([b], lr=0.1)
            ctx_logits, ctx_y = logits[:s].detach(), y[:s]
            loss = F.cross_entropy(ctx_logits + b, ctx_y)
            loss.backward()
            opt.step()
            bias = b.detach()
        loss_sum += F.cross_entropy(logits[s:] + bias, y[s:], reduction="sum").double()
    return loss_sum
""" + _MAIN.replace("{call}", "eval_context_bias(args, model, val_tokens)\n    final = eval_val(args, model, val_tokens)")

# A compile warm-up that trains a throw-away adapter on a few validation tokens and deletes it before the scored
# evaluation (warning: disputed, the scored weights never see it) vs. the same adapter then used for scoring (error).
_WARMUP = _HP + """
class Adapter(torch.nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.delta = torch.nn.Parameter(torch.zeros(dim))

def main():
    args = Hyperparameters()
    model = torch.nn.Module()
    val_tokens = load_validation_tokens(args.val_files, args.seq_len)
    warm = Adapter(1024)
    wopt = torch.optim.AdamW(warm.parameters(), lr=1e-3)
    xw = val_tokens[:args.seq_len].long()[None]
    yw = val_tokens[1:args.seq_len + 1].long()[None]
    warm_loss = model(xw, yw, adapter=warm)
    warm_loss.backward()
    wopt.step()
    {after}

if __name__ == "__main__":
    main()
"""

_LSE_MIX = _HP + """
import numpy as np

def eval_mixture(args, model, ema_model, val_tokens, w=0.2):
    loss_sum = 0.0
    with torch.no_grad():
        for s in range(0, val_tokens.numel() - 1 - args.seq_len, args.seq_len):
            x = val_tokens[s:s + args.seq_len].long()[None]
            y = val_tokens[s + 1:s + 1 + args.seq_len].long()[None]
            lp_a = -F.cross_entropy(model.forward_logits(x)[0], y[0], reduction="none").numpy()
            lp_b = -F.cross_entropy(ema_model.forward_logits(x)[0], y[0], reduction="none").numpy()
            max_lp = np.maximum(lp_a, lp_b)
            mix_lp = max_lp + np.log((1 - w) * np.exp(lp_a - max_lp) + w * np.exp(lp_b - max_lp))
            loss_sum += float(-mix_lp.sum())
    return loss_sum
""" + _MAIN.replace("{call}", "eval_mixture(args, model, model, val_tokens)")

LEGAL_EXAMPLES += [
    {"name": "per_window_prefix_ttt_weights_restored", "files": {"train_gpt.py": _PREFIX_TTT_RESTORED},
     "rules": ["PG401", "PG403", "PG405"]},
    {"name": "context_only_logit_bias_then_plain_eval", "files": {"train_gpt.py": _CONTEXT_BIAS},
     "rules": ["PG401", "PG403", "PG405"]},
    {"name": "logsumexp_mixture_shift_is_not_an_oracle", "files": {"train_gpt.py": _LSE_MIX}, "rules": ["PG403"]},
]
ILLEGAL_EXAMPLES += [
    {"name": "adapter_trained_on_val_then_used_for_scoring", "rules": ["PG401"],
     "files": {"train_gpt.py": _WARMUP.replace(
         "{after}", "model.adapter = warm\n    print(eval_val(args, model, val_tokens))")},
     "at": (("train_gpt.py", "warm_loss.backward()"),)},
]
# the throw-away form is a warning (tests/test_legality_calibration.py), so it is no LEGAL example of PG401
WARMUP_THROWAWAY = _WARMUP.replace("{after}", "del warm, wopt\n    print(eval_val(args, model, val_tokens))")

# Hashed n-gram cache whose lookup key is the context hash extended by the token that follows the context (the
# realized target), written with position offsets instead of target names; and the context-only form that reads a
# full row of next-token counts.
_NGRAM_OFFSET_KEY = _HP + """
import numpy as np

def ngram_keys(toks, pos, order, mask, primes):
    h = np.zeros(pos.size, dtype=np.uint64)
    for k in range(order - 1):
        h ^= toks[pos - (order - 1 - k)].astype(np.uint64) * primes[k]
    ctx_idx = (h & mask).astype(np.int64)
    full_idx = ((h ^ (toks[pos].astype(np.uint64) * primes[order])) & mask).astype(np.int64)
    return ctx_idx, full_idx

def eval_ngram_mix(args, model, val_tokens, alpha=0.3, mask=4194303):
    toks = val_tokens.numpy()
    primes = np.array([36313, 27191, 51647, 81929, 131071], dtype=np.uint64)
    ctx_t, full_t = np.zeros(mask + 1), np.zeros(mask + 1)
    loss_sum = 0.0
    with torch.no_grad():
        for s in range(0, len(toks) - 1 - args.seq_len, args.seq_len):
            x = torch.from_numpy(toks[s:s + args.seq_len]).long()[None]
            y = torch.from_numpy(toks[s + 1:s + 1 + args.seq_len]).long()[None]
            p = torch.exp(-F.cross_entropy(model.forward_logits(x)[0], y[0], reduction="none")).numpy()
            pos = np.arange(s + 3, s + 1 + args.seq_len)
            ck, fk = ngram_keys(toks, pos, 3, mask, primes)
            cc, fc = ctx_t[ck], full_t[fk]
            p_ng = np.minimum(fc, cc) / np.maximum(cc, 1.0)
            p[2:] = (1 - alpha) * p[2:] + alpha * p_ng
            loss_sum += float(-np.log(p).sum())
            np.add.at(ctx_t, ck, 1)
            np.add.at(full_t, fk, 1)
    return loss_sum
""" + _MAIN.replace("{call}", "eval_ngram_mix(args, model, val_tokens)")

ILLEGAL_EXAMPLES.append(
    {"name": "ngram_key_extends_context_with_next_token", "rules": ["PG404"],
     "files": {"train_gpt.py": _NGRAM_OFFSET_KEY}, "at": (("train_gpt.py", "cc, fc = ctx_t[ck], full_t[fk]"),)}
)

_NGRAM_CTX_ROW = _HP + """
import numpy as np

def ctx_keys(toks, pos, order, mask, primes):
    h = np.zeros(pos.size, dtype=np.uint64)
    for k in range(order - 1):
        h ^= toks[pos - (order - 1 - k)].astype(np.uint64) * primes[k]
    return (h & mask).astype(np.int64)

def eval_ngram_rows(args, model, val_tokens, alpha=0.3, mask=4095, vocab=1024):
    toks = val_tokens.numpy()
    primes = np.array([36313, 27191, 51647], dtype=np.uint64)
    counts = np.zeros((mask + 1, vocab))
    loss_sum = 0.0
    with torch.no_grad():
        for s in range(0, len(toks) - 1 - args.seq_len, args.seq_len):
            x = torch.from_numpy(toks[s:s + args.seq_len]).long()[None]
            y = torch.from_numpy(toks[s + 1:s + 1 + args.seq_len]).long()[None]
            probs = torch.softmax(model.forward_logits(x)[0], -1).numpy()
            pos = np.arange(s + 3, s + 1 + args.seq_len)
            ck = ctx_keys(toks, pos, 3, mask, primes)
            rows = counts[ck]
            p_ng = (rows + 1e-3) / (rows + 1e-3).sum(-1, keepdims=True)
            mixed = probs[2:] * (1 - alpha) + alpha * p_ng
            loss_sum += float(-np.log(mixed[np.arange(len(pos)), toks[pos]]).sum())
            np.add.at(counts, (ck, toks[pos]), 1)
    return loss_sum
""" + _MAIN.replace("{call}", "eval_ngram_rows(args, model, val_tokens)")
LEGAL_EXAMPLES.append(
    {"name": "ngram_context_key_full_row_mixture", "rules": ["PG404", "PG406"],
     "files": {"train_gpt.py": _NGRAM_CTX_ROW}}
)

# The better of two predictions kept by a comparison instead of min(): the mixed loss replaces the model's loss only
# where it happens to be lower for the realized token.
_KEEP_BETTER = _HP + """
def eval_keep_better(args, model, ema_model, val_tokens):
    loss_sum = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for s in range(0, val_tokens.numel() - 1 - args.seq_len, args.seq_len):
            x = val_tokens[s:s + args.seq_len].long()[None]
            y = val_tokens[s + 1:s + 1 + args.seq_len].long()[None]
            scored_nll = F.cross_entropy(model.forward_logits(x)[0], y[0], reduction="none")
            alt_nll = F.cross_entropy(ema_model.forward_logits(x)[0], y[0], reduction="none")
            for t in range(scored_nll.numel()):
                new_nll = alt_nll[t].item()
                if new_nll < scored_nll[t].item():
                    scored_nll[t] = new_nll
            loss_sum += scored_nll.double().sum()
    return loss_sum
""" + _MAIN.replace("{call}", "eval_keep_better(args, model, model, val_tokens)")
ILLEGAL_EXAMPLES.append(
    {"name": "better_of_two_losses_kept_by_comparison", "rules": ["PG403"],
     "files": {"train_gpt.py": _KEEP_BETTER}, "at": (("train_gpt.py", "if new_nll < scored_nll[t].item():"),)}
)

# Byte-level mixture (pattern J): the model's log-probability of the realized token is spread evenly over that
# token's bytes and mixed with a byte-level count model; the result is no distribution over next tokens.
_BYTE_MIX = _HP + """
import numpy as np

def byte_mixture_bpb(tgt_ids, token_lp, piece_bytes, lam=0.7):
    lens = np.array([len(b) for b in piece_bytes])
    tok_len = lens[tgt_ids]
    byte_lp = np.repeat(token_lp, tok_len) / np.repeat(tok_len, tok_len)
    stream = b"".join(piece_bytes[int(t)] for t in tgt_ids)
    counts = np.ones(256)
    byte_model_lp = np.empty(len(stream))
    for i, b in enumerate(stream):
        byte_model_lp[i] = np.log(counts[b] / counts.sum())
        counts[b] += 1
    p = lam * np.exp(byte_lp) + (1 - lam) * np.exp(byte_model_lp)
    return float(-np.log2(p).sum() / len(stream))

def eval_with_byte_mixer(args, model, val_tokens, piece_bytes):
    tgt_list, lp_list = [], []
    with torch.no_grad():
        for s in range(0, val_tokens.numel() - 1 - args.seq_len, args.seq_len):
            x = val_tokens[s:s + args.seq_len].long()[None]
            y = val_tokens[s + 1:s + 1 + args.seq_len].long()[None]
            nll = F.cross_entropy(model.forward_logits(x)[0], y[0], reduction="none")
            tgt_list.append(y[0].numpy())
            lp_list.append((-nll).double().numpy())
    return byte_mixture_bpb(np.concatenate(tgt_list), np.concatenate(lp_list), piece_bytes)
""" + _MAIN.replace("{call}", "print(eval_with_byte_mixer(args, model, val_tokens, [b'a'] * 1024))")
ILLEGAL_EXAMPLES.append(
    {"name": "byte_mixer_spreads_realized_token_logprob", "rules": ["PG404"],
     "files": {"train_gpt.py": _BYTE_MIX}, "at": (("train_gpt.py", "p = lam * np.exp(byte_lp)"),)}
)

# A compile warm-up of a few steps whose weights are put back from a snapshot before training and evaluation go on
# (legal whatever data the warm-up read), and a per-token buffer keeping the best loss over several passes (illegal
# although no accumulator is named like a loss sum).
_WARMUP_RESTORED = _HP + """
def main():
    args = Hyperparameters()
    model = torch.nn.Module()
    val_tokens = load_validation_tokens(args.val_files, args.seq_len)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    initial_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    for _ in range(3):
        warm_loss = model(val_tokens[:args.seq_len].long()[None], val_tokens[1:args.seq_len + 1].long()[None])
        warm_loss.backward()
        opt.step()
    model.load_state_dict(initial_state)
    print(eval_val(args, model, val_tokens))

if __name__ == "__main__":
    main()
"""

_BEST_OVER_PASSES = _HP + """
def eval_best_of_passes(args, model, val_tokens, passes=3):
    n = val_tokens.numel() - 1
    best_nll = torch.full((n,), float("inf"))
    for _ in range(passes):
        with torch.no_grad():
            for s in range(0, n - args.seq_len, args.seq_len):
                x = val_tokens[s:s + args.seq_len].long()[None]
                y = val_tokens[s + 1:s + 1 + args.seq_len].long()[None]
                nll = F.cross_entropy(model.forward_logits(x)[0], y[0], reduction="none")
                best_nll[s:s + args.seq_len] = torch.minimum(best_nll[s:s + args.seq_len], nll)
    total = best_nll[best_nll < float("inf")].double().sum()
    return total
""" + _MAIN.replace("{call}", "eval_best_of_passes(args, model, val_tokens)")

LEGAL_EXAMPLES.append(
    {"name": "warmup_steps_then_weights_restored", "rules": ["PG401", "PG403"],
     "files": {"train_gpt.py": _WARMUP_RESTORED}}
)
ILLEGAL_EXAMPLES.append(
    {"name": "per_token_best_loss_over_passes", "rules": ["PG403"], "files": {"train_gpt.py": _BEST_OVER_PASSES},
     "at": (("train_gpt.py", "best_nll[s:s + args.seq_len] = torch.minimum("),)}
)

# Exact (unhashed) n-gram dictionaries, but the probability of the realized token is a count looked up with the
# target over a separately kept context total: no distribution over the vocabulary is ever formed.
_DICT_TARGET_COUNT = _HP + """
class Cache:
    def __init__(self):
        self.counts, self.totals = {}, {}

    def prob(self, ctx, target, vocab=1024):
        counts_ctx = self.counts.get(ctx, {})
        total = self.totals.get(ctx, 0)
        count = counts_ctx.get(target, 0)
        return (count + 1) / (total + vocab)

    def update(self, ctx, tok):
        d = self.counts.setdefault(ctx, {})
        d[tok] = d.get(tok, 0) + 1
        self.totals[ctx] = self.totals.get(ctx, 0) + 1

def eval_dict_cache(args, model, val_tokens, lam=0.2):
    cache = Cache()
    toks = val_tokens.tolist()
    loss_sum = 0.0
    with torch.no_grad():
        logp = torch.log_softmax(model.forward_logits(val_tokens[None, :-1].long())[0], -1)
        for t in range(2, len(toks)):
            ctx, y = (toks[t - 2], toks[t - 1]), toks[t]
            p = (1 - lam) * logp[t - 1, y].exp().item() + lam * cache.prob(ctx, y)
            loss_sum += -math.log(p)
            cache.update(ctx, y)
    return loss_sum
""" + _MAIN.replace("{call}", "eval_dict_cache(args, model, val_tokens)")
ILLEGAL_EXAMPLES.append(
    {"name": "exact_dict_cache_target_count_over_context_total", "rules": ["PG404"],
     "files": {"train_gpt.py": _DICT_TARGET_COUNT}, "at": (("train_gpt.py", "return (count + 1) / (total + vocab)"),)}
)

# The same per-window bias fitted on every position of the window, scored ones included (`reshape(-1)` is no step
# back to an earlier chunk).
ILLEGAL_EXAMPLES.append(
    {"name": "window_bias_fitted_on_all_positions_reshape", "rules": ["PG405"],
     "files": {"train_gpt.py": _CONTEXT_BIAS.replace(
         "ctx_logits, ctx_y = logits[:s].detach(), y[:s]",
         "ctx_logits, ctx_y = logits.reshape(-1, 1024).detach(), y.reshape(-1)")},
     "at": (("train_gpt.py", "loss.backward()"),)}
)
