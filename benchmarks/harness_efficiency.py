"""Harness efficiency: images/s through infbench.timing.measure vs a minimal hand loop.

For each runtime, a session is opened through the registry
(``infbench.runtimes.load(name).open_session(spec)``) and timed with
``infbench.timing.measure``; in the same process, a hand-written loop of the same runtime
runs on the same batches with its own model object (ONNX Runtime: the same
InferenceSession, its own loop and bindings):

    torch:        with torch.inference_mode(): for x in xs: model(x)
                  (on CUDA with cuda_graphs on, the session's default: one captured graph per
                  staged batch, replayed: graph.replay())
    onnxruntime:  for x in xs: sess.run(None, {"input": x})
                  (on CUDA: sess.run_with_iobinding(binding); on the session's own
                  InferenceSession, so that both run the same kernels)
    tensorrt:     for x in xs: context.set_tensor_address(input, x); context.execute_async_v3(stream)
                  (its own engine, context, stream and device buffers; one stream sync at the end)

The two alternate (ABBA order) for a few rounds; the table shows each round and the
ratio harness / hand of the medians. A ratio near 1 means the session adds no overhead.

    PYTHONPATH=workflow/scripts .venv/bin/python benchmarks/harness_efficiency.py \\
        --runtime torch onnxruntime --arch resnet50 --batch-size 8 --crop 224

TensorRT runs under its own interpreter on an engine the workflow built (--engine):

    PYTHONPATH=workflow/scripts .venv-tensorrt/bin/python benchmarks/harness_efficiency.py \\
        --runtime tensorrt --device cuda --precision fp16 --batch-size 8 \\
        --engine results/engines/resnet50/fp16-bs8.plan --options '{"cuda_graphs": false}'

Other runtimes plug in through HAND_LOOPS (a function of the spec, the batches and the
harness's session that builds the hand loop) and --weights / --onnx / --engine (artifacts
made elsewhere, e.g. under another interpreter). Weights are seeded random torchvision
initialisations (speed does not depend on them); the int8 model is calibrated with minmax
on random images (speed does not depend on the ranges).
"""

import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "workflow", "scripts"))

import numpy as np  # noqa: E402

from infbench import runtimes, timing  # noqa: E402
from infbench.errors import UserError, main_guard  # noqa: E402
from infbench.runtimes.base import SessionSpec, normalise_nchw  # noqa: E402


def torch_hand_loop(spec, batches, session):
    """The plainest PyTorch loop: eager model, normalised tensors, inference mode (its own
    model: ``session`` is not used)."""
    import torch

    from infbench.models import load_torch

    device = torch.device(spec.device)
    dtype = torch.float16 if spec.precision == "fp16" else torch.float32
    layout = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    model = load_torch(spec.arch, spec.artifact).to(device, dtype=dtype, memory_format=layout)
    xs = [torch.from_numpy(normalise_nchw(b)).to(device, dtype).contiguous(memory_format=layout) for b in batches]
    if device.type == "cuda" and spec.options.get("cuda_graphs", True) and not spec.options.get("compile"):
        return torch_graph_loop(model, xs)

    def loop(count):
        with torch.inference_mode():
            for i in range(count):
                y = model(xs[i % len(xs)])
        if device.type == "cuda":
            torch.cuda.synchronize()
        return y

    return loop


def torch_graph_loop(model, xs):
    """The plainest CUDA-graph loop, as in PyTorch's CUDA-graph docs: warm up on a side
    stream, capture one graph per staged input (one shared memory pool), replay them."""
    import torch

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side), torch.inference_mode():
        for x in xs:
            model(x)
    torch.cuda.current_stream().wait_stream(side)
    pool = torch.cuda.graph_pool_handle()
    graphs, outs = [], []
    for x in xs:
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, pool=pool):
            outs.append(model(x))  # each graph's static output stays alive, as in the docs' examples
        graphs.append(graph)

    def loop(count):
        for i in range(count):
            graphs[i % len(graphs)].replay()
        torch.cuda.synchronize()
        return outs

    loop.keep_alive = (model, xs, graphs, outs)
    return loop


