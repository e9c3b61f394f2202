# Config validation and the helpers of all rules: paths per matrix cell, the
# interpreter of each runtime stack, the artifacts each runtime loads.

import json
import os
import shlex
import sys

import yaml
from snakemake.settings.types import DeploymentMethod


# WORKFLOW_DIR: the workflow's own folder, also inside a module
include: "folder.smk"


SCRIPTS = os.path.join(WORKFLOW_DIR, "workflow", "scripts")
sys.path.insert(0, SCRIPTS)

from infbench.configcheck import check
from infbench.data import (
    DEFAULT_INTERPOLATION,
    INTERPOLATIONS,
    PREPROCESS_VERSION,
    cache_name,
)
from infbench.runtimes.tensorrt.build import engine_settings
from infbench.errors import UserError
from infbench.precision import FP16_VERSION
from infbench.results import LATENCY_TIMING_KEYS, cell_config
from infbench.slots import timed_cores
from infbench.runtimes import ARTIFACT, MAKE_ENV, STACK, VENV, int8_form, unavailable

with open(os.path.join(WORKFLOW_DIR, "workflow", "schemas", "config.schema.yaml")) as f:
    SCHEMA = yaml.safe_load(f)
try:
    check(config, SCHEMA)  # the schema, its defaults, then the combinations: once
except UserError as err:
    print(f"infbench: {err}", file=sys.stderr)
    sys.exit(1)

DATASET = config["dataset"]["kind"]
INDEX = f"results/datasets/{DATASET}/index.tsv"
# the images the index left out as unreadable (dataset.bad_images: skip), with the reasons
BAD_IMAGES = f"results/datasets/{DATASET}/bad_images.tsv"
LABELS = f"results/datasets/{DATASET}/labels.npy"
MODELS = list(config["models"])
# the models given as the user's own ONNX file (checkpoint: {onnx: ...}); no weights, no arch
ONNX_MODELS = [
    name for name, m in config["models"].items() if "onnx" in m["checkpoint"]
]


def names_pattern(names):
    """A wildcard constraint matching exactly these names (none: nothing)."""
    return "|".join(names) if names else "(?!)"


RUNTIMES = list(config["runtimes"])
REF_RUNTIME, REF_PRECISION = config["accuracy"]["reference"].split("/")

# each runtime's software stack (envs/<stack>.yaml, or a venv made by the Makefile), its
# venv and the make target that builds it: from the runtime registry (STACK, VENV, MAKE_ENV)
# With --software-deployment-method conda every rule runs in its stack's conda env, whose
# interpreter is plain `python`. Otherwise the main stack is the interpreter running
# Snakemake and the other stacks are venvs (runtimes.<name>.python overrides either).
USE_CONDA = DeploymentMethod.CONDA in workflow.deployment_settings.deployment_method
# (sys.prefix/bin/python rather than sys.executable: the same path however snakemake
# was started, so that the runner params below do not change between invocations)
MAIN_PYTHON = "python" if USE_CONDA else os.path.join(sys.prefix, "bin", "python")
DEFAULT_PYTHON = {} if USE_CONDA else VENV


def runner(stack, script):
    """The command that runs ``script`` under a stack's interpreter (main or a runtime's).

    It is followed by the log file and the script's arguments (workflow/scripts/launch.sh).
    """
    if stack == "main":
        python = MAIN_PYTHON
        missing = f"the workflow's interpreter {python} is gone: run `make env`"
    else:
        python, missing = runtime_python(stack), missing_python(stack)
    parts = [
        os.path.join(SCRIPTS, "launch.sh"),
        python,
        missing,
        os.path.join(SCRIPTS, script),
    ]
    return " ".join(shlex.quote(p) for p in parts)


def runtime_python(runtime):
    """The interpreter of a runtime's stack: the one the config names (a relative path is
    relative to the working directory, like every path in the config), else the venv its
    make target builds in the workflow's folder, else the one running Snakemake."""
    named = config["runtimes"].get(runtime, {}).get("python")
    if named:
        return os.path.abspath(named) if "/" in named else named
    if runtime in DEFAULT_PYTHON:
        return os.path.join(WORKFLOW_DIR, DEFAULT_PYTHON[runtime])
    return MAIN_PYTHON


