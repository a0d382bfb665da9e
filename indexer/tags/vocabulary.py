"""The tag vocabulary: parsing and validating it, and one fingerprint per tag definition.

Tags are scored (:mod:`indexer.tags.scoring`) against the L2-normalised image vectors already
in the index; the store keeps ``(image_id, tag, score)`` rows plus each tag's fingerprint so
that editing the vocabulary re-scores only what changed.

Vocabulary schema (a YAML mapping; a tags file, or the built-in ``default_tags.yaml``)::

    extends: default          # optional: start from the built-in vocabulary and merge this
                              # file over it (mappings merge key by key, other values replace;
                              # a tag or group set to null is removed)
    templates: ["a photo of {}."]   # prompt templates ("{}" = the prompt); "{}" alone = verbatim
    top_n: 5                  # at most this many standalone tags per image (null: no limit)
    default_threshold: 0.25   # cosine threshold of standalone tags without their own
    logit_scale: 100.0        # softmax temperature of exclusive groups (CLIP's is 100)
    tags:                     # standalone tags: kept when cosine >= threshold
      dog: ["a dog", "a puppy"]                  # a list of prompts ...
      sunset: "a sunset"                         # ... a single prompt ...
      receipt: {prompts: ["a receipt"], threshold: 0.28, templates: ["{}"]}   # ... or a mapping
    groups:
      scene:
        exclusive: true       # softmax over the group's tags; the winner is kept when its
        threshold: 0.6        # probability >= its tag's threshold, else the group's (default 0)
        enabled: true         # false: the group is not scored (e.g. the content-safety group)
        templates: [...]      # optional, for the group's tags
        tags:
          indoor: ["an indoor room"]
          outdoor: ["the outdoors"]
          other: {prompts: ["..."], hidden: true}   # hidden: competes, never emitted
      pets:                   # exclusive: false (default): a folder of standalone tags whose
        threshold: 0.26       # threshold/templates default to the group's
        tags: {cat: "a cat"}

Scores and ``top_n``: see :mod:`indexer.tags.scoring`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

DEFAULT_TAGS_FILE = "default_tags.yaml"
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of {}.",)
DEFAULT_THRESHOLD = 0.25
DEFAULT_TOP_N = 5
DEFAULT_LOGIT_SCALE = 100.0
SAFETY_GROUP = "safety"

TagList = list[tuple[str, float]]


class VocabularyError(ValueError):
    """The tag vocabulary is invalid (the message names the offending key)."""


@dataclass(frozen=True)
class TagSpec:
    """One tag: its prompts, its exclusive group (None: standalone) and its own threshold."""

    name: str
    prompts: tuple[str, ...]
    group: str | None = None
    threshold: float | None = None
    templates: tuple[str, ...] | None = None  # None: the group's or the vocabulary's
    hidden: bool = False


@dataclass(frozen=True)
class GroupSpec:
    """A named set of tags; ``exclusive`` groups pick at most one tag by softmax."""

    name: str
    exclusive: bool = False
    threshold: float | None = None
    enabled: bool = True
    templates: tuple[str, ...] | None = None


@dataclass
class Vocabulary:
    """Parsed tag vocabulary (see module docstring for the YAML shape)."""

    tags: dict[str, TagSpec]
    groups: dict[str, GroupSpec] = field(default_factory=dict)
    templates: tuple[str, ...] = DEFAULT_TEMPLATES
    top_n: int | None = DEFAULT_TOP_N
    default_threshold: float = DEFAULT_THRESHOLD
    logit_scale: float = DEFAULT_LOGIT_SCALE

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Vocabulary:
        """Parse and validate the YAML shape (``extends: default`` merges over the built-in)."""
        return _parse(_resolve_extends(data or {}))

    # ----------------------------------------------------------------- queries
    def active_tags(self) -> list[TagSpec]:
        """Tags that are scored (those of disabled groups left out), in definition order."""
        return [t for t in self.tags.values() if self._enabled(t)]

    def _enabled(self, tag: TagSpec) -> bool:
        return tag.group is None or self.groups[tag.group].enabled

    def is_exclusive(self, tag: TagSpec) -> bool:
        return tag.group is not None and self.groups[tag.group].exclusive

    def group_members(self, group: str) -> list[TagSpec]:
        return [t for t in self.tags.values() if t.group == group]

    def templates_for(self, tag: TagSpec) -> tuple[str, ...]:
        if tag.templates is not None:
            return tag.templates
        group = self.groups.get(tag.group) if tag.group else None
        if group is not None and group.templates is not None:
            return group.templates
        return self.templates

    def threshold_for(self, tag: TagSpec) -> float:
        """Cosine threshold (standalone) or minimum winning probability (exclusive)."""
        if tag.threshold is not None:
            return tag.threshold
        group = self.groups.get(tag.group) if tag.group else None
        if group is not None and group.threshold is not None:
            return group.threshold
        if group is not None and group.exclusive:
            return 0.0
        return self.default_threshold

    def texts_for(self, tag: TagSpec) -> list[str]:
        """Every prompt in every template: the texts whose embeddings the tag averages."""
        return [t.replace("{}", p) for p in tag.prompts for t in self.templates_for(tag)]

    def with_groups_enabled(self, names: Iterable[str], enabled: bool = True) -> Vocabulary:
        """A copy with the named groups enabled (or disabled); unknown names are an error."""
        groups = dict(self.groups)
        for name in names:
            if name not in groups:
                raise VocabularyError(f"unknown tag group '{name}'")
            groups[name] = replace(groups[name], enabled=enabled)
        return replace(self, groups=groups)


# --------------------------------------------------------------------------- parsing
def _as_prompts(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise VocabularyError(f"{where}: expected a prompt or a non-empty list of prompts")
    out = []
    for i, p in enumerate(value):
        if not isinstance(p, str) or not p.strip():
            raise VocabularyError(f"{where}[{i}]: expected a non-empty string, got {p!r}")
        out.append(" ".join(p.split()))
    return tuple(out)


def _as_templates(value: Any, where: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    templates = _as_prompts(value, where)
    for t in templates:
        if t.count("{}") != 1:
            raise VocabularyError(f"{where}: template {t!r} must contain '{{}}' exactly once")
    return templates


def _as_number(value: Any, where: str, lo: float, hi: float) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise VocabularyError(f"{where}: expected a number, got {value!r}")
    if not lo <= float(value) <= hi:
        raise VocabularyError(f"{where}: must be between {lo} and {hi}, got {value}")
    return float(value)


def _check_keys(data: Mapping, known: set[str], where: str) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise VocabularyError(
            f"{where}: unknown key '{unknown[0]}' (known: {', '.join(sorted(known))})"
        )


def _parse_tag(name: Any, value: Any, group: str | None, where: str) -> TagSpec:
    if not isinstance(name, str) or not name.strip():
        raise VocabularyError(f"{where}: tag names must be non-empty strings, got {name!r}")
    name = " ".join(name.split())
    if isinstance(value, Mapping):
        _check_keys(value, {"prompts", "threshold", "templates", "hidden"}, where)
        hidden = value.get("hidden", False)
        if not isinstance(hidden, bool):
            raise VocabularyError(f"{where}.hidden: expected true or false")
        return TagSpec(
            name,
            _as_prompts(value.get("prompts"), f"{where}.prompts"),
            group,
            _as_number(value.get("threshold"), f"{where}.threshold", -1.0, 1.0),
            _as_templates(value.get("templates"), f"{where}.templates"),
            hidden,
        )
    return TagSpec(name, _as_prompts(value, where), group)


def _mapping(value: Any, where: str) -> Mapping:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise VocabularyError(f"{where}: expected a mapping, got {value!r}")
    return value


def _parse(data: Mapping[str, Any]) -> Vocabulary:
    data = _mapping(data, "vocabulary")
    _check_keys(
        data,
        {"templates", "top_n", "default_threshold", "logit_scale", "tags", "groups", "extends"},
        "vocabulary",
    )
    tags: dict[str, TagSpec] = {}

    def add(spec: TagSpec, where: str) -> None:
        if spec.name in tags:
            raise VocabularyError(f"{where}: tag '{spec.name}' is defined twice")
        tags[spec.name] = spec

    for name, value in _mapping(data.get("tags"), "tags").items():
        if value is not None:
            add(_parse_tag(name, value, None, f"tags.{name}"), f"tags.{name}")
    groups: dict[str, GroupSpec] = {}
    for gname, gval in _mapping(data.get("groups"), "groups").items():
        if gval is None:
            continue
        where = f"groups.{gname}"
        gval = _mapping(gval, where)
        _check_keys(gval, {"exclusive", "threshold", "enabled", "templates", "tags"}, where)
        exclusive, enabled = gval.get("exclusive", False), gval.get("enabled", True)
        if not isinstance(exclusive, bool) or not isinstance(enabled, bool):
            raise VocabularyError(f"{where}: exclusive and enabled must be true or false")
        members = {k: v for k, v in _mapping(gval.get("tags"), f"{where}.tags").items() if v}
        if exclusive and len(members) < 2:
            raise VocabularyError(f"{where}: an exclusive group needs at least two tags")
        group = GroupSpec(
            str(gname),
            exclusive,
            _as_number(gval.get("threshold"), f"{where}.threshold", -1.0, 1.0),
            enabled,
            _as_templates(gval.get("templates"), f"{where}.templates"),
        )
        groups[group.name] = group
        for name, value in members.items():
            spec = _parse_tag(name, value, group.name, f"{where}.tags.{name}")
            if not exclusive:  # a plain group: its settings are defaults for standalone tags
                spec = replace(
                    spec,
                    threshold=spec.threshold if spec.threshold is not None else group.threshold,
                    templates=spec.templates if spec.templates is not None else group.templates,
                )
            add(spec, f"{where}.tags.{name}")
    top_n = data.get("top_n", DEFAULT_TOP_N)
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise VocabularyError(f"top_n: expected a positive integer or null, got {top_n!r}")
    default_threshold = _as_number(
        data.get("default_threshold", DEFAULT_THRESHOLD), "default_threshold", -1.0, 1.0
    )
    logit_scale = _as_number(data.get("logit_scale", DEFAULT_LOGIT_SCALE), "logit_scale", 0, 1e4)
    return Vocabulary(
        tags=tags,
        groups=groups,
        templates=_as_templates(data.get("templates"), "templates") or DEFAULT_TEMPLATES,
        top_n=top_n,
        default_threshold=float(default_threshold),  # type: ignore[arg-type]
        logit_scale=float(logit_scale),  # type: ignore[arg-type]
    )


def _merge(base: Any, over: Any) -> Any:
    """``over`` merged into ``base``: mappings key by key (None deletes), the rest replaced."""
    if not isinstance(base, Mapping) or not isinstance(over, Mapping):
        return over
    out = dict(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = _merge(out.get(key), value)
    return out


def _resolve_extends(data: Mapping[str, Any]) -> Mapping[str, Any]:
    base = data.get("extends") if isinstance(data, Mapping) else None
    if base is None:
        return data
    if base != "default":
        raise VocabularyError(f"extends: only 'default' is supported, got {base!r}")
    over = {k: v for k, v in data.items() if k != "extends"}
    return _merge(default_vocabulary_dict(), over)


def default_vocabulary_dict() -> dict[str, Any]:
    """The built-in vocabulary as its YAML mapping."""
    text = resources.files(__package__).joinpath(DEFAULT_TAGS_FILE).read_text(encoding="utf-8")
    return yaml.safe_load(text)


def default_vocabulary(safety: bool = False) -> Vocabulary:
    """The built-in vocabulary for personal photos (content-safety group off unless asked)."""
    vocab = Vocabulary.from_dict(default_vocabulary_dict())
    return vocab.with_groups_enabled([SAFETY_GROUP]) if safety else vocab


def load_vocabulary(path: str | os.PathLike | None = None, safety: bool = False) -> Vocabulary:
    """The vocabulary in a YAML tags file (None: the built-in default)."""
    if path is None:
        return default_vocabulary(safety)
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise VocabularyError(f"tags file not found: {path}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise VocabularyError(f"cannot read tags file {path}: {first}") from None
    try:
        vocab = Vocabulary.from_dict(data)
    except VocabularyError as exc:
        raise VocabularyError(f"{path}: {exc}") from None
    if safety and SAFETY_GROUP in vocab.groups:
        vocab = vocab.with_groups_enabled([SAFETY_GROUP])
    return vocab


# --------------------------------------------------------------------------- fingerprints
def tag_fingerprint(spec: TagSpec, vocab: Vocabulary) -> str:
    """A hash of everything that affects ``spec``'s stored scores.

    Standalone: its ensemble texts and threshold. Exclusive: the texts, thresholds and hidden
    flags of the whole group plus the logit scale (the softmax couples them), so editing one
    member re-scores the group. ``top_n`` is left out: apply it when reading (:func:`cap_top_n`).
    """
    members = vocab.group_members(spec.group) if vocab.is_exclusive(spec) else [spec]
    doc: dict[str, Any] = {
        "tags": [
            [m.name, sorted(vocab.texts_for(m)), vocab.threshold_for(m), m.hidden]
            for m in sorted(members, key=lambda m: m.name)
        ],
    }
    if vocab.is_exclusive(spec):
        doc["exclusive"] = [spec.group, vocab.logit_scale]
    blob = json.dumps(doc, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()


def vocabulary_fingerprints(vocab: Vocabulary) -> dict[str, str]:
    """Fingerprint of every active, emitted tag (what the store's tag_defs table holds)."""
    return {t.name: tag_fingerprint(t, vocab) for t in vocab.active_tags() if not t.hidden}


def changed_tags(
    stored: Mapping[str, str], vocab: Vocabulary, current: Mapping[str, str] | None = None
) -> tuple[list[str], list[str]]:
    """(tags added or changed since ``stored`` fingerprints, stored tags no longer present).

    ``current``: ``vocabulary_fingerprints(vocab)`` when the caller already has them.
    """
    if current is None:
        current = vocabulary_fingerprints(vocab)
    changed = [t for t, fp in current.items() if stored.get(t) != fp]
    removed = [t for t in stored if t not in current]
    return changed, removed
