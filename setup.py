"""Builds the optional compiled fast path, ``lb.http._speedups`` (everything else is in
pyproject.toml).

It is optional twice over: without Cython or a C compiler the build skips it (the package then
runs on its pure-Python parsers, which are the reference and handle every head anyway), and
``LB_NO_EXTENSIONS=1`` skips it at build time and ignores it at run time.
"""

import os

from setuptools import Extension, setup

extensions = []
if not os.environ.get("LB_NO_EXTENSIONS"):
    try:
        from Cython.Build import cythonize
    except ImportError:  # pragma: no cover - Cython is in build-system.requires
        pass
    else:
        extensions = cythonize(
            [Extension("lb.http._speedups", ["lb/http/_speedups.pyx"])],
            language_level=3,
            quiet=True,
        )
        for ext in extensions:
            # A failed compile is a warning, not a failed install (set after cythonize, which
            # does not carry the flag over to the extensions it returns).
            ext.optional = True

setup(ext_modules=extensions)
