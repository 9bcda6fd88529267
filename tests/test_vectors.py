"""Unit tier: the refusal vectors' labels. Tables write w' in ASCII, figures and pages print w′, and every label the
intervention catalogue gives is one a table reader accepts."""

import pytest

from workbench.interventions.catalogue import GATED_PREFIX, describe_name
from workbench.method.vectors import combined, is_label, printed, printed_candidate

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("name", "vector"), [
    ("baseline", "none"),
    ("ablate_w_lam0.6", "w'"),
    ("ablate_w_lam0.6_affine", "w'"),
    ("ablate_w_raw", "w"),
    ("ablate_r", "r"),
    ("actadd_r_a1.0", "r"),
    ("ablate_w_lam1.0+actadd_r_a0.5", "w'+r"),
    (f"{GATED_PREFIX}ablate_w_lam1.0", "gated w'"),
])
def test_each_intervention_name_has_a_label_the_readers_accept(name, vector):
    assert describe_name(name)["vector"] == vector
    assert is_label(vector)


@pytest.mark.parametrize("label", ["w′", "true", "false", "gated r", "w'+", "", None, 1.0])
def test_labels_of_other_vocabularies_are_refused(label):
    assert not is_label(label)


def test_printed_puts_the_prime_on_w_prime_only():
    assert printed("w' λ=1.0") == "w′ λ=1.0"
    assert printed("gated w'") == "gated w′" and printed("w'+r") == "w′+r"
    assert printed("w") == "w" and printed("r") == "r" and printed("none") == "none"
    assert combined([]) == "none" and combined(["w'", "r"]) == "w'+r"
    assert printed_candidate("w'", 0.6) == "w′ λ=0.6" and printed_candidate("r", float("nan")) == "r"
