"""Embeddings (checked against a numpy BERT), token chunking, and hybrid retrieval on a question set, with the real
all-MiniLM-L6-v2 converted to GGUF (tests/fixtures/minilm_gguf.py)."""

from __future__ import annotations

import math
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from enclave.docs.chunking import chunk_pages
from enclave.docs.embedder import Embedder, EmbedderError, detect_family
from enclave.docs.index import DocumentIndex
from enclave.docs.ingest import Ingester
from enclave.docs.parsers import Page
from enclave.docs.search import Searcher, SearchResponse, query_terms

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
import minilm_gguf

PDFS = Path(__file__).parent / "data" / "pdf"  # real PDFs (CC-BY-SA-4.0, see tests/data/README.md)
# A two-column paper with a table on page 3, and a Google Docs export.
REAL_PDFS = [
    PDFS / "026-latex-multicolumn" / "multicolumn.pdf",
    PDFS / "011-google-doc-document" / "google-doc-document.pdf",
]


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    return minilm_gguf.cached_model_path()


@pytest.fixture(scope="module")
def embedder(minilm_path: Path) -> Iterator[Embedder]:
    # One thread: on a busy shared CI machine, llama.cpp's thread barriers stall far more than one thread loses.
    model = Embedder(minilm_path, n_threads=1)
    yield model
    model.close()


# --- the embedding model ----------------------------------------------------------------------------------------


def reference_embedding(text_ids: list[int]) -> np.ndarray:
    """all-MiniLM-L6-v2's forward pass in numpy (float32), mean pooling, normalised."""
    from safetensors.numpy import load_file

    w = {
        k.removeprefix("bert."): v.astype(np.float32)
        for k, v in load_file(str(minilm_gguf.model_dir() / "model.safetensors")).items()
    }

    def norm(x: np.ndarray, prefix: str) -> np.ndarray:
        mean = x.mean(-1, keepdims=True)
        var = ((x - mean) ** 2).mean(-1, keepdims=True)
        return (x - mean) / np.sqrt(var + 1e-12) * w[prefix + ".weight"] + w[prefix + ".bias"]

    def gelu(x: np.ndarray) -> np.ndarray:
        return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))

    ids = np.array(text_ids)
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][: len(ids)]
    x = norm(x + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    heads, size = 12, 32
    for layer in range(6):
        p = f"encoder.layer.{layer}."

        def lin(v: np.ndarray, name: str, p: str = p) -> np.ndarray:
            return v @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q, k, v = (
            lin(x, f"attention.self.{n}").reshape(-1, heads, size).transpose(1, 0, 2) for n in ("query", "key", "value")
        )
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(size)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        attention = (scores / scores.sum(-1, keepdims=True)) @ v
        x = norm(
            x + lin(attention.transpose(1, 0, 2).reshape(len(ids), -1), "attention.output.dense"),
            p + "attention.output.LayerNorm",
        )
        x = norm(x + lin(gelu(lin(x, "intermediate.dense")), "output.dense"), p + "output.LayerNorm")
    pooled = x.mean(0)
    return pooled / np.linalg.norm(pooled)


def test_gguf_embeddings_match_a_numpy_reference(embedder: Embedder) -> None:
    texts = ["The quick brown fox jumps over the lazy dog.", "Enclave keeps your documents private, offline."]
    ours = embedder.embed_documents(texts)  # one batch holding both: sequences must not leak into each other
    for text, vector in zip(texts, ours, strict=True):
        ids = embedder._llm.tokenize(text.encode(), add_bos=True, special=False)
        assert ids[0] == 101 and ids[-1] == 102  # [CLS] ... [SEP]
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5
        assert float(vector @ reference_embedding(ids)) >= 0.999


def test_model_facts_come_from_the_gguf(embedder: Embedder, tmp_path: Path, gemma_path: Path) -> None:
    assert embedder.family.name == "minilm" and embedder.family.query_prefix == ""
    assert embedder.dimension == 384
    assert embedder.max_input_tokens == 256  # MiniLM was trained at 256, although the header says 512
    assert embedder.max_text_tokens() == 254  # minus [CLS] and [SEP]
    assert embedder.count_tokens("hello world") == 2  # no special tokens in chunk budgets
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_bytes(b"not a model at all")
    with pytest.raises(EmbedderError):
        Embedder(not_gguf)
    with pytest.raises(EmbedderError, match="not an embedding model"):
        Embedder(gemma_path)  # a chat model chosen by mistake is refused from its header, before llama.cpp loads it


def test_family_table_sets_prefixes_and_limits() -> None:
    nomic = detect_family("nomic-embed-text-v1.5", "nomic-embed-text-v1.5.Q4_K_M.gguf", "nomic-bert")
    assert (nomic.query_prefix, nomic.document_prefix) == ("search_query: ", "search_document: ")
    bge = detect_family("bge-small-en-v1.5", "bge-small-en-v1.5-q4_k_m.gguf", "bert")
    assert bge.query_prefix.startswith("Represent this sentence") and bge.document_prefix == ""
    assert detect_family("bge-m3", "bge-m3-Q4_K_M.gguf", "bert").name == "bge-m3"
    e5 = detect_family("multilingual-e5-base", "multilingual-e5-base-q4_k_m.gguf", "bert")
    assert (e5.query_prefix, e5.document_prefix) == ("query: ", "passage: ")
    assert detect_family("all-MiniLM-L6-v2", "all-MiniLM-L6-v2-Q8_0.gguf", "bert").max_tokens == 256
    assert detect_family("some-model", "se5ries.gguf", "bert").name == "generic"  # "e5" only as a word


def test_overlong_and_batched_inputs_never_abort(embedder: Embedder) -> None:
    long_text = " ".join(f"word{i}" for i in range(3000))  # ~9,000 tokens: cut to the model's 256
    vectors = embedder.embed_documents([long_text, "short", long_text[:5000]])
    assert vectors.shape == (3, 384) and np.all(np.isfinite(vectors))
    alone = embedder.embed_documents(["short"])[0]
    assert float(alone @ vectors[1]) > 0.9999  # batching with others does not change a text's vector
    assert embedder.embed_documents([]).shape == (0, 384)


# --- chunking -------------------------------------------------------------------------------------------------------


def test_chunks_respect_the_budget_and_keep_exact_offsets(embedder: Embedder) -> None:
    text = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(300))
    text += "\n" + "x" * 3000 + " " + "数据库索引" * 400  # a word longer than the budget, and CJK without spaces
    chunks = chunk_pages([Page(3, text)], embedder.count_tokens, budget=60, overlap=15)
    assert len(chunks) > 20
    for chunk in chunks:
        assert chunk.page == 3
        assert text[chunk.start : chunk.end] == chunk.text
        assert embedder.count_tokens(chunk.text) <= 60
    assert chunks[1].start < chunks[0].end  # consecutive chunks overlap
    covered = "".join(text[c.start : c.end] for c in chunks)
    assert "数据库索引" in covered and "Sentence number 299" in covered


