"""Sampler names of other Stable Diffusion tools <-> diffusers scheduler classes and configs, from one table.

Each row of `_SOLVERS` is one sampling method: the diffusers scheduler class that runs it (or `None` with a plain
sentence saying why none does), and the names AUTOMATIC1111 (and Forge), ComfyUI and InvokeAI give it, with the config
keys each tool's choice sets. `_SCHEDULES` is the same for the noise schedules (A1111's ``Schedule type``, ComfyUI's
``scheduler``). A config holds only the keys that differ from the scheduler class's defaults; a caller builds the
scheduler with ``Class.from_config(mapping.scheduler_config(pipe.scheduler.config))`` (`tool_scheduler_config`: the
model's betas, the sampler's method and steps). The plain merge ``{**pipe.scheduler.config, **mapping.config}`` is not
enough: it keeps the model's own spacing and offset (SD 1.5's ``leading``, ``steps_offset=1``), and diffusers'
``from_config`` drops every key the base config lists in ``_use_default_values``, the mapping's own value included.

How close each mapping comes to k-diffusion's sampler is measured in docs/SAMPLERS.md.

The starting point is the table in diffusers' docs (``api/schedulers/overview.md``), checked against the tools' own
code: A1111 1.10's ``sd_samplers_kdiffusion.py``/``sd_schedulers.py``/``sd_samplers.get_sampler_and_scheduler``,
ComfyUI's ``comfy/samplers.py`` names, and InvokeAI's ``SCHEDULER_MAP``. "Faithful" means the same method with the
same steps; the numbers still differ slightly between k-diffusion and diffusers (how the sigmas are interpolated, the
Brownian noise of SDE samplers), which the ``notes`` of a mapping say. Where a tool's sampler has no such equivalent
the mapping has no scheduler and ``blockers`` says so: the nearest scheduler is never picked silently.

This module imports neither torch nor diffusers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

__all__ = [
    "A1111_SAMPLERS",
    "A1111_SCHEDULE_TYPES",
    "COMFYUI_SAMPLERS",
    "COMFYUI_SCHEDULERS",
    "INVOKEAI_SCHEDULERS",
    "MODEL_CONFIG_KEYS",
    "SamplerMapping",
    "config_without_defaults",
    "from_a1111",
    "from_comfyui",
    "from_invokeai",
    "to_a1111",
    "tool_scheduler_config",
]

_MAX_NAME_CHARS = 200


@dataclasses.dataclass(frozen=True)
class SamplerMapping:
    """What a tool's sampler (and schedule) is in diffusers.

    Args:
        scheduler (`str` or `None`): The diffusers scheduler class name; `None` when there is no faithful one.
        config (`dict`): The config keys that differ from the class's defaults (empty without a scheduler).
        blockers (`tuple[str, ...]`): Plain sentences naming what stands between this sampler and a diffusers rerun;
            never empty when ``scheduler`` is `None`.
        notes (`tuple[str, ...]`): Known small differences between the tool's implementation and diffusers' (the
            mapping is the same method, the numbers may differ slightly).
        ancestral (`bool`): The sampler adds fresh noise at every step (drawn from the call's generator).
        sde (`bool`): The sampler draws Brownian (SDE) noise.
    """

    scheduler: str | None
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    blockers: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    ancestral: bool = False
    sde: bool = False

    def scheduler_config(self, base: Mapping[str, Any]) -> dict[str, Any]:
        """The config to build this mapping's scheduler from, over a model's scheduler config ``base``: the model's
        keys from ``base``, the sampler's from this mapping over the class defaults (see `tool_scheduler_config`).

        Example:

        ```py
        >>> from diffusers_repro.generation.samplers import from_a1111
        >>> base = {"beta_schedule": "scaled_linear", "timestep_spacing": "leading", "steps_offset": 1}
        >>> from_a1111("Euler", "SGM Uniform").scheduler_config(base)["timestep_spacing"]
        'trailing'
        ```
        """
        if self.scheduler is None:
            raise ValueError(f"this mapping has no diffusers scheduler: {'; '.join(self.blockers)}")
        return tool_scheduler_config(self.scheduler, self.config, base)

    def to_dict(self) -> dict[str, Any]:
        return {
            "scheduler": self.scheduler,
            "config": dict(self.config),
            "blockers": list(self.blockers),
            "notes": list(self.notes),
            "ancestral": self.ancestral,
            "sde": self.sde,
        }


# --------------------------------------------------------------------------------------------------------------------
# The table

# The defaults of diffusers 0.42's scheduler classes for the keys this table reads or sets (a test checks them against
# diffusers itself); a key missing here does not exist in that class.
_SIGMA_KEYS = {"use_karras_sigmas": False, "use_exponential_sigmas": False, "use_beta_sigmas": False}
_SPACING = {"timestep_spacing": "linspace", "steps_offset": 0}
_CLASS_DEFAULTS: dict[str, dict[str, Any]] = {
    "EulerDiscreteScheduler": {
        **_SIGMA_KEYS,
        **_SPACING,
        "final_sigmas_type": "zero",
        "rescale_betas_zero_snr": False,
        "interpolation_type": "linear",
        "timestep_type": "discrete",
    },
    "EulerAncestralDiscreteScheduler": {**_SPACING, "rescale_betas_zero_snr": False},
    "LMSDiscreteScheduler": {**_SIGMA_KEYS, **_SPACING},
    "HeunDiscreteScheduler": {**_SIGMA_KEYS, **_SPACING},
    "KDPM2DiscreteScheduler": {**_SIGMA_KEYS, **_SPACING},
    "KDPM2AncestralDiscreteScheduler": {**_SIGMA_KEYS, **_SPACING},
    "DPMSolverMultistepScheduler": {
        **_SIGMA_KEYS,
        **_SPACING,
        "algorithm_type": "dpmsolver++",
        "solver_type": "midpoint",
        "solver_order": 2,
        "final_sigmas_type": "zero",
        "euler_at_final": False,
        "use_lu_lambdas": False,
        "lower_order_final": True,
        "thresholding": False,
        "rescale_betas_zero_snr": False,
        "use_flow_sigmas": False,
    },
    "DPMSolverSinglestepScheduler": {
        **_SIGMA_KEYS,
        "algorithm_type": "dpmsolver++",
        "solver_type": "midpoint",
        "solver_order": 2,
        "final_sigmas_type": "zero",
        "lower_order_final": False,
        "thresholding": False,
        "use_flow_sigmas": False,
    },
    "DPMSolverSDEScheduler": {**_SIGMA_KEYS, **_SPACING, "noise_sampler_seed": None},
    "DDIMScheduler": {
        "timestep_spacing": "leading",
        "steps_offset": 0,
        "set_alpha_to_one": True,
        "clip_sample": True,
        "thresholding": False,
        "rescale_betas_zero_snr": False,
    },
    "PNDMScheduler": {
        "timestep_spacing": "leading",
        "steps_offset": 0,
        "set_alpha_to_one": False,
        "skip_prk_steps": False,
    },
    "UniPCMultistepScheduler": {
        **_SIGMA_KEYS,
        **_SPACING,
        "solver_type": "bh2",
        "solver_order": 2,
        "final_sigmas_type": "zero",
        "lower_order_final": True,
        "thresholding": False,
        "rescale_betas_zero_snr": False,
        "use_flow_sigmas": False,
        "predict_x0": True,
    },
    "LCMScheduler": {"timestep_spacing": "leading", "steps_offset": 0, "original_inference_steps": 50},
    "DDPMScheduler": {"timestep_spacing": "leading", "steps_offset": 0},
    "DEISMultistepScheduler": {
        **_SIGMA_KEYS,
        **_SPACING,
        "algorithm_type": "deis",
        "solver_type": "logrho",
        "solver_order": 2,
        "lower_order_final": True,
        "thresholding": False,
        "use_flow_sigmas": False,
    },
    "TCDScheduler": {"timestep_spacing": "leading", "steps_offset": 0, "original_inference_steps": 50},
}


@dataclasses.dataclass(frozen=True)
class _Schedule:
    key: str
    config: dict[str, Any] | None  # None: no diffusers config makes these sigmas
    a1111: tuple[str, ...] = ()  # label first, then the other names A1111 matches (its `name`, aliases)
    comfyui: str | None = None
    why_not: str = ""


_SCHEDULES = (
    # A1111's "Uniform" is k-diffusion's own discretization (timesteps evenly spaced from the last to the first);
    # ComfyUI's and A1111's "Normal" space the timesteps the same way between sigma_max and sigma_min.
    _Schedule("uniform", {}, ("Uniform", "uniform")),
    _Schedule("normal", {}, ("Normal", "normal"), "normal"),
    _Schedule("karras", {"use_karras_sigmas": True}, ("Karras", "karras"), "karras"),
    _Schedule("exponential", {"use_exponential_sigmas": True}, ("Exponential", "exponential"), "exponential"),
    _Schedule("beta", {"use_beta_sigmas": True}, ("Beta", "beta"), "beta"),
    # "Simple" takes every (1000 / steps)-th training sigma from the last: diffusers' "trailing" spacing.
    _Schedule("simple", {"timestep_spacing": "trailing"}, ("Simple", "simple"), "simple"),
    _Schedule(
        "sgm_uniform", {"timestep_spacing": "trailing"}, ("SGM Uniform", "sgm_uniform", "SGMUniform"), "sgm_uniform"
    ),
    # Every (1000 // steps)-th timestep from 1: diffusers' "leading" spacing with steps_offset=1.
    _Schedule("ddim", {"timestep_spacing": "leading", "steps_offset": 1}, ("DDIM", "ddim"), "ddim_uniform"),
    _Schedule(
        "polyexponential",
        None,
        ("Polyexponential", "polyexponential"),
        why_not="diffusers has no polyexponential sigmas",
    ),
    _Schedule("kl_optimal", None, ("KL Optimal", "kl_optimal"), "kl_optimal", "diffusers has no KL-optimal sigmas"),
    _Schedule(
        "align_your_steps",
        None,
        ("Align Your Steps", "align_your_steps"),
        why_not="diffusers has no Align Your Steps config (its sigmas would have to be passed to the call)",
    ),
    _Schedule(
        "linear_quadratic", None, comfyui="linear_quadratic", why_not="diffusers has no linear-quadratic schedule"
    ),
    _Schedule(
        "karras_exponential",
        None,
        ("Karras Exponential", "karras_exponential"),
        why_not="diffusers has no blend of Karras and exponential sigmas",
    ),
)
_SCHEDULES_BY_KEY = {schedule.key: schedule for schedule in _SCHEDULES}


@dataclasses.dataclass(frozen=True)
class _Solver:
    key: str
    scheduler: str | None
    why_not: str = ""  # when scheduler is None
    a1111: str | None = None  # A1111 1.10's label
    a1111_config: dict[str, Any] | None = None  # config for A1111's sampler (default: `config`)
    # The schedule A1111 1.9+ uses for "Automatic" (the sampler's `scheduler` option); None: its own default sigmas.
    a1111_default_schedule: str | None = None
    # A1111's timestep samplers (DDIM, PLMS, UniPC) and LCM ignore the schedule type.
    a1111_schedules: bool = True
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    comfyui: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # name -> config over `config`
    invokeai: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # name -> InvokeAI's extra config
    ancestral: bool = False
    sde: bool = False
    notes: tuple[str, ...] = ()


_SDE_NOTE = (
    "the Brownian noise of an SDE sampler is drawn another way in diffusers than in k-diffusion: the same method, "
    "other noise after the first step"
)
_SOLVERS = (
    _Solver(
        "euler",
        "EulerDiscreteScheduler",
        a1111="Euler",
        comfyui={"euler": {}},
        invokeai={"euler": {}, "euler_k": {"use_karras_sigmas": True}},
    ),
    _Solver(
        "euler_ancestral",
        "EulerAncestralDiscreteScheduler",
        a1111="Euler a",
        comfyui={"euler_ancestral": {}},
        invokeai={"euler_a": {}},
        ancestral=True,
    ),
    _Solver(
        "lms",
        "LMSDiscreteScheduler",
        a1111="LMS",
        comfyui={"lms": {}},
        invokeai={"lms": {}, "lms_k": {"use_karras_sigmas": True}},
    ),
    _Solver(
        "heun",
        "HeunDiscreteScheduler",
        a1111="Heun",
        comfyui={"heun": {}},
        invokeai={"heun": {}, "heun_k": {"use_karras_sigmas": True}},
    ),
    _Solver(
        "dpm_2",
        "KDPM2DiscreteScheduler",
        a1111="DPM2",
        a1111_default_schedule="karras",
        comfyui={"dpm_2": {}},
        invokeai={"kdpm_2": {}, "kdpm_2_k": {"use_karras_sigmas": True}},
        notes=("A1111 drops the next-to-last sigma for DPM2; diffusers' KDPM2 keeps it",),
    ),
    _Solver(
        "dpm_2_ancestral",
        "KDPM2AncestralDiscreteScheduler",
        a1111="DPM2 a",
        a1111_default_schedule="karras",
        comfyui={"dpm_2_ancestral": {}},
        invokeai={"kdpm_2_a": {}, "kdpm_2_a_k": {"use_karras_sigmas": True}},
        ancestral=True,
        notes=("A1111 drops the next-to-last sigma for DPM2 a; diffusers' KDPM2 ancestral keeps it",),
    ),
    _Solver(
        "dpmpp_2s_ancestral",
        None,
        why_not="diffusers has no DPM++ 2S ancestral scheduler (DPMSolverSinglestepScheduler is another method)",
        a1111="DPM++ 2S a",
        a1111_default_schedule="karras",
        comfyui={"dpmpp_2s_ancestral": {}},
        ancestral=True,
    ),
    _Solver(
        "dpmpp_2m",
        "DPMSolverMultistepScheduler",
        a1111="DPM++ 2M",
        a1111_default_schedule="karras",
        comfyui={"dpmpp_2m": {}},
        invokeai={"dpmpp_2m": {}, "dpmpp_2m_k": {"use_karras_sigmas": True}},
    ),
    _Solver(
        "dpmpp_3m",
        "DPMSolverMultistepScheduler",
        config={"solver_order": 3},
        invokeai={"dpmpp_3m": {}, "dpmpp_3m_k": {"use_karras_sigmas": True}},
    ),
    _Solver(
        "dpmpp_2s",
        "DPMSolverSinglestepScheduler",
        invokeai={"dpmpp_2s": {}, "dpmpp_2s_k": {"use_karras_sigmas": True}},
    ),
    _Solver(
        "dpmpp_sde",
        "DPMSolverSDEScheduler",
        a1111="DPM++ SDE",
        a1111_default_schedule="karras",
        comfyui={"dpmpp_sde": {}, "dpmpp_sde_gpu": {}},
        invokeai={"dpmpp_sde": {}, "dpmpp_sde_k": {"use_karras_sigmas": True}},
        sde=True,
        notes=(_SDE_NOTE,),
    ),
    _Solver(
        "dpmpp_2m_sde",
        "DPMSolverMultistepScheduler",
        config={"algorithm_type": "sde-dpmsolver++"},
        a1111="DPM++ 2M SDE",
        a1111_default_schedule="exponential",
        comfyui={"dpmpp_2m_sde": {}, "dpmpp_2m_sde_gpu": {}},
        invokeai={"dpmpp_2m_sde": {}, "dpmpp_2m_sde_k": {"use_karras_sigmas": True}},
        sde=True,
        notes=(_SDE_NOTE,),
    ),
    _Solver(
        "dpmpp_2m_sde_heun",
        "DPMSolverMultistepScheduler",
        config={"algorithm_type": "sde-dpmsolver++", "solver_type": "heun"},
        a1111="DPM++ 2M SDE Heun",
        a1111_default_schedule="exponential",
        comfyui={"dpmpp_2m_sde_heun": {}, "dpmpp_2m_sde_heun_gpu": {}},
        sde=True,
        notes=(_SDE_NOTE,),
    ),
    _Solver(
        "dpmpp_3m_sde",
        "DPMSolverMultistepScheduler",
        config={"algorithm_type": "sde-dpmsolver++", "solver_order": 3},
        a1111="DPM++ 3M SDE",
        a1111_default_schedule="exponential",
        comfyui={"dpmpp_3m_sde": {}, "dpmpp_3m_sde_gpu": {}},
        sde=True,
        notes=(_SDE_NOTE, "A1111 drops the next-to-last sigma for DPM++ 3M SDE; diffusers keeps it"),
    ),
    _Solver(
        "dpm_fast",
        None,
        why_not="diffusers has no DPM fast (DPM-Solver with a fixed step-order plan) scheduler",
        a1111="DPM fast",
        comfyui={"dpm_fast": {}},
        ancestral=True,
    ),
    _Solver(
        "dpm_adaptive",
        None,
        why_not="diffusers has no DPM adaptive scheduler (it chooses its own steps)",
        a1111="DPM adaptive",
        comfyui={"dpm_adaptive": {}},
        ancestral=True,
    ),
    _Solver(
        "restart",
        None,
        why_not="diffusers has no Restart sampler",
        a1111="Restart",
        a1111_default_schedule="karras",
    ),
    _Solver(
        "ddim",
        "DDIMScheduler",
        # A1111's DDIM (CompVis' sampler): every (1000 // steps)-th timestep from 1, no clipping, and the first step's
        # "previous" alpha is the first training alpha.
        a1111="DDIM",
        a1111_config={"steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False},
        a1111_schedules=False,
        invokeai={"ddim": {}},
    ),
    _Solver(
        "ddim_cfg_pp",
        None,
        why_not="diffusers has no CFG++ guidance (it changes how the guided prediction is renoised)",
        a1111="DDIM CFG++",
        a1111_schedules=False,
    ),
    _Solver(
        "plms",
        "PNDMScheduler",
        a1111="PLMS",
        a1111_config={"steps_offset": 1, "skip_prk_steps": True},
        a1111_schedules=False,
        invokeai={"pndm": {}},
        notes=(
            "the first steps of PLMS (before it has enough history) are computed differently in A1111 and diffusers",
        ),
    ),
    _Solver(
        "unipc",
        "UniPCMultistepScheduler",
        # A1111's defaults: variant bh1, order 3, time-uniform steps, lower order at the end.
        a1111="UniPC",
        a1111_config={"solver_type": "bh1", "solver_order": 3},
        a1111_schedules=False,
        # ComfyUI's uni_pc: variant bh1 (uni_pc_bh2: bh2), order 3.
        comfyui={"uni_pc": {"solver_type": "bh1", "solver_order": 3}, "uni_pc_bh2": {"solver_order": 3}},
        invokeai={"unipc": {}, "unipc_k": {"use_karras_sigmas": True}},
    ),
    _Solver(
        "lcm",
        "LCMScheduler",
        a1111="LCM",
        a1111_schedules=False,
        comfyui={"lcm": {}},
        invokeai={"lcm": {}},
        ancestral=True,
        notes=(
            "diffusers' LCMScheduler takes its timesteps from LCM's 50-step origin schedule and applies LCM's "
            "boundary condition; A1111 and ComfyUI step through the sampler's sigmas with the model's own prediction",
        ),
    ),
    _Solver(
        "ddpm",
        "DDPMScheduler",
        comfyui={"ddpm": {}},
        invokeai={"ddpm": {}},
        ancestral=True,
    ),
    _Solver(
        "deis",
        "DEISMultistepScheduler",
        comfyui={"deis": {"solver_order": 3}},
        invokeai={"deis": {}, "deis_k": {"use_karras_sigmas": True}},
    ),
    _Solver("tcd", "TCDScheduler", invokeai={"tcd": {}}, ancestral=True),
    _Solver(
        "er_sde",
        None,
        why_not="diffusers has no ER-SDE scheduler (InvokeAI and ComfyUI ship their own)",
        comfyui={"er_sde": {}},
        invokeai={"er_sde": {}},
        sde=True,
    ),
)

# ComfyUI runs its "ddim" sampler as Euler (the same method in k-diffusion's sigma space): the euler row, named.
_COMFYUI_ALIASES = {"ddim": ("euler", "ComfyUI runs its ddim sampler as Euler")}
# ComfyUI samplers known to have no diffusers scheduler (the rest of its list; any other name is unknown).
_COMFYUI_NO_EQUIVALENT = (
    "euler_cfg_pp",
    "euler_ancestral_cfg_pp",
    "heunpp2",
    "dpmpp_2s_ancestral_cfg_pp",
    "dpmpp_2m_cfg_pp",
    "ipndm",
    "ipndm_v",
    "res_multistep",
    "res_multistep_cfg_pp",
    "res_multistep_ancestral",
    "res_multistep_ancestral_cfg_pp",
    "gradient_estimation",
    "gradient_estimation_cfg_pp",
    "seeds_2",
    "seeds_3",
    "sa_solver",
    "sa_solver_pece",
)

A1111_SAMPLERS = tuple(solver.a1111 for solver in _SOLVERS if solver.a1111)
"""A1111 1.10's sampler labels (new form, without a schedule suffix)."""
A1111_SCHEDULE_TYPES = ("Automatic",) + tuple(schedule.a1111[0] for schedule in _SCHEDULES if schedule.a1111)
"""A1111's ``Schedule type`` labels (1.10, and Forge's ``Karras Exponential``)."""
COMFYUI_SAMPLERS = (
    tuple(name for solver in _SOLVERS for name in solver.comfyui) + tuple(_COMFYUI_ALIASES) + _COMFYUI_NO_EQUIVALENT
)
"""ComfyUI ``sampler_name`` values the table knows (mapped or known to have no equivalent)."""
COMFYUI_SCHEDULERS = tuple(schedule.comfyui for schedule in _SCHEDULES if schedule.comfyui)
"""ComfyUI ``scheduler`` values the table knows."""
INVOKEAI_SCHEDULERS = tuple(name for solver in _SOLVERS for name in solver.invokeai)
"""InvokeAI scheduler names the table knows."""


# --------------------------------------------------------------------------------------------------------------------
# Lookups


def _name(value: Any, field: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{field} must be a str, got {type(value).__name__}")
    return value.strip()


def _shown(value: str) -> str:
    return repr(value if len(value) <= _MAX_NAME_CHARS else value[:_MAX_NAME_CHARS] + "...")


def config_without_defaults(scheduler: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of ``config`` that differ from ``scheduler``'s defaults, as far as this table knows them (the keys
    that choose the method and the steps); every other key is kept."""
    defaults = _CLASS_DEFAULTS.get(scheduler, {})
    return {key: value for key, value in config.items() if key not in defaults or defaults[key] != value}


MODEL_CONFIG_KEYS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "prediction_type",
    "rescale_betas_zero_snr",
)
"""The scheduler config keys that describe the model (its training noise schedule and what it predicts): the only
keys a tool takes from a model's scheduler config. Every other key (spacing, offsets, sigmas, solver) is the
sampler's."""


def tool_scheduler_config(
    scheduler: str, config: Mapping[str, Any], model_config: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The full config to build ``scheduler`` with to run what a tool ran: the model's keys from ``model_config``,
    the sampler's keys from ``config`` (a `SamplerMapping.config`) over the class defaults.

    Applying a mapping over a model's own scheduler config (``{**pipe.scheduler.config, **mapping.config}``) keeps the
    model's spacing and offsets: SD 1.5's folder says ``timestep_spacing="leading"``, ``steps_offset=1`` (for its
    PNDM/DDIM), which A1111's Euler does not use. A tool takes only the betas and the prediction type from the model
    (`MODEL_CONFIG_KEYS`); the method and its steps come from the sampler, so every key the table knows for
    ``scheduler`` is set to the class default unless the mapping sets it.

    Args:
        scheduler (`str`): The diffusers scheduler class name (`SamplerMapping.scheduler`).
        config (`dict`): The mapping's config (keys that differ from the class defaults).
        model_config (`dict`, *optional*): The model's scheduler config (``pipe.scheduler.config``).

    Returns:
        `dict`: for ``Class.from_config``.

    Example:

    ```py
    >>> from diffusers_repro.generation.samplers import from_a1111, tool_scheduler_config
    >>> model = {"beta_schedule": "scaled_linear", "timestep_spacing": "leading", "steps_offset": 1}
    >>> tool_scheduler_config("EulerDiscreteScheduler", from_a1111("Euler").config, model)["timestep_spacing"]
    'linspace'
    ```
    """
    if not isinstance(scheduler, str):
        raise TypeError(f"scheduler must be a diffusers scheduler class name (a str), got {type(scheduler).__name__}")
    model_config = dict(model_config or {})
    model = {key: model_config[key] for key in MODEL_CONFIG_KEYS if key in model_config}
    return {**_CLASS_DEFAULTS.get(scheduler, {}), **model, **dict(config)}


def _combine(
    solver: _Solver,
    tool: str,
    sampler_label: str,
    sampler_config: dict[str, Any],
    schedule: _Schedule | None,
    schedule_label: str = "",
    extra_notes: tuple[str, ...] = (),
) -> SamplerMapping:
    notes = solver.notes + extra_notes
    if solver.scheduler is None:
        return SamplerMapping(
            None,
            blockers=(f"{tool} sampler {sampler_label!r} has no diffusers equivalent: {solver.why_not}",),
            ancestral=solver.ancestral,
            sde=solver.sde,
        )
    config = dict(sampler_config)
    if schedule is not None:
        if schedule.config is None:
            return SamplerMapping(
                None,
                blockers=(f"{tool} schedule {schedule_label!r} has no diffusers equivalent: {schedule.why_not}",),
                ancestral=solver.ancestral,
                sde=solver.sde,
            )
        missing = [key for key in schedule.config if key not in _CLASS_DEFAULTS[solver.scheduler]]
        if missing:
            return SamplerMapping(
                None,
                blockers=(
                    f"{tool} schedule {schedule_label!r} with sampler {sampler_label!r} has no diffusers equivalent: "
                    f"{solver.scheduler} has no {', '.join(missing)}",
                ),
                ancestral=solver.ancestral,
                sde=solver.sde,
            )
        config.update(schedule.config)
    return SamplerMapping(
        solver.scheduler,
        config_without_defaults(solver.scheduler, config),
        notes=notes,
        ancestral=solver.ancestral,
        sde=solver.sde,
    )


def _unknown(tool: str, field: str, value: str, known: tuple[str, ...]) -> SamplerMapping:
    return SamplerMapping(
        None,
        blockers=(
            f"{tool} {field} {_shown(value)} is not one diffusers-repro knows (known: {', '.join(known)}); it is not "
            "guessed at",
        ),
    )


def _a1111_schedule(label: str) -> _Schedule | None:
    lowered = label.lower()
    for schedule in _SCHEDULES:
        if lowered in (name.lower() for name in schedule.a1111):
            return schedule
    return None


def _split_a1111_sampler(sampler: str) -> tuple[str, _Schedule | None]:
    """A1111's old form ``"DPM++ 2M Karras"``: the sampler and the schedule named by its suffix (as A1111 reads it)."""
    for schedule in _SCHEDULES:
        for name in schedule.a1111:
            if sampler.lower().endswith(" " + name.lower()):
                return sampler[: -(len(name) + 1)].strip(), schedule
    return sampler, None


def from_a1111(sampler: str, schedule_type: str | None = None) -> SamplerMapping:
    """The diffusers scheduler for an A1111/Forge ``Sampler`` and ``Schedule type``.

    Both forms A1111 writes are read: the new one (1.9 and later), ``Sampler: DPM++ 2M, Schedule type: Karras``, and
    the old one, ``Sampler: DPM++ 2M Karras`` with no schedule type. ``schedule_type="Automatic"`` is the sampler's
    own default in A1111 1.9+ (Karras for DPM++ 2M, DPM++ SDE, DPM2, DPM2 a and DPM++ 2S a; exponential for the
    DPM++ 2M/3M SDE samplers; k-diffusion's uniform sigmas for the others). A missing schedule type
    (``schedule_type=None``) is an infotext from before 1.9, where a sampler without a suffix used the uniform sigmas
    (A1111 1.10 itself would read such an infotext as ``Automatic``: for ``DPM++ 2M`` that is Karras, which the image
    was not made with). A1111's DDIM, PLMS, UniPC and LCM ignore the schedule type, and so does this mapping.

    Args:
        sampler (`str`): The ``Sampler`` value.
        schedule_type (`str`, *optional*): The ``Schedule type`` value, `None` when the infotext has none.

    Returns:
        `SamplerMapping`: with no scheduler and a blocker naming the value for a sampler or schedule without a
        diffusers equivalent, or one this table does not know (A1111 falls back to its first sampler for those; we
        do not guess).

    Example:

    ```py
    >>> from diffusers_repro.interop.samplers import from_a1111
    >>> from_a1111("DPM++ 2M", "Karras").config
    {'use_karras_sigmas': True}
    >>> from_a1111("DPM++ 2M Karras") == from_a1111("DPM++ 2M", "Karras")
    True
    ```
    """
    sampler = _name(sampler, "sampler")
    if schedule_type is not None:
        schedule_type = _name(schedule_type, "schedule_type")
    base, suffix = _split_a1111_sampler(sampler)
    solver = next((row for row in _SOLVERS if row.a1111 and row.a1111.lower() == base.lower()), None)
    if solver is None:
        return _unknown("A1111", "sampler", sampler, A1111_SAMPLERS)
    config = {**solver.config, **(solver.a1111_config or {})}
    if not solver.a1111_schedules:
        return _combine(solver, "A1111", solver.a1111, config, None)
    if suffix is not None:
        schedule = suffix  # the old form's suffix wins, as in A1111's own reader
    elif schedule_type is None:
        schedule = _SCHEDULES_BY_KEY["uniform"]
    elif schedule_type.lower() == "automatic":
        schedule = _SCHEDULES_BY_KEY[solver.a1111_default_schedule or "uniform"]
    else:
        found = _a1111_schedule(schedule_type)
        if found is None:
            return _unknown("A1111", "schedule type", schedule_type, A1111_SCHEDULE_TYPES)
        schedule = found
    return _combine(solver, "A1111", solver.a1111, config, schedule, schedule.a1111[0])


def from_comfyui(sampler_name: str, scheduler: str) -> SamplerMapping:
    """The diffusers scheduler for a ComfyUI ``KSampler``'s ``sampler_name`` and ``scheduler``.

    Example:

    ```py
    >>> from diffusers_repro.interop.samplers import from_comfyui
    >>> from_comfyui("dpmpp_2m", "karras").scheduler
    'DPMSolverMultistepScheduler'
    >>> from_comfyui("dpm_adaptive", "normal").scheduler is None
    True
    ```
    """
    sampler_name = _name(sampler_name, "sampler_name")
    scheduler = _name(scheduler, "scheduler")
    extra_notes: tuple[str, ...] = ()
    key = sampler_name
    if key in _COMFYUI_ALIASES:
        key, note = _COMFYUI_ALIASES[key]
        extra_notes = (note,)
    solver = next((row for row in _SOLVERS if key in row.comfyui), None)
    if solver is None:
        if sampler_name in _COMFYUI_NO_EQUIVALENT:
            return SamplerMapping(None, blockers=(f"ComfyUI sampler {sampler_name!r} has no diffusers equivalent",))
        return _unknown("ComfyUI", "sampler_name", sampler_name, COMFYUI_SAMPLERS)
    schedule = next((row for row in _SCHEDULES if row.comfyui == scheduler), None)
    if schedule is None:
        return _unknown("ComfyUI", "scheduler", scheduler, COMFYUI_SCHEDULERS)
    config = {**solver.config, **solver.comfyui.get(key, {})}
    return _combine(solver, "ComfyUI", sampler_name, config, schedule, scheduler, extra_notes)


def from_invokeai(name: str) -> SamplerMapping:
    """The diffusers scheduler for an InvokeAI scheduler name: InvokeAI's own map, which names diffusers classes.

    InvokeAI applies its config over the model's scheduler config, as `SamplerMapping.config` is meant to be used.
    Its ``dpmpp_sde`` also sets ``noise_sampler_seed`` to the image's seed (see the recipe).

    Example:

    ```py
    >>> from diffusers_repro.interop.samplers import from_invokeai
    >>> from_invokeai("dpmpp_2m_sde_k").config
    {'algorithm_type': 'sde-dpmsolver++', 'use_karras_sigmas': True}
    ```
    """
    name = _name(name, "scheduler")
    solver = next((row for row in _SOLVERS if name in row.invokeai), None)
    if solver is None:
        return _unknown("InvokeAI", "scheduler", name, INVOKEAI_SCHEDULERS)
    if solver.scheduler is None:
        return SamplerMapping(
            None,
            blockers=(f"InvokeAI scheduler {name!r} has no diffusers equivalent: {solver.why_not}",),
            ancestral=solver.ancestral,
            sde=solver.sde,
        )
    config = {**solver.config, **solver.invokeai[name]}
    return SamplerMapping(
        solver.scheduler,
        config_without_defaults(solver.scheduler, config),
        ancestral=solver.ancestral,
        sde=solver.sde,
    )


# --------------------------------------------------------------------------------------------------------------------
# Reverse


def _value(config: Mapping[str, Any], defaults: Mapping[str, Any], key: str) -> Any:
    return config.get(key, defaults.get(key))


def _schedule_of(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> _Schedule | None:
    """The A1111 schedule a scheduler config makes, or `None` when it makes none of them."""
    sigmas = [key for key in _SIGMA_KEYS if _value(config, defaults, key)]
    if len(sigmas) > 1:
        return None
    if sigmas:
        return next(row for row in _SCHEDULES if row.config == {sigmas[0]: True})
    spacing = _value(config, defaults, "timestep_spacing")
    if spacing == "linspace" or (spacing is None and "timestep_spacing" not in defaults):
        return _SCHEDULES_BY_KEY["uniform"]
    if spacing == "trailing":
        return _SCHEDULES_BY_KEY["simple"]
    if spacing == "leading" and _value(config, defaults, "steps_offset") == 1:
        return _SCHEDULES_BY_KEY["ddim"]
    return None


def to_a1111(class_name: str, config: Mapping[str, Any] | None = None) -> tuple[str, str] | None:
    """A1111's ``(Sampler, Schedule type)`` for a diffusers scheduler class and config, or `None` when A1111 has no
    sampler that runs the same method with the same steps.

    The schedule type is written in A1111 1.10's new form (``Automatic`` for the samplers that ignore it: DDIM, PLMS,
    UniPC, LCM). Only the keys that choose the method and the steps are compared; the model's keys (betas,
    ``prediction_type``) are A1111's model's business.

    Example:

    ```py
    >>> from diffusers_repro.interop.samplers import to_a1111
    >>> to_a1111("DPMSolverMultistepScheduler", {"use_karras_sigmas": True})
    ('DPM++ 2M', 'Karras')
    >>> to_a1111("EulerDiscreteScheduler", {"timestep_spacing": "linspace"})
    ('Euler', 'Uniform')
    >>> to_a1111("DDIMScheduler", {}) is None  # steps_offset=0: not A1111's DDIM timesteps
    True
    ```
    """
    if not isinstance(class_name, str) or class_name not in _CLASS_DEFAULTS:
        return None
    config = dict(config or {})
    defaults = _CLASS_DEFAULTS[class_name]
    schedule_keys = set(_SIGMA_KEYS) | set(_SPACING)
    # The seed of an SDE sampler's Brownian noise is the image's business, not the method's.
    ignored = {"noise_sampler_seed"}
    for solver in _SOLVERS:
        if solver.scheduler != class_name or solver.a1111 is None:
            continue
        wanted = {**solver.config, **(solver.a1111_config or {})}
        method_keys = [
            key for key in defaults if key not in ignored and (key not in schedule_keys or not solver.a1111_schedules)
        ]
        # Every key that chooses the method must be what this row sets, or the class default where the row sets none.
        if any(_value(config, defaults, key) != wanted.get(key, defaults[key]) for key in method_keys):
            continue
        if not solver.a1111_schedules:
            return solver.a1111, "Automatic"
        schedule = _schedule_of(config, defaults)
        if schedule is None or not schedule.a1111:
            return None
        return solver.a1111, schedule.a1111[0]
    return None
