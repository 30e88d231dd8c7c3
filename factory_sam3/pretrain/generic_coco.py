"""The generic corpus as a COCO dataset for the detector stage: ``write_generic_coco`` draws generic stills
(``pretrain.generic``: concept names as the categories, compressed RLE masks) in the layout Stage 1 reads,
``root/{train,valid,test}/`` with images and ``_annotations.coco.json`` (valid and test from other seeds).

Its own module so that the generic_data stage of pretrain/dvc.yaml depends on what draws the data only, not on the
detector's training code.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from factory_sam3.formats import coco
from factory_sam3.formats.rle import encode_mask
from factory_sam3.io import atomic_dir
from factory_sam3.pretrain import generic

ANNOTATIONS = "_annotations.coco.json"


def categories() -> list[dict]:
    return [{"id": i + 1, "name": name, "supercategory": "generic"} for i, name in enumerate(generic.CONCEPT_NAMES)]


def write_split(out_dir: Path, seed: int, count: int, negative_prob: float, size: int = 224) -> None:
    rng = np.random.default_rng(seed)
    images, annotations = [], []
    for image_id in range(1, count + 1):
        # fewer, less crowded instances than the tracker's clips: DETR-style detection from scratch converges
        # far slower on touching look-alike clusters (measured: segm AP 0.0 after 1,500 steps on them)
        img, masks, concepts = generic.image_sample(
            rng, size, negative_prob=negative_prob, min_objects=1, max_objects=6, crowded_prob=0.25
        )
        name = f"{image_id:05d}.jpg"
        cv2.imwrite(str(out_dir / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append(coco.image_record(image_id, name, size, size))
        for mask, concept in zip(masks, concepts):
            rle, bbox, area = encode_mask(mask)
            annotations.append(coco.annotation_record(len(annotations) + 1, image_id, concept + 1, rle, bbox, area))
    coco.write(out_dir / ANNOTATIONS, coco.dataset(images, annotations, categories()))


def write_generic_coco(root: Path, seed: int, train_images: int, valid_images: int, negative_prob: float = 0.1) -> None:
    """``root/{train,valid,test}/`` with images and ``_annotations.coco.json`` (valid and test from other seeds)."""
    with atomic_dir(root) as tmp:
        for split, split_seed, count in (
            ("train", seed, train_images),
            ("valid", seed + 1, valid_images),
            ("test", seed + 2, valid_images),
        ):
            (tmp / split).mkdir(parents=True)
            write_split(tmp / split, split_seed, count, negative_prob)
