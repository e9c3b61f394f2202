"""The result files: one JSON file per matrix cell, written by the step scripts and read
back by the aggregate step; this module is the one place that knows their format.

- speed: ``results/speed/{runtime}/{model}/{precision}-bs{bs}.json``, written by
  measure_speed.py: ``cell`` (runtime, model, arch, precision, batch_size, device),
  ``result`` (images_per_s, window_images_per_s, spread, windows, timed_batches, ...),
  ``flagged``, ``clock_drop``, ``energy`` (``infbench.energy.record``: measured, counter,
  joules, seconds, images, images_per_joule, mean_watts, or the reason it was not
  measured) and ``provenance``.
- latency: ``results/latency/{runtime}/{model}/{precision}-bs{bs}.json``, written by
  measure_speed.py --latency: ``cell``, ``result`` (p50_ms, p90_ms, p99_ms, mean_ms,
  query_ms, queries, warmup_batches, staged_batches, ...), ``clock_drop`` and
  ``provenance``.
- accuracy: ``results/accuracy/{runtime}/{model}/{precision}.json``, written by score.py:
  ``cell``, ``images``, ``top1``, ``top5``, ``reference``, ``mismatches``, the logits'
  ``cosine`` and ``rel_error``, ``nonfinite_images``, ``skipped_images`` and ``provenance``.

``write`` puts a record on disk atomically; ``read_speed``, ``read_latency`` and
``read_accuracy`` give one
file as a flat row (a dict with the keys of ``infbench.tables.COLUMNS``), checking every
value they use, so that a file in another format ends in one sentence that names it.

Every result records the part of the config its numbers depend on (``cell_config``, in
``provenance.config``): the workflow passes it to the step, and the tables compare it with
the current config (``config_changes``), so that a result measured under another config is
never shown as the cell's measurement.
Standard library only: the OneFlow and TensorRT interpreters write speed files too.
"""

import functools
import json

from infbench import files
from infbench.errors import UserError

_NUMBER = (int, float)

# the keys under which runtimes' info() report library and driver versions
LIBRARY_KEYS = ("oneflow", "flowvision", "tensorrt", "onnxruntime", "torch", "cuda", "cudnn", "driver")


# the timing keys a latency cell uses (its warm-up and staged batches are the throughput
# windows'; the windows' own keys do not touch it)
LATENCY_TIMING_KEYS = ("warmup_batches", "staged_batches")


def cell_config(config, kind, runtime, model, precision):
    """The part of the (validated) config that a cell's result depends on, as recorded in
    it: the model's and the runtime's blocks; for speed the timing block; for latency the
    number of queries and the timing keys it uses (``LATENCY_TIMING_KEYS``; not the latency
    batch sizes: a cell is one of them); for accuracy the data set and the accuracy run's
    batch size and kept logits (not the reference: a score against another reference keeps
    its top-1, see the tables); for int8 the calibration and the data set its images come
    from.
    The workflow passes it to the step as a param, so a change to it also reruns the cell.
    """
    record = {"model": config["models"][model], "runtime": config["runtimes"][runtime]}
    if kind == "speed":
        record["timing"] = config["timing"]
    elif kind == "latency":
        record["latency"] = {"queries": config["latency"]["queries"]}
        record["timing"] = {key: config["timing"][key] for key in LATENCY_TIMING_KEYS}
    else:
        accuracy = config["accuracy"]
        record["accuracy"] = {key: accuracy.get(key) for key in ("batch_size", "keep_logits")}
    if kind == "accuracy" or precision == "int8":  # int8: the calibration images come from it
        record["dataset"] = config["dataset"]
    if precision == "int8":
        record["calibration"] = config.get("calibration")
    return record


# what config_changes says of a result that records no config (an older version wrote it)
NO_CONFIG = "no config recorded"

# where each block of cell_config lives in the config file, for the sentences that name it
_CONFIG_KEYS = {"model": "models.{model}", "runtime": "runtimes.{runtime}"}


def config_changes(recorded, current, runtime, model):
    """The config keys whose values differ between a result's recorded config and the
    current one (``cell_config``), named as in the config file (``models.a2.checkpoint``):
    a mapping whose keys changed is named itself, otherwise the differing values inside it.
    Empty when nothing changed; ``[NO_CONFIG]`` for a result that records none.
    """
    if not isinstance(recorded, dict):
        return [NO_CONFIG]
    changed = []

    def walk(was, now, key):
        if isinstance(was, dict) and isinstance(now, dict) and was.keys() == now.keys():
            for k in was:
                walk(was[k], now[k], f"{key}.{k}")
        elif was != now:
            changed.append(key)

    for block in sorted(set(recorded) | set(current)):
        name = _CONFIG_KEYS.get(block, block).format(model=model, runtime=runtime)
        walk(recorded.get(block), current.get(block), name)
    return changed


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
        # the config it was measured under (cell_config), for the tables' staleness check
        "recorded_config": _get(data, path, "provenance.config", dict, required=False),
    }


def _timed_cell(g):
    """The cell of a speed or latency result (``g``: ``_get`` on its file), measured."""
    return {
        "status": "measured",
        "runtime": g("cell.runtime", str),
        "model": g("cell.model", str),
        "arch": g("cell.arch", str),
        "precision": g("cell.precision", str),
        "batch_size": g("cell.batch_size", int),
        "device": g("cell.device", str),
    }


def read_speed(path):
    """One speed result file as a row (its window rates as a list)."""
    data = _load_json(path)
    g = functools.partial(_get, data, path)
    row = {
        "kind": "speed",
        **_timed_cell(g),
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
    row.update(_energy(data, path))
    row.update(_provenance(data, path, row["device"]))
    return row


# the reason of a speed result without an energy block
NO_ENERGY = "its result file records no energy reading (an older version wrote it)"


def _energy(data, path):
    """A speed result's energy block as the row's energy columns: the figures where the
    counter was read, else the reason (``energy_reason``)."""
    g = functools.partial(_get, data, path)
    if g("energy", dict, required=False) is None:
        return {"energy_reason": NO_ENERGY}
    if not g("energy.measured", bool):
        return {
            "energy_counter": g("energy.counter", str, required=False),
            "energy_reason": g("energy.reason", str),
        }
    return {
        "energy_counter": g("energy.counter", str),
        "energy_joules": g("energy.joules", _NUMBER),
        "energy_seconds": g("energy.seconds", _NUMBER),
        "images_per_joule": g("energy.images_per_joule", _NUMBER),
        "mean_watts": g("energy.mean_watts", _NUMBER),
    }


def read_latency(path):
    """One latency result file as a row."""
    data = _load_json(path)
    g = functools.partial(_get, data, path)
    row = {
        "kind": "latency",
        **_timed_cell(g),
        "p50_ms": g("result.p50_ms", _NUMBER),
        "p90_ms": g("result.p90_ms", _NUMBER),
        "p99_ms": g("result.p99_ms", _NUMBER),
        "mean_ms": g("result.mean_ms", _NUMBER),
        "queries": g("result.queries", int),
        "warmup_batches": g("result.warmup_batches", int),
        "staged_batches": g("result.staged_batches", int, required=False),
        "clock_drop": g("clock_drop", str, required=False, nullable=True),
        "source": str(path),
    }
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
        # the config the reference predictions were made under (its cell_config)
        "reference_config": g("reference_config", dict, required=False, nullable=True),
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
