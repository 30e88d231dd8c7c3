"""Where the data comes from (the ``fetch`` stage). Every source writes the same ``data/raw`` layout
(see ``factory_sam3.layout``), so the later stages never care which one ran.

``fetch.source`` picks one of:

- ``synthetic`` (default): a deterministic factory work-cell dataset generated offline;
- ``roboflow``: a Roboflow(-100) COCO export (folder or .zip; or downloaded with ROBOFLOW_API_KEY);
- ``youtube_vos``: the YouTube-VOS layout (JPEGImages/, Annotations/, meta.json) from a folder or .zip;
- ``folder``: your own data, already in the raw layout, from a folder or .zip;
- ``s3``: the same from an ``s3://bucket/prefix`` (MinIO/Ceph via ``fetch.endpoint_url``).

The stage itself (typed params, run, command line): ``factory_sam3.sources.stage``. A source is a module with
``fetch(params, out) -> record`` (``params``: the typed ``fetch`` section; ``out``: an empty folder).
"""

SOURCES = {
    "synthetic": "factory_sam3.sources.synthetic",
    "roboflow": "factory_sam3.sources.roboflow",
    "youtube_vos": "factory_sam3.sources.youtube_vos",
    "folder": "factory_sam3.sources.folder",
    "s3": "factory_sam3.sources.s3",
}
