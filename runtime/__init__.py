"""runtime: Flows and Works in their own processes, sharing Paths through cas_storage.

>>> from runtime import App, Flow, Work
"""

from .app import App
from .flow import Flow
from .work import Work, WorkFailed

__all__ = ["App", "Flow", "Work", "WorkFailed"]
