"""Installed versions of named distributions, for the provenance every artifact records."""
from __future__ import annotations

from importlib import metadata


def package_versions(names) -> dict:
    """{name: version, or None when it is not installed}."""
    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out
