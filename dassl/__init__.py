"""A compact engine with Dassl.pytorch's module paths and behaviour (see docs/INTERNALS.md)."""

__version__ = "0.6.3"
