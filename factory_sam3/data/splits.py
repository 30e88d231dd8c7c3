"""Deterministic train/valid/test assignment by GROUP, so near-duplicate frames never straddle splits.

A group is a video (all its frames), or a still image (alone, unless ``raw/groups.json`` puts stills of one
camera/session together). Each group's split comes from a hash of ``(seed, group)`` against the cumulative
ratios, so adding groups never moves existing ones. Splits fixed by the source (``raw/splits.json``) win.
Videos and stills are assigned separately and, when a kind has at least three groups, every split with a
positive ratio gets at least one group of that kind (the group whose hash lies nearest that split's interval
is moved from the largest split), so both the image and the video dataset have a valid and a test split.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from pathlib import Path

from factory_sam3 import layout
from factory_sam3.errors import UserError
from factory_sam3.layout import SPLITS


def ratios_problem(ratios: object) -> str | None:
    """What is wrong with a ``to_coco.splits`` value (split name -> ratio), or None."""
    if not isinstance(ratios, Mapping):
        return "must map split names to ratios"
    unknown = set(ratios) - set(SPLITS)
    if unknown:
        return f"has unknown split(s) {sorted(unknown)}; use {list(SPLITS)}"
    for name in SPLITS:
        value = ratios.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            return f"'{name}' must be a non-negative number, got {value!r}"
    if sum(ratios.get(name, 0) for name in SPLITS) <= 0:
        return "ratios must not all be zero"
    return None


def normalize_ratios(ratios: Mapping[str, float], file: object = None) -> dict[str, float]:
    """Check ``to_coco.splits`` and scale it to sum to 1, in the order train, valid, test."""
    problem = ratios_problem(ratios)
    if problem:
        raise UserError(f"'to_coco.splits' {problem}", file)
    values = {name: float(ratios.get(name, 0)) for name in SPLITS}
    total = sum(values.values())
    return {name: value / total for name, value in values.items()}


def group_hash(group: str, seed: int) -> float:
    """A uniform number in [0, 1) that depends only on the seed and the group name."""
    digest = hashlib.sha256(f"{seed}\0{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _intervals(ratios: dict[str, float]) -> dict[str, tuple[float, float]]:
    out, low = {}, 0.0
    for name in SPLITS:
        out[name] = (low, low + ratios[name])
        low += ratios[name]
    return out


def assign_groups(
    groups: Iterable[str],
    ratios: Mapping[str, float],
    seed: int,
    fixed: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``{group: split}`` for one kind of group (videos, or still-image groups)."""
    ratios = normalize_ratios(ratios)
    fixed = dict(fixed or {})
    intervals = _intervals(ratios)
    groups = sorted(set(groups))
    hashes = {g: group_hash(g, seed) for g in groups}
    result: dict[str, str] = {}
    for g in groups:
        if g in fixed:
            result[g] = fixed[g]
            continue
        u = hashes[g]
        result[g] = next((s for s in SPLITS if intervals[s][0] <= u < intervals[s][1]), SPLITS[-1])
        if ratios[result[g]] == 0:  # u exactly on a boundary of an empty interval (float edge)
            result[g] = max(SPLITS, key=lambda s: ratios[s])

    if len(groups) >= 3:
        for split in SPLITS:
            if ratios[split] == 0 or split in result.values():
                continue
            members = defaultdict(list)
            for g, s in result.items():
                if g not in fixed:
                    members[s].append(g)
            donors = [s for s in SPLITS if len(members[s]) > 1]
            if not donors:
                continue
            donor = max(donors, key=lambda s: (len(members[s]), -SPLITS.index(s)))
            low, high = intervals[split]
            # move the donor's group whose hash is nearest this split's interval: the smallest change
            moved = min(members[donor], key=lambda g: (min(abs(hashes[g] - low), abs(hashes[g] - high)), g))
            result[moved] = split
    return result


def assign_splits(
    videos: Iterable[str],
    stills: Iterable[str],
    ratios: Mapping[str, float],
    seed: int,
    still_groups: Mapping[str, str] | None = None,
    fixed: Mapping[str, str] | None = None,
    fixed_file: object = layout.RAW / layout.RAW_SPLITS,
) -> dict[str, str]:
    """``{video or still image name: split}`` for every item.

    ``still_groups`` maps an image name to its group (images not in it are their own group); ``fixed`` maps
    video or image names to a split and wins over the hash. Members of one group must not be fixed to
    different splits.
    """
    videos = sorted(set(videos))
    stills = sorted(set(stills))
    still_groups = dict(still_groups or {})
    fixed = dict(fixed or {})
    for name, split in fixed.items():
        if split not in SPLITS:
            raise UserError(f"split must be one of {list(SPLITS)}, got {split!r}", fixed_file, name)

    overlap = set(videos) & set(stills)
    if overlap:
        raise UserError(
            f"names used by both a video and a still image: {sorted(overlap)[:5]}; "
            "rename one so splits stay unambiguous",
            fixed_file.parent if isinstance(fixed_file, Path) else None,
        )

    group_of = {image: f"{still_groups.get(image, image)}" for image in stills}
    group_fixed: dict[str, str] = {}
    for image, group in group_of.items():
        if image in fixed:
            if group_fixed.setdefault(group, fixed[image]) != fixed[image]:
                raise UserError(
                    f"images of group '{group}' are fixed to different splits ({group_fixed[group]}, {fixed[image]})",
                    fixed_file,
                    image,
                )
    video_split = assign_groups(videos, ratios, seed, {v: fixed[v] for v in videos if v in fixed})
    # still groups hash in their own namespace so a group named like a video is still independent
    group_split = assign_groups(
        [f"still:{g}" for g in set(group_of.values())],
        ratios,
        seed,
        {f"still:{g}": s for g, s in group_fixed.items()},
    )
    result = dict(video_split)
    for image, group in group_of.items():
        result[image] = group_split[f"still:{group}"]
    return dict(sorted(result.items()))
