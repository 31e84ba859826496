"""rng="cuda" in pipeline calls: stand-in generators, the torch function mode, records, replay and the CLI."""

import threading

import numpy as np
import pytest
import torch
from philox_reference import reference_randn

from diffusers_repro.generation.cuda_noise import CudaRandnMode, EmulatedCudaGenerator, cuda_generators
from diffusers_repro.generation.cuda_rng import CudaGeometry, PhiloxGenerator


def test_mode_answers_randn_with_stand_in_generators():
    rng = cuda_generators([0, 1], "cpu")
    generators = rng.generators
    assert rng.record == {"type": "cuda", "emulated": True, "geometry": None, "geometry_from": None}
    assert all(isinstance(g, EmulatedCudaGenerator) and g.device.type == "cpu" for g in generators)
    used = torch.Generator().manual_seed(0)
    torch.randn(1, generator=used)
    with CudaRandnMode():
        first = torch.randn((3, 4), generator=generators[0], dtype=torch.float32, layout=torch.strided)
        varargs = torch.randn(3, 4, generator=generators[1], dtype=torch.float16)
        plain = torch.randn(2, generator=used)
    assert torch.equal(first, PhiloxGenerator(0).randn((3, 4)))
    assert torch.equal(varargs, PhiloxGenerator(1).randn((3, 4), dtype=torch.float16))
    # A generator that had drawn before the block draws as the CPU generator it is.
    expected = torch.Generator().manual_seed(0)
    torch.randn(1, generator=expected)
    assert torch.equal(plain, torch.randn(2, generator=expected))
    assert generators[0].philox.get_offset() == 4


def test_mode_draws_fresh_generators_as_cuda_generators_like_torchsde_on_a_gpu():
    # torchsde's Brownian tree (DPMSolverSDEScheduler) draws with torch.Generator(latents.device).manual_seed(seed):
    # a CUDA generator on a GPU.
    from torchsde._brownian.brownian_interval import _randn

    with CudaRandnMode(CudaGeometry(2, 256)):
        tree_draw = _randn((4, 16, 16), torch.float32, torch.device("cpu"), 99)
        fresh = torch.Generator().manual_seed(7)
        first, second = torch.randn((600,), generator=fresh), torch.randn((5,), generator=fresh)
    assert torch.equal(tree_draw, PhiloxGenerator(99, 2, 256).randn((4, 16, 16)))
    stream = PhiloxGenerator(7, 2, 256)
    assert torch.equal(first, stream.randn((600,))) and torch.equal(second, stream.randn((5,)))


def test_mode_refuses_other_random_functions():
    generators = cuda_generators([0], "cpu").generators
    with CudaRandnMode(), pytest.raises(NotImplementedError, match=r"^rng='cuda' emulates torch.randn"):
        torch.rand((2,), generator=generators[0])


def test_mode_is_per_thread():
    generators = cuda_generators([0], "cpu").generators
    others = cuda_generators([0], "cpu").generators
    seen = {}

    def other_thread():
        # The mode is not active here: the stand-in draws as the ordinary CPU generator it is, seeded 0.
        seen["values"] = torch.randn((3, 4), generator=others[0])

    with CudaRandnMode():
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join()
        inside = torch.randn((3, 4), generator=generators[0])
    assert torch.equal(seen["values"], torch.randn((3, 4), generator=torch.Generator().manual_seed(0)))
    assert torch.equal(inside, PhiloxGenerator(0).randn((3, 4)))


def test_parse_rng():
    from diffusers_repro.generation.cuda_noise import parse_rng

    assert parse_rng("cpu") == "cpu" and parse_rng("cuda") == "cuda"
    assert parse_rng("cuda:T4") == CudaGeometry(40, 1024)
    assert parse_rng("cuda:82x1536") == CudaGeometry(82, 1536)
    assert parse_rng(CudaGeometry(1, 256)) == CudaGeometry(1, 256)
    with pytest.raises(ValueError, match=r"^rng must be 'cpu', 'cuda', .*; got 'gpu'$"):
        parse_rng("gpu")


def test_cuda_generators_with_a_given_geometry_record_it():
    rng = cuda_generators([4], "cpu", CudaGeometry(2, 256))
    assert rng.record == {
        "type": "cuda",
        "emulated": True,
        "geometry": {"multiprocessors": 2, "max_threads_per_multiprocessor": 256},
        "geometry_from": "caller",
    }
    with rng.context():
        drawn = torch.randn((1, 3000), generator=rng.generators[0])
    assert torch.equal(drawn, rng.first_noise(0, (1, 3000), torch.float32))
    assert torch.equal(drawn.flatten(), torch.tensor(reference_randn(3000, 4, 0, 2, 256), dtype=torch.float32))


