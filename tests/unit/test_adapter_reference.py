"""docs/writing-an-adapter.md's configuration reference names every key of the adapter
TOML models: a key added to router/adapter_config.py without a row there fails here."""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from router.adapter_config import AdapterConfig

DOC = Path(__file__).resolve().parents[2] / "docs" / "writing-an-adapter.md"


def _models(annotation: object) -> Iterator[type[BaseModel]]:
    """The models an annotation holds (Optional, unions, dict values, Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
        return
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is dict:
        yield from _models(args[1])
    elif origin in (typing.Union, types.UnionType, typing.Annotated):
        for arg in args:
            yield from _models(arg)


def _keys(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        nested = list(_models(field.annotation))
        if not nested:
            yield prefix + name
            continue
        is_map = typing.get_origin(field.annotation) is dict
        for sub in nested:
            yield from _keys(sub, f"{prefix}{name}.<x>." if is_map else f"{prefix}{name}.")


def test_every_adapter_key_is_in_the_reference() -> None:
    text = DOC.read_text()
    reference = text[text.index("## Configuration reference") :]
    quoted = set(re.findall(r"`([^`]+)`", reference))
    words = {w for token in quoted for w in re.split(r"[ ./]+", token)}
    missing = []
    for key in sorted(set(_keys(AdapterConfig))):
        if key.startswith("entities."):
            # Entity keys are listed under their entity (`entities.<e>.related.<field>.*`
            # names its sub-keys inline): each must at least be quoted by name.
            if key.rsplit(".", 1)[-1] not in words:
                missing.append(key)
        elif key not in quoted:
            missing.append(key)
    assert not missing, f"keys missing from {DOC.name}'s reference: {missing}"


def test_the_walk_finds_nested_keys() -> None:
    keys = set(_keys(AdapterConfig))
    assert {"broker.tls.ca_file", "api.token_file", "plugin", "write.rate"} <= keys
    assert "entities.<x>.related.<x>.link.other" in keys
