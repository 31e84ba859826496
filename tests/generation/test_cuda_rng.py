"""PhiloxGenerator: torch's CUDA randn on the CPU, against the known vector and a scalar reference."""

import numpy as np
import pytest
import torch
from philox_reference import reference_philox, reference_randn

from diffusers_repro.generation.cuda_rng import (
    EMULATION_TOLERANCE,
    GEOMETRY_FREE_LIMIT,
    KNOWN_GEOMETRIES,
    CudaGeometry,
    PhiloxGenerator,
    offset_increment,
)

# torch.randn((3, 4), generator=torch.Generator("cuda").manual_seed(0), device="cuda")
KNOWN_VECTOR = torch.tensor(
    [
        [-0.92466259, -0.42534415, -2.6438457, 0.14518388],
        [-0.12086647, -0.57972564, -0.62285122, -0.32838709],
        [-1.07454231, -0.36314407, -1.67105067, 2.26550497],
    ]
)


def test_known_vector_within_a_few_ulp():
    generator = PhiloxGenerator(0)
    values = generator.randn((3, 4))
    assert values.dtype == torch.float32 and values.shape == (3, 4)
    # Measured: max abs diff 2.4e-7, at most 7 float32 ulp (the GPU's __sincosf is a hardware approximation).
    ulp = (values.view(torch.int32) - KNOWN_VECTOR.view(torch.int32)).abs().max().item()
    assert ulp <= 8
    assert (values - KNOWN_VECTOR).abs().max().item() <= 2.5e-7 < EMULATION_TOLERANCE
    assert generator.get_offset() == 4 and generator.initial_seed() == 0


def test_philox_matches_the_scalar_reference():
    from diffusers_repro.generation.cuda_rng import philox4x32_10

    threads = np.arange(0, 70, dtype=np.uint32)
    for counter, seed in ((0, 0), (5, 42), (2**32 + 3, 2**64 - 1)):
        vectorized = np.stack(philox4x32_10(counter, threads, seed), axis=1)
        expected = [reference_philox(counter, int(t), seed) for t in threads]
        assert vectorized.tolist() == expected
        first_two = np.stack(philox4x32_10(counter, threads, seed, outputs=2), axis=1)
        assert first_two.tolist() == [words[:2] for words in expected]


@pytest.mark.parametrize("numel", [1, 255, 256, 300, 1024, 1500, 2049, 5000])
def test_grid_stride_layout_against_the_scalar_reference(numel):
    # A made-up GPU with 2 multiprocessors of 256 threads: draws above 512 values are laid out grid-stride.
    geometry = CudaGeometry(2, 256)
    generator = PhiloxGenerator(1234, 2, 256)
    generator.set_offset(8)
    values = generator.randn((numel,))
    expected = torch.tensor(reference_randn(numel, 1234, 8, 2, 256), dtype=torch.float32)
    assert torch.equal(values, expected)
    assert generator.get_offset() == 8 + offset_increment(numel, geometry)


def test_offset_arithmetic():
    geometry = CudaGeometry(2, 256)  # threshold 512
    assert offset_increment(512, geometry) == 4
    assert offset_increment(2048, geometry) == 4  # 512 threads x 4 values each
    assert offset_increment(2049, geometry) == 8
    assert offset_increment(10**6, None if 10**6 <= GEOMETRY_FREE_LIMIT else KNOWN_GEOMETRIES["A100"]) == 8


def test_consecutive_draws_continue_the_stream():
    generator = PhiloxGenerator(7, 2, 256)
    first, second = generator.randn((600,)), generator.randn((3, 5))
    assert generator.get_offset() == 8
    # The second draw is the one of a fresh generator moved to offset 4.
    again = PhiloxGenerator(7, 2, 256).set_offset(4).randn((3, 5))
    assert torch.equal(second, again)
    assert not torch.equal(second.flatten(), first[:15])


