"""Build the optional C fast path for trade frames (k2.venues._scan).

``optional=True``: without a C compiler K2 installs and runs on the pure-Python parsers (same results, slower).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "k2.venues._scan",
            sources=["src/k2/venues/_scan.c"],
            optional=True,
            extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wno-unused-function"],
        )
    ]
)
