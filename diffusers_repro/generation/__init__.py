"""What a call is made of: seeds and generators, noise, full determinism, stray randomness, batch invariance and calls
from several threads.

Modules:

- ``seeding``: seeds: validation, one seed per image, one CPU generator per image.
- ``cuda_rng``: torch's CUDA ``randn`` on any device (Philox4x32-10 and Box-Muller, laid out as the CUDA kernels do).
- ``cuda_noise``: ``rng="cuda"``: every draw of an image's generator is what ``torch.Generator("cuda")`` draws.
- ``determinism``: `full_determinism`: deterministic algorithms on demand, restored exactly afterwards.
- ``randomness``: stray randomness: draws from torch's global RNG during a call, made deterministic and detected.
- ``entry_points``: per-thread stand-ins at the entry points of shared components.
- ``batching``: batch-invariant mode: every model evaluated one image at a time.
- ``samplers``: the one table of sampler names of AUTOMATIC1111/Forge, ComfyUI and InvokeAI <-> diffusers scheduler
  classes and configs, with a plain sentence where a tool's sampler has no diffusers equivalent.
- ``concurrency``: calls from several threads: what each call may borrow, and when.
"""

import typing as _typing

from ..lazy import lazy_exports

# public name -> the module of this subpackage that defines it (imported on first use)
EXPORTS = {
    "one_image_at_a_time": "batching",
    "serialized_per_object": "concurrency",
    "SETTINGS_LOCK": "concurrency",
    "cuda_generators": "cuda_noise",
    "CudaRandnMode": "cuda_noise",
    "describe_rng": "cuda_noise",
    "EmulatedCudaGenerator": "cuda_noise",
    "generator_geometry": "cuda_noise",
    "parse_rng": "cuda_noise",
    "refuse_philox_generators": "cuda_noise",
    "rng_from_record": "cuda_noise",
    "CudaGeometry": "cuda_rng",
    "GEOMETRY_FREE_LIMIT": "cuda_rng",
    "offset_increment": "cuda_rng",
    "philox4x32_10": "cuda_rng",
    "PhiloxGenerator": "cuda_rng",
    "determinism_status": "determinism",
    "full_determinism": "determinism",
    "draws_nothing_stray_cached": "randomness",
    "forget_cleanliness": "randomness",
    "global_rng_seed": "randomness",
    "seeded_stray_randomness": "randomness",
    "config_without_defaults": "samplers",
    "from_a1111": "samplers",
    "from_comfyui": "samplers",
    "from_invokeai": "samplers",
    "MODEL_CONFIG_KEYS": "samplers",
    "SamplerMapping": "samplers",
    "to_a1111": "samplers",
    "tool_scheduler_config": "samplers",
    "make_generators": "seeding",
    "MAX_SEED": "seeding",
    "per_image_seeds": "seeding",
    "validate_seed": "seeding",
}
__all__ = sorted(EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, EXPORTS, globals())

if _typing.TYPE_CHECKING:
    from .batching import one_image_at_a_time  # noqa: F401
    from .concurrency import SETTINGS_LOCK, serialized_per_object  # noqa: F401
    from .cuda_noise import (  # noqa: F401
        CudaRandnMode,
        EmulatedCudaGenerator,
        cuda_generators,
        describe_rng,
        generator_geometry,
        parse_rng,
        refuse_philox_generators,
        rng_from_record,
    )
    from .cuda_rng import GEOMETRY_FREE_LIMIT, CudaGeometry, PhiloxGenerator, offset_increment, philox4x32_10  # noqa: F401
    from .determinism import determinism_status, full_determinism  # noqa: F401
    from .randomness import draws_nothing_stray_cached, forget_cleanliness, global_rng_seed, seeded_stray_randomness  # noqa: F401
    from .samplers import (  # noqa: F401
        MODEL_CONFIG_KEYS,
        SamplerMapping,
        config_without_defaults,
        from_a1111,
        from_comfyui,
        from_invokeai,
        to_a1111,
        tool_scheduler_config,
    )
    from .seeding import MAX_SEED, make_generators, per_image_seeds, validate_seed  # noqa: F401
