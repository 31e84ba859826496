import subprocess
import sys

import diffusers_repro


def test_every_public_name_is_exported_and_resolves():
    for name in diffusers_repro.__all__:
        assert getattr(diffusers_repro, name) is not None, name
    public = {name for name in dir(diffusers_repro) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(diffusers_repro, name)).__name__ == "module"}
    assert public - modules <= set(diffusers_repro.__all__)


def test_every_module_all_is_reachable():
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(diffusers_repro.__path__, "diffusers_repro."):
        loaded = importlib.import_module(info.name)
        for name in getattr(loaded, "__all__", ()):
            assert hasattr(loaded, name), f"{info.name}.{name}"


def test_unknown_attribute_is_an_attribute_error():
    import pytest

    with pytest.raises(AttributeError, match="module 'diffusers_repro' has no attribute 'nope'"):
        diffusers_repro.nope  # noqa: B018


def test_core_names_are_importable():
    from diffusers_repro import (  # noqa: F401
        Provenance,
        ReproDDIMPipeline,
        ReproDiffusionPipeline,
        ReproducibleMixin,
        ReproStableDiffusionPipeline,
        full_determinism,
        read_provenance,
        reproduce,
        reproducible,
        save_image,
    )


def test_importing_the_package_does_not_import_diffusers():
    code = "import sys, diffusers_repro; print('diffusers' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_all_lists_exactly_the_lazy_exports():
    assert set(diffusers_repro.__all__) == {"__version__", *diffusers_repro._EXPORTS}
