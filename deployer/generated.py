"""Secrets deployer makes itself, once: `deployments/secrets-ENV` (0600, gitignored).

A stack's `[[generate]]` entries (an app key, database and Redis passwords, a backup key, a JWT
secret) are generated the first time an apply needs them and never again: a rerun reads them
back unchanged, and a newly declared one is appended without touching the others. Values a
stack `ask`s for (a domain, an e-mail) are taken from the env file when it has them, else asked
once when a person is there, and kept beside the secrets.

    ensure(project, stack, env, ask=None) → (values, StepResult)
"""

from __future__ import annotations

import base64
import dataclasses
import os
import re
import secrets as random_source
import stat
import string
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from deployer.config import DEPLOYMENTS_DIR, EnvConfig, parse_env_text
from deployer.errors import ConfigError
from deployer.results import CHANGED, UNCHANGED, StepResult
from deployer.stacks import Generated, Stack, read_text

ALNUM = string.ascii_letters + string.digits
# An asked value is written unquoted between single quotes: nothing that could end the quote,
# start a new line or be read as an expansion by a less careful reader.
_ASKED = re.compile(r"[^'\"\\\n\r$`]{1,256}")
# Reads one value from a person; the prompt names the variable, never a value.
Ask = Callable[[str], str]


def secrets_path(project: Path, env: str) -> Path:
    return project / DEPLOYMENTS_DIR / f"secrets-{env}"


def make(item: Generated, token_bytes: Callable[[int], bytes] = random_source.token_bytes,
         kept: Mapping[str, str] | None = None) -> str:
    """A new value for `item`, from the OS's random source (keys and certificates: from the
    `cryptography` library's, which is the OS's too). `kept`: the values made before it.

    >>> make(Generated("k", "hex", 4), lambda n: bytes(range(n)))
    '00010203'
    >>> make(Generated("k", "laravel", 3), lambda n: b"abc")
    'base64:YWJj'
    """
    if item.format in ("rsa-key", "x509"):
        return _pki(item, kept or {})
    raw = token_bytes(item.length)
    if item.format == "hex":
        return raw.hex()
    if item.format == "alnum":  # one byte per character; rejection keeps the choice uniform
        chars: list[str] = []
        while len(chars) < item.length:
            chars += [ALNUM[b % 62] for b in token_bytes(item.length) if b < 248]
        return "".join(chars[:item.length])
    text = base64.b64encode(raw).decode()
    return f"base64:{text}" if item.format == "laravel" else text


CERT_DAYS = 3650  # a self-signed certificate for a load balancer the operator replaces with a real one


def _pki(item: Generated, kept: Mapping[str, str]) -> str:
    """An RSA key, or a self-signed certificate for `item.subject` signed by the kept key."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    if item.format == "rsa-key":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption()).decode().strip()
    signer = serialization.load_pem_private_key(kept[item.key].encode(), password=None)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, item.subject)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(signer.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(item.subject)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(signer, hashes.SHA256()))  # type: ignore[arg-type]  # an RSA key: checked by format
    return cert.public_bytes(serialization.Encoding.PEM).decode().strip()


def read(path: Path) -> dict[str, str]:
    """The kept values; {} when the file does not exist yet. A file others can read is refused
    (it holds secrets), as is one that does not parse."""
    if not path.exists():
        return {}
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise ConfigError(f"{path} is mode {mode:04o}: it holds secrets; run chmod 600 {path}")
    values, problems = parse_env_text(read_text(path), str(path))
    if problems:
        raise ConfigError(problems)
    return values


def render(values: Mapping[str, str]) -> str:
    """The file's text, one `KEY='value'` a line, in the order given."""
    lines = ["# Made by deployer: generated once, never regenerated. Keep it; never commit it."]
    lines += [f"{key}='{value}'" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def ensure(project: Path, stack: Stack, env: EnvConfig, *, ask: Ask | None = None,
           ) -> tuple[dict[str, str], StepResult]:
    """Every value the stack keeps: read back, or generated (or asked) now and written. The
    file is replaced whole, atomically, at mode 0600 from its creation; what was there is kept
    byte for byte."""
    path = secrets_path(project, env.name)
    kept = read(path)
    added: list[str] = []
    for item in stack.generate:
        if item.name not in kept:
            kept[item.name] = make(item, kept=kept)
            added.append(item.name)
    missing = []
    for name in stack.variables.ask:
        if name in kept or env.values.get(name):
            continue
        answer = ask(name).strip() if ask is not None else ""
        if not answer:
            missing.append(name)
        elif not _ASKED.fullmatch(answer):
            raise ConfigError(f"{name}: quotes, backslashes, '$', '`' and line breaks are not"
                              " allowed (at most 256 characters)")
        else:
            kept[name] = answer
            added.append(name)
    if missing:
        raise ConfigError(f"{env.path}: set {', '.join(missing)} (or run interactively to be"
                          f" asked once); {stack.name} needs {'them' if len(missing) > 1 else 'it'}")
    if not added:
        return kept, StepResult("secrets", UNCHANGED, f"{path}: {len(kept)} kept, none new")
    _write_private(path, render(kept))
    if read(path) != kept:  # what is read back is what the hosts will get
        raise ConfigError(f"{path}: did not read back as written")
    return kept, StepResult("secrets", CHANGED, f"{path}: added {', '.join(added)}"
                                                f" ({len(kept) - len(added)} kept)")


def with_kept(stack: Stack, env: EnvConfig, kept: Mapping[str, str]) -> EnvConfig:
    """`env` with the kept values beside the env file's (the env file's win for asked names);
    the generated ones are secret: masked everywhere."""
    values = {**env.values, **kept}
    values.update({n: env.values[n] for n in stack.variables.ask if env.values.get(n)})
    generated = {g.name for g in stack.generate}
    return dataclasses.replace(env, values=MappingProxyType(values),
                               secret_names=env.secret_names | generated)


def placeholders(stack: Stack, env: EnvConfig, project: Path) -> EnvConfig:
    """For checks before a run: the kept values where the file has them, stand-ins for the rest
    (a template that uses them renders; one that misspells them fails)."""
    try:
        kept = read(secrets_path(project, env.name))
    except ConfigError:
        kept = {}
    stand_in = {n: f"<generated {n}>" for n in stack.kept_names if n not in kept}
    return with_kept(stack, env, {**stand_in, **kept})


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask said
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)
