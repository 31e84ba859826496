"""An independent scalar reference of torch's CUDA randn, written from the published algorithm (curand's
Philox4x32-10 and Box-Muller, torch's grid-stride layout), for the tests of the vectorized emulation."""

import math

import numpy as np


def reference_philox(counter: int, thread: int, seed: int) -> list[int]:
    mask = 0xFFFFFFFF
    x, y, z, w = counter & mask, (counter >> 32) & mask, thread & mask, (thread >> 32) & mask
    k0, k1 = seed & mask, (seed >> 32) & mask
    for _ in range(10):
        p0, p1 = 0xD2511F53 * x, 0xCD9E8D57 * z
        x, y, z, w = (p1 >> 32) ^ y ^ k0, p1 & mask, (p0 >> 32) ^ w ^ k1, p0 & mask
        k0, k1 = (k0 + 0x9E3779B9) & mask, (k1 + 0xBB67AE85) & mask
    return [x, y, z, w]


def reference_box_muller(a: int, b: int) -> tuple[float, float]:
    f32 = np.float32
    u = f32(f32(a) * f32(2.0**-32) + f32(2.0**-33))
    step = f32(2 * math.pi * 2.0**-32)
    v = f32(float(f32(b)) * float(step) + float(step) / 2)  # fused multiply-add: one rounding
    turns = f32(v * f32(1 / (2 * math.pi)))
    radius = f32(math.sqrt(f32(f32(-2.0) * f32(math.log(float(u))))))
    angle = float(turns) * 2 * math.pi
    return float(f32(f32(math.sin(angle)) * radius)), float(f32(f32(math.cos(angle)) * radius))


def reference_randn(numel: int, seed: int, offset: int, multiprocessors: int, max_threads: int) -> list[float]:
    grid = min(math.ceil(numel / 256), multiprocessors * (max_threads // 256))
    stride = 256 * grid
    values = []
    for index in range(numel):
        thread, step = index % stride, index // stride
        call, j = divmod(step, 4)
        outputs = reference_philox(offset // 4 + call, thread, seed)
        pair = reference_box_muller(outputs[2 * (j // 2)], outputs[2 * (j // 2) + 1])
        values.append(pair[j % 2])
    return values


# ------------------------------------------------------------------------------------------------------------------
