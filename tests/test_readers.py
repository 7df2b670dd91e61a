"""Reading policies published as .docx and .pdf, not only plain text."""

from __future__ import annotations

import docx

from index.readers import load_documents


def _write_pdf(path, lines):
    """A minimal one-page PDF with the given text lines (Helvetica), written by hand: no PDF library needed."""
    content = "BT /F1 11 Tf 50 780 Td 14 TL " + " ".join(
        "(" + line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ") Tj T*" for line in lines
    ) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        "/Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(content)} >>\nstream\n{content}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    for offset in offsets:
        out += f"{offset:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))


def test_docx_policy_is_parsed(tmp_path):
    """A Word policy with a header table-free layout yields its numbered clauses."""
    document = docx.Document()
    document.add_paragraph("Title:\tMobile Phone Policy")
    document.add_paragraph("Owner:\tJo Bloggs")
    document.add_heading("1 USE OF PHONES", level=1)
    document.add_paragraph("1.1 Councillors must silence phones in meetings.")
    document.add_paragraph("1.2 Phones may be used to tweet from public meetings.")
    document.save(tmp_path / "phones.docx")
    [parsed] = load_documents(tmp_path)
    assert parsed.meta.title == "Mobile Phone Policy"
    assert parsed.meta.owner == "Jo Bloggs"
    assert [c.number for c in parsed.clauses] == ["1.1", "1.2"]
    assert parsed.clause("1.1").section_label == "1 USE OF PHONES"


def test_pdf_policy_is_parsed(tmp_path):
    """A PDF policy's text is extracted and parsed into clauses."""
    _write_pdf(tmp_path / "parking.pdf", ["Title: Parking Policy", "", "1 PARKING", "",
                                          "1.1 Councillors may park in bay 4.", "1.2 Visitors park at the rear."])
    [parsed] = load_documents(tmp_path)
    assert [c.number for c in parsed.clauses] == ["1.1", "1.2"]
    assert parsed.clause("1.1").text == "Councillors may park in bay 4."
