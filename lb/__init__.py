"""lb: an asyncio + uvloop L4/L7 load balancer."""

from lb import _compiled

__version__ = "0.1.0"

if _compiled.extensions_disabled():
    # Run the plain-Python source of the modules setup.py compiles, even where they are built.
    _compiled.install_source_finder()
