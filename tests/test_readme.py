"""The README's commands work as printed on a fresh clone: the Quick start's shell commands after `make demo`, with
the command found the way the README says, and its Python example, without deprecation warnings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_quick_start_commands_run_as_printed_after_make_demo(tmp_path, tiny_cache):
    setup, commands = code_blocks(section("Quick start"), "bash")[:2]
    assert setup.startswith("make demo")
    lines = [line.split("  #")[0].strip() for line in commands.strip().splitlines()]
    # `make` installs the command into .venv/bin, which is not on PATH: the README says to activate it first.
    assert lines[0] == "source .venv/bin/activate"
    assert all(line.startswith("diffusers-repro ") for line in lines[1:]) and len(lines) > 1
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "\t$(VENV)/bin/diffusers-repro demo --out outputs/demo\n" in makefile
    # What `make demo` and `source .venv/bin/activate` leave: the environment's bin folder first on PATH (this
    # interpreter's), and outputs/demo (fewer steps here, for time). PYTHONPATH runs this checkout's package.
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(ROOT),
        "DIFFUSERS_REPRO_CACHE": str(tiny_cache),
        "HF_HUB_OFFLINE": "1",
    }
    demo = ["diffusers-repro", "demo", "--out", "outputs/demo", "--steps", "2"]
    completed = subprocess.run(demo, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    for line in lines[1:]:
        completed = subprocess.run(
            ["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert completed.returncode == 0, f"{line}\n{completed.stdout}{completed.stderr}"
    assert "8 images: 8 bitwise" in completed.stdout  # the last one: verify -r outputs/demo


def test_quick_start_python_example_runs_without_deprecation_warnings(tiny_cache, monkeypatch):
    monkeypatch.setenv("DIFFUSERS_REPRO_CACHE", str(tiny_cache))
    (example,) = code_blocks(section("Quick start"), "python")
    assert "from diffusers_repro.tiny import tiny_pipeline_path" in example
    namespace: dict = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(example, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert (namespace["out"].images[0].size, namespace["out"].provenance[0].seed) == ((64, 64), 42)
    deprecations = [str(w.message) for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))]
    assert deprecations == []


def test_code_in_the_readme_and_examples_uses_no_deprecated_keyword():
    # diffusers 0.42 warns on `torch_dtype=` ("Please use `dtype` instead").
    texts = [block for language in ("python", "bash") for block in code_blocks(README, language)]
    texts += [path.read_text(encoding="utf-8") for path in sorted((ROOT / "examples").glob("*.py"))]
    code = [line.split("#")[0] for text in texts for line in text.splitlines()]
    assert [line for line in code if "torch_dtype=" in line] == []
