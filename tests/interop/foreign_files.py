"""Files written the way other tools' save code writes them (PNG text chunks with Pillow, EXIF with piexif)."""

from __future__ import annotations

import io
import json

import piexif
import piexif.helper
import PIL.Image
import PIL.PngImagePlugin

from diffusers_repro.files.imagefile import parse_image_bytes


def png_with_chunks(chunks: dict[str, str], size=(64, 48)) -> bytes:
    # A1111, ComfyUI and InvokeAI all save PNGs with PngInfo.add_text (tEXt; iTXt when the text is not latin-1).
    info = PIL.PngImagePlugin.PngInfo()
    for key, value in chunks.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    PIL.Image.new("RGB", size, (90, 120, 200)).save(buffer, "PNG", pnginfo=info)
    return buffer.getvalue()


def jpeg_with_user_comment(comment: bytes, format="JPEG", size=(64, 48)) -> bytes:
    # A1111 saves the image, then inserts EXIF with only a UserComment (piexif.insert for JPEG, exif= for WebP).
    exif = piexif.dump({"Exif": {piexif.ExifIFD.UserComment: comment}})
    buffer = io.BytesIO()
    image = PIL.Image.new("RGB", size, (90, 120, 200))
    if format == "JPEG":
        image.save(buffer, "JPEG", quality=90)
        out = io.BytesIO()
        piexif.insert(exif, buffer.getvalue(), out)
        return out.getvalue()
    image.save(buffer, format, quality=90, exif=exif)
    return buffer.getvalue()


def a1111_unicode_comment(text: str) -> bytes:
    return piexif.helper.UserComment.dump(text, encoding="unicode")


def read(data: bytes, name="image.png"):
    return parse_image_bytes(data, name)


def comfyui_graph(lora=True, unknown=False, clip_skip=-2, batch_size=1) -> dict:
    """A text-to-image ComfyUI graph in API format, as its default workflow exports it."""
    graph = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 48, "batch_size": batch_size}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a fox in the snow,\nwinter", "clip": ["11", 0]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["11", 0]}},
        "3": {
            "class_type": "KSampler",
            "inputs": {
                "seed": 156680208700286,
                "steps": 20,
                "cfg": 8.0,
                "sampler_name": "dpmpp_2m",
                "scheduler": "karras",
                "denoise": 1.0,
                "model": ["10", 0] if lora else ["4", 0],
                "positive": ["6", 0],
                "negative": ["7", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
        "11": {
            "class_type": "CLIPSetLastLayer",
            "inputs": {"stop_at_clip_layer": clip_skip, "clip": ["10", 1] if lora else ["4", 1]},
        },
    }
    if lora:
        graph["10"] = {
            "class_type": "LoraLoader",
            "inputs": {
                "lora_name": "fox_style.safetensors",
                "strength_model": 0.8,
                "strength_clip": 0.6,
                "model": ["4", 0],
                "clip": ["4", 1],
            },
        }
    if unknown:
        graph["12"] = {"class_type": "ImageSharpen", "inputs": {"image": ["8", 0], "sharpen_radius": 1}}
        graph["9"]["inputs"]["images"] = ["12", 0]
    return graph


def comfyui_png(graph: dict, workflow: dict | None = None, size=(64, 48)) -> bytes:
    # ComfyUI's SaveImage: add_text("prompt", json.dumps(prompt)), then one chunk per extra_pnginfo key ("workflow").
    chunks = {"prompt": json.dumps(graph)}
    chunks["workflow"] = json.dumps(workflow if workflow is not None else {"nodes": [], "links": [], "version": 0.4})
    return png_with_chunks(chunks, size)


def invokeai_metadata(**changes) -> dict:
    data = {
        "generation_mode": "txt2img",
        "positive_prompt": "a fox in the snow, ünïcödé 狐",
        "negative_prompt": "blurry",
        "width": 64,
        "height": 48,
        "seed": 1234567,
        "rand_device": "cpu",
        "cfg_scale": 7.5,
        "cfg_rescale_multiplier": 0,
        "steps": 30,
        "scheduler": "dpmpp_2m_k",
        "clip_skip": 0,
        "model": {
            "key": "7a6b5c4d-0000-4000-8000-000000000000",
            "hash": "blake3:" + "ab" * 32,
            "name": "Dreamshaper 8",
            "base": "sd-1",
            "type": "main",
        },
        "loras": [],
        "app_version": "5.6.0",
    }
    data.update(changes)
    return data


def invokeai_png(data: dict, size=(64, 48)) -> bytes:
    # InvokeAI's image files service: PngInfo.add_text("invokeai_metadata", metadata JSON), "invokeai_graph", ...
    return png_with_chunks(
        {"invokeai_metadata": json.dumps(data), "invokeai_graph": json.dumps({"id": "g", "nodes": {}})}, size
    )
