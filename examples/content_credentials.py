"""Content Credentials: signed files, a tampered copy caught, a stripped copy found again.

Saves two images as signed JPEG files, reads their credentials back, changes one byte of a copy (its credentials
then say ``tampered``), and strips and shrinks another copy the way an upload site does, which the perceptual
fingerprint still finds.

    python examples/content_credentials.py [OUTPUT_FOLDER]
"""

import io
import sys
import tempfile
from pathlib import Path

import PIL.Image

from diffusers_repro import ReproStableDiffusionPipeline, read_credentials
from diffusers_repro.files.fingerprints import fingerprint, similarity
from diffusers_repro.tiny import tiny_pipeline_path


def main() -> None:
    folder = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="credentials-"))
    pipe = ReproStableDiffusionPipeline.from_pretrained(tiny_pipeline_path("sd"))
    pipe.set_progress_bar_config(disable=True)
    out = pipe(["a red fox in fresh snow", "a lighthouse at dusk"], seed=[0, 1], num_inference_steps=2)
    paths = out.save(folder, format="jpeg", quality=90)  # signed with this machine's identity
    for path in paths:
        print(f"{path.name}: {read_credentials(path).state}")

    tampered = folder / "tampered.jpg"
    data = bytearray(paths[0].read_bytes())
    data[-20] ^= 0x01  # one byte of the compressed image
    tampered.write_bytes(bytes(data))
    credentials = read_credentials(tampered)
    print(f"{tampered.name}: {credentials.state} ({', '.join(credentials.failures)})")

    buffer = io.BytesIO()
    PIL.Image.open(paths[1]).resize((48, 48)).save(buffer, format="JPEG", quality=70)  # no metadata at all
    copy = PIL.Image.open(buffer)
    scores = {path.name: similarity(fingerprint(copy), fingerprint(path)) for path in paths}
    best = max(scores, key=scores.get)
    print(f"stripped copy: unsigned, came from {best} (similarity {scores[best]:.2f})")


if __name__ == "__main__":
    main()
