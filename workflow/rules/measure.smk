# The matrix cells: TensorRT engines, timed runs and accuracy runs. Each runs under its
# runtime's interpreter. Rules that hold a GPU carry resources gpu=1 (cells on cuda,
# engine builds), so that `--resources gpu=N` runs N of them at once, each on a GPU of its
# own (launch.sh takes it: infbench/slots.py), and a cluster executor asks for one GPU;
# cells on the CPU ask for none (gpu=0) and are kept apart by their threads instead: timed
# runs on the CPU and CPU accuracy runs take every core, timed runs on cuda every core
# divided by N (timed_threads).


rule build_engine:
    input:
        onnx=lambda wc: onnx_file(wc.model, wc.precision, "tensorrt"),
        # int8: also the fp16 form, which TensorRT 10/11 build from (engine.onnx_for_generation)
        int8_fp16=lambda wc: (
            [rules.int8_fp16_form.output[0].format(model=wc.model)]
            if wc.precision == "int8"
            else []
        ),
    output:
        plan="results/engines/{model}/{precision}-bs{bs}.plan",
        sidecar="results/engines/{model}/{precision}-bs{bs}.json",
    log:
        "logs/engines/{model}/{precision}-bs{bs}.log",
    # the engines of one model build back to back, the config's first model first: a
    # model's builds (all precisions and batch sizes) outrank the next model's and the
    # timed cells, so they are not spread among other GPU jobs
    priority: lambda wc: 1 + len(MODELS) - MODELS.index(wc.model)
    conda:
        "../../envs/tensorrt.yaml"
    resources:
        gpu=1,
    params:
        run=runner("tensorrt", "build_engine.py"),
        # every engine option, with its default: a changed option rebuilds the engines
        engine=engine_args(),
        made_from=engine_made_from,
    shell:
        "{params.run} {log}"
        " --onnx {input.onnx} --batch-size {wildcards.bs} --precision {wildcards.precision}"
        " {params.engine} --timing-cache results/engines/timing.cache"
        " --out {output.plan} --sidecar {output.sidecar}"


# One job times a (runtime, model, precision) at every batch size, a session per batch
# size: the process's start-up and the runtime's imports are paid once, not per cell.
# It holds every core, so that no other job runs beside it; on cuda with --resources
# gpu=N, its GPU's share of them, so that the timed cells of N GPUs run side by side (what
# runs on the cores they leave: docs/multigpu.md).
rule speed:
    input:
        artifacts=lambda wc: [artifact(wc, bs) for bs in BATCH_SIZES],
        cache=lambda wc: cache_file(wc.model),
    output:
        [
            report(
                f"results/speed/{{runtime}}/{{model}}/{{precision}}-bs{bs}.json",
                caption="../report/speed_cell.rst",
                category="Cells",
                subcategory="speed",
                labels=cell_labels(bs),
            )
            for bs in BATCH_SIZES
        ],
    log:
        "logs/speed/{runtime}/{model}/{precision}.log",
    conda:
        stack_env
    threads: timed_threads
    resources:
        gpu=cell_gpus,
    params:
        run=lambda wc: runner(wc.runtime, "measure_speed.py"),
        cell=lambda wc: cell_args(wc, BATCH_SIZES),
        # the model's config block: a change to it reruns this model's cells
        model=model_param,
        options=runtime_param,
        timing=canonical(config["timing"]),
        recorded=recorded_config("speed"),
    shell:
        "{params.run} {log}"
        " {params.cell} --options {params.options:q} --cache {input.cache}"
        " --timing {params.timing:q} --config {params.recorded:q} --out {output}"


# Latency: one job per (runtime, model, precision) times single queries at every latency
# batch size (measure_speed.py --latency). Its own job, so that a change to the latency
# settings reruns these jobs only, and one to the timed windows does not rerun them.
# latency.batch_sizes: [] gives it no output, so no job.
rule latency:
    input:
        artifacts=lambda wc: [artifact(wc, bs) for bs in LATENCY_BATCH_SIZES],
        cache=lambda wc: cache_file(wc.model),
    output:
        [
            report(
                f"results/latency/{{runtime}}/{{model}}/{{precision}}-bs{bs}.json",
                caption="../report/latency_cell.rst",
                category="Cells",
                subcategory="latency",
                labels=cell_labels(bs),
            )
            for bs in LATENCY_BATCH_SIZES
        ],
    log:
        "logs/latency/{runtime}/{model}/{precision}.log",
    conda:
        stack_env
    threads: timed_threads
    resources:
        gpu=cell_gpus,
    params:
        run=lambda wc: runner(wc.runtime, "measure_speed.py"),
        cell=lambda wc: cell_args(wc, LATENCY_BATCH_SIZES),
        model=model_param,
        options=runtime_param,
        # the timing keys it uses (warm-up, staged batches), not the windows'
        timing=canonical({key: config["timing"][key] for key in LATENCY_TIMING_KEYS}),
        queries=config["latency"]["queries"],
        recorded=recorded_config("latency"),
    shell:
        "{params.run} {log}"
        " {params.cell} --options {params.options:q} --cache {input.cache}"
        " --timing {params.timing:q} --latency {params.queries}"
        " --config {params.recorded:q} --out {output}"


rule evaluate:
    input:
        artifact=lambda wc: artifact(wc, ACCURACY_BS),
        cache=lambda wc: cache_file(wc.model),
    output:
        "results/accuracy/{runtime}/{model}/{precision}.npz",
    log:
        "logs/accuracy/{runtime}/{model}/{precision}.log",
    conda:
        stack_env
    threads: cell_threads
    resources:
        gpu=cell_gpus,
    params:
        run=lambda wc: runner(wc.runtime, "evaluate.py"),
        cell=lambda wc: cell_args(wc, [ACCURACY_BS]),
        # the model's config block: a change to it reruns this model's cells
        model=model_param,
        options=runtime_param,
        keep=config["accuracy"]["keep_logits"],
        recorded=recorded_config("accuracy"),
    shell:
        "{params.run} {log}"
        " {params.cell} --options {params.options:q} --cache {input.cache}"
        " --keep-logits {params.keep} --config {params.recorded:q} --out {output}"


rule score:
    input:
        predictions=rules.evaluate.output[0],
        reference=reference_predictions,
        labels=LABELS,
        bad=BAD_IMAGES,
    output:
        report(
            "results/accuracy/{runtime}/{model}/{precision}.json",
            caption="../report/accuracy_cell.rst",
            category="Cells",
            subcategory="accuracy",
            labels=cell_labels(),
        ),
    log:
        "logs/accuracy/{runtime}/{model}/{precision}-score.log",
    localrule: True
    conda:
        "../../envs/main.yaml"
    params:
        run=runner("main", "score.py"),
        reference=config["accuracy"]["reference"],
        # none where the reference runtime cannot run the model
        reference_option=lambda wc, input: (
            f"--reference {shlex.quote(input.reference)}" if input.reference else ""
        ),
        random=lambda wc: int(random_weights(wc.model)),
        made_from=score_made_from,
    shell:
        "{params.run} {log}"
        " --predictions {input.predictions} --labels {input.labels}"
        " {params.reference_option} --reference-name {params.reference}"
        " --random-weights {params.random} --bad-images {input.bad} --out {output}"
