"""The base every config model shares (strict: unknown keys are errors, frozen, docstrings as descriptions) and
the checks more than one config file needs (served-name pattern, GPU model names).

Split from ``schema.py`` so the daemon config's sections (``node_schema``, ``model_schema``, ``schema``) and the
fleet file (``fleet_schema``) build on one definition.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from gpu_sharing.hardware.catalog import CATALOG, get_spec

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
"""Served model names: no leading '-' (cannot inject a vLLM flag), no '/' or '..' path parts."""


def known_gpu_model(name: str) -> str:
    """The catalog's name for a GPU model, or a ValueError listing the known ones."""
    try:
        return get_spec(name).name
    except KeyError:
        raise ValueError(f"unknown GPU model {name!r}; allowed: {', '.join(CATALOG)}") from None


class Strict(BaseModel):
    """Unknown keys are errors naming the key (a typo is never a silently ignored setting); values are frozen;
    field docstrings become the JSON Schema descriptions (``gpu-sharing schema``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
