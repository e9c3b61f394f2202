"""TensorRT: everything infbench does with it.

- ``build``: engines from a precision's ONNX, each with a sidecar recording what built it,
  the engine options and their defaults, and the check that an engine still matches this
  machine (TensorRT, GPU, driver, ONNX, options). Importable without TensorRT: the
  workflow's rules read its defaults. Its parts (``generations``, ``onnx_forms``,
  ``builder``, ``timing_cache``, ``sidecar``) are re-exported by it: import ``build``.
- ``session``: the runtime session that runs an engine (``open_session``); it refuses a
  stale engine in one sentence, since only the build_engine rule writes engines.
- ``cudart``: device buffers, streams and CUDA graphs over cuda-python.

What the TensorRT and cuda-python APIs were written against: docs/tensorrt-api-notes.md.
"""


def open_session(spec):
    """The runtime interface's entry point (infbench.runtimes.load); TensorRT itself is
    imported only here, so that the rules can read ``build``'s defaults without it."""
    from infbench.runtimes.tensorrt.session import open_session as session

    return session(spec)
