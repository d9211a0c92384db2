# Config validation and the input/param functions the rules share.
import os
from pathlib import Path

from jsonschema import ValidationError
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from sensitivity.box_models import SHIPPED_BOX_MODEL
from sensitivity.pipeline.config_errors import describe_validation_error, missing_inputs
from sensitivity.pipeline.sources import imported_sources


try:
    validate(config, "../schemas/config.schema.yaml")
except WorkflowError as error:
    if not isinstance(error.__context__, ValidationError):
        raise
    raise WorkflowError(describe_validation_error(error.__context__)) from None

DATASET_DEFAULTS = {
    "target": "gestalt",
    "aggregate": "max",
    # The most accurate map with the learned box that the comparison measured (docs/RESULTS.md, ImageNet
    # and shared photos, 5 split seeds each); `gradient` is the paper's.
    "method": "guided_backprop",
    "synset_mapping": None,
    "use_difficult": False,
}
SPLIT_DEFAULTS = {"fractions": [0.75, 0.125, 0.125], "seed": 0}
# voc2007: the split each official ImageSets/Main list makes.
VOC_IMAGE_SETS = {"train": "train", "val": "val", "test": "test"}
VOC_ONLY = ("image_sets", "fit_on_test")
REPO = Path(workflow.basedir)


def check_kind_keys(datasets):
    """Reject keys that the dataset's kind would not read, rather than ignoring them."""
    for name, entry in datasets.items():
        if "__" in name:
            raise ValueError(f"datasets.{name}: `__` is reserved for the generated variants <dataset>__<variant>")
        if entry.get("method", DATASET_DEFAULTS["method"]) not in config["map_methods"]:
            raise ValueError(f"datasets.{name}.method: {entry['method']!r} is not one of map_methods "
                             f"{sorted(config['map_methods'])}")
        if entry["kind"] == "voc2007":
            if "split" in entry:
                raise ValueError(f"datasets.{name}.split: a voc2007 dataset is split by its official lists "
                                 "(`image_sets`), not by fractions; remove `split`")
            names = list((VOC_IMAGE_SETS | entry.get("image_sets", {})).values())
            if len(set(names)) < len(names):
                raise ValueError(f"datasets.{name}.image_sets: each split needs its own list, got {names}")
        elif extra := [key for key in VOC_ONLY if key in entry]:
            raise ValueError(f"datasets.{name}: only kind voc2007 reads {' and '.join(extra)}")


check_kind_keys(config["datasets"])


def check_inputs_exist(names):
    """Stop before any job if a dataset of the default target reads a file or folder that does not exist."""
    problems = [line for name in names if name in config["datasets"]
                for line in missing_inputs(name, config["datasets"][name])]
    if problems:
        raise WorkflowError("\n".join(problems))


check_inputs_exist(config["targets"])

# Generated variants `<dataset>__<variant>`: a configured dataset with a few settings replaced (the paper's
# target/aggregate combinations, the comparison's map methods). They reuse every rule unchanged; their
# manifest is a copy of the base dataset's (rule variant_manifest), so images are read once.
VARIANT_BASE = {}


def add_variant(base, suffix, **overrides):
    """Register the variant of dataset ``base`` with ``overrides``; returns its name, or the name of an earlier
    variant with the same settings (so that the same maps are never extracted twice)."""
    entry = config["datasets"][base] | overrides
    for name, of in VARIANT_BASE.items():
        if of == base and config["datasets"][name] == entry:
            return name
    name = f"{base}__{suffix}"
    config["datasets"][name] = entry
    VARIANT_BASE[name] = base
    return name


wildcard_constraints:
    dataset="[A-Za-z0-9_]+",


scattergather:
    extract=config["extraction"]["shards"],


def kind_defaults(entry):
    """Defaults that depend on the dataset's kind: ImageNet maps the true class through the download's
    synset mapping and reads the train part, as the paper's ImageNet study does."""
    if entry["kind"] != "imagenet":
        return {"class_source": "predicted"}
    return {"class_source": "true", "parts": ["train"],
            "synset_mapping": os.path.join(entry.get("root", ""), "LOC_synset_mapping.txt")}