def missing_python(runtime):
    """The sentence launch.sh prints when a runtime's interpreter does not exist."""
    hint = "create that environment"
    if runtime in MAKE_ENV and os.path.exists(os.path.join(WORKFLOW_DIR, "Makefile")):
        where = "" if os.path.samefile(WORKFLOW_DIR, ".") else f" in {WORKFLOW_DIR}"
        hint = (
            f"run `{MAKE_ENV[runtime]}`{where} (it needs a Python 3.10: on PATH as python3.10"
            " or named by PYTHON310=/path/to/python3.10)"
        )
    return (
        f"the {runtime} runtime's interpreter {runtime_python(runtime)} does not exist"
        f" (config key runtimes.{runtime}.python): {hint}, or remove {runtime} from runtimes"
    )


def canonical(value):
    """A config value as JSON with sorted keys: as a param it changes (and reruns the rule)
    when the values change, not when the config file lists the same keys in another order.
    """
    return json.dumps(value, sort_keys=True)


def stack_env(wildcards):
    return f"../../envs/{STACK[wildcards.runtime]}.yaml"


def model_cfg(wildcards):
    return config["models"][wildcards.model]


def model_param(wildcards):
    """The model's config block as a param (see canonical)."""
    return canonical(model_cfg(wildcards))


def made_from(*parts):
    """A param: the config an artifact of a model is made from, upstream steps' included:
    ``weights`` (arch, crop, checkpoint), ``data`` (the data set block and the model's
    resize and crop: the images it calibrates on) and ``calibration``.

    Snakemake does not redo a step whose output exists when one of its inputs is missing
    (an intermediate that a failed job's removal left missing: snakemake/snakemake#1978),
    so a rule that named only its own settings could keep an output made from an upstream
    config that has changed since. Naming everything upstream makes a change rerun every
    job it affects, missing intermediates included."""

    def param(wildcards):
        m = config["models"][wildcards.model]
        value = {}
        if "weights" in parts:  # (an ONNX-file model has no arch)
            value["weights"] = {
                k: m[k] for k in ("arch", "crop", "checkpoint") if k in m
            }
        if "data" in parts:
            value["data"] = {"dataset": config["dataset"], "resize": m["resize"]}
            # absent: bilinear (a seed model's param stays as it was)
            if "interpolation" in m:
                value["data"]["interpolation"] = m["interpolation"]
        if "calibration" in parts:
            value["calibration"] = config["calibration"]
        return canonical(value)

    return param


def engine_made_from(wildcards):
    """build_engine's made_from: the weights; for int8 also the calibration and its data."""
    parts = (
        ("weights", "data", "calibration")
        if wildcards.precision == "int8"
        else ("weights",)
    )
    return made_from(*parts)(wildcards)


def runtime_param(wildcards):
    """The runtime's config block: a param, and the cell scripts' --options."""
    return canonical(config["runtimes"][wildcards.runtime])


def random_weights(model):
    """Whether a model's checkpoint is seeded random weights (the tables say so)."""
    return "random" in config["models"][model]["checkpoint"]


def interpolation(model):
    """A model's resize filter (absent from its block: bilinear)."""
    return config["models"][model].get("interpolation", DEFAULT_INTERPOLATION)


def cache_file(model):
    """The model's tensor cache: by resize, crop and interpolation (infbench.data.cache_name)."""
    m = config["models"][model]
    name = cache_name(m["resize"], m["crop"], interpolation(model))
    return f"results/cache/{DATASET}/{name}.npy"


def checkpoint_file(wildcards):
    source = config["models"][wildcards.model]["checkpoint"]
    if "path" in source:
        # the user's file: never moved under a module's prefix
        return local(source["path"])
    return f"resources/checkpoints/{wildcards.model}.pth"


def onnx_file(model, precision, runtime):
    """The precision's ONNX in the Q/DQ form this runtime runs fastest (int8)."""
    if precision == "int8":
        precision = f"int8-{int8_form(runtime, config['runtimes'][runtime]['device'])}"
    return f"results/onnx/{model}/{precision}.onnx"


