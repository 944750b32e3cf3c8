"""Shared fixtures: the real test data in ../shared, and running the CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGED_SHARED", ROOT.parent / "shared")).resolve()
OPENFACE = SHARED / "data" / "openface-examples"
FR = SHARED / "data" / "face_recognition-examples"
LFW = SHARED / "data" / "lfw"
NN4_CSV = SHARED / "models" / "openface-nn4.small2.v1-csv-partial"


def _require_shared() -> None:
    if not OPENFACE.is_dir():
        pytest.fail(f"test data not found: {SHARED} (put the shared data set beside the checkout as ../shared "
                    f"or set EDGED_SHARED)", pytrace=False)


@pytest.fixture(scope="session")
def shared() -> Path:
    _require_shared()
    return SHARED


@pytest.fixture(scope="session")
def openface_dir(shared: Path) -> Path:
    return OPENFACE


@pytest.fixture(scope="session")
def fr_dir(shared: Path) -> Path:
    return FR


@pytest.fixture(scope="session")
def lfw_dir(shared: Path) -> Path:
    return LFW


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 300,
            cwd: Path | None = None, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m edged ARGS` as a user would, capturing output."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=cwd or ROOT, input=input)


@pytest.fixture(scope="session")
def dlib_embedder():
    from edged.embed import get_embedder

    return get_embedder("dlib")


@pytest.fixture(scope="session")
def dlib_pipeline(dlib_embedder):
    from edged.faces import FacePipeline

    return FacePipeline(dlib_embedder)