def test_below_the_threshold_the_geometry_does_not_matter():
    values = [PhiloxGenerator.with_geometry(3, geometry).randn((4, 64, 64)) for geometry in KNOWN_GEOMETRIES.values()]
    assert all(torch.equal(values[0], other) for other in values[1:])
    assert torch.equal(values[0], PhiloxGenerator(3).randn((4, 64, 64)))


def test_a_flux_latent_differs_between_a100_and_h100():
    shape = (1, 16, 128, 128)  # 262,144 values: above the A100's threshold, below the H100's
    a100 = PhiloxGenerator.with_geometry(0, KNOWN_GEOMETRIES["A100"]).randn(shape)
    h100 = PhiloxGenerator.with_geometry(0, KNOWN_GEOMETRIES["H100-SXM"]).randn(shape)
    assert torch.equal(a100.flatten()[:221184], h100.flatten()[:221184])
    assert not torch.equal(a100, h100)


def test_a_large_draw_without_geometry_names_the_properties_to_pass():
    with pytest.raises(ValueError) as error:
        PhiloxGenerator(0).randn((1, 4, 128, 128))
    message = str(error.value)
    assert message.startswith("a CUDA randn of 65536 values is laid out by the GPU's geometry")
    assert "multiprocessors= and max_threads_per_multiprocessor=" in message
    assert ".multi_processor_count and .max_threads_per_multi_processor" in message
    PhiloxGenerator(0).randn((GEOMETRY_FREE_LIMIT,))  # the largest draw known without the geometry


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_the_rounded_float32_draw(dtype):
    full = PhiloxGenerator(5).randn((2, 300))
    half = PhiloxGenerator(5).randn((2, 300), dtype=dtype)
    assert half.dtype == dtype and torch.equal(half, full.to(dtype))


def test_bad_arguments():
    with pytest.raises(TypeError, match=r"dtype must be one of torch.float32, torch.float16, torch.bfloat16"):
        PhiloxGenerator(0).randn((2,), dtype=torch.float64)
    with pytest.raises(ValueError, match=r"^pass both multiprocessors and max_threads_per_multiprocessor"):
        PhiloxGenerator(0, multiprocessors=108)
    with pytest.raises(ValueError, match=r"^multiprocessors must be a positive int, got 0$"):
        CudaGeometry(0, 2048)
    with pytest.raises(TypeError, match=r"^seed must be an int between 0 and 2\*\*64 - 1, got 1.5$"):
        PhiloxGenerator(1.5)
    with pytest.raises(ValueError, match=r"^offset must be a non-negative multiple of 4, got 3$"):
        PhiloxGenerator(0).set_offset(3)
    with pytest.raises(ValueError, match=r"^a CUDA geometry must be MULTIPROCESSORSxMAX_THREADS"):
        CudaGeometry.parse("fast")


def test_geometry_parse_and_table():
    assert CudaGeometry.parse("a100") == CudaGeometry(108, 2048)
    assert CudaGeometry.parse(" 40x1024 ") == KNOWN_GEOMETRIES["T4"]
    assert KNOWN_GEOMETRIES["H100-SXM"].threshold == 270336
    assert KNOWN_GEOMETRIES["A100"].threshold == 221184
    assert KNOWN_GEOMETRIES["T4"].threshold == 40960 == GEOMETRY_FREE_LIMIT


def test_state_has_the_cuda_generator_layout():
    generator = PhiloxGenerator(2**40 + 5)
    generator.randn((10,))
    state = generator.get_state()
    assert state.dtype == torch.uint8 and state.numel() == 16
    assert int.from_bytes(bytes(state[:8].tolist()), "little") == 2**40 + 5
    assert int.from_bytes(bytes(state[8:].tolist()), "little") == 4
    other = PhiloxGenerator(0).set_state(state)
    assert (other.initial_seed(), other.get_offset()) == (2**40 + 5, 4)
    assert torch.equal(other.randn((10,)), generator.randn((10,)))
    assert generator.manual_seed(3).get_offset() == 0
