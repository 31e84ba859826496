"""The sampler table: every target is a real diffusers scheduler config, names map both ways, unknowns are named."""

from __future__ import annotations

import inspect

import diffusers
import pytest

from diffusers_repro.generation import samplers
from diffusers_repro.generation.samplers import (
    A1111_SAMPLERS,
    A1111_SCHEDULE_TYPES,
    COMFYUI_SAMPLERS,
    COMFYUI_SCHEDULERS,
    INVOKEAI_SCHEDULERS,
    SamplerMapping,
    from_a1111,
    from_comfyui,
    from_invokeai,
    to_a1111,
)

# A1111 1.10's samplers and schedule types, as its UI lists them (sd_samplers_kdiffusion, sd_samplers_timesteps,
# sd_samplers_lcm, sd_schedulers).
A1111_1_10_SAMPLERS = [
    "DPM++ 2M",
    "DPM++ SDE",
    "DPM++ 2M SDE",
    "DPM++ 2M SDE Heun",
    "DPM++ 2S a",
    "DPM++ 3M SDE",
    "Euler a",
    "Euler",
    "LMS",
    "Heun",
    "DPM2",
    "DPM2 a",
    "DPM fast",
    "DPM adaptive",
    "Restart",
    "DDIM",
    "DDIM CFG++",
    "PLMS",
    "UniPC",
    "LCM",
]
A1111_1_10_SCHEDULES = [
    "Automatic",
    "Uniform",
    "Karras",
    "Exponential",
    "Polyexponential",
    "SGM Uniform",
    "KL Optimal",
    "Align Your Steps",
    "Simple",
    "Normal",
    "DDIM",
    "Beta",
]
NO_EQUIVALENT = ["DPM fast", "DPM adaptive", "Restart", "DDIM CFG++", "DPM++ 2S a"]
NO_SCHEDULE = ["Polyexponential", "Align Your Steps", "KL Optimal"]


def all_mappings():
    for sampler in A1111_SAMPLERS:
        for schedule in (None, *A1111_SCHEDULE_TYPES):
            yield f"a1111:{sampler}/{schedule}", from_a1111(sampler, schedule)
    for sampler in COMFYUI_SAMPLERS:
        for scheduler in COMFYUI_SCHEDULERS:
            yield f"comfyui:{sampler}/{scheduler}", from_comfyui(sampler, scheduler)
    for name in INVOKEAI_SCHEDULERS:
        yield f"invokeai:{name}", from_invokeai(name)


