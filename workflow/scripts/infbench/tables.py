"""The aggregate step: every result file -> the report's tables in results/tables/.

The tables have the shape of the report infbench descends from: one speed table per
batch size (rows = models, columns = ``Runtime(precision)`` then the reference figures),
and one precision table (``top-1 / mismatches``); beside them, with the same rows and
columns, one energy table per batch size (images per joule and mean watts of the speed
cells' timed windows) and one latency table per latency batch size (p50 / p90 / p99
milliseconds per query). Every cell is either a figure or a marker explained in a
footnote under its table, so that no cell is blank by accident.

``load_cells`` reads every result file (``infbench.results``) into one tidy pandas
DataFrame, one row per table cell (speed, latency, accuracy): measured, ``not run``,
``failed``, ``stale`` or a reference figure, with the columns of ``COLUMNS``. Each table
is a pivot of that frame (rows = models, columns = ``Runtime(precision)``), written with
``DataFrame.to_markdown``; ``cells.csv`` is the frame itself (``to_csv``); ``report.md``
joins the tables.
"""

import os

import pandas as pd

from infbench import files
from infbench.errors import UserError
from infbench.results import NO_CONFIG, cell_config, config_changes, read_accuracy, read_latency, read_speed
from infbench.runtimes import LABELS, NEEDS_FRAMEWORK_MODEL, NOT_FOR_ARCH, ORDER, int8_form, unavailable

# the seed report's column order: runtimes, then precisions inside a runtime
PRECISION_ORDER = ("fp32", "fp16", "int8")

# cell markers (each is explained in a footnote under any table that shows it)
NOT_RUN = "not run"  # configured, but no result file was given to the aggregate step
NO_FIGURE = "—"  # a reference column with no figure for this model
FLAG = "*"  # appended to a speed figure whose timing spread was flagged
CLOCK_FLAG = "†"  # appended to a speed figure whose GPU lost clock speed while it was timed
OTHER_DEVICE = "‡"  # appended to a speed figure measured on another device than the table's others
NO_REFERENCE = "n/a"  # mismatches when the reference cell has no predictions
FAILED = "failed"  # the cell's job, or a step it needs, failed; its one-sentence reason is a footnote
STALE = "stale"  # a result file exists but was measured under another config: not shown
NOT_MEASURED = "not measured"  # energy: the cell's device has no counter this step could read

# the cell frame's columns and their dtypes, in cells.csv's order; kind: speed, reference
# (a figure from the config's reference_results), latency or accuracy; status: measured, reference,
# not run, failed (with the reason its log gives), stale (with what changed; its figures
# are left out), or why the runtime cannot run the model (not available for this arch,
# needs a framework model)
COLUMNS = {
    "kind": "str", "status": "str", "runtime": "str", "runtime_label": "str", "model": "str",
    "arch": "str", "precision": "str", "batch_size": "Int64", "device": "str", "device_name": "str",
    "images_per_s": "Float64", "window_images_per_s": object, "spread": "Float64", "flagged": "boolean",
    "clock_drop": "str", "gmacs_per_image": "Float64", "percent_of_peak": "Float64",
    "ms_per_batch": "Float64", "windows": "Int64", "timed_batches": "Int64", "warmup_batches": "Int64",
    "staged_batches": "Int64", "images_per_joule": "Float64", "mean_watts": "Float64",
    "energy_joules": "Float64", "energy_seconds": "Float64", "energy_counter": "str", "energy_reason": "str",
    "p50_ms": "Float64", "p90_ms": "Float64", "p99_ms": "Float64", "mean_ms": "Float64", "queries": "Int64",
    "top1": "Float64", "top5": "Float64", "mismatches": "Int64",
    "reference": "str", "logit_images": "Int64", "cosine": "Float64", "rel_error": "Float64",
    "nonfinite_images": "Int64", "skipped_images": "Int64", "random_weights": "boolean", "images": "Int64",
    "versions": "str", "started": "str", "finished": "str", "source": "str", "reason": "str",
}  # fmt: skip
# in the frame, not in cells.csv: what the tables' footnotes also need
EXTRA_COLUMNS = {"classes": "Int64", "skipped_files": object, "tf32": "boolean", "scored_against": "str"}
CSV_FIELDS = list(COLUMNS)

_NUMBER = (int, float)


# the GPUs' dense peak rates (workflow/data/gpu_peaks.yaml), for "% of peak"
PEAKS_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "data", "gpu_peaks.yaml")


def gpu_peaks(path=PEAKS_FILE):
    """{device name: {fp32, tf32, fp16, int8: TFLOPS or TOPS, source}} from the data file."""
    import yaml

    with open(path) as f:
        return yaml.safe_load(f) or {}


def add_share_of_peak(rows, macs, peaks):
    """Give each speed row its GMACs per image and, on a GPU with a known peak for the
    cell's precision, its share of that peak: 2 x MACs x images/s / peak, in percent."""
    for row in rows:
        per_image = (macs or {}).get(row["model"])
        row["gmacs_per_image"] = None if per_image is None else per_image / 1e9
        rate = (peaks.get(row.get("device_name")) or {}).get(
            "tf32" if row["precision"] == "fp32" and row.get("tf32") else row["precision"]
        )
        row["percent_of_peak"] = (
            None if per_image is None or not rate else 100 * 2 * per_image * row["images_per_s"] / (rate * 1e12)
        )


