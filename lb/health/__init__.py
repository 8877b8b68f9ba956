"""Backend health: active checks (TCP, HTTP), passive outlier detection and slow start.

Owns: the pure outlier decisions (``passive``), the checker that probes backends
(``checker``) and the manager that applies results to ``ClusterState`` (``manager``). Runs in
the supervisor only, once per backend; workers never check anything, they receive states.
The pure rise/fall, pacing and slow-start rules are ``lb.health_rules``, below ``lb.config`` and
``lb.state``, which both use them (this package sits above those two).
"""
