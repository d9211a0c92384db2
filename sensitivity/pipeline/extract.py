"""Stage 3: sensitivity maps of one shard of a dataset's images into that shard's own Zarr store."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from sensitivity import __version__
from sensitivity.datasets import read_manifest, synset_to_index
from sensitivity.images import ImageReadError, read_image
from sensitivity.map_methods import compute_maps, method_settings
from sensitivity.maps import pool_maps, resize_attention
from sensitivity.models import AMP_DTYPES, device_clock, load_model, resolve_device
from sensitivity.store import ATTENTION_OF, TOP_K, MapStoreWriter

log = logging.getLogger(__name__)

def parse_shard(shard: str) -> tuple[int, int]:
    """``"2-of-4"`` (Snakemake's scatter item) → ``(2, 4)``."""
    try:
        index, count = (int(part) for part in shard.split("-of-"))
    except ValueError:
        raise ValueError(f"shard must look like '2-of-4', got {shard!r}") from None
    if not 1 <= index <= count:
        raise ValueError(f"shard index out of range: {shard!r}")
    return index, count


class ImageFiles(Dataset):
    """Decoded, preprocessed images; a file that cannot be read yields its error instead."""

    def __init__(self, paths: list[str], transform, max_side: int) -> None:
        self.paths, self.transform, self.max_side = paths, transform, max_side

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int) -> tuple[int, torch.Tensor | None, str]:
        try:
            return row, self.transform(read_image(self.paths[row], max_side=self.max_side)), ""
        except ImageReadError as error:
            return row, None, error.reason


def collate(items: list[tuple[int, torch.Tensor | None, str]]):
    """Batch the readable images; keep the failures as ``(row, reason)``."""
    good = [(row, image) for row, image, _ in items if image is not None]
    failures = [(row, reason) for row, image, reason in items if image is None]
    rows = np.array([row for row, _ in good], dtype=np.int64)
    images = torch.stack([image for _, image in good]) if good else None
    return rows, images, failures


def shard_images(manifest_path: str | Path, shard: str):
    """The unique images of one shard (contiguous, balanced blocks in manifest order)."""
    manifest = read_manifest(manifest_path)
    images = manifest.drop_duplicates("image_id")
    index, count = parse_shard(shard)
    rows = np.array_split(np.arange(len(images)), count)[index - 1]
    return images.iloc[rows], manifest


def extract_shard(
    manifest_path: str | Path,
    store_path: str | Path,
    shard: str,
    model: dict,
    target: str,
    aggregate: str,
    map_size: int,
    class_source: str = "predicted",
    synset_mapping: str | None = None,
    on_bad_input: str = "fail",
    batch_size: int = 16,
    device: str = "auto",
    amp: str = "none",
    num_workers: int = 1,
    method: str = "gradient",
    settings: dict | None = None,
) -> Path:
    """Compute and store the maps of one shard; returns the published store path.

    ``class_source``: "predicted" (class-score maps and the Grad-CAM attention maps, of either target, follow
    the predicted class) or "true" (the image's annotated synset, mapped to the classifier output through
    ``synset_mapping``).
    ``method`` and its ``settings`` name the map method (:mod:`sensitivity.map_methods`); the store
    records them, with the seconds the maps took on ``device``.
    """
    settings = method_settings(method, settings)
    images, manifest = shard_images(manifest_path, shard)
    torch_device = resolve_device(device)
    loaded = load_model(model["name"], model.get("weights"), torch_device)
    label_classes = None
    if class_source not in ("predicted", "true"):
        raise ValueError(f"class_source must be 'predicted' or 'true', got {class_source!r}")
    if class_source == "true":
        if not synset_mapping:
            raise ValueError("class_source 'true' needs a synset_mapping file")
        if manifest.groupby("image_id")["label"].nunique().max() > 1:
            raise ValueError("class_source 'true' needs one label per image")
        index = synset_to_index(synset_mapping)
        unknown = sorted(set(images["label"]) - set(index))
        if unknown:
            raise ValueError(f"labels not in {synset_mapping}: {unknown[:5]}")
        label_classes = torch.tensor([index[label] for label in images["label"]])
    attributes = {
        "model": loaded.name, "weights": loaded.weights, "target": target, "aggregate": aggregate,
        "class_source": class_source, "attention_of": ATTENTION_OF,
        "preprocessing": {**loaded.preprocessing.to_dict(), "mode": "squash"}, "amp": amp,
        "method": method, "method_settings": settings, "shard": shard, "package_version": __version__,
    }
    writer = MapStoreWriter(store_path, images["image_id"].tolist(), map_size, attributes)
    files = ImageFiles(images["path"].tolist(), loaded.preprocessing.transform("squash"),
                       max_side=2 * loaded.preprocessing.size)
    loader = DataLoader(files, batch_size=batch_size, num_workers=num_workers, collate_fn=collate,
                        pin_memory=torch_device.type == "cuda")
    seconds = 0.0
    for rows, batch, failures in tqdm(loader, desc=f"{method} maps {shard}", unit="batch"):
        for row, reason in failures:
            path = images["path"].iloc[row]
            if on_bad_input == "fail":
                raise ImageReadError(path, reason)
            log.warning("skipping %s: %s", path, reason)
            writer.skip(images["image_id"].iloc[row], path, reason)
        if batch is None:
            continue
        batch = batch.to(torch_device, non_blocking=True)
        classes = None if label_classes is None else label_classes[rows].to(torch_device)
        start = device_clock(torch_device)
        result = compute_maps(loaded, batch, method, settings, target, aggregate, classes=classes,
                              amp_dtype=AMP_DTYPES[amp], with_attention=True)
        seconds += device_clock(torch_device) - start
        maps = pool_maps(result.maps, map_size)
        top = result.logits.topk(min(TOP_K, result.logits.shape[1]), dim=1).indices
        attention = None if result.attention is None else resize_attention(result.attention, map_size).cpu().numpy()
        embedding = None if result.embedding is None else result.embedding.cpu().numpy()
        writer.write(rows, maps.cpu().numpy(), None if result.classes is None else result.classes.cpu().numpy(),
                     top.cpu().numpy(), attention, embedding)
    writer.record({"map_seconds": seconds, "device": str(torch_device)})
    return writer.close()
