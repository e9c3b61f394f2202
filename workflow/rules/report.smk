# The report's tables: one speed and one energy table per batch size, one latency table per
# latency batch size, the precision table, and one tidy CSV with every cell and how it was
# produced. After a failed run the onerror hook writes
# them from whatever ran (tables_from_what_ran).


rule tables:
    input:
        speed=speed_files(),
        latency=latency_files(),
        accuracy=accuracy_files(),
        macs=macs_files(),
    output:
        # report(): items of `snakemake --report` (make report), captions in workflow/report/
        speed=[
            report(
                path,
                caption="../report/speed.rst",
                category="Tables",
                subcategory="speed",
                labels={"table": f"speed, batch size {bs}"},
            )
            for bs, path in zip(BATCH_SIZES, SPEED_TABLES)
        ],
        energy=[
            report(
                path,
                caption="../report/energy.rst",
                category="Tables",
                subcategory="energy",
                labels={"table": f"energy, batch size {bs}"},
            )
            for bs, path in zip(BATCH_SIZES, ENERGY_TABLES)
        ],
        latency=[
            report(
                path,
                caption="../report/latency.rst",
                category="Tables",
                subcategory="latency",
                labels={"table": f"latency, batch size {bs}"},
            )
            for bs, path in zip(LATENCY_BATCH_SIZES, LATENCY_TABLES)
        ],
        precision=report(
            PRECISION_TABLE,
            caption="../report/precision.rst",
            category="Tables",
            subcategory="precision",
            labels={"table": "precision"},
        ),
        cells=report(
            CELLS,
            caption="../report/cells.rst",
            category="Tables",
            subcategory="every cell",
            labels={"table": "every cell (CSV)"},
        ),
        all=report(
            ALL_TABLES,
            caption="../report/all_tables.rst",
            category="Tables",
            subcategory="all tables",
            labels={"table": "all tables, in the seed report's order"},
        ),
        config=TABLES_CONFIG,
    log:
        "logs/tables.log",
    localrule: True
    conda:
        "../../envs/main.yaml"
    params:
        run=runner("main", "aggregate.py"),
        # what shapes the tables: the values (keys sorted, see canonical) and the order of
        # the models (the rows), not the order the config file lists keys in
        config=canonical(config),
        models=canonical(MODELS),
        out_dir=lambda wc, output: os.path.dirname(output.config),
    shell:
        "printf '%s' {params.config:q} > {output.config} && "
        "{params.run} {log}"
        " --config {output.config} --models {params.models:q}"
        " --speed {input.speed} --latency {input.latency}"
        " --accuracy {input.accuracy} --macs {input.macs}"
        " --out-dir {params.out_dir:q}"


rule plots:
    input:
        CELLS,
    output:
        png=[
            report(
                plot_file(name, bs, "png"),
                caption="../report/figures.rst",
                category="Figures",
                labels={"figure": name, "batch size": str(bs)},
            )
            for bs in BATCH_SIZES
            for name in FIGURES
        ],
        svg=[plot_file(name, bs, "svg") for bs in BATCH_SIZES for name in FIGURES],
    log:
        "logs/plots.log",
    localrule: True
    conda:
        "../../envs/main.yaml"
    params:
        run=runner("main", "plot.py"),
        out_dir=lambda wc, output: os.path.dirname(output.svg[0]),
    shell:
        "{params.run} {log} --cells {input} --out-dir {params.out_dir:q}"
