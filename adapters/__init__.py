"""crmsync adapters: the SDK every adapter uses, and the shipped adapters (``sql``)."""
