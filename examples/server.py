"""A small HTTP image service: one image per request, with its seed and provenance, safe under concurrent requests.

Every request gets its own pipeline made with ``from_pipe`` (the weights are shared, the scheduler is its own) and
runs in one of the server's worker threads with the intra-op thread count pinned, so each response holds the same
pixels and the same record as the same request made alone. The PNG is written by ``out.save(...)``: it carries its
provenance record (and whatever else the package writes into its files).

    pip install 'diffusers-repro[serve]'
    python examples/server.py --port 8000            # the embedded tiny model; --model PATH for a diffusers folder
    curl -s localhost:8000/generate -H 'content-type: application/json' -d '{"prompt": "a fox", "seed": 42}'
"""

from __future__ import annotations

import argparse
import base64
import tempfile
import uuid
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from diffusers_repro import ReproStableDiffusionPipeline
from diffusers_repro.tiny import tiny_pipeline_path


class GenerateRequest(BaseModel):
    """One image. Unknown fields are refused (a misspelled ``sed`` must not silently mean "random seed")."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=1000)
    negative_prompt: str | None = Field(default=None, max_length=1000)
    seed: int | None = Field(default=None, ge=0, lt=2**63, description="random (and returned) when left out")
    num_inference_steps: int = Field(default=4, ge=1, le=150)
    guidance_scale: float = Field(default=7.5, ge=0, le=50)
    height: int | None = Field(default=None, ge=8, le=2048, multiple_of=8)
    width: int | None = Field(default=None, ge=8, le=2048, multiple_of=8)
    deterministic: bool = False


def create_app(model: str | None = None, threads: int = 1, out: Path | None = None) -> FastAPI:
    """The service: ``POST /generate`` makes one image; ``GET /health`` says it is up.

    Args:
        model (`str`, *optional*):
            A Stable Diffusion pipeline folder (or hub id); the embedded tiny model when left out.
        threads (`int`, *optional*, defaults to 1):
            The intra-op thread count every request runs with: CPU bits depend on it, and a worker thread does not
            inherit the count another thread set, so each request pins it in its own thread.
        out (`Path`, *optional*):
            A folder to keep the PNG files in (one subfolder per request); without it they are only returned.
    """
    base = ReproStableDiffusionPipeline.from_pretrained(model or tiny_pipeline_path("sd"))
    base.set_progress_bar_config(disable=True)
    app = FastAPI(title="diffusers-repro image service")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    # A plain `def`: FastAPI runs it in a worker thread, so requests are generated concurrently.
    @app.post("/generate")
    def generate(request: GenerateRequest) -> dict[str, Any]:
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            # One pipeline per request: shared weights, its own scheduler (schedulers keep per-call state).
            pipe = ReproStableDiffusionPipeline.from_pipe(
                base, scheduler=base.scheduler.from_config(base.scheduler.config)
            )
            pipe.set_progress_bar_config(disable=True)
            output = pipe(**request.model_dump(), output_type="pil")
        finally:
            torch.set_num_threads(previous)
        request_id = uuid.uuid4().hex
        with tempfile.TemporaryDirectory() as scratch:
            # One folder per request: two requests never number their files in the same folder.
            folder = (out / request_id) if out is not None else Path(scratch)
            folder.mkdir(parents=True, exist_ok=True)
            (path,) = output.save(folder)
            data = path.read_bytes()
        record = output.provenance[0]
        return {
            "id": request_id,
            "seed": record.seed,
            "file": str(path) if out is not None else path.name,
            "png_base64": base64.b64encode(data).decode("ascii"),
            "provenance": record.to_dict(),
        }

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="pipeline folder or hub id (default: the embedded tiny model)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads per request (default: 1)")
    parser.add_argument("--out", type=Path, default=None, help="keep the PNG files in this folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads must be a positive int, got {args.threads}")
    import uvicorn

    uvicorn.run(create_app(args.model, args.threads, args.out), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
