"""crmsync router: the hub that decides, by vector clock, what every CRM must write.

The package also holds the wire contract shared with adapters (events, clocks,
topology names), so that one distribution serves both sides.
"""

__version__ = "0.1.0"