def onnxruntime_hand_loop(spec, batches, session):
    """The plainest ONNX Runtime loop: on the CPU ``sess.run(None, {"input": x})`` on float32
    arrays; on CUDA the documented device-resident form, an I/O binding of an input OrtValue
    already on the GPU and an output left to ONNX Runtime on the GPU,
    ``sess.run_with_iobinding(binding)`` with its default run options (which synchronise
    after each run). The provider options are the session's (TF32, NHWC and cuDNN's algorithm
    search as configured).

    It runs on the harness session's own InferenceSession (``session.session``), so that
    both loops run the same kernels: ONNX Runtime's CUDA provider picks each convolution's
    algorithm by timing candidates when a session first runs, and two sessions of one fp16
    model, run the same way, were 14 % apart on the H200 (alexnet batch 8). ``--hand '{"own_session": true}'``
    opens a session of its own instead (without CUDA graphs), as before."""
    import onnxruntime as ort

    from infbench.runtimes.onnxruntime import provider_options

    variant = spec.options.get("hand", {})  # --hand: the loop made more like the session, one step at a time
    if not variant.get("own_session") and not session.cuda_graphs:
        sess = session.session
    else:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = int(spec.options.get("threads") or os.cpu_count())
        if variant.get("inter_op_threads"):
            options.inter_op_num_threads = int(variant["inter_op_threads"])
        providers, provider_opts = provider_options(spec)
        provider_opts = [{k: v for k, v in o.items() if k != "enable_cuda_graph"} for o in provider_opts]
        sess = ort.InferenceSession(
            spec.artifact, sess_options=options, providers=providers, provider_options=provider_opts
        )
    xs = [normalise_nchw(b) for b in batches]
    if spec.device == "cpu":

        def loop(count):
            for i in range(count):
                y = sess.run(None, {"input": xs[i % len(xs)]})
            return y

        return loop
    bindings, outs = [], []
    output = sess.get_outputs()[0]
    for x in xs:
        binding = sess.io_binding()
        binding.bind_ortvalue_input("input", ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        if variant.get("preallocated_output"):
            dtype = np.float16 if output.type == "tensor(float16)" else np.float32
            shape = [spec.batch_size] + [d if isinstance(d, int) else 1 for d in output.shape[1:]]
            outs.append(ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, "cuda", 0))
            binding.bind_ortvalue_output(output.name, outs[-1])
        else:
            binding.bind_output(output.name, "cuda")
        bindings.append(binding)
    run_options = None
    if variant.get("per_run_sync", True) is False:
        run_options = ort.RunOptions()
        run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")

    def loop(count):
        for i in range(count):
            sess.run_with_iobinding(bindings[i % len(bindings)], run_options)
        if run_options is not None:
            bindings[(count - 1) % len(bindings)].synchronize_outputs()
        return bindings

    loop.keep_alive = outs
    return loop


def tensorrt_hand_loop(spec, batches, session):
    """The plainest TensorRT loop: enqueue after enqueue on one stream, one sync at the end
    (its own engine and context: ``session`` is not used)."""
    import tensorrt as trt

    from infbench.runtimes.tensorrt import cudart

    logger = trt.Logger(trt.Logger.WARNING)
    with open(spec.artifact, "rb") as f:
        engine = trt.Runtime(logger).deserialize_cuda_engine(f.read())
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inp = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
    out = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
    context.set_input_shape(inp, (spec.batch_size, 3, spec.crop, spec.crop))
    stream = cudart.Stream()
    xs = []
    for b in batches:
        x = normalise_nchw(b, np.dtype(trt.nptype(engine.get_tensor_dtype(inp))))
        xs.append(cudart.DeviceBuffer(x.nbytes))
        cudart.memcpy_htod_async(xs[-1], x, stream)
    y_bytes = int(np.prod(context.get_tensor_shape(out))) * np.dtype(trt.nptype(engine.get_tensor_dtype(out))).itemsize
    y = cudart.DeviceBuffer(y_bytes)
    context.set_tensor_address(out, y.ptr)
    stream.synchronize()
    handle = stream.handle

    def loop(count):
        for i in range(count):
            context.set_tensor_address(inp, xs[i % len(xs)].ptr)
            context.execute_async_v3(handle)
        stream.synchronize()

    loop.keep_alive = (engine, context, stream, xs, y)
    return loop


# runtime -> function(spec, batches) returning loop(count); add a runtime here
HAND_LOOPS = {
    "torch": torch_hand_loop,
    "onnxruntime": onnxruntime_hand_loop,
    "tensorrt": tensorrt_hand_loop,
}


def time_hand(loop, warmup, timed, windows, batch_size):
    """Median images/s of ``windows`` windows of ``timed`` batches, after ``warmup``."""
    if warmup:
        loop(warmup)
    rates = []
    for _ in range(windows):
        t0 = time.perf_counter()
        loop(timed)
        rates.append(timed * batch_size / (time.perf_counter() - t0))
    return statistics.median(rates)


