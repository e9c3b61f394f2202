"""The report's figures, drawn from cells.csv (matplotlib, PNG and SVG in results/plots/).

- ``throughput-bs{bs}``: images/s per model, one bar per runtime and precision (the speed
  table's columns), log scale, one figure per batch size;
- ``accuracy-vs-speed-bs{bs}``: one point per cell that has both: images/s against the
  number of top-1 predictions that differ from the reference cell;
- ``energy-vs-speed-bs{bs}``: one point per speed cell whose energy was measured: images/s
  against images per joule (up and to the right is faster and more frugal).

Titles carry the device(s), the batch size and the date of the measurements.
"""

import csv
import os

RUNTIME_COLOURS = {"OneFlow": "tab:blue", "TensorRT": "tab:green", "ONNX Runtime": "tab:orange", "PyTorch": "tab:red"}
PRECISION_HATCHES = {"fp32": "", "fp16": "//", "int8": "xx"}


def read_cells(path):
    """The measured rows of cells.csv, numbers parsed."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["status"] == "measured"]
    for row in rows:
        for key in ("images_per_s", "mismatches", "top1", "images_per_joule", "mean_watts"):
            row[key] = float(row[key]) if row.get(key) not in (None, "") else None
        row["batch_size"] = int(row["batch_size"]) if row.get("batch_size") else None
    return rows


def _title(what, rows, batch_size):
    devices = sorted({r["device_name"] for r in rows if r.get("device_name")})
    dates = sorted({(r.get("started") or "")[:10] for r in rows} - {""})
    when = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]}" if dates else "date not recorded"
    return f"{what}, batch size {batch_size}\n{', '.join(devices) or 'device not recorded'}; {when}"


def throughput_figure(rows, batch_size):
    """Grouped bars: models on the x axis, a bar per Runtime(precision); returns the Figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speed = [r for r in rows if r["kind"] == "speed" and r["batch_size"] == batch_size]
    models = list(dict.fromkeys(r["model"] for r in speed))
    columns = list(dict.fromkeys((r["runtime_label"], r["precision"]) for r in speed))
    width = 0.8 / max(len(columns), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(models) + 2), 4.5), layout="constrained")
    for i, (label, precision) in enumerate(columns):
        cells = {
            r["model"]: r["images_per_s"] for r in speed if (r["runtime_label"], r["precision"]) == (label, precision)
        }
        xs = [m + (i - (len(columns) - 1) / 2) * width for m in range(len(models)) if models[m] in cells]
        heights = [cells[m] for m in models if m in cells]
        ax.bar(
            xs,
            heights,
            width,
            label=f"{label}({precision})",
            color=RUNTIME_COLOURS.get(label, "tab:gray"),
            hatch=PRECISION_HATCHES.get(precision, ""),
            edgecolor="black",
            linewidth=0.5,
        )
    ax.set_xticks(range(len(models)), models)
    ax.set_yscale("log")
    ax.set_ylabel("images/s (log scale)")
    ax.set_title(_title("Throughput", speed, batch_size))
    ax.legend(fontsize="small", ncols=2)
    ax.grid(axis="y", which="both", alpha=0.3)
    return fig


def accuracy_vs_speed_figure(rows, batch_size):
    """One point per (runtime, model, precision) with both a speed and a mismatch count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    speed = {
        (r["runtime"], r["model"], r["precision"]): r
        for r in rows
        if r["kind"] == "speed" and r["batch_size"] == batch_size
    }
    points = [
        (speed[key], r)
        for r in rows
        if r["kind"] == "accuracy" and r["mismatches"] is not None
        for key in [(r["runtime"], r["model"], r["precision"])]
        if key in speed
    ]
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for s, a in points:
        ax.scatter(
            s["images_per_s"],
            a["mismatches"],
            color=RUNTIME_COLOURS.get(s["runtime_label"], "tab:gray"),
            marker={"fp32": "o", "fp16": "s", "int8": "^"}.get(s["precision"], "o"),
            s=40,
        )
        ax.annotate(
            f"{s['model']} {s['runtime_label']}({s['precision']})",
            (s["images_per_s"], a["mismatches"]),
            fontsize="x-small",
            xytext=(4, 3),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    reference = next((a["reference"] for _, a in points if a.get("reference")), "the reference cell")
    ax.set_xlabel("images/s (log scale)")
    ax.set_ylabel(f"top-1 predictions that differ from {reference}")
    ax.set_title(_title("Accuracy change against speed", [s for s, _ in points], batch_size))
    ax.grid(alpha=0.3)
    return fig, points


def energy_vs_speed_figure(rows, batch_size):
    """One point per speed cell of this batch size whose energy was measured: images/s
    against images per joule; a figure that says so where no cell has a reading."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [
        r
        for r in rows
        if r["kind"] == "speed" and r["batch_size"] == batch_size and r.get("images_per_joule") is not None
    ]
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    for r in points:
        ax.scatter(
            r["images_per_s"],
            r["images_per_joule"],
            color=RUNTIME_COLOURS.get(r["runtime_label"], "tab:gray"),
            marker={"fp32": "o", "fp16": "s", "int8": "^"}.get(r["precision"], "o"),
            s=40,
        )
        ax.annotate(
            f"{r['model']} {r['runtime_label']}({r['precision']}), {r['mean_watts']:.0f} W",
            (r["images_per_s"], r["images_per_joule"]),
            fontsize="x-small",
            xytext=(4, 3),
            textcoords="offset points",
        )
    if points:
        ax.set_xscale("log")
        ax.set_yscale("log")
    else:
        ax.text(
            0.5,
            0.5,
            f"no cell at batch size {batch_size} has an energy reading:"
            f"\nresults/tables/energy-bs{batch_size}.md says why",
            transform=ax.transAxes,
            ha="center",
            va="center",
        )
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel("images/s (log scale)")
    ax.set_ylabel("images per joule (log scale)")
    speed = [r for r in rows if r["kind"] == "speed" and r["batch_size"] == batch_size]
    ax.set_title(_title("Energy against speed", points or speed, batch_size))
    ax.grid(alpha=0.3, which="both")
    return fig, points


def write_plots(cells_csv, out_dir):
    """Every figure for every batch size in cells.csv, as PNG and SVG; returns the paths."""
    import matplotlib.pyplot as plt

    from infbench.files import atomic_output

    rows = read_cells(cells_csv)
    written = []
    for batch_size in sorted({r["batch_size"] for r in rows if r["kind"] == "speed"}):
        for name, fig in (
            (f"throughput-bs{batch_size}", throughput_figure(rows, batch_size)),
            (f"accuracy-vs-speed-bs{batch_size}", accuracy_vs_speed_figure(rows, batch_size)[0]),
            (f"energy-vs-speed-bs{batch_size}", energy_vs_speed_figure(rows, batch_size)[0]),
        ):
            for ext in ("png", "svg"):
                path = os.path.join(out_dir, f"{name}.{ext}")
                with atomic_output(path) as tmp:
                    fig.savefig(tmp, format=ext, dpi=120)
                written.append(path)
            plt.close(fig)
    return written
