"""Calls from several threads: every image has the bits of the same call made alone, global state is left as found,
records state what each call ran with; and the lock over torch's determinism settings."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from test_randomness import GlobalNoiseEulerScheduler

from diffusers_repro import full_determinism
from diffusers_repro.generation.concurrency import SETTINGS_LOCK, SettingsLock, serialized_per_object
from diffusers_repro.generation.determinism import determinism_status
from diffusers_repro.generation.randomness import global_rng_seed, seeded_stray_randomness

SIZE = {"height": 32, "width": 32, "output_type": "np"}
# Every option the calls take, mixed: plain, batch-invariant and deterministic calls, several images per call, other
# sizes, guidance on and off, negative prompts, step counts.
CALLS = [
    {"prompt": ["a fox", "a bear"], "seed": 1, "batch_invariant": True, "num_inference_steps": 3},
    {"prompt": "a cat", "seed": 2, "num_inference_steps": 2},
    {"prompt": ["a owl", "a dog"], "seed": [7, 9], "deterministic": True, "num_inference_steps": 2},
    {"prompt": "a cow", "seed": 4, "num_images_per_prompt": 2, "batch_invariant": True, "num_inference_steps": 2},
    {"prompt": ["a hen", "a pig"], "seed": 5, "negative_prompt": ["dark", "blurry"], "num_inference_steps": 3},
    {"prompt": "a bee", "seed": 6, "guidance_scale": 1.0, "deterministic": True, "batch_invariant": True},
    {"prompt": ["a elk", "a yak"], "seed": 8, "batch_invariant": True, "num_inference_steps": 2, "height": 64},
    {"prompt": "a ant", "seed": 10, "num_inference_steps": 4, "width": 64},
    {"prompt": ["a emu", "a gnu"], "seed": 11, "deterministic": True, "num_inference_steps": 3},
    {"prompt": ["a bat", "a rat"], "seed": 12, "batch_invariant": True, "num_inference_steps": 2},
    {"prompt": "a eel", "seed": 13, "num_inference_steps": 3},
    {"prompt": ["a ram", "a ewe"], "seed": 14, "batch_invariant": True, "deterministic": True},
]


def request_pipe(base):
    """One pipeline per request, as diffusers documents for servers: shared weights, a scheduler of its own."""
    pipe = type(base).from_pipe(base, scheduler=base.scheduler.from_config(base.scheduler.config))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def pinned(threads: int, function, *args):
    """Runs ``function`` with the intra-op thread count of this thread pinned, and puts the count back."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return function(*args)
    finally:
        torch.set_num_threads(previous)


def call_with_defaults(call):
    return {"num_inference_steps": 2, **SIZE, **call}


def alone(base, calls):
    """Each call made alone, one after another in this thread, with one intra-op thread."""
    return [pinned(1, lambda call: request_pipe(base)(**call_with_defaults(call)), call) for call in calls]


def concurrently(base, calls, workers=4, same_object=False):
    shared = request_pipe(base) if same_object else None

    def one_call(call):
        pipe = shared if same_object else request_pipe(base)
        return pinned(1, lambda: pipe(**call_with_defaults(call)))

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one_call, calls))


def differing(first, second):
    return [index for index, (a, b) in enumerate(zip(first, second, strict=True)) if not np.array_equal(a, b)]


@pytest.fixture(scope="module")
def made_alone(sd):
    return alone(sd, CALLS)


# ------------------------------------------------------------------------------------------ from_pipe per request


def test_mixed_calls_from_threads_equal_the_calls_made_alone(sd, made_alone):
    before = torch.random.get_rng_state()
    status = determinism_status()
    outputs = concurrently(sd, CALLS * 2)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert determinism_status() == status
    assert differing([o.images for o in outputs], [o.images for o in made_alone * 2]) == []
    for output, reference in zip(outputs, made_alone * 2, strict=True):
        # The whole record: determinism settings, batch-invariant mode, thread count, noise digests, every digest.
        assert [r.to_dict() for r in output.provenance] == [r.to_dict() for r in reference.provenance]


def test_records_state_the_settings_each_call_ran_with(sd):
    outputs = concurrently(sd, CALLS)
    for call, output in zip(CALLS, outputs, strict=True):
        for record in output.provenance:
            assert record.environment["determinism"]["full_determinism"] is call.get("deterministic", False)
            assert record.batch["batch_invariant"] is call.get("batch_invariant", False)
            assert record.environment["torch_num_threads"] == 1


def test_batch_invariant_calls_from_threads_equal_the_calls_made_alone(sd):
    calls = [
        {"prompt": [f"a {animal}", "a bear"], "seed": seed, "batch_invariant": True, "num_inference_steps": 3}
        for seed, animal in enumerate(["fox", "cat", "owl", "dog", "hen", "pig"])
    ]
    references = [o.images for o in alone(sd, calls)]
    assert differing([o.images for o in concurrently(sd, calls * 2)], references * 2) == []
    # Nothing is left on the shared modules.
    assert all("forward" not in module.__dict__ for module in (sd.unet, sd.vae, sd.text_encoder))


