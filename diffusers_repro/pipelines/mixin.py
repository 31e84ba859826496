"""``ReproducibleMixin``: seeds, determinism and provenance around any diffusers pipeline's ``__call__``.

The mixin adds behaviour around diffusers and forks none of it: ``__init__`` keeps the vanilla signature (diffusers
discovers components from it), ``__call__`` binds the vanilla signature plus ``seed``, ``deterministic`` and
``batch_invariant``, and hands the call to the vanilla ``__call__`` with one CPU generator per image.

Around the vanilla call it also:

- gives randomness that escapes the generators (a scheduler calling ``torch.randn`` without ``generator``) a
  generator seeded from the call's seeds, in the calling thread only, so it is a function of the seeds and torch's
  global RNG is never touched; records whether anything drew that way (``recipe.batch.global_rng_used``);
- keeps concurrent calls apart: calls on one pipeline object run one at a time, and no call runs while
  ``full_determinism()`` has changed torch's process-wide settings for another thread (see `concurrency`);
- seeds the Brownian-tree noise sampler of SDE schedulers (``DPMSolverSDEScheduler``) per image from the image seeds
  when the scheduler leaves ``noise_sampler_seed`` unset (vanilla diffusers would draw it from the global RNG);
- records LoRA adapters (names, weights digests, scales, fusions) and digests a component's tensors again once a
  LoRA fusion changed them;
- makes ``clip_skip`` work in SD-family pipelines whose text encoder has no ``text_model.final_layer_norm``
  (transformers 5), through `clip_skip.clip_skip_encode_prompt`; the record still says ``prompt`` and ``clip_skip``.
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
import functools
import inspect
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from diffusers import DiffusionPipeline

from ..generation import (
    SETTINGS_LOCK,
    cuda_generators,
    draws_nothing_stray_cached,
    forget_cleanliness,
    full_determinism,
    global_rng_seed,
    make_generators,
    one_image_at_a_time,
    parse_rng,
    per_image_seeds,
    refuse_philox_generators,
    seeded_stray_randomness,
    serialized_per_object,
)
from ..records import (
    Provenance,
    environment_fingerprint,
    image_digest,
    jsonable,
    link_batch_records,
)
from .clip_skip import clip_skip_encode_prompt, reads_text_model_layer_norm
from .keywords import check_extra_keywords
from .lora import LORA_METHODS, lora_record, tracking_lora
from .noise import NoiseProbe, describe_generators
from .recipe import (
    batch_record,
    caller_latents_noise,
    input_image_row,
    is_scheduler,
    required_inputs,
    scheduler_record,
    used_call_values,
    with_noise_sampler,
)
from .weights import COMPONENT_DIGESTS, component_record, digest_folder, is_weakrefable, snapshot_folder

__all__ = ["ReproducibleMixin", "vanilla_pipeline_class"]

# Arguments that never change pixels, or that are recorded elsewhere (the generator becomes the seed).
_NOT_RECORDED = frozenset(
    {
        "generator",
        "return_dict",
        "callback",
        "callback_steps",
        "callback_on_step_end",
        "callback_on_step_end_tensor_inputs",
    }
)
_PROMPT_KEYS = ("prompt", "prompt_2", "prompt_3", "negative_prompt", "negative_prompt_2", "negative_prompt_3")
# Input images that diffusers tiles to the call's images (``torch.cat([image] * (n // r))``): image i uses row i % r.
_INPUT_IMAGES = ("image", "mask_image")
_DENOISER_NAMES = ("unet", "transformer", "prior", "decoder")
# Per thread (and asyncio task): the execution device each Repro call running here found at its start, by id(pipe).
_CALL_EXECUTION_DEVICES: contextvars.ContextVar[dict[int, torch.device] | None] = contextvars.ContextVar(
    "diffusers_repro_execution_devices", default=None
)

# Pipelines whose models take inputs that `one_image_at_a_time` cannot split per image yet, and why.
_BATCH_INVARIANT_UNSUPPORTED = {
    "UnCLIPPipeline": "its text_proj model takes per-image rows and classifier-free guidance rows together",
}


def vanilla_pipeline_class(cls: type) -> type[DiffusionPipeline]:
    """The diffusers pipeline class a Repro class (or instance's class) wraps; itself for a vanilla class."""
    for base in cls.__mro__:
        if issubclass(base, DiffusionPipeline) and not issubclass(base, ReproducibleMixin):
            return base
    raise TypeError(f"{cls.__name__} is not a diffusers DiffusionPipeline subclass")


class ReproducibleMixin:
    """Makes a diffusers pipeline reproducible by construction: seeds, full determinism and provenance per image.

    Put it first among the bases of a pipeline class: ``class ReproDDIMPipeline(ReproducibleMixin, DDIMPipeline)``,
    or let `diffusers_repro.reproducible` make (and cache) that class for any pipeline. The class then accepts, on top
    of every vanilla argument:

    Args:
        seed (`int` or `list[int]`, *optional*):
            ``s`` gives image ``i`` of the call the seed ``s + i``; a list gives one seed per image. Each image gets
            its own ``torch.Generator("cpu")``, so the starting noise is the same on any device. Without seed and
            generator a random seed is drawn (torch's global RNG is left alone) and recorded.
        deterministic (`bool`, *optional*, defaults to `False`):
            Runs the call inside ``full_determinism()``.
        batch_invariant (`bool`, *optional*, defaults to `False`):
            Evaluates the models one image at a time, so that every image is bitwise equal to generating it alone.

    Every output gets ``provenance``: a list with one `Provenance` per image, in image order. With
    ``return_dict=False`` the vanilla tuple is returned unchanged and the records are in ``pipe.last_provenance``.

    Random draws that ignore ``generator`` get a generator seeded from the call's seeds (in the calling thread only),
    so code that ignores ``generator`` still gives the same bits for the same seeds; torch's global RNG is never
    touched, and the records say whether anything drew that way (``recipe.batch.global_rng_used``).

    Calls from several threads are safe: calls on one pipeline object run one at a time; pipelines made with
    ``from_pipe`` (one per request, sharing the weights) run side by side, each with the bits it gets alone.

    Example:

    ```py
    >>> from diffusers import DDPMPipeline
    >>> from diffusers_repro import ReproducibleMixin
    >>> class MyReproDDPMPipeline(ReproducibleMixin, DDPMPipeline):
    ...     pass
    ```
    """

    _repro_vanilla_class: type[DiffusionPipeline] | None = None
    _repro_call_parameters: Any = None
    _repro_source: dict[str, Any] | None = None
    _repro_lora_operations: tuple[dict[str, Any], ...] = ()
    _repro_adapter_weights: dict[str, Any] | None = None
    last_provenance: list[Provenance] | None = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not issubclass(cls, DiffusionPipeline):
            raise TypeError(f"{cls.__name__}: ReproducibleMixin must be combined with a diffusers DiffusionPipeline")
        vanilla = vanilla_pipeline_class(cls)
        vanilla_call = vanilla.__call__
        signature = inspect.signature(vanilla_call)
        if "generator" not in signature.parameters:
            raise TypeError(
                f"{vanilla.__module__}.{vanilla.__name__}.__call__ takes no `generator` argument (its parameters are "
                f"{_parameter_list(signature)}), so ReproducibleMixin cannot seed it per image; only pipelines whose "
                "__call__ accepts generator= can be made reproducible"
            )
        cls._repro_vanilla_class = vanilla
        cls._repro_call_parameters = signature.parameters
        cls.__call__ = _build_call(vanilla, signature)
        for name in LORA_METHODS:
            method = getattr(vanilla, name, None)
            if inspect.isfunction(method) and name not in cls.__dict__:
                setattr(cls, name, tracking_lora(name, method))
        encode_prompt = getattr(vanilla, "encode_prompt", None)
        if (
            "encode_prompt" not in cls.__dict__
            and inspect.isfunction(encode_prompt)
            and reads_text_model_layer_norm(encode_prompt)
        ):
            # SD's encode_prompt reads text_encoder.text_model.final_layer_norm for clip_skip, which transformers 5's
            # CLIPTextModel does not have: the wrapper computes those embeddings itself where it is missing.
            cls.encode_prompt = clip_skip_encode_prompt(encode_prompt)

    # ---------------------------------------------------------------------------------------------------- loading

    def register_modules(self, **kwargs):
        super().register_modules(**kwargs)
        for module in kwargs.values():
            # Modules built in code start in train mode (dropout on, different bits than the same weights loaded
            # from disk); from_pretrained returns eval mode. Every component is put in eval mode.
            if isinstance(module, torch.nn.Module):
                module.eval()
                forget_cleanliness(module)  # a module registered again may have been changed inside

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs):
        pipe = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        if isinstance(pipe, ReproducibleMixin):
            pipe._repro_record_source(pretrained_model_name_or_path, kwargs)
        return pipe

    @classmethod
    def from_pipe(cls, pipeline: DiffusionPipeline, **kwargs):
        pipe = super().from_pipe(pipeline, **kwargs)
        if isinstance(pipe, ReproducibleMixin):
            # The components are shared: they keep their digests, and the source and LoRA history stay true of them.
            pipe._repro_source = getattr(pipeline, "_repro_source", None)
            pipe._repro_lora_operations = tuple(getattr(pipeline, "_repro_lora_operations", ()))
            pipe._repro_adapter_weights = dict(getattr(pipeline, "_repro_adapter_weights", None) or {})
            pipe._repro_own_tokenizers(kwargs)
        return pipe

    def _repro_own_tokenizers(self, passed: dict[str, Any]) -> None:
        """Gives this pipeline its own copy of every fast tokenizer it would share with the pipeline it came from.

        A fast tokenizer keeps its padding and truncation settings in its Rust backend and sets them on every call;
        shared by pipelines that threads call at once (one ``from_pipe`` pipeline per request), one call's
        ``padding="longest"`` reaches another call's ``padding="max_length"`` and changes its text embeddings
        (measured: up to 3 in 24 tiny SD images changed, by up to 0.64). A copy costs one tokenizer, not the weights.
        """
        for name, component in self.components.items():
            if name not in passed and hasattr(component, "backend_tokenizer"):
                self.register_modules(**{name: copy.deepcopy(component)})

    def _repro_record_source(self, pretrained_model_name_or_path: str | os.PathLike, kwargs: dict[str, Any]) -> None:
        """Records where ``from_pretrained`` read the pipeline and fills the components' digests from its files."""
        name = os.fspath(pretrained_model_name_or_path)
        folder, source = snapshot_folder(name, kwargs)
        self._repro_source = source
        if folder is None:
            return
        for component_name, component in self.components.items():
            if component is None or component_name in kwargs or not is_weakrefable(component):
                continue  # a component passed in by the caller is digested from its tensors
            is_model = isinstance(component, torch.nn.Module)
            record = digest_folder(folder / component_name, kwargs.get("variant"), all_files=not is_model)
            if record is not None:
                COMPONENT_DIGESTS[component] = record

    def to_json_string(self) -> str:
        # save_pretrained writes the class name into model_index.json: keep the vanilla name so that plain
        # diffusers can load every folder we save.
        config = json.loads(super().to_json_string())
        config["_class_name"] = vanilla_pipeline_class(type(self)).__name__
        return json.dumps(config, indent=2, sort_keys=True) + "\n"

    # ---------------------------------------------------------------------------------------------------- batches

    def _repro_effective_batch(self, arguments: dict[str, Any]) -> tuple[int, int, str]:
        """(images in the call, prompts in the call, how the count came about) from the bound call arguments."""
        parameters = self._repro_call_parameters
        if "prompt" in parameters or "prompt_embeds" in parameters:
            prompt = arguments.get("prompt")
            embeds = arguments.get("prompt_embeds")
            text_model_output = arguments.get("text_model_output")
            if isinstance(prompt, str):
                prompts, what = 1, "1 prompt"
            elif isinstance(prompt, (list, tuple)):
                prompts, what = len(prompt), f"{len(prompt)} prompts"
            elif isinstance(embeds, torch.Tensor):
                prompts, what = embeds.shape[0], f"prompt_embeds with {embeds.shape[0]} rows"
            elif text_model_output is not None and isinstance(text_model_output[0], torch.Tensor):
                # UnCLIP counts its prompts from the text encoder output when no prompt is given.
                rows = text_model_output[0].shape[0]
                prompts, what = rows, f"text_model_output with {rows} rows"
            else:
                prompts, what = 1, "1 prompt"
            per_prompt = arguments.get("num_images_per_prompt")
            per_prompt = 1 if per_prompt is None else per_prompt
            _check_positive("num_images_per_prompt", per_prompt)
            return prompts * per_prompt, prompts, f"{what} x num_images_per_prompt={per_prompt}"
        if "batch_size" in parameters:
            batch_size = arguments.get("batch_size")
            _check_positive("batch_size", batch_size)
            return batch_size, batch_size, f"batch_size={batch_size}"
        return 1, 1, "1 image"

    def _repro_image_arguments(
        self, arguments: dict[str, Any], index: int, num_images: int, num_prompts: int
    ) -> dict[str, Any]:
        """The recorded call arguments of image ``index``: its own prompt, rows of batched tensors, the rest."""
        per_prompt = max(num_images // max(num_prompts, 1), 1)
        recorded = {}
        for name, value in arguments.items():
            if name in _NOT_RECORDED:
                continue
            if name in _INPUT_IMAGES:
                value = input_image_row(value, index, num_images)
            elif name in _PROMPT_KEYS and isinstance(value, (list, tuple)) and len(value) == num_prompts:
                value = value[index // per_prompt]
            elif isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] in (num_images, num_prompts):
                row = index if value.shape[0] == num_images else index // per_prompt
                value = value[row : row + 1]
            recorded[name] = jsonable(value)
        return recorded

    def _repro_default_size(self) -> tuple[int, int] | None:
        scale = getattr(self, "vae_scale_factor", None)
        sample = getattr(self, "default_sample_size", None)
        denoiser = self._repro_denoiser()
        if sample is None and denoiser is not None:
            sample = getattr(getattr(denoiser, "config", None), "sample_size", None)
        if not isinstance(scale, int) or isinstance(scale, bool):
            return None
        if isinstance(sample, int):
            return sample * scale, sample * scale
        if isinstance(sample, (list, tuple)) and len(sample) == 2 and all(isinstance(s, int) for s in sample):
            return sample[0] * scale, sample[1] * scale
        return None

    def _repro_denoiser(self) -> torch.nn.Module | None:
        for name in _DENOISER_NAMES:
            module = getattr(self, name, None)
            if isinstance(module, torch.nn.Module):
                return module
        return None

    def _repro_components(self) -> dict[str, Any]:
        """``self.components`` without its per-read ``inspect.signature`` (~0.5 ms each, several times a call)."""
        cls = type(self)
        names = cls.__dict__.get("_repro_component_names")
        if names is None:
            names, _ = self._get_signature_keys(cls)
            cls._repro_component_names = names = frozenset(names)
        return {name: getattr(self, name) for name in self.config.keys() if name in names}

    @property
    def _execution_device(self) -> torch.device:
        # diffusers finds the execution device by looking for offload hooks with hasattr on every module of every
        # component (about 1 ms a call on the tiny pipeline). A Repro call finds it once, at its start, and its
        # vanilla __call__ (in this thread, on this object) reads that same value instead of walking again.
        fixed = _CALL_EXECUTION_DEVICES.get()
        if fixed is not None and id(self) in fixed:
            return fixed[id(self)]
        return super()._execution_device

    @contextlib.contextmanager
    def _repro_fixed_execution_device(self) -> Iterator[torch.device]:
        """The execution device, found once and answered for the length of the block in this thread."""
        device = super()._execution_device
        token = _CALL_EXECUTION_DEVICES.set({**(_CALL_EXECUTION_DEVICES.get() or {}), id(self): device})
        try:
            yield device
        finally:
            _CALL_EXECUTION_DEVICES.reset(token)

    def _repro_schedulers(self) -> dict[str, Any]:
        return {name: c for name, c in self._repro_components().items() if c is not None and is_scheduler(c)}

    def _repro_devices(self, execution_device: torch.device | str) -> set[torch.device]:
        """The devices the call computes on, recorded as those its stray randomness could be drawn on."""
        devices = {torch.device(execution_device)}
        if not torch.cuda.is_available():
            return devices  # asking every component for its device costs ~2 ms a call, for nothing
        for component in self._repro_components().values():
            device = getattr(component, "device", None) if isinstance(component, torch.nn.Module) else None
            if isinstance(device, torch.device):
                devices.add(device)
        return devices

    def _repro_model_record(self) -> dict[str, Any]:
        components = {}
        for name, component in self._repro_components().items():
            if component is None or is_scheduler(component):
                continue
            components[name] = component_record(component)
        source = self._repro_source or {"type": "in-memory", "path": None, "repo_id": None, "revision": None}
        record = {**source, "name_or_path": jsonable(self.config.get("_name_or_path")), "components": components}
        lora = lora_record(self)
        if lora is not None:
            record["lora"] = lora
        return record

    @contextlib.contextmanager
    def _repro_noise_samplers(self, seeds: list[int | None], per_image: bool) -> Iterator[dict[str, dict]]:
        """Seeds the Brownian-tree noise sampler of SDE schedulers per image, for the duration of the call.

        ``DPMSolverSDEScheduler`` builds a torchsde Brownian tree from ``noise_sampler_seed``; left unset, the seed
        is drawn from torch's global RNG, so seeded vanilla calls differ run to run. diffusers' tree accepts a list of
        seeds (one tree per batch row): each image gets a tree with its own seed as entropy, so its noise depends on
        its seed alone. A seed set on the scheduler by the user is kept.
        """
        plan: dict[str, dict] = {}
        seeded = []
        try:
            for name, scheduler in self._repro_schedulers().items():
                if not hasattr(scheduler, "noise_sampler_seed"):
                    continue
                configured = scheduler.noise_sampler_seed
                if configured is None and per_image:
                    scheduler.noise_sampler_seed = list(seeds)
                    scheduler.noise_sampler = None
                    seeded.append(scheduler)
                    plan[name] = {"seeded_by": "diffusers-repro", "seeds": list(seeds)}
                elif configured is None:
                    plan[name] = {"seeded_by": "global RNG"}
                else:
                    plan[name] = {"seeded_by": "scheduler", "configured": configured}
            yield plan
        finally:
            for scheduler in seeded:
                # Put the scheduler back as found, and drop the tree built from our seeds.
                scheduler.noise_sampler_seed = None
                scheduler.noise_sampler = None

    # ---------------------------------------------------------------------------------------------------- calls

    @serialized_per_object
    def _repro_call(
        self, bound: inspect.BoundArguments, seed: Any, deterministic: bool, batch_invariant: bool, rng: Any = "cpu"
    ) -> Any:
        vanilla = self._repro_vanilla_class
        rng = parse_rng(rng)
        if not isinstance(deterministic, bool):
            raise TypeError(f"deterministic must be a bool, got {deterministic!r}")
        if not isinstance(batch_invariant, bool):
            raise TypeError(f"batch_invariant must be a bool, got {batch_invariant!r}")
        arguments = _arguments_with_defaults(bound)
        user_generator = arguments.get("generator")
        if seed is not None and user_generator is not None:
            raise ValueError("pass either seed or generator, not both: seed makes one CPU generator per image itself")
        num_images, num_prompts, how = self._repro_effective_batch(arguments)
        unsupported = _BATCH_INVARIANT_UNSUPPORTED.get(vanilla.__name__)
        if batch_invariant and num_images > 1 and unsupported:
            raise ValueError(
                f"batch_invariant=True is not supported for {vanilla.__name__} with {num_images} images ({how}): "
                f"{unsupported}; make one image per call (seed=[s]) to get batch-independent bits"
            )

        seeds, seed_source, generator_record, cuda_rng = self._repro_generators(
            bound, seed, user_generator, rng, num_images, how
        )
        # Each image has its own generator unless one generator is shared by the whole batch.
        per_image = user_generator is None or isinstance(user_generator, (list, tuple))

        noise = NoiseProbe(user_generator, seeds, cuda_rng)
        # The determinism settings are process-wide: a plain call holds the shared side of their lock, so that no
        # other thread's full_determinism() changes them while it runs (plain calls never wait for each other).
        determinism = full_determinism() if deterministic else SETTINGS_LOCK.shared()
        one_at_a_time = one_image_at_a_time(self, num_images) if batch_invariant else contextlib.nullcontext()
        denoiser = self._repro_denoiser()
        # Models of diffusers/transformers in eval mode draw nothing stray: the mode steps aside at their entry points
        # (known per component object, checked again each call only where it can change cheaply).
        clean = [
            c
            for c in self._repro_components().values()
            if isinstance(c, torch.nn.Module) and draws_nothing_stray_cached(c)
        ]
        with (
            self._repro_fixed_execution_device() as execution_device,
            determinism,
            one_at_a_time,
            noise.watch(denoiser),
            seeded_stray_randomness(
                global_rng_seed(seeds), self._repro_devices(execution_device), clean
            ) as randomness,
            self._repro_noise_samplers(seeds, per_image) as noise_samplers,
            cuda_rng.context() if cuda_rng is not None else contextlib.nullcontext(),
        ):
            environment = environment_fingerprint(execution_device, _dtype_of(denoiser))
            output = vanilla.__call__(*bound.args, **bound.kwargs)

        images = _output_images(output, arguments.get("return_dict", True))
        records = self._repro_records(
            arguments,
            images,
            num_images=num_images,
            num_prompts=num_prompts,
            how=how,
            seeds=seeds,
            seed_source=seed_source,
            batch_invariant=batch_invariant,
            randomness=randomness,
            noise_samplers=noise_samplers,
            generator_record=generator_record,
            cuda_rng=cuda_rng,
            noise=noise,
            environment=environment,
        )
        self.last_provenance = records
        if arguments.get("return_dict", True) and not isinstance(output, tuple):
            output.__class__ = _repro_output_class(type(output))
            output.provenance = records
            # The input image each image edited (img2img, inpainting): its file records it as the parent ingredient.
            if arguments.get("image") is not None:
                count = len(records)
                output.input_images = [input_image_row(arguments["image"], i, count) for i in range(count)]
        return output

    def _repro_generators(
        self, bound: inspect.BoundArguments, seed: Any, user_generator: Any, rng: Any, num_images: int, how: str
    ) -> tuple[list[int | None], str, list[dict[str, Any]] | None, Any]:
        """The call's seeds, where they came from, the user generators' record and the CUDA-noise generators.

        A seeded (or unseeded) call gets one generator per image, put into ``bound``; user generators are described.
        """
        if user_generator is None:
            seed_source = "random" if seed is None else "seed"
            # per_image_seeds validates the seed, or draws a random base seed when there is none.
            seeds = per_image_seeds(seed, num_images, how)
            cuda_rng = None
            if rng != "cpu":
                # What torch.Generator("cuda") draws: CUDA generators on a CUDA device, emulated anywhere else.
                cuda_rng = cuda_generators(seeds, self._execution_device, None if rng == "cuda" else rng)
            bound.arguments["generator"] = make_generators(seeds) if cuda_rng is None else cuda_rng.generators
            generator_record = None
        else:
            if rng != "cpu":
                raise ValueError(f"rng={rng!r} picks the generators that seed= makes; pass seed instead of generator")
            refuse_philox_generators(user_generator)
            cuda_rng = None
            seed_source = "generator"
            seeds, generator_record = describe_generators(user_generator, num_images)
        return seeds, seed_source, generator_record, cuda_rng

    def _repro_records(
        self,
        arguments: dict[str, Any],
        images: Any,
        *,
        num_images: int,
        num_prompts: int,
        how: str,
        seeds: list[int | None],
        seed_source: str,
        batch_invariant: bool,
        randomness: Any,
        noise_samplers: dict[str, dict],
        generator_record: list[dict[str, Any]] | None,
        cuda_rng: Any,
        noise: NoiseProbe,
        environment: dict[str, Any],
    ) -> list[Provenance]:
        """One `Provenance` per image of a finished call, in image order, linked as a batch when there are several."""
        vanilla = self._repro_vanilla_class
        schedulers = {name: scheduler_record(s) for name, s in self._repro_schedulers().items()}
        recipe_common = {
            "pipeline_class": vanilla.__name__,
            "model": self._repro_model_record(),
        }
        first = images[0] if images is not None and len(images) else None
        used = used_call_values(
            self._repro_call_parameters, arguments, first, self._repro_default_size(), getattr(self, "scheduler", None)
        )
        user_latents = arguments.get("latents")
        user_latents = user_latents if isinstance(user_latents, torch.Tensor) else None
        records = []
        batch_prompt_lists = {
            name: list(value)
            for name in _PROMPT_KEYS
            if isinstance(value := arguments.get(name), (list, tuple)) and all(isinstance(v, str) for v in value)
        }
        same_prompts = all(len(set(values)) <= 1 for values in batch_prompt_lists.values())
        for index in range(num_images):
            per_image_schedulers = {
                name: with_noise_sampler(record, noise_samplers.get(name), index, num_images)
                for name, record in schedulers.items()
            }
            call = self._repro_image_arguments(arguments, index, num_images, num_prompts)
            call.update(used.call)
            batch = batch_record(
                index, num_images, seeds, how, batch_invariant, randomness, same_prompts, batch_prompt_lists
            )
            recipe = {
                **recipe_common,
                # None for pipelines without a component named "scheduler" (UnCLIP): see recipe.schedulers.
                "scheduler": per_image_schedulers.get("scheduler"),
                "call": call,
                "defaults_resolved": used.names,
                "requires_inputs": required_inputs(call),
                "batch": batch,
                **used.recipe_fields(),
            }
            if any(name != "scheduler" for name in per_image_schedulers):
                recipe["schedulers"] = per_image_schedulers
            if generator_record is not None:
                recipe["generator"] = generator_record[index]
            if cuda_rng is not None:
                recipe["rng"] = cuda_rng.record
            if user_latents is not None:
                noise_digest, noise_description = caller_latents_noise(user_latents, index, num_images)
            else:
                noise_digest, noise_description = noise.digest(index), noise.description()
            result = {
                "noise_digest": noise_digest,
                "noise": noise_description,
                "output_digest": image_digest(images[index]) if images is not None else None,
                "output_type": arguments.get("output_type"),
            }
            records.append(
                Provenance(
                    seed=seeds[index],
                    seed_source=seed_source,
                    recipe=recipe,
                    environment=environment,
                    result=result,
                )
            )
        if num_images > 1:
            link_batch_records(records)
        return records


def _build_call(vanilla: type, signature: inspect.Signature) -> Callable:
    """A ``__call__`` whose signature is the vanilla one plus ``seed`` and ``deterministic``."""
    extra = [
        inspect.Parameter("seed", inspect.Parameter.KEYWORD_ONLY, default=None, annotation="int | list[int] | None"),
        inspect.Parameter("deterministic", inspect.Parameter.KEYWORD_ONLY, default=False, annotation="bool"),
        inspect.Parameter("batch_invariant", inspect.Parameter.KEYWORD_ONLY, default=False, annotation="bool"),
        inspect.Parameter("rng", inspect.Parameter.KEYWORD_ONLY, default="cpu", annotation="str"),
    ]
    parameters = list(signature.parameters.values())
    existing = {p.name for p in parameters}
    clash = [p.name for p in extra if p.name in existing]
    if clash:
        raise TypeError(f"{vanilla.__name__}.__call__ already has parameter(s) {clash}; cannot add them")
    var_keyword = [p for p in parameters if p.kind is inspect.Parameter.VAR_KEYWORD]
    rest = [p for p in parameters if p.kind is not inspect.Parameter.VAR_KEYWORD]
    full_signature = signature.replace(parameters=rest + extra + var_keyword)
    valid_names = [p.name for p in rest + extra if p.name != "self"]

    @functools.wraps(vanilla.__call__)
    def __call__(self, *args, seed=None, deterministic=False, batch_invariant=False, rng="cpu", **kwargs):
        # Bind before any work: a wrong argument fails exactly as it would in vanilla diffusers.
        bound = signature.bind(self, *args, **kwargs)
        if var_keyword and bound.arguments.get(var_keyword[0].name):
            # A keyword the vanilla **kwargs would swallow without effect (a typo: sed=42) is an error.
            check_extra_keywords(
                type(self).__name__, vanilla.__call__, bound.arguments[var_keyword[0].name], valid_names
            )
        return self._repro_call(bound, seed, deterministic, batch_invariant, rng=rng)

    __call__.__signature__ = full_signature
    __call__.__doc__ = (vanilla.__call__.__doc__ or "") + _CALL_DOC_SUFFIX
    return __call__


_CALL_DOC_SUFFIX = """
        Reproducibility arguments (diffusers-repro):
            seed (`int` or `list[int]`, *optional*):
                ``s`` gives image ``i`` the seed ``s + i``; a list gives one seed per image. Each image gets its own
                CPU ``torch.Generator``. Mutually exclusive with ``generator``. Without both, a random seed is drawn
                and recorded.
            deterministic (`bool`, *optional*, defaults to `False`):
                Runs the call inside ``diffusers_repro.full_determinism()``.
            batch_invariant (`bool`, *optional*, defaults to `False`):
                Evaluates the models one image at a time, so that every image is bitwise equal to generating it
                alone (slower).
            rng (`str`, *optional*, defaults to `"cpu"`):
                ``"cuda"``: every image's draws are what ``torch.Generator("cuda").manual_seed(seed)`` gives, on any
                device (emulated off a CUDA device; ``"cuda:108x2048"`` or ``"cuda:A100"`` names the GPU geometry
                for draws above its threshold). See ``diffusers_repro.PhiloxGenerator``.

        The output carries ``provenance``: one ``diffusers_repro.Provenance`` per image, in image order.
"""


def _parameter_list(signature: inspect.Signature) -> str:
    names = [name for name in signature.parameters if name != "self"]
    return ", ".join(names) if names else "none"


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _arguments_with_defaults(bound: inspect.BoundArguments) -> dict[str, Any]:
    copy = inspect.BoundArguments(bound.signature, dict(bound.arguments))
    copy.apply_defaults()
    arguments = dict(copy.arguments)
    arguments.pop("self", None)
    for parameter in bound.signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            arguments.update(arguments.pop(parameter.name, {}) or {})
    return arguments


def _dtype_of(module: torch.nn.Module | None) -> torch.dtype | None:
    # diffusers' ModelMixin.dtype walks every parameter (about 1 ms on a tiny UNet); the first floating-point
    # parameter is what it returns for a module in one dtype, at a fraction of the cost.
    if module is None:
        return None
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), None)


