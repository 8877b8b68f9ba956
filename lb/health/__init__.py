"""Backend health: active checks (TCP, HTTP), passive outlier detection and slow start.

Owns: the pure decisions (``rules``, ``passive``), the checker that probes backends
(``checker``) and the manager that applies results to ``ClusterState`` (``manager``). Runs in
the supervisor only, once per backend; workers never check anything, they receive states.
"""
