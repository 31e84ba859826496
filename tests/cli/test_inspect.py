"""``diffusers-repro inspect`` of any file: other tools' recipes (text, ``--json``), ``--as-code`` scripts made from
hostile metadata, and our own files' output as it was before other tools' files were read."""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
import tokenize

import numpy as np
import pytest
import torch
from interop.foreign_files import (
    a1111_unicode_comment,
    comfyui_graph,
    comfyui_png,
    invokeai_metadata,
    invokeai_png,
    jpeg_with_user_comment,
    png_with_chunks,
)

from diffusers_repro.cli import main
from diffusers_repro.files import file_credentials, read_image
from diffusers_repro.interop import read_recipe
from diffusers_repro.interop.code import MODEL_PLACEHOLDER
from diffusers_repro.verify import reproduce

A1111_INFOTEXT = (
    "a fox (red:1.2), <lora:fox:0.7>\n"
    "Negative prompt: blurry\n"
    "Steps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1234, Size: 64x48, "
    'Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, Lora hashes: "fox: abcdef123456", '
    "Version: v1.10.1"
)
HOSTILE = "a \"\"\" b\n''' c'); import os; os.system('x\\ \r\x1b[2J\u202e\u2028 # coding: utf-7 +AAo-import os"


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def write(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.fixture
def foreign_files(tmp_path):
    return {
        "a1111": write(tmp_path, "a1111.png", png_with_chunks({"parameters": A1111_INFOTEXT})),
        "a1111-jpeg": write(
            tmp_path, "a1111.jpg", jpeg_with_user_comment(a1111_unicode_comment(A1111_INFOTEXT), size=(64, 48))
        ),
        "comfyui": write(tmp_path, "comfyui.png", comfyui_png(comfyui_graph(batch_size=3))),
        "invokeai": write(tmp_path, "invokeai.png", invokeai_png(invokeai_metadata())),
    }


# --------------------------------------------------------------------------------------------------------------------
# Other tools' files


@pytest.mark.parametrize("kind", ["a1111", "a1111-jpeg"])
def test_an_a1111_file_shows_its_recipe(capsys, foreign_files, kind):
    code, out, err = run(capsys, "inspect", foreign_files[kind])
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1:12] == [
        "source:          AUTOMATIC1111/Forge/SD.Next (a1111), version 'v1.10.1'",
        "prompt:          'a fox (red:1.2), <lora:fox:0.7>'",
        "negative prompt: 'blurry'",
        "seed:            1234",
        "steps:           20",
        "guidance:        7.0",
        "size:            64x48 (the image is 64x48)",
        "sampler:         Sampler 'DPM++ 2M', Schedule type 'Karras' (AUTOMATIC1111's names)",
        'scheduler:       DPMSolverMultistepScheduler, config {"use_karras_sigmas": true}',
        "model:           'v1-5-pruned-emaonly', hash '6ce0161689' (A1111's: the first 10 hex digits of the "
        "checkpoint file's sha256)",
        "lora:            'fox', weight 0.7, hash 'abcdef123456'",
    ]
    assert (
        "clip skip:       1 (diffusers' numbering: clip_skip=N skips the last N layers; A1111's 'Clip skip: 2')" in out
    )
    assert "noise rng:       GPU: torch.Generator('cuda')" in out
    assert "blockers:        3: what stands between this recipe and an exact rerun" in out
    assert "  - LoRA 'fox' is applied; a plain diffusers call does not load it (load_lora_weights)" in lines
    assert "  - no 'RNG' field: A1111 draws the starting noise on the GPU (torch.Generator('cuda'))" in lines
    assert lines[-1] == "credentials:     unsigned (no Content Credentials)"


def test_comfyui_and_invokeai_files_show_their_recipes(capsys, foreign_files):
    code, out, _ = run(capsys, "inspect", foreign_files["comfyui"])
    assert code == 0
    assert "source:          ComfyUI (comfyui)" in out
    assert "prompt:          'a fox in the snow,\\nwinter'" in out  # the newline escaped, on one line
    assert "seed:            156680208700286" in out
    assert "sampler:         sampler_name 'dpmpp_2m', scheduler 'karras' (ComfyUI's names)" in out
    assert "model:           'v1-5-pruned-emaonly.safetensors'" in out
    assert "batch:           one image of a batch of 3; the file does not say which" in out
    assert "noise rng:       CPU: torch.Generator('cpu')" in out

    code, out, _ = run(capsys, "inspect", foreign_files["invokeai"])
    assert code == 0
    assert "source:          InvokeAI (invokeai), version '5.6.0'" in out
    assert "prompt:          'a fox in the snow, ünïcödé 狐'" in out
    assert "sampler:         scheduler 'dpmpp_2m_k' (InvokeAI's names)" in out
    assert "(InvokeAI's BLAKE3 of the model's files), base 'sd-1'" in out
    assert "blockers:        none known" in out


