"""The signing identity: made once (also by processes racing), user-supplied chains, clear errors for bad files."""

from __future__ import annotations

import datetime
import logging
import os
import subprocess
import sys
import textwrap
import time

import platformdirs
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from diffusers_repro.files.identity import (
    HOME_ENV,
    SigningIdentity,
    default_identity,
    identity_home,
    init_identity,
    trust_anchors,
)
from diffusers_repro.files.signing import CredentialsError


def test_the_test_session_never_uses_the_user_config_folder(repro_home):
    assert os.environ[HOME_ENV] == str(repro_home)
    assert identity_home() == repro_home


def test_identity_home_defaults_to_the_platform_user_config_folder(monkeypatch):
    monkeypatch.delenv(HOME_ENV)
    assert identity_home() == platformdirs.user_config_path("diffusers-repro", appauthor=False)


def test_init_identity_makes_a_ca_and_a_signer_with_the_extensions_c2pa_requires(tmp_path):
    identity, made = init_identity(tmp_path)
    assert made is True
    folder = tmp_path / "identity"
    assert sorted(path.name for path in folder.iterdir()) == ["ca.pem", "signer-chain.pem", "signer-key.pem"]
    assert (folder / "signer-key.pem").stat().st_mode & 0o777 == 0o600
    signer, ca = x509.load_pem_x509_certificates((folder / "signer-chain.pem").read_bytes())
    assert ca == x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert signer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert signer.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature is True
    assert list(signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.EMAIL_PROTECTION
    ]
    assert signer.issuer == ca.subject
    assert identity.algorithm == "es256"
    assert identity.signer.startswith("diffusers-repro local signer ")
    assert identity.issuer.startswith("diffusers-repro local CA ")
    # A random id, never the user or the host name.
    assert os.environ.get("USER", "root") not in identity.signer


def test_init_identity_keeps_an_existing_identity_and_force_replaces_it(tmp_path):
    first, _ = init_identity(tmp_path)
    again, made = init_identity(tmp_path)
    assert (made, again.signer, again.chain_pem) == (False, first.signer, first.chain_pem)
    replaced, made = init_identity(tmp_path, force=True)
    assert made is True and replaced.signer != first.signer
    old = [path for path in tmp_path.iterdir() if path.name.startswith("identity.old-")]
    assert len(old) == 1 and (old[0] / "signer-chain.pem").read_bytes() == first.chain_pem
    assert not [path for path in tmp_path.iterdir() if path.name.endswith(".tmp")]


def test_default_identity_is_made_on_first_use_with_a_one_line_notice(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "home"))
    with caplog.at_level(logging.WARNING, logger="diffusers_repro"):
        identity = default_identity()
        assert default_identity() == identity
    notices = [record.getMessage() for record in caplog.records]
    assert notices == [
        f"made a signing identity for Content Credentials in {tmp_path / 'home' / 'identity'} (signer "
        f"{identity.signer!r}); see `diffusers-repro keys show`"
    ]
    assert trust_anchors() == [tmp_path / "home" / "identity" / "ca.pem"]


def test_processes_starting_at_once_end_with_one_identity(tmp_path):
    home = tmp_path / "home"
    script = textwrap.dedent(
        """
        import sys, time
        from diffusers_repro.files.identity import init_identity
        while time.time() < float(sys.argv[1]):
            time.sleep(0.001)
        identity, made = init_identity()
        print(identity.signer, made, sep="|")
        """
    )
    start = time.time() + 3.0
    env = {**os.environ, HOME_ENV: str(home), "PYTHONPATH": os.getcwd()}
    processes = [
        subprocess.Popen([sys.executable, "-c", script, str(start)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(6)
    ]
    outputs = [process.communicate(timeout=120)[0].strip().split("|") for process in processes]
    assert all(process.returncode == 0 for process in processes)
    assert len({signer for signer, _ in outputs}) == 1
    assert sorted(made for _, made in outputs) == ["False"] * 5 + ["True"]
    assert sorted(path.name for path in home.iterdir()) == ["identity"]


def _chain_and_key(tmp_path, *, signer_is_ca: bool = False, curve=None):
    key = ec.generate_private_key(curve or ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example signer")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=signer_is_ca, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    chain, key_file = tmp_path / "chain.pem", tmp_path / "key.pem"
    chain.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return chain, key_file


def test_from_files_reads_a_user_chain(tmp_path):
    made, _ = init_identity(tmp_path / "company")
    identity = SigningIdentity.from_files(made.chain_path, made.key_path)
    assert (identity.signer, identity.issuer, identity.algorithm) == (made.signer, made.issuer, "es256")
    assert identity.describe() == f"{made.signer!r}, issued by {made.issuer!r}, ES256 ({made.chain_path})"


def test_the_signature_chain_drops_self_signed_roots_and_keeps_the_rest(tmp_path):
    made, _ = init_identity(tmp_path / "company")
    signer, root = x509.load_pem_x509_certificates(made.chain_pem)
    assert x509.load_pem_x509_certificates(made.signature_chain_pem) == [signer]
    # A chain without its root is kept whole; a lone self-signed certificate too (c2pa judges it).
    below = SigningIdentity.from_files(_write(tmp_path / "below.pem", signer), made.key_path)
    assert below.signature_chain_pem == made.signature_chain_pem
    assert (below.signer, below.issuer) == (made.signer, made.issuer)
    chain, key = _chain_and_key(tmp_path)
    alone = SigningIdentity(chain.read_bytes(), key.read_bytes(), "es256", "x", "x")
    assert alone.signature_chain_pem == chain.read_bytes()


def _write(path, certificate):
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def test_from_files_refuses_a_chain_c2pa_cannot_sign_with(tmp_path):
    # A self-signed certificate without the extensions c2pa-rs requires of a signer.
    chain, key = _chain_and_key(tmp_path)
    with pytest.raises(CredentialsError, match=rf"^cannot sign with {chain}: Signature: the certificate is invalid$"):
        SigningIdentity.from_files(chain, key)


def test_from_files_errors_name_the_file(tmp_path):
    chain, key = _chain_and_key(tmp_path)
    with pytest.raises(CredentialsError, match=rf"^certificate chain '{tmp_path}/missing.pem': no such file$"):
        SigningIdentity.from_files(tmp_path / "missing.pem", key)
    with pytest.raises(CredentialsError, match=rf"^private key '{tmp_path}/nokey.pem': no such file$"):
        SigningIdentity.from_files(chain, tmp_path / "nokey.pem")
    (tmp_path / "text.pem").write_text("hello")
    with pytest.raises(CredentialsError, match=r"holds no PEM certificate \(-----BEGIN CERTIFICATE-----\)$"):
        SigningIdentity.from_files(tmp_path / "text.pem", key)
    with pytest.raises(CredentialsError, match=rf"^private key '{tmp_path}/text.pem' is not a PEM private key$"):
        SigningIdentity.from_files(chain, tmp_path / "text.pem")
    other = tmp_path / "other"
    other.mkdir()
    _, other_key = _chain_and_key(other)
    with pytest.raises(CredentialsError, match=r"does not belong to the first certificate of"):
        SigningIdentity.from_files(chain, other_key)
    assert issubclass(CredentialsError, ValueError)
