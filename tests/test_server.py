"""examples/server.py: concurrent requests through FastAPI's test client get the response of the request made alone."""

from __future__ import annotations

import base64
import io
import runpy
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402

from diffusers_repro import read_provenance  # noqa: E402

SERVER = Path(__file__).resolve().parent.parent / "examples" / "server.py"
REQUESTS = [
    {"prompt": "a fox", "seed": 1, "num_inference_steps": 3, "height": 32, "width": 32},
    {"prompt": "a bear", "seed": 2, "num_inference_steps": 2, "height": 32, "width": 64},
    {"prompt": "a cat", "seed": 3, "num_inference_steps": 2, "height": 32, "width": 32, "deterministic": True},
    {"prompt": "a owl", "seed": 4, "negative_prompt": "dark", "num_inference_steps": 3, "height": 32, "width": 32},
    {"prompt": "a dog", "seed": 5, "guidance_scale": 1.0, "num_inference_steps": 2, "height": 64, "width": 32},
    {"prompt": "a hen", "seed": 6, "num_inference_steps": 4, "height": 32, "width": 32},
]


@pytest.fixture(scope="module")
def client(tiny_sd_path, tmp_path_factory):
    app = runpy.run_path(str(SERVER))["create_app"](str(tiny_sd_path), threads=1, out=tmp_path_factory.mktemp("out"))
    with TestClient(app) as client:
        yield client


def generate(client, request):
    response = client.post("/generate", json=request)
    assert response.status_code == 200, response.text
    return response.json()


def pixels(body):
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(body["png_base64"]))))


def test_concurrent_requests_get_the_response_of_the_request_made_alone(client):
    alone = [generate(client, request) for request in REQUESTS]
    before = torch.random.get_rng_state()
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda request: generate(client, request), REQUESTS * 2))
    assert torch.equal(torch.random.get_rng_state(), before)
    for body, reference in zip(together, alone * 2, strict=True):
        assert np.array_equal(pixels(body), pixels(reference))
        assert body["provenance"] == reference["provenance"]
        assert body["seed"] == reference["seed"]
    for body, request in zip(alone, REQUESTS, strict=True):
        record = body["provenance"]
        assert record["environment"]["torch_num_threads"] == 1
        assert record["environment"]["determinism"]["full_determinism"] is request.get("deterministic", False)
        assert record["recipe"]["call"]["prompt"] == request["prompt"]


def test_the_saved_file_carries_the_returned_record(client):
    body = generate(client, REQUESTS[0])
    assert body["seed"] == 1
    assert read_provenance(body["file"]).to_dict() == body["provenance"]
    assert Path(body["file"]).read_bytes() == base64.b64decode(body["png_base64"])


def test_a_request_without_seed_gets_a_random_one_and_returns_it(client):
    body = generate(client, {"prompt": "a fox", "num_inference_steps": 1, "height": 32, "width": 32})
    assert isinstance(body["seed"], int) and body["provenance"]["seed_source"] == "random"
    again = generate(
        client, {"prompt": "a fox", "seed": body["seed"], "num_inference_steps": 1, "height": 32, "width": 32}
    )
    assert np.array_equal(pixels(again), pixels(body))


@pytest.mark.parametrize(
    ("request_body", "field"),
    [
        ({"prompt": "a fox", "sed": 42}, "sed"),
        ({"prompt": "a fox", "seed": -1}, "seed"),
        ({"prompt": "a fox", "height": 30}, "height"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "a fox", "num_inference_steps": 0}, "num_inference_steps"),
    ],
)
def test_bad_requests_are_refused_naming_the_field(client, request_body, field):
    response = client.post("/generate", json=request_body)
    assert response.status_code == 422
    assert [error["loc"][-1] for error in response.json()["detail"]] == [field]


def test_health(client):
    assert client.get("/health").json() == {"status": "ok"}