@pytest.mark.parametrize("kind", ["a1111", "a1111-jpeg", "comfyui", "invokeai"])
def test_json_prints_the_recipe(capsys, foreign_files, kind):
    code, out, _ = run(capsys, "inspect", "--json", foreign_files[kind])
    assert code == 0 and out.isascii()
    assert json.loads(out) == json.loads(json.dumps(read_recipe(foreign_files[kind]).to_dict()))


def test_an_unknown_comfyui_node_is_a_blocker(capsys, tmp_path):
    path = write(tmp_path, "c.png", comfyui_png(comfyui_graph(unknown=True)))
    code, out, _ = run(capsys, "inspect", path)
    assert code == 0
    assert "seed:            not in the file" in out
    assert "  - ComfyUI node 12 (ImageSharpen) is on the path from the save node" in out


def test_malformed_foreign_metadata_is_one_line_naming_the_field(capsys, tmp_path):
    path = write(
        tmp_path, "bad.png", png_with_chunks({"parameters": "a fox\nSteps: 20, Sampler: Euler, CFG scale: 7"})
    )
    code, out, err = run(capsys, "inspect", path)
    assert code == 2 and out == ""
    assert err.strip().splitlines() == [f"diffusers-repro: error: {path}: the A1111 infotext has no 'Seed' field"]


def test_hostile_text_is_escaped_and_long_text_cut(capsys, tmp_path):
    long_prompt = "x" * 5000
    infotext = f"{HOSTILE}\n{long_prompt}\nNegative prompt: \x1b]0;title\x07\nSteps: 2, Sampler: \u202eEuler, Seed: 1"
    path = write(tmp_path, "h.png", png_with_chunks({"parameters": infotext}))
    code, out, _ = run(capsys, "inspect", path)
    assert code == 0
    assert "\x1b" not in out and "\u202e" not in out and "\u2028" not in out and "\r" not in out and "\x07" not in out
    lines = out.splitlines()
    prompt = next(line for line in lines if line.startswith("prompt:"))
    assert prompt.endswith(f"... ({len(HOSTILE) + 1 + 5000} characters; --json prints all of them)")
    assert len(prompt) < 2300
    assert "negative prompt: '\\x1b]0;title\\x07'" in lines
    assert "sampler:         Sampler '\\u202eEuler', Schedule type not in the file (AUTOMATIC1111's names)" in lines
    # Every line is a field of the recipe or a blocker/note: nothing from the file started a line of its own.
    assert all(line[:17].rstrip().endswith(":") or line.startswith("  - ") for line in lines), out


@pytest.mark.parametrize("argv", [["{path}"], ["--json", "{path}"], ["--as-code", "{path}"]])
def test_foreign_files_import_neither_torch_nor_diffusers(tmp_path, argv):
    path = write(tmp_path, "a.png", png_with_chunks({"parameters": A1111_INFOTEXT}))
    script = (
        "import sys\n"
        "from diffusers_repro.cli import main\n"
        "code = main(sys.argv[1:])\n"
        "print('HEAVY', sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n"
        "sys.exit(code)\n"
    )
    args = ["inspect", *(part.format(path=path) for part in argv)]
    completed = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.splitlines()[-1] == "HEAVY []"


def test_json_and_as_code_exclude_each_other(capsys, foreign_files):
    code, _, err = run(capsys, "inspect", "--json", "--as-code", foreign_files["a1111"])
    assert code == 2 and "not allowed with argument" in err


# --------------------------------------------------------------------------------------------------------------------
# --as-code: code made from hostile metadata stays what it looks like


def _parsed(code: str) -> tuple[ast.Module, list[str]]:
    tree = ast.parse(code)
    strings = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    return tree, strings


