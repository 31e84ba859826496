"""Difference heatmaps: the difference map, its colours, the scale, the legend, the written file."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest
import torch

from diffusers_repro.verify.heatmap import (
    HEATMAP_KEY,
    Heatmap,
    difference_heatmap,
    difference_map,
    heatmap_colors,
    write_heatmap,
)

BLACK, PURPLE, BRIGHTEST = (0, 0, 0), (85, 15, 109), (252, 255, 164)


def pair(height=48, width=80):
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    b = a.copy()
    b[10:20, 2:12] = np.clip(b[10:20, 2:12].astype(int) + 40, 0, 255)  # a patch, up to 40 steps
    b[40, 5, 1] ^= 1  # one step, one channel, one pixel
    return a, b


def test_difference_map_is_the_largest_channel_difference():
    a = np.zeros((2, 3, 3), dtype=np.uint8)
    b = a.copy()
    b[1, 2] = (0, 7, 3)
    b[0, 0] = (255, 0, 0)
    assert difference_map(a, b).tolist() == [[255, 0, 0], [0, 0, 7]]
    assert difference_map(b, a).tolist() == [[255, 0, 0], [0, 0, 7]]
    assert difference_map(a, b).dtype == np.uint8


def test_difference_map_takes_pil_arrays_tensors_and_mixed_modes():
    gray = PIL.Image.fromarray(np.full((4, 4), 100, np.uint8), mode="L")
    rgb = np.full((4, 4, 3), 100, np.uint8)
    rgb[0, 0] = (100, 104, 100)
    assert difference_map(gray, rgb)[0, 0] == 4
    assert int(difference_map(gray, rgb).sum()) == 4
    tensor = torch.from_numpy(rgb).permute(2, 0, 1).float() / 255
    assert int(difference_map(tensor, rgb).max()) == 0


def test_difference_map_refuses_two_sizes():
    with pytest.raises(ValueError) as error:
        difference_map(np.zeros((4, 5, 3), np.uint8), np.zeros((4, 6, 3), np.uint8))
    assert str(error.value) == (
        "the images differ in size: a is 5x4, b is 6x4; a difference heatmap needs two images of one size"
    )


def test_heatmap_is_the_images_size_black_where_equal_brightest_at_the_largest_difference():
    a, b = pair()
    heatmap = difference_heatmap(a, b)
    assert heatmap.image.size == (80, 48) and heatmap.image.mode == "RGB"
    difference = difference_map(a, b)
    colors = np.asarray(heatmap.image)
    assert heatmap.max_diff == int(difference.max()) == 40
    assert heatmap.scale == 40
    assert heatmap.changed_pixels == int(np.count_nonzero(difference))
    assert heatmap.total_pixels == 80 * 48
    assert (colors[difference == 0] == 0).all()
    assert (colors[difference > 0].max(axis=1) > 0).all()  # any difference is visible
    assert tuple(colors[difference == 40][0]) == BRIGHTEST
    assert tuple(colors[40, 5]) == PURPLE  # one step: a quarter up the ramp, never near-black
    assert heatmap.amplification == pytest.approx(255 / 40)


def test_heatmap_scale_is_the_largest_difference_unless_given():
    a, b = pair()
    fixed = difference_heatmap(a, b, scale=80)
    colors = np.asarray(fixed.image)
    assert fixed.scale == 80 and fixed.max_diff == 40
    assert tuple(colors[difference_map(a, b) == 40][0]) != BRIGHTEST  # half way up a scale of 80
    one_step = a.copy()
    one_step[0, 0, 0] ^= 1
    single = difference_heatmap(a, one_step)
    assert single.scale == 1 and tuple(np.asarray(single.image)[0, 0]) == BRIGHTEST
    equal = difference_heatmap(a, a.copy())
    assert (equal.max_diff, equal.scale, equal.changed_pixels) == (0, 1, 0)
    assert not np.asarray(equal.image).any()


def test_heatmap_colors_rise_with_the_difference():
    colors = heatmap_colors(np.arange(0, 11), 10)
    assert tuple(colors[0]) == BLACK and tuple(colors[1]) == PURPLE and tuple(colors[10]) == BRIGHTEST
    brightness = colors.astype(int).sum(axis=1)
    assert (np.diff(brightness) > 0).all()
    assert tuple(heatmap_colors(np.array([200]), 10)[0]) == BRIGHTEST  # above the scale: clipped


@pytest.mark.parametrize("scale", [0, 256, 2.5, True, "3"])
def test_heatmap_colors_refuse_a_bad_scale(scale):
    with pytest.raises(ValueError) as error:
        heatmap_colors(np.zeros(3), scale)
    assert str(error.value) == f"scale must be an integer from 1 to 255 (8-bit steps), got {scale!r}"


@pytest.mark.parametrize(("width", "legend_width"), [(80, 80), (300, 300), (20, 64)])
def test_legend_sits_below_the_unchanged_map(width, legend_width):
    a, b = pair(height=48, width=width)
    heatmap = difference_heatmap(a, b)
    picture = np.asarray(heatmap.with_legend())
    assert picture.shape[1] == legend_width and picture.shape[0] > 48
    assert (picture[:48, :width] == np.asarray(heatmap.image)).all()
    legend = picture[48:]
    # The scale: every colour of the ramp from one step to the largest appears in the bar.
    ramp = {tuple(color) for color in heatmap_colors(np.arange(1, heatmap.scale + 1), heatmap.scale).tolist()}
    found = {tuple(color) for color in legend.reshape(-1, 3).tolist()}
    assert PURPLE in found and BRIGHTEST in found
    assert len(ramp & found) >= min(len(ramp), legend_width // 2)
    assert len(found) > 20  # the bar and the labels' anti-aliased text


def test_write_heatmap_writes_the_map_the_legend_and_its_figures(tmp_path):
    a, b = pair()
    path = tmp_path / "heatmap.png"
    heatmap = write_heatmap(PIL.Image.fromarray(a), PIL.Image.fromarray(b), path)
    assert isinstance(heatmap, Heatmap)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["heatmap.png"]  # atomic: no temporary file left
    with PIL.Image.open(path) as image:
        assert image.format == "PNG" and image.width == 80 and image.height > 48
        assert json.loads(image.text[HEATMAP_KEY]) == {
            "width": 80,
            "height": 48,
            "max_diff": 40,
            "scale": 40,
            "changed_pixels": heatmap.changed_pixels,
            "total_pixels": 3840,
        }
        assert (np.asarray(image.convert("RGB"))[:48] == np.asarray(heatmap.image)).all()
