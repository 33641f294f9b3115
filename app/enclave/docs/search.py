"""Hybrid search: BM25 from SQLite FTS5 and exact cosine over a float32 matrix, fused by reciprocal rank fusion.

Why these choices:
- Exact search is one matrix-vector product over every chunk vector: about 10 ms at 100k chunks of 384 dimensions on
  a laptop core, and exact, so recall never depends on index tuning. Past a few hundred thousand chunks (or with
  768-d and larger models, past ~200k) the product and the matrix's memory (n x d x 4 bytes) grow enough that an ANN
  index (HNSW, built from the same ``embeddings`` rows) becomes the next step; nothing else here would change.
- The matrix is loaded once from SQLite and then only appended to as new vectors arrive (chunk ids only grow); a
  deletion bumps the index's generation and forces a full reload, so removed documents can never be returned.
- Reciprocal rank fusion needs no calibration between BM25 scores and cosines, and a passage found by both rankers
  rises above one found by either alone.
- BM25 ignores stop words and, in large indexes, terms found in more than a tenth of all chunks: their inverse
  document frequency is low, yet FTS5 would score every row containing them, which is what makes a large index slow.
- "Nothing relevant" is decided on cosine similarity against a per-model-family threshold (embedder.py): RRF scores
  are ranks, not evidence, so they cannot say that nothing matched.
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from enclave.docs.embedder import TextEmbedder
from enclave.docs.index import ChunkRow, DocumentIndex

if TYPE_CHECKING:
    import numpy as np  # imported where used: the window's first paint does not wait for numpy

# Fusion settings chosen on the 73-question R-manuals evaluation (evals/, docs/benchmarks.md): BM25 at half the
# weight of the vectors and a smaller RRF constant (Cormack et al. use 60) raised hybrid recall@5 from 0.712 to 0.767
# and MRR from 0.664 to 0.681; with MiniLM the keyword ranker alone is the weaker one (recall@5 0.644 vs 0.795).
RRF_K = 20  # damps the head of each ranking
CANDIDATES = 50  # taken from each ranker before fusion
KEYWORD_WEIGHT = 0.5  # BM25's weight in the fusion (the vector ranking's is 1)
COMMON_TERM_SHARE = 0.1
COMMON_TERM_MIN_CHUNKS = 2000  # below this many chunks every term counts: small indexes are fast anyway

_STOP_WORDS = """
    a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her
    here hers herself him himself his how i if in into is it its itself just me more most my myself no nor not
    now of off on once only or other our ours ourselves out over own same she should so some such than that the
    their theirs them themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves tell please
