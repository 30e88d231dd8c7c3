"""Stage 1 data: sam3's COCO loader with category names as text prompts, negatives optional."""

from __future__ import annotations

from sam3.train.data.coco_json_loaders import COCO_FROM_JSON


class CocoPrompts(COCO_FROM_JSON):
    """sam3's ``COCO_FROM_JSON`` (one text query per category, the category name as the prompt).

    ``include_negatives=True``: every category is queried on every image, so absent categories are hard
    negatives and images without objects still teach "nothing here". ``False``: only the categories
    present are queried, and images without any object are dropped — upstream would give them zero
    queries, which the collator cannot batch (``max()`` of an empty sequence).
    """

    def __init__(self, annotation_file, prompts=None, include_negatives=True, category_chunk_size=None):
        super().__init__(
            annotation_file,
            prompts=prompts,
            include_negatives=include_negatives,
            category_chunk_size=category_chunk_size,
        )
        if not include_negatives:
            self._raw_data = [entry for entry in self._raw_data if entry["annotations"]]
