"""Retrieval evaluation: recall@1/5/10 and MRR of keyword-only, vector-only and hybrid search on real questions.

    python evals/retrieval_eval.py [--pdf-dir DIR] [--questions FILE] [--only R-data.pdf ...] [--index FILE]

The question set (``r_manuals.json``) has 73 questions written the way users ask them (paraphrases, not phrases
copied from the text) over the seven R manuals that Debian ships as PDFs (``apt-get install r-doc-pdf``:
/usr/share/R/doc/manual, 677 pages without the reference manual). Each names the expected file, the pages where the
answer is, and answer keywords. A result counts as a hit when it is from that file, on one of those pages, and its
text holds one of the keywords (case and line breaks ignored): the right passage, not only the right page.

The documents are indexed through the app's own pipeline (parse, chunk, embed with all-MiniLM-L6-v2, store), so
what is measured is what the app does. ``--index`` keeps the index file for the next run (it is rebuilt when the
files or the chunking change); without it a temporary index is used.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "app"))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))

from enclave.docs.chunking import DEFAULT_BUDGET, DEFAULT_OVERLAP  # noqa: E402
from enclave.docs.embedder import Embedder, TextEmbedder  # noqa: E402
from enclave.docs.index import DocumentIndex  # noqa: E402
from enclave.docs.ingest import Ingester  # noqa: E402
from enclave.docs.search import CANDIDATES, KEYWORD_WEIGHT, RRF_K, Searcher, SearchResponse  # noqa: E402

QUESTIONS = HERE / "r_manuals.json"
R_MANUALS = Path("/usr/share/R/doc/manual")
MODES = ("keyword", "vector", "hybrid")
CUTOFFS = (1, 5, 10)


@dataclass(frozen=True)
class Question:
    text: str
    file: str
    pages: tuple[int, ...]
    keywords: tuple[str, ...]


@dataclass
class Scores:
    """Ranks of the first hit per question (None: not in the top 10), per mode."""

    ranks: dict[str, list[int | None]] = field(default_factory=lambda: {m: [] for m in MODES})
    misses: dict[str, list[tuple[str, list[str]]]] = field(default_factory=lambda: {m: [] for m in MODES})

    def recall(self, mode: str, k: int) -> float:
        ranks = self.ranks[mode]
        return sum(1 for r in ranks if r is not None and r <= k) / len(ranks) if ranks else 0.0

    def mrr(self, mode: str) -> float:
        ranks = self.ranks[mode]
        return sum(1 / r for r in ranks if r is not None) / len(ranks) if ranks else 0.0

    def table(self) -> str:
        lines = [f"{'mode':8} {'n':>3} " + " ".join(f"{'R@' + str(k):>6}" for k in CUTOFFS) + f" {'MRR':>6}"]
        for mode in MODES:
            cells = " ".join(f"{self.recall(mode, k):6.3f}" for k in CUTOFFS)
            lines.append(f"{mode:8} {len(self.ranks[mode]):3} {cells} {self.mrr(mode):6.3f}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {
            mode: {**{f"recall@{k}": self.recall(mode, k) for k in CUTOFFS}, "mrr": self.mrr(mode)} for mode in MODES
        }


def load_questions(path: Path = QUESTIONS, files: Iterable[str] | None = None) -> list[Question]:
    wanted = set(files) if files is not None else None
    questions = [
        Question(q["q"], q["file"], tuple(q["pages"]), tuple(q["keywords"]))
        for q in json.loads(path.read_text(encoding="utf-8"))
    ]
    return [q for q in questions if wanted is None or q.file in wanted]


def _normalised(text: str) -> str:
    return " ".join(text.split()).lower()


def is_hit(question: Question, name: str, page: int, text: str) -> bool:
    if name != question.file or page not in question.pages:
        return False
    body = _normalised(text)
    return any(_normalised(k) in body for k in question.keywords)


def first_hit(question: Question, response: SearchResponse) -> int | None:
    for rank, result in enumerate(response.results, 1):
        if is_hit(question, result.name, result.page, result.text):
            return rank
    return None


def build_index(
    index_path: Path,
    embedder: TextEmbedder,
    pdfs: Sequence[Path],
    *,
    chunk_tokens: int = DEFAULT_BUDGET,
    overlap_tokens: int = DEFAULT_OVERLAP,
    contextual: bool = True,
) -> DocumentIndex:
    """Index ``pdfs`` with the app's pipeline (unchanged files are not redone when the index is kept)."""
    stamp = index_path.with_suffix(".settings.json")
    settings = {"chunk": chunk_tokens, "overlap": overlap_tokens, "model": embedder.model_id, "context": contextual}
    if index_path.exists() and (not stamp.exists() or json.loads(stamp.read_text()) != settings):
        for suffix in ("", "-wal", "-shm"):
            Path(f"{index_path}{suffix}").unlink(missing_ok=True)
    index = DocumentIndex(index_path)
    stamp.write_text(json.dumps(settings))  # an interrupted run resumes where it stopped
    ingester = Ingester(
        index, embedder, chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens, contextual=contextual
    )
    ingester.add(pdfs)
    statuses = ingester.run()
    ingester.close()
    failed = [s for s in statuses if s.status != "ok"]
    if failed:
        raise RuntimeError(f"could not index {[(s.path, s.status, s.error) for s in failed]}")
    return index


