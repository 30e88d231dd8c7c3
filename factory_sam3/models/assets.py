"""Files the sam3 wheel needs but does not ship."""

from __future__ import annotations

from pathlib import Path

from factory_sam3.errors import UserError
from factory_sam3.io import file_md5

BPE_NAME = "bpe_simple_vocab_16e6.txt.gz"
# sam3's tokenizer vocabulary; the sam3 0.1.4 wheel lacks assets/, open-clip-torch ships the identical file
BPE_MD5 = "933b7abbbbde62c36f02f0e6ccde464f"


def bpe_path() -> Path:
    """Path of the BPE vocabulary sam3's SimpleTokenizer loads (the wheel's own copy if present)."""
    import sam3

    candidates = [Path(sam3.__file__).resolve().parent.parent / "assets" / BPE_NAME]
    try:
        import open_clip

        candidates.append(Path(open_clip.__file__).resolve().parent / BPE_NAME)
    except ImportError:
        pass
    for path in candidates:
        if path.is_file():
            if file_md5(path) != BPE_MD5:
                raise UserError(f"BPE vocabulary has an unexpected md5 (expected {BPE_MD5})", path)
            return path
    raise UserError(
        "sam3's BPE vocabulary is missing (the sam3 wheel does not ship it): install open-clip-torch",
        candidates[0],
    )
