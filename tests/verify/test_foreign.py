"""Regenerating other tools' images end to end on the tiny SD model.

Each "original" is made here with VANILLA diffusers: `StableDiffusionPipeline` loaded from the tiny folder, the mapped
scheduler built explicitly, and that tool's noise built independently, following the tool's own algorithm
(A1111's ``modules/rng.py`` ImageRNG, ComfyUI's ``prepare_noise``, InvokeAI's noise node) - never through
`diffusers_repro.interop.noise`. The file is saved with the tool's metadata; `reproduce` and ``verify --model`` must
then give the same pixels.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import sys

import PIL.Image
import PIL.PngImagePlugin
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
)

from diffusers_repro.generation import CudaRandnMode, EmulatedCudaGenerator, PhiloxGenerator
from diffusers_repro.interop import ForeignMetadataError
from diffusers_repro.verify import LimitExceededError, ReproductionError, reproduce

# The builders of files written the way each tool writes them live beside the readers' tests.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "interop"))
from foreign_files import comfyui_graph, invokeai_metadata  # noqa: E402

STEPS = 3
SIZE = 32  # 4 x 4 latents
PROMPT = "a fox in the snow"
NEGATIVE = "blurry"


@pytest.fixture(scope="module")
def vanilla(tiny_sd_path):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _model_keys(pipe):
    config = pipe.scheduler.config
    return {
        "num_train_timesteps": config.num_train_timesteps,
        "beta_start": config.beta_start,
        "beta_end": config.beta_end,
        "beta_schedule": config.beta_schedule,
        "prediction_type": config.prediction_type,
    }


def _original(pipe, scheduler, latents, generator, images=1, **call):
    pipe.scheduler = scheduler
    arguments = {"prompt": PROMPT, "negative_prompt": NEGATIVE, **call}
    return pipe(
        **arguments,
        num_inference_steps=STEPS,
        guidance_scale=7.0,
        width=SIZE,
        height=SIZE,
        num_images_per_prompt=images,
        latents=latents,
        generator=generator,
    ).images


def _save_png(image, path, chunks):
    info = PIL.PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    image.save(path, pnginfo=info)
    return path


def _infotext(seed, sampler, extra=""):
    return (
        f"{PROMPT}\nNegative prompt: {NEGATIVE}\nSteps: {STEPS}, Sampler: {sampler}, CFG scale: 7, Seed: {seed}, "
        f"Size: {SIZE}x{SIZE}, Model hash: 0123456789, Model: tiny-sd, RNG: CPU{extra}, Version: v1.10.1"
    )


# --------------------------------------------------------------------------------------------------------------------
# The tools' noise, built here from their algorithms


def _a1111_image_noise(seed, shape=(4, 4, 4)):
    """A1111 RNG: CPU: one generator per image, seeded with the image's seed, drawing (C, H, W); the sampler's later
    noise continues that generator."""
    generator = torch.Generator("cpu").manual_seed(seed)
    return torch.randn(shape, generator=generator), generator


def _a1111_slerp(val, low, high):
    # A1111's processing.slerp over (C, H, W) draws: norms along dim 1.
    low_norm = low / torch.norm(low, dim=1, keepdim=True)
    high_norm = high / torch.norm(high, dim=1, keepdim=True)
    dot = (low_norm * high_norm).sum(1)
    if dot.mean() > 0.9995:
        return low * val + high * (1 - val)
    omega = torch.acos(dot)
    so = torch.sin(omega)
    return (torch.sin((1.0 - val) * omega) / so).unsqueeze(1) * low + (torch.sin(val * omega) / so).unsqueeze(1) * high


# --------------------------------------------------------------------------------------------------------------------
# A1111


def test_a1111_euler_is_bitwise(vanilla, sd, tmp_path):
    noise, generator = _a1111_image_noise(1234)
    scheduler = EulerDiscreteScheduler(**_model_keys(vanilla))
    (image,) = _original(vanilla, scheduler, noise[None], [generator])
    path = _save_png(image, tmp_path / "euler.png", {"parameters": _infotext(1234, "Euler, Schedule type: Automatic")})
    result = reproduce(path, pipe=sd)
    assert result.verdict == "bitwise", result.summary
    assert result.source == "a1111" and result.pixels_equal is True and result.recipe.seed == 1234
    assert result.summary == "bitwise (a1111 recipe)"
    fields = [difference.field for difference in result.differences]
    # The model was given as a folder: its hash cannot be compared with A1111's checkpoint hash, and it says so.
    assert fields[0] == "model.hash" and "not checked" in result.differences[0].current
    assert "sampler" in fields


def test_a1111_euler_ancestral_with_ensd_is_bitwise(vanilla, sd, tmp_path):
    noise, _ = _a1111_image_noise(77)
    # ENSD: after the first draw A1111 makes each image's generator again, seeded seed + ENSD.
    later = torch.Generator("cpu").manual_seed(77 + 31337)
    scheduler = EulerAncestralDiscreteScheduler(**_model_keys(vanilla))
    (image,) = _original(vanilla, scheduler, noise[None], [later])
    path = _save_png(image, tmp_path / "euler-a.png", {"parameters": _infotext(77, "Euler a", ", ENSD: 31337")})
    result = reproduce(path, pipe=sd)
    assert result.verdict == "bitwise", result.summary
    # Without ENSD the later noise is other noise: the test would see it.
    (without,) = _original(vanilla, scheduler, noise[None], [_a1111_image_noise(77)[1]])
    assert not (torch.tensor(list(without.getdata())) == torch.tensor(list(image.getdata()))).all()


def test_a1111_dpmpp_2m_karras_old_form_is_bitwise(vanilla, sd, tmp_path):
    noise, generator = _a1111_image_noise(5)
    scheduler = DPMSolverMultistepScheduler(**_model_keys(vanilla), use_karras_sigmas=True)
    (image,) = _original(vanilla, scheduler, noise[None], [generator])
    path = _save_png(image, tmp_path / "dpmpp.png", {"parameters": _infotext(5, "DPM++ 2M Karras")})
    assert reproduce(path, pipe=sd).verdict == "bitwise"


def test_a1111_ddim_with_clip_skip_is_bitwise(vanilla, sd, tmp_path):
    noise, generator = _a1111_image_noise(9)
    # A1111's DDIM: CompVis' timesteps (every 1000 // steps from 1), no clipping, first alpha of training.
    scheduler = DDIMScheduler(**_model_keys(vanilla), steps_offset=1, set_alpha_to_one=False, clip_sample=False)
    # "Clip skip: 2": the penultimate layer through the final layer norm, for the prompt and the negative prompt.
    embeds = []
    for text in (PROMPT, NEGATIVE):
        ids = vanilla.tokenizer(
            [text],
            padding="max_length",
            max_length=vanilla.tokenizer.model_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        with torch.no_grad():
            hidden = vanilla.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
            embeds.append(vanilla.text_encoder.final_layer_norm(hidden))
    vanilla.scheduler = scheduler
    (image,) = vanilla(
        prompt_embeds=embeds[0],
        negative_prompt_embeds=embeds[1],
        num_inference_steps=STEPS,
        guidance_scale=7.0,
        width=SIZE,
        height=SIZE,
        latents=noise[None],
        generator=[generator],
    ).images
    path = _save_png(image, tmp_path / "ddim.png", {"parameters": _infotext(9, "DDIM", ", Clip skip: 2")})
    result = reproduce(path, pipe=sd)
    assert result.verdict == "bitwise", result.summary
    assert result.recipe.clip_skip == 1


def test_a1111_variation_seed_is_bitwise(vanilla, sd, tmp_path):
    seed, subseed, strength = 11, 222, 0.3
    noise, generator = _a1111_image_noise(seed)
    subnoise, _ = _a1111_image_noise(subseed)
    mixed = _a1111_slerp(strength, noise, subnoise)
    scheduler = EulerDiscreteScheduler(**_model_keys(vanilla))
    (image,) = _original(vanilla, scheduler, mixed[None], [generator])
    extra = f", Variation seed: {subseed}, Variation seed strength: {strength}"
    path = _save_png(image, tmp_path / "variation.png", {"parameters": _infotext(seed, "Euler", extra)})
    result = reproduce(path, pipe=sd)
    assert result.verdict == "bitwise", result.summary


def test_a1111_image_2_of_a_batch_is_bitwise(vanilla, sd, tmp_path):
    # A batch of 3 from seed 40: image i has seed 40 + i, its own generator, and was denoised in the batch.
    draws = [_a1111_image_noise(40 + index) for index in range(3)]
    scheduler = EulerAncestralDiscreteScheduler(**_model_keys(vanilla))
    latents = torch.stack([noise for noise, _ in draws])
    images = _original(vanilla, scheduler, latents, [generator for _, generator in draws], images=3)
    extra = ", Batch size: 3, Batch pos: 2"
    path = _save_png(images[2], tmp_path / "batch-2.png", {"parameters": _infotext(42, "Euler a", extra)})
    result = reproduce(path, pipe=sd)
    assert result.verdict == "bitwise", result.summary
    assert result.whole_batch is True and result.matched_batch_index == 2


# --------------------------------------------------------------------------------------------------------------------
# ComfyUI and InvokeAI


def test_comfyui_batch_of_3_with_unknown_index_says_which_image_matched(vanilla, sd, tmp_path):
    seed = 156680208700286
    graph = comfyui_graph(lora=False, clip_skip=-1, batch_size=3)
    graph["5"]["inputs"].update(width=SIZE, height=SIZE)
    graph["3"]["inputs"].update(seed=seed, steps=STEPS, cfg=7.0, sampler_name="euler", scheduler="normal")
    graph["6"]["inputs"]["text"], graph["7"]["inputs"]["text"] = PROMPT, NEGATIVE
    # ComfyUI's prepare_noise: the whole batch from one CPU generator seeded once.
    batch = torch.randn((3, 4, 4, 4), generator=torch.Generator("cpu").manual_seed(seed))
    scheduler = EulerDiscreteScheduler(**_model_keys(vanilla))
    images = _original(vanilla, scheduler, batch, torch.Generator("cpu").manual_seed(0), images=3)
    chunks = {"prompt": json.dumps(graph), "workflow": json.dumps({"nodes": [], "links": []})}
    path = _save_png(images[1], tmp_path / "ComfyUI_00002_.png", chunks)
    result = reproduce(path, pipe=sd)
    assert result.verdict == "bitwise", result.summary
    assert result.matched_batch_index == 1
    assert result.summary == "bitwise (comfyui recipe, image 1 of a batch of 3)"
    assert ("recipe.batch_index", "unknown (batch of 3)", "image 1 of 3 matched best") in result.differences


def _invokeai_original(pipe, scheduler_class, extras, seed, rand_device="cpu"):
    """An image as InvokeAI makes it, on vanilla diffusers: its get_scheduler (its keys over the model's whole
    scheduler config, as loaded from the model's folder), its noise node (a fresh generator of the seed: the CPU's, or
    torch's CUDA generator as PhiloxGenerator computes it), its denoise's start ``add_noise(zeros, noise, first
    timestep)`` and its schedulers' generator seeded ``seed ^ 0xFFFFFFFF`` on the denoising device (a GPU: the file
    does not say, and regeneration assumes one)."""
    model_config = DDIMScheduler.from_pretrained(pipe.name_or_path, subfolder="scheduler").config
    scheduler = scheduler_class.from_config({**model_config, **extras})
    if rand_device == "cpu":
        noise = torch.randn((1, 4, 4, 4), generator=torch.Generator("cpu").manual_seed(seed))
    else:
        noise = PhiloxGenerator(seed).randn((1, 4, 4, 4))
    later = EmulatedCudaGenerator(PhiloxGenerator(seed ^ 0xFFFFFFFF))
    scheduler.set_timesteps(STEPS)
    start = scheduler.add_noise(torch.zeros_like(noise), noise, scheduler.timesteps[:1])
    if scheduler.init_noise_sigma != 1.0:
        # The pipeline multiplies its latents by init_noise_sigma; InvokeAI starts from add_noise's values as they are.
        scheduler = type("InvokeAIStart", (scheduler_class,), {"init_noise_sigma": 1.0}).from_config(scheduler.config)
    with CudaRandnMode():
        (image,) = _original(pipe, scheduler, start, later, prompt="a fox ünïcödé 狐")
    return image


def _invokeai_file(image, path, **changes):
    data = invokeai_metadata(
        positive_prompt="a fox ünïcödé 狐",
        negative_prompt=NEGATIVE,
        width=SIZE,
        height=SIZE,
        steps=STEPS,
        cfg_scale=7.0,
        **changes,
    )
    return _save_png(image, path, {"invokeai_metadata": json.dumps(data)})


@pytest.mark.parametrize(
    ("name", "scheduler_class", "extras"),
    [
        ("ddim", DDIMScheduler, {}),
        ("dpmpp_2m", DPMSolverMultistepScheduler, {"use_karras_sigmas": False}),
        ("ddpm", DDPMScheduler, {}),  # draws later noise from the seed ^ 0xFFFFFFFF generator
    ],
)
@pytest.mark.parametrize("rand_device", ["cpu", "cuda"])
def test_invokeai_is_bitwise(vanilla, sd, tmp_path, name, scheduler_class, extras, rand_device):
    image = _invokeai_original(vanilla, scheduler_class, extras, 1234567, rand_device)
    path = _invokeai_file(image, tmp_path / "invokeai.png", scheduler=name, seed=1234567, rand_device=rand_device)
    result = reproduce(path, pipe=sd)
    assert result.verdict == "bitwise", result.summary
    assert result.source == "invokeai" and result.recipe.rng == rand_device
    assert not any("unit in the last place" in difference.recorded for difference in result.differences)
    assert (
        "note",
        "InvokeAI draws its noise in its model's dtype (float16 on a GPU unless set otherwise), which the "
        "file does not say: drawn here in the pipeline's, torch.float32",
        "",
    ) in result.differences


INVOKEAI_EULER_TOLERANCE = 1 / 255
"""Euler-type schedulers on a model whose scheduler config says "leading" spacing (the tiny model's): diffusers starts
from latents x sqrt(sigma_max**2 + 1), and 6 to 9 of the tiny image's 64 starting values (Euler, seeds 1234567, 1, 2,
3) have no float that makes InvokeAI's add_noise start; each is one unit in the last place off. Measured on the tiny
model, 3 steps: the pixels were equal for all 4 seeds (without the start, latents x init_noise_sigma: 9/255 off)."""


def test_invokeai_euler_on_leading_spacing_is_close_and_says_why(vanilla, sd, tmp_path):
    image = _invokeai_original(vanilla, EulerDiscreteScheduler, {"use_karras_sigmas": False}, 1234567)
    path = _invokeai_file(image, tmp_path / "invokeai.png", scheduler="euler", seed=1234567)
    result = reproduce(path, pipe=sd, tolerance=INVOKEAI_EULER_TOLERANCE)
    assert result.verdict in ("bitwise", "close"), result.summary
    assert result.max_abs_diff <= INVOKEAI_EULER_TOLERANCE
    notes = [difference.recorded for difference in result.differences if difference.field == "note"]
    assert any("8 of 64 starting values are one unit in the last place from it here" in note for note in notes), notes


def test_a_vanilla_pipeline_regenerates_too(vanilla, tmp_path):
    noise, generator = _a1111_image_noise(3)
    (image,) = _original(vanilla, EulerDiscreteScheduler(**_model_keys(vanilla)), noise[None], [generator])
    path = _save_png(image, tmp_path / "plain.png", {"parameters": _infotext(3, "Euler")})
    scheduler = vanilla.scheduler
    result = reproduce(path, pipe=vanilla)
    assert result.verdict == "bitwise" and result.provenance is None
    assert vanilla.scheduler is scheduler  # the pipeline's own scheduler is put back


# --------------------------------------------------------------------------------------------------------------------
# Unsupported, another model, hostile numbers


class _MustNotRun:
    def __call__(self, *args, **kwargs):
        raise AssertionError("the model ran")


def test_a_sampler_without_diffusers_scheduler_is_unsupported_and_nothing_runs(tmp_path):
    image = PIL.Image.new("RGB", (SIZE, SIZE))
    path = _save_png(image, tmp_path / "restart.png", {"parameters": _infotext(1, "DPM adaptive")})
    result = reproduce(path, pipe=_MustNotRun())
    assert result.verdict == "unsupported" and result.image is None and result.bitwise_equal is False
    assert result.summary.startswith("unsupported: A1111 sampler 'DPM adaptive' has no diffusers equivalent")
    assert result.to_dict()["source"] == "a1111"


def test_hires_fix_is_unsupported(tmp_path):
    extra = ", Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent, Denoising strength: 0.5"
    path = _save_png(
        PIL.Image.new("RGB", (SIZE, SIZE)), tmp_path / "hires.png", {"parameters": _infotext(1, "Euler", extra)}
    )
    assert reproduce(path).verdict == "unsupported"


def test_another_model_is_different_and_the_model_hash_mismatch_is_named(vanilla, sd_pipe, tmp_path):
    right, wrong = tmp_path / "right.safetensors", tmp_path / "wrong.safetensors"
    right.write_bytes(b"the checkpoint the image was made with")
    wrong.write_bytes(b"another checkpoint")
    noise, generator = _a1111_image_noise(8)
    (image,) = _original(vanilla, EulerDiscreteScheduler(**_model_keys(vanilla)), noise[None], [generator])
    infotext = _infotext(8, "Euler").replace("0123456789", hashlib.sha256(right.read_bytes()).hexdigest()[:10])
    path = _save_png(image, tmp_path / "model.png", {"parameters": infotext})
    with torch.no_grad():
        sd_pipe.unet.conv_out.bias.add_(0.5)
    result = reproduce(path, pipe=sd_pipe, checkpoint=wrong)
    assert result.verdict == "different"
    field, recorded, current = result.differences[0]
    assert field == "model.hash" and recorded.startswith(infotext.split("Model hash: ")[1][:10])
    assert current == f"{hashlib.sha256(b'another checkpoint').hexdigest()[:10]} (wrong.safetensors): another model"
    assert reproduce(path, pipe=sd_pipe, checkpoint=right).differences[0].field != "model.hash"


@pytest.mark.parametrize(
    ("extra", "error", "message"),
    [
        ("", ForeignMetadataError, "'Steps' must be an integer from 1 to 10000, got 1000000000"),
        ("size", ForeignMetadataError, "'Size' width must be an integer from 1 to 65536, got 100000"),
        ("steps5000", LimitExceededError, "steps = 5000, above the replay limit max_steps=1000"),
        ("big", LimitExceededError, "width x height = 8192x8192 (67108864 pixels), above the replay limit max_pixels"),
        ("batch", LimitExceededError, "batch_size = 1000000 images in one call, above the replay limit"),
    ],
)
def test_hostile_numbers_are_refused_before_any_model_runs(tmp_path, extra, error, message):
    infotext = _infotext(1, "Euler")
    if extra == "":
        infotext = infotext.replace(f"Steps: {STEPS}", "Steps: 1000000000")
    elif extra == "size":
        infotext = infotext.replace(f"Size: {SIZE}x{SIZE}", "Size: 100000x100000")
    elif extra == "steps5000":
        infotext = infotext.replace(f"Steps: {STEPS}", "Steps: 5000")
    elif extra == "big":
        infotext = infotext.replace(f"Size: {SIZE}x{SIZE}", "Size: 8192x8192")
    else:
        infotext += ", Batch size: 1000000, Batch pos: 3"
    path = _save_png(PIL.Image.new("RGB", (SIZE, SIZE)), tmp_path / "hostile.png", {"parameters": infotext})
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        reproduce(path, pipe=_MustNotRun())


def test_comfyui_batch_above_the_limit_is_refused(tmp_path):
    graph = comfyui_graph(lora=False, batch_size=100)
    path = _save_png(PIL.Image.new("RGB", (64, 48)), tmp_path / "c.png", {"prompt": json.dumps(graph)})
    with pytest.raises(LimitExceededError, match="batch_size = 100 images in one call"):
        reproduce(path, pipe=_MustNotRun())


def test_a_foreign_file_without_a_pipeline_is_refused(tmp_path):
    path = _save_png(PIL.Image.new("RGB", (SIZE, SIZE)), tmp_path / "a.png", {"parameters": _infotext(1, "Euler")})
    with pytest.raises(ReproductionError, match="is a a1111 image with no diffusers-repro record"):
        reproduce(path)


# --------------------------------------------------------------------------------------------------------------------
# The command line


def _run(capsys, *argv):
    from diffusers_repro.cli import main

    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _folder_of_foreign_files(vanilla, folder, model_name="tiny-sd"):
    folder.mkdir()
    noise, generator = _a1111_image_noise(21)
    (image,) = _original(vanilla, EulerDiscreteScheduler(**_model_keys(vanilla)), noise[None], [generator])
    infotext = _infotext(21, "Euler").replace("Model: tiny-sd", f"Model: {model_name}")
    _save_png(image, folder / "a1111.png", {"parameters": infotext})
    seed = 5
    graph = comfyui_graph(lora=False, clip_skip=-1, batch_size=2)
    graph["4"]["inputs"]["ckpt_name"] = f"{model_name}.safetensors"
    graph["5"]["inputs"].update(width=SIZE, height=SIZE)
    graph["3"]["inputs"].update(seed=seed, steps=STEPS, cfg=7.0, sampler_name="euler", scheduler="normal")
    graph["6"]["inputs"]["text"], graph["7"]["inputs"]["text"] = PROMPT, NEGATIVE
    batch = torch.randn((2, 4, 4, 4), generator=torch.Generator("cpu").manual_seed(seed))
    images = _original(vanilla, EulerDiscreteScheduler(**_model_keys(vanilla)), batch, None, images=2)
    _save_png(images[0], folder / "comfyui.png", {"prompt": json.dumps(graph)})
    _save_png(PIL.Image.new("RGB", (SIZE, SIZE)), folder / "restart.png", {"parameters": _infotext(1, "Restart")})


def test_verify_model_regenerates_other_tools_files_and_counts_unsupported_apart(
    capsys, vanilla, tiny_sd_path, tmp_path
):
    _folder_of_foreign_files(vanilla, tmp_path / "images")
    code, out, err = _run(capsys, "verify", tmp_path / "images", "--model", tiny_sd_path)
    assert code == 1, err
    lines = out.splitlines()
    assert lines[0] == f"{tmp_path / 'images' / 'a1111.png'}: bitwise (a1111 recipe)"
    assert f"{tmp_path / 'images' / 'comfyui.png'}: bitwise (comfyui recipe, image 0 of a batch of 2)" in lines
    assert any(
        line.startswith(f"{tmp_path / 'images' / 'restart.png'}: unsupported: A1111 sampler 'Restart'")
        for line in lines
    )
    assert lines[-1] == (
        "3 images: 2 bitwise, 0 close, 0 different, 1 unsupported; FAILED: 1 unsupported (another tool's recipe that "
        "diffusers cannot run: see their lines)"
    )
    code, out, _ = _run(capsys, "verify", "--json", tmp_path / "images", "--model", tiny_sd_path)
    summary = json.loads(out.splitlines()[-1])["summary"]
    assert summary == {
        "images": 3,
        "bitwise": 2,
        "close": 0,
        "different": 0,
        "refused": 0,
        "tampered": 0,
        "unsupported": 1,
        "failed": 1,
        "ok": False,
    }
    image = json.loads(out.splitlines()[0])
    assert image["source"] == "a1111" and image["recipe"]["sampler"] == "Euler" and image["verdict"] == "bitwise"


def test_verify_model_regenerates_invokeai_gpu_noise_and_refuses_large_gpu_noise_without_a_geometry(
    capsys, vanilla, tiny_sd_path, tmp_path
):
    folder = tmp_path / "invokeai"
    folder.mkdir()
    image = _invokeai_original(vanilla, DPMSolverMultistepScheduler, {"use_karras_sigmas": True}, 77, "cuda")
    _invokeai_file(image, folder / "gpu.png", scheduler="dpmpp_2m_k", seed=77, rand_device="cuda")
    # 832 x 832: 43,264 latent values per image, laid out by the GPU's geometry, which the file does not say.
    data = invokeai_metadata(width=832, height=832, steps=STEPS, scheduler="euler", seed=5, rand_device="cuda")
    _save_png(PIL.Image.new("RGB", (832, 832)), folder / "large.png", {"invokeai_metadata": json.dumps(data)})
    code, out, err = _run(capsys, "verify", folder, "--model", tiny_sd_path)
    assert code == 1, err
    lines = out.splitlines()
    assert f"{folder / 'gpu.png'}: bitwise (invokeai recipe)" in lines
    assert any(
        line.startswith(f"{folder / 'large.png'}: refused:")
        and "InvokeAI's GPU noise (rand_device: cuda) draws 43264 values per image with torch's CUDA generator" in line
        and "pass geometry=" in line
        for line in lines
    ), out
    assert lines[-1].startswith("2 images: 1 bitwise, 0 close, 0 different, 1 refused; FAILED: 1 refused")


def test_verify_models_finds_a_diffusers_folder_by_name_and_never_follows_links_out(
    capsys, vanilla, tiny_sd_path, tmp_path
):
    import shutil

    _folder_of_foreign_files(vanilla, tmp_path / "images")
    (tmp_path / "images" / "restart.png").unlink()
    models = tmp_path / "models"
    models.mkdir()
    (models / "tiny-sd").symlink_to(tiny_sd_path, target_is_directory=True)
    code, out, _ = _run(capsys, "verify", tmp_path / "images", "--models", models)
    assert code == 1 and out.count("refused: no model in --models") == 2
    (models / "tiny-sd").unlink()
    shutil.copytree(tiny_sd_path, models / "tiny-sd")
    code, out, err = _run(capsys, "verify", tmp_path / "images", "--models", models)
    assert code == 0, out + err
    assert out.splitlines()[-1] == "2 images: 2 bitwise, 0 close, 0 different; OK"


def test_verify_refuses_hostile_numbers_before_loading_a_model(capsys, tmp_path):
    folder = tmp_path / "hostile"
    folder.mkdir()
    infotext = _infotext(1, "Euler").replace(f"Steps: {STEPS}", "Steps: 5000")
    _save_png(PIL.Image.new("RGB", (SIZE, SIZE)), folder / "steps.png", {"parameters": infotext})
    graph = comfyui_graph(lora=False, batch_size=4096)
    _save_png(PIL.Image.new("RGB", (64, 48)), folder / "batch.png", {"prompt": json.dumps(graph)})
    # A model that cannot load: reaching it would be a usage error, not a refusal.
    code, out, err = _run(capsys, "verify", folder, "--model", tmp_path / "no-such-model")
    assert code == 1, err
    assert "batch.png: refused: the comfyui recipe asks for batch_size = 4096 images in one call" in out
    assert "steps.png: refused: the a1111 recipe asks for steps = 5000, above the replay limit max_steps=1000" in out
    assert out.splitlines()[-1].startswith("2 images: 0 bitwise, 0 close, 0 different, 2 refused; FAILED: 2 refused")


def test_verify_single_file_checkpoint_without_config_says_what_is_needed(capsys, vanilla, tmp_path):
    _folder_of_foreign_files(vanilla, tmp_path / "images")
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"not really a checkpoint")
    code, _, err = _run(capsys, "verify", tmp_path / "images" / "a1111.png", "--model", checkpoint)
    assert code == 2 and "is a single-file checkpoint: loading it offline needs --model-config FOLDER" in err


def test_a_prompt_past_clips_window_is_named_among_the_differences(vanilla, sd, tmp_path):

    long = " ".join(["fox"] * 100)  # 100 tokens: A1111 encodes two chunks, diffusers truncates to 75
    noise, generator = _a1111_image_noise(3)
    euler = EulerDiscreteScheduler(**_model_keys(vanilla))
    (image,) = _original(vanilla, euler, noise[None], [generator], prompt=long)
    infotext = _infotext(3, "Euler").replace(PROMPT, long, 1)
    path = _save_png(image, tmp_path / "long.png", {"parameters": infotext})
    result = reproduce(path, pipe=sd)
    # Made here with diffusers (truncated), so bitwise; an A1111 file would differ, and the difference says why.
    assert result.verdict == "bitwise"
    prompt = [difference for difference in result.differences if difference.field == "prompt"]
    assert len(prompt) == 1 and "longer than 75 tokens" in prompt[0].recorded


def test_checkpoint_hashes_refuse_what_is_not_a_regular_file(tmp_path):
    import os

    from diffusers_repro.verify.foreign import checkpoint_hashes

    # A named pipe swapped in after the folder was listed would block the read forever.
    os.mkfifo(tmp_path / "pipe.safetensors")
    with pytest.raises(ValueError, match="is not a regular file"):
        checkpoint_hashes(tmp_path / "pipe.safetensors")
    (tmp_path / "model.safetensors").write_bytes(b"weights")
    assert checkpoint_hashes(tmp_path / "model.safetensors")["sha256"] == hashlib.sha256(b"weights").hexdigest()


def test_verify_goes_on_past_a_file_whose_metadata_cannot_be_read(capsys, tmp_path, monkeypatch, tiny_sd_path):
    import diffusers_repro.interop as interop

    folder = tmp_path / "files"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        _save_png(PIL.Image.new("RGB", (SIZE, SIZE)), folder / name, {"parameters": _infotext(1, "DPM adaptive")})
    real = interop.recipe_from_image_file

    def slip(image_file):
        if image_file.path.name == "a.png":
            raise OverflowError("a reader's slip")
        return real(image_file)

    monkeypatch.setattr(interop, "recipe_from_image_file", slip)
    code, out, _ = _run(capsys, "verify", str(folder), "--model", str(tiny_sd_path))
    assert "a.png: refused: its metadata could not be read: OverflowError: a reader's slip" in out
    assert "b.png: unsupported" in out and code == 1


def test_a_file_of_ours_whose_infotext_or_other_chunks_disagree_reproduces_with_a_warning(capsys, sd, tmp_path):
    # What other tools show of a file is its infotext (and their own chunks, which they prefer): an edited infotext
    # reproduces bitwise from the record, and verify says what the file shows instead.
    from diffusers_repro.files import read_image

    path = sd("a fox", seed=3, num_inference_steps=2, height=SIZE, width=SIZE).save(tmp_path / "ours")[0]
    ours = read_image(path)
    chunks = dict(ours.metadata)
    chunks["parameters"] = (
        chunks["parameters"].replace("a fox", "a photo of the president", 1).replace("Seed: 3", "Seed: 999", 1)
    )
    chunks["prompt"] = json.dumps(comfyui_graph())
    edited = _save_png(ours.image, tmp_path / "edited.png", chunks)
    result = reproduce(edited, pipe=sd)
    assert result.verdict == "bitwise"
    assert [(d.field, d.recorded, d.current) for d in result.metadata_warnings] == [
        ("file.infotext.prompt", "a fox", "a photo of the president"),
        ("file.infotext.seed", 3, 999),
        ("file.other_tools", "none", "ComfyUI 'prompt' metadata chunk, not covered by the record"),
    ]
    assert reproduce(path, pipe=sd).metadata_warnings == []
    code, out, _ = _run(capsys, "verify", edited)
    assert code == 0
    assert "    warning: file.infotext.seed: record 3, file 999" in out.splitlines()
