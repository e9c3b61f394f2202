"""The OneFlow runtime: flowvision models with the framework-neutral weights, eager or nn.Graph.

Runs only under the OneFlow interpreter (Python 3.10, oneflow 0.9.0, flowvision 0.2.1; no
torch). The runtime's config block (``spec.options``) may hold:

- ``mode``: ``graph`` (default) wraps the model in ``oneflow.nn.Graph``, compiled on the
  first call for each input shape; ``eager`` runs the module op by op.
- ``threads``: CPU intra-op threads, set with ``oneflow.set_num_threads`` before anything
  runs (process-wide). Unset: every core, as for the other runtimes (OneFlow's own
  default would be ``OMP_NUM_THREADS``, else the logical cores minus two).
- ``allow_tf32``: on cuda, whether cuBLAS may use TF32 for fp32 (default false: strict fp32,
  through OneFlow's ``ONEFLOW_EP_CUDA_ENABLE_TF32_EXECUTION``).

OneFlow executes asynchronously: ``run`` returns at once and only reading a result back
(``Tensor.numpy``) waits for the work, so ``sync`` reads the output back.

The CUDA path (fp32 and fp16) has not run: OneFlow 0.9 ships kernels for sm_60 to sm_86
only, and the machines at hand are CPU-only or H200 (sm_90).
"""

import os

import numpy as np

from infbench.errors import UserError
from infbench.provenance import cpu_name
from infbench.weights import read_weights
from infbench.runtimes import CAPABILITIES, FLOWVISION_ARCHS, NOT_FOR_ARCH
from infbench.runtimes.base import Session, normalise_nchw

try:
    import oneflow as flow
except ImportError as err:
    raise UserError(
        f"cannot import oneflow ({err}); run the oneflow runtime with the OneFlow"
        " interpreter (config key runtimes.oneflow.python, made by `make env`)"
    ) from None

MODES = ("graph", "eager")


def open_session(spec):
    """A OneFlow session for one matrix cell (see the module docstring for options)."""
    return OneFlowSession(spec)


class OneFlowSession(Session):
    """A flowvision model with the neutral weights, on cpu or cuda, in fp32 or fp16."""

    def __init__(self, spec):
        super().__init__(spec)
        options = spec.options or {}
        self._mode = _check_mode(options.get("mode", "graph"))
        _check_device_precision(spec.device, spec.precision)
        # every core by default, as the other runtimes (OneFlow's own default is cores - 2)
        self._threads = _check_threads(options.get("threads")) or os.cpu_count()
        flow.set_num_threads(self._threads)
        self._tf32 = None
        if spec.device == "cuda":
            self._tf32 = bool(options.get("allow_tf32", False))
            os.environ["ONEFLOW_EP_CUDA_ENABLE_TF32_EXECUTION"] = "1" if self._tf32 else "0"
            _check_cuda()
        self._device = flow.device(spec.device)
        self._np_dtype = np.float16 if spec.precision == "fp16" else np.float32

        model = build_model(spec.arch)
        load_weights(model, read_weights(spec.artifact), spec.artifact, spec.arch)
        if spec.arch == "inception_v3":
            model = _InceptionLogits(model)
        model.eval()
        model.requires_grad_(False)
        model.to(self._device)
        if spec.precision == "fp16":
            # BatchNorm too: OneFlow casts half BN parameters to float for cuDNN
            # (Oneflow-Inc/oneflow#9388); not run here: no usable GPU
            model.half()
        self._model = model
        self._graphs = {}  # input shape -> compiled nn.Graph (graph mode)

    def stage(self, images):
        """uint8 NHWC -> normalised NCHW tensor of the session's dtype, on the device."""
        return flow.tensor(normalise_nchw(images, self._np_dtype), device=self._device)

    def run(self, staged):
        """Enqueue one forward pass; OneFlow returns before the work is done."""
        if self._mode == "eager":
            return self._model(staged)
        shape = tuple(staged.shape)
        graph = self._graphs.get(shape)
        if graph is None:
            graph = self._graphs[shape] = _InferenceGraph(self._model)
        return graph(staged)

    def sync(self, output):
        """Read ``output`` back: the only way to wait for OneFlow's asynchronous work."""
        output.numpy()

    def logits(self, output):
        return output.numpy().astype(np.float32, copy=False)

    def info(self):
        import flowvision

        info = {
            "oneflow": flow.__version__,
            "oneflow_git_commit": getattr(flow, "__git_commit__", None),
            "flowvision": flowvision.__version__,
            "mode": self._mode,
            # graph mode: the nn.Graphs OneFlow has compiled, one per input shape run so far
            "graphs_compiled": sum(g.is_compiled for g in self._graphs.values()) if self._mode == "graph" else None,
            "device": self.spec.device,
            "device_name": cpu_name(),
            "threads": self._threads,
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        }
        if self.spec.device == "cuda":
            from oneflow import sysconfig

            version = sysconfig.get_cuda_version()  # e.g. 11070
            info["device_name"] = flow.cuda.get_device_name(0)
            info["cuda"] = f"{version // 1000}.{version % 1000 // 10}"
            # as OneFlow's CUDA provider reads it (the variable the session set), not the config
            info["tf32"] = os.environ.get("ONEFLOW_EP_CUDA_ENABLE_TF32_EXECUTION") == "1"
        return info

    def close(self):
        self._graphs.clear()
        self._model = None


