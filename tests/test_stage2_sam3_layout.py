"""The full-size (`sam3` profile) tracker we train has exactly the state-dict layout of sam3's own tracker,
so a Stage 2 export loads strictly into ``sam3.model_builder.build_sam3_video_model``.

Runs in a subprocess: upstream's ``build_tracker`` constructs ``Sam3TrackerPredictor``, whose constructor enters
a process-wide CUDA autocast context that must not leak into the test process.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

# builds the full-size (sam3 profile) tracker twice in a subprocess: 7-20 s and GBs of memory
pytestmark = pytest.mark.integration

SCRIPT = textwrap.dedent(
    """
    from factory_sam3.models import sam3_compat
    sam3_compat.apply()  # the full-size constructors allocate on "cuda" (CPU-only machine)
    from factory_sam3.models.video import build_full_tracker
    from sam3.model_builder import build_tracker
    ours = build_full_tracker().state_dict()
    upstream = build_tracker(apply_temporal_disambiguation=True)
    assert set(ours) == set(upstream.state_dict()), sorted(set(ours) ^ set(upstream.state_dict()))[:5]
    result = upstream.load_state_dict(ours, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    print("OK", len(ours))
    """
)


def test_full_size_tracker_strict_loads_into_upstream_tracker(repo_root):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=repo_root,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(repo_root), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().startswith("OK 309")
