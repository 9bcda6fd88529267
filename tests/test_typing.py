"""Runtime type checking is live under pytest: jaxtyping's import hook (`--jaxtyping-packages` in pyproject's
addopts) checks every annotation of the `workbench` package with beartype, tensor shapes and dtypes included."""

import pytest
import torch
from jaxtyping import TypeCheckError

from workbench.interventions.hooks import Ablation
from workbench.method.refusal_math import mean_difference, project_out, refusal_score

pytestmark = pytest.mark.unit


@pytest.fixture
def checking(pytestconfig):
    packages = pytestconfig.getoption("jaxtyping_packages", default=None) or ""
    if "workbench" not in packages.split(","):
        pytest.skip("runtime type checking is off: run pytest with pyproject's addopts "
                    "(--jaxtyping-packages=workbench,beartype.beartype(...)), not with -o addopts= or -p no:jaxtyping")


def test_wrong_width_is_a_type_error(checking):
    with pytest.raises(TypeCheckError, match="direction"):
        project_out(torch.ones(3, 4), torch.ones(5))  # d_model 4 against 5


def test_correct_call_passes():
    torch.manual_seed(0)
    x, direction = torch.randn(3, 4), torch.randn(4)
    out = project_out(x, direction)
    assert out.shape == (3, 4)
    assert (out @ direction).abs().max() < 1e-5


def test_broadcasting_mismatch_is_caught(checking):
    """Grids of different shapes broadcast silently in torch; the shared dimension names refuse them."""
    a, b = torch.ones(2, 3, 4), torch.ones(1, 3, 4)
    assert (a - b).shape == (2, 3, 4)  # the unchecked arithmetic would succeed
    with pytest.raises(TypeCheckError, match="mean_b"):
        mean_difference(a, b)


def test_dtype_and_rank_are_checked(checking):
    with pytest.raises(TypeCheckError, match="last_logits"):
        refusal_score(torch.ones(2, 10, dtype=torch.long), [1, 2])  # token ids, not logits
    with pytest.raises(TypeCheckError, match="direction"):
        Ablation(torch.ones(2, 4))  # a dataclass field: [d_model], not a batch of directions