def _assert_only_our_code(code: str, tree: ast.Module) -> None:
    # The first two lines are fixed (Python reads a coding declaration there).
    assert code.splitlines()[:2] == [
        "# Made by `diffusers-repro inspect --as-code` from the metadata of an image file.",
        "# Every value below was read from that file: look it over before you run it.",
    ]
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    assert "os" not in names and "__import__" not in names and "eval" not in names and "exec" not in names
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    modules |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert modules <= {
        "diffusers",
        "diffusers_repro",
        "diffusers_repro.generation",
        "diffusers_repro.interop",
        "torch",
    }
    # Comments stay on their own lines: every comment token starts where our generator put one.
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type == tokenize.COMMENT:
            assert token.string.isprintable()


def test_as_code_of_hostile_a1111_and_comfyui_files_parses_to_the_same_strings(capsys, tmp_path):
    negative = 'n\'); os.system(\'y"""\n'
    infotext = (
        f"{HOSTILE}\nNegative prompt: {negative}\n"
        'Steps: 2, Sampler: x\'); import os #, Seed: 3, Size: 64x64, Model: "evil\\")\\n#", Version: "v\');"'
    )
    a1111 = write(tmp_path, "a.png", png_with_chunks({"parameters": infotext}))
    graph = comfyui_graph()
    graph["6"]["inputs"]["text"] = HOSTILE + "\x00"
    graph["4"]["inputs"]["ckpt_name"] = "m\nimport os\r#"
    graph["10"]["inputs"]["lora_name"] = "l\u2028import os"
    comfy = write(tmp_path, "c.png", comfyui_png(graph))
    for path in (a1111, comfy):
        recipe = read_recipe(path)
        code, out, _ = run(capsys, "inspect", "--as-code", path)
        assert code == 0
        tree, strings = _parsed(out)
        _assert_only_our_code(out, tree)
        assert recipe.prompt in strings and (recipe.negative_prompt or "") in strings
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                assert ast.literal_eval(ast.unparse(node)) == node.value
    assert read_recipe(a1111).prompt.startswith(HOSTILE)
    # A lone surrogate is no text (no tokenizer takes it): refused when read, naming the field.
    graph["6"]["inputs"]["text"] = "a fox \ud800"
    surrogate = write(tmp_path, "s.png", comfyui_png(graph))
    code, _, err = run(capsys, "inspect", "--as-code", surrogate)
    assert code == 2 and "text of node 6 holds a lone surrogate, which is not text" in err


def test_as_code_of_our_file_with_a_hostile_prompt(capsys, tmp_path, sd):
    prompt = HOSTILE.replace("\r", "")
    path = sd(prompt, negative_prompt="'''\"", seed=3, num_inference_steps=1).save(tmp_path)[0]
    code, out, _ = run(capsys, "inspect", "--as-code", path)
    assert code == 0
    tree, strings = _parsed(out)
    _assert_only_our_code(out, tree)
    assert prompt in strings and "'''\"" in strings


def _exec_snippet(code: str, model_path, monkeypatch, tmp_path) -> dict:
    if model_path is not None:
        assert code.count(repr(MODEL_PLACEHOLDER)) == 1
        code = code.replace(repr(MODEL_PLACEHOLDER), repr(str(model_path)))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    threads = torch.get_num_threads()
    try:
        exec(compile(code, "snippet.py", "exec"), namespace)  # noqa: S102 - the code under test
    finally:
        torch.set_num_threads(threads)
    return namespace


