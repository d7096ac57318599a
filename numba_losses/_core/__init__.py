"""Helpers every family shares, below the planning layer: validation, the call object and
backend choice, device arrays, output buffers, and MXNet's weighting."""
