"""The README stays true: its quick start and every other Python block run as written."""
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_quick_start_runs(capsys):
    text = README.read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    exec(compile(code, "README.md quick start", "exec"), {})
    out = capsys.readouterr().out
    assert "'openmp'" in out and "'backends'" in out  # build_info() was printed


def test_readme_names_the_test_command():
    text = README.read_text(encoding="utf-8")
    assert 'pip install ".[test]" && pytest' in text


def _blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


@pytest.mark.parametrize("k", range(len(_blocks())))
def test_every_python_block_runs(k, capsys):
    """Each ```python block of the README, executed as written in a fresh namespace."""
    code = _blocks()[k]  # (the bfloat16 example needs ml_dtypes: in the [test] extra)
    if re.search(r"^import torch|^from torch", code, re.M):
        import conftest
        conftest.torch_or_skip()  # the fastgd.torch blocks: skipped without torch, failed in CI
    exec(compile(code, "README.md python block %d" % k, "exec"), {})


def test_the_readme_has_python_blocks():
    assert len(_blocks()) >= 3
