"""The curated list of models Enclave offers to download, loaded from ``catalog.json``.

The list is data, not code, so it can be corrected without touching logic, and it is validated on load so a typo in
the JSON fails loudly in the tests instead of surfacing as a broken download. Entries carry the architecture facts the
memory estimator needs (layers, heads, KV widths, experts), so a fit can be predicted before a byte is downloaded.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

Role = Literal["chat", "embedding"]
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
REVISION_RE = re.compile(r"^[0-9a-f]{40}$")
SHARD_RE = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")
ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class CatalogError(ValueError):
    """catalog.json breaks one of its invariants (a bug in the data file, caught by the tests)."""


@dataclass(frozen=True)
class CatalogFile:
    path: str  # inside the repository
    size: int  # bytes; an approximation when size_exact is False
    sha256: str | None
    size_exact: bool = True
    sha256_confirmed: bool = False  # seen in two independent sources; otherwise prefer the Hub's LFS oid

    @property
    def shard(self) -> tuple[int, int] | None:
        """(number, count) for ``…-0000N-of-0000M.gguf`` shards, 1-based; None for a single file."""
        match = SHARD_RE.search(self.path)
        return (int(match.group(1)), int(match.group(2))) if match else None


@dataclass(frozen=True)
class ArchFacts:
    """What the fit estimator needs to know about an architecture without reading a GGUF header."""

    architecture: str
    block_count: int
    embedding_length: int
    head_count: int
    head_count_kv: int
    key_length: int
    value_length: int
    context_length: int
    vocab_size: int
    feed_forward_length: int | None = None
    kv_lora_rank: int | None = None
    rope_dimension_count: int | None = None
    key_length_mla: int | None = None
    value_length_mla: int | None = None
    expert_count: int | None = None
    expert_used_count: int | None = None
    expert_shared_count: int | None = None
    leading_dense_block_count: int | None = None
    expert_feed_forward_length: int | None = None
    source: str = ""

    @property
    def is_moe(self) -> bool:
        return bool(self.expert_count and self.expert_count > 1)


@dataclass(frozen=True)
class EmbeddingFacts:
    dimensions: int
    max_tokens: int
    pooling: str
    query_prefix: str = ""
    document_prefix: str = ""


@dataclass(frozen=True)
class CatalogEntry:
    id: str
    display_name: str
    role: Role
    family: str
    repo_id: str
    revision: str
    revision_pinned: bool
    files: tuple[CatalogFile, ...]
    files_confirmed: bool  # False: the shard list is a best guess; list the Hub folder before downloading
    quant: str
    parameters: int
    active_parameters: int | None  # per token, for mixture-of-experts models
    license: str
    arch: ArchFacts
    reasoning: bool
    quality_rank: int | None  # higher is better; chat entries only
    notes: str = ""
    revision_hint: str | None = None  # short commit id seen in a listing, to resolve on the Hub
    embedding: EmbeddingFacts | None = None

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def sizes_exact(self) -> bool:
        return all(f.size_exact for f in self.files)

    @property
    def is_split(self) -> bool:
        return len(self.files) > 1

    @property
    def is_moe(self) -> bool:
        return self.arch.is_moe


@dataclass(frozen=True)
class Catalog:
    entries: tuple[CatalogEntry, ...]

    def get(self, entry_id: str) -> CatalogEntry:
        for entry in self.entries:
            if entry.id == entry_id:
                return entry
        raise KeyError(entry_id)

    def chat(self) -> tuple[CatalogEntry, ...]:
        return tuple(e for e in self.entries if e.role == "chat")

    def embedding(self) -> tuple[CatalogEntry, ...]:
        return tuple(e for e in self.entries if e.role == "embedding")

    def family(self, family: str) -> tuple[CatalogEntry, ...]:
        return tuple(e for e in self.entries if e.family == family)

    def find_file(self, repo_id: str, path: str) -> CatalogEntry | None:
        """The entry a downloaded or imported file belongs to, matched by repository and path (or bare file name)."""
        name = path.rsplit("/", 1)[-1]
        for entry in self.entries:
            for file in entry.files:
                if entry.repo_id == repo_id and (file.path == path or file.path.rsplit("/", 1)[-1] == name):
                    return entry
        return None

    def find_file_name(self, file_name: str) -> CatalogEntry | None:
        """Match an imported file by its name alone (imports have no repository)."""
        for entry in self.entries:
            if any(f.path.rsplit("/", 1)[-1] == file_name for f in entry.files):
                return entry
        return None


@functools.cache
def load_catalog() -> Catalog:
    """The catalog shipped with the app (package data ``enclave/models/catalog.json``), parsed and validated once."""
    text = resources.files("enclave.models").joinpath("catalog.json").read_text(encoding="utf-8")
    return parse_catalog(json.loads(text))


def parse_catalog(data: Mapping[str, Any]) -> Catalog:
    """Build and validate a Catalog from the decoded JSON document; raises CatalogError naming the bad entry."""
    if data.get("schema") != 1:
        raise CatalogError(f"unsupported catalog schema {data.get('schema')!r}")
    archs = {name: _arch(name, facts) for name, facts in data.get("architectures", {}).items()}
    entries: list[CatalogEntry] = []
    seen: set[str] = set()
    for raw in data.get("entries", []):
        entry = _entry(raw, archs)
        if entry.id in seen:
            raise CatalogError(f"duplicate catalog id {entry.id!r}")
        seen.add(entry.id)
        entries.append(entry)
    return Catalog(tuple(entries))


def _arch(name: str, facts: Mapping[str, Any]) -> ArchFacts:
    try:
        arch = ArchFacts(**facts)
    except TypeError as exc:
        raise CatalogError(f"architecture {name!r}: {exc}") from exc
    for field in ("block_count", "embedding_length", "head_count", "head_count_kv", "key_length", "value_length",
                  "context_length", "vocab_size"):  # fmt: skip
        value = getattr(arch, field)
        if not isinstance(value, int) or value <= 0:
            raise CatalogError(f"architecture {name!r}: {field} must be a positive integer, not {value!r}")
    if arch.architecture == "deepseek2" and arch.key_length_mla is None:
        raise CatalogError(f"architecture {name!r}: deepseek2 entries must describe the MLA layout")
    if arch.is_moe and not (arch.expert_used_count and arch.expert_feed_forward_length):
        raise CatalogError(f"architecture {name!r}: a mixture-of-experts model needs expert_used_count and widths")
    return arch


def _entry(raw: Mapping[str, Any], archs: Mapping[str, ArchFacts]) -> CatalogEntry:
    entry_id = raw.get("id", "?")

    def fail(message: str) -> CatalogError:
        return CatalogError(f"catalog entry {entry_id!r}: {message}")

    try:
        files = tuple(CatalogFile(**f) for f in raw["files"])
        embedding = EmbeddingFacts(**raw["embedding"]) if raw.get("embedding") else None
        fields = {k: v for k, v in raw.items() if k not in ("files", "embedding", "arch")}
        arch_name = raw["arch"]
        if arch_name not in archs:
            raise fail(f"unknown architecture {arch_name!r}")
        entry = CatalogEntry(**fields, files=files, arch=archs[arch_name], embedding=embedding)
    except (TypeError, KeyError) as exc:
        raise fail(f"malformed ({exc})") from exc
    if not ID_RE.match(entry.id):
        raise fail("ids are lower-case letters, digits, '.', '_' and '-'")
    if entry.role not in ("chat", "embedding"):
        raise fail(f"role must be chat or embedding, not {entry.role!r}")
    if "/" not in entry.repo_id or entry.repo_id.count("/") != 1:
        raise fail(f"repo_id {entry.repo_id!r} is not owner/name")
    if entry.revision_pinned and not REVISION_RE.match(entry.revision):
        raise fail("a pinned revision must be a full 40-character commit id")
    if not entry.revision_pinned and entry.revision != "main":
        raise fail("an unpinned entry must use revision 'main'")
    if not files:
        raise fail("has no files")
    if entry.parameters <= 0 or (entry.active_parameters is not None and entry.active_parameters > entry.parameters):
        raise fail("parameter counts are inconsistent")
    if entry.role == "chat" and entry.quality_rank is None:
        raise fail("chat entries need a quality_rank")
    if entry.role == "embedding" and entry.embedding is None:
        raise fail("embedding entries need embedding facts")
    if entry.is_moe != (entry.active_parameters is not None):
        raise fail("active_parameters is set exactly for mixture-of-experts models")
    for file in files:
        if not file.path.endswith(".gguf") or file.path.startswith("/") or ".." in file.path.split("/"):
            raise fail(f"file path {file.path!r} must be a relative .gguf path")
        if not isinstance(file.size, int) or file.size <= 0:
            raise fail(f"{file.path}: size must be a positive integer")
        if file.sha256 is not None and not SHA256_RE.match(file.sha256):
            raise fail(f"{file.path}: sha256 must be 64 lower-case hex digits")
    _check_shards(entry, fail)
    return entry


def _check_shards(entry: CatalogEntry, fail: Any) -> None:
    shards = [f.shard for f in entry.files]
    if len(entry.files) == 1:
        if shards[0] not in (None, (1, 1)):
            raise fail("a single file must not be named as one shard of several")
        return
    count = len(entry.files)
    if any(s is None for s in shards):
        raise fail("every file of a split model must be named -0000N-of-0000M.gguf")
    if [s for s in shards] != [(i, count) for i in range(1, count + 1)]:
        raise fail(f"shards must be numbered 1..{count} of {count} in order")
    prefixes = {SHARD_RE.sub("", f.path) for f in entry.files}
    if len(prefixes) != 1:
        raise fail("the shards of one model must share one name")