# ---------------------------------------------------------------- the config's matrix


def _config(config, key, kind):
    """A top-level config value of the expected type, or a UserError naming the key."""
    value = config.get(key)
    if not isinstance(value, kind):
        raise UserError(f"config key {key!r} is missing or malformed; fix it in the config file")
    return value


def label(runtime, precision):
    """A column header: ``Runtime(precision)``, e.g. ``ONNX Runtime(int8)``."""
    return f"{LABELS.get(runtime, runtime)}({precision})"


def columns(config):
    """The (runtime, precision) columns: runtimes in the seed's order, then precisions.

    Only runtimes in the config, each with the precisions configured for it; anything
    outside the fixed orders goes last, in config order, rather than being dropped.
    """
    runtimes = _config(config, "runtimes", dict)
    rank = {name: i for i, name in enumerate(ORDER)}
    cols = []
    for runtime in sorted(runtimes, key=lambda r: rank.get(r, len(rank))):
        configured = (runtimes[runtime] or {}).get("precisions") or []
        ordered = [p for p in PRECISION_ORDER if p in configured]
        cols += [(runtime, p) for p in ordered + [p for p in configured if p not in ordered]]
    return cols


def reference_figures(config):
    """``reference_results`` keyed by (label, model, precision, batch size)."""
    figures = {}
    for i, ref in enumerate(config.get("reference_results") or []):
        where = f"reference_results[{i}]"
        if not isinstance(ref, dict):
            raise UserError(f"config key {where} must be a mapping; fix it in the config file")
        for key in ("label", "model", "precision", "batch_size", "images_per_s"):
            if key not in ref:
                raise UserError(
                    f"config key {where} lacks {key!r}; give label, model, precision, batch_size and images_per_s"
                )
        if not isinstance(ref["images_per_s"], _NUMBER) or isinstance(ref["images_per_s"], bool):
            raise UserError(f"config key {where}.images_per_s must be a number of images/s")
        key = (ref["label"], ref["model"], ref["precision"], ref["batch_size"])
        if key in figures:
            raise UserError(f"config key {where} repeats {key}; keep one figure per cell")
        figures[key] = ref
    return figures


def reference_columns(figures, models, batch_size):
    """The reference (label, precision) columns with a figure at this batch size.

    Labels in the order they first appear in the config, precisions in the seed's order.
    """
    labels, precisions = [], set()
    for lab, model, precision, bs in figures:
        if bs == batch_size and model in models:
            if lab not in labels:
                labels.append(lab)
            precisions.add((lab, precision))
    rank = {p: i for i, p in enumerate(PRECISION_ORDER)}
    return sorted(precisions, key=lambda c: (labels.index(c[0]), rank.get(c[1], len(rank))))


# ---------------------------------------------------------------- formatting


def format_rate(images_per_s):
    """images/s as the seed prints it: an integer, or 1 decimal below 100."""
    rounded = round(images_per_s, 1)
    return f"{round(images_per_s)}" if rounded >= 100 else f"{rounded:.1f}"


def format_figure(value):
    """Three significant digits, an integer from 100 on: 0.0512, 5.00, 51.2, 512, 5120."""
    return f"{round(value)}" if round(value, 1) >= 100 else f"{value:#.3g}"


def format_watts(watts):
    return f"{round(watts)} W" if watts >= 10 else f"{watts:.1f} W"


def _records(frame):
    """The frame's rows as dicts of plain values, None where a value is missing."""
    return [
        {k: None if v is None or v is pd.NA or (isinstance(v, float) and v != v) else v for k, v in row.items()}
        for row in frame.to_dict("records")
    ]


def _column_labels(frame):
    """Each row's table column: ``Runtime(precision)`` (a reference figure's label is its
    runtime_label)."""
    return frame["runtime_label"] + "(" + frame["precision"] + ")"


def pivot(cells, models, columns, fill=None):
    """The table of ``cells`` (a frame with model, kind, column and text): rows = models in
    the config's order, columns = the (kind, header) pairs given, ``fill`` where no cell."""
    table = cells.pivot(index="model", columns=["kind", "column"], values="text")
    table = table.reindex(index=list(models), columns=pd.MultiIndex.from_tuples(columns))
    table.columns = [header for _, header in columns]
    return table if fill is None else table.fillna(fill)


def to_markdown(table):
    """A table as GitHub markdown (``DataFrame.to_markdown``), the row labels as its
    ``model`` column, every column left-aligned and padded so that the raw file reads too."""
    return (
        table.rename_axis("model")
        .reset_index()
        .to_markdown(index=False, tablefmt="github", stralign="left", disable_numparse=True)
    )


def _distinct(values):
    """Values in first-seen order without repeats (None and '' left out)."""
    out = []
    for v in values:
        if v not in (None, "") and v not in out:
            out.append(v)
    return out


def _joined(values, empty="not recorded"):
    return ", ".join(str(v) for v in _distinct(values)) or empty


def _per_runtime(rows, describe):
    """``Label: a / b; Label: c`` with the distinct descriptions each runtime's rows give."""
    parts = []
    for runtime in _distinct(r["runtime"] for r in rows):
        mine = [r for r in rows if r["runtime"] == runtime]
        parts.append(
            f"{LABELS.get(runtime, runtime)}: " + " / ".join(_distinct(map(describe, mine)) or ["not recorded"])
        )
    return "; ".join(parts) or "no result files"