def test_the_table_lists_every_a1111_1_10_sampler_and_schedule_type():
    assert set(A1111_1_10_SAMPLERS) <= set(A1111_SAMPLERS)
    assert set(A1111_1_10_SCHEDULES) <= set(A1111_SCHEDULE_TYPES)
    for name in ("ddim", "ddpm", "deis", "lms", "lms_k", "pndm", "heun", "heun_k", "euler", "euler_k", "euler_a"):
        assert name in INVOKEAI_SCHEDULERS
    for name in ("kdpm_2", "kdpm_2_a", "dpmpp_2s", "dpmpp_2s_k", "dpmpp_2m", "dpmpp_2m_k", "dpmpp_2m_sde"):
        assert name in INVOKEAI_SCHEDULERS
    for name in ("dpmpp_2m_sde_k", "dpmpp_sde", "dpmpp_sde_k", "unipc", "unipc_k", "lcm", "tcd"):
        assert name in INVOKEAI_SCHEDULERS
    for name in ("euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2s_ancestral"):
        assert name in COMFYUI_SAMPLERS
    for name in ("dpmpp_sde", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m_sde", "ddim", "uni_pc", "lcm"):
        assert name in COMFYUI_SAMPLERS
    assert set(COMFYUI_SCHEDULERS) >= {"normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform"}


def test_class_defaults_the_table_relies_on_are_diffusers_own():
    for name, defaults in samplers._CLASS_DEFAULTS.items():
        parameters = inspect.signature(getattr(diffusers, name).__init__).parameters
        for key, value in defaults.items():
            assert key in parameters, (name, key)
            assert parameters[key].default == value, (name, key)


def test_every_mapped_target_constructs_a_real_diffusers_scheduler_with_its_config():
    seen = 0
    for where, mapping in all_mappings():
        assert isinstance(mapping, SamplerMapping)
        if mapping.scheduler is None:
            assert mapping.blockers and mapping.config == {}, where
            continue
        assert not mapping.blockers, where
        cls = getattr(diffusers, mapping.scheduler)
        scheduler = cls.from_config({"num_train_timesteps": 1000, **mapping.config})
        for key, value in mapping.config.items():
            assert scheduler.config[key] == value, (where, key)
        scheduler.set_timesteps(8)
        # Only keys that differ from the class defaults.
        defaults = cls().config
        assert all(defaults.get(key) != value for key, value in mapping.config.items()), where
        seen += 1
    assert seen > 100


@pytest.mark.parametrize("sampler", A1111_1_10_SAMPLERS)
@pytest.mark.parametrize("schedule", ["Karras", "Exponential", "Beta", "Simple", "DDIM"])
def test_old_and_new_a1111_forms_agree(sampler, schedule):
    old = from_a1111(f"{sampler} {schedule}")
    assert old == from_a1111(sampler, schedule)
    # The old form's suffix wins over a schedule type, as in A1111's reader.
    assert from_a1111(f"{sampler} {schedule}", "Uniform") == old


def test_a1111_known_mappings():
    assert from_a1111("DPM++ 2M", "Karras") == SamplerMapping(
        "DPMSolverMultistepScheduler", {"use_karras_sigmas": True}
    )
    # "Automatic" is the sampler's own default in 1.9+; no schedule type is an infotext from before 1.9.
    assert from_a1111("DPM++ 2M", "Automatic") == from_a1111("DPM++ 2M Karras")
    assert from_a1111("DPM++ 2M") == SamplerMapping("DPMSolverMultistepScheduler", {})
    assert from_a1111("DPM++ 2M SDE", "Automatic").config == {
        "algorithm_type": "sde-dpmsolver++",
        "use_exponential_sigmas": True,
    }
    heun = from_a1111("DPM++ 2M SDE Heun Karras")
    assert heun.config == {"algorithm_type": "sde-dpmsolver++", "solver_type": "heun", "use_karras_sigmas": True}
    assert heun.sde and not heun.ancestral and heun.notes
    assert from_a1111("Euler a", "Automatic") == SamplerMapping("EulerAncestralDiscreteScheduler", ancestral=True)
    assert from_a1111("Euler", "SGM Uniform").config == {"timestep_spacing": "trailing"}
    # DDIM ignores the schedule type; its config is CompVis' DDIM timesteps.
    ddim = from_a1111("DDIM", "Karras")
    assert ddim == from_a1111("DDIM")
    assert ddim.config == {"steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False}
    assert from_a1111("UniPC").config == {"solver_type": "bh1", "solver_order": 3}


@pytest.mark.parametrize("sampler", NO_EQUIVALENT)
def test_a1111_samplers_without_equivalent_are_blockers_not_the_nearest(sampler):
    mapping = from_a1111(sampler, "Automatic")
    assert mapping.scheduler is None and mapping.config == {}
    assert mapping.blockers[0].startswith(f"A1111 sampler {sampler!r} has no diffusers equivalent: ")


@pytest.mark.parametrize("schedule", NO_SCHEDULE)
def test_a1111_schedules_without_equivalent_are_blockers(schedule):
    mapping = from_a1111("Euler", schedule)
    assert mapping.scheduler is None
    assert mapping.blockers[0].startswith(f"A1111 schedule {schedule!r} has no diffusers equivalent: ")


def test_a_schedule_the_class_cannot_take_is_a_blocker():
    mapping = from_a1111("Euler a", "Karras")
    assert mapping.scheduler is None
    assert mapping.blockers == (
        "A1111 schedule 'Karras' with sampler 'Euler a' has no diffusers equivalent: EulerAncestralDiscreteScheduler "
        "has no use_karras_sigmas",
    )


@pytest.mark.parametrize(
    "call, field, value",
    [
        (lambda: from_a1111("Euler b"), "sampler", "Euler b"),
        (lambda: from_a1111("Euler", "Turbo"), "schedule type", "Turbo"),
        (lambda: from_comfyui("my_sampler", "karras"), "sampler_name", "my_sampler"),
        (lambda: from_comfyui("euler", "weird"), "scheduler", "weird"),
        (lambda: from_invokeai("edm_euler"), "scheduler", "edm_euler"),
    ],
)
def test_unknown_names_give_a_blocker_naming_the_value(call, field, value):
    mapping = call()
    assert mapping.scheduler is None
    assert f" {field} {value!r} is not one diffusers-repro knows (known: " in mapping.blockers[0]


def test_unknown_long_names_are_cut_in_the_blocker():
    mapping = from_a1111("x" * 10_000)
    assert len(mapping.blockers[0]) < 2000


def test_names_must_be_strings():
    with pytest.raises(TypeError, match="sampler must be a str, got int"):
        from_a1111(3)
    with pytest.raises(TypeError, match="schedule_type must be a str, got list"):
        from_a1111("Euler", [])


def test_comfyui_mappings():
    assert from_comfyui("dpmpp_2m", "karras") == from_a1111("DPM++ 2M", "Karras")
    assert from_comfyui("euler", "ddim_uniform").config == {"timestep_spacing": "leading", "steps_offset": 1}
    ddim = from_comfyui("ddim", "normal")
    assert ddim.scheduler == "EulerDiscreteScheduler" and "ComfyUI runs its ddim sampler as Euler" in ddim.notes
    assert from_comfyui("uni_pc_bh2", "normal").config == {"solver_order": 3}
    assert from_comfyui("dpmpp_2m_sde_gpu", "karras").sde
    assert from_comfyui("euler", "kl_optimal").blockers == (
        "ComfyUI schedule 'kl_optimal' has no diffusers equivalent: diffusers has no KL-optimal sigmas",
    )
    assert from_comfyui("res_multistep", "normal").blockers == (
        "ComfyUI sampler 'res_multistep' has no diffusers equivalent",
    )


def test_invokeai_mappings_are_its_own_map():
    assert from_invokeai("dpmpp_2m_k") == SamplerMapping("DPMSolverMultistepScheduler", {"use_karras_sigmas": True})
    assert from_invokeai("dpmpp_sde") == SamplerMapping("DPMSolverSDEScheduler", sde=True)
    assert from_invokeai("unipc") == SamplerMapping("UniPCMultistepScheduler")
    assert from_invokeai("ddim") == SamplerMapping("DDIMScheduler")
    assert from_invokeai("euler_a").ancestral
    assert from_invokeai("er_sde").scheduler is None


def test_round_trips_through_a1111_names():
    checked = 0
    for sampler in A1111_SAMPLERS:
        for schedule in A1111_SCHEDULE_TYPES:
            mapping = from_a1111(sampler, schedule)
            if mapping.scheduler is None:
                continue
            back = to_a1111(mapping.scheduler, mapping.config)
            assert back is not None, (sampler, schedule)
            assert from_a1111(*back) == mapping, (sampler, schedule, back)
            checked += 1
    assert checked > 60


def test_to_a1111_compares_only_what_chooses_the_method():
    full = dict(diffusers.DPMSolverMultistepScheduler(use_karras_sigmas=True, prediction_type="v_prediction").config)
    assert to_a1111("DPMSolverMultistepScheduler", full) == ("DPM++ 2M", "Karras")
    assert to_a1111("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++", "solver_order": 3}) == (
        "DPM++ 3M SDE",
        "Uniform",
    )
    # The tiny SD model's (and SD v1's) DDIM config is A1111's DDIM; the class defaults are not.
    assert to_a1111("DDIMScheduler", {"steps_offset": 1, "set_alpha_to_one": False, "clip_sample": False}) == (
        "DDIM",
        "Automatic",
    )
    assert to_a1111("DDIMScheduler", {}) is None
    # Nothing false: another method, or sigmas A1111 does not make, have no A1111 name.
    assert to_a1111("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver"}) is None
    assert to_a1111("DPMSolverMultistepScheduler", {"euler_at_final": True}) is None
    assert to_a1111("EulerDiscreteScheduler", {"use_karras_sigmas": True, "use_beta_sigmas": True}) is None
    assert to_a1111("EulerDiscreteScheduler", {"timestep_spacing": "leading"}) is None
    assert to_a1111("EulerDiscreteScheduler", {"timestep_spacing": "leading", "steps_offset": 1}) == ("Euler", "DDIM")
    assert to_a1111("DEISMultistepScheduler", {}) is None
    assert to_a1111("FlowMatchEulerDiscreteScheduler", {}) is None
    assert to_a1111(None, {}) is None
    sde = dict(diffusers.DPMSolverSDEScheduler(noise_sampler_seed=5).config)
    assert to_a1111("DPMSolverSDEScheduler", sde) == ("DPM++ SDE", "Uniform")


