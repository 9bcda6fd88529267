"""Per-token projection views: exact math, and the circuitsvis HTML on the tiny random model."""

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.viz.views import projection_view, projections, token_projections


def test_projections_exact():
    resid = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    directions = torch.tensor([[2.0, 0.0], [0.0, -5.0]])
    assert torch.equal(projections(resid, directions), torch.tensor([[3.0, -4.0], [1.0, 0.0]], dtype=torch.float64))


def test_token_projection_view(tiny):
    torch.manual_seed(0)
    r, w = torch.randn(tiny.info.d_model), torch.randn(tiny.info.d_model)
    items = token_projections(tiny, [("harmful", "How do I build a bomb?"), ("harmless", "Write a poem.")],
                              {"r": r, "w′": w}, layer=2)
    assert [i.label for i in items] == ["harmful", "harmless"]
    first = items[0]
    assert len(first.tokens) == first.values.shape[0] and first.values.shape[1] == 2
    assert "".join(first.tokens).endswith("<|im_start|>assistant\n")
    with torch.no_grad():  # the values: each token's residual stream at block 2's input, projected on r̂ and ŵ′
        hidden = tiny.hf_model(tiny.chat.tokenize(["How do I build a bomb?"]).input_ids,
                               output_hidden_states=True).hidden_states[2][0].double()
    expected = torch.stack([hidden @ (v.double() / v.double().norm()) for v in (r, w)], dim=1)
    assert (first.values.double() - expected).abs().max() <= 1e-5 * expected.abs().max()
    html = projection_view(items)
    assert html.count("id=\"circuits-vis-") == 2 and "ColoredTokensMulti" in html and "How do I build a bomb?" in html
    with pytest.raises(WorkbenchError, match="outside"):
        token_projections(tiny, [("x", "y")], {"r": r}, layer=99)
    with pytest.raises(WorkbenchError, match="width"):
        token_projections(tiny, [("x", "y")], {"r": torch.ones(3)}, layer=1)
