"""lb: an asyncio + uvloop L4/L7 load balancer."""

__version__ = "0.1.0"
