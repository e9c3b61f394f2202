"""Exercise infbench.runtimes.tensorrt.cudart on a real GPU: buffers, copies, stream sync, CUDA graphs, errors.

This is the part of the TensorRT runtime that can run without TensorRT. Run it on a GPU
machine with cuda-python installed:

    PYTHONPATH=workflow/scripts python3 benchmarks/cuda_python_check.py

Each check prints one line; the script exits 1 at the first failure.
"""

import json
import sys
import time

import numpy as np

from infbench.runtimes.tensorrt import build as engine, cudart


def expect(condition, what):
    print(("ok    " if condition else "FAIL  ") + what, flush=True)
    if not condition:
        sys.exit(1)


def expect_cuda_error(call, name, what):
    """``call()`` must raise CudaError named ``name``."""
    try:
        call()
    except cudart.CudaError as err:
        expect(err.name == name, f"{what}: raised {err.name} ({err})")
        return
    expect(False, f"{what}: raised nothing, expected {name}")


def round_trip(stream, array):
    """Host -> device -> host through infbench.runtimes.tensorrt.cudart; returns the copy."""
    back = np.empty_like(array)
    with cudart.DeviceBuffer(array.nbytes) as buf:
        cudart.memcpy_htod_async(buf, array, stream)
        cudart.memcpy_dtoh_async(back, buf, stream)
        stream.synchronize()
    return back


def main():
    import cuda.bindings

    print(f"cuda-bindings {cuda.bindings.__version__}, numpy {np.__version__}, python {sys.version.split()[0]}")
    expect(cudart.device_count() > 0, f"{cudart.device_count()} CUDA device(s) visible")
    info = cudart.device_info(0)
    print("device_info:", json.dumps(info))
    env = engine.environment_fingerprint(
        tensorrt=None,
        gpu_name=info["gpu_name"],
        compute_capability=info["compute_capability"],
        driver=engine.nvidia_driver_version(),
        cuda_driver=info["cuda_driver"],
        cuda_runtime=info["cuda_runtime"],
    )
    print("environment_fingerprint:", json.dumps(env))
    expect(bool(env["gpu_name"]) and env["compute_capability"].count(".") == 1, "GPU name and compute capability read")
    expect(env["driver"] is not None, f"NVIDIA driver version read: {env['driver']}")

    stream = cudart.Stream()
    expect(stream.handle != 0, f"non-default stream created (handle {stream.handle:#x})")

    # host -> device -> host, several sizes and dtypes, including a resnet50 batch-50 input
    rng = np.random.default_rng(0)
    for array in (
        np.arange(1000, dtype=np.float32),
        rng.standard_normal((50, 3, 224, 224), dtype=np.float32),
        rng.standard_normal((8, 1000)).astype(np.float16),
        rng.integers(0, 255, (7, 13), dtype=np.uint8),
    ):
        back = round_trip(stream, array)
        expect(np.array_equal(back, array), f"h2d/d2h round trip {array.dtype} {array.shape} is bit-exact")

    # stream sync really waits: a 1.2 GB device-to-device copy is not done when enqueued
    nbytes = 600 << 20
    with cudart.DeviceBuffer(nbytes) as a, cudart.DeviceBuffer(nbytes) as b:
        t0 = time.perf_counter()
        for _ in range(20):
            cudart.memcpy_dtod_async(b, a, nbytes, stream)
        enqueued = time.perf_counter() - t0
        stream.synchronize()
        total = time.perf_counter() - t0
        gbps = 20 * 2 * nbytes / total / 1e9
        print(
            f"      20 x {nbytes >> 20} MiB d2d copies: enqueue {enqueued * 1e3:.2f} ms,"
            f" until sync {total * 1e3:.1f} ms, {gbps:.0f} GB/s read+write"
        )
        expect(total > enqueued, "stream synchronize waited for the enqueued copies")

    # CUDA graph of a trivial copy, replayed after its source changes
    n = 1 << 20
    first = rng.standard_normal(n, dtype=np.float32)
    second = rng.standard_normal(n, dtype=np.float32)
    out = np.empty(n, dtype=np.float32)
    zeros = np.zeros(n, dtype=np.float32)
    with cudart.DeviceBuffer(first.nbytes) as src, cudart.DeviceBuffer(first.nbytes) as dst:
        cudart.memcpy_htod_async(src, first, stream)
        cudart.memcpy_htod_async(dst, zeros, stream)
        stream.synchronize()
        graph = cudart.Graph(stream, lambda: cudart.memcpy_dtod_async(dst, src, first.nbytes, stream))
        cudart.memcpy_dtoh_async(out, dst, stream)
        stream.synchronize()
        expect(not out.any(), "capturing recorded the copy without executing it")
        graph.launch(stream)
        cudart.memcpy_dtoh_async(out, dst, stream)
        stream.synchronize()
        expect(np.array_equal(out, first), "graph replay copied the captured source")
        cudart.memcpy_htod_async(src, second, stream)
        graph.launch(stream)
        cudart.memcpy_dtoh_async(out, dst, stream)
        stream.synchronize()
        expect(np.array_equal(out, second), "graph replay after the source changed copies the new data")
        t0 = time.perf_counter()
        for _ in range(1000):
            graph.launch(stream)
        stream.synchronize()
        print(f"      1000 graph launches of a 4 MiB copy: {(time.perf_counter() - t0) * 1e3:.1f} ms")
        graph.destroy()
        graph.destroy()
        expect(graph.exec is None, "graph destroyed (second destroy is a no-op)")

        # a capture whose enqueue reports failure ends capture and leaves the stream usable
        expect_cuda_error(
            lambda: cudart.Graph(stream, lambda: False),
            "cudaErrorStreamCaptureInvalidated",
            "enqueue returning False under capture",
        )
        # a call that is illegal during capture: synchronising the capturing stream
        try:
            cudart.Graph(stream, stream.synchronize)
            print("      synchronize during capture: no error")
        except cudart.CudaError as err:
            print(f"      synchronize during capture raised {err.name}")
        cudart.clear_last_error()
        expect(np.array_equal(round_trip(stream, first), first), "stream still works after failed captures")

    # errors map to their names
    expect_cuda_error(
        lambda: cudart.check(cudart.rt.cudaFree(0xDEAD0000)), "cudaErrorInvalidValue", "cudaFree of an invalid pointer"
    )
    cudart.clear_last_error()
    expect_cuda_error(lambda: cudart.DeviceBuffer(1 << 50), "cudaErrorMemoryAllocation", "cudaMalloc of 1 PiB")
    cudart.clear_last_error()
    buf = cudart.DeviceBuffer(16)
    buf.free()
    buf.free()
    expect(buf.ptr == 0, "DeviceBuffer.free twice is safe")
    with cudart.DeviceBuffer(4) as small:
        try:
            cudart.memcpy_htod_async(small, np.zeros(8, np.float32), stream)
            expect(False, "oversized h2d copy rejected")
        except ValueError as err:
            expect(True, f"oversized h2d copy rejected before CUDA: {err}")
    expect(np.array_equal(round_trip(stream, first), first), "runtime usable after the expected errors")

    stream.destroy()
    stream.destroy()
    expect(stream.raw is None, "stream destroyed (second destroy is a no-op)")
    print("ALL OK")


if __name__ == "__main__":
    main()