def _device(row):
    return f"{row['device_name'] or 'name not recorded'} ({row['device']})"


def usual_devices(rows):
    """{device kind: the device name most of ``rows`` of that kind were measured on}
    (the first seen wins a tie)."""
    counts = {}
    for row in rows:
        names = counts.setdefault(row["device"], {})
        names[row["device_name"]] = names.get(row["device_name"], 0) + 1
    return {kind: max(names, key=names.get) for kind, names in counts.items()}


# ---------------------------------------------------------------- the tables


def status_notes(records, what):
    """The footnotes of the cells that show no figure (``not run``, ``failed``, ``stale``),
    each failed or stale cell with its reason; ``what`` names the missing result file."""
    notes = []
    for status, meaning in (
        (NOT_FOR_ARCH, "OneFlow builds only the architectures flowvision 0.2.1 has under torchvision's"
         " name and parameter names (`infbench.runtimes.FLOWVISION_ARCHS`), so these cells are not run"),
        (NEEDS_FRAMEWORK_MODEL, "the model is an ONNX file (`checkpoint: {onnx: ...}`), and this runtime runs"
         " a torchvision model from its weights, so these cells are not run"),
    ):  # fmt: skip
        listed = sorted({r["model"] for r in records if r["status"] == status})
        if listed:
            notes.append(f"`{status}`: {meaning}: {', '.join(listed)}.")
    if any(r["status"] == NOT_RUN for r in records):
        notes.append(
            f"`{NOT_RUN}`: configured, but no {what} for this cell was given to the aggregate step"
            " (its job has not run yet)."
        )
    for status, meaning in (
        (FAILED, "the cell's job, or a step it needs, failed (the next run tries it again); the log says"),
        (STALE, "its result file was measured under another config, so its figures are not shown"),
    ):
        listed = "; ".join(
            f"{r['model']} {label(r['runtime'], r['precision'])}: {r['reason']}"
            for r in records
            if r["status"] == status
        )
        if listed:
            notes.append(f"`{status}`: {meaning}: {listed}.")
    return notes


def _device_marks(row, usual):
    """``†`` where the GPU lost clock speed while the cell was timed, ``‡`` where it was
    measured on another device than most of its table's cells (``usual``)."""
    return (CLOCK_FLAG if row["clock_drop"] else "") + (
        OTHER_DEVICE if row["device_name"] != usual[row["device"]] else ""
    )


def device_notes(shown, usual, timed):
    """The footnotes of ``†`` and ``‡`` for the measured rows ``shown`` of a table whose
    cells were timed in ``timed`` (the timed windows, the timed queries)."""
    notes = []
    slowed = [r for r in shown if r["clock_drop"]]
    if slowed:
        notes.append(
            f"`{CLOCK_FLAG}`: the GPU's SM clock fell by more than 10 % between the start and"
            f" the end of {timed} (thermal or power limits, or another process), so the"
            " figure may be low: "
            + "; ".join(f"{r['model']} {label(r['runtime'], r['precision'])}: {r['clock_drop']}" for r in slowed)
            + "."
        )
    elsewhere = [r for r in shown if r["device_name"] != usual[r["device"]]]
    if elsewhere:
        kinds = sorted({r["device"] for r in elsewhere})
        notes.append(
            f"`{OTHER_DEVICE}`: measured on another device than most of the table's {' and '.join(kinds)}"
            " cells ("
            + ", ".join(f"{usual[k]}" for k in kinds)
            + "), so not comparable with them: "
            + "; ".join(f"{r['model']} {label(r['runtime'], r['precision'])}: {_device(r)}" for r in elsewhere)
            + "."
        )
    return notes


def _speed_text(row, usual):
    """A speed cell: images/s with its markers, a reference figure, or the cell's status."""
    if row["status"] not in ("measured", "reference"):
        return row["status"]  # not run, failed
    text = format_rate(row["images_per_s"])
    if row["kind"] == "speed":
        text += (FLAG if row["flagged"] else "") + _device_marks(row, usual)
    return text


