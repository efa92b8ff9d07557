"""Typed run configuration (``schema``) and what it builds (``build``)."""
