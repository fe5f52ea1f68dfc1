"""The claim report embeds every claim's figure, written beside the report as PNG (for the
report) and PDF (for papers)."""

from __future__ import annotations

from fedtheory.claims import main_check


def test_report_embeds_the_claim_figures(tmp_path, capsys):
    report = tmp_path / "claims.md"
    assert main_check(["C9", "C4"], True, None, report) == 0
    text = report.read_text()
    png = tmp_path / "claims_figures" / "C9.png"
    assert "![C9](claims_figures/C9.png)" in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "![C4](claims_figures/C4.png)" in text
    assert (tmp_path / "claims_figures" / "C4.pdf").read_bytes()[:4] == b"%PDF"
