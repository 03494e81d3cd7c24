"""Image references: `[registry/]repo[:tag][@digest]` (engine.md §14.1).

Used by the target parser (every service image is stored normalised), the planner (is the
target image the one a container runs?) and the engine (which registry to authenticate with).
Pure string work: total on any input, never raises.
"""

from __future__ import annotations

from typing import NamedTuple


class ImageRef(NamedTuple):
    registry: str | None
    repo: str
    tag: str | None
    digest: str | None


def parse_image_name(name: str) -> ImageRef:
    """Split an image reference into its parts (no validation: odd input stays in `repo`)."""
    rest, _, digest = name.partition("@")
    registry: str | None = None
    first, sep, remainder = rest.partition("/")
    # Docker's rule: the first component is a registry host only if it looks like one.
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, rest = first, remainder
    # A tag can only live in the last path component (a registry port is not a tag).
    head, slash, last = rest.rpartition("/")
    base, colon, tag = last.partition(":")
    repo = f"{head}{slash}{base}"
    return ImageRef(registry, repo, tag if colon else None, digest if digest else None)


def normalise_image_name(name: str) -> str:
    """Add `:latest` when there is neither tag nor digest; drop the tag when a digest exists."""
    ref = parse_image_name(name)
    prefix = f"{ref.registry}/" if ref.registry is not None else ""
    if ref.digest is not None:
        return f"{prefix}{ref.repo}@{ref.digest}"
    return f"{prefix}{ref.repo}:{ref.tag if ref.tag is not None else 'latest'}"


def image_registry(name: str) -> str | None:
    """The registry host of a reference (`127.0.0.1:5000`), or None for Docker Hub names."""
    return parse_image_name(name).registry


def image_digest(name: str) -> str | None:
    return parse_image_name(name).digest


def same_image(a: str, b: str) -> bool:
    """Two references name the same image when their names or their digests are equal."""
    if normalise_image_name(a) == normalise_image_name(b):
        return True
    da, db = image_digest(a), image_digest(b)
    return da is not None and da == db
