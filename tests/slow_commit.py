"""`python -m tests.slow_commit SECONDS EDGED-ARGS...`: the edged CLI with every gallery write pausing just
before its COMMIT (rows written, transaction open), for the crash tests. Patched here, not in edged."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from edged.gallery import store


def pause_before_commit(seconds: float) -> None:
    original = store.Gallery._write

    @contextmanager
    def slow_write(self: store.Gallery, bump: bool = True) -> Iterator[object]:
        with original(self, bump) as db:
            yield db
            if bump:  # a data write, not a schema migration
                print(f"gallery write: pausing {seconds:.1f} s before commit", file=sys.stderr, flush=True)
                time.sleep(seconds)

    store.Gallery._write = slow_write  # type: ignore[method-assign]


if __name__ == "__main__":
    pause_before_commit(float(sys.argv[1]))
    from edged.cli import main

    sys.exit(main(sys.argv[2:]))