def dataset(name):
    """The dataset's config entry with defaults and the global on_bad_input filled in."""
    if name not in config["datasets"]:
        raise ValueError(f"dataset {name!r} is not configured; configured: {sorted(config['datasets'])}")
    entry = config["datasets"][name]
    spec = DATASET_DEFAULTS | kind_defaults(entry) | {"on_bad_input": config["on_bad_input"]} | entry
    # YAML reads `class_source: true` as a boolean
    spec["class_source"] = "true" if spec["class_source"] in (True, "true") else spec["class_source"]
    if spec["kind"] == "voc2007":
        return spec | {"image_sets": VOC_IMAGE_SETS | entry.get("image_sets", {}),
                       "fit_on_test": entry.get("fit_on_test", False)}
    return spec | {"split": SPLIT_DEFAULTS | entry.get("split", {})}


def reading_params(wildcards):
    """Everything that decides which images and boxes a dataset has (the manifest's inputs)."""
    keep = ("kind", "roots", "class_from", "csv", "images", "root", "image_sets", "parts", "layout",
            "use_difficult", "on_bad_input")
    return {key: value for key, value in dataset(wildcards.dataset).items() if key in keep}


def dataset_root_input(wildcards):
    """Downloaded datasets are produced by the data rules; local ones are read in place, and must exist."""
    spec = dataset(wildcards.dataset)
    if problems := missing_inputs(wildcards.dataset, spec):
        raise WorkflowError("\n".join(problems))
    return [f"resources/{wildcards.dataset}/.extracted"] if spec.get("download") else []


def split_params(wildcards):
    return split_settings(wildcards.dataset)


def split_settings(name):
    """voc2007: the official lists (all three splits needed unless fit_on_test); else seeded fractions."""
    spec = dataset(name)
    if spec["kind"] == "voc2007":
        return {"method": "lists", "root": spec["root"], "image_sets": spec["image_sets"],
                "needed": ["test"] if spec["fit_on_test"] else ["train", "val", "test"]}
    return {"method": "fractions", "fractions": spec["split"]["fractions"], "seed": spec["split"]["seed"]}


def seeded_split(name):
    """The split fractions of a dataset split by seed; VOC's official lists have no seed to vary."""
    params = split_settings(name)
    if params["method"] != "fractions":
        raise ValueError(f"dataset {name!r} is split by its official lists: there is no split seed to vary")
    return params


def fit_splits(wildcards):
    """The splits the box model is fitted on and chosen on: train and val, or test itself (fit_on_test)."""
    if dataset(wildcards.dataset).get("fit_on_test"):
        return {"train": "test", "val": "test"}
    return {"train": "train", "val": "val"}


def map_params(wildcards):
    """Everything that changes the maps themselves (a change here re-extracts)."""
    spec = dataset(wildcards.dataset)
    return {"model": config["model"], "method": spec["method"], "settings": config["map_methods"][spec["method"]],
            "target": spec["target"], "aggregate": spec["aggregate"],
            "map_size": config["extraction"]["map_size"], "class_source": spec["class_source"],
            "synset_mapping": spec["synset_mapping"], "amp": config["extraction"]["amp"],
            "on_bad_input": spec["on_bad_input"]}


def code_of(script):
    """Library sources the rule's ``script`` (in workflow/scripts) runs, as inputs, so that editing them reruns the
    rule: its imports of the package, followed transitively (:func:`~sensitivity.pipeline.sources.imported_sources`).

    Relative to the working directory: Snakemake records each job's input paths, so absolute ones
    would make a moved or copied project rerun every job (extraction included).
    """
    return [os.path.relpath(path) for path in imported_sources(REPO / "workflow" / "scripts" / script,
                                                                REPO / "sensitivity")]


def classifier_table(wildcards):
    """The classifier's accuracy table, for datasets whose labels map to its outputs (a synset mapping)."""
    return [f"results/{wildcards.dataset}_classifier.csv"] if dataset(wildcards.dataset)["synset_mapping"] else []


def prior_box_model(wildcards):
    """The prior box model file the fit tries (regression.prior.model), as an input: none, or one path."""
    model = config["regression"]["prior"]["model"]
    if model is None:
        return []
    if model == "shipped":
        return [os.path.relpath(SHIPPED_BOX_MODEL)]
    return [model]


def map_stores(wildcards):
    return gather.extract(f"results/{wildcards.dataset}/maps/{{scatteritem}}.zarr")
