"""Typos in pipeline calls are errors; the deprecated names diffusers still reads from **kwargs keep working."""

import re
import warnings

import pytest
from diffusers import StableDiffusionPipeline

from diffusers_repro.pipelines.keywords import check_extra_keywords, keywords_read_from_kwargs

STEPS = 2


def test_a_typo_is_a_type_error_naming_the_closest_parameter(sd):
    message = (
        "ReproStableDiffusionPipeline.__call__() got an unexpected keyword argument 'sed', which the pipeline would "
        "ignore; did you mean 'seed'?"
    )
    with pytest.raises(TypeError, match=f"^{re.escape(message)}$"):
        sd("a fox", sed=42, num_inference_steps=STEPS)
    with pytest.raises(TypeError, match=re.escape("'num_inference_step', which the pipeline would ignore; did you")):
        sd("a fox", seed=1, num_inference_step=STEPS)


def test_a_keyword_like_nothing_says_where_the_parameters_are(sd):
    with pytest.raises(TypeError, match=re.escape("'zzzz', which the pipeline would ignore; inspect.signature(")):
        sd("a fox", seed=1, zzzz=1)


def test_deprecated_keywords_diffusers_reads_from_kwargs_keep_working(sd):
    steps = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        sd(
            "a fox",
            seed=1,
            num_inference_steps=STEPS,
            callback=lambda i, t, latents: steps.append(i),
            callback_steps=1,
        )
    assert steps == [0, 1]


def test_the_names_read_are_found_in_the_vanilla_source():
    assert keywords_read_from_kwargs(StableDiffusionPipeline.__call__) == frozenset({"callback", "callback_steps"})

    def no_var_keyword(self, prompt):
        return prompt

    def hands_kwargs_on(self, **kwargs):
        return dict(**kwargs)

    def reads_some(self, **options):
        return options.pop("a", None), options["b"], "c" in options

    assert keywords_read_from_kwargs(no_var_keyword) is None
    assert keywords_read_from_kwargs(hands_kwargs_on) is None
    assert keywords_read_from_kwargs(reads_some) == frozenset({"a", "b", "c"})
    check_extra_keywords("X", hands_kwargs_on, ["anything"], [])  # cannot be known: accepted
    with pytest.raises(TypeError, match="X.__call__\\(\\) got an unexpected keyword argument 'bb'"):
        check_extra_keywords("X", reads_some, ["a", "bb"], ["prompt"])