def artifact(wildcards, bs):
    """What the runtime loads: neutral weights, the precision's ONNX or an engine."""
    kind = ARTIFACT[wildcards.runtime]
    if kind == "weights":
        return f"results/weights/{wildcards.model}.safetensors"
    if kind == "onnx":
        return onnx_file(wildcards.model, wildcards.precision, wildcards.runtime)
    return f"results/engines/{wildcards.model}/{wildcards.precision}-bs{bs}.plan"


def arch(model):
    """A model's arch as the cells record it: ``onnx`` for an ONNX-file model."""
    return config["models"][model].get("arch", "onnx")


def cell_args(wildcards, batch_sizes):
    """The command-line options that name a cell, or the cells of several batch sizes
    (see infbench/cli.py): an artifact per batch size where it depends on it (engines).
    """
    m = config["models"][wildcards.model]
    rt = config["runtimes"][wildcards.runtime]
    artifacts = list(
        dict.fromkeys(prefixed(artifact(wildcards, bs)) for bs in batch_sizes)
    )
    return (
        f"--runtime {wildcards.runtime} --model {wildcards.model} --arch {arch(wildcards.model)}"
        f" --precision {wildcards.precision} --device {rt['device']} --crop {m['crop']}"
        f" --batch-size {' '.join(map(str, batch_sizes))} --artifact {' '.join(artifacts)}"
    )


BATCH_SIZES = config["batch_sizes"]
ACCURACY_BS = config["accuracy"]["batch_size"]
# the latency cells' batch sizes (none: no latency rule, tables or cells)
LATENCY_BATCH_SIZES = config["latency"]["batch_sizes"]


def runs(runtime, model):
    """Whether the runtime can run the model (else its cells are not planned: the tables
    show why, infbench.runtimes.unavailable)."""
    return unavailable(runtime, config["models"][model]) is None


def speed_files():
    return [
        f"results/speed/{runtime}/{model}/{precision}-bs{bs}.json"
        for runtime, rt in config["runtimes"].items()
        for model in MODELS
        if runs(runtime, model)
        for precision in rt["precisions"]
        for bs in BATCH_SIZES
    ]


def latency_files():
    return [
        f"results/latency/{runtime}/{model}/{precision}-bs{bs}.json"
        for runtime, rt in config["runtimes"].items()
        for model in MODELS
        if runs(runtime, model)
        for precision in rt["precisions"]
        for bs in LATENCY_BATCH_SIZES
    ]


def macs_files():
    """Each model's MACs per image (counted by convert_weights), for the tables; none for
    an ONNX-file model (its share of peak is left out)."""
    return [
        rules.convert_weights.output.macs.format(model=model)
        for model in MODELS
        if model not in ONNX_MODELS
    ]


def accuracy_files():
    return [
        f"results/accuracy/{runtime}/{model}/{precision}.json"
        for runtime, rt in config["runtimes"].items()
        for model in MODELS
        if runs(runtime, model)
        for precision in rt["precisions"]
    ]


def reference_predictions(wildcards):
    """The reference cell's predictions for a model's score, none where the reference
    runtime cannot run the model (mismatches are then n/a)."""
    if not runs(REF_RUNTIME, wildcards.model):
        return []
    return f"results/accuracy/{REF_RUNTIME}/{wildcards.model}/{REF_PRECISION}.npz"


# every table cell, tidy (the figures are drawn from it)
CELLS = "results/tables/cells.csv"
SPEED_TABLES = [f"results/tables/speed-bs{bs}.md" for bs in BATCH_SIZES]
ENERGY_TABLES = [f"results/tables/energy-bs{bs}.md" for bs in BATCH_SIZES]
LATENCY_TABLES = [f"results/tables/latency-bs{bs}.md" for bs in LATENCY_BATCH_SIZES]
PRECISION_TABLE = "results/tables/precision.md"
ALL_TABLES = "results/tables/report.md"  # every table in the seed report's order
# the config the tables were made for: written only by the tables rule (never by the tables
# of a failed run, which remove it), so that asking for it reruns the tables until complete
TABLES_CONFIG = "results/tables/config.json"
TABLES = SPEED_TABLES + ENERGY_TABLES + LATENCY_TABLES
TABLES += [PRECISION_TABLE, CELLS, ALL_TABLES, TABLES_CONFIG]
# the figures (infbench/plots.py): per batch size, as PNG and SVG
FIGURES = ("throughput", "accuracy-vs-speed", "energy-vs-speed")