def speed_section(config, batch_size, cells, figures):
    """The speed table for one batch size and its notes, as markdown (no heading): a pivot
    of the speed and reference rows of ``cells`` (``load_cells``) at this batch size."""
    models = _config(config, "models", dict)
    cols = columns(config)
    ref_cols = reference_columns(figures, models, batch_size)
    here = cells[cells["kind"].isin(["speed", "reference"]) & cells["batch_size"].eq(batch_size).fillna(False)]
    records = _records(here)
    shown = [r for r in records if r["kind"] == "speed" and r["status"] == "measured"]
    usual = usual_devices(shown)
    here = here.assign(column=_column_labels(here), text=[_speed_text(r, usual) for r in records])
    table = pivot(
        here,
        models,
        [("speed", label(r, p)) for r, p in cols] + [("reference", f"{lab}({p})") for lab, p in ref_cols],
        fill=NO_FIGURE,
    )
    flagged = [r for r in shown if r["flagged"]]
    missing = NO_FIGURE if table.eq(NO_FIGURE).to_numpy().any() else None

    timing = config.get("timing") or {}
    crops = {}
    for model, spec in models.items():
        crops.setdefault((spec or {}).get("crop"), []).append(model)
    notes = [
        "Cells: images/s = timed batches × batch size ÷ seconds of one timed window, the"
        " median over the windows; inputs already normalised and resident on the device"
        " (an integer, 1 decimal below 100).",
    ]
    notes += status_notes(records, "speed result")
    if missing:
        notes.append(f"`{NO_FIGURE}`: the reference source gives no figure for this model and precision.")
    if flagged:
        limit = timing.get("max_spread")
        above = f" above timing.max_spread = {limit:.0%}" if isinstance(limit, _NUMBER) else ""
        listed = "; ".join(
            f"{r['model']} {label(r['runtime'], r['precision'])} {r['spread']:.1%}"
            f" (windows {', '.join(format_rate(w) for w in r['window_images_per_s'])} images/s)"
            for r in flagged
        )
        notes.append(
            f"`{FLAG}`: timing spread ((max − min) / median of the windows){above}; the"
            f" figure is less stable than the others: {listed}."
        )
    shares = [r for r in shown if r.get("percent_of_peak") is not None]
    if shares:
        devices = _distinct(r["device_name"] for r in shares)
        notes.append(
            "% of peak (2 × MACs per image × images/s ÷ the device's dense peak for the"
            f" precision; {', '.join(devices)}: workflow/data/gpu_peaks.yaml): "
            + "; ".join(
                f"{r['model']} {label(r['runtime'], r['precision'])} {r['percent_of_peak']:.1f} %" for r in shares
            )
            + "."
            + (
                " Above 100 %: the MACs count a direct convolution, and the runtime computed the"
                " cell with fewer multiplies (Winograd- or FFT-style convolution kernels do), so the"
                " share is not a measurement error; cells.csv keeps it."
                if any(r["percent_of_peak"] > 100 for r in shares)
                else ""
            )
        )
    notes += device_notes(shown, usual, "the timed windows")
    notes += [
        "Devices: " + _per_runtime(shown, _device) + ".",
        "Runtime versions: " + _per_runtime(shown, lambda r: r["versions"]) + ".",
        "Timing: warm-up batches "
        + _joined(r["warmup_batches"] for r in shown)
        + "; timed batches per window "
        + _joined(r["timed_batches"] for r in shown)
        + "; windows "
        + _joined(r["windows"] for r in shown)
        + "; staged batches in rotation "
        + _joined(r["staged_batches"] for r in shown)
        + ".",
    ]
    if any(crops):
        sizes = "; ".join(f"{', '.join(ms)} {crop} px" for crop, ms in crops.items() if crop)
        notes.append(f"Input size: {sizes}.")
    filters = {}
    for model, spec in models.items():
        filters.setdefault((spec or {}).get("interpolation", "bilinear"), []).append(model)
    if set(filters) - {"bilinear"}:  # said only where a model's weights were trained on another filter
        notes.append("Resize filter: " + "; ".join(f"{', '.join(ms)} {name}" for name, ms in filters.items()) + ".")
    if int8_note(config):
        notes.append(int8_note(config))
    for lab in _distinct(lab for lab, _ in ref_cols):
        refs = [f for k, f in figures.items() if k[0] == lab and k[3] == batch_size and k[1] in models]
        notes.append(
            f"{lab}: device {_joined(f.get('device') for f in refs)}; source {_joined(f.get('source') for f in refs)}."
        )
    return to_markdown(table) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def latency_batch_sizes(config):
    """The latency tables' batch sizes (``latency.batch_sizes``; none in a config without
    the key: the workflow's validated config always has it)."""
    return list((config.get("latency") or {}).get("batch_sizes") or [])


def _latency_text(row, usual):
    """A latency cell: ``p50 / p90 / p99`` milliseconds with its marks, or its status."""
    if row["status"] != "measured":
        return row["status"]
    figures = " / ".join(format_figure(row[f"p{p}_ms"]) for p in (50, 90, 99))
    return figures + _device_marks(row, usual)


def _timed_on(shown):
    """The devices and library versions of a table's measured rows, as two footnotes."""
    return [
        "Devices: " + _per_runtime(shown, _device) + ".",
        "Runtime versions: " + _per_runtime(shown, lambda r: r["versions"]) + ".",
    ]


