"""Readers behind :func:`byol.data.load_dataset`, one module per kind of source.

Import from :mod:`byol.data`; the modules here are its implementation and may change.
"""
