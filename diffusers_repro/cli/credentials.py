"""The command line's Content Credentials parts: ``keys init|show``, ``find``, and the signing and trust options.

``diffusers-repro keys init`` makes this machine's signing identity (``--force`` replaces it); ``keys show`` prints
who signs and which trust anchors count. ``diffusers-repro find IMAGE DIR...`` names the generated files a copy came
from, by perceptual fingerprint: exit 0 with the matches, 1 when nothing matches.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from .common import IMAGE_SUFFIXES, UsageError, add_max_file_bytes_argument, printable

__all__ = ["add_credentials_commands", "add_signing_options", "add_trust_option", "signing_from_args"]


def _usage_error(message: str) -> Exception:
    return UsageError(message)


def _similarity_threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0.5 and 1, got {text!r}") from None
    if not 0.5 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number between 0.5 and 1, got {text!r}")
    return value


def _readable_file(text: str) -> Path:
    """A file the command will read (``--trust``, ``--cert``, ``--key``): checked when the line is parsed, so a
    typo is one usage error before any work, not a failure of every image."""
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text!r}: no such file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not a regular file; expected a PEM file")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as error:
        raise argparse.ArgumentTypeError(f"{text!r}: cannot read it: {error.strerror or error}") from None
    return path


def add_signing_options(parser: argparse.ArgumentParser) -> None:
    """``--format``, ``--quality``, ``--no-sign``, ``--cert``, ``--key`` of commands that write images."""
    parser.add_argument(
        "--format", choices=("png", "jpeg", "webp"), default="png", help="image file format (default: png)"
    )
    parser.add_argument("--quality", type=int, help="JPEG/WebP quality 1-100 (default: 95)")
    parser.add_argument(
        "--no-sign", action="store_true", help="write files without Content Credentials (signed C2PA manifest)"
    )
    parser.add_argument(
        "--cert",
        type=_readable_file,
        help="PEM certificate chain to sign with (signer first); default: this machine's identity",
    )
    parser.add_argument("--key", type=_readable_file, help="PEM private key of --cert")
    parser.add_argument(
        "--tsa",
        metavar="URL",
        help="RFC 3161 time-stamp authority that time-stamps every signature (default: tsa_url in "
        "$DIFFUSERS_REPRO_HOME/settings.json, else none)",
    )


def signing_from_args(args: argparse.Namespace) -> Any:
    """``sign=`` for `save_image` from ``--no-sign``, ``--cert`` and ``--key``: `True`, `False` or an identity."""
    from ..files import SigningIdentity, check_can_sign

    if args.no_sign and (args.cert or args.key or args.tsa):
        raise _usage_error("--no-sign writes unsigned files; leave out --cert, --key and --tsa, or --no-sign")
    if (args.cert is None) != (args.key is None):
        raise _usage_error("--cert and --key go together: the certificate chain and its private key")
    if args.quality is not None and args.format == "png":
        raise _usage_error(f"--quality {args.quality}: PNG is lossless; --quality goes with --format jpeg or webp")
    if args.quality is not None and not 1 <= args.quality <= 100:
        raise _usage_error(f"--quality {args.quality}: expected an integer from 1 to 100")
    if args.no_sign:
        return False
    if args.cert is not None:
        return SigningIdentity.from_files(args.cert, args.key, tsa_url=args.tsa)
    if args.tsa is not None:
        from ..files import default_identity

        identity = default_identity().with_tsa(args.tsa)
        check_can_sign(identity)  # a time-stamp authority that fails is an error before any image is made
        return identity
    return True


def add_trust_option(parser: argparse.ArgumentParser) -> None:
    """``--trust FILE.pem`` (repeatable) of commands that read Content Credentials."""
    parser.add_argument(
        "--trust",
        type=_readable_file,
        action="append",
        default=[],
        metavar="FILE.pem",
        help="a PEM certificate to trust as a signer's root, besides this machine's own CA; repeat for several",
    )


def add_credentials_commands(commands: Any, parser_class: type) -> None:
    """Adds ``keys`` and ``find`` to the subcommands of ``diffusers-repro``."""
    keys = commands.add_parser(
        "keys",
        help="this machine's signing identity for Content Credentials",
        description=(
            "Content Credentials are signed with a local CA and signer certificate kept under $DIFFUSERS_REPRO_HOME "
            "(default: the user config folder of diffusers-repro). `keys init` makes them (done on first write "
            "otherwise), `keys show` prints who signs and the trust anchors."
        ),
    )
    actions = keys.add_subparsers(dest="keys_command", metavar="ACTION", parser_class=parser_class)
    init = actions.add_parser("init", help="make the local signing identity (if there is none)")
    init.add_argument("--force", action="store_true", help="replace an existing identity (the old one is kept aside)")
    init.set_defaults(handler=_keys_init)
    show = actions.add_parser("show", help="who signs, and which certificates are trusted")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_keys_show)
    keys.set_defaults(handler=_keys_missing)

    find = commands.add_parser(
        "find",
        help="find the generated file(s) a copy of an image came from",
        description=(
            "Compares the perceptual fingerprint of IMAGE (any copy: resized, re-encoded, stripped of metadata) with "
            "the images in each DIR (recursively, up to 32 folders deep; each file's fingerprint is computed from its "
            "own pixels, never taken from a manifest). Prints every match with its similarity. Exit 0 when "
            "something matches, 1 when nothing does."
        ),
    )
    find.add_argument("image", type=Path, metavar="IMAGE", help="the copy to look up")
    find.add_argument("dirs", type=Path, nargs="+", metavar="DIR", help="folders of generated images")
    find.add_argument(
        "--threshold",
        type=_similarity_threshold,
        help="smallest similarity that counts as a match, 0.5-1 (default: 0.8)",
    )
    find.add_argument("--json", action="store_true", help="print JSON")
    add_max_file_bytes_argument(find)
    find.set_defaults(handler=_find)


def _keys_missing(args: argparse.Namespace) -> int:
    raise _usage_error("keys: an action is required: init or show (see diffusers-repro keys --help)")


def _keys_init(args: argparse.Namespace) -> int:
    from ..files import IDENTITY_DIR, identity_home, init_identity

    identity, made = init_identity(force=args.force)
    folder = identity_home() / IDENTITY_DIR
    if made:
        print(f"made a signing identity in {folder}: signer {identity.describe()}")
    else:
        print(f"a signing identity exists in {folder}: signer {identity.describe()} (--force replaces it)")
    return 0


def _keys_show(args: argparse.Namespace) -> int:
    from ..files import IDENTITY_DIR, identity_home, init_identity, trust_anchors

    folder = identity_home() / IDENTITY_DIR
    if not folder.is_dir():
        raise _usage_error(f"no signing identity in {folder} yet; `diffusers-repro keys init` makes one")
    identity, _ = init_identity()
    anchors = [str(path) for path in trust_anchors()]
    if args.json:
        print(
            json.dumps(
                {
                    "signer": identity.signer,
                    "issuer": identity.issuer,
                    "algorithm": identity.algorithm,
                    "certificate_chain": str(identity.chain_path),
                    "private_key": str(identity.key_path),
                    "trust_anchors": anchors,
                },
                indent=2,
            )
        )
        return 0
    print(printable(f"signer:        {identity.signer}"))
    print(printable(f"issued by:     {identity.issuer}"))
    print(f"algorithm:     {identity.algorithm.upper()}")
    print(f"certificates:  {identity.chain_path}")
    print(f"private key:   {identity.key_path}")
    print(printable(f"trusted roots: {', '.join(anchors) if anchors else 'none'}"))
    return 0


MAX_FIND_DEPTH = 32
"""Deepest folder level `find` walks into below each DIR."""
MAX_FIND_FILES = 100_000
"""Most image files `find` looks at in one DIR."""


def _image_paths(folder: Path) -> list[Path]:
    """The image files under ``folder``: walked without recursion up to `MAX_FIND_DEPTH` levels, links to folders
    not followed (no loops), regular files only (a named pipe would wait forever), at most `MAX_FIND_FILES`."""
    found: list[Path] = []
    stack = [(folder, 0)]
    while stack and len(found) < MAX_FIND_FILES:
        directory, depth = stack.pop()
        try:
            with os.scandir(directory) as entries:
                listed = sorted(entries, key=lambda entry: entry.name)
        except OSError:
            continue
        for entry in listed:
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if depth < MAX_FIND_DEPTH:
                        stack.append((Path(entry.path), depth + 1))
                elif Path(entry.name).suffix.lower() in IMAGE_SUFFIXES and entry.is_file():
                    found.append(Path(entry.path))
            except OSError:
                continue
    return sorted(found)


def _fingerprints_in(folder: Path, max_bytes: int | None = None) -> dict[Path, str]:
    """``{file: fingerprint}`` of the images under ``folder``, each computed from the file's own pixels.

    A run's ``manifest.jsonl`` also lists fingerprints, but anyone who can write the folder can write it: a manifest
    line giving one file's fingerprint to another would name the wrong file and hide the right one.
    """
    from ..files import fingerprint

    found: dict[Path, str] = {}
    for path in _image_paths(folder):
        try:
            found[path] = fingerprint(path, max_bytes)
        except (OSError, ValueError, SyntaxError):
            continue  # not an image after all, or past the limits; a folder of outputs may hold anything
    return found


def _find(args: argparse.Namespace) -> int:
    from ..files import MATCH_THRESHOLD, fingerprint, similarity

    threshold = MATCH_THRESHOLD if args.threshold is None else args.threshold
    if not args.image.is_file():
        raise _usage_error(f"{str(args.image)!r}: no such file")
    try:
        query = fingerprint(args.image, args.max_file_bytes)
    except (OSError, ValueError, SyntaxError) as error:
        detail = str(error).removeprefix(f"{args.image} cannot be read as an image: ")
        raise _usage_error(f"{str(args.image)!r} is not an image that can be read: {detail}") from None
    for folder in args.dirs:
        if not folder.is_dir():
            raise _usage_error(f"{str(folder)!r}: no such folder")
    matches = []
    for folder in args.dirs:
        for path, value in _fingerprints_in(folder, args.max_file_bytes).items():
            score = similarity(query, value)
            if score >= threshold:
                matches.append((score, path))
    matches.sort(key=lambda item: (-item[0], str(item[1])))
    if args.json:
        print(json.dumps([{"file": str(path), "similarity": round(score, 4)} for score, path in matches]))
    elif matches:
        for score, path in matches:
            print(f"{printable(str(path))}  similarity {score:.3f}")
    else:
        print(
            printable(f"no image in {', '.join(map(str, args.dirs))} matches {args.image} (threshold {threshold:g})")
        )
    return 0 if matches else 1
