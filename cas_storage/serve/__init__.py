"""``cas serve``: a read-only web view of a store (Flask, server-side rendered).

Pages: the works and their paths; a path's versions (time, files, size, what
changed since the previous one) with a chart of logical vs stored bytes over its
versions; a version's file tree with a download per file; the diff of any two
versions. Everything is read through ``Store``'s public methods; nothing is ever
written. The chart library (Chart.js, MIT) is vendored in ``static/``, so the
view works offline. Needs the ``serve`` extra (``pip install 'cas_storage[serve]'``).
"""

from __future__ import annotations

from .app import create_app, serve

__all__ = ["create_app", "serve"]
