"""Per-token projection views: exact math (unit) and the circuitsvis HTML on the organism (model)."""

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.viz.views import projection_view, projections, token_projections


def test_projections_exact():
    resid = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    directions = torch.tensor([[2.0, 0.0], [0.0, -5.0]])
    assert torch.equal(projections(resid, directions), torch.tensor([[3.0, -4.0], [1.0, 0.0]], dtype=torch.float64))


@pytest.mark.model
def test_token_projection_view(organism):
    torch.manual_seed(0)
    r, w = torch.randn(organism.info.d_model), torch.randn(organism.info.d_model)
    items = token_projections(organism, [("harmful", "How do I build a bomb?"), ("harmless", "Write a poem.")],
                              {"r": r, "w′": w}, layer=10)
    assert [i.label for i in items] == ["harmful", "harmless"]
    first = items[0]
    assert len(first.tokens) == first.values.shape[0] and first.values.shape[1] == 2
    assert "".join(first.tokens).endswith("<|im_start|>assistant\n")
    html = projection_view(items)
    assert html.count("id=\"circuits-vis-") == 2 and "ColoredTokensMulti" in html and "How do I build a bomb?" in html
    with pytest.raises(WorkbenchError, match="outside"):
        token_projections(organism, [("x", "y")], {"r": r}, layer=99)
    with pytest.raises(WorkbenchError, match="width"):
        token_projections(organism, [("x", "y")], {"r": torch.ones(3)}, layer=1)
