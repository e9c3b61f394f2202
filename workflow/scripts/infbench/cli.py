"""Argument parsing shared by the scripts that open a runtime session."""

import json

from infbench.errors import UserError
from infbench.runtimes import CAPABILITIES
from infbench.runtimes.base import SessionSpec


def add_cell_args(parser, several=False):
    """The options that name one matrix cell and its artifact; with ``several``, the cells
    of one (runtime, model, precision) at several batch sizes, an artifact for each (or
    one for all)."""
    many = "+" if several else None
    parser.add_argument("--runtime", required=True, choices=sorted(CAPABILITIES))
    parser.add_argument("--model", required=True, help="the model's name in the config")
    parser.add_argument("--arch", required=True)
    parser.add_argument("--precision", required=True, choices=["fp32", "fp16", "int8"])
    parser.add_argument("--batch-size", required=True, type=int, nargs=many)
    parser.add_argument("--device", required=True, choices=["cpu", "cuda"])
    parser.add_argument("--artifact", required=True, nargs=many, help="weights, ONNX or engine file")
    parser.add_argument("--crop", required=True, type=int, help="input height and width")
    parser.add_argument("--options", default="{}", help="the runtime's config block, JSON")


def spec_from_args(args, batch_size=None, artifact=None):
    """The cell's SessionSpec; ``batch_size`` and ``artifact`` pick one of several."""
    return SessionSpec(
        runtime=args.runtime,
        model=args.model,
        arch=args.arch,
        precision=args.precision,
        batch_size=args.batch_size if batch_size is None else batch_size,
        device=args.device,
        artifact=args.artifact if artifact is None else artifact,
        crop=args.crop,
        options=json.loads(args.options),
    )


def several_cells(args, outputs):
    """(batch size, artifact, output) of each cell of a --batch-size list, in order."""
    sizes, artifacts = args.batch_size, args.artifact
    if len(artifacts) == 1:
        artifacts = artifacts * len(sizes)
    if not (len(artifacts) == len(sizes) == len(outputs)):
        raise UserError(
            f"{len(sizes)} batch sizes need one --artifact or one each and one --out each;"
            f" got {len(artifacts)} artifacts and {len(outputs)} outputs"
        )
    return list(zip(sizes, artifacts, outputs))


def cell_of(spec):
    return {
        "runtime": spec.runtime,
        "model": spec.model,
        "arch": spec.arch,
        "precision": spec.precision,
        "batch_size": spec.batch_size,
        "device": spec.device,
    }


def open_cache(path, crop):
    """The uint8 NHWC tensor cache as a read-only memmap, checked against the input size."""
    import numpy as np

    cache = np.load(path, mmap_mode="r")
    if cache.ndim != 4 or cache.shape[1:] != (crop, crop, 3) or cache.dtype != np.uint8:
        raise UserError(
            f"{path} holds {cache.dtype} {cache.shape}, not uint8 (N, {crop}, {crop}, 3);"
            " delete it so that the workflow preprocesses the data set again"
        )
    return cache
