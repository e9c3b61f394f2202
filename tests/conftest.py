"""Put the workflow's library (workflow/scripts) on the path; shared test locations."""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_SAMPLE = REPO.parent / "shared" / "data" / "imagenet-sample"
ONEFLOW_PYTHON = Path(
    os.environ.get("INFBENCH_ONEFLOW_PYTHON", REPO / ".venv-oneflow/bin/python")
)

sys.path.insert(0, str(REPO / "workflow" / "scripts"))
