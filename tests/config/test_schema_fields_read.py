"""Every config field is read by something: a field no code reads is a promise the daemon does not keep.

Walks the pydantic models reachable from ``Config`` and looks, in the product code outside the schema
modules (``config/schema.py`` and the sections it re-exports), for an attribute read (``.name``) or a string use (``"name"``, for fields
read through ``getattr``/``model_dump`` lists).
"""

from __future__ import annotations

import re
import typing
from pathlib import Path

from pydantic import BaseModel

from gpu_sharing.config.schema import Config

ROOT = Path(__file__).resolve().parents[2]


def models_under(model: type[BaseModel], seen: set[type[BaseModel]]) -> None:
    if model in seen:
        return
    seen.add(model)
    for field in model.model_fields.values():
        stack = [field.annotation]
        while stack:
            t = stack.pop()
            if isinstance(t, type) and issubclass(t, BaseModel):
                models_under(t, seen)
            stack.extend(typing.get_args(t))


SCHEMA = {"schema.py", "node_schema.py", "model_schema.py", "strict.py"}
"""The modules in gpu_sharing/config/ that define Config's models: their own validators' reads do not count."""


def product_source() -> str:
    files = [p for p in (ROOT / "gpu_sharing").rglob("*.py") if p.name not in SCHEMA or p.parent.name != "config"]
    return "\n".join(p.read_text() for p in files)


def test_every_schema_field_is_read():
    seen: set[type[BaseModel]] = set()
    models_under(Config, seen)
    source = product_source()
    unread = []
    for model in sorted(seen, key=lambda m: m.__name__):
        for name in model.model_fields:
            if not re.search(rf"\.{name}\b|[\"']{name}[\"']", source):
                unread.append(f"{model.__name__}.{name}")
    assert not unread, f"config fields no product code reads: {unread}"


def test_the_walk_sees_nested_models():
    seen: set[type[BaseModel]] = set()
    models_under(Config, seen)
    names = {m.__name__ for m in seen}
    assert {"Config", "ModelSettings", "ScheduleWindow", "MetricsSettings", "NodeSettings"} <= names