def plot_file(name, bs, ext):
    return f"results/plots/{name}-bs{bs}.{ext}"


PLOTS = [
    plot_file(name, bs, ext)
    for bs in BATCH_SIZES
    for name in FIGURES
    for ext in ("png", "svg")
]


def dataset_root():
    if DATASET == "synthetic":
        return rules.synthetic_images.output[0]
    return config["dataset"]["root"]


# the dataset keys that name files: inputs of index_dataset, so that editing one re-indexes
DATASET_FILE_KEYS = ("labels", "synsets", "devkit_meta")


def dataset_files():
    """The label, synset and devkit files the config names (ImageNet's; none for synthetic)
    that exist: a missing one is the index step's to report, so that a dry-run of the
    matrix works on a machine without the data."""
    if DATASET == "synthetic":
        return []
    named = [
        config["dataset"][key] for key in DATASET_FILE_KEYS if key in config["dataset"]
    ]
    # the user's files: never moved under a module's prefix
    return [local(path) for path in named if os.path.exists(path)]


def dataset_args():
    """index_dataset.py's arguments, each value quoted for the shell (paths may hold spaces)."""
    d = config["dataset"]
    args = (
        f"--root {shlex.quote(dataset_root())} --images {shlex.quote(str(d['images']))}"
    )
    if DATASET == "synthetic":
        return (
            args
            + f" --labels {shlex.quote(os.path.join(dataset_root(), 'val_map.txt'))}"
        )
    for key in DATASET_FILE_KEYS:
        if key in d:
            args += f" --{key.replace('_', '-')} {shlex.quote(str(d[key]))}"
    return args


def engine_args():
    """build_engine.py's engine options from runtimes.tensorrt, defaults filled in."""
    options = engine_settings(config["runtimes"].get("tensorrt"))
    args = (
        f"--workspace-mib {options['workspace_mib']}"
        f" --allow-tf32 {int(options['allow_tf32'])}"
    )
    if options["tactic_sources"] is not None:
        args += f" --tactic-sources={','.join(sorted(options['tactic_sources']))}"
    if options["builder_optimization_level"] is not None:
        args += f" --builder-optimization-level {options['builder_optimization_level']}"
    return args


def cell_labels(bs=None):
    """A cell's labels in the report (filled from the job's wildcards)."""
    labels = {"model": "{model}", "runtime": "{runtime}", "precision": "{precision}"}
    return labels if bs is None else {**labels, "batch size": str(bs)}


def cell_threads(wildcards):
    """An accuracy run's cores: every core for a CPU cell, one for a CUDA cell (so that on
    a GPU machine run with --cores N, CPU steps such as calibration go on beside it)."""
    return (
        workflow.cores
        if config["runtimes"][wildcards.runtime]["device"] == "cpu"
        else 1
    )


def timed_threads(wildcards):
    """A timed job's cores (infbench.slots.timed_cores): every core on the CPU; on cuda with
    --resources gpu=N, every core divided by N where Snakemake runs the jobs itself (a dry-run
    plans so too), every core on a cluster (and inside a cluster's job)."""
    gpu = workflow.global_resources.get("gpu")
    return timed_cores(
        workflow.cores,
        config["runtimes"][wildcards.runtime]["device"],
        gpu.value if gpu is not None else None,
        workflow.local_exec and not workflow.remote_exec,
    )


def cell_gpus(wildcards):
    """A cell's GPUs: one on cuda, none on the CPU, where a cluster would otherwise hold
    the job for a GPU node. A CPU cell is kept from running beside another by its threads
    (every core), not by this resource."""
    return int(config["runtimes"][wildcards.runtime]["device"] == "cuda")


def recorded_config(kind):
    """A cell's param and recorded config: the part of the config its result depends on
    (infbench.results.cell_config; the tables compare it with the current config)."""

    def recorded(wildcards):
        return canonical(
            cell_config(
                config, kind, wildcards.runtime, wildcards.model, wildcards.precision
            )
        )

    return recorded


