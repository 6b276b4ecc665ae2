import sys
from pathlib import Path

import pytest
import torch

# tests/references.py (the shared dense references) is imported as `from references import ...`; pytest's
# --import-mode=importlib does not put test folders on sys.path, so this does.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The test problems are tiny: intra-op threads only add overhead (and contention on 2 cores).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
