"""The inference worker (streamer/monitor/worker.py) on a stand-in engine: batching, the live
and replay queue policies, sessions, interim work, failures of the model, the outputs and
the speaker stage. Every wait is on an event the stand-in or the results set, never a sleep."""

from __future__ import annotations

import logging
import threading
import types

import numpy as np
from support.models import StubEngine

from emomon.streamer.audio.segmenter import Segment
from emomon.streamer.monitor.worker import InferenceWorker
from emomon.streamer.outputs.record import Job, Result


def segment(i: int, level: float = 0.1) -> Segment:
    """Segment i: 1 s of noise at `level`, starting at 2i s."""
    audio = (np.random.default_rng(i).standard_normal(16000) * level).astype(np.float32)
    return Segment(audio, 2.0 * i, 2.0 * i + 1.0, i)


def run(worker: InferenceWorker, engine: StubEngine, first: Job, rest: list[Job]) -> None:
    """Submit `first`, wait until the engine holds it, submit `rest` (they queue up behind
    it), then open the gate and finish."""
    worker.submit(first)
    assert engine.entered.wait(10)
    for job in rest:
        worker.submit(job)
    engine.gate.set()
    worker.close()


def test_what_queues_up_is_scored_together_up_to_max_batch() -> None:
    engine, results = StubEngine(gate=threading.Event()), []
    worker = InferenceWorker(engine, results.append, queue_size=8, max_batch=4).start()
    jobs = [Job("file.wav", segment(i)) for i in range(6)]
    run(worker, engine, jobs[0], jobs[1:])
    assert [n for _, n, _ in engine.calls] == [1, 4, 1]
    assert [r.job for r in results] == jobs and [r.status for r in results] == ["ok"] * 6
    assert all(r.prediction.shares == StubEngine.shares_of(j.segment.audio) for r, j in zip(results, jobs))
    assert all(r.latency_ms >= r.queue_ms >= 0 for r in results)
    assert worker.processed == 6 and worker.dropped == worker.failed == 0


def test_live_policy_drops_the_oldest_waiting_and_reports_it() -> None:
    engine, results = StubEngine(gate=threading.Event()), []
    worker = InferenceWorker(engine, results.append, queue_size=2, max_batch=1, drop_oldest=True).start()
    jobs = [Job("mic", segment(i)) for i in range(6)]
    run(worker, engine, jobs[0], jobs[1:])  # 1 and 2 fill the queue; 3, 4, 5 push out 1, 2, 3
    status = {r.job.segment.index: r.status for r in results}
    assert status == {0: "ok", 1: "dropped", 2: "dropped", 3: "dropped", 4: "ok", 5: "ok"}
    assert worker.dropped == 3 and worker.processed == 3
    assert all(r.error == "model busy: queue full" for r in results if r.status == "dropped")


def test_replay_policy_makes_the_producer_wait_and_drops_nothing() -> None:
    engine, results = StubEngine(gate=threading.Event()), []
    worker = InferenceWorker(engine, results.append, queue_size=1, max_batch=4).start()
    jobs = [Job("file.wav", segment(i)) for i in range(3)]
    worker.submit(jobs[0])
    assert engine.entered.wait(10)
    worker.submit(jobs[1])  # the queue is full now
    producer = threading.Thread(target=worker.submit, args=(jobs[2],))
    producer.start()
    producer.join(0.2)
    assert producer.is_alive()  # waiting for room, not dropping
    engine.gate.set()
    producer.join(10)
    worker.close()
    assert [r.job for r in results] == jobs and [r.status for r in results] == ["ok"] * 3 and worker.dropped == 0


def test_an_adapting_model_gets_each_segments_session() -> None:
    """One call for what waits; an adapting model is told each segment's session (it batches
    across sessions and keeps each session's order), another only the segments."""
    for adapts, calls in ((True, [(("a", "a", "b", "a"), 4)]), (False, [("", 4)])):
        engine, results = StubEngine(adapts=adapts, gate=threading.Event()), []
        worker = InferenceWorker(engine, results.append, queue_size=8, max_batch=8).start()
        first, *rest = [Job(src, segment(i)) for i, src in enumerate(["x", "a", "a", "b", "a"])]
        run(worker, engine, first, rest)
        assert [(s, n) for s, n, _ in engine.calls[1:]] == calls
        assert [r.job.source for r in results] == ["x", "a", "a", "b", "a"]  # in the order submitted


