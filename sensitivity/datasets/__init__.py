"""Dataset readers that turn annotated images into a manifest (one row per image and class).

Every reader returns ``(manifest, skipped)``; see :mod:`sensitivity.datasets.manifest`
for the columns and the box convention.
"""

from .download import (
    ChecksumError,
    DownloadError,
    download,
    extract_tar,
    file_sha256,
    parse_checksum,
    verify_checksum,
    verify_sha256,
)
from .folder import discover_datasets, is_folder_dataset, read_csv_boxes, read_folder_dataset
from .imagenet import is_imagenet_root, read_imagenet, read_synset_mapping, synset_to_index
from .manifest import (
    MANIFEST_COLUMNS,
    SKIPPED_COLUMNS,
    DatasetError,
    read_manifest,
    validate_manifest,
    write_manifest,
)
from .split import list_split, read_split, split_manifest
from .voc import OFFICIAL_IMAGE_SETS, find_voc_root, read_image_set, read_voc2007
from .voc_xml import VocAnnotation, VocObject, parse_voc_xml

__all__ = [
    "MANIFEST_COLUMNS",
    "OFFICIAL_IMAGE_SETS",
    "SKIPPED_COLUMNS",
    "ChecksumError",
    "DatasetError",
    "DownloadError",
    "VocAnnotation",
    "VocObject",
    "discover_datasets",
    "download",
    "extract_tar",
    "file_sha256",
    "parse_checksum",
    "verify_checksum",
    "find_voc_root",
    "is_folder_dataset",
    "is_imagenet_root",
    "list_split",
    "parse_voc_xml",
    "read_csv_boxes",
    "read_folder_dataset",
    "read_imagenet",
    "read_image_set",
    "read_manifest",
    "read_split",
    "read_synset_mapping",
    "read_voc2007",
    "split_manifest",
    "synset_to_index",
    "validate_manifest",
    "verify_sha256",
    "write_manifest",
]
