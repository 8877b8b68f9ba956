"""Builds the optional compiled parts of the L7 path (everything else is in pyproject.toml).

- ``lb.http._speedups`` (``_speedups.pyx``): the C scan of common request and response heads
  and the builder of the common upstream head.
- The L7 hot-path modules, compiled from their own ``.py`` source by Cython, with the class
  layouts and method kinds declared in the ``.pxd`` file next to each (``cdef class``
  attributes become C struct fields, the methods one object calls on another become C calls).
  Python runs the very same ``.py`` files when they are not compiled.

Both are optional twice over: without Cython or a C compiler the build skips them (the package
then runs as plain Python, which is the reference and handles everything), and
``LB_NO_EXTENSIONS=1`` (or ``true``/``yes``; ``0`` or empty does not) builds none of them. The
list, that switch and its run-time meaning live in ``lb/_compiled.py``, loaded here with runpy
because lb itself is not built yet (docs/architecture.md, "The compiled fast path").
"""

import runpy

from setuptools import Extension, setup

_compiled = runpy.run_path("lb/_compiled.py")
#: Modules compiled from their Python source (each has a ``.pxd`` with its class layouts).
COMPILED_MODULES = _compiled["COMPILED_MODULES"]

extensions = []
if not _compiled["extensions_disabled"]():
    try:
        from Cython.Build import cythonize
    except ImportError:  # pragma: no cover - Cython is in build-system.requires
        pass
    else:
        sources = [Extension(_compiled["SPEEDUPS"], ["lb/http/_speedups.pyx"])]
        sources += [Extension(m, [m.replace(".", "/") + ".py"]) for m in COMPILED_MODULES]
        extensions = cythonize(
            sources,
            language_level=3,
            quiet=True,
            # The .py annotations are for mypy; the C types come from the .pxd files only.
            compiler_directives={"annotation_typing": False},
        )
        for ext in extensions:
            # A failed compile is a warning, not a failed install (set after cythonize, which
            # does not carry the flag over to the extensions it returns).
            ext.optional = True

setup(ext_modules=extensions, options={"build_ext": {"parallel": 2}})
