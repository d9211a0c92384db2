"""Config errors a newcomer can act on: the key, its value, what is allowed and where it is documented, in a
few lines (instead of jsonschema's dump of the whole schema), and dataset folders checked before any job."""

from __future__ import annotations

import os
from collections.abc import Mapping

from jsonschema import ValidationError

SCHEMA_DOC = 'workflow/schemas/config.schema.yaml (every key, its type and default; README "Config")'
#: Dataset keys that name files or folders read in place, by dataset kind.
INPUT_KEYS = {"folder": ("roots",), "csv": ("csv", "images"), "voc2007": ("root",), "imagenet": ("root",)}


def key_path(path) -> str:
    """``['datasets', 'demo', 'roots', 0]`` → ``datasets.demo.roots[0]``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}" if text else str(part)
    return text or "(top level)"


def shorten(value: object, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def allowed(error: ValidationError) -> str:
    """What the failing part of the schema allows, in words."""
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    if error.validator == "additionalProperties":
        return "allowed keys here: " + ", ".join(schema.get("properties", {}))
    facts = []
    if "enum" in schema:
        facts.append("one of " + ", ".join(map(repr, schema["enum"])))
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        facts.append("type " + " or ".join(types))
    for word, key in (("≥", "minimum"), (">", "exclusiveMinimum"), ("≤", "maximum"), ("<", "exclusiveMaximum"),
                      ("at least", "minItems"), ("at most", "maxItems")):
        if key in schema:
            facts.append(f"{word} {schema[key]}" + (" item(s)" if key.endswith("Items") else ""))
    return "allowed: " + "; ".join(facts) if facts else ""


def describe_validation_error(error: ValidationError) -> str:
    """A few lines: the key and its value, the problem, what is allowed, the key's description, the docs."""
    path, value = list(error.absolute_path), error.instance
    schema = error.schema if isinstance(error.schema, Mapping) else {}
    description = " ".join(str(schema.get("description", "")).split())
    if error.validator == "additionalProperties" and isinstance(value, Mapping):
        unknown = [name for name in value if name not in schema.get("properties", {})]
        if unknown:  # the unknown key and its value, not the whole section holding it
            path, value, description = [*path, unknown[0]], value[unknown[0]], ""
    key = key_path(path)
    lines = [f"Error validating config file: {key} = {shorten(value)}", f"  {error.message}"]
    if text := allowed(error):
        lines.append(f"  {text}")
    if description:
        lines.append(f"  {key}: {description if len(description) <= 300 else description[:297] + '...'}")
    lines.append(f"  documented in {SCHEMA_DOC}")
    return "\n".join(lines)


def missing_inputs(name: str, entry: Mapping) -> list[str]:
    """One line per file or folder that dataset ``name`` reads in place but that does not exist (none for a
    dataset with ``download:``, whose root the workflow's own download rules create)."""
    if entry.get("download"):
        return []
    problems = []
    for key in INPUT_KEYS.get(entry.get("kind"), ()):
        value = entry.get(key)
        paths = [(f"{key}[{i}]", p) for i, p in enumerate(value)] if isinstance(value, list) else [(key, value)]
        for label, path in paths:
            if path is not None and not os.path.exists(path):
                problems.append(f"datasets.{name}.{label}: {path} does not exist (relative to {os.getcwd()})")
    return problems