def evaluate(searcher: Searcher, embedder: TextEmbedder, questions: Sequence[Question], *, k: int = 10) -> Scores:
    scores = Scores()
    flags: dict[str, dict[str, bool]] = {
        "keyword": {"semantic": False},
        "vector": {"keywords": False},
        "hybrid": {},
    }
    for question in questions:
        vector: np.ndarray = embedder.embed_query(question.text)
        for mode in MODES:
            response = searcher.search(question.text, vector, embedder.model_id, k=k, **flags[mode])
            rank = first_hit(question, response)
            scores.ranks[mode].append(rank)
            if rank is None or rank > 5:
                top = [f"{r.name} p{r.page}" for r in response.results[:5]]
                scores.misses[mode].append((question.text, top))
    return scores


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pdf-dir", type=Path, default=R_MANUALS, help=f"the PDFs (default {R_MANUALS})")
    parser.add_argument("--questions", type=Path, default=QUESTIONS)
    parser.add_argument("--only", nargs="*", metavar="FILE", help="only these PDFs and their questions")
    parser.add_argument("--index", type=Path, help="keep the index in this file between runs")
    parser.add_argument("--chunk-tokens", type=int, default=DEFAULT_BUDGET)
    parser.add_argument("--overlap-tokens", type=int, default=DEFAULT_OVERLAP)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-context", action="store_true", help="embed chunks without title and headings")
    parser.add_argument("--rrf-k", type=int, default=RRF_K, help=f"reciprocal rank fusion constant (default {RRF_K})")
    parser.add_argument("--candidates", type=int, default=CANDIDATES, help="taken from each ranker before fusion")
    parser.add_argument("--keyword-weight", type=float, default=KEYWORD_WEIGHT, help="BM25's weight in the fusion")
    parser.add_argument("--no-dedupe", action="store_true", help="keep near-identical passages in the results")
    parser.add_argument("--misses", action="store_true", help="list the hybrid misses (not in the top 5)")
    parser.add_argument("--json", action="store_true", help="print the scores as JSON as well")
    args = parser.parse_args(argv)

    questions = load_questions(args.questions, args.only)
    files = sorted({q.file for q in questions})
    pdfs = [args.pdf_dir / name for name in files]
    absent = [str(p) for p in pdfs if not p.exists()]
    if absent:
        print(f"missing PDFs: {absent} (apt-get install r-doc-pdf, or --pdf-dir)", file=sys.stderr)
        return 2
    import minilm_gguf

    with tempfile.TemporaryDirectory() as tmp, Embedder(minilm_gguf.cached_model_path(), n_threads=args.threads) as e:
        index_path = args.index or Path(tmp) / "eval.sqlite3"
        started = time.perf_counter()
        index = build_index(
            index_path,
            e,
            pdfs,
            chunk_tokens=args.chunk_tokens,
            overlap_tokens=args.overlap_tokens,
            contextual=not args.no_context,
        )
        indexed = time.perf_counter() - started
        try:
            searcher = Searcher(index, rrf_k=args.rrf_k, candidates=args.candidates, keyword_weight=args.keyword_weight)
            scores = evaluate(searcher, e, questions)
            chunks = index.chunk_count()
        finally:
            index.close()
    print(
        f"{len(questions)} questions over {len(files)} PDFs ({chunks:,} chunks of {args.chunk_tokens} tokens, "
        f"overlap {args.overlap_tokens}{'' if args.no_context else ', with context'}; indexed in {indexed:.0f} s; "
        f"RRF k {args.rrf_k}, {args.candidates} candidates, keyword weight {args.keyword_weight}, "
        f"{'no ' if args.no_dedupe else ''}de-duplication)"
    )
    print(scores.table())
    if args.misses:
        for question, top in scores.misses["hybrid"]:
            print(f"  miss: {question}\n        top 5: {', '.join(top)}")
    if args.json:
        print(json.dumps(scores.as_dict()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["Question", "Scores", "build_index", "evaluate", "first_hit", "is_hit", "load_questions", "main"]