def test_scheduler_config_keeps_the_mapped_keys_that_from_config_would_drop():
    from diffusers_repro.tiny import sd_v1_scheduler

    base = sd_v1_scheduler().config  # lists timestep_spacing in _use_default_values
    mapping = from_a1111("Euler", "SGM Uniform")
    # The plain merge loses the mapping: diffusers drops keys the base config had filled in by default.
    assert (
        diffusers.EulerDiscreteScheduler.from_config({**base, **mapping.config}).config.timestep_spacing == "linspace"
    )
    scheduler = diffusers.EulerDiscreteScheduler.from_config(mapping.scheduler_config(base))
    assert scheduler.config.timestep_spacing == "trailing"
    # The model's betas are kept; its DDIM offset is not what A1111's Euler runs.
    assert scheduler.config.beta_schedule == "scaled_linear" and scheduler.config.steps_offset == 0
    assert "_use_default_values" not in mapping.scheduler_config(base)
    karras = from_a1111("DPM++ 2M", "Karras").scheduler_config(diffusers.EulerDiscreteScheduler().config)
    assert diffusers.DPMSolverMultistepScheduler.from_config(karras).config.use_karras_sigmas is True
    with pytest.raises(ValueError, match="this mapping has no diffusers scheduler"):
        from_a1111("DPM adaptive").scheduler_config(base)