def test_a_failing_model_gives_error_rows_and_the_worker_goes_on(caplog) -> None:
    engine, results, first = StubEngine(fail=RuntimeError("The model process died (SIGKILL).")), [], threading.Event()

    def collect(result: Result) -> None:
        results.append(result)
        first.set()

    worker = InferenceWorker(engine, collect, queue_size=8, max_batch=1).start()
    with caplog.at_level(logging.WARNING, logger="emomon"):
        worker.submit(Job("mic", segment(0)))
        assert first.wait(10)
        engine.fail = None  # the next call succeeds
        worker.submit(Job("mic", segment(1)))
        worker.close()
    assert [(r.status, r.error) for r in results] == [("error", "The model process died (SIGKILL)."), ("ok", "")]
    assert worker.failed == 1 and worker.processed == 1
    assert "inference failed for 1 segment(s) of mic: The model process died (SIGKILL)." in caplog.text


def test_a_failing_output_is_said_once_and_the_worker_goes_on(caplog) -> None:
    delivered = []

    def full_disk(result: Result) -> None:
        delivered.append(result)
        raise OSError(28, "No space left on device")

    worker = InferenceWorker(StubEngine(), full_disk, queue_size=8)
    for i in range(3):
        worker.submit(Job("mic", segment(i)))
    with caplog.at_level(logging.WARNING, logger="emomon"):
        worker.start().close()
    assert len(delivered) == 3 and worker.processed == 3
    assert caplog.text.count("No space left on device") == 1 and "the monitor goes on" in caplog.text


def test_interim_work_never_goes_before_a_final_segment() -> None:
    """The worker takes finals first; a newer interim replaces an older one; an interim whose
    segment has closed is thrown away; an interim call leaves the session alone. All counted."""
    engine, results, interim_done = StubEngine(adapts=True), [], threading.Event()

    def collect(result: Result) -> None:
        results.append(result)
        if result.job.interim:
            interim_done.set()

    worker = InferenceWorker(engine, collect, queue_size=8)
    worker.submit_interim(Job("a", segment(0), interim=True))
    worker.submit_interim(Job("a", segment(0), interim=True))  # replaces the first
    worker.submit(Job("a", segment(0)))  # segment 0 closed meanwhile: its interim goes
    worker.submit_interim(Job("a", segment(1), interim=True))  # segment 1, still open
    worker.start()
    assert interim_done.wait(10)
    worker.close()
    assert [(r.job.segment.index, r.job.interim) for r in results] == [(0, False), (1, True)]
    assert worker.interim_skipped == 2 and worker.interim_done == 1 and worker.processed == 1
    assert [u for _, _, u in engine.calls] == [True, False]


def test_a_failing_speaker_stage_leaves_the_segments_unnamed(caplog) -> None:
    def label(sources, audio):
        raise RuntimeError("speaker encoder out of memory")

    results = []
    worker = InferenceWorker(StubEngine(), results.append, speakers=types.SimpleNamespace(label=label))
    with caplog.at_level(logging.WARNING, logger="emomon"):
        for i in range(2):
            worker.submit(Job("mic", segment(i)))
        worker.start().close()
    assert [(r.status, r.job.speaker) for r in results] == [("ok", ""), ("ok", "")]
    assert caplog.text.count("speaker encoder out of memory") == 1


def test_a_worker_keeps_nothing_of_ended_streams() -> None:
    """emomon serve ends a stream with forget(): 10,000 short streams later the worker holds
    no more memory than after the first thousand (it used to keep a key per stream)."""
    import tracemalloc

    worker = InferenceWorker(StubEngine(), lambda r: None, queue_size=4)  # not started: nothing is scored
    seg = segment(0)

    def streams(first: int, n: int) -> None:
        for i in range(first, first + n):
            worker.submit_interim(Job(f"stream {i}", seg, interim=True))
            worker.submit(Job(f"stream {i}", seg))
            worker.queue.get_nowait()  # as the worker thread would take it
            worker.forget(f"stream {i}")

    streams(0, 1000)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    streams(1000, 10_000)
    grown = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert grown < 100_000, grown


def test_cuts_become_jobs_in_one_place() -> None:
    """submit_cuts: finals queued and counted, interim ones offered; a channel is its speaker."""
    from emomon.streamer.audio.stream import Cut

    engine, results = StubEngine(), []
    worker = InferenceWorker(engine, results.append, queue_size=8)
    cuts = [Cut(segment(0), channel=1), Cut(segment(1), interim=True), Cut(segment(2), channel=None)]
    assert worker.submit_cuts("call.wav", cuts, stream=7) == 2
    assert worker._interim is not None and worker._interim.segment.index == 1
    worker.start().close()
    finals = [r for r in results if not r.job.interim]
    assert [(r.job.segment.index, r.job.speaker, r.job.channel, r.job.stream) for r in finals] == [
        (0, "channel 1", 1, 7), (2, None, None, 7),
    ]  # fmt: skip
