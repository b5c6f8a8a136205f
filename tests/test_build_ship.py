"""builder.ship: form names, the flags of `pgolf build` applied to a run's form, and the shipped bytes."""

from __future__ import annotations

import pytest

from builder.ship import Form, form_from_flags, parse_form, shipped_source
from trainer.errors import PgolfError


@pytest.mark.parametrize("name, form", [
    ("plain", Form()),
    ("minified", Form(minify=True)),
    ("lzma", Form(minify=True, wrap="lzma", specialize=True)),
    ("brotli", Form(minify=True, wrap="brotli", specialize=True)),
    ("specialized+lzma", Form(wrap="lzma", specialize=True)),
    ("minified+brotli", Form(minify=True, wrap="brotli")),
    ("specialized", Form(specialize=True)),
])
def test_form_names_round_trip(name, form):
    assert parse_form(name) == form and form.name == name
    assert parse_form(form.name) == form


def test_long_names_of_the_short_forms_are_the_same_form():
    assert parse_form("specialized+minified+lzma") == parse_form("lzma")
    assert parse_form("minified+specialized+lzma").name == "lzma"


@pytest.mark.parametrize("bad", ["", "zip", "lzma+brotli", "plain+lzma", "minified+minified", "gzip+minified"])
def test_bad_form_names_are_one_line_errors(bad):
    with pytest.raises(PgolfError, match=r"--code-form .*expected plain \| minified \| lzma \| brotli"):
        parse_form(bad)


def test_build_flags_apply_to_the_runs_form():
    lzma = parse_form("lzma")
    assert form_from_flags(None, None, None, lzma) == lzma  # no flag: the runs' form
    assert form_from_flags(True, "lzma", None, Form()) == lzma  # --minify --wrap lzma: specialized by default
    assert form_from_flags(None, "brotli", None, lzma) == parse_form("brotli")
    assert form_from_flags(None, "none", None, lzma) == Form(minify=True)  # unwrapping stops specializing
    assert form_from_flags(None, "lzma", False, Form()) == Form(wrap="lzma")
    assert Form().differences(lzma) == ["specialize no -> yes", "minify no -> yes", "wrap none -> lzma"]


@pytest.mark.slow  # two inlinings, one specialized (~20 s on a busy 2-core box)
def test_shipped_bytes_shrink_with_each_stage():
    from trainer.config import Hyperparameters
    from trainer.presets import get_preset

    config = Hyperparameters.resolve(preset=get_preset("tiny"), env={}).to_dict()
    plain = shipped_source(config, Form())
    assert plain.code_bytes == plain.sizes["plain"] == len(plain.text.encode())
    lzma = shipped_source(config, parse_form("lzma"))
    assert lzma.sizes["shipped"] < lzma.sizes["minified"] < lzma.sizes["specialized"] < plain.code_bytes
    assert lzma.text.startswith("import lzma") and lzma.baked == plain.baked and lzma.baked["num_layers"] == 2
