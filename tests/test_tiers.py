"""The test tiers (tests/conftest.py): unmarked tests are `unit`, and collection fails loudly on a test in two tiers,
a unit test that loads a real model, or a test outside `data` that reads the benchmarks."""

import shutil
import subprocess
import sys
from pathlib import Path

CONFTEST = Path(__file__).resolve().parent / "conftest.py"

TESTS = '''
import pytest

def test_plain():
    pass

@pytest.mark.model
def test_real(organism):
    pass

@pytest.mark.data
@pytest.mark.slow
def test_benchmarks(data_dir):
    pass
'''


def collect(tmp_path: Path, source: str, *args: str) -> subprocess.CompletedProcess:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_example.py").write_text(source)
    return subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args,
                           str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_unmarked_tests_are_unit_and_markers_select_tiers(tmp_path):
    unit = collect(tmp_path, TESTS, "-m", "unit")
    assert unit.returncode == 0, unit.stdout + unit.stderr
    assert "test_example.py::test_plain" in unit.stdout and "test_real" not in unit.stdout
    slow = collect(tmp_path, TESTS, "-m", "slow")
    assert "test_example.py::test_benchmarks" in slow.stdout and "test_plain" not in slow.stdout


def test_a_unit_test_with_a_real_model_fails_collection(tmp_path):
    result = collect(tmp_path, TESTS + "\ndef test_sneaky(selected_run):\n    pass\n")
    assert result.returncode == 4  # a usage error: nothing runs
    assert ("test_example.py::test_sneaky is a unit test but uses organism, selected_run: mark it `model` (or use "
            "`tiny`)") in result.stderr


def test_two_tiers_or_data_outside_data_fail_collection(tmp_path):
    source = TESTS + '''
@pytest.mark.model
@pytest.mark.data
def test_both():
    pass

@pytest.mark.model
def test_reads_benchmarks(organism, data_dir):
    pass
'''
    result = collect(tmp_path, source)
    assert result.returncode == 4
    assert "test_example.py::test_both is marked data and model: give it exactly one tier" in result.stderr
    assert "test_example.py::test_reads_benchmarks uses data_dir but is marked model: mark it `data`" in result.stderr
