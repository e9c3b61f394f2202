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
        config=json.dumps(config),
    shell:
        "printf '%s' {params.config:q} > {output.config} && "
        "{params.run} {log}"
        " --config {output.config} --speed {input.speed} --accuracy {input.accuracy}"
        " --out-dir results/tables"
