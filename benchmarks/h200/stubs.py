"""Stand-ins for the cuBLAS 12 / cuDNN 8 libraries that TensorRT 8.6's plugin library links.

usage: stubs.py TENSORRT_WHEEL OUTDIR

libnvinfer_plugin.so.8 names libcublas.so.12, libcublasLt.so.12 and libcudnn.so.8 as
needed libraries, so the bindings cannot load without them. The H200 pack carries the real
ones (pruned and compressed: benchmarks/h200/pack.sh) and these stand-ins beside them, the
fallback for a run that cannot have the real ones (a STANDINS=1 pack, or LIBS=stand-ins on
the machine). Each stand-in defines every function of its library that the plugin library
imports, returning status 1 (NOT INITIALIZED in both APIs), under the symbol version the
plugin asks for. They let TensorRT load; engines built with tactic sources limited to
TensorRT's own kernels (EDGE_MASK_CONVOLUTIONS, JIT_CONVOLUTIONS) and no plugin layers never
call them. A run with them says so in its run.json (pack.libraries: stand-ins).
"""

import os
import re
import subprocess
import sys
import tempfile
import zipfile

LIBRARIES = {  # soname -> symbol prefix; each library's symbols carry its soname as version
    "libcublas.so.12": "cublas",
    "libcublasLt.so.12": "cublasLt",
    "libcudnn.so.8": "cudnn",
}


def imported_symbols(plugin):
    """{soname: [symbol, ...]} of the cuBLAS/cuDNN functions ``plugin`` imports."""
    out = subprocess.run(["nm", "-D", "--undefined-only", plugin], capture_output=True, text=True, check=True).stdout
    found = {soname: [] for soname in LIBRARIES}
    for line in out.splitlines():
        name = line.split()[-1]
        base, _, version = name.partition("@")
        for soname, prefix in LIBRARIES.items():
            if re.match(prefix + r"[A-Z_]", base) and not (prefix == "cublas" and base.startswith("cublasLt")):
                found[soname].append(base)
    return found


def build(soname, symbols, outdir, work):
    source = os.path.join(work, soname + ".c")
    with open(source, "w") as f:
        for name in symbols:
            if name.endswith("GetErrorString"):
                f.write(f'const char *{name}(int s) {{ return "stand-in library: not the real {soname}"; }}\n')
            else:
                f.write(f"int {name}(void) {{ return 1; }}\n")
    script = os.path.join(work, soname + ".map")
    with open(script, "w") as f:
        f.write(f"{soname} {{ global: *; }};\n")
    subprocess.run(
        [
            "gcc",
            "-shared",
            "-fPIC",
            "-nostdlib",
            "-O1",
            f"-Wl,-soname,{soname}",
            f"-Wl,--version-script,{script}",
            "-o",
            os.path.join(outdir, soname),
            source,
        ],
        check=True,
    )


def main():
    wheel, outdir = sys.argv[1:3]
    os.makedirs(outdir, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        with zipfile.ZipFile(wheel) as z:
            plugin = z.extract("tensorrt/libnvinfer_plugin.so.8", work)
        for soname, symbols in imported_symbols(plugin).items():
            build(soname, sorted(set(symbols)), outdir, work)
            print(f"{soname}: {len(set(symbols))} functions")


if __name__ == "__main__":
    main()
