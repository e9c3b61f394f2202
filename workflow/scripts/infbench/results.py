"""The result files: one JSON file per matrix cell, written by the step scripts and read
back by the aggregate step; this module is the one place that knows their format.

- speed: ``results/speed/{runtime}/{model}/{precision}-bs{bs}.json``, written by
  measure_speed.py: ``cell`` (runtime, model, arch, precision, batch_size, device),
  ``result`` (images_per_s, window_images_per_s, spread, windows, timed_batches, ...),
  ``flagged``, ``clock_drop`` and ``provenance``.
- accuracy: ``results/accuracy/{runtime}/{model}/{precision}.json``, written by score.py:
  ``cell``, ``images``, ``top1``, ``top5``, ``reference``, ``mismatches``, the logits'
  ``cosine`` and ``rel_error``, ``nonfinite_images``, ``skipped_images`` and ``provenance``.

``write`` puts a record on disk atomically; ``read_speed`` and ``read_accuracy`` give one
file as a flat row (a dict with the keys of ``infbench.tables.COLUMNS``), checking every
value they use, so that a file in another format ends in one sentence that names it.
Standard library only: the OneFlow and TensorRT interpreters write speed files too.
"""

import functools
import json

from infbench import files
from infbench.errors import UserError

_NUMBER = (int, float)

# the keys under which runtimes' info() report library and driver versions
LIBRARY_KEYS = ("oneflow", "flowvision", "tensorrt", "onnxruntime", "torch", "cuda", "cudnn", "driver")


def write(path, record):
    """Write a result record as JSON atomically, so that an interrupted job leaves no half
    file behind."""
    files.atomic_write(path, json.dumps(record, indent=2) + "\n")


def _unreadable(path, why):
    """The one sentence for a result file that cannot be used."""
    return UserError(f"result file {path} cannot be parsed ({why}); delete it so the workflow regenerates it")


def _load_json(path):
    """A result file's JSON object, or a UserError naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise UserError(f"result file {path} does not exist; pass only files the workflow produced") from None
    except (OSError, ValueError) as err:
        raise _unreadable(path, err.__class__.__name__ + ": " + str(err)) from None
    if not isinstance(data, dict):
        raise _unreadable(path, "not a JSON object")
    return data


def _get(data, path, dotted, kinds, required=True, nullable=False):
    """The value at ``dotted`` (``a.b.c``) checked against ``kinds``.

    A missing optional key gives None; a missing required key or a value of the wrong
    type means the file is not in the documented format.
    """
    node = data
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            if required:
                raise _unreadable(path, f"no {dotted!r}")
            return None
        node = node[part]
    if node is None and (nullable or not required):
        return None
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(node, kinds) or (isinstance(node, bool) and bool not in kinds):
        raise _unreadable(path, f"{dotted!r} is {node!r}")
    return node


def _versions(runtime_info):
    """The runtime's library versions as one compact string (``name version, ...``)."""
    # the runtimes' info() names each library by its own key
    return ", ".join(f"{k} {runtime_info[k]}" for k in LIBRARY_KEYS if runtime_info.get(k))


def _provenance(data, path, device):
    """Device name, versions and run times recorded in a result file's provenance."""
    runtime_info = _get(data, path, "provenance.runtime", dict, required=False) or {}
    host = _get(data, path, "provenance.host", dict, required=False) or {}
    device_name = runtime_info.get("device_name")
    if not device_name and device == "cpu":
        device_name = host.get("cpu")
    return {
        "device_name": str(device_name or ""),
        "tf32": runtime_info.get("tf32") is True,
        "versions": _versions(runtime_info),
        "started": _get(data, path, "provenance.started", str, required=False),
        "finished": _get(data, path, "provenance.finished", str, required=False),
    }


def read_speed(path):
    """One speed result file as a row (its window rates as a list)."""
    data = _load_json(path)
    g = functools.partial(_get, data, path)
    row = {
        "kind": "speed",
        "status": "measured",
        "runtime": g("cell.runtime", str),
        "model": g("cell.model", str),
        "arch": g("cell.arch", str),
        "precision": g("cell.precision", str),
        "batch_size": g("cell.batch_size", int),
        "device": g("cell.device", str),
        "images_per_s": g("result.images_per_s", _NUMBER),
        "window_images_per_s": g("result.window_images_per_s", list),
        "spread": g("result.spread", _NUMBER),
        "flagged": g("flagged", bool),
        "clock_drop": g("clock_drop", str, required=False, nullable=True),
        "ms_per_batch": g("result.ms_per_batch", _NUMBER, required=False),
        "windows": g("result.windows", int),
        "timed_batches": g("result.timed_batches", int),
        "warmup_batches": g("result.warmup_batches", int),
        "staged_batches": g("result.staged_batches", int, required=False),
        "source": str(path),
    }
    if not all(isinstance(w, _NUMBER) for w in row["window_images_per_s"]):
        raise _unreadable(path, "'result.window_images_per_s' holds a non-number")
    row.update(_provenance(data, path, row["device"]))
    return row


def read_accuracy(path):
    """One accuracy summary (.json) as a row."""
    data = _load_json(path)
    g = functools.partial(_get, data, path)
    row = {
        "kind": "accuracy",
        "status": "measured",
        "runtime": g("cell.runtime", str),
        "model": g("cell.model", str),
        "arch": g("cell.arch", str, required=False),
        "precision": g("cell.precision", str),
        "batch_size": g("cell.batch_size", int, required=False),
        "device": g("cell.device", str, required=False),
        "images": g("images", int),
        "classes": g("classes", int, required=False),
        "top1": g("top1", _NUMBER),
        "top5": g("top5", _NUMBER, required=False),
        "reference": g("reference", str),
        "mismatches": g("mismatches", int, nullable=True),
        "logit_images": g("logit_images", int, required=False),
        "cosine": g("cosine", _NUMBER, required=False),
        "rel_error": g("rel_error", _NUMBER, required=False),
        "nonfinite_images": g("nonfinite_images", int, required=False) or 0,
        "skipped_images": g("skipped_images", int, required=False) or 0,
        "skipped_files": g("skipped_files", list, required=False) or [],
        "random_weights": bool(g("random_weights", bool, required=False)),
        "source": str(path),
    }
    if g("reference_available", bool, required=False) is False:
        row["mismatches"] = None
    row.update(_provenance(data, path, row["device"]))
    return row
