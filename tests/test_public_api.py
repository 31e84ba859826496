import diffusers_repro


def test_every_public_name_is_exported():
    public = {name for name in dir(diffusers_repro) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(diffusers_repro, name)).__name__ == "module"}
    assert public - modules <= set(diffusers_repro.__all__)
    for name in diffusers_repro.__all__:
        assert hasattr(diffusers_repro, name), name


def test_core_names_are_importable():
    from diffusers_repro import (  # noqa: F401
        Provenance,
        ReproDDIMPipeline,
        ReproducibleMixin,
        ReproStableDiffusionPipeline,
        full_determinism,
    )
