"""Stand-ins at the entry points of shared components: per-thread plans, stepping a mode aside, leaving as found."""

import threading

import torch
from torch.overrides import TorchFunctionMode

from diffusers_repro.generation.entry_points import ENTRY_POINTS, call_without_mode, planned_entry_points
from diffusers_repro.generation.randomness import seeded_stray_randomness


class Recording(TorchFunctionMode):
    """A mode that counts the operations it sees."""

    def __init__(self):
        super().__init__()
        self.seen = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen += 1
        return func(*args, **(kwargs or {}))


def _modes() -> list:
    return list(torch.overrides._get_current_function_mode_stack())


def test_a_mode_under_another_one_steps_aside_alone_and_comes_back_in_its_place():
    below, ours, above = Recording(), Recording(), Recording()
    with below, ours, above:
        stack = _modes()
        inside = call_without_mode(ours, _modes, (), {})
        assert _modes() == stack
        assert call_without_mode(ours, lambda: call_without_mode(ours, _modes, (), {}), (), {}) == inside
    assert inside == [below, above]


def test_other_threads_calls_of_a_shared_model_keep_their_own_modes():
    seen_in_forward = {}

    class Probe(torch.nn.Linear):
        def forward(self, tensor):
            seen_in_forward[threading.current_thread().name] = _modes()
            return super().forward(tensor)

    shared = Probe(2, 2).eval()
    entered, done = threading.Event(), threading.Event()
    other = Recording()

    def other_call():
        entered.wait()
        with other:
            shared(torch.ones(1, 2))
        done.set()

    thread = threading.Thread(target=other_call, name="other")
    thread.start()
    with seeded_stray_randomness(5, clean_modules=[shared]):
        entered.set()  # the other thread calls the model while this block has the stand-in in place
        done.wait()
        shared(torch.ones(1, 2))
    thread.join()
    # The other thread's call ran under its own mode (nothing stepped aside there); this thread's without its mode.
    assert seen_in_forward == {"other": [other], "MainThread": []}
    assert "forward" not in vars(shared)


def test_plans_combine_and_the_methods_are_put_back_as_found():
    model = torch.nn.Linear(2, 2).eval()
    users_hook = model.forward
    model.forward = users_hook  # an instance attribute of the user's: put back as it was
    calls = []

    def split(method):
        def splitting(*args, **kwargs):
            calls.append(("split", _modes()))
            return method(*args, **kwargs)

        return splitting

    mode, ones = Recording(), torch.ones(1, 2)
    with planned_entry_points([(model, {"split": split, "split_methods": frozenset({"forward"})})], ["forward"]):
        with mode, planned_entry_points([(model, {"aside": mode})], ENTRY_POINTS):
            model(ones)
            seen = mode.seen
        assert vars(model)["forward"] is not users_hook
    assert calls == [("split", [])] and seen == 0
    assert vars(model)["forward"] is users_hook