def score_made_from(wildcards):
    """score's made_from: what the cell's and the reference cell's predictions were made under."""
    return canonical(
        [
            cell_config(
                config,
                "accuracy",
                wildcards.runtime,
                wildcards.model,
                wildcards.precision,
            ),
            cell_config(
                config, "accuracy", REF_RUNTIME, wildcards.model, REF_PRECISION
            ),
        ]
    )


def step(rule, name, own=False, **wildcards):
    """One job a cell needs, for the tables of a failed run: its log and outputs."""
    return {
        "name": name,
        "log": rule.log[0].format(**wildcards),
        "outputs": [path.format(**wildcards) for path in rule.output],
        "own": own,
    }


def steps_of_cell(runtime, model, precision, bs):
    """The jobs a cell's result needs, upstream first: the data set, the model's weights,
    its ONNX form and engine where the runtime loads one. The tables of a failed run name
    the first of them that failed (aggregate.py --what-ran)."""
    m = config["models"][model]
    size = dict(resize=m["resize"], crop=m["crop"])
    resize_filter = interpolation(model)
    preprocess = rules.preprocess
    if resize_filter != DEFAULT_INTERPOLATION:
        preprocess = rules.preprocess_interpolated
        size["interpolation"] = resize_filter
    steps = []
    if DATASET == "synthetic":
        steps.append(step(rules.synthetic_images, "generating the synthetic images"))
    steps += [
        step(rules.index_dataset, "indexing the data set"),
        step(
            preprocess,
            f"preprocessing the images at {m['resize']}/{m['crop']} px ({resize_filter})",
            **size,
        ),
    ]
    if model in ONNX_MODELS:
        steps.append(
            step(rules.import_onnx, f"importing {model}'s ONNX file", model=model)
        )
    else:
        if "path" not in m["checkpoint"]:
            steps.append(
                step(
                    rules.fetch_checkpoint,
                    f"fetching {model}'s checkpoint",
                    model=model,
                )
            )
        steps.append(
            step(rules.convert_weights, f"converting {model}'s weights", model=model)
        )
        if ARTIFACT[runtime] == "weights":
            return steps
        steps.append(step(rules.export_onnx, f"exporting {model} to ONNX", model=model))
    if precision == "fp16":
        steps.append(
            step(rules.convert_fp16, f"converting {model} to fp16", model=model)
        )
    if precision == "int8":
        steps.append(
            step(rules.calibrate_int8, f"calibrating {model}'s int8", model=model)
        )
    if ARTIFACT[runtime] == "engine":
        if precision == "int8":
            steps.append(
                step(rules.int8_fp16_form, f"{model}'s int8 ONNX in fp16", model=model)
            )
        steps.append(
            step(
                rules.build_engine,
                f"building the TensorRT engine of {model} {precision} at batch size {bs}",
                model=model,
                precision=precision,
                bs=bs,
            )
        )
    return steps


def what_ran_plan():
    """Every configured cell's result file and the jobs it needs, by the rules' own paths."""
    speed, accuracy, latency = [], [], []
    for runtime, rt in config["runtimes"].items():
        for model in [m for m in MODELS if runs(runtime, m)]:
            for precision in rt["precisions"]:
                cell = dict(runtime=runtime, model=model, precision=precision)
                for bs, result in zip(BATCH_SIZES, rules.speed.output):
                    speed.append(
                        {
                            "key": [runtime, model, precision, bs],
                            "result": result.format(**cell),
                            "steps": steps_of_cell(runtime, model, precision, bs)
                            + [step(rules.speed, "timing the cell", own=True, **cell)],
                        }
                    )
                latency += latency_plan(runtime, model, precision)
                reference = dict(
                    runtime=REF_RUNTIME, model=model, precision=REF_PRECISION
                )
                accuracy.append(
                    {
                        "key": [runtime, model, precision],
                        "result": rules.score.output[0].format(**cell),
                        "predictions": rules.evaluate.output[0].format(**cell),
                        "reference_predictions": rules.evaluate.output[0].format(
                            **reference
                        ),
                        "labels": rules.index_dataset.output.labels,
                        "bad_images": rules.index_dataset.output.bad,
                        "reference": config["accuracy"]["reference"],
                        "random_weights": random_weights(model),
                        "steps": steps_of_cell(runtime, model, precision, ACCURACY_BS)
                        + [
                            step(rules.evaluate, "evaluating", own=True, **cell),
                            step(rules.score, "scoring", own=True, **cell),
                        ],
                    }
                )
    return {
        "config": config,
        "speed": speed,
        "latency": latency,
        "accuracy": accuracy,
        "macs": macs_files(),
        "partial_dir": os.path.join(tables_dir(), "what-ran"),
    }


