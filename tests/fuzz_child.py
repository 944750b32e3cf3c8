"""`python -m tests.fuzz_child JOBS.json RESULTS.json`: run many `edged` command lines in one process, as the
CLI would (`edged.cli.main`), each with its stdout and stderr caught at the file-descriptor level (what C
libraries write counts too), a 10 s alarm, and any exception that escapes `main` (a traceback a user would
see) recorded. Writes, per job, the exit code, stderr, seconds and the traceback if any, then the process's
peak RSS (VmHWM). Used by tests/test_fuzz.py for the CLI path on many generated bad inputs."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
import traceback

#: Seconds one command may take before it counts as a hang.
JOB_TIMEOUT_S = 10


class Hang(BaseException):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise Hang(f"no result after {JOB_TIMEOUT_S} s")


def run_job(argv: list[str]) -> dict[str, object]:
    from edged.cli import main

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        code: object = None
        trace = ""
        started = time.monotonic()
        signal.alarm(JOB_TIMEOUT_S)
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
        except BaseException:  # a traceback the user would see, or a hang
            trace = traceback.format_exc()
        finally:
            signal.alarm(0)
            seconds = time.monotonic() - started
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        out.seek(0)
        err.seek(0)
        return {"argv": argv, "code": code, "stdout": out.read(200_000).decode("utf-8", "replace"),
                "stderr": err.read(200_000).decode("utf-8", "replace"), "seconds": seconds, "traceback": trace}


def peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


if __name__ == "__main__":
    signal.signal(signal.SIGALRM, _alarm)
    with open(sys.argv[1]) as fh:
        jobs = json.load(fh)
    results = [run_job(argv) for argv in jobs]
    with open(sys.argv[2], "w") as fh:
        json.dump({"results": results, "peak_rss_mb": peak_rss_mb()}, fh)