@pytest.mark.parametrize(
    ("sampler", "rng"), [("Sampler: Euler a", "RNG: CPU, "), ("Sampler: DPM++ 2M, Schedule type: Karras", "")]
)
def test_as_code_of_an_a1111_file_makes_what_diffusers_makes_with_its_noise(
    capsys, tmp_path, monkeypatch, tiny_sd_path, sampler, rng
):
    from diffusers import DPMSolverMultistepScheduler, EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    from diffusers_repro.interop import a1111_noise

    infotext = f"a red fox\nNegative prompt: blurry\nSteps: 2, {sampler}, CFG scale: 6.5, Seed: 42, Size: 64x64, {rng}"
    path = write(tmp_path, "a.png", png_with_chunks({"parameters": infotext.rstrip(", ")}, size=(64, 64)))
    code, out, _ = run(capsys, "inspect", "--as-code", path)
    assert code == 0
    made = _exec_snippet(out, tiny_sd_path, monkeypatch, tmp_path)["images"]
    assert (tmp_path / "regenerated-0.png").exists()

    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd_path)
    pipe.set_progress_bar_config(disable=True)
    # The sampler as A1111 runs it: the model's betas, the scheduler class's own spacing (not the folder's "leading").
    betas = {key: pipe.scheduler.config[key] for key in ("beta_start", "beta_end", "beta_schedule")}
    if rng:
        # A1111's CPU noise built here from its rules: the seed's first draw, later noise from the same generator.
        pipe.scheduler = EulerAncestralDiscreteScheduler(**betas)
        latents = torch.randn((1, 4, 8, 8), generator=torch.Generator("cpu").manual_seed(42))
        later = torch.Generator("cpu").manual_seed(42)
        torch.randn((4, 8, 8), generator=later)
        context, generator = torch.no_grad(), [later]
    else:
        pipe.scheduler = DPMSolverMultistepScheduler(**betas, use_karras_sigmas=True)
        noise = a1111_noise((1, 4, 8, 8), [42], rng="gpu")
        latents, generator, context = noise.latents, noise.generator, noise.context()
    with context:
        expected = pipe(
            "a red fox",
            negative_prompt="blurry",
            num_inference_steps=2,
            guidance_scale=6.5,
            width=64,
            height=64,
            latents=latents,
            generator=generator,
        ).images
    assert len(made) == 1
    np.testing.assert_array_equal(np.asarray(made[0]), np.asarray(expected[0]))


@pytest.mark.parametrize(("batch_size", "sampler", "clip_skip"), [(1, "dpmpp_2m", -1), (3, "euler_ancestral", -2)])
def test_as_code_of_a_comfyui_file_makes_what_verify_regenerates(
    capsys, tmp_path, monkeypatch, tiny_sd_path, sd, batch_size, sampler, clip_skip
):
    # A batch of 1 says which image the file is; a batch of 3 does not (verify tries each, the script makes all).
    graph = comfyui_graph(lora=False, clip_skip=clip_skip, batch_size=batch_size)
    graph["5"]["inputs"].update(width=32, height=32)
    graph["3"]["inputs"].update(seed=7, steps=2, cfg=6.0, sampler_name=sampler, scheduler="normal")
    path = write(tmp_path, "ComfyUI_00001_.png", comfyui_png(graph, size=(32, 32)))
    result = reproduce(path, pipe=sd)
    code, out, _ = run(capsys, "inspect", "--as-code", path)
    assert code == 0
    made = _exec_snippet(out, tiny_sd_path, monkeypatch, tmp_path)["images"]
    assert len(made) == batch_size and (tmp_path / f"regenerated-{batch_size - 1}.png").exists()
    index = result.matched_batch_index if batch_size > 1 else 0
    np.testing.assert_array_equal(np.asarray(made[index]), np.asarray(result.image))
    if batch_size > 1:
        # The other images of the batch are verify's too: a file holding one of them matches it bitwise.
        other = (index + 1) % batch_size
        made[other].save(tmp_path / "ComfyUI_00002_.png", pnginfo=_comfyui_info(graph))
        again = reproduce(tmp_path / "ComfyUI_00002_.png", pipe=sd)
        assert again.verdict == "bitwise" and again.matched_batch_index == other


def _comfyui_info(graph):
    import PIL.PngImagePlugin

    info = PIL.PngImagePlugin.PngInfo()
    info.add_text("prompt", json.dumps(graph))
    return info


@pytest.mark.parametrize(
    ("scheduler", "rand_device"), [("euler", "cpu"), ("dpmpp_2m_k", "cpu"), ("ddim", "cuda"), ("euler_a", "cuda")]
)
def test_as_code_of_an_invokeai_file_makes_what_verify_regenerates(
    capsys, tmp_path, monkeypatch, tiny_sd_path, sd, scheduler, rand_device
):
    data = invokeai_metadata(width=32, height=32, steps=2, scheduler=scheduler, rand_device=rand_device, seed=99)
    path = write(tmp_path, "invokeai.png", invokeai_png(data, size=(32, 32)))
    code, out, _ = run(capsys, "inspect", "--as-code", path)
    assert code == 0
    assert f"    rand_device={rand_device!r}," in out and "Blockers: what stands between" in out
    assert "none known." in out
    made = _exec_snippet(out, tiny_sd_path, monkeypatch, tmp_path)["images"]
    result = reproduce(path, pipe=sd)
    assert result.image is not None
    np.testing.assert_array_equal(np.asarray(made[0]), np.asarray(result.image))
    # A file holding those pixels regenerates bitwise: verify and the script make InvokeAI's image the same way.
    made[0].save(tmp_path / "again.png", pnginfo=_invokeai_info(data))
    assert reproduce(tmp_path / "again.png", pipe=sd).verdict == "bitwise"


