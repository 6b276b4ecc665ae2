import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # The test problems are tiny: intra-op threads only add overhead (and contention on 2 cores).
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
