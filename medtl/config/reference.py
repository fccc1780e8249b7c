"""Every config key, generated from the pydantic models (``medtl config --reference``, docs/config.md).

The models are the single source: names, types and defaults from their fields, meanings from each
field's ``description``, and for strategy settings the kinds they apply to. A list of strategies may
be one model (today's ``StrategyConfig``) or a union of one model per kind (each with a ``kind``
Literal): both are walked the same way, so the reference follows the models as they change.
"""

from __future__ import annotations

import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from medtl.config import ExperimentConfig

ITEM = "<name>"  # a list entry is addressed by its name: strategies.<name>.epochs


@dataclass
class Key:
    key: str  # dotted, e.g. train.epochs or strategies.<name>.lr_factor
    type: str
    default: str
    meaning: str
    kinds: tuple[str, ...] | None = None  # strategy kinds it applies to; None: not a per-kind setting


def _strip_annotated(tp: Any) -> Any:
    while get_origin(tp) is typing.Annotated:
        tp = get_args(tp)[0]
    return tp


def _members(tp: Any) -> list[Any]:
    tp = _strip_annotated(tp)
    if get_origin(tp) in (typing.Union, types.UnionType):
        return [m for a in get_args(tp) for m in _members(a)]
    return [tp]


def _models(tp: Any) -> list[type[BaseModel]]:
    return [m for m in _members(tp) if isinstance(m, type) and issubclass(m, BaseModel)]


