import re

import numpy as np
import pytest
import torch

from diffusers_repro.generation.seeding import (
    MAX_SEED,
    draw_random_seed,
    make_generators,
    per_image_seeds,
    validate_seed,
)


def test_int_seed_gives_consecutive_seeds():
    assert per_image_seeds(42, 4) == [42, 43, 44, 45]


def test_list_seed_is_taken_as_is_repeats_allowed():
    assert per_image_seeds([7, 7, 7, 7], 4) == [7, 7, 7, 7]


def test_numpy_integers_are_accepted():
    assert per_image_seeds(np.int64(3), 2) == [3, 4]
    assert per_image_seeds([np.uint32(1), np.int8(2)], 2) == [1, 2]
    assert per_image_seeds(np.array([5, 6]), 2) == [5, 6]
    assert all(type(seed) is int for seed in per_image_seeds(np.int64(3), 2))


def test_largest_seed_is_accepted():
    assert per_image_seeds(MAX_SEED, 1) == [MAX_SEED]
    assert make_generators([MAX_SEED])[0].initial_seed() == MAX_SEED


@pytest.mark.parametrize(
    "seed, error, message",
    [
        (True, TypeError, "seed must be an int between 0 and 18446744073709551615, got the bool True"),
        (np.bool_(False), TypeError, "seed must be an int between 0 and 18446744073709551615, got the bool False"),
        (1.0, TypeError, "seed must be an int between 0 and 18446744073709551615, got 1.0 of type float"),
        ("42", TypeError, "seed must be an int or a list of ints, got the string '42'"),
        (-1, ValueError, "seed must be between 0 and 18446744073709551615, got the negative value -1"),
        (2**64, ValueError, "seed must be between 0 and 18446744073709551615 (2**64 - 1), got 18446744073709551616"),
        ([], ValueError, "seed must be an int or a non-empty list of ints, got an empty list"),
        ([1, [2]], TypeError, "seed must be a flat list of ints, but seed[1] is a nested [2]"),
        ([1, 2.5], TypeError, "seed[1] must be an int between 0 and 18446744073709551615, got 2.5 of type float"),
        ([1, None], TypeError, "seed[1] must be an int between 0 and 18446744073709551615, got None of type NoneType"),
        ([1, -3], ValueError, "seed[1] must be between 0 and 18446744073709551615, got the negative value -3"),
        (
            torch.tensor(3),
            TypeError,
            "seed must be an int or a list of ints, got a tensor tensor(3); pass seed.tolist()",
        ),
    ],
)
def test_bad_seed_errors_name_seed_value_and_expectation(seed, error, message):
    with pytest.raises(error, match=re.escape(message)):
        per_image_seeds(seed, 2 if isinstance(seed, list) and len(seed) == 2 else 1)


def test_wrong_list_length_names_the_batch():
    message = "seed has 3 values but the call makes 4 images (2 prompts x num_images_per_prompt=2)"
    with pytest.raises(ValueError, match=re.escape(message)):
        per_image_seeds([1, 2, 3], 4, "2 prompts x num_images_per_prompt=2")


def test_overflow_of_last_seed_is_an_error():
    with pytest.raises(ValueError, match=re.escape(f"past the largest seed {MAX_SEED}")):
        per_image_seeds(MAX_SEED - 1, 3)
    assert per_image_seeds(MAX_SEED - 2, 3)[-1] == MAX_SEED


def test_validate_seed_passes_none_through():
    assert validate_seed(None) is None


def test_random_seed_leaves_torch_global_rng_alone():
    before = torch.random.get_rng_state()
    seeds = {draw_random_seed() for _ in range(8)}
    assert torch.equal(before, torch.random.get_rng_state())
    assert len(seeds) > 1
    assert all(0 <= seed < 2**32 for seed in seeds)


def test_none_draws_fresh_base_seed():
    first, second = per_image_seeds(None, 2), per_image_seeds(None, 2)
    assert first[1] == first[0] + 1
    assert first != second


def test_make_generators_are_cpu_and_independent():
    generators = make_generators([3, 3, 4])
    assert [g.device.type for g in generators] == ["cpu"] * 3
    draws = [torch.randn(4, generator=g) for g in generators]
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], draws[2])
    assert torch.equal(draws[2], torch.randn(4, generator=torch.Generator().manual_seed(4)))


def test_zero_dimensional_numpy_seed_is_a_scalar():
    assert per_image_seeds(np.array(5), 2) == [5, 6]
    with pytest.raises(TypeError, match=re.escape("seed must be an int between 0 and 18446744073709551615, got 1.5")):
        per_image_seeds(np.array(1.5), 1)