def make_artifact(runtime, args, work):
    """The file the runtime loads: seeded weights, fp32 ONNX or the int8 U8S8/S8S8 ONNX."""
    kind = runtimes.ARTIFACT[runtime]
    if args.artifact and runtime in args.artifact:
        return args.artifact[runtime]
    if kind == "engine":
        if not args.engine:
            raise UserError(f"--runtime {runtime} needs --engine PATH, an engine the workflow built")
        return args.engine
    weights = args.weights or os.path.join(work, f"{args.arch}.safetensors")
    if not os.path.exists(weights):
        import torch  # noqa: F401  (only needed to make weights here)
        from safetensors.torch import save_file

        from infbench.models import build_torch

        save_file(
            {k: v.contiguous() for k, v in build_torch(args.arch, seed=0).state_dict().items()},
            weights,
        )
    if kind == "weights":
        return weights
    from infbench import precision

    fp32 = args.onnx or os.path.join(work, f"{args.arch}-{args.crop}-fp32.onnx")
    if not os.path.exists(fp32):
        precision.export_fp32(args.arch, weights, args.crop, fp32)
    if args.precision == "fp32":
        return fp32
    if args.precision == "fp16":
        out = os.path.join(work, f"{args.arch}-{args.crop}-fp16.onnx")
        if not os.path.exists(out):
            precision.to_fp16(fp32, out)
        return out
    form = runtimes.int8_form(runtime, args.device)
    outs = {f: os.path.join(work, f"{args.arch}-{args.crop}-int8-{f}.onnx") for f in ("s8s8", "u8s8")}
    if not os.path.exists(outs[form]):
        rng = np.random.default_rng(0)
        cache = os.path.join(work, f"random-{args.crop}.npy")
        np.save(cache, rng.integers(0, 256, (16, args.crop, args.crop, 3), dtype=np.uint8))
        rows = [(f"random{i}", 0) for i in range(16)]
        listing = os.path.join(work, "calibration.tsv")
        precision.calibrate_int8(fp32, cache, rows, 16, "minmax", outs["s8s8"], outs["u8s8"], listing)
    return outs[form]


def bench(runtime, args, work):
    if runtime not in HAND_LOOPS:
        raise UserError(f"no hand loop for --runtime {runtime}; add one to HAND_LOOPS in {__file__}")
    options = json.loads(args.options)
    if json.loads(args.hand):
        options["hand"] = json.loads(args.hand)
    if runtime == "tensorrt" and args.engine:
        # time the engine as the workflow built it: its build options come from its sidecar
        from infbench.runtimes.tensorrt import build as engine

        options = {**engine.settings_of_sidecar(engine.read_sidecar(engine.sidecar_path(args.engine))), **options}
    spec = SessionSpec(
        runtime=runtime,
        model=args.arch,
        arch=args.arch,
        precision=args.precision,
        batch_size=args.batch_size,
        device=args.device,
        artifact=make_artifact(runtime, args, work),
        crop=args.crop,
        options=options,
    )
    rng = np.random.default_rng(1)
    batches = [
        rng.integers(0, 256, (args.batch_size, args.crop, args.crop, 3), dtype=np.uint8) for _ in range(args.staged)
    ]
    session = runtimes.load(runtime).open_session(spec)
    hand = HAND_LOOPS[runtime](spec, batches, session)
    rows = []
    try:
        for r in range(args.rounds):
            order = ("harness", "hand") if r % 2 == 0 else ("hand", "harness")
            rates = {}
            for who in order:
                if who == "harness":
                    rates[who] = timing.measure(session, batches, args.warmup, args.timed, args.windows)["images_per_s"]
                else:
                    rates[who] = time_hand(hand, args.warmup, args.timed, args.windows, args.batch_size)
            rows.append(rates)
        info = session.info()
    finally:
        session.close()
    return spec, rows, info


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtime", nargs="+", default=["torch", "onnxruntime"])
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--crop", type=int, default=224)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--options", default="{}", help="the runtime's options block, JSON")
    parser.add_argument(
        "--hand",
        default="{}",
        help="ONNX Runtime on CUDA: the hand loop made like the session in one respect, JSON:"
        ' {"per_run_sync": false, "preallocated_output": true, "inter_op_threads": 1}',
    )
    parser.add_argument("--staged", type=int, default=4, help="distinct batches in rotation")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--timed", type=int, default=20, help="batches per window")
    parser.add_argument("--windows", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=4, help="harness/hand alternations")
    parser.add_argument("--weights", help="existing .safetensors (else seeded random, made here)")
    parser.add_argument("--onnx", help="existing fp32 .onnx (else exported here)")
    parser.add_argument("--engine", help="existing TensorRT engine (.plan with its sidecar)")
    parser.add_argument(
        "--artifact",
        type=json.loads,
        default=None,
        help="the file each runtime loads, as the workflow made it, JSON:"
        ' {"onnxruntime": "results/onnx/resnet50/fp16.onnx"} (else made here)',
    )
    parser.add_argument("--work-dir", default="results/bench", help="where made artifacts are kept")
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)

    print(
        f"{args.arch} {args.precision} bs{args.batch_size} crop {args.crop} on {args.device};"
        f" {args.rounds} rounds x {args.windows} window(s) x {args.timed} batches,"
        f" {args.staged} staged"
    )
    for runtime in args.runtime:
        spec, rows, info = bench(runtime, args, args.work_dir)
        print(f"\n{runtime}: {os.path.basename(spec.artifact)}; {json.dumps(info)}")
        print("| round | harness img/s | hand img/s | harness/hand |")
        print("|---|---|---|---|")
        for r, rates in enumerate(rows, start=1):
            harness, hand = rates["harness"], rates["hand"]
            print(f"| {r} | {harness:.2f} | {hand:.2f} | {harness / hand:.3f} |")
        harness = statistics.median(r["harness"] for r in rows)
        hand = statistics.median(r["hand"] for r in rows)
        print(f"| median | {harness:.2f} | {hand:.2f} | {harness / hand:.3f} |")


if __name__ == "__main__":
    main_guard(main)
