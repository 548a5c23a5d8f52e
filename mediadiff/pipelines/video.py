"""Temporary: the video pipeline moves here (issue 12)."""

from mediadiff.video.pipeline import VideoOutput, VideoPipeline

__all__ = ["VideoOutput", "VideoPipeline"]
