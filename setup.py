"""Build the Cython kernels of mpc/_kernels with the package (no manual step)."""
import os
import platform

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

# -O3 everywhere; on x86-64 also allow SSE4.2/POPCNT (every x86-64 server since 2009).
# The kernels are compiled on the machine that runs them (pip install builds
# them), so -march=native is the default; MPCGWAS_PORTABLE=1 builds for any
# x86-64-v2 CPU instead (for wheels shipped to other machines).
_FLAGS = ["-O3", "-fno-strict-aliasing"]
if os.environ.get("MPCGWAS_PORTABLE"):
    if platform.machine() in ("x86_64", "AMD64"):
        _FLAGS.append("-march=x86-64-v2")
else:
    _FLAGS.append("-march=native")

extensions = [
    Extension(
        "mpc._kernels.field",
        ["mpc/_kernels/field.pyx"],
        include_dirs=[np.get_include()],
        extra_compile_args=_FLAGS,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
    Extension(
        "mpc._kernels.bits",
        ["mpc/_kernels/bits.pyx"],
        include_dirs=[np.get_include()],
        extra_compile_args=_FLAGS,
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    ),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )
)
