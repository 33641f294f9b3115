"""Ingestion: incremental re-scans, resuming after a stop or a restart, re-embedding on a model change, removal.

A deterministic fake embedder (tests/fixtures/docs_fakes.py) makes every embedding call countable; retrieval
quality with the real model is tested in test_docs_search.py.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from enclave.docs.index import DocumentIndex, DocumentIndexError
from enclave.docs.ingest import FileStatus, Ingester, IngestProgress, ingest
from enclave.docs.isolation import InProcessParser
from enclave.docs.search import Searcher

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from docs_fakes import FakeEmbedder

TOPICS = {
    "volcanoes.md": "# Volcanoes\n\nMagma rises through the crust and erupts as lava. Mount Etna in Sicily is one of "
    "the most active volcanoes in Europe; seismographs monitor its eruptions.\n",
    "bread.md": "# Baking bread\n\nMix flour, water, salt and yeast. Knead the dough for ten minutes, let it rise "
    "for two hours, then bake at 230 degrees until the crust is brown.\n",
    "taxes.txt": "Filing taxes. The annual income tax return is due on the fifteenth of April. Keep receipts for "
    "deductible expenses such as charitable donations and home office costs.\n",
}


def write_topics(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in TOPICS.items():
        (folder / name).write_text(text)
    return folder


def long_document(path: Path, sentences: int = 1500) -> Path:
    path.write_text(" ".join(f"Sentence {i} describes the widget number {i} in detail." for i in range(sentences)))
    return path


@pytest.fixture
def index(tmp_path: Path) -> DocumentIndex:
    db = DocumentIndex(tmp_path / "index" / "documents.sqlite3")
    yield db  # type: ignore[misc]
    db.close()


def names(statuses: list[FileStatus]) -> dict[str, str]:
    return {Path(s.path).name: s.status for s in statuses}


def test_unchanged_files_are_never_parsed_or_embedded_again(index: DocumentIndex, tmp_path: Path) -> None:
    folder = write_topics(tmp_path / "notes")
    embedder, parser = FakeEmbedder(), InProcessParser()
    first = ingest(index, embedder, [folder], parser=parser)
    assert names(first) == dict.fromkeys(TOPICS, "ok")
    assert parser.calls == 3
    embedded = len(embedder.embedded)
    assert embedded == sum(s.chunks for s in first) > 0

    again = ingest(index, embedder, [folder], parser=parser)
    assert names(again) == dict.fromkeys(TOPICS, "unchanged")
    assert parser.calls == 3 and len(embedder.embedded) == embedded

    bread = folder / "bread.md"
    os.utime(bread, (time.time() + 10, time.time() + 10))  # saved again, same bytes: re-hashed, not re-read
    assert names(ingest(index, embedder, [folder], parser=parser))["bread.md"] == "unchanged"
    assert parser.calls == 3

    bread.write_text("# Bread\n\nSourdough needs a starter fed with flour and water.\n")
    third = names(ingest(index, embedder, [folder], parser=parser))
    assert third == {"volcanoes.md": "unchanged", "bread.md": "ok", "taxes.txt": "unchanged"}
    assert parser.calls == 4
    searcher = Searcher(index)
    response = searcher.search("sourdough starter", embedder.embed_query("sourdough starter"), embedder.model_id)
    assert response.results[0].name == "bread.md" and "Sourdough" in response.results[0].text
    assert not any("Knead" in r.text for r in searcher.search("knead dough").results)  # the old text is gone


def test_folders_report_every_file_and_broken_ones_do_not_stop_the_rest(index: DocumentIndex, tmp_path: Path) -> None:
    folder = write_topics(tmp_path / "mixed")
    (folder / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    (folder / "broken.pdf").write_bytes(b"%PDF-1.4 truncated")
    (folder / "empty.txt").write_bytes(b"")
    (folder / ".hidden.md").write_text("secret")
    (folder / "sub").mkdir()
    (folder / "sub" / "deep.md").write_text("Deep notes about gardening.")
    single = tmp_path / "scan.heic"
    single.write_bytes(b"\0")
    statuses = ingest(index, FakeEmbedder(), [folder, single, tmp_path / "nowhere.md"])
    assert names(statuses) == {
        "photo.jpg": "skipped",
        "scan.heic": "unsupported",
        "nowhere.md": "missing",
        "volcanoes.md": "ok",
        "bread.md": "ok",
        "taxes.txt": "ok",
        "deep.md": "ok",
        "broken.pdf": "damaged",
        "empty.txt": "empty",
    }
    by_name = {Path(s.path).name: s for s in statuses}
    assert by_name["broken.pdf"].error and by_name["empty.txt"].error
    listed = {d.name: d for d in index.documents()}
    assert set(listed) == {"volcanoes.md", "bread.md", "taxes.txt", "deep.md", "broken.pdf", "empty.txt"}
    assert listed["broken.pdf"].status == "damaged" and listed["broken.pdf"].chunks == 0
    assert listed["bread.md"].status == "ok" and listed["bread.md"].chunks >= 1


def test_a_stopped_run_resumes_after_a_restart_without_redoing_work(tmp_path: Path) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    for i in range(3):
        long_document(folder / f"part{i}.txt")
    db_path = tmp_path / "documents.sqlite3"
    stop = threading.Event()
    first_embedder = FakeEmbedder()

    def stop_after_two_batches(progress: IngestProgress) -> None:
        if len(first_embedder.embedded) >= 32:
            stop.set()

    with DocumentIndex(db_path) as index:
        done = ingest(index, first_embedder, [folder], stop=stop, on_progress=stop_after_two_batches)
        assert done == []  # stopped inside the first file
        assert index.queue_size() == 3
        [partial] = [d for d in index.documents() if d.status == "indexing"]
        assert partial.chunks > 32

    # "Restart": a new process opens the same file; the queue and the stored chunks are still there.
    second_embedder = FakeEmbedder()
    parser = InProcessParser()
    with DocumentIndex(db_path) as index:
        ingester = Ingester(index, second_embedder, parser=parser)
        finished = ingester.run()
        assert names(finished) == {"part0.txt": "ok", "part1.txt": "ok", "part2.txt": "ok"}
        assert parser.calls == 2  # part0 was already parsed and chunked: only its embedding resumed
        total_chunks = sum(d.chunks for d in index.documents())
        assert len(first_embedder.embedded) + len(second_embedder.embedded) == total_chunks  # nothing twice
        assert index.queue_size() == 0 and all(d.status == "ok" for d in index.documents())


def test_changing_the_embedding_model_re_embeds_without_re_reading(index: DocumentIndex, tmp_path: Path) -> None:
    folder = write_topics(tmp_path / "notes")
    old = FakeEmbedder("model-a:1")
    parser = InProcessParser()
    ingest(index, old, [folder], parser=parser)
    (folder / "taxes.txt").unlink()  # even a file that is gone can be re-embedded from its stored chunks
    new = FakeEmbedder("model-b:2", dimension=32)
    ingester = Ingester(index, old, parser=parser)
    assert ingester.set_embedder(new) == 3
    statuses = ingester.run()
    assert names(statuses) == dict.fromkeys(TOPICS, "ok")
    assert parser.calls == 3  # nothing was parsed again
    assert len(new.embedded) == sum(d.chunks for d in index.documents())
    stored = {row[0] for row in index._query("SELECT DISTINCT model FROM embeddings")}
    assert stored == {"model-b:2"}  # the old model's vectors are dropped once the new ones are complete
    response = Searcher(index).search("income tax return", new.embed_query("income tax return"), new.model_id)
    assert response.results[0].name == "taxes.txt" and response.results[0].vector_rank is not None
    assert ingest(index, new, [folder], parser=parser) and parser.calls == 3


def test_cancel_keeps_what_was_stored_and_adding_again_finishes(index: DocumentIndex, tmp_path: Path) -> None:
    big = long_document(tmp_path / "big.txt")
    other = write_topics(tmp_path / "notes")
    embedder = FakeEmbedder()
    ingester = Ingester(index, embedder)
    ingester.add([big, other])
    while len(embedder.embedded) < 3 + 16:  # smaller files first: the three notes, then big.txt
        ingester.step()
    assert ingester.cancel() == 1  # big.txt, in progress
    assert ingester.idle and index.queue_size() == 0
    docs = {d.name: d for d in index.documents()}
    assert {name: d.status for name, d in docs.items()} == {**dict.fromkeys(TOPICS, "ok"), "big.txt": "cancelled"}
    doc = docs["big.txt"]
    assert doc.chunks > 16
    assert Searcher(index).search("widget number 7").results  # keyword search already finds the stored chunks
    ingester.add([big])
    assert names(ingester.run()) == {"big.txt": "ok"}
    assert len(embedder.embedded) == 3 + doc.chunks  # the finished part was not embedded twice


def test_remove_by_path_and_id_and_searches_never_return_removed_chunks(index: DocumentIndex, tmp_path: Path) -> None:
    folder = write_topics(tmp_path / "notes")
    embedder = FakeEmbedder()
    ingest(index, embedder, [folder])
    searcher = Searcher(index)
    query = "annual income tax return"
    assert searcher.search(query, embedder.embed_query(query), embedder.model_id).results[0].name == "taxes.txt"
    assert index.remove_path(str((folder / "taxes.txt").resolve())) == 1
    after = searcher.search(query, embedder.embed_query(query), embedder.model_id)  # the cached matrix is reloaded
    assert all(r.name != "taxes.txt" for r in after.results)
    bread = next(d for d in index.documents() if d.name == "bread.md")
    assert index.remove([bread.id]) == 1 and index.remove([bread.id]) == 0
    assert {d.name for d in index.documents()} == {"volcanoes.md"}


def test_keywords_match_across_accents_case_and_word_forms(index: DocumentIndex, tmp_path: Path) -> None:
    (tmp_path / "menu.md").write_text("Le Café Naïve serves tomatoes. Die Größe des Gartens: 20 m².")
    ingest(index, None, [tmp_path / "menu.md"])  # no embedding model: a keyword-only index
    searcher = Searcher(index)
    for query in ("naive cafe", "CAFÉ", "tomato", "größe", "Gartens"):
        response = searcher.search(query)
        assert response.mode == "keyword" and [r.name for r in response.results] == ["menu.md"], query
    assert searcher.search("tomatoes potatoes").results[0].bm25_rank == 1
    assert searcher.search("potato").results == ()


def test_the_vector_cache_grows_by_appending(index: DocumentIndex, tmp_path: Path) -> None:
    embedder = FakeEmbedder()
    searcher = Searcher(index)
    (tmp_path / "one.md").write_text("alpha beta gamma")
    ingest(index, embedder, [tmp_path / "one.md"])
    first = searcher.vectors(embedder.model_id)
    (tmp_path / "two.md").write_text("delta epsilon zeta")
    ingest(index, embedder, [tmp_path / "two.md"])
    second = searcher.vectors(embedder.model_id)
    assert second is first and second.size == 2  # appended in place, not reloaded
    assert np.array_equal(second.ids[: second.size], np.sort(second.ids[: second.size]))


def test_index_file_problems_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "documents.sqlite3"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DocumentIndexError, match="damaged"):
        DocumentIndex(bad)
    newer = tmp_path / "newer.sqlite3"
    sqlite3.connect(newer).execute("PRAGMA user_version = 99").connection.close()
    with pytest.raises(DocumentIndexError, match="newer Enclave"):
        DocumentIndex(newer)
