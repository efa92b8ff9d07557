"""Typed run configuration (``sections``, loaded by ``schema``, checked by ``validation``) and what it
builds (``build``)."""
