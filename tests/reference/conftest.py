"""Tests against the reference implementations (Cellpose 3.1, PyTorch, OpenCV, SciPy, fastremap).

Every test that needs Cellpose or torch lives here, so ``pytest tests --ignore tests/reference``
runs everything else in a venv with only ``pip install .`` and pytest. The shared helpers stay in
tests/ (tests/conftest.py fixtures apply here too); this puts that folder on ``sys.path`` so
``from helpers import ...`` works whatever pytest's import mode.
"""

import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parents[1])
if _TESTS not in sys.path:
    sys.path.insert(0, _TESTS)
