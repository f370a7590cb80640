"""The README stays true: its quick start runs as written."""
import pathlib
import re

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