def _type_name(tp: Any) -> str:
    tp = _strip_annotated(tp)
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(str(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(dict.fromkeys(_type_name(a) for a in get_args(tp)))
    if origin in (list, tuple):
        args = [a for a in get_args(tp) if a is not Ellipsis]
        inner = ", ".join(dict.fromkeys(_type_name(a) for a in args))
        return f"list of {inner}" if origin is list else f"({inner})" if len(args) == 1 else f"({', '.join(_type_name(a) for a in args)})"
    if origin is dict:
        k, v = get_args(tp)
        return f"map {_type_name(k)} -> {_type_name(v)}"
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "section"
    if tp is Path:
        return "path"
    return getattr(tp, "__name__", str(tp))


def _default(f: FieldInfo) -> str:
    if f.default_factory is not None:
        value = f.default_factory()  # type: ignore[call-arg]
    elif f.default is PydanticUndefined:
        return "required"
    else:
        value = f.default
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
        return ", ".join(getattr(v, "name", type(v).__name__) for v in value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(list(value) if isinstance(value, tuple) else value)


def _kind_values(model: type[BaseModel]) -> tuple[str, ...]:
    """The kinds a strategy model stands for: the Literal values of its ``kind`` field."""
    f = model.model_fields.get("kind")
    return tuple(str(a) for m in _members(f.annotation) if get_origin(m) is Literal for a in get_args(m)) if f else ()


def _single_model_kinds(model: type[BaseModel], field: str, kinds: tuple[str, ...]) -> tuple[str, ...]:
    """For one model holding every kind's settings: its module's table of which kinds take which
    setting (``_APPLIES``), else every kind. Once strategies are one model per kind this is unused."""
    applies = getattr(sys.modules[model.__module__], "_APPLIES", {})
    return tuple(applies.get(field, kinds))


def _walk(model: type[BaseModel], prefix: str) -> list[Key]:
    keys: list[Key] = []
    for name, f in model.model_fields.items():
        key = f"{prefix}{name}"
        models = _models(f.annotation)
        tp = _strip_annotated(f.annotation)
        if get_origin(tp) is list and _models(get_args(tp)[0]):
            keys.append(Key(key, "list of entries", _default(f), f.description or ""))
            keys += _walk_entries(_models(get_args(tp)[0]), f"{key}.{ITEM}.")
        elif models:
            keys.append(Key(key, _type_name(f.annotation), _default(f), f.description or ""))
            for sub in models:
                keys += _walk(sub, f"{key}.")
        else:
            keys.append(Key(key, _type_name(f.annotation), _default(f), f.description or ""))
    return keys


def _walk_entries(models: list[type[BaseModel]], prefix: str) -> list[Key]:
    """A list's entries: one model, or one model per kind; each setting with the kinds that take it."""
    all_kinds = tuple(dict.fromkeys(k for m in models for k in _kind_values(m)))
    merged: dict[str, Key] = {}
    for model in models:
        own = _kind_values(model)
        for k in _walk(model, prefix):
            field = k.key.removeprefix(prefix).split(".")[0]
            kinds = own if len(models) > 1 else _single_model_kinds(model, field, all_kinds)
            if field in ("name", "kind"):
                kinds = all_kinds
            if field == "kind" and len(models) > 1:  # one model per kind: each holds its own kind as default
                k.type, k.default = " | ".join(all_kinds), "the name"
            if k.key in merged:
                merged[k.key].kinds = tuple(dict.fromkeys((*(merged[k.key].kinds or ()), *kinds)))
            else:
                k.kinds = kinds if all_kinds else None
                merged[k.key] = k
    return list(merged.values())


def reference_keys(model: type[BaseModel] = ExperimentConfig) -> list[Key]:
    return _walk(model, "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def reference_markdown(model: type[BaseModel] = ExperimentConfig) -> str:
    """docs/config.md: one table per top-level section."""
    keys = reference_keys(model)
    lines = [
        "# Config reference",
        "",
        "Generated from the pydantic models in `medtl/config/` by `medtl config --reference`; "
        "`tests/test_config.py` fails when this file and the models differ "
        "(regenerate: `medtl config --reference > docs/config.md`).",
        "",
        "A config is YAML with the sections below. Unknown keys are errors. Relative paths "
        "(`data.manifest`, `data.npz`, `data.cache_dir`) are relative to the config file's folder "
        "(to the working folder for a config given as a Python dict). Any key can be overridden on "
        "the command line: `medtl compare CONFIG --set train.batch_size=16 --set "
        "strategies.full.epochs=3` (a strategy's key by its name); `--dry-run` prints the resolved "
        "config and the arms without training.",
        "",
    ]
    sections: dict[str, list[Key]] = {}
    for k in keys:
        sections.setdefault(k.key.split(".")[0], []).append(k)
    for section, items in sections.items():
        top, rest = items[0], items[1:]
        lines += [f"## `{section}`", "", f"{top.meaning or ''} ({top.type}; default {top.default})".strip(), ""]
        if not rest:
            continue
        per_kind = any(k.kinds is not None for k in rest)
        head = ["key", "type", "default"] + (["applies to"] if per_kind else []) + ["meaning"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for k in rest:
            cells = [f"`{k.key}`", _cell(k.type), f"`{_cell(k.default)}`"]
            if per_kind:
                cells.append(", ".join(k.kinds or ()))
            lines.append("| " + " | ".join(cells + [_cell(k.meaning)]) + " |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def missing_descriptions(model: type[BaseModel] = ExperimentConfig) -> list[str]:
    return [k.key for k in reference_keys(model) if not k.meaning]


def strategy_kinds(model: type[BaseModel] = ExperimentConfig) -> dict[str, list[str]]:
    """Each strategy kind with the settings that belong to it alone (``medtl compare --help``)."""
    entries = [k for k in reference_keys(model) if k.kinds is not None]
    kinds = dict.fromkeys(kind for k in entries for kind in k.kinds or ())
    return {kind: [k.key.rsplit(".", 1)[-1] for k in entries if k.kinds and kind in k.kinds and len(k.kinds) < len(kinds)]
            for kind in kinds}


def section_keys(section: str, model: type[BaseModel] = ExperimentConfig) -> list[Key]:
    """The keys directly under one top-level section (``inspect --help`` lists ``preprocess``'s)."""
    return [k for k in reference_keys(model) if k.key.count(".") == 1 and k.key.startswith(f"{section}.")]
