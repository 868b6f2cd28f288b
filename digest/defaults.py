"""The defaults shipped with digest (feeds.yaml, templates), read where they were installed."""

from __future__ import annotations

from pathlib import Path


def embedded_text(name: str) -> str:
    """A file from the defaults shipped in the wheel, or from the source checkout."""
    packaged = Path(__file__).resolve().parent / "_defaults" / name  # the wheel installs plain files
    if packaged.is_file():
        return packaged.read_text(encoding="utf-8")
    return (Path(__file__).resolve().parent.parent / name).read_text(encoding="utf-8")
