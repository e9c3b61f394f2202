"""Find the ONNX node whose inclusion makes a TensorRT engine build fail.

Builds the whole graph first; if TensorRT builds no engine, builds prefixes of the graph
(the nodes up to the k-th node on the path from the input, with whatever weights they
need, and every activation the rest of the graph would read marked as an output) and
bisects k: about log2(nodes) builds, not one per node. Prints the first node whose
inclusion fails, its inputs and TensorRT's message, or, when --budget-s runs out, the
range the node lies in. Builds at builder optimisation level --level (default 0, the
fastest; a level that builds the whole graph is not the one that fails, so the bisection
then runs at the project's default level instead).

    PYTHONPATH=workflow/scripts .venv-tensorrt/bin/python benchmarks/tensorrt_bisect.py \\
        --onnx results/onnx/inception_v3/int8-s8s8.onnx --precision int8 --batch-size 8

Needs TensorRT and an NVIDIA GPU for the builds; the prefix graphs and the bisection are
plain Python and onnx (tests/test_tensorrt.py runs them without TensorRT).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "workflow", "scripts"))

from infbench.errors import UserError, main_guard  # noqa: E402
from infbench.runtimes.tensorrt import build as engine  # noqa: E402


def activation_nodes(graph):
    """Indices (in the graph's topological order) of the nodes that depend on a graph input:
    the candidate cut points. Weight DequantizeLinear nodes and constants are not among
    them; they come along with the nodes that read them (``prefix_model``)."""
    initializers = {t.name for t in graph.initializer}
    live = {i.name for i in graph.input if i.name not in initializers}
    found = []
    for index, node in enumerate(graph.node):
        if any(name in live for name in node.input):
            found.append(index)
            live.update(node.output)
    return found


def cut_points(graph):
    """The prefix lengths worth building: after each activation node, except right after a
    QuantizeLinear (its int8 output is no network output TensorRT's explicit quantisation
    takes; its DequantizeLinear belongs with it)."""
    return [i + 1 for i in activation_nodes(graph) if graph.node[i].op_type != "QuantizeLinear"]


def prefix_model(model, length):
    """The model made of ``model.graph.node[:length]`` and every node they need (weights'
    DequantizeLinear, Constant), with the activations read by the nodes left out (and the
    graph's own outputs, where made) as outputs, typed and shaped by ONNX's shape inference.
    Returns a new ModelProto; ``model`` is left as it is."""
    import onnx
    from onnx import helper, shape_inference

    graph = model.graph
    producer = {name: index for index, node in enumerate(graph.node) for name in node.output}
    keep, stack = set(), list(range(length))
    while stack:  # the first ``length`` nodes and everything they read from
        index = stack.pop()
        if index in keep:
            continue
        keep.add(index)
        stack.extend(producer[name] for name in graph.node[index].input if name in producer)
    kept = [graph.node[i] for i in sorted(keep)]
    made = {name for node in kept for name in node.output}
    read_later = {name for i, node in enumerate(graph.node) if i not in keep for name in node.input}
    live = set()
    for index in activation_nodes(graph):
        live.update(graph.node[index].output)
    outputs = [name for node in kept for name in node.output if name in live and name in read_later]
    outputs += [o.name for o in graph.output if o.name in made and o.name not in outputs]
    inferred = {v.name: v for v in shape_inference.infer_shapes(model).graph.value_info}
    inferred.update({o.name: o for o in graph.output})
    used = {name for node in kept for name in node.input}
    prefix = helper.make_graph(
        kept,
        f"{graph.name}-prefix-{length}",
        list(graph.input),
        [inferred.get(name) or helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in outputs],
        [t for t in graph.initializer if t.name in used],
    )
    out = helper.make_model(prefix, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    return out


def first_failing(points, builds, budget_s, clock=time.monotonic):
    """Bisect ``points`` (increasing prefix lengths; the last one, the whole graph, is known to
    fail) for the first at which ``builds(length)`` is False. Returns (lo, hi, tried): the
    longest prefix seen to build (0: none) and the shortest seen to fail; hi is the answer
    when ``lo`` and ``hi`` are neighbours in ``points``, else the budget ran out first.
    ``tried`` lists (length, built) in the order tried."""
    started = clock()
    lo, hi = -1, len(points) - 1  # indices into points: -1 is the empty prefix
    tried = []
    while hi - lo > 1 and clock() - started < budget_s:
        mid = (lo + hi) // 2
        built = builds(points[mid])
        tried.append((points[mid], built))
        if built:
            lo = mid
        else:
            hi = mid
    return (points[lo] if lo >= 0 else 0), points[hi], tried


def describe(graph, lo, hi):
    """The activation nodes a prefix of ``hi`` nodes has and one of ``lo`` lacks, one per line:
    position, op, name, inputs and outputs."""
    added = [i for i in activation_nodes(graph) if lo <= i < hi]
    return "\n".join(
        f"  node {i} {graph.node[i].op_type} {graph.node[i].name!r}: inputs {list(graph.node[i].input)}"
        f" -> outputs {list(graph.node[i].output)}"
        for i in added
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", required=True, help="the ONNX whose engine does not build")
    parser.add_argument("--precision", required=True, choices=sorted(engine.ONNX_FOR_PRECISION))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--level", type=int, default=0, help="builder optimisation level of the bisection builds")
    parser.add_argument(
        "--tactic-sources", default=None, help="comma-separated TacticSource names; default: TensorRT's"
    )
    parser.add_argument("--workspace-mib", type=int, default=engine.DEFAULTS["workspace_mib"])
    parser.add_argument("--budget-s", type=float, default=600.0, help="start no build after this many seconds")
    parser.add_argument("--json", help="write what was tried and found here")
    args = parser.parse_args()
    import onnx

    trt = engine.import_tensorrt()
    generation = engine.api_generation(trt.__version__)
    model = onnx.load(args.onnx)
    if engine.PARSER_MAX_OPSET.get(generation, 99) < (engine.default_opset(model) or 0):
        engine.downgrade_to_opset17(model, args.onnx)  # as build_engine gives it to the parser
    shapes = engine.profile_shapes(args.onnx, args.batch_size)
    sources = None if args.tactic_sources is None else [t for t in args.tactic_sources.split(",") if t]
    started = time.monotonic()
    found = {"onnx": args.onnx, "precision": args.precision, "batch_size": args.batch_size, "builds": []}

    def build(length, level):
        candidate = model if length == len(model.graph.node) else prefix_model(model, length)
        options = engine.build_options(args.precision, args.batch_size, args.workspace_mib, False, sources, level)
        try:
            result = engine.build_serialized(
                trt, candidate.SerializeToString(), args.onnx, shapes, options, what=f"prefix of {length} nodes"
            )
        except UserError as err:  # the parser refused the prefix: count it as a failure, say why
            result = {"plan": None, "errors": [str(err)], "seconds": 0.0}
        record = {"nodes": length, "level": level, "built": result["plan"] is not None}
        record.update(seconds=round(result["seconds"], 1), errors=result["errors"])
        found["builds"].append(record)
        print(
            f"prefix of {length} nodes, level {level}: {'builds' if record['built'] else 'fails'}"
            f" ({record['seconds']} s){': ' + result['errors'][0] if result['errors'] else ''}",
            flush=True,
        )
        return record["built"]

    whole = len(model.graph.node)
    level = args.level
    if build(whole, level) and level is not None:
        print(f"the whole graph builds at level {level}; bisecting at the project's default level instead")
        level = engine.DEFAULTS["builder_optimization_level"]
        if build(whole, level):
            print(f"{args.onnx} builds as {args.precision}: nothing to bisect")
            found["result"] = "builds"
            return finish(found, args.json)
    points = [p for p in cut_points(model.graph) if p < whole] + [whole]
    lo, hi, _ = first_failing(points, lambda length: build(length, level), args.budget_s - (time.monotonic() - started))
    neighbours = points.index(hi) - (points.index(lo) if lo else -1) == 1
    failing = [b for b in found["builds"] if b["nodes"] == hi and not b["built"]]
    message = failing[-1]["errors"][0] if failing and failing[-1]["errors"] else "no message"
    if neighbours:
        print(f"prefixes of {lo} nodes build, of {hi} fail; the node(s) whose inclusion fails:")
        found["result"] = {"builds_up_to": lo, "fails_from": hi, "message": message}
    else:
        print(f"budget spent: prefixes of {lo} nodes build, of {hi} fail; the failing node is among:")
        found["result"] = {"builds_up_to": lo, "fails_from": hi, "message": message, "budget_spent": True}
    print(describe(model.graph, lo, hi))
    print(f"TensorRT: {message}")
    return finish(found, args.json)


def finish(found, path):
    if path:
        with open(path, "w") as f:
            json.dump(found, f, indent=2)


if __name__ == "__main__":
    main_guard(main)