# --- retrieval on a question set ------------------------------------------------------------------------------------

HANDBOOK = """# Employee handbook

## Vacation
Every full-time employee receives 25 paid vacation days per calendar year. Unused days may be carried over until the
end of March of the following year; after that they expire.

## Working from home
Staff may work remotely on Tuesdays and Thursdays. On the other weekdays everyone is expected in the office, unless a
manager agrees to an exception in writing.

## Expenses
Submit receipts for reimbursement within 30 days of the purchase through the finance portal. Expenses submitted later
are only refunded with the approval of the department head.

## Security badges
If your security badge is lost or stolen, report it to the facilities desk on the ground floor immediately. A
replacement badge costs a fee of 20 euros.
"""
GARDEN = """Growing vegetables

Tomato plants need six to eight hours of direct sunlight every day and rich, well-drained soil.

Water deeply twice a week rather than a little every day, so the roots grow down instead of staying near the surface.

A healthy compost heap mixes three parts brown material, such as dry leaves and cardboard, with one part green
material, such as grass clippings and kitchen scraps. Turn it every few weeks.

Slugs can be controlled with shallow beer traps sunk into the soil, or by scattering crushed eggshells around young
plants. Collect them by torchlight after rain.
"""
ASTRONOMY = """<html><head><title>Planets</title><script>var tracking = "venus";</script></head><body>
<h1>The planets</h1>
<p>Venus is the hottest planet in the solar system. Its thick carbon dioxide atmosphere traps heat in a runaway
greenhouse effect, so the surface reaches 465 degrees Celsius, hotter than Mercury.</p>
<p>Olympus Mons on Mars is the largest volcano known in the solar system, about 22 kilometres high, nearly three times
the height of Mount Everest.</p>
<p>Jupiter's Great Red Spot is a giant storm, larger than the Earth, that has been observed for more than 300 years.</p>
<p>Saturn's rings are made mostly of chunks of water ice, from grains of dust to pieces as large as houses.</p>
</body></html>"""
RECIPES = [
    "Pancakes: whisk flour, eggs and milk into a smooth batter, then let the batter rest for thirty minutes before "
    "frying, so the flour can absorb the liquid.",
    "Risotto: toast arborio rice in butter, then add hot stock one ladle at a time, stirring, for about eighteen "
    "minutes until creamy.",
    "Guacamole: mash ripe avocados with salt and chopped onion. Lime juice keeps the guacamole from turning brown.",
]
CAR_CHAPTERS = {
    "tires": "<h1>Tires</h1><p>Check the tire pressure once a month, when the tires are cold, using the values printed "
    "inside the driver's door.</p>",
    "oil": "<h1>Engine oil</h1><p>Change the engine oil and the oil filter every 10,000 kilometres or once a year, "
    "whichever comes first. Use the synthetic grade the manual specifies.</p>",
    "battery": "<h1>Battery</h1><p>To jump-start a flat battery, connect the red clamp to the positive terminal first, "
    "then the black clamp to a bare metal part of the engine block, away from the battery.</p>",
}

