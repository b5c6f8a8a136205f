"""`pgolf data fetch`: download the challenge's tokenized FineWeb shards and tokenizer from the Hugging Face hub.

Mirrors the challenge's `data/cached_challenge_fineweb.py`: the dataset repo (`repo_type="dataset"`) holds, under
the root prefix `datasets/`, a `manifest.json`, the shards `datasets/fineweb10B_<variant>/fineweb_{train,val}_%06d.bin`
and the tokenizer files named in the manifest (`tokenizers/fineweb_<V>_bpe.model`). Files land in OUT with the
prefix dropped (OUT/manifest.json, OUT/datasets/fineweb10B_<variant>/, OUT/tokenizers/), the challenge's `data/`
layout. Re-running resumes: files already present and valid are kept, the hub library resumes partial downloads,
and every shard is validated before it is put in place. `--repo-id` may also name a local directory laid out like
the repo (an offline mirror).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from trainer.errors import PgolfError
from trainer.shards import ShardError, shard_token_count

DEFAULT_REPO_IDS = {"sp1024": "willdepueoai/parameter-golf", "sp8192": "kevclark/parameter-golf"}
REPO_ENV = "MATCHED_FINEWEB_REPO_ID"
ROOT_ENV = "MATCHED_FINEWEB_REMOTE_ROOT_PREFIX"
DEFAULT_ROOT = "datasets"
CHALLENGE_TRAIN_SHARDS = 80


class FetchError(PgolfError):
    """A download that cannot be done: offline, missing repo or file, or a corrupt file."""


class _NoSuchError(Exception):
    """Stands in for a huggingface_hub exception class that an older version does not define."""


class _HubErrors:
    """huggingface_hub's exception classes, wherever this version keeps them (`errors` since 0.24, else `utils`)."""

    def __init__(self):
        try:
            from huggingface_hub import errors as mod
        except ImportError:  # pragma: no cover - old huggingface_hub
            from huggingface_hub import utils as mod
        for name in ("LocalEntryNotFoundError", "EntryNotFoundError", "OfflineModeIsEnabled", "GatedRepoError",
                     "RepositoryNotFoundError", "RevisionNotFoundError"):
            setattr(self, name, getattr(mod, name, _NoSuchError))


def _hub_error(exc: Exception, repo_id: str, remote: str) -> FetchError:
    """Turn a huggingface_hub exception into one line saying what failed and why."""
    hf_errors = _HubErrors()

    where = f"{remote} from dataset repo {repo_id}"
    if isinstance(exc, hf_errors.LocalEntryNotFoundError) or isinstance(exc, hf_errors.OfflineModeIsEnabled):
        return FetchError(
            f"cannot download {where}: the Hugging Face hub is unreachable (offline, or HF_HUB_OFFLINE is set) "
            "and the file is not in the local cache"
        )
    if isinstance(exc, hf_errors.GatedRepoError):
        return FetchError(f"cannot download {where}: the repo is gated; log in with `hf auth login` first")
    if isinstance(exc, hf_errors.RepositoryNotFoundError):
        return FetchError(f"cannot download {where}: no such dataset repo (check --repo-id / ${REPO_ENV})")
    if isinstance(exc, (hf_errors.EntryNotFoundError, hf_errors.RevisionNotFoundError)):
        return FetchError(f"cannot download {where}: no such file in the repo")
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return FetchError(f"cannot download {where}: {type(exc).__name__}: {first}")


