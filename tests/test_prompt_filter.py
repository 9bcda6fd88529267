"""The paper's refusal-score filter (`workbench.method.prompt_filter`): the class → filter map and the kept rows."""

import pytest
import torch

from workbench.errors import WorkbenchError
from workbench.method.prompt_filter import KEEP_BY_CLASS, keep_for, kept

pytestmark = pytest.mark.unit


def test_each_class_has_the_papers_filter():
    assert KEEP_BY_CLASS == {"harmful": "refuses", "pseudo_harmful": "refuses", "harmless": "complies"}
    assert [keep_for(k) for k in ("harmful", "pseudo_harmful", "harmless")] == ["refuses", "refuses", "complies"]
    assert keep_for("harmful", filtered=False) is None and keep_for("harmless", filtered=False) is None


def test_an_unknown_class_names_the_known_ones():
    with pytest.raises(WorkbenchError, match="'benign'.*harmful, pseudo_harmful, harmless"):
        keep_for("benign")


def test_kept_rows_by_score():
    scores = torch.tensor([2.5, -0.1, 0.0, 1e-9, -3.0], dtype=torch.float64)
    assert kept(scores, "refuses").tolist() == [True, False, False, True, False]
    assert kept(scores, "complies").tolist() == [False, True, False, False, True]  # 0 is kept by neither
    assert kept(scores, None).tolist() == [True] * 5
