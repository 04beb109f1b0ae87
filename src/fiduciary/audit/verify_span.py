"""A helper process of a split verification (``verify.verify(..., workers=N)``): reads one
line of JSON ``[database_url, first_index, last_index]`` on stdin, checks those events as
the single pass would, and writes the pickled result on stdout. Started by the verifier
itself with ``python -m``; the URL travels on the pipe, not the command line, where any
local user could read it."""

from __future__ import annotations

import gc
import json
import pickle
import sys

from fiduciary.audit.verify import span_leaves


def main() -> None:
    # A process of its own, gone when done: no cyclic garbage worth collecting meanwhile.
    gc.disable()
    url, first, last = json.loads(sys.stdin.readline())
    sys.stdout.buffer.write(pickle.dumps(span_leaves(url, (int(first), int(last)))))


if __name__ == "__main__":
    main()
