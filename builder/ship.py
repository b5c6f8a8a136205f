"""Which train_gpt.py ships: the one place that decides it, for `pgolf build` and for `pgolf train`.

A *form* is how the inlined trainer is turned into the shipped file: specialized to the run's feature switches or
not, minified or not, wrapped in a self-extracting lzma/brotli stub or not. `pgolf train --code-form F` reserves
exactly `len(shipped_source(config, F).text)` bytes in the 16 MB budget and records F in its run directory;
`pgolf build` ships the same form by default, so the logs' `Code size` lines equal the shipped file's bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from builder.inline import ENTRY, InlineError, baked_config_for, inline_package, trainer_root
from builder.wrap import WRAPS, minify, wrap

# Short names for the usual forms; any other form is named by its parts joined with "+" (see Form.name).
ALIASES = {
    "plain": ("plain",),
    "minified": ("minified",),
    "lzma": ("specialized", "minified", "lzma"),
    "brotli": ("specialized", "minified", "brotli"),
}
_PARTS = ("specialized", "minified", "lzma", "brotli")
FORM_HELP = (
    "plain | minified | lzma | brotli (lzma/brotli = specialized+minified+wrapped, what `pgolf build --minify "
    "--wrap X` ships) or parts joined with '+': specialized, minified, lzma|brotli (e.g. specialized+lzma)"
)


@dataclass(frozen=True)
class Form:
    minify: bool = False
    wrap: str = "none"
    specialize: bool = False

    @property
    def name(self) -> str:
        parts = [p for p, on in (("specialized", self.specialize), ("minified", self.minify)) if on]
        if self.wrap != "none":
            parts.append(self.wrap)
        joined = "+".join(parts) or "plain"
        for alias, alias_parts in ALIASES.items():
            if "+".join(alias_parts) == joined:
                return alias
        return joined

    def differences(self, other: "Form") -> list[str]:
        """What `other` changes relative to this form, e.g. ['minify no -> yes', 'wrap none -> lzma']."""
        yn = {True: "yes", False: "no"}
        out = []
        if self.specialize != other.specialize:
            out.append(f"specialize {yn[self.specialize]} -> {yn[other.specialize]}")
        if self.minify != other.minify:
            out.append(f"minify {yn[self.minify]} -> {yn[other.minify]}")
        if self.wrap != other.wrap:
            out.append(f"wrap {self.wrap} -> {other.wrap}")
        return out


def parse_form(text: str, where: str = "--code-form") -> Form:
    """A form from its name ('lzma', 'plain', 'specialized+minified+brotli', ...); PgolfError when unknown."""
    raw = (text or "").strip().lower()
    parts = ALIASES.get(raw, tuple(p for p in raw.split("+") if p))
    bad = [p for p in parts if p not in _PARTS and p != "plain"]
    wraps = [p for p in parts if p in ("lzma", "brotli")]
    if not parts or bad or len(wraps) > 1 or len(set(parts)) != len(parts) or ("plain" in parts and len(parts) > 1):
        raise InlineError(f"{where} {text!r}: expected {FORM_HELP}")
    return Form(minify="minified" in parts, wrap=wraps[0] if wraps else "none", specialize="specialized" in parts)


def form_from_flags(minify: bool | None, wrap_method: str | None, specialize: bool | None, base: Form) -> Form:
    """`base` with the `pgolf build` flags the user gave (None = not given) applied. A given --wrap without
    --specialize/--no-specialize specializes exactly when it wraps (wrapped builds are specialized by default)."""
    if wrap_method is not None and wrap_method not in WRAPS:
        raise InlineError(f"--wrap {wrap_method!r}: expected one of {', '.join(WRAPS)}")
    w = base.wrap if wrap_method is None else wrap_method
    if specialize is None:
        specialize = base.specialize if wrap_method is None else w != "none"
    return Form(minify=base.minify if minify is None else minify, wrap=w, specialize=specialize)


@dataclass
class Shipped:
    text: str  # the train_gpt.py that ships
    sizes: dict  # bytes after each stage: "plain" or "specialized", then "minified", "shipped"
    baked: dict  # the configuration baked into the file
    form: Form

    @property
    def code_bytes(self) -> int:
        return self.sizes["shipped"]


def shipped_source(config: dict, form: Form) -> Shipped:
    """The train_gpt.py a run with resolved configuration `config` ships in `form`."""
    baked = baked_config_for(config)
    frozen = None
    if form.specialize:
        from builder.specialize import frozen_values

        frozen = frozen_values(baked)
    text = inline_package(trainer_root(), ENTRY, baked_config=baked, frozen=frozen).source
    sizes = {"specialized" if form.specialize else "plain": len(text.encode("utf-8"))}
    return _finish(text, sizes, baked, form)


def shipped_script(text: str, form: Form) -> Shipped:
    """Another script (`pgolf build --from-logs --script`) in `form`; it cannot be specialized."""
    if form.specialize:
        raise InlineError("--specialize works only on pgolf's own trainer, not on --script files")
    return _finish(text, {"plain": len(text.encode("utf-8"))}, {}, form)


def _finish(text: str, sizes: dict, baked: dict, form: Form) -> Shipped:
    if form.minify:
        text = minify(text)
        sizes["minified"] = len(text.encode("utf-8"))
    text = wrap(text, form.wrap)
    sizes["shipped"] = len(text.encode("utf-8"))
    return Shipped(text=text, sizes=sizes, baked=baked, form=form)