class _InferenceGraph(flow.nn.Graph):
    """The model as a static graph; OneFlow compiles it on the first call."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def build(self, x):
        return self.model(x)


class _InceptionLogits(flow.nn.Module):
    """flowvision 0.2.1's Inception3 as torchvision runs it in eval: logits only.

    Its ``forward`` never applies ``_transform_input`` (torchvision's does when
    ``transform_input=True``) and always returns the tuple ``(logits, aux)``; this
    wrapper re-normalises the input as torchvision does and keeps the logits.
    """

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        logits, _ = self.net(self.net._transform_input(x))
        return logits


def build_model(arch):
    """The flowvision model for ``arch``, built with torchvision's flags (infbench.models);
    only the archs of FLOWVISION_ARCHS (the workflow plans no OneFlow cell of another)."""
    import flowvision.models

    if arch not in FLOWVISION_ARCHS:
        raise UserError(
            f"OneFlow: {NOT_FOR_ARCH} ({arch}: flowvision 0.2.1 has no model of that name with"
            " torchvision's parameters); remove oneflow from runtimes or choose another arch"
        )
    if arch == "inception_v3":
        return flowvision.models.inception_v3(aux_logits=True, transform_input=True, init_weights=False)
    return getattr(flowvision.models, arch)()


def load_weights(model, weights, path, arch):
    """Load torchvision-named numpy weights strictly; flowvision uses the same names."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise UserError(
            f"{path} does not hold {arch} weights ({len(missing)} missing keys such as"
            f" {missing[:1]}, {len(unexpected)} unexpected such as {unexpected[:1]});"
            f" delete it so that it is converted again, or fix the model's arch"
        )
    for name, array in weights.items():
        if tuple(array.shape) != tuple(expected[name].shape):
            raise UserError(
                f"{path}: tensor {name} has shape {tuple(array.shape)}, {arch} needs"
                f" {tuple(expected[name].shape)}; delete it so that it is converted again"
            )
    # from_numpy shares the arrays (load_state_dict copies them into the model): flow.tensor
    # copied each first, 2 s of opening a vgg16 session
    model.load_state_dict({k: flow.from_numpy(v) for k, v in weights.items()}, strict=True)


def _check_mode(mode):
    if mode not in MODES:
        raise UserError(f"runtimes.oneflow.mode is {mode!r}; set it to one of {', '.join(MODES)}")
    return mode


def _check_device_precision(device, precision):
    allowed = CAPABILITIES["oneflow"]
    if device not in allowed:
        raise UserError(f"runtimes.oneflow.device is {device!r}; set it to one of {', '.join(allowed)}")
    if precision == "fp16" and device == "cpu":
        raise UserError(
            "OneFlow has no fp16 kernels on the CPU; remove fp16 from"
            " runtimes.oneflow.precisions or set runtimes.oneflow.device to cuda"
        )
    if precision not in allowed[device]:
        raise UserError(
            f"OneFlow runs {', '.join(allowed[device])} on {device}; remove {precision}"
            " from runtimes.oneflow.precisions"
        )


def _check_cuda():
    """A usable GPU that OneFlow 0.9 has kernels for (sm_60 to sm_86 cubins, no PTX)."""
    if not flow.cuda.is_available():
        raise UserError(
            "OneFlow sees no usable CUDA device; set runtimes.oneflow.device to cpu"
            " or run on a machine with a Pascal-to-Ada NVIDIA GPU and its driver"
        )
    major, minor = flow.cuda.get_device_capability(0)
    if not 6 <= major <= 8:
        raise UserError(
            f"OneFlow 0.9 has no CUDA kernels for {flow.cuda.get_device_name(0)} (compute"
            f" capability {major}.{minor}; it supports 6.0 to 8.9); set"
            " runtimes.oneflow.device to cpu or use a Pascal-to-Ada GPU"
        )


def _check_threads(threads):
    if threads is None:
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UserError(f"runtimes.oneflow.threads is {threads!r}; set it to a positive integer or remove it")
    return threads
