"""The strict loader reads YAML through libyaml's parser (when PyYAML has it) and PyYAML's own composer and
constructors: the documents it accepts must mean exactly what ``yaml.SafeLoader`` makes of them, and its syntax
errors must still say where and what."""

from __future__ import annotations

import random

import pytest
import yaml

from gpu_sharing.config.fuzz import random_document
from gpu_sharing.config.loader import _StrictLoader, parse_yaml_text
from gpu_sharing.errors import ConfigError

RICH = """\
version: v1
base: &base {max_model_len: 4096, env: {A: "1"}}
models:
  - name: qwen
    defaults: *base
    aliases: [q, 'q2', "q3"]
    ratio: 0.5
    big: 1e3
    hex: 0x1F
    off: false
    none: ~
    when: 2024-05-01
    text: |
      two
      lines
    folded: >-
      one
      line
  - {name: "llama", replicas: 2, vllm_args: {enable-prefix-caching: true, block-size: 16}}
"""


def test_documents_mean_what_safe_loader_makes_of_them():
    assert yaml.load(RICH, Loader=_StrictLoader) == yaml.safe_load(RICH)  # noqa: S506
    rng = random.Random(11)
    # SafeLoader's own scanner takes seconds on deep nesting (test_the_parser_is_libyaml_when_pyyaml_has_it): left out here
    docs = [d for d in (random_document(rng) for _ in range(80)) if len(d) < 4000 and d.count("[") + d.count("{") < 100]
    assert len(docs) > 30
    for doc in docs:  # the fuzzer's documents: what one loader accepts, the other reads the same way
        try:
            expected = yaml.safe_load(doc)
        except (yaml.YAMLError, RecursionError):
            continue
        try:
            got = yaml.load(doc, Loader=_StrictLoader)  # noqa: S506
        except yaml.YAMLError as e:  # only the strict rules may refuse what SafeLoader reads
            assert any(w in str(e) for w in ("duplicate key", "alias", "unhashable")), (doc[:200], e)
            continue
        assert got == expected, doc[:200]


@pytest.mark.parametrize("text, where, near", [
    ("a: 1\n@x: 2\n", "line 2, column 1", "(at '@x: 2')"),
    ("a: |`\n", "line 1, column 5", "(at '`')"),
])
def test_syntax_errors_name_line_column_and_the_text_there(text, where, near):
    with pytest.raises(ConfigError) as e:
        parse_yaml_text(text, "c.yaml")
    assert f"invalid YAML: {where}: " in str(e.value) and near in str(e.value) and "c.yaml" in str(e.value)


def test_nesting_beyond_the_parser_limit_is_a_config_error():
    with pytest.raises(ConfigError) as e:
        parse_yaml_text("a: " + "[" * 5000, "c.yaml")
    assert "invalid YAML" in str(e.value) and "nesting" in str(e.value)


def test_the_parser_is_libyaml_when_pyyaml_has_it():
    """1,900 bytes of '[' kept PyYAML's pure-Python scanner busy for 3-4 s (its simple-key bookkeeping is
    quadratic in the depth), on every check of the file watch; libyaml refuses it past depth 1,000 at once."""
    if not getattr(yaml, "__with_libyaml__", False):
        pytest.skip("this PyYAML has no libyaml")
    assert _StrictLoader.__mro__[1] is not yaml.SafeLoader and issubclass(_StrictLoader, yaml.cyaml.CParser)