# ------------------------------------------------------------------------------------------------------------------
# Pipelines: rng="cuda"

SD_CALL = {"num_inference_steps": 2, "output_type": "np"}


def _vanilla(pipe):
    from diffusers import DDIMPipeline, StableDiffusionPipeline

    from diffusers_repro import ReproDDIMPipeline

    cls = DDIMPipeline if isinstance(pipe, ReproDDIMPipeline) else StableDiffusionPipeline
    plain = cls(**pipe.components)
    plain.set_progress_bar_config(disable=True)
    return plain


def _emulated(seeds, geometry=None):
    return [EmulatedCudaGenerator(PhiloxGenerator.with_geometry(seed, geometry)) for seed in seeds]


def test_sd_rng_cuda_equals_vanilla_given_the_philox_latents(sd):
    from diffusers_repro.records.provenance import tensor_digest

    ours = sd(["a fox", "a bear"], seed=3, rng="cuda", **SD_CALL)
    size = sd.unet.config.sample_size
    latents = torch.cat([PhiloxGenerator(seed).randn((1, 4, size, size)) for seed in (3, 4)])
    theirs = _vanilla(sd)(["a fox", "a bear"], latents=latents, **SD_CALL)
    np.testing.assert_array_equal(ours.images, theirs.images)
    cpu = sd(["a fox", "a bear"], seed=3, **SD_CALL)
    assert np.abs(cpu.images - ours.images).max() > 1e-3
    record = ours.provenance[1]
    assert record.recipe["rng"] == {"type": "cuda", "emulated": True, "geometry": None, "geometry_from": None}
    assert record.result["noise_digest"] == tensor_digest(latents[1:2])
    assert "rng" not in cpu.provenance[0].recipe


def test_ancestral_scheduler_later_draws_continue_the_cuda_stream(sd_pipe):
    from diffusers import EulerAncestralDiscreteScheduler

    sd_pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(sd_pipe.scheduler.config)
    call = {"num_inference_steps": 3, "output_type": "np"}
    ours = sd_pipe(["a fox", "a bear"], seed=[8, 2], rng="cuda", **call)
    generators = _emulated([8, 2])
    with CudaRandnMode():
        theirs = _vanilla(sd_pipe)(["a fox", "a bear"], generator=generators, **call)
    np.testing.assert_array_equal(ours.images, theirs.images)
    # The starting noise, then one draw per step, each continuing the image's own CUDA stream.
    assert [g.philox.get_offset() for g in generators] == [16, 16]
    # The later draws matter: a call that takes only the starting noise from the CUDA stream differs.
    size = sd_pipe.unet.config.sample_size
    latents = torch.cat([PhiloxGenerator(seed).randn((1, 4, size, size)) for seed in (8, 2)])
    cpu_later = _vanilla(sd_pipe)(
        ["a fox", "a bear"], latents=latents, generator=[torch.Generator().manual_seed(s) for s in (8, 2)], **call
    )
    assert np.abs(cpu_later.images - ours.images).max() > 1e-4


def test_sde_scheduler_brownian_noise_is_drawn_as_on_a_gpu(sd_pipe):
    from diffusers import DPMSolverSDEScheduler

    sd_pipe.scheduler = DPMSolverSDEScheduler.from_config(sd_pipe.scheduler.config)
    call = {"num_inference_steps": 3, "output_type": "np"}
    ours = sd_pipe(["a fox", "a bear"], seed=[8, 2], rng="cuda", **call)
    assert ours.provenance[0].recipe["scheduler"]["noise_sampler"]["seed"] == 8
    # Vanilla diffusers on a GPU: CUDA generators, and the per-image Brownian trees the Repro call seeds, whose
    # draws torchsde makes with fresh generators on the latents' device.
    scheduler = DPMSolverSDEScheduler.from_config(sd_pipe.scheduler.config, noise_sampler_seed=[8, 2])
    plain = _vanilla(sd_pipe)
    plain.scheduler = scheduler
    with CudaRandnMode():
        theirs = plain(["a fox", "a bear"], generator=_emulated([8, 2]), **call)
    np.testing.assert_array_equal(ours.images, theirs.images)
    cpu_trees = _vanilla(sd_pipe)
    cpu_trees.scheduler = DPMSolverSDEScheduler.from_config(sd_pipe.scheduler.config, noise_sampler_seed=[8, 2])
    size = sd_pipe.unet.config.sample_size
    latents = torch.cat([PhiloxGenerator(seed).randn((1, 4, size, size)) for seed in (8, 2)])
    with_cpu_trees = cpu_trees(["a fox", "a bear"], latents=latents, **call)
    assert np.abs(with_cpu_trees.images - ours.images).max() > 1e-4