def latency_section(config, batch_size, cells):
    """The latency table for one batch size and its notes, as markdown (no heading): a
    pivot of the latency rows of ``cells`` (``load_cells``) at this batch size."""
    models = _config(config, "models", dict)
    here = cells[cells["kind"].eq("latency") & cells["batch_size"].eq(batch_size).fillna(False)]
    records = _records(here)
    shown = [r for r in records if r["status"] == "measured"]
    usual = usual_devices(shown)
    here = here.assign(column=_column_labels(here), text=[_latency_text(r, usual) for r in records])
    table = pivot(here, models, [("latency", label(r, p)) for r, p in columns(config)])
    notes = [
        f"Cells: milliseconds per query at batch size {batch_size}, p50 / p90 / p99 over"
        f" {_joined((r['queries'] for r in shown), 'no')} single queries, each run and then"
        " synchronised with the device before the clock is read, one query at a time (the"
        " single-stream case); inputs already normalised and resident on the device. A"
        " percentile is the smallest query time that at least that share of the queries did"
        " not exceed (nearest rank); the mean is in cells.csv.",
    ]
    few = _distinct(r["queries"] for r in shown if r["queries"] < 100)
    if few:
        notes.append(
            f"With fewer than 100 queries ({_joined(few)}) p99 is the slowest query: latency.queries"
            " (default 1,000) sets how many."
        )
    notes += status_notes(records, "latency result")
    notes += device_notes(shown, usual, "the timed queries")
    if any(r["runtime"] == "oneflow" for r in shown):
        notes.append(
            "OneFlow: its synchronisation reads the logits back to the host (OneFlow's only way"
            " to wait for its asynchronous work), so its queries include that copy."
        )
    notes += _timed_on(shown)
    notes.append(
        "Timing: warm-up batches "
        + _joined(r["warmup_batches"] for r in shown)
        + " (the speed tables'); staged batches in rotation "
        + _joined(r["staged_batches"] for r in shown)
        + "."
    )
    return to_markdown(table) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def _energy_text(row, usual):
    """An energy cell: ``images per joule (mean watts)`` with the speed cell's device marks,
    ``not measured``, or the speed cell's status."""
    if row["status"] != "measured":
        return row["status"]
    if row["images_per_joule"] is None:
        return NOT_MEASURED
    text = f"{format_figure(row['images_per_joule'])} ({format_watts(row['mean_watts'])})"
    return text + _device_marks(row, usual)


def energy_section(config, batch_size, cells):
    """The energy table for one batch size and its notes, as markdown (no heading): a pivot
    of the speed rows of ``cells`` (the energy is their timed windows')."""
    models = _config(config, "models", dict)
    here = cells[cells["kind"].eq("speed") & cells["batch_size"].eq(batch_size).fillna(False)]
    records = _records(here)
    shown = [r for r in records if r["status"] == "measured" and r["images_per_joule"] is not None]
    usual = usual_devices(shown)
    here = here.assign(column=_column_labels(here), text=[_energy_text(r, usual) for r in records])
    table = pivot(here, models, [("speed", label(r, p)) for r, p in columns(config)])
    notes = [
        "Cells: images per joule (mean watts) of the speed table's timed windows: every image"
        " of the windows (windows × timed batches × batch size) ÷ the energy the device's"
        " own counter advanced by between a reading just before the first window and one just"
        " after the last (no reading inside a window); mean watts = that energy ÷ the seconds"
        " between the two readings. A GPU's counter is the whole board's, a CPU's (RAPL) the"
        " whole package's, with whatever else ran on it.",
    ]
    notes += status_notes(records, "speed result")
    unmeasured = [r for r in records if r["status"] == "measured" and r["images_per_joule"] is None]
    for reason in _distinct(r["energy_reason"] for r in unmeasured):
        cells_of = [r for r in unmeasured if r["energy_reason"] == reason]
        notes.append(
            f"`{NOT_MEASURED}`: "
            + ", ".join(f"{r['model']} {label(r['runtime'], r['precision'])}" for r in cells_of)
            + f": {reason}."
        )
    notes += device_notes(shown, usual, "the timed windows")
    if shown:  # (the speed tables name the devices of cells without a reading)
        notes.append("Counters: " + _per_runtime(shown, lambda r: r["energy_counter"]) + ".")
        notes += _timed_on(shown)
    return to_markdown(table) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


# how each int8 form is quantised (infbench.precision.calibrate_int8 writes both)
INT8_FORMS = {
    "s8s8": "symmetric int8 Q/DQ on the inputs of Conv, Gemm and MatMul only"
    " (`int8-s8s8.onnx`); every other layer and the logits in higher precision (TensorRT 8.x"
    " may use fp16 there: INT8 and FP16 builder flags; TensorRT 10/11 and ONNX Runtime: fp32)",
    "u8s8": "uint8 activations and int8 weights through every op ONNX Runtime quantises"
    " (`int8-u8s8.onnx`); Gemm and MatMul outputs, so the logits, in fp32",
}
# int8 cells that run their Q/DQ graph in float: (runtime, device) -> what to say
INT8_EMULATED = {
    ("onnxruntime", "cuda"): "on CUDA emulated: ONNX Runtime's CUDA provider has no int8"
    " convolutions and runs the Q/DQ graph in float, so its speed is not int8's",
}


def int8_note(config):
    """One footnote saying how every int8 column was quantised, or None without int8."""
    runtimes = _config(config, "runtimes", dict)
    cells = [
        (runtime, (spec or {}).get("device"))
        for runtime, spec in runtimes.items()
        if "int8" in ((spec or {}).get("precisions") or [])
    ]
    if not cells:
        return None
    calibration = config.get("calibration") or {}
    how = (
        f"{calibration.get('method', 'not recorded')} calibration (ONNX Runtime's) on"
        f" {calibration.get('images', 'not recorded')} images of the data set"
        f" (seed {calibration.get('seed', 'not recorded')}, listed in"
        " `results/onnx/<model>/calibration.tsv`)"
    )
    forms = "; ".join(
        f"{label(runtime, 'int8')}: {INT8_FORMS[int8_form(runtime, device)]}"
        + (f"; {INT8_EMULATED[runtime, device]}" if (runtime, device) in INT8_EMULATED else "")
        for runtime, device in sorted(cells, key=lambda c: ORDER.index(c[0]) if c[0] in ORDER else 99)
    )
    return f"int8: one {how}, written per runtime as Q/DQ ONNX. {forms}."


