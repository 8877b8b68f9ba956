# Compiled-module declarations for the module of the same name (Cython "augmenting .pxd").
# The .py file is the source; setup.py compiles it when a C compiler is there, and Python runs
# it as it is otherwise (see docs/architecture.md).
#
# consistent_hash is compiled because pick() runs per request. Its classes stay Python classes
# (no C layout is declared here): compiled, their methods run as C functions instead of
# bytecode, and the ring (arrays of packed 64-bit points) and its arithmetic are the same
# Python objects in both builds, so the ring is bit for bit the same.
