"""The ``deepseek`` client engine against a local stand-in for the deployed class."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any

import modal.exception
import pytest

from ocr_backend.deepseek.client import decode_page
from ocr_backend.deepseek.pricing import PRICE_PER_SECOND
from ocr_backend.engines.base import PageInput, PageResult
from ocr_backend.engines.deepseek import DeepseekEngine, plan_batch_size
from ocr_backend.engines.deepseek_local import DeepseekLocalEngine
from ocr_backend.errors import EngineError
from server.corpus import Corpus
from server.runner import RunOptions, ocr_book
from tests.deepseek_fakes import (
    LocalClass,
    StubFallback,
    fake_runner,
    good_raw,
    marked_pdf,
    number_of,
    page_image,
    raw_loop,
    respond_good,
)


def pages(count: int, delay: float = 0.0, start: int = 1) -> Any:
    for number in range(start, start + count):
        if delay:
            time.sleep(delay)
        yield PageInput(number=number, image=page_image(number))


def engine_for(remote: Any, **options: Any) -> tuple[DeepseekEngine, StubFallback]:
    fallback = StubFallback()
    options.setdefault("sleep", lambda _: None)
    return DeepseekEngine(remote=remote, fallback=fallback, **options), fallback


def by_number(results: list[PageResult]) -> dict[int, PageResult]:
    found = {r.number: r for r in results}
    assert len(found) == len(results), "a page came back twice"
    return found


def test_streams_a_book_in_batches_and_records_cost() -> None:
    remote = LocalClass()
    engine, fallback = engine_for(remote, batch_size=8, min_batch=4, containers=2)
    results = by_number(list(engine.recognize_many(pages(40))))
    assert sorted(results) == list(range(1, 41))
    assert sum(n for n, _ in remote.calls) == 40 and len(remote.calls) >= 5
    assert max(n for n, _ in remote.calls) <= 8
    page = results[17]
    assert page.status == "ok" and page.engine == "deepseek" and not fallback.pages
    assert page.markdown == "Page 17 says \\(x_17 = 17\\).\n\n\\[ y = 17 x \\]"
    assert page.raw == good_raw(17)  # raw kept, tags and EOS included, for reclean
    extra = page.extra
    assert extra["gpu"] == "A100" and extra["attempts"] == 1 and extra["finish_reason"] == "stop"
    assert extra["gpu_seconds"] > 0 and extra["cost_usd"] == pytest.approx(
        extra["gpu_seconds"] * PRICE_PER_SECOND["A100"], rel=1e-3
    )
    assert extra["upload_bytes"] > 0 and extra["prompt_tokens"] == 900


def test_several_batches_are_in_flight_at_once() -> None:
    class SlowClass(LocalClass):
        def __init__(self) -> None:
            super().__init__()
            self.active = self.peak = 0

        def ocr(
            self, images: list[bytes], options: dict[str, Any], timeout: float | None = None
        ) -> list[dict[str, Any]]:
            self.active += 1
            self.peak = max(self.peak, self.active)
            time.sleep(0.05)
            self.active -= 1
            return super().ocr(images, options, timeout)

    remote = SlowClass()
    engine, _ = engine_for(remote, batch_size=4, min_batch=4, containers=3)
    assert len(list(engine.recognize_many(pages(36)))) == 36
    assert remote.peak >= 3


def test_batches_are_full_while_streaming_and_shrink_at_the_end() -> None:
    plan = plan_batch_size
    assert plan(buffered=100, exhausted=False, in_flight=5, containers=4, batch_size=32) == 32
    assert (
        plan(buffered=10, exhausted=False, in_flight=1, containers=4, batch_size=32, min_batch=4) == 10
    )  # a GPU may be idle
    assert plan(buffered=3, exhausted=False, in_flight=1, containers=4, batch_size=32, min_batch=4) == 0
    assert plan(buffered=20, exhausted=False, in_flight=5, containers=4, batch_size=32) == 20  # keep a batch queued
    assert plan(buffered=10, exhausted=False, in_flight=5, containers=4, batch_size=32) == 0  # too small to queue
    assert (
        plan(buffered=31, exhausted=False, in_flight=6, containers=4, batch_size=32) == 0
    )  # enough queued: wait for a full one
    assert plan(buffered=100, exhausted=False, in_flight=8, containers=4, batch_size=32) == 0  # all slots busy
    assert plan(buffered=80, exhausted=True, in_flight=6, containers=4, batch_size=32) == 10  # the tail: pieces of 1/8
    assert plan(buffered=20, exhausted=True, in_flight=6, containers=4, batch_size=32, min_batch=4) == 4
    assert plan(buffered=5, exhausted=True, in_flight=0, containers=4, min_batch=4) == 5  # a short book: one call
    assert plan(buffered=30, exhausted=True, in_flight=0, containers=4, batch_size=32) == 30


def looping_page_3(number: int, extra: dict[str, Any]) -> tuple[str, str]:
    if number == 3 and extra["ngram_size"] == 30:
        return raw_loop(), "length"
    return respond_good(number, extra)


def test_a_looping_page_is_retried_in_the_stream_with_stronger_settings() -> None:
    remote = LocalClass(looping_page_3)
    engine, fallback = engine_for(remote, containers=1, inputs_per_container=1)
    results = by_number(list(engine.recognize_many(pages(5))))
    page = results[3]
    assert page.status == "ok" and "retried" in page.flags and page.extra["attempts"] == 2
    assert "token limit" in page.reason
    # a page a call; the failed page goes again on its own, with a larger n-gram and window, ahead of the rest
    sent = [
        (number, o["ngram_size"], o["window_size"], o["priority"]) for number, (_, o) in zip(remote.pages, remote.calls)
    ]
    assert sorted(sent) == [
        (1, 30, 90, 0),
        (2, 30, 90, 0),
        (3, 30, 90, 0),
        (3, 40, 300, -1),
        (4, 30, 90, 0),
        (5, 30, 90, 0),
    ]
    assert {n for n, _ in remote.calls} == {1}
    assert sent.index((3, 40, 300, -1)) == 3  # the retry went ahead of the pages still to send
    assert not fallback.pages and results[2].extra["attempts"] == 1


def test_the_batch_client_retries_only_the_failed_pages() -> None:
    remote = LocalClass(looping_page_3)
    engine, fallback = engine_for(remote, client="batch", batch_size=5, min_batch=5, containers=1)
    results = by_number(list(engine.recognize_many(pages(5))))
    assert results[3].status == "ok" and results[3].extra["attempts"] == 2 and not fallback.pages
    assert [(n, o["ngram_size"], o["window_size"]) for n, o in remote.calls] == [(5, 30, 90), (1, 40, 300)]


def test_a_long_page_holds_only_its_own_place() -> None:
    class OneSlowPage(LocalClass):
        def ocr(
            self, images: list[bytes], options: dict[str, Any], timeout: float | None = None
        ) -> list[dict[str, Any]]:
            time.sleep(0.4 if number_of(decode_page(images[0])) == 1 else 0.01)
            return super().ocr(images, options, timeout)

    engine, _ = engine_for(OneSlowPage(), containers=1, inputs_per_container=2)
    order = [r.number for r in engine.recognize_many(pages(12))]
    assert order[-1] == 1 and sorted(order) == list(range(1, 13))  # the other eleven went past it


def test_the_client_plans_from_what_the_class_says_it_is() -> None:
    class SmallClass(LocalClass):
        def __init__(self) -> None:
            super().__init__()
            self.active = self.peak = 0
            self.lock = threading.Lock()

        def info(self, timeout: float | None = None) -> dict[str, Any]:
            return {**super().info(timeout), "max_containers": 2, "max_inputs": 3}

        def ocr(
            self, images: list[bytes], options: dict[str, Any], timeout: float | None = None
        ) -> list[dict[str, Any]]:
            with self.lock:
                self.active += 1
                self.peak = max(self.peak, self.active)
            time.sleep(0.02)
            with self.lock:
                self.active -= 1
            return super().ocr(images, options, timeout)

    remote = SmallClass()
    engine, _ = engine_for(remote)
    engine.check_started(remote)
    assert (engine.containers, engine.inputs_per_container, engine.slots) == (2, 3, 6)
    assert len(list(engine.recognize_many(pages(30)))) == 30
    assert 4 <= remote.peak <= 6


def test_a_preempted_container_s_pages_are_sent_again_and_answered_once() -> None:
    class Preempted(LocalClass):
        """The container holding pages 2 and 5 is preempted: their calls fail once, as Modal reports it."""

        def __init__(self) -> None:
            super().__init__()
            self.lost = {2, 5}
            self.sent: list[int] = []

        def ocr(
            self, images: list[bytes], options: dict[str, Any], timeout: float | None = None
        ) -> list[dict[str, Any]]:
            numbers = {number_of(decode_page(data)) for data in images}
            self.sent.extend(numbers)
            if numbers & self.lost:
                self.lost -= numbers
                raise modal.exception.InternalFailure("the container was preempted")
            return super().ocr(images, options, timeout)

    remote = Preempted()
    engine, fallback = engine_for(remote, containers=2, inputs_per_container=2)
    results = by_number(list(engine.recognize_many(pages(8))))  # by_number fails on a page answered twice
    assert sorted(results) == list(range(1, 9)) and {r.status for r in results.values()} == {"ok"}
    assert sorted(remote.sent) == [1, 2, 2, 3, 4, 5, 5, 6, 7, 8] and not fallback.pages
    assert sorted(remote.pages) == list(range(1, 9))  # each page OCRed once: the lost calls did no work


def test_a_page_that_keeps_looping_falls_back_and_numbering_stays_intact(tmp_path: Path) -> None:
    def respond(number: int, extra: dict[str, Any]) -> tuple[str, str]:
        if number == 3:
            return raw_loop(), "stop"  # a loop that even claims to have stopped
        return respond_good(number, extra)

    pdf = marked_pdf(tmp_path / "book.pdf", 6)
    corpus = Corpus(tmp_path / "corpus")
    engine, fallback = engine_for(LocalClass(respond), batch_size=4)
    state = ocr_book(corpus, pdf, RunOptions(engine="deepseek"), engine=engine)
    assert state.done == 6 and state.fallback == 1 and state.failed == 0
    book = corpus.book("book")
    manifest = json.loads((book.dir / "manifest.json").read_text())
    statuses = [p["status"] for p in manifest["pages"]]
    assert statuses == ["ok", "ok", "fallback", "ok", "ok", "ok"]
    fallen = manifest["pages"][2]
    assert (
        fallen["engine"] == "local-stub" and "repetition loop" in fallen["reason"] and "attempt 2" in fallen["reason"]
    )
    assert fallen["extra"]["attempts"] == 2 and fallen["extra"]["gpu_seconds"] > 0  # the failed attempts were paid for
    assert fallback.pages == [3]
    for n in range(1, 7):
        text = book.page_path(n).read_text()
        assert (f"fallback text for page {n}" if n == 3 else f"Page {n} says") in text
        assert book.raw_path(n).exists()
    document = (book.dir / "document.mmd").read_text()
    assert [int(x) for x in re.findall(r"<!-- page (\d+)", document)] == [1, 2, 3, 4, 5, 6]


def test_transient_errors_are_retried_with_backoff() -> None:
    delays: list[float] = []
    remote = LocalClass(errors=[modal.exception.ConnectionError("reset"), modal.exception.InternalFailure("node lost")])
    engine, fallback = engine_for(remote, sleep=delays.append, backoff_s=0.5)
    results = list(engine.recognize_many(pages(1)))
    assert [r.status for r in results] == ["ok"] and not fallback.pages
    assert delays == [0.5, 1.0]


def test_a_call_that_fails_falls_back_alone() -> None:
    class BadPage(LocalClass):
        def ocr(
            self, images: list[bytes], options: dict[str, Any], timeout: float | None = None
        ) -> list[dict[str, Any]]:
            if number_of(decode_page(images[0])) == 2:
                raise ValueError("bad page")
            return super().ocr(images, options, timeout)

    engine, fallback = engine_for(BadPage())
    results = by_number(list(engine.recognize_many(pages(3))))
    assert [results[n].status for n in (1, 2, 3)] == ["ok", "fallback", "ok"] and fallback.pages == [2]
    assert "the GPU call failed: ValueError: bad page" in results[2].reason


def test_a_batch_that_keeps_failing_falls_back_page_by_page() -> None:
    remote = LocalClass(errors=[ValueError("bad batch")])
    engine, fallback = engine_for(remote, client="batch", batch_size=10)
    results = by_number(list(engine.recognize_many(pages(3))))
    assert {r.status for r in results.values()} == {"fallback"} and sorted(fallback.pages) == [1, 2, 3]
    assert "the GPU call failed: ValueError: bad batch" in results[2].reason


def test_a_fatal_modal_error_mid_run_stops_with_advice() -> None:
    remote = LocalClass(errors=[modal.exception.NotFoundError("Lookup failed for Cls 'DeepseekOcr'")])
    engine, _ = engine_for(remote)
    with pytest.raises(EngineError, match="bookocr deploy"):
        list(engine.recognize_many(pages(3)))


class BlockingClass(LocalClass):
    """A stand-in whose calls on the given pages never return (a hung container)."""

    def __init__(self, stuck_pages: set[int]) -> None:
        super().__init__()
        self.stuck_pages = stuck_pages
        self.release = threading.Event()

    def ocr(self, images: list[bytes], options: dict[str, Any], timeout: float | None = None) -> list[dict[str, Any]]:
        if {number_of(decode_page(data)) for data in images} & self.stuck_pages:
            self.release.wait()  # ignores its deadline, as a hung client would
        return super().ocr(images, options, timeout)


def test_a_call_that_never_returns_fails_its_pages_at_the_deadline_and_the_run_finishes(tmp_path: Path) -> None:
    remote = BlockingClass(stuck_pages={3})
    pdf = marked_pdf(tmp_path / "book.pdf", 5)
    corpus = Corpus(tmp_path / "corpus")
    engine, fallback = engine_for(
        remote, containers=2, inputs_per_container=1, startup_timeout_s=0.4, page_timeout_s=0.1
    )
    start = time.monotonic()
    try:
        state = ocr_book(corpus, pdf, RunOptions(engine="deepseek"), engine=engine)
    finally:
        remote.release.set()
    assert time.monotonic() - start < 4.0
    assert state.state == "complete" and state.done == 5 and state.fallback == 1
    manifest = json.loads((corpus.book("book").dir / "manifest.json").read_text())
    assert [p["status"] for p in manifest["pages"]] == ["ok", "ok", "fallback", "ok", "ok"]
    # a streamed page's call: the start-up allowance plus the budget of 16 pages (it shares a batch)
    assert "the GPU call failed: timed out after 2 s" in manifest["pages"][2]["reason"]
    assert fallback.pages == [3]
    assert remote.timeouts[0] == pytest.approx(2.0) and remote.info_timeouts == [0.4]  # each call was told its deadline


def test_a_class_that_fails_to_start_mid_run_gets_no_more_work(tmp_path: Path) -> None:
    class BrokenContainers(LocalClass):
        """The first container came up; the ones started for later batches could not load the model."""

        def ocr(
            self, images: list[bytes], options: dict[str, Any], timeout: float | None = None
        ) -> list[dict[str, Any]]:
            self.calls.append((len(images), dict(options)))
            return [
                {"startup_error": "OutOfMemoryError: CUDA out of memory", "error": "x", "finish_reason": "error"}
                for _ in images
            ]

    pdf = marked_pdf(tmp_path / "book.pdf", 12)
    corpus = Corpus(tmp_path / "corpus")
    broken = BrokenContainers()
    engine, fallback = engine_for(broken, containers=1, inputs_per_container=2)
    with pytest.raises(EngineError, match="the GPU class failed to start: OutOfMemoryError: CUDA out of memory"):
        ocr_book(corpus, pdf, RunOptions(engine="deepseek"), engine=engine)
    assert not fallback.pages  # not a page was sent to the CPU one by one
    assert sum(n for n, _ in broken.calls) < 12
    manifest = json.loads((corpus.book("book").dir / "manifest.json").read_text())
    assert manifest["pages"] == [None] * 12  # every page still to do

    engine, _ = engine_for(LocalClass())
    state = ocr_book(corpus, pdf, RunOptions(engine="deepseek"), engine=engine)  # resumes once the class is fixed
    assert state.done == 12 and state.fallback == 0


def test_unrenderable_pages_fail_alone() -> None:
    engine, _ = engine_for(LocalClass())
    broken = [PageInput(number=1, error="could not render page 1: boom"), PageInput(number=2), *pages(1, start=3)]
    results = by_number(list(engine.recognize_many(broken)))
    assert results[1].status == "failed" and "boom" in results[1].reason
    assert results[2].status == "failed" and results[3].status == "ok"


def test_an_undecodable_image_is_isolated_in_the_runner() -> None:
    runner = fake_runner()
    out = runner.run([b"not an image", _jpeg_of(4)], {})
    assert out[0]["error"] and out[0]["finish_reason"] == "error" and out[1]["text"] == good_raw(4)
    assert out[1]["gpu_seconds"] == pytest.approx(1.0) and out[0]["gpu_seconds"] == 0.0


def _jpeg_of(number: int) -> bytes:
    from tests.deepseek_fakes import jpeg

    return jpeg(page_image(number))


def test_figures_are_saved_beside_the_page(tmp_path: Path) -> None:
    def respond(number: int, extra: dict[str, Any]) -> tuple[str, str]:
        return (
            "<|ref|>image<|/ref|><|det|>[[100, 100, 500, 500]]<|/det|>\n \n\n<|ref|>text<|/ref|><|det|>[[1, 600, 900, 700]]<|/det|>\nCaption",
            "stop",
        )

    engine, _ = engine_for(LocalClass(respond), figures=True, pages_dir=tmp_path)
    [result] = list(engine.recognize_many(pages(1, start=7)))
    assert result.markdown.startswith("![Figure 1](page_0007_fig1.jpg)")
    assert (tmp_path / "page_0007_fig1.jpg").is_file()

    engine, _ = engine_for(LocalClass(respond), pages_dir=tmp_path / "other")  # every engine is told the folder
    [result] = list(engine.recognize_many(pages(1, start=7)))
    assert result.markdown.startswith("[Figure 1]") and not (tmp_path / "other").exists()  # no crops unless asked


def test_figures_need_the_pages_folder() -> None:
    with pytest.raises(EngineError, match="no pages folder"):
        DeepseekEngine(figures=True)


def test_deepseek_local_runs_the_same_pipeline_in_process() -> None:
    engine = DeepseekLocalEngine(runner=fake_runner(), fallback=StubFallback())
    engine.start()
    results = by_number(list(engine.recognize_many(pages(12))))
    assert all(r.status == "ok" and r.engine == "deepseek-local" for r in results.values())
    assert results[5].extra["cost_usd"] == 0.0 and results[5].extra["gpu_seconds"] > 0  # your own GPU


def test_deepseek_local_without_vllm_says_what_to_install() -> None:
    engine = DeepseekLocalEngine(fallback=StubFallback())
    with pytest.raises(EngineError, match="pip install vllm"):
        engine.connect()


def test_ctrl_c_stops_sending_and_the_book_resumes(tmp_path: Path) -> None:
    class Slow(LocalClass):
        entered = 0

        def ocr(
            self, images: list[bytes], options: dict[str, Any], timeout: float | None = None
        ) -> list[dict[str, Any]]:
            self.entered += 1
            time.sleep(0.02)
            return super().ocr(images, options, timeout)

    def interrupt_after_three(book: Any, result: PageResult) -> None:
        if result.number == 3:
            raise KeyboardInterrupt

    pdf = marked_pdf(tmp_path / "book.pdf", 20)
    corpus = Corpus(tmp_path / "corpus")
    remote = Slow()
    engine, _ = engine_for(remote, containers=1, inputs_per_container=2)
    with pytest.raises(KeyboardInterrupt):
        ocr_book(corpus, pdf, RunOptions(engine="deepseek"), engine=engine, listeners=[interrupt_after_three])
    engine.close()
    sent = remote.entered
    time.sleep(0.2)
    assert remote.entered == sent < 20  # nothing sent after Ctrl-C
    manifest = json.loads((corpus.book("book").dir / "manifest.json").read_text())
    done = {n for n, p in enumerate(manifest["pages"], start=1) if p}
    assert 3 in done and len(done) < 20

    remote = LocalClass()
    engine, _ = engine_for(remote)
    state = ocr_book(corpus, pdf, RunOptions(engine="deepseek"), engine=engine)  # the same command resumes
    assert state.done == 20 - len(done) and sorted(remote.pages) == sorted(set(range(1, 21)) - done)


def test_a_run_with_no_page_back_for_too_long_stops_with_a_message() -> None:
    remote = BlockingClass(stuck_pages=set(range(1, 5)))
    engine, _ = engine_for(remote, stall_timeout_s=0.3, startup_timeout_s=30)
    start = time.monotonic()
    try:
        with pytest.raises(EngineError, match=r"no page came back from the GPU class for .* min.*resume"):
            list(engine.recognize_many(pages(4)))
    finally:
        remote.release.set()
    assert time.monotonic() - start < 2.0


def test_deepseek_local_asks_for_what_the_card_has_free() -> None:
    from ocr_backend.engines.deepseek_local import memory_fraction

    gib = 2**30
    assert memory_fraction(15 * gib, 16 * gib) == 0.88  # a 16 GB card driving a display: 1 GB left free
    assert memory_fraction(24 * gib, 24 * gib) == 0.9  # never more than vLLM's default
    with pytest.raises(EngineError, match=r"about 8 GB of GPU memory free and 6\.0 GB is"):
        memory_fraction(6 * gib, 16 * gib)