def latency_plan(runtime, model, precision):
    """what_ran_plan's latency cells of a runtime, model and precision."""
    cell = dict(runtime=runtime, model=model, precision=precision)
    return [
        {
            "key": [runtime, model, precision, bs],
            "result": result.format(**cell),
            "steps": steps_of_cell(runtime, model, precision, bs)
            + [step(rules.latency, "timing the latency cell", own=True, **cell)],
        }
        for bs, result in zip(LATENCY_BATCH_SIZES, rules.latency.output)
    ]


def tables_dir():
    """results/tables, as the tables rule writes it."""
    return os.path.dirname(rules.tables.output.config)


def prefixed(path):
    """A path the rules write, where they write it: under the prefix of a module that uses
    this workflow with `prefix:`, which Snakemake puts before the rules' paths (inputs,
    outputs, logs), not before the paths in their params; found from where it put the
    tables' config."""
    return rules.tables.output.config[: -len(TABLES_CONFIG)] + path


def tables_from_what_ran():
    """onerror: every table from the result files that exist, failed cells with their
    reason, marked partial. The tables rule's config dump is removed first, so that to
    Snakemake the tables are never complete after a failed or interrupted run: the next
    run plans the tables again, and with them every cell that has no result yet."""
    if os.path.exists(rules.tables.output.config):
        os.remove(rules.tables.output.config)
    logs = os.path.dirname(rules.tables.log[0])
    plan = os.path.join(logs, "tables-what-ran.json")
    log = os.path.join(logs, "tables-what-ran.log")
    os.makedirs(logs, exist_ok=True)
    with open(plan, "w") as f:
        json.dump(what_ran_plan(), f)
    try:
        shell(
            f"{runner('main', 'aggregate.py')} {shlex.quote(log)}"
            f" --what-ran {shlex.quote(plan)} --out-dir {shlex.quote(tables_dir())}"
        )
        print(
            f"infbench: some jobs failed or were interrupted; {tables_dir()}/ shows what ran,"
            " each failed cell with its reason; run the same command again to retry them",
            file=sys.stderr,
        )
    except Exception:
        print(
            "infbench: some jobs failed, and the tables could not be written from what ran;"
            f" see {log}",
            file=sys.stderr,
        )


# One run at a time in a directory: Snakemake's lock stops a second run, with a message
# that also suggests --unlock. The run that holds it also holds this file (flock, released
# when its process ends, even killed), so a second run can say first, in one sentence,
# that another run is active here.
RUN_LOCK = ".snakemake/infbench-run.lock"
_held = []


def hold_run_lock():
    """onstart: this run holds the directory (pid and start time in the file)."""
    import fcntl
    import time

    os.makedirs(os.path.dirname(RUN_LOCK), exist_ok=True)
    lock = open(RUN_LOCK, "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return
    lock.truncate(0)
    lock.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    lock.flush()
    _held.append(lock)


def say_if_another_run_is_active():
    """At start, before Snakemake's own lock check: one sentence if another run holds the
    directory (nothing is changed: Snakemake's lock then stops a second run)."""
    import fcntl

    if not workflow.is_main_process or not os.path.exists(RUN_LOCK):
        return
    with open(RUN_LOCK, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            holder = lock.read().strip() or "pid unknown"
            print(
                f"infbench: another snakemake run ({holder}) is working in {os.getcwd()} and holds"
                " Snakemake's lock on it, so a second run stops at that lock (a dry-run with -n"
                " works beside it): wait for the first run to finish",
                file=sys.stderr,
            )
        else:
            fcntl.flock(lock, fcntl.LOCK_UN)


say_if_another_run_is_active()
