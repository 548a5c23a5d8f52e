"""Pipelines: one object per model that holds every part, saves to a folder and generates media.

Being rebuilt (issue 12): :class:`DiffusionPipeline` (shared) and its modality subclasses.
"""

from __future__ import annotations

from mediadiff.utils import lazy_exports

_EXPORTS: dict[str, str] = {
    "VideoPipeline": "video",
    "VideoOutput": "video",
    "export_run": "export",
    "run_summary": "export",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
