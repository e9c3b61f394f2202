# Model artifacts: checkpoint (downloaded and verified, a user's file, or seeded random)
# -> framework-neutral weights -> fp32 ONNX. Per-model config reaches each rule through
# params, so a change to one model reruns only that model's jobs. Every path and value
# reaches the shell quoted ({...:q}; params.run and params.source quote their own parts).

from infbench.precision import EXPORT_VERSION


rule fetch_checkpoint:
    output:
        "resources/checkpoints/{model}.pth",
    log:
        "logs/checkpoints/{model}.log",
    localrule: True
    conda:
        "../../envs/main.yaml"
    params:
        run=runner("main", "fetch_checkpoint.py"),
        arch=lambda wc: model_cfg(wc)["arch"],
        # quoted: a URL may hold & or ?, a path spaces
        source=lambda wc: " ".join(
            f"--{key} {shlex.quote(str(value))}"
            for key, value in sorted(model_cfg(wc)["checkpoint"].items())
        ),
    shell:
        "{params.run} {log:q}"
        " --model {wildcards.model:q} --arch {params.arch:q} {params.source} --out {output:q}"


# It builds the model anyway, so it also counts the MACs per image at the model's crop, for
# the tables (which then import no PyTorch): a changed crop counts them again.
rule convert_weights:
    input:
        checkpoint_file,
    output:
        weights="results/weights/{model}.safetensors",
        macs="results/weights/{model}.macs.json",
    log:
        "logs/weights/{model}.log",
    conda:
        "../../envs/main.yaml"
    params:
        run=runner("main", "convert_weights.py"),
        arch=lambda wc: model_cfg(wc)["arch"],
        crop=lambda wc: model_cfg(wc)["crop"],
        made_from=made_from("weights"),
    shell:
        "{params.run} {log:q}"
        " --arch {params.arch:q} --checkpoint {input:q} --out {output.weights:q}"
        " --crop {params.crop:q} --macs-out {output.macs:q}"


rule export_onnx:
    input:
        rules.convert_weights.output.weights,
    output:
        "results/onnx/{model}/fp32.onnx",
    log:
        "logs/onnx/{model}/fp32.log",
    conda:
        "../../envs/main.yaml"
    params:
        run=runner("main", "export_onnx.py"),
        arch=lambda wc: model_cfg(wc)["arch"],
        crop=lambda wc: model_cfg(wc)["crop"],
        made_from=made_from("weights"),
        # bumped when the export changes what it writes: redone for every model
        version=EXPORT_VERSION,
    shell:
        "{params.run} {log:q}"
        " --arch {params.arch:q} --weights {input:q} --crop {params.crop:q} --out {output:q}"


# A model given as the user's own ONNX file: its sha256 checked and its input put in the
# form export_onnx writes (named input, NCHW), as the same fp32 ONNX; fp16 and int8 follow
# as for any model. Only ONNX-file models match it, and it takes them from export_onnx.
rule import_onnx:
    input:
        # the user's file: never moved under a module's prefix
        lambda wc: local(model_cfg(wc)["checkpoint"]["onnx"]),
    output:
        "results/onnx/{model}/fp32.onnx",
    log:
        "logs/onnx/{model}/fp32.log",
    wildcard_constraints:
        model=names_pattern(ONNX_MODELS),
    conda:
        "../../envs/main.yaml"
    params:
        run=runner("main", "import_onnx.py"),
        sha256=lambda wc: model_cfg(wc)["checkpoint"]["sha256"],
        made_from=made_from("weights"),
    shell:
        "{params.run} {log:q}"
        " --model {wildcards.model:q} --onnx {input:q} --sha256 {params.sha256:q} --out {output:q}"


ruleorder: import_onnx > export_onnx
