"""The claim report embeds one figure per claim that has one, written beside the report."""

from __future__ import annotations

from fedtheory.claims import main_check


def test_report_embeds_the_claim_figures(tmp_path, capsys):
    report = tmp_path / "claims.md"
    assert main_check(["C9", "C4"], True, None, report) == 0
    text = report.read_text()
    png = tmp_path / "claims_figures" / "C9.png"
    assert "![C9](claims_figures/C9.png)" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "claims_figures" / "C4.png").exists()   # C4 has no figure
    assert "C4" in text