def _shows_agreement(row):
    """Random weights make top-1 say little; then the cell adds the logits' agreement."""
    return row["random_weights"] and row["mismatches"] is not None and row["cosine"] is not None


def _nonfinite_cell(row):
    return f"non-finite logits in {row['nonfinite_images']} images"


def _accuracy_cell(row):
    """``top-1 / mismatches``, with the logits' agreement where weights are random; a cell
    whose logits were not all finite says so instead of numbers computed from them."""
    if row.get("nonfinite_images"):
        return _nonfinite_cell(row)
    if row["mismatches"] is None:  # no reference to count them against: top-5 instead
        top5 = f" (top-5 {row['top5']:.3f})" if row["top5"] is not None else ""
        return f"{row['top1']:.3f} / {NO_REFERENCE}{top5}"
    text = f"{row['top1']:.3f} / {row['mismatches']}"
    if _shows_agreement(row):
        rel = f", rel {row['rel_error']:.1e}" if row["rel_error"] is not None else ""
        text += f" (cos {row['cosine']:.5f}{rel})"
    return text


def reference_cell(config):
    """The accuracy reference cell as (runtime, precision) from ``accuracy.reference``."""
    ref = (config.get("accuracy") or {}).get("reference")
    if not isinstance(ref, str) or ref.count("/") != 1:
        raise UserError("config key accuracy.reference must be 'runtime/precision', e.g. oneflow/fp32")
    return tuple(ref.split("/"))


def precision_section(config, cells):
    """The precision table and its notes, as markdown (no heading): a pivot of the accuracy
    rows of ``cells`` (``load_cells``)."""
    models = _config(config, "models", dict)
    cols = columns(config)
    ref_runtime, ref_precision = reference_cell(config)
    ref_label = label(ref_runtime, ref_precision)
    here = cells[cells["kind"].eq("accuracy")]
    records = _records(here)
    shown = [r for r in records if r["status"] == "measured"]
    texts = [_accuracy_cell(r) if r["status"] == "measured" else r["status"] for r in records]
    here = here.assign(column=_column_labels(here), text=texts)
    table = pivot(here, models, [("accuracy", label(r, p)) for r, p in cols])

    intro = (
        f"Cells: top-1 accuracy over {_joined((r['images'] for r in shown), 'no')} images"
        + (f" of {_joined(r['classes'] for r in shown)} classes" if any(r.get("classes") for r in shown) else "")
        + " /"
        f" mismatches, the number of images whose top-1 prediction differs from the reference"
        f" cell {ref_label} (`accuracy.reference: {ref_runtime}/{ref_precision}`)."
    )
    notes = status_notes(records, "accuracy summary")
    skipped = max((r for r in shown if r.get("skipped_images")), key=lambda r: r["skipped_images"], default=None)
    if skipped is not None:
        names = ", ".join(os.path.basename(f) for f in skipped["skipped_files"][:5])
        notes.append(
            f"{skipped['skipped_images']} unreadable images were left out of every cell"
            f" (`dataset.bad_images: skip`), such as {names}; all of them are listed in"
            " `results/datasets/<set>/bad_images.tsv`."
        )
    if any(r.get("nonfinite_images") for r in shown):
        notes.append(
            "non-finite logits: NaN or infinite logits (in fp16, usually activations beyond its"
            " range) for that many images; the cell's top-1, mismatches and agreement would be"
            " computed from them, so they are not shown (they are in cells.csv)."
        )
    unscored = [r for r in shown if r["mismatches"] is None]
    if any(not r.get("scored_against") for r in unscored):
        notes.append(
            f"`{NO_REFERENCE} (top-5 …)`: the reference cell {ref_label} has no predictions to compare"
            " with (it was not run or failed), so mismatches need it: top-1 and top-5 only."
        )
    earlier = [r for r in unscored if r.get("scored_against")]
    if earlier:
        notes.append(
            f"`{NO_REFERENCE} (top-5 …)` where the mismatches were counted against other predictions than"
            f" {ref_label}'s under the current config (`accuracy.reference: {ref_runtime}/{ref_precision}`): "
            + "; ".join(f"{r['model']} {label(r['runtime'], r['precision'])}: {r['scored_against']}" for r in earlier)
            + f"; mismatches need {ref_label}'s predictions, so top-1 and top-5 only (the next run that has them"
            " scores these cells against them)."
        )
    random = [r for r in shown if r["random_weights"]]
    if random:
        agreeing = [r for r in random if _shows_agreement(r)]
        notes.append(
            f"{', '.join(_distinct(r['model'] for r in random))}: random weights (checkpoint"
            " `random: seed`), so top-1 is near chance and a few classes take most"
            " predictions: top-1 and mismatches say little there."
            + (
                f" (cos …, rel …) compare the cell's logits with {ref_label}'s over the first"
                f" {_joined(r['logit_images'] for r in agreeing)} images: cosine similarity"
                " and relative error."
                if agreeing
                else ""
            )
        )
    if int8_note(config):
        notes.append(int8_note(config))
    notes += [
        "Devices: " + _per_runtime(shown, _device) + ".",
        "Runtime versions: " + _per_runtime(shown, lambda r: r["versions"]) + ".",
    ]
    return intro + "\n\n" + to_markdown(table) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