def test_ddim_eta_draws_and_grid_stride_layout_in_a_pipeline(ddim):
    # 3 x 16 x 16 = 768 values per image: above the 256-value threshold of a made-up 1 x 256 GPU.
    geometry = CudaGeometry(1, 256)
    call = {"batch_size": 2, "eta": 1.0, "num_inference_steps": 2, "output_type": "np"}
    ours = ddim(seed=5, rng="cuda:1x256", **call)
    generators = _emulated([5, 6], geometry)
    with CudaRandnMode():
        theirs = _vanilla(ddim)(generator=generators, **call)
    np.testing.assert_array_equal(ours.images, theirs.images)
    assert [g.philox.get_offset() for g in generators] == [12, 12]  # 4 for the latents, 4 per eta step
    latents = torch.tensor(reference_randn(768, 5, 0, 1, 256), dtype=torch.float32).reshape(1, 3, 16, 16)
    from diffusers_repro.records.provenance import tensor_digest

    assert ours.provenance[0].result["noise_digest"] == tensor_digest(latents)
    assert ours.provenance[0].recipe["rng"]["geometry"] == {
        "multiprocessors": 1,
        "max_threads_per_multiprocessor": 256,
    }
    assert ours.provenance[0].recipe["rng"]["geometry_from"] == "caller"


def test_rng_errors_before_any_work(ddim):
    with pytest.raises(ValueError, match=r"^rng must be 'cpu', 'cuda', .*; got 'gpu'$"):
        ddim(seed=1, rng="gpu", num_inference_steps=1)
    with pytest.raises(ValueError, match=r"^rng='cuda' picks the generators that seed= makes; pass seed instead"):
        ddim(generator=torch.Generator().manual_seed(1), rng="cuda", num_inference_steps=1)
    with pytest.raises(TypeError, match=r"^generator=PhiloxGenerator\(seed=3, offset=0, geometry=1x256\) is not a "):
        ddim(generator=[PhiloxGenerator(3, 1, 256)], num_inference_steps=1)
    with pytest.raises(TypeError, match=r"pass seed=3 with rng='cuda:1x256'$"):
        ddim(generator=PhiloxGenerator(3, 1, 256), num_inference_steps=1)


def test_rng_cuda_calls_in_threads_do_not_see_each_other(ddim):
    from concurrent.futures import ThreadPoolExecutor

    call = {"batch_size": 1, "num_inference_steps": 2, "output_type": "np"}
    alone_cuda = ddim(seed=1, rng="cuda", **call).images
    alone_cpu = ddim(seed=1, **call).images
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(ddim, seed=1, rng=rng, **call) for rng in ("cuda", "cpu", "cuda", "cpu")]
        results = [future.result().images for future in futures]
    for images, expected in zip(results, (alone_cuda, alone_cpu, alone_cuda, alone_cpu), strict=True):
        np.testing.assert_allclose(images, expected, atol=1e-6)
    assert np.abs(alone_cuda - alone_cpu).max() > 1e-3


# ------------------------------------------------------------------------------------------------------------------
# Records and replay


def test_rng_cuda_record_replays_bitwise(ddim, tmp_path):
    from diffusers_repro.verify.replay import reproduce

    out = ddim(batch_size=1, seed=5, rng="cuda:1x256", eta=1.0, num_inference_steps=2)
    path = out.save(tmp_path)[0]
    result = reproduce(path, pipe=ddim)
    assert result.verdict == "bitwise" and result.differences == []
    assert result.provenance.recipe["rng"] == out.provenance[0].recipe["rng"]


def test_a_cuda_generator_record_is_emulated_without_the_gpu_and_said_so(ddim):
    from diffusers_repro import Provenance
    from diffusers_repro.verify.replay import reproduce
    from diffusers_repro.verify.reproduction import Difference

    made = ddim(batch_size=1, seed=5, rng="cuda:1x256", num_inference_steps=2, output_type="np").provenance[0]
    # The record a call with generator=torch.Generator("cuda").manual_seed(5) writes on that GPU.
    data = made.to_dict()
    del data["recipe"]["rng"]
    data["seed_source"] = "generator"
    geometry = {"multiprocessors": 1, "max_threads_per_multiprocessor": 256}
    data["recipe"]["generator"] = {
        "device": "cuda:0",
        "initial_seed": 5,
        "seed_certain": True,
        "shared_by_batch": False,
        "index": 0,
        "note": "generator was fresh at the start of the call: the seed is certain",
        "offset": 0,
        "geometry": geometry,
    }
    result = reproduce(Provenance.from_dict(data), pipe=ddim)
    assert result.output_digest_equal is True
    assert result.provenance.recipe["rng"]["emulated"] is True
    assert result.differences == [
        Difference(
            "recipe.generator.device",
            f"cuda:0 (torch.Generator('cuda'), geometry {geometry})",
            "emulated by diffusers_repro.PhiloxGenerator (close to the GPU's noise, not bitwise)",
        )
    ]