def _invokeai_info(data):
    import PIL.PngImagePlugin

    info = PIL.PngImagePlugin.PngInfo()
    info.add_text("invokeai_metadata", json.dumps(data))
    return info


def test_as_code_of_our_file_remakes_its_pixels(capsys, tmp_path, monkeypatch, sd):
    path = sd("a fox", seed=11, num_inference_steps=2).save(tmp_path / "out")[0]
    code, out, _ = run(capsys, "inspect", "--as-code", path)
    assert code == 0
    assert "from diffusers_repro import reproducible" in out and "    seed=11," in out
    made = _exec_snippet(out, None, monkeypatch, tmp_path)["images"]
    np.testing.assert_array_equal(np.asarray(made[0]), np.asarray(read_image(path).image.convert("RGB")))


# --------------------------------------------------------------------------------------------------------------------
# Our own files: the output before other tools' files were read, plus one line


# Stored from `diffusers-repro inspect` before this change (main at 6fb0906), with the parts that depend on the
# machine, the tiny model's files and the signing identity as fields.
OUR_OUTPUT = """\
file:            {path}
prompt:          'a "fox"\\nü\\x1b[31m'
negative prompt: 'blurry'
seed:            7 (from seed)
pipeline:        StableDiffusionPipeline
model:           {model_path} (local)
weights:         text_encoder {text_encoder}, tokenizer {tokenizer}, unet {unet}, vae {vae}
scheduler:       DDIMScheduler
steps:           2
guidance:        7.5
size:            64x64
batch:           image 0 of 1 (seeds [7]); batch-invariant: no
device:          cpu ({device_name}), dtype torch.float32, {threads} torch thread(s)
determinism:     not full
versions:        {versions}
output digest:   {output_digest}
noise digest:    {noise_digest}
pixels:          intact (they match the digest written with them)
"""


def test_our_files_show_what_they_showed_plus_the_a1111_sampler(capsys, tmp_path, sd):
    path = sd('a "fox"\nü\x1b[31m', negative_prompt="blurry", seed=7, num_inference_steps=2).save(tmp_path)[0]
    image_file = read_image(path)
    record = image_file.provenance
    components = record.recipe["model"]["components"]
    env = record.environment
    expected = OUR_OUTPUT.format(
        path=path,
        model_path=record.recipe["model"]["path"],
        **{name: components[name]["weights_digest"][:19] + "..." for name in components},
        device_name=env["device_name"],
        threads=env["torch_num_threads"],
        versions=", ".join(f"{name} {version}" for name, version in env["versions"].items() if version),
        output_digest=record.result["output_digest"],
        noise_digest=record.result["noise_digest"],
    )
    credentials = file_credentials(image_file, ())
    expected += f"credentials:     {credentials.summary}\n"
    if credentials.generator:
        expected += f"made by:         {credentials.generator} ({credentials.action})\n"
    if credentials.timestamp:
        expected += f"time-stamp:      {credentials.timestamp} (RFC 3161)\n"
    if credentials.disclosure:
        expected += f"ai disclosure:   {credentials.disclosure}\n"

    code, out, _ = run(capsys, "inspect", path)
    assert code == 0
    lines = out.splitlines(keepends=True)
    # The one new line, right after the scheduler's: what A1111 calls it (the tiny model's DDIM, steps_offset=1).
    assert (
        lines.pop(8)
        == "a1111 sampler:   DDIM, schedule type Automatic (A1111's names for this scheduler and config)\n"
    )
    assert "".join(lines) == expected

    code, out, _ = run(capsys, "inspect", "--json", path)
    assert code == 0 and out == record.to_json(indent=2) + "\n"
