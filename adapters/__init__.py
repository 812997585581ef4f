"""Pure decoders and encoders, one module per wire API.

Nothing here does I/O: each adapter turns request and response bodies (dicts)
and stream bytes into the typed events of :mod:`adapters.model`, and builds the
bodies the proxy sends back when it refuses something.
"""
