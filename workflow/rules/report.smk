# The report's tables: one speed table per batch size, the precision table, and one tidy
# CSV with every cell and how it was produced. After a failed run the onerror hook writes
# them from whatever ran (tables_from_what_ran).


rule tables:
    input:
        speed=speed_files(),
        accuracy=accuracy_files(),
    output:
        TABLES,
        config="results/tables/config.json",
    log:
        "logs/tables.log",
    conda:
        "../../envs/main.yaml"
    params:
        run=runner("main", "aggregate.py"),
        # what shapes the tables: the values (keys sorted, see canonical) and the order of
        # the models (the rows), not the order the config file lists keys in
        config=canonical(config),
        models=canonical(MODELS),
    shell:
        "printf '%s' {params.config:q} > {output.config} && "
        "{params.run} {log}"
        " --config {output.config} --models {params.models:q}"
        " --speed {input.speed} --accuracy {input.accuracy} --out-dir results/tables"


rule plots:
    input:
        CELLS,
    output:
        PLOTS,
    log:
        "logs/plots.log",
    conda:
        "../../envs/main.yaml"
    params:
        run=runner("main", "plot.py"),
    shell:
        "{params.run} {log} --cells {input} --out-dir results/plots"