def test_generate_cli_with_rng_cuda_records_it_and_resumes_only_the_same_rng(capsys, tmp_path, tiny_ddim_path):
    from diffusers_repro.cli import main
    from diffusers_repro.files.imagefile import read_provenance

    common = ["generate", "--model", str(tiny_ddim_path), "--seeds", "0,1", "--steps", "2", "--threads", "1"]
    common += ["--no-progress", "--out", str(tmp_path / "out")]
    assert main([*common, "--rng", "cuda:T4"]) == 0
    record = read_provenance(tmp_path / "out" / "job000001-seed1.png")
    assert record.recipe["rng"]["geometry"] == {"multiprocessors": 40, "max_threads_per_multiprocessor": 1024}
    assert main([*common, "--rng", "cuda:T4"]) == 0
    assert "(0 generated, 2 already there)" in capsys.readouterr().out
    assert main(common) == 2
    assert "call.rng: 'cuda:T4' -> 'cpu'" in capsys.readouterr().err
    assert main([*common, "--rng", "tpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("diffusers-repro: error: generate: argument --rng: rng must be 'cpu'")


def test_rng_cuda_with_batch_invariant_equals_the_image_made_alone(ddim):
    call = {"eta": 1.0, "num_inference_steps": 2, "output_type": "np"}
    batch = ddim(batch_size=2, seed=5, rng="cuda:1x256", batch_invariant=True, **call).images
    alone = ddim(batch_size=1, seed=6, rng="cuda:1x256", **call).images
    np.testing.assert_array_equal(batch[1:], alone)


def test_a_record_with_a_bad_geometry_is_refused(ddim):
    from diffusers_repro import Provenance, ProvenanceError
    from diffusers_repro.verify.replay import reproduce

    data = ddim(batch_size=1, seed=5, rng="cuda:1x256", num_inference_steps=1, output_type="np").provenance[0]
    data = data.to_dict()
    data["recipe"]["rng"]["geometry"] = {"multiprocessors": "many", "max_threads_per_multiprocessor": 256}
    # The schema refuses it when the record is read, before any replay.
    with pytest.raises(
        ProvenanceError,
        match=r"^provenance record: recipe.rng.geometry.multiprocessors must be an int from 1 to 65536, got 'many'$",
    ):
        Provenance.from_dict(data)
    data["recipe"]["rng"]["geometry"] = {"multiprocessors": 4, "max_threads_per_multiprocessor": 100}
    with pytest.raises(ProvenanceError, match=r"recipe.rng.geometry.max_threads_per_multiprocessor must be an int"):
        Provenance.from_dict(data)
    data["recipe"]["rng"] = "cuda"
    with pytest.raises(ProvenanceError, match=r"recipe.rng must be an object or null, got 'cuda'"):
        Provenance.from_dict(data)
    # A record edited in code (not read from a file) meets the same schema in reproduce, before any work.
    record = Provenance.from_dict({**data, "recipe": {**data["recipe"], "rng": None}})
    record.recipe["rng"] = {"type": "cuda", "geometry": {"multiprocessors": 0, "max_threads_per_multiprocessor": 256}}
    with pytest.raises(ProvenanceError, match=r"recipe.rng.geometry.multiprocessors must be an int from 1 to 65536"):
        reproduce(record, pipe=ddim)


def test_inspect_shows_the_cuda_noise(ddim, tmp_path, capsys):
    from diffusers_repro.cli import main

    path = ddim(batch_size=1, seed=5, rng="cuda:T4", num_inference_steps=1).save(tmp_path)[0]
    assert main(["inspect", str(path)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("noise rng:")]
    expected = "noise rng:       torch.Generator('cuda') noise, emulated by PhiloxGenerator; GPU geometry 40x1024"
    assert lines == [expected]


def test_an_rng_cuda_record_made_on_a_gpu_is_emulated_here_and_said_so(ddim):
    from diffusers_repro import Provenance
    from diffusers_repro.verify.replay import reproduce
    from diffusers_repro.verify.reproduction import Difference

    made = ddim(batch_size=1, seed=5, rng="cuda:1x256", num_inference_steps=2, output_type="np").provenance[0]
    data = made.to_dict()
    # What the same call writes on a GPU of that geometry: real CUDA generators, geometry read from the device.
    data["recipe"]["rng"].update(emulated=False, geometry_from="device")
    result = reproduce(Provenance.from_dict(data), pipe=ddim)
    assert result.output_digest_equal is True  # this record's digest came from the emulation, here
    assert result.differences == [Difference("recipe.rng.emulated", False, True)]
