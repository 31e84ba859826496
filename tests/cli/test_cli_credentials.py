"""The command line's Content Credentials: keys init/show, generate --format/--no-sign/--cert, verify and inspect."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from diffusers_repro.cli import main
from diffusers_repro.files.credentials import read_credentials
from diffusers_repro.files.identity import HOME_ENV, init_identity
from tests.files.test_identity import _chain_and_key


def run(capsys, *argv):
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def generate_args(tiny_sd_path, out, *extra):
    common = ["--steps", "2", "--threads", "1", "--no-progress", "--out", out]
    return ["generate", "--model", tiny_sd_path, "--prompt", "a fox", "--seeds", "0,1", *common, *extra]


def test_keys_init_and_show(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(HOME_ENV, str(tmp_path))
    code, out, err = run(capsys, "keys", "show")
    assert code == 2
    assert err == (
        f"diffusers-repro: error: no signing identity in {tmp_path / 'identity'} yet; `diffusers-repro keys init` "
        "makes one\n"
    )
    code, out, _ = run(capsys, "keys", "init")
    identity, _ = init_identity()
    assert (code, out) == (0, f"made a signing identity in {tmp_path / 'identity'}: signer {identity.describe()}\n")
    code, out, _ = run(capsys, "keys", "init")
    assert out.startswith("a signing identity exists in ") and out.endswith("(--force replaces it)\n")
    code, out, _ = run(capsys, "keys", "show")
    assert code == 0
    assert out.splitlines()[0] == f"signer:        {identity.signer}"
    assert out.splitlines()[-1] == f"trusted roots: {tmp_path / 'identity' / 'ca.pem'}"
    code, out, _ = run(capsys, "keys", "show", "--json")
    assert json.loads(out)["signer"] == identity.signer
    code, _, err = run(capsys, "keys")
    assert code == 2 and "keys: an action is required: init or show" in err


@pytest.mark.parametrize("format", ["jpeg", "webp"])
def test_generate_a_lossy_format_then_verify_and_inspect(tiny_sd_path, tmp_path, capsys, format):
    out = tmp_path / "grid"
    code, _, _ = run(capsys, *generate_args(tiny_sd_path, out, "--format", format, "--quality", "90"))
    assert code == 0
    suffix = {"jpeg": ".jpg", "webp": ".webp"}[format]
    assert sorted(path.name for path in out.glob("job*")) == [f"job000000-seed0{suffix}", f"job000001-seed1{suffix}"]
    lines = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [line["file"] for line in lines] == [f"job000000-seed0{suffix}", f"job000001-seed1{suffix}"]
    code, output, _ = run(capsys, "verify", out)
    assert code == 0, output
    assert f"job000000-seed0{suffix}: bitwise (lossy {format}: the regenerated output equals" in output
    assert "    credentials: trusted: signed by 'diffusers-repro local signer " in output
    code, output, _ = run(capsys, "inspect", out / f"job000001-seed1{suffix}")
    assert code == 0
    assert "credentials:     trusted: signed by 'diffusers-repro local signer " in output
    assert f"pixels:          lossy {format}: the encoded image is digested; the Content Credentials vouch" in output
    # Resuming the same command keeps the files.
    code, output, _ = run(capsys, *generate_args(tiny_sd_path, out, "--format", format, "--quality", "90"))
    assert "(0 generated, 2 already there)" in output


def test_generate_no_sign_then_verify_says_unsigned(tiny_sd_path, tmp_path, capsys):
    out = tmp_path / "grid"
    assert run(capsys, *generate_args(tiny_sd_path, out, "--no-sign"))[0] == 0
    assert read_credentials(out / "job000000-seed0.png").state == "unsigned"
    code, output, _ = run(capsys, "verify", out)
    assert code == 0
    assert "    credentials: unsigned (no Content Credentials)" in output


def test_generate_with_a_user_chain_and_bad_signing_options(tiny_sd_path, tmp_path, capsys):
    chain, key = _chain_and_key(tmp_path, signer_is_ca=True)
    out = tmp_path / "grid"
    code, _, err = run(capsys, *generate_args(tiny_sd_path, out, "--cert", chain))
    assert (code, err) == (
        2,
        "diffusers-repro: error: --cert and --key go together: the certificate chain and its private key\n",
    )
    code, _, err = run(capsys, *generate_args(tiny_sd_path, out, "--no-sign", "--cert", chain, "--key", key))
    assert code == 2 and "--no-sign writes unsigned files" in err
    code, _, err = run(capsys, *generate_args(tiny_sd_path, out, "--cert", tmp_path / "none.pem", "--key", key))
    assert err == (
        f"diffusers-repro: error: generate: argument --cert: '{tmp_path}/none.pem': no such file (see diffusers-repro "
        "generate --help)\n"
    )
    code, _, err = run(capsys, *generate_args(tiny_sd_path, out, "--quality", "90"))
    assert code == 2 and "--quality 90: PNG is lossless" in err
    # A certificate c2pa refuses (a CA as signer): one line naming it, and no image left behind.
    code, _, err = run(capsys, *generate_args(tiny_sd_path, out, "--cert", chain, "--key", key))
    assert code == 2 and err.startswith(f"diffusers-repro: error: cannot sign with {chain}: ")
    assert not list(out.glob("job*"))
    home = tmp_path / "company"
    identity, _ = init_identity(home)
    code, _, _ = run(
        capsys, *generate_args(tiny_sd_path, out, "--cert", identity.chain_path, "--key", identity.key_path)
    )
    assert code == 0
    credentials = read_credentials(out / "job000000-seed0.png")
    assert (credentials.state, credentials.signer) == ("valid", identity.signer)
    code, output, _ = run(capsys, "inspect", out / "job000000-seed0.png", "--trust", home / "identity" / "ca.pem")
    assert "credentials:     trusted: signed by " in output


def test_torchrun_processes_make_one_identity_and_sign_every_file_with_it(tiny_sd_path, tmp_path):
    home, out = tmp_path / "home", tmp_path / "grid"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command += ["-m", "diffusers_repro", *map(str, generate_args(tiny_sd_path, out, "--seeds", "0-3"))]
    command.remove("0,1")
    command.remove("--seeds")
    env = {**os.environ, HOME_ENV: str(home), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env["PYTHONPATH"] = os.getcwd()
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert sorted(path.name for path in home.iterdir()) == ["identity"]
    identity, made = init_identity(home)
    assert made is False
    signers = {read_credentials(path, trust=[home / "identity" / "ca.pem"]).signer for path in out.glob("job*.png")}
    assert signers == {identity.signer}
    assert completed.stderr.count("made a signing identity") == 1


def test_generate_with_a_time_stamp_authority(tiny_sd_path, tmp_path, capsys):
    from cryptography.hazmat.primitives.asymmetric import ec
    from tsa_server import certificate, serve_tsa

    ca_key = ec.generate_private_key(ec.SECP256R1())
    server, url, requests = serve_tsa(certificate("test CA", ca_key, ca=True), ca_key)
    try:
        out = tmp_path / "grid"
        code, _, err = run(capsys, *generate_args(tiny_sd_path, out, "--no-sign", "--tsa", url))
        assert code == 2 and "leave out --cert, --key and --tsa, or --no-sign" in err
        code, _, err = run(capsys, *generate_args(tiny_sd_path, out, "--tsa", url))
        assert (code, len(requests)) == (0, 3)  # the trial signature, then one per image
        credentials = read_credentials(out / "job000000-seed0.png")
        assert credentials.timestamp is not None and credentials.state == "trusted", credentials
    finally:
        server.shutdown()
