"""The client library stays light: an auction server imports it without the replay tools'
pyarrow (about 1.6 s to import) or numpy."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("pyarrow", "numpy", "matplotlib", "bidfilter.replay", "bidfilter.logs")


def test_importing_the_clients_leaves_out_pyarrow_and_numpy() -> None:
    # A fresh interpreter: this one has imported everything the other tests needed.
    script = (
        "import json, sys\n"
        "import bidfilter.client\n"
        f"print(json.dumps([name for name in {HEAVY!r} if name in sys.modules]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert json.loads(done.stdout) == []
