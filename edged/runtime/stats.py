"""What one daemon run did and what it cost: the stage statistics side by side, plus process facts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from edged.camera.grabber import SourceStatus
from edged.runtime.pipeline import PipelineStats
from edged.types import SourceState


@dataclass
class PersonTiming:
    """When a person's face was first detected (start of the track) and when they were announced."""

    first_detected_frame: int
    first_detected_t: float
    recognized_frame: int
    recognized_t: float

    @property
    def latency_s(self) -> float:
        return self.recognized_t - self.first_detected_t


@dataclass
class CameraStats:
    """One camera's part of a run (several cameras in one daemon)."""

    name: str = ""
    source: SourceStatus = field(default_factory=lambda: SourceStatus(SourceState.STARTING))
    is_file: bool = False
    pipeline: PipelineStats = field(default_factory=PipelineStats)
    decode_s: float = 0.0
    #: Seconds from this camera's first frame to its last processed one.
    processing_s: float = 0.0
    overload_warnings: int = 0
    cadence_changes: int = 0
    max_cadence_factor: int = 1

    @property
    def frames_processed(self) -> int:
        return self.pipeline.frames

    @property
    def realtime_factor(self) -> float | None:
        if not self.is_file or self.processing_s <= 0 or not self.source.fps:
            return None
        return round(self.source.frames_read / self.source.fps / self.processing_s, 3)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(frames_read=self.source.frames_read, frames_dropped=self.source.frames_dropped,
                   frames_processed=self.frames_processed, realtime_factor=self.realtime_factor)
        return out


@dataclass
class RunStats:
    """One run: the camera's, the pipeline's and every sink's own statistics, and what the process spent."""

    exit_reason: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    #: Seconds from the first frame to the end of processing (wall_s minus start-up and shutdown).
    processing_s: float = 0.0
    ready: bool = False
    gallery_reloads: int = 0
    #: Seconds the grabber spent reading and converting frames.
    decode_s: float = 0.0
    #: Events emitted, by kind.
    events: dict[str, int] = field(default_factory=dict)
    source: SourceStatus = field(default_factory=lambda: SourceStatus(SourceState.STARTING))
    #: The source is a video file (realtime_factor is defined).
    is_file: bool = False
    pipeline: PipelineStats = field(default_factory=PipelineStats)
    #: Sink name -> its queue statistics and its own counters.
    sinks: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Overload: warnings logged ("frames dropped"), detector cadence changes, the largest cadence factor.
    overload_warnings: int = 0
    cadence_changes: int = 0
    max_cadence_factor: int = 1
    #: Every camera's own statistics by name (the fields above are the first camera's).
    cameras: dict[str, CameraStats] = field(default_factory=dict)
    #: Several cameras: embedder calls that embedded the faces of more than one camera's frame at once.
    shared_embed_batches: int = 0

    @property
    def frames_read(self) -> int:
        return self.source.frames_read

    @property
    def frames_dropped(self) -> int:
        return self.source.frames_dropped

    @property
    def frames_processed(self) -> int:
        return self.pipeline.frames

    @property
    def fps(self) -> float:
        """Processed frames per second of processing."""
        return round(self.frames_processed / self.processing_s, 2) if self.processing_s > 0 else 0.0

    @property
    def realtime_factor(self) -> float | None:
        """Video files: seconds of video processed per second of processing (>= 1 keeps up with real time)."""
        if not self.is_file or self.processing_s <= 0 or not self.source.fps:
            return None
        return round(self.frames_read / self.source.fps / self.processing_s, 3)

    @property
    def seconds(self) -> dict[str, float]:
        """Per-stage totals: decode (grabber thread), detect, track, align, embed, match."""
        return {"decode": round(self.decode_s, 4), **{k: round(v, 4) for k, v in self.pipeline.seconds.items()}}

    @property
    def people(self) -> dict[str, PersonTiming]:
        """Recognition latency per person (first detection of the track to the first `recognized`)."""
        p = self.pipeline
        return {person: PersonTiming(p.first_detected[person][0], round(p.first_detected[person][1], 4), frame,
                                     round(t, 4)) for person, (frame, t) in p.recognized.items()}

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["cameras"] = {name: c.to_dict() for name, c in self.cameras.items()}
        out["people"] = {k: {**asdict(v), "latency_s": round(v.latency_s, 4)} for k, v in self.people.items()}
        out.update(frames_read=self.frames_read, frames_dropped=self.frames_dropped,
                   frames_processed=self.frames_processed, fps=self.fps, realtime_factor=self.realtime_factor,
                   seconds=self.seconds)
        return out
