"""The starting noise of a call's images: what user generators tell of their seeds, and each image's noise digest.

A seeded call knows its seeds; a call with ``generator=`` knows what the generators say (device, initial seed, and
whether that seed still regenerates the image). `NoiseProbe` learns the latent shape from the denoiser's first input
and digests the first draw of each image's generator, as it stood at the start of the call.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import torch

from ..generation import generator_geometry
from ..records import tensor_digest

__all__: list[str] = []


def describe_generators(generator: Any, num_images: int) -> tuple[list[int | None], list[dict[str, Any]]]:
    """What can be known of user generators: device, initial seed, and whether that seed is certain."""
    generators = generator if isinstance(generator, (list, tuple)) else [generator] * num_images
    seeds, records = [], []
    for index, gen in enumerate(generators):
        initial = gen.initial_seed()
        fresh = torch.Generator(gen.device).manual_seed(initial)
        certain = torch.equal(fresh.get_state(), gen.get_state())
        shared = not isinstance(generator, (list, tuple)) and num_images > 1
        note = (
            "one generator was shared by the whole batch: this image's noise depends on its batch index"
            if shared
            else (
                "generator was fresh at the start of the call: the seed is certain"
                if certain
                else "generator had been used before the call: its initial seed alone does not regenerate the image"
            )
        )
        seeds.append(initial)
        records.append(
            {
                "device": str(gen.device),
                "initial_seed": initial,
                "seed_certain": bool(certain and not shared),
                "shared_by_batch": shared,
                "index": index,
                "note": note,
            }
        )
        if gen.device.type == "cuda":
            # torch's CUDA randn depends on the GPU's geometry for large draws; its state is the seed and offset.
            records[-1].update(offset=gen.get_offset(), geometry=generator_geometry(gen))
    return seeds, records


class NoiseProbe:
    """Learns the shape and dtype of the denoiser's input, then digests each image's first noise draw.

    The starting noise of image ``i`` is the first Gaussian draw of its generator in the latent shape; it is
    recomputed from the generator as it stood at the start of the call, which costs one small ``randn`` per image.
    """

    def __init__(self, user_generator: Any, seeds: list[int | None], cuda_rng: Any = None):
        self.seeds = seeds
        self.cuda_rng = cuda_rng
        self.shape: tuple[int, ...] | None = None
        self.dtype: torch.dtype | None = None
        self.shared: tuple[torch.Generator, torch.Tensor] | None = None
        self.states: list[tuple[torch.device, torch.Tensor]] | None = None
        if isinstance(user_generator, (list, tuple)):
            self.states = [(g.device, g.get_state()) for g in user_generator]
        elif user_generator is not None:
            self.shared = (user_generator.device, user_generator.get_state())
        self._batch_noise: torch.Tensor | None = None

    @contextlib.contextmanager
    def watch(self, denoiser: torch.nn.Module | None) -> Iterator[None]:
        if denoiser is None:
            yield
            return

        # The denoiser may be shared with pipelines that other threads are calling: learn from this thread's call.
        thread = threading.get_ident()

        def hook(module, args, kwargs):
            if self.shape is None and threading.get_ident() == thread:
                sample = args[0] if args else kwargs.get("sample", kwargs.get("hidden_states"))
                if isinstance(sample, torch.Tensor):
                    # Read past the stray-randomness mode: reading a tensor's shape is a torch operation for it.
                    with torch._C.DisableTorchFunction():
                        self.shape, self.dtype = tuple(sample.shape[1:]), sample.dtype

        handle = denoiser.register_forward_pre_hook(hook, with_kwargs=True)
        try:
            yield
        finally:
            handle.remove()

    def description(self) -> dict[str, Any] | None:
        if self.shape is None:
            return None
        return {"shape": list(self.shape), "dtype": str(self.dtype), "draw": "first randn of the image's generator"}

    def digest(self, index: int) -> str | None:
        if self.shape is None:
            return None
        if self.shared is not None:
            if self._batch_noise is None:
                device, state = self.shared
                generator = torch.Generator(device).set_state(state)
                batch = (len(self.seeds), *self.shape)
                self._batch_noise = torch.randn(batch, generator=generator, device=device, dtype=self.dtype)
            return tensor_digest(self._batch_noise[index : index + 1])
        if self.cuda_rng is not None:
            return tensor_digest(self.cuda_rng.first_noise(index, (1, *self.shape), self.dtype))
        if self.states is not None:
            device, state = self.states[index]
            generator = torch.Generator(device).set_state(state)
        else:
            device, generator = torch.device("cpu"), torch.Generator("cpu").manual_seed(self.seeds[index])
        noise = torch.randn((1, *self.shape), generator=generator, device=device, dtype=self.dtype)
        return tensor_digest(noise)
