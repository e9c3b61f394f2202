# Precision is an ONNX transform shared by every ONNX consumer: fp16 ONNX, and int8 Q/DQ
# ONNX calibrated once, written as S8S8 (TensorRT) and U8S8 (ONNX Runtime on x86 CPUs).


rule convert_fp16:
    input:
        rules.export_onnx.output[0],
    output:
        "results/onnx/{model}/fp16.onnx",
    log:
        "logs/onnx/{model}/fp16.log",
    conda:
        "../../envs/main.yaml"
    params:
        run=runner("main", "convert_fp16.py"),
        # bumped when the fp16 conversion changes what it writes: redone for every model
        version=FP16_VERSION,
        made_from=made_from("weights"),
    shell:
        "{params.run} {log}" " --onnx {input} --out {output}"


rule calibrate_int8:
    input:
        onnx=rules.export_onnx.output[0],
        cache=lambda wc: cache_file(wc.model),
        index=INDEX,
    output:
        s8s8="results/onnx/{model}/int8-s8s8.onnx",
        u8s8="results/onnx/{model}/int8-u8s8.onnx",
        images="results/onnx/{model}/calibration.tsv",
    log:
        "logs/onnx/{model}/int8.log",
    # CPU work that no timed job may run beside (those take every core): started as soon as
    # it can, the calibrations run side by side with each other and with accuracy runs
    priority: 1
    conda:
        "../../envs/main.yaml"
    params:
        run=runner("main", "calibrate_int8.py"),
        images=config["calibration"]["images"],
        method=config["calibration"]["method"],
        seed=config["calibration"]["seed"],
        made_from=made_from("weights", "data", "calibration"),
    shell:
        "{params.run} {log}"
        " --onnx {input.onnx} --cache {input.cache} --index {input.index}"
        " --images {params.images} --method {params.method} --seed {params.seed}"
        " --out-s8s8 {output.s8s8} --out-u8s8 {output.u8s8} --out-list {output.images}"


rule int8_fp16_form:
    # int8 for TensorRT 10/11 (strongly typed): the same Q/DQ, the rest of the graph fp16
    input:
        rules.calibrate_int8.output.s8s8,
    output:
        "results/onnx/{model}/int8-s8s8-fp16.onnx",
    log:
        "logs/onnx/{model}/int8-fp16.log",
    conda:
        "../../envs/main.yaml"
    params:
        run=runner("main", "convert_fp16.py"),
        # bumped when the fp16 conversion changes what it writes: redone for every model
        version=FP16_VERSION,
        made_from=made_from("weights", "data", "calibration"),
    shell:
        "{params.run} {log}" " --onnx {input} --out {output}"
