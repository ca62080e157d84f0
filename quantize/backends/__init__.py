"""Graph-level quantizers, one module per format (see ``quantize.scheme`` for the contract)."""
