"""lb: an asyncio + uvloop L4/L7 load balancer."""

import os

__version__ = "0.1.0"

if os.environ.get("LB_NO_EXTENSIONS", "") not in ("", "0"):
    # Run the plain-Python source of the modules setup.py compiles, even where they are built.
    from lb._source_only import install

    install()