class ReproOutputMixin:
    """Added to a diffusers output class: ``provenance`` (one record per image) and ``save(directory)``."""

    provenance: list[Provenance]
    input_images: list[Any] | None = None

    def save(
        self, directory: str | os.PathLike, format: str = "png", quality: int | None = None, sign: Any = True
    ) -> list[Path]:
        """Writes every image with its own provenance record and signed Content Credentials into ``directory`` and
        returns the paths.

        File names carry the image index and seed. ``format`` is ``"png"``, ``"jpeg"`` or ``"webp"`` (``quality``
        1-100 for the lossy ones); ``sign=False`` writes no Content Credentials, a
        `diffusers_repro.credentials.SigningIdentity` signs with that identity. An img2img or inpainting output's
        files record the input image each image edited as their parent ingredient. See `diffusers_repro.save_image`.

        Example:

        ```py
        >>> paths = out.save("outputs", format="jpeg", quality=90)  # doctest: +SKIP
        ```
        """
        from ..files import save_outputs

        options = {"format": format, "quality": quality, "sign": sign, "ingredients": self.input_images}
        return save_outputs(self.images, self.provenance, directory, **options)


@functools.cache
def _repro_output_class(output_class: type) -> type:
    # A subclass keeps isinstance() checks against diffusers' output classes true while adding save(); it is
    # published in this module under its name so that outputs pickle.
    name = f"Repro{output_class.__name__}"
    subclass = type(name, (ReproOutputMixin, output_class), {"__module__": __name__, "__qualname__": name})
    globals()[name] = subclass
    return subclass


def _output_images(output: Any, return_dict: bool) -> Any:
    images = output.images if return_dict and hasattr(output, "images") else output[0]
    if isinstance(images, (torch.Tensor,)) or type(images).__name__ == "ndarray":
        return [images[i] for i in range(images.shape[0])]
    return images