# ---------------------------------------------------------------- the cell frame


def _index(rows, key, kind):
    """Rows keyed by their cell; two files for one cell is a mistake."""
    out = {}
    for row in rows:
        k = key(row)
        if k in out:
            raise UserError(
                f"{kind} result files {out[k]['source']} and {row['source']} are for the same"
                " cell; delete the stale one"
            )
        out[k] = row
    return out


def stale_reason(changes):
    """The sentence of a ``stale`` cell: which config keys changed since its result."""
    if changes == [NO_CONFIG]:
        return "its result file records no config (an older version wrote it); the next run measures it again"
    return (
        f"its result file was measured under another config ({', '.join(changes)} changed since);"
        " the next run measures it again"
    )


def _freshness(config, kind, row):
    """The config keys that changed since ``row``'s result was measured (empty: fresh)."""
    current = cell_config(config, kind, row["runtime"], row["model"], row["precision"])
    return config_changes(row.get("recorded_config"), current, row["runtime"], row["model"])


def _scored_against_the_reference(config, row):
    """An accuracy row scored against another reference than the config's, or against
    reference predictions made under another config than the reference cell's current one,
    keeps its top-1 and top-5 (they do not depend on the reference); its mismatches and
    logit agreement do, so they are dropped, as when the reference has no predictions
    (``n/a``), and ``scored_against`` says what they were counted against."""
    if row["mismatches"] is None:
        return row
    ref_runtime, ref_precision = reference_cell(config)
    scored = row["reference"]
    if scored == f"{ref_runtime}/{ref_precision}":
        current = cell_config(config, "accuracy", ref_runtime, row["model"], ref_precision)
        changes = config_changes(row.get("reference_config"), current, ref_runtime, row["model"])
        if not changes:
            return row
        scored += " predictions made under another config" if changes != [NO_CONFIG] else " (config not recorded)"
    row.update(mismatches=None, cosine=None, rel_error=None, logit_images=None, scored_against=scored)
    return row


def require_pandas_3(version=None):
    """The frame's "str" columns keep a missing value missing only from pandas 3 on (its
    string dtype); pandas 2 turns it into the text "None", which would flag every speed
    cell and write "None" into cells.csv. So an older pandas is refused in one sentence."""
    version = version or pd.__version__
    if int(version.split(".")[0]) < 3:
        raise UserError(
            f"infbench's tables need pandas 3 or newer, and this environment has pandas {version}:"
            " install the pins of envs/requirements-main.txt (make env)"
        )


def load_cells(config, speed_files, accuracy_files, failures=None, macs=None, latency_files=()):
    """Every table cell of the config's matrix as one tidy DataFrame, and the result files
    left out because their cell is not in the config: ``(frame, unused)``.

    One row per cell, in the tables' order (per batch size: each model's speed cells in
    column order, then its reference figures; per latency batch size each model's latency
    cells; then each model's accuracy cells), with the
    columns of ``COLUMNS`` and ``EXTRA_COLUMNS``. A cell shows its result file only if the
    config the result records is the current one for that cell (``cell_config``); without
    such a file it is ``failed`` with the reason ``failures`` gives for it (keyed ``(kind,
    runtime, model, precision, batch size or None)``, kind speed, latency or accuracy),
    ``stale`` (a result measured under another config: what changed, no figures) or ``not
    run``. An accuracy result scored
    against another reference keeps top-1 and top-5 and loses its mismatches. ``macs``
    maps a model to its MACs per image (``infbench.flops``), for each speed cell's share
    of its GPU's peak.
    """
    require_pandas_3()
    models = _config(config, "models", dict)
    runtimes = _config(config, "runtimes", dict)
    batch_sizes = _config(config, "batch_sizes", list)
    cols = columns(config)
    figures = reference_figures(config)
    ref = "/".join(reference_cell(config))

    latency_sizes = latency_batch_sizes(config)
    speed_rows = [read_speed(p) for p in speed_files]
    latency_rows = [read_latency(p) for p in latency_files]
    accuracy_rows = [_scored_against_the_reference(config, read_accuracy(p)) for p in accuracy_files]
    add_share_of_peak(speed_rows, macs, gpu_peaks())

    def in_matrix(row):
        return row["model"] in models and (row["runtime"], row["precision"]) in cols

    unused = [r["source"] for r in speed_rows if not (in_matrix(r) and r["batch_size"] in batch_sizes)]
    unused += [r["source"] for r in latency_rows if not (in_matrix(r) and r["batch_size"] in latency_sizes)]
    unused += [r["source"] for r in accuracy_rows if not in_matrix(r)]
    latency = _index(
        (r for r in latency_rows if r["source"] not in unused),
        lambda r: (r["runtime"], r["model"], r["precision"], r["batch_size"]),
        "latency",
    )
    speed = _index(
        (r for r in speed_rows if r["source"] not in unused),
        lambda r: (r["runtime"], r["model"], r["precision"], r["batch_size"]),
        "speed",
    )
    accuracy = _index(
        (r for r in accuracy_rows if r["source"] not in unused),
        lambda r: (r["runtime"], r["model"], r["precision"], None),
        "accuracy",
    )

    def cell(kind, found, key):
        """The row of one configured cell. Why its runtime cannot run its model where it
        cannot (``runtimes.unavailable``: such cells are not planned); else its result, if
        the config it records is the current one; else ``failed`` with the reason
        ``failures`` gives (its job or a step it needs failed), ``stale`` with what changed,
        or ``not run``."""
        _, runtime, model, precision, batch_size = key
        cannot = unavailable(runtime, models[model] or {})
        row = None if cannot else found.get(key[1:])
        changes = _freshness(config, kind, row) if row is not None else None
        if row is not None and not changes:
            return {**row, "runtime_label": LABELS.get(row["runtime"], row["runtime"])}
        reason = (failures or {}).get(key)
        status = cannot or (FAILED if reason is not None else STALE if changes else NOT_RUN)
        return {
            "kind": kind, "status": status, "reason": reason or (stale_reason(changes) if changes else None),
            "runtime": runtime, "runtime_label": LABELS.get(runtime, runtime), "model": model,
            "arch": (models[model] or {}).get("arch"), "precision": precision,
            "batch_size": batch_size, "device": (runtimes[runtime] or {}).get("device"),
            "reference": ref if kind == "accuracy" else None,
            "source": row["source"] if row is not None else None,
        }  # fmt: skip

    rows = []
    for batch_size in batch_sizes:
        for model in models:
            for runtime, precision in cols:
                rows.append(cell("speed", speed, ("speed", runtime, model, precision, batch_size)))
            for lab, precision in reference_columns(figures, models, batch_size):
                fig = figures.get((lab, model, precision, batch_size))
                if fig is not None:
                    rows.append({
                        "kind": "reference", "status": "reference", "runtime_label": lab,
                        "model": model, "arch": (models[model] or {}).get("arch"),
                        "precision": precision, "batch_size": batch_size,
                        "device_name": fig.get("device"), "images_per_s": fig["images_per_s"],
                        "source": fig.get("source"),
                    })  # fmt: skip
    for batch_size in latency_sizes:
        for model in models:
            for runtime, precision in cols:
                rows.append(cell("latency", latency, ("latency", runtime, model, precision, batch_size)))
    for model in models:
        for runtime, precision in cols:
            rows.append(cell("accuracy", accuracy, ("accuracy", runtime, model, precision, None)))
    dtypes = {**COLUMNS, **EXTRA_COLUMNS}
    frame = pd.DataFrame.from_records(rows, columns=list(dtypes)).astype(dtypes)
    return frame, unused


