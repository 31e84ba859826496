"""``diffusers-repro env`` (this machine's environment fingerprint) and ``diff`` (where two records differ)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from .common import UsageError, add_max_file_bytes_argument, check_device, printable, read_image, value_text

__all__ = ["environment_report"]


# --------------------------------------------------------------------------------------------------------------------
# env


def environment_report(device: str | None = None) -> dict[str, Any]:
    """The environment fingerprint of ``device`` plus whether full determinism can be switched on here.

    Example:

    ```py
    >>> from diffusers_repro.cli import environment_report
    >>> environment_report()["environment"]["device"]
    'cpu'
    ```
    """
    import torch

    from ..generation import determinism_status, full_determinism
    from ..records import environment_fingerprint

    device_ = torch.device(device or "cpu")
    notes = []
    try:
        with full_determinism():
            possible = bool(determinism_status()["full_determinism"])
    except Exception as error:  # noqa: BLE001 - any failure means "not possible here", with the reason
        possible = False
        notes.append(f"full_determinism() failed: {error}")
    if device_.type == "cpu":
        notes.append(
            f"CPU results are bitwise the same run to run for a fixed torch thread count (now "
            f"{torch.get_num_threads()}); pin it with --threads"
        )
    if device_.type == "cuda" and torch.cuda.is_initialized() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ:
        possible = False
        notes.append("CUDA was initialized before CUBLAS_WORKSPACE_CONFIG was set: cuBLAS may not be deterministic")
    notes.append("batched images match one-at-a-time generation bitwise only with --batch-invariant")
    accelerators = {"cuda": torch.cuda.is_available(), "cuda_device_count": torch.cuda.device_count()}
    mps = getattr(torch.backends, "mps", None)
    accelerators["mps"] = bool(mps and mps.is_available())
    return {
        "environment": environment_fingerprint(device_),
        "full_determinism_possible": possible,
        "accelerators": accelerators,
        "notes": notes,
    }


def env_command(args: argparse.Namespace) -> int:
    device = check_device(args.device)
    report = environment_report(device)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    env = report["environment"]
    versions = env.get("versions") or {}
    accelerators = report["accelerators"]
    lines = [
        f"device:            {env['device']} ({env['device_name']})",
        f"accelerators:      cuda {'yes' if accelerators['cuda'] else 'no'} ({accelerators['cuda_device_count']} "
        f"device(s)), mps {'yes' if accelerators['mps'] else 'no'}",
        f"torch threads:     {env['torch_num_threads']}",
        f"platform:          {env['platform']}",
        "versions:          " + ", ".join(f"{name} {version}" for name, version in versions.items() if version),
        f"determinism now:   {'full' if env['determinism']['full_determinism'] else 'not full'}",
        f"full determinism:  {'possible here' if report['full_determinism_possible'] else 'NOT possible here'} "
        "(generate --deterministic)",
    ]
    lines += [f"note:              {note}" for note in report["notes"]]
    print("\n".join(lines))
    return 0


# --------------------------------------------------------------------------------------------------------------------
# diff


def _pixel_comparison(a: Any, b: Any) -> dict[str, Any]:
    """The two files' 8-bit pixels compared: max abs diff (in [0, 1] units and 8-bit steps), PSNR in dB (`None` when
    equal) and how many pixels differ; or, when they cannot be compared, why (``size``)."""
    import math

    import numpy as np

    left, right = a.pixels, b.pixels
    if left.shape != right.shape:
        (aw, ah), (bw, bh) = a.image.size, b.image.size
        return {"identical": False, "size": f"{aw}x{ah} {a.image.mode} vs {bw}x{bh} {b.image.mode}"}
    delta = np.abs(left.astype(np.int16) - right.astype(np.int16))
    steps = int(delta.max()) if delta.size else 0
    per_pixel = delta.max(axis=-1) if delta.ndim == 3 else delta
    mse = float(np.mean((delta / 255.0) ** 2)) if delta.size else 0.0
    return {
        "identical": steps == 0,
        "max_abs_diff": steps / 255,
        "max_abs_diff_steps": steps,
        "psnr": None if mse == 0 else 10.0 * math.log10(1.0 / mse),
        "changed_pixels": int(np.count_nonzero(per_pixel)),
        "total_pixels": int(per_pixel.size),
    }


def _pixels_line(pixels: dict[str, Any]) -> str:
    if "size" in pixels:
        return f"pixels: not comparable, the images differ in size or mode ({pixels['size']})"
    if pixels["identical"]:
        return f"pixels: identical ({pixels['total_pixels']} pixels)"
    return (
        f"pixels: max abs diff {pixels['max_abs_diff']:.4g} ({pixels['max_abs_diff_steps']}/255), PSNR "
        f"{pixels['psnr']:.1f} dB, {pixels['changed_pixels']} of {pixels['total_pixels']} pixels differ"
    )


def diff_command(args: argparse.Namespace) -> int:
    from ..verify import record_differences

    a, b = read_image(args.a, args.max_file_bytes), read_image(args.b, args.max_file_bytes)
    differences = record_differences(a.provenance, b.provenance)
    pixels = _pixel_comparison(a, b)
    heatmap = _heatmap(args, a, b) if args.heatmap is not None else None
    if args.json:
        records = [difference._asdict() for difference in differences]
        print(json.dumps({"records": records, "pixels": pixels}, indent=2, default=str))
    elif not differences:
        print(printable(f"the records of {args.a} and {args.b} are identical"))
    else:
        fields = f"{len(differences)} field{'' if len(differences) == 1 else 's'}"
        print(printable(f"{fields} differ between {args.a} and {args.b}:"))
        for field, left, right in differences:
            print(printable(f"  {field}: {value_text(left)} -> {value_text(right)}"))
    if not args.json:
        print(_pixels_line(pixels))
    if heatmap is not None and not args.json:
        shown = (
            f"max diff {heatmap.max_diff}/255, {heatmap.changed_pixels} of {heatmap.total_pixels} pixels differ"
            if heatmap.max_diff
            else "the pixels are identical"
        )
        print(f"heatmap: {args.heatmap} ({shown})")
    return 0 if not differences and pixels["identical"] else 1


def _heatmap(args: argparse.Namespace, a: Any, b: Any) -> Any:
    """Writes ``diff --heatmap``: the pixel differences of the two files, with a scale."""
    from ..verify import write_heatmap

    path = args.heatmap
    if path.suffix.lower() != ".png":
        raise UsageError(f"--heatmap {str(path)!r}: expected a .png file (a lossy format would blur the differences)")
    if not path.parent.is_dir():
        raise UsageError(f"--heatmap {str(path)!r}: the folder {str(path.parent)!r} does not exist")
    if a.image.size != b.image.size:
        (aw, ah), (bw, bh) = a.image.size, b.image.size
        raise UsageError(
            f"--heatmap: the images differ in size ({args.a} is {aw}x{ah}, {args.b} is {bw}x{bh}); a heatmap needs "
            "two images of one size"
        )
    return write_heatmap(a.image, b.image, path)


def add_env_parser(commands: Any) -> None:
    """``diffusers-repro env``: its options."""
    env = commands.add_parser(
        "env",
        help="this machine's environment fingerprint and whether full determinism is possible",
        description=(
            "Prints the environment that decides whether bits reproduce (device, versions, threads, determinism "
            "settings) and whether full determinism can be switched on here."
        ),
    )
    env.add_argument("--device", help="the device to describe (default: cpu)")
    env.add_argument("--json", action="store_true", help="print JSON")
    env.set_defaults(handler=env_command, loads_models=True)


def add_diff_parser(commands: Any) -> None:
    """``diffusers-repro diff``: its options."""
    diff = commands.add_parser(
        "diff",
        help="the fields in which two images' records differ, and how much their pixels differ",
        description=(
            "Lists the fields in which two images' records differ and compares their pixels (max abs diff, PSNR). "
            "Exit 0 when the records and the pixels are equal, 1 otherwise."
        ),
    )
    diff.add_argument("a", type=Path, metavar="A", help="an image (PNG, JPEG or WebP) written by diffusers-repro")
    diff.add_argument("b", type=Path, metavar="B", help="another one")
    diff.add_argument("--json", action="store_true", help="print JSON")
    diff.add_argument(
        "--heatmap",
        type=Path,
        metavar="OUT.png",
        help="also write the picture of the pixel differences (the images' size, with a scale below)",
    )
    add_max_file_bytes_argument(diff)
    diff.set_defaults(handler=diff_command)
