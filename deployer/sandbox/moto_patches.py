"""Fixes for moto gaps that keep the AWS provider 3.39 from settling (filled in by the Terraform work)."""

from __future__ import annotations


def apply() -> None:
    """Apply every patch to the moto modules loaded in this process."""