def test_tool_scheduler_config_takes_only_the_model_keys_from_the_model():
    import diffusers

    from diffusers_repro.generation import tool_scheduler_config

    # The tiny SD's (and SD 1.5's) scheduler config: DDIM with leading spacing, offset 1, and its betas.
    model = {
        "beta_start": 0.00085,
        "beta_end": 0.012,
        "beta_schedule": "scaled_linear",
        "prediction_type": "epsilon",
        "timestep_spacing": "leading",
        "steps_offset": 1,
        "clip_sample": False,
        "set_alpha_to_one": False,
    }
    euler = tool_scheduler_config("EulerDiscreteScheduler", from_a1111("Euler").config, model)
    scheduler = diffusers.EulerDiscreteScheduler.from_config(euler)
    assert scheduler.config.timestep_spacing == "linspace" and scheduler.config.steps_offset == 0
    assert scheduler.config.beta_schedule == "scaled_linear" and scheduler.config.beta_end == 0.012
    assert "clip_sample" not in euler
    karras = tool_scheduler_config("DPMSolverMultistepScheduler", from_a1111("DPM++ 2M Karras").config, model)
    assert karras["use_karras_sigmas"] is True and karras["timestep_spacing"] == "linspace"
    # A1111's DDIM sets its own offset and alphas; the model's clip_sample is not what decides.
    ddim = tool_scheduler_config("DDIMScheduler", from_a1111("DDIM").config, {**model, "clip_sample": True})
    assert (ddim["steps_offset"], ddim["set_alpha_to_one"], ddim["clip_sample"]) == (1, False, False)
    assert ddim["timestep_spacing"] == "leading"
    with pytest.raises(TypeError, match="scheduler must be a diffusers scheduler class name"):
        tool_scheduler_config(None, {}, model)
