"""Our infotext read by A1111's own rules: an independent mini-parser following A1111 1.10's
``parse_generation_parameters`` and ``sd_samplers.get_sampler_and_scheduler`` (not our reader)."""

from __future__ import annotations

import copy
import json
import re

import diffusers
import pytest

from diffusers_repro.files.infotext import format_infotext

# A1111 1.10: sampler label -> its default scheduler name ("scheduler" option), in UI order; samplers[0] is the
# fallback for an unknown name.
A1111_SAMPLERS = {
    "DPM++ 2M": "karras",
    "DPM++ SDE": "karras",
    "DPM++ 2M SDE": "exponential",
    "DPM++ 2M SDE Heun": "exponential",
    "DPM++ 2S a": "karras",
    "DPM++ 3M SDE": "exponential",
    "Euler a": None,
    "Euler": None,
    "LMS": None,
    "Heun": None,
    "DPM2": "karras",
    "DPM2 a": "karras",
    "DPM fast": None,
    "DPM adaptive": None,
    "Restart": "karras",
    "DDIM": None,
    "DDIM CFG++": None,
    "PLMS": None,
    "UniPC": None,
    "LCM": None,
}
A1111_SCHEDULERS = [  # (name, label, aliases)
    ("automatic", "Automatic", []),
    ("uniform", "Uniform", []),
    ("karras", "Karras", []),
    ("exponential", "Exponential", []),
    ("polyexponential", "Polyexponential", []),
    ("sgm_uniform", "SGM Uniform", ["SGMUniform"]),
    ("kl_optimal", "KL Optimal", []),
    ("align_your_steps", "Align Your Steps", []),
    ("simple", "Simple", []),
    ("normal", "Normal", []),
    ("ddim", "DDIM", []),
    ("beta", "Beta", []),
]
RE_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def a1111_parse(text: str) -> dict:
    res = {}
    prompt, negative, done_with_prompt = "", "", False
    *lines, lastline = text.strip().split("\n")
    if len(RE_PARAM.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    res["Prompt"], res["Negative prompt"] = prompt, negative
    for key, value in RE_PARAM.findall(lastline):
        if value and value[0] == '"' and value[-1] == '"':
            value = json.loads(value)
        res[key.strip()] = value
    res.setdefault("RNG", "GPU")
    res.setdefault("Schedule type", "Automatic")
    res.setdefault("Clip skip", "1")
    return res


def a1111_sampler_and_scheduler(sampler_name, scheduler_name):
    labels = {label: (name, label) for name, label, _ in A1111_SCHEDULERS}
    names = {name: (name, label) for name, label, _ in A1111_SCHEDULERS}
    found = labels.get(scheduler_name) or names.get(scheduler_name) or ("automatic", "Automatic")
    name = sampler_name or "DPM++ 2M"
    for sched_name, label, aliases in A1111_SCHEDULERS:
        for option in [label, sched_name, *aliases]:
            if name.endswith(" " + option):
                found = (sched_name, label)
                name = name[: -(len(option) + 1)]
                break
    sampler = name if name in A1111_SAMPLERS else "DPM++ 2M"
    if A1111_SAMPLERS[sampler] == found[0]:
        found = ("automatic", "Automatic")
    return sampler, found[1]


@pytest.fixture(scope="module")
def record(sd):
    return sd(
        "a fox,\nsecond line",
        negative_prompt="blurry",
        seed=3,
        num_inference_steps=1,
        height=32,
        width=32,
        output_type="latent",
    ).provenance[0]


@pytest.mark.parametrize(
    "scheduler, expected",
    [
        (diffusers.DPMSolverMultistepScheduler(use_karras_sigmas=True), ("DPM++ 2M", "Automatic")),
        (diffusers.DPMSolverMultistepScheduler(), ("DPM++ 2M", "Uniform")),
        (diffusers.EulerAncestralDiscreteScheduler(), ("Euler a", "Uniform")),
        (diffusers.EulerDiscreteScheduler(use_karras_sigmas=True), ("Euler", "Karras")),
        (
            diffusers.DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++", use_exponential_sigmas=True),
            ("DPM++ 2M SDE", "Automatic"),
        ),
        (diffusers.DDIMScheduler(steps_offset=1, set_alpha_to_one=False, clip_sample=False), ("DDIM", "Automatic")),
        (diffusers.UniPCMultistepScheduler(solver_type="bh1", solver_order=3), ("UniPC", "Automatic")),
    ],
)
def test_a1111s_parser_finds_our_sampler(record, scheduler, expected):
    record = copy.deepcopy(record)
    record.recipe["scheduler"] = {"class": type(scheduler).__name__, "config": dict(scheduler.config)}
    record.recipe["call"]["clip_skip"] = 1
    fields = a1111_parse(format_infotext(record))
    # Not A1111's fallback: the sampler and schedule it would run (Automatic where that is the sampler's default).
    assert a1111_sampler_and_scheduler(fields["Sampler"], fields["Schedule type"]) == expected
    assert (fields["Prompt"], fields["Negative prompt"], fields["Seed"]) == ("a fox,\nsecond line", "blurry", "3")
    assert fields["RNG"] == "CPU" and fields["Clip skip"] == "2"


def test_a_scheduler_a1111_lacks_writes_no_sampler(record):
    record = copy.deepcopy(record)
    record.recipe["scheduler"] = {"class": "DEISMultistepScheduler", "config": {}}
    fields = a1111_parse(format_infotext(record))
    assert "Sampler" not in fields and fields["Diffusers scheduler"] == "DEISMultistepScheduler"


def test_rng_cuda_is_nv_only_below_the_geometry_threshold(record):
    record = copy.deepcopy(record)
    record.recipe["rng"] = {"type": "cuda", "emulated": True, "geometry": None}
    record.result["noise"] = {"shape": [4, 4, 4]}
    assert a1111_parse(format_infotext(record))["RNG"] == "NV"
    record.result["noise"] = {"shape": [4, 128, 128]}  # 65,536 values: above the geometry-free limit (40,960)
    assert a1111_parse(format_infotext(record))["RNG"] == "GPU"  # nothing written; A1111 reads GPU
    record.recipe["rng"]["geometry"] = {"multiprocessors": 108, "max_threads_per_multiprocessor": 2048}
    assert a1111_parse(format_infotext(record))["RNG"] == "NV"  # the A100's threshold is 221,184