"""
STOP_WORDS = frozenset(_STOP_WORDS.split())  # English only: other languages keep every term
_TERM = re.compile(r"[^\W_]+")


def query_terms(text: str) -> list[str]:
    """Query words, split as FTS5's ``unicode61`` tokenizer splits text (at anything that is not a letter or digit)
    and lower-cased, stop words left out. Accents and stems are left to the index's own tokenizer (index.py), which
    folds and stems them exactly as it did the documents."""
    seen: dict[str, None] = {}
    for term in _TERM.findall(text.lower()):
        if term not in STOP_WORDS:
            seen.setdefault(term)
    return list(seen)


@dataclass(frozen=True)
class SearchResult:
    chunk_id: int
    document_id: int
    collection: str
    path: str
    kind: str  # "pdf", "docx", "markdown", ... (parsers.KINDS)
    page: int  # 1-based: PDF page, EPUB chapter; 1 for formats without pages
    start: int  # character offsets of ``text`` in that page
    end: int
    text: str
    score: float  # fused reciprocal-rank score: higher is better; only comparable within one search
    bm25_rank: int | None  # 1-based rank in each ranking, None where that ranker did not find it
    vector_rank: int | None
    similarity: float | None  # cosine with the query; None without an embedding for this chunk or the query
    relevant: bool  # similarity reaches the model's threshold (or no threshold/embedding applies)

    @property
    def name(self) -> str:
        return self.path.replace("\\", "/").rsplit("/", 1)[-1]


@dataclass(frozen=True)
class SearchResponse:
    query: str
    results: tuple[SearchResult, ...]
    mode: str  # "hybrid", "keyword" (no embedding model) or "vector"
    seconds: float
    note: str | None = None  # e.g. why only keywords were used

    @property
    def relevant(self) -> tuple[SearchResult, ...]:
        return tuple(r for r in self.results if r.relevant)

    @property
    def nothing_relevant(self) -> bool:
        """True when no passage is related enough to the question to be worth showing the model."""
        return not self.relevant


def _zeros(shape: int | tuple[int, int], dtype: str) -> np.ndarray:
    import numpy as np

    return np.zeros(shape, dtype=dtype)


@dataclass
class _Vectors:
    model: str
    generation: int
    ids: np.ndarray = field(default_factory=lambda: _zeros(0, "int64"))
    collections: np.ndarray = field(default_factory=lambda: _zeros(0, "int64"))
    matrix: np.ndarray = field(default_factory=lambda: _zeros((0, 0), "float32"))
    size: int = 0  # rows in use; the arrays have spare capacity so appends are amortised O(1)

    def append(self, ids: np.ndarray, collections: np.ndarray, matrix: np.ndarray) -> None:
        import numpy as np

        n = len(ids)
        if not n:
            return
        if self.matrix.shape[1] != matrix.shape[1] and self.size:
            raise ValueError("vector dimension changed within one model")
        needed = self.size + n
        if needed > len(self.ids):
            capacity = max(needed, len(self.ids) * 3 // 2, 1024)
            grown = np.zeros((capacity, matrix.shape[1]), dtype=np.float32)
            if self.size:
                grown[: self.size] = self.matrix[: self.size]
            self.matrix = grown
            self.ids = np.resize(self.ids, capacity)
            self.collections = np.resize(self.collections, capacity)
        self.matrix[self.size : needed] = matrix
        self.ids[self.size : needed] = ids
        self.collections[self.size : needed] = collections
        self.size = needed

    @property
    def last_id(self) -> int:
        return int(self.ids[self.size - 1]) if self.size else 0


DEDUPE_POOL = 3  # a result list is filled from the best k * DEDUPE_POOL fused candidates
DUPLICATE_SHARE = 0.8  # passages sharing this share of their distinct words count as the same passage


def _words(text: str) -> frozenset[str]:
    return frozenset(_TERM.findall(text.lower()))


def _distinct(ranked: list[int], rows: dict[int, ChunkRow], k: int) -> list[int]:
    """The first ``k`` chunks of ``ranked`` that do not repeat a better one: the same paragraph in two files (a
    manual and its copy, a section quoted in a FAQ), or a page header on every page. Overlapping neighbours of one
    file share less than DUPLICATE_SHARE of their words and are both kept."""
    kept: list[int] = []
    seen: list[frozenset[str]] = []
    for cid in ranked:
        row = rows.get(cid)
        if row is None:
            continue
        words = _words(row.text)
        if any(len(words & other) >= DUPLICATE_SHARE * min(len(words), len(other)) > 0 for other in seen):
            continue
        kept.append(cid)
        seen.append(words)
        if len(kept) == k:
            break
    return kept


class Searcher:
    """Searches one DocumentIndex; keeps its vectors in memory between searches. Use from one thread."""

    def __init__(
        self,
        index: DocumentIndex,
        *,
        rrf_k: int = RRF_K,
        candidates: int = CANDIDATES,
        keyword_weight: float = KEYWORD_WEIGHT,
        dedupe: bool = True,
    ) -> None:
        self.index = index
        self.rrf_k = rrf_k
        self.candidates = candidates
        self.keyword_weight = keyword_weight  # BM25's share in the fusion; the vector ranking weighs 1
        self.dedupe = dedupe  # leave out passages that repeat a better-ranked one almost word for word
        self._vectors: _Vectors | None = None

    def vectors(self, model: str) -> _Vectors:
        """The model's vectors, refreshed: appended to when new ones arrived, reloaded after any deletion."""
        generation = self.index.generation()
        cached = self._vectors
        if cached is None or cached.model != model or cached.generation != generation:
            cached = _Vectors(model, generation)
            self._vectors = None  # free the old matrix before loading the new one
        ids, collections, matrix = self.index.vectors_after(model, cached.last_id)
        cached.append(ids, collections, matrix)
        self._vectors = cached
        return cached

    def search(
        self,
        query: str,
        query_vector: np.ndarray | None = None,
        model_id: str | None = None,
        *,
        k: int = 5,
        collection: str | None = None,
        collections: Sequence[str] | None = None,
        min_similarity: float | None = None,
        keywords: bool = True,
        semantic: bool = True,
    ) -> SearchResponse:
        """The ``k`` best chunks for ``query``; pass the query's embedding and the model id for the semantic side.

        ``collections`` limits the search to those collections (None: all; empty: none); ``collection=name`` is
        ``collections=[name]``. Unknown names are ignored, so a chat keeps working after a collection is removed.
        """
        started = time.perf_counter()
        use_vectors = semantic and query_vector is not None and model_id is not None
        mode = "hybrid" if keywords and use_vectors else ("vector" if use_vectors else "keyword")
        collection_ids, note = self._collection_ids(collection, collections)
        if note is not None:
            return SearchResponse(query, (), mode, time.perf_counter() - started, note)
        bm25 = self._keyword_ranking(query, collection_ids) if keywords else []
        vector_ranked: list[int] = []
        similarity: dict[int, float] = {}
        vectors: _Vectors | None = None
        if use_vectors:
            assert query_vector is not None and model_id is not None
            vectors = self.vectors(model_id)
            vector_ranked, similarity = self._vector_ranking(vectors, query_vector, collection_ids)
        fused: dict[int, float] = {}
        for ranking, weight in ((bm25, self.keyword_weight), (vector_ranked, 1.0)):
            for rank, chunk_id in enumerate(ranking):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + weight / (self.rrf_k + rank + 1)
        ranked = sorted(fused, key=lambda cid: (-fused[cid], cid))
        if self.dedupe:
            rows = self.index.chunk_rows(ranked[: k * DEDUPE_POOL])
            best = _distinct(ranked[: k * DEDUPE_POOL], rows, k)
        else:
            best = ranked[:k]
            rows = self.index.chunk_rows(best)
        if vectors is not None and query_vector is not None:
            self._fill_similarity(vectors, query_vector, [c for c in best if c not in similarity], similarity)
        bm25_rank = {cid: i + 1 for i, cid in enumerate(bm25)}
        vector_rank = {cid: i + 1 for i, cid in enumerate(vector_ranked)}
        results = []
        for cid in best:
            row = rows.get(cid)
            if row is None:  # removed by another process since the ranking was made
                continue
            sim = similarity.get(cid)
            relevant = min_similarity is None or sim is None or sim >= min_similarity
            results.append(
                SearchResult(
                    chunk_id=cid,
                    document_id=row.document_id,
                    collection=row.collection,
                    path=row.path,
                    kind=row.kind,
                    page=row.page,
                    start=row.start,
                    end=row.end,
                    text=row.text,
                    score=fused[cid],
                    bm25_rank=bm25_rank.get(cid),
                    vector_rank=vector_rank.get(cid),
                    similarity=sim,
                    relevant=relevant,
                )
            )
        return SearchResponse(query, tuple(results), mode, time.perf_counter() - started)

    def _collection_ids(
        self, collection: str | None, collections: Sequence[str] | None
    ) -> tuple[frozenset[int] | None, str | None]:
        """The ids to search (None: all), or a note saying why nothing can be found."""
        if collection is not None and collections is not None:
            raise ValueError("pass collection or collections, not both")
        names = [collection] if collection is not None else (None if collections is None else list(collections))
        if names is None:
            return None, None
        if not names:
            return frozenset(), "No collection was chosen to search."
        found = self.index.find_collection_ids(names)
        if not found:
            unique = list(dict.fromkeys(names))
            if len(unique) == 1:
                return frozenset(), f"No collection {unique[0]!r}."
            return frozenset(), f"None of the collections {', '.join(repr(n) for n in unique)} exists."
        return frozenset(found.values()), None

    def search_with(
        self,
        embedder: TextEmbedder | None,
        query: str,
        *,
        k: int = 5,
        collection: str | None = None,
        collections: Sequence[str] | None = None,
    ) -> SearchResponse:
        """``search`` with ``embedder``'s query vector and relevance threshold (None: keywords only): how a typed
        query meets the embedding model, the same for the app and the CLI."""
        return self.search(
            query,
            embedder.embed_query(query) if embedder is not None else None,
            embedder.model_id if embedder is not None else None,
            k=k,
            collection=collection,
            collections=collections,
            min_similarity=embedder.family.min_similarity if embedder is not None else None,
        )

    def _keyword_ranking(self, query: str, collection_ids: frozenset[int] | None) -> list[int]:
        terms = query_terms(query)
        if not terms:
            return []
        counts = self.index.word_document_counts(terms)
        total = self.index.chunk_count()
        ceiling = max(total * COMMON_TERM_SHARE, COMMON_TERM_MIN_CHUNKS)
        selective = [t for t in terms if 0 < counts.get(t, 0) <= ceiling]
        return self.index.bm25(selective, collection_ids, self.candidates)

    def _vector_ranking(
        self, vectors: _Vectors, query_vector: np.ndarray, collection_ids: frozenset[int] | None
    ) -> tuple[list[int], dict[int, float]]:
        import numpy as np

        n = vectors.size
        if not n:
            return [], {}
        q = np.asarray(query_vector, dtype=np.float32).reshape(-1)
        if q.shape[0] != vectors.matrix.shape[1]:
            return [], {}  # vectors of another dimension: a model id clash; better nothing than garbage
        scores = vectors.matrix[:n] @ q
        if collection_ids is not None:
            wanted = np.fromiter(collection_ids, dtype=np.int64, count=len(collection_ids))
            scores = np.where(np.isin(vectors.collections[:n], wanted), scores, -np.inf)
        take = min(self.candidates, n)
        top = np.argpartition(-scores, take - 1)[:take] if take < n else np.arange(n)
        top = top[np.argsort(-scores[top], kind="stable")]
        ranked = [int(vectors.ids[i]) for i in top if np.isfinite(scores[i])]
        return ranked, {int(vectors.ids[i]): float(scores[i]) for i in top if np.isfinite(scores[i])}

    @staticmethod
    def _fill_similarity(
        vectors: _Vectors, query_vector: np.ndarray, chunk_ids: list[int], similarity: dict[int, float]
    ) -> None:
        """Cosine for keyword-only hits too, so every result can be judged relevant or not."""
        import numpy as np

        if not chunk_ids or not vectors.size:
            return
        ids = vectors.ids[: vectors.size]
        q = np.asarray(query_vector, dtype=np.float32).reshape(-1)
        if q.shape[0] != vectors.matrix.shape[1]:
            return
        for cid in chunk_ids:
            row = int(np.searchsorted(ids, cid))
            if row < vectors.size and int(ids[row]) == cid:
                similarity[cid] = float(vectors.matrix[row] @ q)


__all__ = ["STOP_WORDS", "SearchResponse", "SearchResult", "Searcher", "query_terms"]
