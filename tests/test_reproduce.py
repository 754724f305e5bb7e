"""benchmarks/reproduce.py at tiny scale: one cell of DREAM+'s Table 1 distilled, evaluated with the config's
(IDC) protocol and written as markdown beside the paper's numbers; bad names are one-line errors."""

import pytest

from repo_files import load_module


def _module():
    return load_module("benchmarks/reproduce.py")


def test_tiny_table_cell_runs_end_to_end_and_sits_beside_the_paper(tmp_path):
    reproduce = _module()
    text = reproduce.reproduce("dream_table1", "tiny", ipcs=(1,), methods=("IDC",), out=str(tmp_path))
    assert (tmp_path / "dream_table1_tiny.md").read_text() == text
    idc_row = next(line for line in text.splitlines() if line.startswith("| IDC |"))
    cells = [c.strip() for c in idc_row.strip("|").split("|")]
    assert cells[2] == "81.0" and "±" in cells[1]                        # ddjax's number, then the paper's
    assert 0.0 <= float(cells[1].split("±")[0]) <= 100.0
    assert "| random real |" in text and "51.4" in text and "`tiny`" in text
    config = reproduce.apply_scale(reproduce.load_config("idc_fmnist", 1), "tiny")
    assert config.eval.protocol == "idc"                                  # the paper's protocol is kept


def test_unknown_table_or_scale_is_a_one_line_error(tmp_path):
    reproduce = _module()
    with pytest.raises(SystemExit, match="unknown table"):
        reproduce.reproduce("table9", "tiny", out=str(tmp_path))
    with pytest.raises(SystemExit, match="not in table"):
        reproduce.reproduce("dream_table1", "tiny", ipcs=(7,), out=str(tmp_path))