def cells_csv(cells):
    """cells.csv: the frame's ``COLUMNS`` (``to_csv``), booleans as true/false, window
    rates joined by ``;``, missing values empty."""
    out = cells[CSV_FIELDS].copy()
    for name in ("flagged", "random_weights"):
        out[name] = out[name].map({True: "true", False: "false"}, na_action="ignore")
    out["window_images_per_s"] = out["window_images_per_s"].map(
        lambda rates: ";".join(str(r) for r in rates), na_action="ignore"
    )
    return out.to_csv(index=False, na_rep="", lineterminator="\n")


# ---------------------------------------------------------------- writing


def write_atomic(path, text):
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    files.atomic_write(path, text)


# the first line of every table written after a failed or interrupted run (aggregate.py --what-ran)
PARTIAL = (
    "> Partial: written from what ran before the run failed or was interrupted. The next run"
    " (the same command) does every cell that is `failed`, `stale` or `not run`, then writes"
    " these tables again."
)


def write_tables(
    config, speed_files, accuracy_files, out_dir, failures=None, macs=None, partial=False, latency_files=()
):
    """Write speed-bs{bs}.md, energy-bs{bs}.md, latency-bs{bs}.md (``latency.batch_sizes``),
    precision.md, cells.csv and report.md into ``out_dir``.

    ``failures``, ``macs`` and ``latency_files``: as ``load_cells`` takes them; ``partial``:
    the tables of a run that did not finish, which say so first. Returns ``{"written":
    [paths], "unused": [result files for cells not in the config], "cells": the cell frame}``.
    """
    cells, unused = load_cells(config, speed_files, accuracy_files, failures, macs, latency_files)
    figures = reference_figures(config)
    batch_sizes = _config(config, "batch_sizes", list)
    sections = [
        (f"speed-bs{bs}.md", f"Speed, batch size {bs}", speed_section(config, bs, cells, figures)) for bs in batch_sizes
    ]
    sections += [
        (f"energy-bs{bs}.md", f"Energy, batch size {bs}", energy_section(config, bs, cells)) for bs in batch_sizes
    ]
    sections += [
        (f"latency-bs{bs}.md", f"Latency, batch size {bs}", latency_section(config, bs, cells))
        for bs in latency_batch_sizes(config)
    ]
    sections.append(("precision.md", "Precision", precision_section(config, cells)))
    banner = f"{PARTIAL}\n\n" if partial else ""

    os.makedirs(out_dir, exist_ok=True)
    written = []
    for name, title, body in sections:
        written.append(os.path.join(out_dir, name))
        write_atomic(written[-1], f"# {title}\n\n{banner}{body}")
    written.append(os.path.join(out_dir, "cells.csv"))
    write_atomic(written[-1], cells_csv(cells))
    report = "# infbench report\n\n" + banner + "\n".join(f"## {t}\n\n{b}" for _, t, b in sections)
    written.append(os.path.join(out_dir, "report.md"))
    write_atomic(written[-1], report)
    return {"written": written, "unused": unused, "cells": cells}
