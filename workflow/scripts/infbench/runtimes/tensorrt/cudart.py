"""A thin layer over NVIDIA's cuda-python runtime bindings: errors, buffers, streams, graphs.

The TensorRT runtime needs device buffers, a stream and (optionally) CUDA graphs; this
module gives it those and nothing else, so that it can be exercised on a GPU machine that
has cuda-python but no TensorRT (benchmarks/cuda_python_check.py).

Every cuda-python runtime call returns a tuple whose first item is a ``cudaError_t``;
``check`` turns a non-success code into a ``CudaError`` that names it.

The calls and their signatures: docs/tensorrt-api-notes.md.
"""

import numpy as np

try:
    from cuda.bindings import runtime as rt
except ImportError:  # cuda-python before the cuda.bindings package (12.x early releases)
    from cuda import cudart as rt


class CudaError(RuntimeError):
    """A CUDA runtime call failed; ``name`` is the cudaError_t name, e.g. cudaErrorInvalidValue."""

    def __init__(self, error, call=""):
        self.code = int(error)
        self.name = _error_text(rt.cudaGetErrorName, error) or f"cudaError {self.code}"
        description = _error_text(rt.cudaGetErrorString, error)
        where = f" in {call}" if call else ""
        super().__init__(f"{self.name}{where}: {description}")


def _error_text(function, error):
    """The name or description the runtime gives an error code, as str."""
    status, text = function(error)
    if status != rt.cudaError_t.cudaSuccess:
        return ""
    return text.decode() if isinstance(text, bytes) else str(text)


def check(result, call=""):
    """Unpack a cuda-python result tuple ``(err, *values)``; raise CudaError unless success.

    Returns None, the single value, or a tuple of values.
    """
    error, *values = result
    if error != rt.cudaError_t.cudaSuccess:
        raise CudaError(error, call)
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def device_count():
    """Number of visible CUDA devices; 0 when there is no usable driver or device."""
    error, count = rt.cudaGetDeviceCount()
    return count if error == rt.cudaError_t.cudaSuccess else 0


def clear_last_error():
    """Reset the runtime's last (non-sticky) error, as after an expected failure."""
    rt.cudaGetLastError()


def device_info(device=0):
    """Name, compute capability and CUDA versions of one device (used as engine provenance)."""
    props = check(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {
        "gpu_name": name.split("\x00", 1)[0].strip(),
        "compute_capability": f"{props.major}.{props.minor}",
        "total_memory": int(props.totalGlobalMem),
        "cuda_driver": check(rt.cudaDriverGetVersion(), "cudaDriverGetVersion"),
        "cuda_runtime": check(rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion"),
    }


def _ptr(memory):
    """The device address of a DeviceBuffer or a plain integer address."""
    return memory.ptr if isinstance(memory, DeviceBuffer) else int(memory)


class DeviceBuffer:
    """``nbytes`` of device memory from cudaMalloc, released by ``free`` (or ``with``)."""

    def __init__(self, nbytes):
        self.nbytes = int(nbytes)
        self.ptr = int(check(rt.cudaMalloc(self.nbytes), "cudaMalloc"))

    def free(self):
        """Release the memory; a second call does nothing."""
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            check(rt.cudaFree(ptr), "cudaFree")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.free()


class Stream:
    """A non-blocking CUDA stream (never the legacy default stream, so it can be captured)."""

    def __init__(self):
        self.raw = check(rt.cudaStreamCreateWithFlags(rt.cudaStreamNonBlocking), "cudaStreamCreate")

    @property
    def handle(self):
        """The stream as an integer, the form TensorRT's execute_async_v3 takes."""
        return int(self.raw)

    def synchronize(self):
        """Block until all work enqueued on the stream is complete."""
        check(rt.cudaStreamSynchronize(self.raw), "cudaStreamSynchronize")

    def destroy(self):
        """Destroy the stream; a second call does nothing."""
        if self.raw is not None:
            raw, self.raw = self.raw, None
            check(rt.cudaStreamDestroy(raw), "cudaStreamDestroy")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.destroy()


def _host(array, writable=False):
    """Check a host array can be copied as raw bytes."""
    if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
        raise ValueError("host array must be a C-contiguous numpy array")
    if writable and not array.flags.writeable:
        raise ValueError("destination host array is read-only")
    return array


def memcpy_htod_async(dst, src, stream):
    """Copy host array ``src`` into device memory ``dst`` on ``stream``.

    The host array must stay alive and unchanged until the stream is synchronised.
    """
    _host(src)
    if isinstance(dst, DeviceBuffer) and src.nbytes > dst.nbytes:
        raise ValueError(f"{src.nbytes} bytes do not fit a {dst.nbytes}-byte device buffer")
    kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
    check(rt.cudaMemcpyAsync(_ptr(dst), src.ctypes.data, src.nbytes, kind, stream.raw), "cudaMemcpyAsync")


def memcpy_dtoh_async(dst, src, stream):
    """Copy device memory ``src`` into host array ``dst`` (its size decides the count)."""
    _host(dst, writable=True)
    if isinstance(src, DeviceBuffer) and dst.nbytes > src.nbytes:
        raise ValueError(f"{dst.nbytes} bytes exceed the {src.nbytes}-byte device buffer")
    kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
    check(rt.cudaMemcpyAsync(dst.ctypes.data, _ptr(src), dst.nbytes, kind, stream.raw), "cudaMemcpyAsync")


def memcpy_dtod_async(dst, src, nbytes, stream):
    """Copy ``nbytes`` between two device buffers on ``stream``."""
    kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
    check(rt.cudaMemcpyAsync(_ptr(dst), _ptr(src), int(nbytes), kind, stream.raw), "cudaMemcpyAsync")


def _end_capture_discarding(stream):
    """End a failed capture on ``stream`` and drop what was captured, leaving it usable."""
    error, graph = rt.cudaStreamEndCapture(stream.raw)
    if error == rt.cudaError_t.cudaSuccess and graph is not None:
        rt.cudaGraphDestroy(graph)
    clear_last_error()


class Graph:
    """An instantiated CUDA graph, captured from the work one call enqueues on a stream."""

    def __init__(self, stream, enqueue):
        """Capture what ``enqueue()`` puts on ``stream``, then instantiate it.

        ``enqueue`` may return False to say the capture failed (TensorRT's execute_async_v3
        does); capture is always ended, so the stream stays usable after an error.
        """
        mode = rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check(rt.cudaStreamBeginCapture(stream.raw, mode), "cudaStreamBeginCapture")
        try:
            ok = enqueue()
        except BaseException:
            _end_capture_discarding(stream)
            raise
        if ok is False:
            _end_capture_discarding(stream)
            raise CudaError(rt.cudaError_t.cudaErrorStreamCaptureInvalidated, "the captured call")
        graph = check(rt.cudaStreamEndCapture(stream.raw), "cudaStreamEndCapture")
        try:
            self.exec = check(rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")
        finally:
            check(rt.cudaGraphDestroy(graph), "cudaGraphDestroy")

    def launch(self, stream):
        """Replay the captured work on ``stream`` (asynchronous)."""
        check(rt.cudaGraphLaunch(self.exec, stream.raw), "cudaGraphLaunch")

    def destroy(self):
        """Release the executable graph; a second call does nothing."""
        if self.exec is not None:
            graph_exec, self.exec = self.exec, None
            check(rt.cudaGraphExecDestroy(graph_exec), "cudaGraphExecDestroy")
