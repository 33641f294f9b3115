"""What document search costs a chat question, through the app's documents thread, against the raw library calls.

    QT_QPA_PLATFORM=offscreen python bench/bench_docs_chat.py [--rounds 3]

Indexes the shared PDF corpus (../shared/corpus/pdf-samples) with all-MiniLM-L6-v2 through ``DocsController`` (the
app's documents thread), then times each question three ways, interleaved:

- app: ``DocsController.search`` → ``searchFinished`` on the GUI thread (queued signal to the documents thread, query
  embedding, hybrid search, queued signal back), plus ``build_document_prompt``: what ``ChatSession`` waits for
  between Send and handing the request to the engine;
- raw: ``Llama.embed`` on the query + ``Searcher.search`` on the same index, in this thread;
- ratio app ÷ raw (1.0 = the thread hop and prompt assembly cost nothing).

Ingest is compared the same way: the corpus through the documents thread vs ``ingest()`` in this thread.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))

from PySide6.QtCore import QCoreApplication, QEventLoop  # noqa: E402

from enclave.docs.embedder import Embedder  # noqa: E402
from enclave.docs.index import DocumentIndex  # noqa: E402
from enclave.docs.ingest import ingest  # noqa: E402
from enclave.docs.isolation import IsolatedParser  # noqa: E402
from enclave.docs.prompt import build_document_prompt, sources_budget  # noqa: E402
from enclave.docs.search import Searcher, SearchResponse  # noqa: E402
from enclave.workers.docs_worker import DocsController  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus" / "pdf-samples"
QUESTIONS = [
    "How are forms filled in a PDF?",
    "What does the outline of the document contain?",
    "Which images are embedded in the page?",
    "What is the title of the four page document?",
    "How is the geological map described?",
    "Which fonts are used in the document?",
    "What does the trivial document say?",
    "How is text encoded in the file?",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import minilm_gguf

    model = minilm_gguf.cached_model_path()
    _app = QCoreApplication.instance() or QCoreApplication(sys.argv[:1])
    with tempfile.TemporaryDirectory() as tmp:
        index_path = Path(tmp) / "documents.sqlite3"
        docs = DocsController(index_path=index_path, embedding_model=model, parser_factory=IsolatedParser)
        # Ingest, raw: the Qt-free pipeline driven in this thread (the same reader process and model).
        direct_index = DocumentIndex(Path(tmp) / "direct.sqlite3")
        with Embedder(model) as direct_embedder:
            reader = IsolatedParser()
            started = time.perf_counter()
            ingest(direct_index, direct_embedder, [CORPUS], parser=reader)
            direct_s = time.perf_counter() - started
            reader.close()
        direct_index.close()
        # Ingest, app: the documents thread, with this (GUI) thread asleep in its event loop.
        done = QEventLoop()
        docs.ingestFinished.connect(done.quit)
        started = time.perf_counter()
        docs.add_paths([CORPUS])
        done.exec()
        app_s = time.perf_counter() - started
        ok = [d for d in docs.documents if d.status == "ok"]
        pages = sum(d.page_count or 0 for d in ok)
        print(f"ingest: {len(ok)} PDFs with text, {pages} pages, {sum(d.chunks for d in ok)} chunks")
        print(f"ingest app (documents thread): {app_s:.1f} s = {pages / app_s:.1f} pages/s")
        print(f"ingest raw (same pipeline, this thread): {direct_s:.1f} s = {pages / direct_s:.1f} pages/s")
        print(f"ratio app ÷ raw ingest speed: {direct_s / app_s:.3f}")

        answers: dict[str, object] = {}
        waiter = QEventLoop()

        def on_answer(rid: str, response: object) -> None:
            answers[rid] = response
            waiter.quit()

        docs.searchFinished.connect(on_answer)

        def app_search(question: str) -> float:
            t0 = time.perf_counter()
            rid = docs.search(question, k=8)
            if rid not in answers:
                waiter.exec()  # sleeps in Qt's event loop, as the GUI thread does between events
            response = answers.pop(rid)
            assert isinstance(response, SearchResponse)
            build_document_prompt(question, response.results, budget_tokens=sources_budget(8192, 200))
            return time.perf_counter() - t0

        raw_index = DocumentIndex(index_path)
        searcher = Searcher(raw_index)
        embedder = Embedder(model)

        def raw_search(question: str) -> float:
            t0 = time.perf_counter()
            vector = embedder.embed_query(question)
            searcher.search(question, vector, embedder.model_id, k=8, min_similarity=embedder.family.min_similarity)
            return time.perf_counter() - t0

        app_search(QUESTIONS[0])  # warm both paths: first search loads the vector matrix
        raw_search(QUESTIONS[0])
        app_times: list[float] = []
        raw_times: list[float] = []
        for _ in range(args.rounds):
            for question in QUESTIONS:
                app_times.append(app_search(question))
                raw_times.append(raw_search(question))
        embedder.close()
        raw_index.close()
        docs.shutdown()

    def ms(values: list[float], q: float) -> float:
        return statistics.quantiles(values, n=100)[int(q) - 1] * 1000 if q < 100 else max(values) * 1000

    app_median, raw_median = statistics.median(app_times) * 1000, statistics.median(raw_times) * 1000
    print(f"questions: {len(app_times)} ({len(QUESTIONS)} × {args.rounds} rounds, interleaved)")
    print(f"app  (documents thread + prompt): median {app_median:.1f} ms, p95 {ms(app_times, 95):.1f} ms")
    print(f"raw  (embed + search, same thread): median {raw_median:.1f} ms, p95 {ms(raw_times, 95):.1f} ms")
    print(f"ratio app ÷ raw (median): {app_median / raw_median:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
