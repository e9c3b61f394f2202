# The data set: generated synthetic JPEGs or an ImageNet validation folder, indexed the
# same way, then preprocessed once per input size into a uint8 NHWC tensor cache. Every
# path and value reaches the shell quoted ({...:q}; params.run and params.args quote their own).


rule synthetic_images:
    output:
        directory("results/datasets/synthetic/images"),
    log:
        "logs/datasets/synthetic/images.log",
    conda:
        "../../envs/main.yaml"
    params:
        run=runner("main", "make_synthetic.py"),
        images=config["dataset"].get("images"),
        seed=config["dataset"]["seed"],
    shell:
        "{params.run} {log:q}"
        " --images {params.images:q} --seed {params.seed:q} --out {output:q}"


rule index_dataset:
    input:
        # the synthetic set is generated; an ImageNet folder is read in place, but its
        # label and synset files are inputs: editing one in place re-indexes
        ["results/datasets/synthetic/images"] if DATASET == "synthetic" else [],
        dataset_files(),
    output:
        index=INDEX,
        labels=LABELS,
        bad=BAD_IMAGES,
    log:
        f"logs/datasets/{DATASET}/index.log",
    conda:
        "../../envs/main.yaml"
    threads: workflow.cores  # the scan for unreadable images decodes every file once
    params:
        run=runner("main", "index_dataset.py"),
        # not in the command: here so that any change to the dataset block re-indexes
        dataset=canonical(config["dataset"]),
        args=dataset_args(),
        bad_images=config["dataset"]["bad_images"],
    shell:
        "{params.run} {log:q}"
        " {params.args} --bad-images {params.bad_images:q} --workers {threads}"
        " --out {output.index:q} --labels-out {output.labels:q} --bad-out {output.bad:q}"


rule preprocess:
    input:
        INDEX,
    output:
        f"results/cache/{DATASET}/{{resize}}-{{crop}}.npy",
    log:
        f"logs/cache/{DATASET}/{{resize}}-{{crop}}.log",
    wildcard_constraints:
        resize=r"\d+",
        crop=r"\d+",
    # ahead of timed jobs when both are ready: the cells of every model at this size wait for it
    priority: 1
    conda:
        "../../envs/main.yaml"
    threads: workflow.cores
    params:
        run=runner("main", "preprocess.py"),
        # bumped when the preprocessing code changes what it writes: the caches are redone
        version=PREPROCESS_VERSION,
        # the index it reads is made from it (see made_from in common.smk)
        dataset=canonical(config["dataset"]),
    shell:
        "{params.run} {log:q}"
        " --index {input:q} --resize {wildcards.resize:q} --crop {wildcards.crop:q}"
        " --out {output:q} --workers {threads}"


# The caches of the other resize filters (a model's interpolation: bicubic), named
# {resize}-{crop}-{interpolation} (infbench.data.cache_name). A rule of its own so that the
# bilinear caches' rule above, and with it every cache already made, stays as it was.
rule preprocess_interpolated:
    input:
        INDEX,
    output:
        f"results/cache/{DATASET}/{{resize}}-{{crop}}-{{interpolation}}.npy",
    log:
        f"logs/cache/{DATASET}/{{resize}}-{{crop}}-{{interpolation}}.log",
    wildcard_constraints:
        resize=r"\d+",
        crop=r"\d+",
        interpolation="|".join(i for i in INTERPOLATIONS if i != DEFAULT_INTERPOLATION),
    priority: 1
    conda:
        "../../envs/main.yaml"
    threads: workflow.cores
    params:
        run=runner("main", "preprocess.py"),
        version=PREPROCESS_VERSION,
        dataset=canonical(config["dataset"]),
    shell:
        "{params.run} {log:q}"
        " --index {input:q} --resize {wildcards.resize:q} --crop {wildcards.crop:q}"
        " --interpolation {wildcards.interpolation:q} --out {output:q} --workers {threads}"