# (question, file, page, a phrase the retrieved chunk must contain)
QUESTIONS = [
    ("How many vacation days do employees get per year?", "handbook.md", 1, "25 paid vacation days"),
    ("Which days can staff work from home?", "handbook.md", 1, "Tuesdays and Thursdays"),
    ("What should I do if I lose my access card?", "handbook.md", 1, "facilities desk"),
    ("deadline for handing in receipts", "handbook.md", 1, "within 30 days"),
    ("How much sun do tomatoes need?", "garden.txt", 1, "six to eight hours"),
    ("How do I get rid of slugs in the garden?", "garden.txt", 1, "beer traps"),
    ("ratio of brown to green material in compost", "garden.txt", 1, "three parts brown"),
    ("Which planet is the hottest, and why?", "astronomy.html", 1, "runaway"),
    ("What is the tallest volcano on any planet?", "astronomy.html", 1, "Olympus Mons"),
    ("How long should pancake batter rest?", "recipes.docx", 1, "thirty minutes"),
    ("How do you keep guacamole from going brown?", "recipes.docx", 1, "Lime juice"),
    ("How often should tire pressure be checked?", "car.epub", 1, "once a month"),
    ("oil change interval", "car.epub", 2, "10,000 kilometres"),
    ("How do I jump start a car with a dead battery?", "car.epub", 3, "red clamp"),
    ("What is the capital of Finland?", "multicolumn.pdf", 3, "Helsinki"),
    ("In which countries is German an official language?", "multicolumn.pdf", 3, "Austria"),
    ("two-column sample document abstract", "multicolumn.pdf", 1, "two columns"),
    ("Should mistakes be ignored quietly?", "google-doc-document.pdf", 1, "Errors should never pass silently"),
    ("is readable code important", "google-doc-document.pdf", 1, "Readability counts"),
]
UNRELATED = [
    "Who won the football world cup in 1998?",
    "quantum chromodynamics",
    "How do I reset my wifi router?",
    "Who painted the Mona Lisa?",
]


def write_question_corpus(folder: Path) -> None:
    from docx import Document

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "handbook.md").write_text(HANDBOOK)
    (folder / "garden.txt").write_text(GARDEN)
    (folder / "astronomy.html").write_text(ASTRONOMY)
    document = Document()
    for paragraph in RECIPES:
        document.add_paragraph(paragraph)
    document.save(str(folder / "recipes.docx"))
    with zipfile.ZipFile(folder / "car.epub", "w") as archive:
        archive.writestr(
            "META-INF/container.xml",
            '<container><rootfiles><rootfile full-path="book.opf"/></rootfiles></container>',
        )
        items = "".join(f'<item id="{n}" href="{n}.xhtml"/>' for n in CAR_CHAPTERS)
        refs = "".join(f'<itemref idref="{n}"/>' for n in CAR_CHAPTERS)
        archive.writestr("book.opf", f"<package><manifest>{items}</manifest><spine>{refs}</spine></package>")
        for name, body in CAR_CHAPTERS.items():
            archive.writestr(f"{name}.xhtml", f"<html><body>{body}</body></html>")
    for pdf in REAL_PDFS:
        (folder / pdf.name).write_bytes(pdf.read_bytes())


