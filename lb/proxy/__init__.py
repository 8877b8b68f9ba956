"""The asyncio adapters of the data path: the L4 relay (``tcp``), the L7 client and upstream
protocols (``http``), the per-pool runtime (``pool``), the keep-alive upstream pool
(``idle``) and the listeners that accept for them (``listener``).

Owns: sockets, transports and timers of the worker's data path. Never does: framing (that is
``lb.http``) or balancing decisions (``lb.balancing``); it feeds them bytes and backends.
"""