def test_global_rng_state_is_exactly_as_before(sd):
    torch.manual_seed(31)
    torch.randn(3)
    before = torch.random.get_rng_state()
    concurrently(sd, CALLS[:6])
    assert torch.equal(torch.random.get_rng_state(), before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_global_rng_state_is_exactly_as_before(sd):
    before = torch.cuda.get_rng_state()
    concurrently(sd, CALLS[:4])
    assert torch.equal(torch.cuda.get_rng_state(), before)


# ------------------------------------------------------------------------------------------ one object, many threads


def test_one_pipeline_object_called_from_threads_gives_sequential_bits(sd, made_alone):
    outputs = concurrently(sd, CALLS, same_object=True)
    assert differing([o.images for o in outputs], [o.images for o in made_alone]) == []
    for output, reference in zip(outputs, made_alone, strict=True):
        assert [r.to_dict() for r in output.provenance] == [r.to_dict() for r in reference.provenance]


def test_calls_on_one_object_wait_calls_on_others_do_not():
    inside, release = threading.Event(), threading.Event()
    order = []

    class Worker:
        @serialized_per_object
        def work(self, name, block=False):
            order.append(f"{name} in")
            if block:
                inside.set()
                release.wait(10)
            order.append(f"{name} out")

    first, other = Worker(), Worker()
    holder = threading.Thread(target=first.work, args=("a",), kwargs={"block": True})
    holder.start()
    inside.wait(10)
    other.work("other")  # another object: runs while "a" is inside
    waiter = threading.Thread(target=first.work, args=("b",))
    waiter.start()
    waiter.join(0.2)
    assert order == ["a in", "other in", "other out"]
    release.set()
    holder.join(10), waiter.join(10)
    assert order == ["a in", "other in", "other out", "a out", "b in", "b out"]


# ------------------------------------------------------------------------------------------ stray randomness


def test_stray_randomness_is_per_call_and_reaches_no_other_thread(sd):
    base = type(sd).from_pipe(sd, scheduler=GlobalNoiseEulerScheduler.from_config(sd.scheduler.config))
    calls = [{"prompt": ["a fox", "a bear"], "seed": seed, "num_inference_steps": 3} for seed in range(6)]
    references = alone(base, calls)
    # Another thread's own draws from torch's global RNG, made alone, then while the calls run.
    torch.manual_seed(5)
    expected = [torch.randn(8) for _ in range(200)]
    torch.manual_seed(5)
    draws = []
    with ThreadPoolExecutor(1) as other:
        drawing = other.submit(lambda: [draws.append(torch.randn(8)) for _ in range(200)])
        outputs = concurrently(base, calls * 2)
        drawing.result()
    assert all(torch.equal(a, b) for a, b in zip(draws, expected, strict=True))
    assert differing([o.images for o in outputs], [o.images for o in references * 2]) == []
    for output, call in zip(outputs, calls * 2, strict=True):
        batch = output.provenance[0].batch
        assert batch["global_rng_used"] is True and batch["global_rng_used_on"] == ["cpu"]
        assert batch["global_rng_seed"] == global_rng_seed([call["seed"], call["seed"] + 1])
    # The global RNG moved by the other thread's 200 draws, and by nothing else.
    after = torch.random.get_rng_state()
    torch.manual_seed(5)
    [torch.randn(8) for _ in range(200)]
    assert torch.equal(after, torch.random.get_rng_state())


def test_seeded_stray_randomness_acts_in_its_own_thread_only():
    started, done = threading.Event(), threading.Event()
    seen = {}

    def other_thread():
        started.wait(10)
        torch.manual_seed(3)
        seen["other"] = torch.randn(4)
        done.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with seeded_stray_randomness(9) as randomness:
        started.set()
        done.wait(10)
        inside = torch.randn(4)
    thread.join(10)
    assert torch.equal(seen["other"], torch.randn(4, generator=torch.Generator().manual_seed(3)))
    assert torch.equal(inside, torch.randn(4, generator=torch.Generator().manual_seed(9)))
    assert randomness.used_on == ["cpu"]


# ------------------------------------------------------------------------------------------ intra-op threads


def test_each_record_states_the_thread_count_of_its_own_thread(sd):
    call = {"prompt": "a fox", "seed": 3, **SIZE, "num_inference_steps": 2}
    with ThreadPoolExecutor(1) as pool:
        in_worker = pool.submit(pinned, 1, lambda: request_pipe(sd)(**call)).result()
    in_main = pinned(2, lambda: request_pipe(sd)(**call))
    assert in_worker.provenance[0].environment["torch_num_threads"] == 1
    assert in_main.provenance[0].environment["torch_num_threads"] == 2
    # The recorded count is the one that gives these bits back.
    assert np.array_equal(pinned(1, lambda: request_pipe(sd)(**call)).images, in_worker.images)


# ------------------------------------------------------------------------------------------ determinism settings


def test_plain_call_waits_for_another_threads_full_determinism_and_records_its_own_settings(sd):
    outputs = []
    pipe = request_pipe(sd)
    call = {"prompt": "a fox", "seed": 3, **SIZE, "num_inference_steps": 2}
    with full_determinism():
        thread = threading.Thread(target=lambda: outputs.append(pipe(**call)))
        thread.start()
        thread.join(0.3)
        assert outputs == []  # still waiting: the settings in force belong to this thread's block
    thread.join(60)
    assert outputs[0].provenance[0].environment["determinism"]["full_determinism"] is False


def test_plain_holders_share_the_lock():
    lock = SettingsLock()
    barrier = threading.Barrier(3, timeout=10)

    def hold():
        with lock.shared():
            barrier.wait()  # all three inside at once, or BrokenBarrierError

    threads = [threading.Thread(target=hold) for _ in range(2)]
    for thread in threads:
        thread.start()
    hold_here = threading.Thread(target=hold)
    hold_here.start()
    for thread in (*threads, hold_here):
        thread.join(10)
    assert not barrier.broken
    assert lock.holders() == {"shared": 0, "exclusive": None}


def _until(condition):
    for _ in range(1000):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError("condition not reached in 10 s")


def test_exclusive_waits_for_shared_holders_and_keeps_new_ones_out():
    lock = SettingsLock()
    order = []
    release_reader = threading.Event()

    def reader():
        with lock.shared():
            order.append("reader 1 in")
            release_reader.wait(10)
            order.append("reader 1 out")

    def writer():
        with lock.exclusive():
            order.append("writer")

    def late_reader():
        with lock.shared():
            order.append("reader 2")

    first = threading.Thread(target=reader)
    first.start()
    _until(lambda: lock.holders()["shared"] == 1)
    waiting_writer = threading.Thread(target=writer)
    waiting_writer.start()
    _until(lambda: lock._writers_waiting == 1)
    second = threading.Thread(target=late_reader)
    second.start()
    second.join(0.2)
    assert order == ["reader 1 in"]  # the writer waits for reader 1; reader 2 waits behind the writer
    release_reader.set()
    for thread in (first, waiting_writer, second):
        thread.join(10)
    assert order == ["reader 1 in", "reader 1 out", "writer", "reader 2"]


def test_lock_is_reentrant_and_upgradable_in_one_thread():
    lock = SettingsLock()
    me = threading.get_ident()
    with lock.exclusive(), lock.shared(), lock.exclusive():
        assert lock.holders() == {"shared": 1, "exclusive": me}
    with lock.shared(), lock.exclusive():
        assert lock.holders() == {"shared": 1, "exclusive": me}
    assert lock.holders() == {"shared": 0, "exclusive": None}


def test_two_threads_upgrading_at_once_get_an_error_not_a_deadlock():
    lock = SettingsLock()
    both_in = threading.Barrier(2, timeout=10)
    errors = []

    def upgrade():
        with lock.shared():
            both_in.wait()
            try:
                with lock.exclusive():
                    pass
            except RuntimeError as error:
                errors.append(str(error))

    threads = [threading.Thread(target=upgrade) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == [
        "full_determinism() entered inside a call in two threads at once: each would wait for the other's call to "
        "end; enter it before the calls, or pass deterministic=True to them"
    ]
    assert lock.holders() == {"shared": 0, "exclusive": None}


def test_release_without_holding_is_an_error():
    lock = SettingsLock()
    with pytest.raises(RuntimeError, match="release_shared\\(\\) called by a thread that does not hold"):
        lock.release_shared()
    with pytest.raises(RuntimeError, match="release_exclusive\\(\\) called by a thread that does not hold"):
        lock.release_exclusive()


def test_full_determinism_holds_the_exclusive_side():
    me = threading.get_ident()
    with full_determinism():
        assert SETTINGS_LOCK.holders() == {"shared": 0, "exclusive": me}
    assert SETTINGS_LOCK.holders() == {"shared": 0, "exclusive": None}


def test_from_pipe_gives_each_pipeline_its_own_fast_tokenizer(sd):
    # Shared, a fast tokenizer's padding settings leak between calls running at once (one call's padding="longest"
    # reached another's padding="max_length" and changed its image by up to 0.64): each pipeline gets a copy.
    pipe = request_pipe(sd)
    assert pipe.tokenizer is not sd.tokenizer and pipe.unet is sd.unet and pipe.text_encoder is sd.text_encoder
    assert pipe.tokenizer.get_vocab() == sd.tokenizer.get_vocab()
    mine = type(sd).from_pipe(sd, tokenizer=sd.tokenizer)
    assert mine.tokenizer is sd.tokenizer  # passed by the caller: kept as passed