@pytest.fixture(scope="module")
def indexed(embedder: Embedder, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Searcher]:
    folder = tmp_path_factory.mktemp("question-corpus")
    write_question_corpus(folder)
    index = DocumentIndex(tmp_path_factory.mktemp("index") / "documents.sqlite3")
    ingester = Ingester(index, embedder, chunk_tokens=48, overlap_tokens=12)  # small chunks: the right one matters
    assert ingester.add([folder]) == []
    statuses = ingester.run()
    assert {s.status for s in statuses} == {"ok"} and len(statuses) == 5 + len(REAL_PDFS)
    assert index.chunk_count() > 25
    yield Searcher(index)
    index.close()


def ask(searcher: Searcher, embedder: Embedder, question: str, **kwargs: object) -> SearchResponse:
    if question not in QUERY_VECTORS:
        QUERY_VECTORS[question] = embedder.embed_query(question)
    return searcher.search(
        question,
        QUERY_VECTORS[question],
        embedder.model_id,
        min_similarity=embedder.family.min_similarity,
        **kwargs,  # type: ignore[arg-type]
    )


QUERY_VECTORS: dict[str, np.ndarray] = {}


def rank_of_answer(response: SearchResponse, name: str, page: int, phrase: str) -> int | None:
    for rank, r in enumerate(response.results, 1):
        if Path(r.path).name == name and r.page == page and phrase in r.text:
            return rank
    return None


def test_hybrid_search_finds_the_right_chunk_and_beats_each_ranker(indexed: Searcher, embedder: Embedder) -> None:
    recall = {"hybrid": 0, "keyword": 0, "vector": 0}
    reciprocal = {"hybrid": 0.0, "keyword": 0.0, "vector": 0.0}
    misses = []
    for question, name, page, phrase in QUESTIONS:
        for mode, flags in (
            ("hybrid", {}),
            ("keyword", {"semantic": False}),
            ("vector", {"keywords": False}),
        ):
            rank = rank_of_answer(ask(indexed, embedder, question, k=5, **flags), name, page, phrase)
            recall[mode] += rank is not None
            reciprocal[mode] += 1 / rank if rank else 0.0
            if mode == "hybrid" and rank is None:
                misses.append(question)
    assert not misses, f"hybrid search missed: {misses}"
    assert recall["hybrid"] >= max(recall["keyword"], recall["vector"]), recall
    assert reciprocal["hybrid"] >= max(reciprocal["keyword"], reciprocal["vector"]), reciprocal  # rank, not just top 5
    assert recall["keyword"] < len(QUESTIONS)  # paraphrased questions: keywords alone are not enough


def test_results_cite_file_page_and_offsets(indexed: Searcher, embedder: Embedder) -> None:
    response = ask(indexed, embedder, "How do I jump start a car with a dead battery?")
    top = response.results[0]
    assert (top.name, top.page, top.kind) == ("car.epub", 3, "epub")
    assert top.relevant and top.similarity is not None and top.similarity > 0.4
    assert top.bm25_rank is not None and top.vector_rank is not None  # found by both rankers
    assert 0 <= top.start < top.end and top.end - top.start == len(top.text)
    assert response.mode == "hybrid" and not response.nothing_relevant


def test_nothing_relevant_is_reported(indexed: Searcher, embedder: Embedder) -> None:
    for question in UNRELATED:
        response = ask(indexed, embedder, question)
        assert response.nothing_relevant, (question, [(r.similarity, r.text[:40]) for r in response.results])
    for question, *_ in QUESTIONS[:5]:
        assert not ask(indexed, embedder, question).nothing_relevant, question


def test_keyword_search_works_without_a_model(indexed: Searcher) -> None:
    response = indexed.search("Olympus Mons volcano")
    assert response.mode == "keyword"
    assert response.results[0].name == "astronomy.html" and "Olympus Mons" in response.results[0].text
    assert not indexed.search("the of and").results  # stop words alone match nothing
    assert query_terms("The Größe of a naïve CAFÉ!") == ["größe", "naïve", "café"]