class _Source:
    """Where remote files come from: the hub (through its cache) or a local directory laid out like the repo."""

    def __init__(self, repo_id: str):
        self.repo_id = repo_id
        self.local = Path(repo_id) if os.path.isdir(repo_id) else None
        if self.local is None and (repo_id.startswith(("/", ".", "~")) or os.sep in repo_id.strip("/").replace("/", "", 1)):
            raise FetchError(f"--repo-id {repo_id}: looks like a local hub directory, but no such directory exists")

    def get(self, remote: str, required: bool = True):
        """Path of a readable copy of `remote`; None when it does not exist and is not required."""
        if self.local is not None:
            path = self.local / remote
            if path.is_file():
                return path
            if required:
                raise FetchError(f"local hub {self.local} has no file {remote}")
            return None
        import huggingface_hub

        hf_errors = _HubErrors()

        sub, _, name = remote.rpartition("/")
        try:
            return Path(huggingface_hub.hf_hub_download(
                repo_id=self.repo_id, filename=name, subfolder=sub or None, repo_type="dataset"
            ))
        except hf_errors.EntryNotFoundError as exc:
            if not required and not isinstance(exc, hf_errors.LocalEntryNotFoundError):
                return None
            raise _hub_error(exc, self.repo_id, remote) from None
        except Exception as exc:  # network and HTTP errors of any kind become one line
            raise _hub_error(exc, self.repo_id, remote) from None


def _place(src: Path, dst: Path) -> None:
    """Put `src` at `dst` atomically: a hard link when possible (the hub cache), else a copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f"{dst.name}.tmp-{os.getpid()}")
    if tmp.exists():
        tmp.unlink()
    real = Path(os.path.realpath(src))
    try:
        os.link(real, tmp)
    except OSError:
        shutil.copyfile(real, tmp)
    os.replace(tmp, dst)


def _valid_shard(path: Path) -> bool:
    try:
        shard_token_count(path)
        return True
    except ShardError:
        return False


def _join(root: str, rel: str) -> str:
    """Repo path of `rel` under the root prefix (manifest paths are relative to it, as in the challenge)."""
    rel = rel.lstrip("/")
    return f"{root}/{rel}" if root else rel


def resolve_repo_id(variant: str, repo_id=None, env=None) -> str:
    env = os.environ if env is None else env
    if repo_id:
        return repo_id
    if env.get(REPO_ENV):
        return env[REPO_ENV]
    if variant in DEFAULT_REPO_IDS:
        return DEFAULT_REPO_IDS[variant]
    raise FetchError(f"--variant {variant}: no default repo; pass --repo-id or set ${REPO_ENV}")


def _plan_from_manifest(manifest: dict, variant: str, root: str, repo_id: str):
    """(files_train or None, files_val, tokenizer remote paths) from the repo's manifest.json."""
    dataset_name = f"fineweb10B_{variant}"
    datasets = manifest.get("datasets") or []
    entry = next((d for d in datasets if isinstance(d, dict) and d.get("name") == dataset_name), None)
    if entry is None:
        names = ", ".join(str(d.get("name")) for d in datasets if isinstance(d, dict)) or "none"
        raise FetchError(f"manifest.json of {repo_id} has no dataset {dataset_name} (it lists: {names})")
    stats = entry.get("stats") or {}
    try:
        files_train = int(stats["files_train"])
        files_val = int(stats["files_val"])
    except (KeyError, TypeError, ValueError):
        raise FetchError(f"manifest.json of {repo_id}: dataset {dataset_name} lacks stats.files_train/files_val") from None
    tok_name = entry.get("tokenizer_name")
    tok = next((t for t in manifest.get("tokenizers") or [] if isinstance(t, dict) and t.get("name") == tok_name), None)
    if tok is None:
        raise FetchError(f"manifest.json of {repo_id}: tokenizer {tok_name!r} of {dataset_name} is not listed")
    tok_files = [_join(root, str(tok[k])) for k in ("model_path", "vocab_path", "path") if tok.get(k)]
    if not tok_files:
        raise FetchError(f"manifest.json of {repo_id}: tokenizer {tok_name!r} names no files")
    return files_train, files_val, tok_files


