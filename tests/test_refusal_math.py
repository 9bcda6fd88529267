"""Exact math of the method (no model)."""

import math

import pytest
import torch

from workbench.method.refusal_math import (
    add_to_sum,
    cosine,
    kl_divergence,
    mean_difference,
    orthogonalize_embedding,
    orthogonalize_output_matrix,
    partial_orthogonalize,
    project_out,
    refusal_score,
    remove_component,
    unit,
)

torch.manual_seed(0)


def test_lambda_one_is_orthogonal_to_r():
    w, r = torch.randn(3, 4, 16, dtype=torch.float64), torch.randn(3, 4, 16, dtype=torch.float64)
    w_prime = partial_orthogonalize(w, r, 1.0)
    # exact up to the paper's ε = 1e-8 in ‖r‖² + ε
    assert torch.allclose((w_prime * r).sum(-1), torch.zeros(3, 4, dtype=torch.float64), atol=1e-8)
    assert torch.allclose(w_prime.norm(dim=-1), torch.ones(3, 4, dtype=torch.float64), atol=1e-7)


def test_lambda_zero_is_normalized_w():
    w, r = torch.randn(5, 8, dtype=torch.float64), torch.randn(5, 8, dtype=torch.float64)
    assert torch.allclose(partial_orthogonalize(w, r, 0.0), w / w.norm(dim=-1, keepdim=True), atol=1e-7)


def test_partial_lambda_by_hand():
    w = torch.tensor([1.0, 1.0], dtype=torch.float64)
    r = torch.tensor([2.0, 0.0], dtype=torch.float64)
    # proj_r(w) = (w·r/|r|²) r = (2/4)·(2,0) = (1,0); λ=0.5 → w' = (1,1) − 0.5·(1,0) = (0.5, 1)
    expected = torch.tensor([0.5, 1.0], dtype=torch.float64) / math.sqrt(1.25)
    assert torch.allclose(partial_orthogonalize(w, r, 0.5), expected, atol=1e-7)


def test_lambda_outside_unit_interval():
    with pytest.raises(ValueError, match="lambda must be in"):
        partial_orthogonalize(torch.ones(2), torch.ones(2), 1.5)


def test_projection_removal_leaves_zero_projection():
    x = torch.randn(4, 7, 32, dtype=torch.float64)
    c = torch.randn(32, dtype=torch.float64)
    ablated = project_out(x, c)
    assert torch.allclose(ablated @ (c / c.norm()), torch.zeros(4, 7, dtype=torch.float64), atol=1e-12)
    # the orthogonal complement is untouched
    assert torch.allclose(project_out(ablated, c), ablated, atol=1e-12)


def test_weight_orthogonalization_equals_projecting_outputs():
    W = torch.randn(32, 12, dtype=torch.float64)
    c = torch.randn(32, dtype=torch.float64)
    x = torch.randn(5, 12, dtype=torch.float64)
    assert torch.allclose(x @ orthogonalize_output_matrix(W, c).T, project_out(x @ W.T, c), atol=1e-10)
    E = torch.randn(50, 32, dtype=torch.float64)
    assert torch.allclose(orthogonalize_embedding(E, c), project_out(E, c), atol=1e-10)


def test_remove_component_by_hand_and_in_the_hooks():
    x = torch.tensor([[3.0, 4.0, 1.0]], dtype=torch.float64)
    c = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    assert remove_component(x, c).tolist() == [[0.0, 4.0, 1.0]]
    assert remove_component(x, c, strength=0.5).tolist() == [[1.5, 4.0, 1.0]]  # keeps 1 − β of the component
    assert remove_component(x, c, offset=torch.tensor(2.0, dtype=torch.float64)).tolist() == [[2.0, 4.0, 1.0]]
    # one direction per batch row equals each row ablated alone
    xs = torch.randn(3, 5, 32, dtype=torch.float64)
    cs = torch.nn.functional.normalize(torch.randn(3, 32, dtype=torch.float64), dim=-1)
    rows = remove_component(xs, cs[:, None, :])
    for k in range(3):
        assert torch.allclose(rows[k], remove_component(xs[k], cs[k]), atol=1e-12)
    # what the ablation hooks run is this function, bit for bit
    from workbench.interventions.hooks import _ablate, _partial

    assert torch.equal(_ablate(cs[0])(xs, None), remove_component(xs, cs[0]))
    assert torch.equal(_partial(cs[0], 0.25)(xs, None), remove_component(xs, cs[0], 0.25))
    assert torch.equal(_ablate(cs[0])(xs, None), project_out(xs, cs[0]))
    W = torch.randn(32, 12, dtype=torch.float64)
    assert torch.allclose(orthogonalize_output_matrix(W, cs[0], 0.25).T, remove_component(W.T, cs[0], 0.25))


def test_refusal_score_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.1, 0.8]], dtype=torch.float64))
    scores = refusal_score(logits, [0])
    assert scores[0].item() == pytest.approx(math.log(0.5 + 1e-8) - math.log(0.5 + 1e-8))
    assert scores[1].item() == pytest.approx(math.log(0.1) - math.log(0.9), abs=1e-6)
    two = refusal_score(logits, [0, 1])
    assert two[1].item() == pytest.approx(math.log(0.2) - math.log(0.8), abs=1e-6)


def test_kl_by_hand():
    p = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    q = torch.tensor([[0.9, 0.1]], dtype=torch.float64)
    expected = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)
    assert kl_divergence(p.log(), q.log()).item() == pytest.approx(expected, abs=1e-12)
    assert kl_divergence(p.log(), p.log()).item() == pytest.approx(0.0, abs=1e-15)


def test_streaming_mean_equals_mean():
    acts = torch.randn(10, 2, 3, 4)
    running = torch.zeros(2, 3, 4, dtype=torch.float64)
    for chunk in acts.split(3):
        running = add_to_sum(running, chunk)
    assert torch.allclose(running / 10, acts.double().mean(0), atol=1e-12)
    assert torch.equal(mean_difference(running, running), torch.zeros_like(running))


def test_unit_by_hand():
    v = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, -2.0]])
    expected = torch.tensor([[0.6, 0.8], [0.0, 0.0], [0.0, -1.0]])
    assert unit(v).dtype == torch.float32 and torch.equal(unit(v), expected)  # a zero row stays zero
    assert unit(v.to(torch.bfloat16)).dtype == torch.bfloat16


def test_unit_is_exact_in_float64():
    v = torch.randn(3, 5, 16, dtype=torch.float64) * 1e3
    assert torch.allclose(unit(v).norm(dim=-1), torch.ones(3, 5, dtype=torch.float64), atol=1e-15)
    assert torch.allclose(unit(v) * v.norm(dim=-1, keepdim=True), v, atol=1e-12)


def test_cosine_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [2.0, 0.0], [0.0, 0.0]])
    b = torch.tensor([[0.0, 3.0], [2.0, 0.0], [-5.0, 0.0], [1.0, 0.0]])
    got = cosine(a, b)
    assert got.dtype == torch.float64
    assert torch.allclose(got[:3], torch.tensor([0.0, 1 / math.sqrt(2), -1.0], dtype=torch.float64), atol=1e-15)
    assert math.isnan(float(got[3]))  # undefined against a zero vector


def test_cosine_matches_torch():
    a, b = torch.randn(4, 6, 32, dtype=torch.float64), torch.randn(4, 6, 32, dtype=torch.float64)
    assert torch.allclose(cosine(a, b), torch.nn.functional.cosine_similarity(a, b, dim=-1), atol=1e-12)