def test_collection_filter(embedder: Embedder, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "work.md").write_text("The quarterly budget review is on Monday.")
    (tmp_path / "b" / "home.md").write_text("The family budget for groceries is 400 euros a month.")
    with DocumentIndex(tmp_path / "documents.sqlite3") as index:
        ingester = Ingester(index, embedder)
        ingester.add([tmp_path / "a"], "Work")
        ingester.add([tmp_path / "b"], "Home")
        ingester.run()
        searcher = Searcher(index)
        everywhere = ask(searcher, embedder, "budget")
        assert {r.collection for r in everywhere.results} == {"Work", "Home"}
        home = ask(searcher, embedder, "budget", collection="Home")
        assert [r.name for r in home.results] == ["home.md"]
        assert ask(searcher, embedder, "budget", collection="Nope").results == ()


def test_search_over_several_collections(embedder: Embedder, tmp_path: Path) -> None:
    notes = {
        "Work": "The quarterly budget review meeting is on Monday morning.",
        "Home": "The family budget for groceries is 400 euros a month.",
        "Club": "The chess club budget pays for new boards and clocks.",
    }
    with DocumentIndex(tmp_path / "documents.sqlite3") as index:
        ingester = Ingester(index, embedder)
        for name, text in notes.items():
            (tmp_path / name).mkdir()
            (tmp_path / name / f"{name.lower()}.md").write_text(text)
            ingester.add([tmp_path / name], name)
        ingester.run()
        searcher = Searcher(index)
        assert {r.collection for r in ask(searcher, embedder, "budget").results} == set(notes)
        for flags in ({}, {"semantic": False}, {"keywords": False}):  # hybrid, keyword only, vector only
            response = ask(searcher, embedder, "budget", collections=["Work", "Home"], **flags)
            assert {r.collection for r in response.results} == {"Work", "Home"}, flags
        keyword_only = searcher.search("budget", collections=("Work", "Club"))  # no model at all
        assert keyword_only.mode == "keyword" and {r.collection for r in keyword_only.results} == {"Work", "Club"}
        elsewhere = ask(searcher, embedder, "chess boards and clocks", collections=["Work", "Home"])
        assert elsewhere.results and all(r.collection != "Club" for r in elsewhere.results)

        unknown_ignored = ask(searcher, embedder, "budget", collections=["Home", "Nope"])
        assert [r.collection for r in unknown_ignored.results] == ["Home"] and unknown_ignored.note is None
        none_chosen = ask(searcher, embedder, "budget", collections=[])
        assert none_chosen.results == () and none_chosen.note
        none_exist = ask(searcher, embedder, "budget", collections=["Nope", "Gone"])
        assert none_exist.results == () and none_exist.note and "'Nope'" in none_exist.note
        assert [r.collection for r in ask(searcher, embedder, "budget", collection="Club").results] == ["Club"]
        with pytest.raises(ValueError):
            ask(searcher, embedder, "budget", collection="Club", collections=["Home"])


def test_a_passage_found_twice_is_shown_once(tmp_path: Path) -> None:
    """The same paragraph in two files (a manual and its copy) fills one result slot, not two; neighbouring chunks
    of one file, which share only their overlap, are both kept."""
    folder = tmp_path / "manuals"
    folder.mkdir()
    text = "The lighthouse keeper trims the wick every evening and polishes the great lens at dawn. " * 3
    (folder / "manual.md").write_text(text)
    (folder / "copy of manual.md").write_text(text)
    (folder / "logbook.md").write_text("The keeper wrote in the logbook that the lens was cracked.\n")
    index = DocumentIndex(tmp_path / "documents.sqlite3")
    try:
        Ingester(index, None).add([folder])
        Ingester(index, None).run()
        found = Searcher(index).search("keeper lens wick", k=3).results
        assert len(found) == 2 and {r.name for r in found} in (
            {"manual.md", "logbook.md"},
            {"copy of manual.md", "logbook.md"},
        )
        both = Searcher(index, dedupe=False).search("keeper lens wick", k=3).results
        assert {r.name for r in both} == {"manual.md", "copy of manual.md", "logbook.md"}
    finally:
        index.close()