def fetch_dataset(
    variant: str = "sp1024",
    train_shards: int = CHALLENGE_TRAIN_SHARDS,
    out_dir="data",
    repo_id=None,
    val_shards=None,
    remote_root=None,
    skip_manifest: bool = False,
    log=print,
) -> dict:
    """Download manifest, val shards, the first `train_shards` train shards and the tokenizer into `out_dir`.

    Returns {"data_path", "tokenizer_path", "files": [...], "downloaded": n, "kept": n}.
    """
    if not re.fullmatch(r"sp\d+", variant or ""):
        raise FetchError(f"--variant {variant!r}: expected sp<vocab>, e.g. sp1024 or sp8192")
    if train_shards < 0:
        raise FetchError(f"--train-shards {train_shards}: expected 0 or more")
    if val_shards is not None and val_shards < 1:
        raise FetchError(f"--val-shards {val_shards}: expected at least 1")
    repo_id = resolve_repo_id(variant, repo_id)
    root = (remote_root if remote_root is not None else os.environ.get(ROOT_ENV, DEFAULT_ROOT)).strip("/")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise FetchError(f"--out {out_dir}: exists and is not a directory")
    source = _Source(repo_id)
    log(f"fetch: {variant} from {'local hub ' if source.local else 'dataset repo '}{repo_id} into {out_dir}")

    def local_for(remote: str) -> Path:
        rel = remote[len(root) + 1 :] if root and remote.startswith(root + "/") else remote
        return out_dir / rel

    vocab = variant[2:]
    manifest_remote = _join(root, "manifest.json")
    manifest_src = None if skip_manifest else source.get(manifest_remote, required=False)
    if manifest_src is not None:
        try:
            manifest = json.loads(Path(manifest_src).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise FetchError(f"{manifest_remote} of {repo_id} is not valid JSON: {exc}") from None
        if not isinstance(manifest, dict):
            raise FetchError(f"{manifest_remote} of {repo_id}: expected a JSON object")
        files_train, files_val, tok_files = _plan_from_manifest(manifest, variant, root, repo_id)
        _place(Path(manifest_src), local_for(manifest_remote))
    else:
        if not skip_manifest:
            log(f"fetch: {repo_id} has no {manifest_remote}; using the standard layout")
        files_train, files_val = None, 1
        tok_files = [_join(root, f"tokenizers/fineweb_{vocab}_bpe.model")]
    if val_shards is not None:
        files_val = val_shards
    if files_train is not None and train_shards > files_train:
        raise FetchError(f"--train-shards {train_shards}: {repo_id} has only {files_train} train shards for {variant}")

    shard_dir = _join(root, f"datasets/fineweb10B_{variant}")
    shards = [f"{shard_dir}/fineweb_val_{i:06d}.bin" for i in range(files_val)]
    shards += [f"{shard_dir}/fineweb_train_{i:06d}.bin" for i in range(train_shards)]
    downloaded = kept = 0
    total = len(shards) + len(tok_files)
    for n, remote in enumerate(shards + tok_files, 1):
        dst = local_for(remote)
        is_shard = remote.endswith(".bin")
        if dst.is_file() and (not is_shard or _valid_shard(dst)):
            kept += 1
            log(f"fetch: [{n}/{total}] {dst} already present")
            continue
        if dst.exists() and is_shard:
            log(f"fetch: [{n}/{total}] {dst} is not a valid shard; downloading it again")
        # The .vocab file is a convenience; a repo without it is fine.
        required = not remote.endswith(".vocab")
        src = source.get(remote, required=required)
        if src is None:
            log(f"fetch: [{n}/{total}] {remote} not in the repo; skipped")
            continue
        if is_shard:
            try:
                shard_token_count(src)
            except ShardError as exc:
                raise FetchError(f"downloaded {remote} from {repo_id} is not a valid shard: {exc}") from None
        _place(Path(src), dst)
        downloaded += 1
        log(f"fetch: [{n}/{total}] {dst} ({dst.stat().st_size / 1e6:.1f} MB)")
    data_path = local_for(shard_dir)
    model = next((local_for(t) for t in tok_files if t.endswith(".model")), None)
    log(f"fetch: done ({downloaded} downloaded, {kept} already present). "
        f"DATA_PATH={data_path} TOKENIZER_PATH={model if model else '(none)'}")
    return {
        "data_path": str(data_path),
        "tokenizer_path": str(model) if model else None,
        "files": [str(local_for(r)) for r in shards + tok_files],
        "downloaded": downloaded,
        "kept": kept,
    }
