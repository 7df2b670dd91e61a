"""Read the council's policy documents (.txt, .md, .docx, .pdf) from a folder and parse them."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from index.clauses import Document
from index.parse import parse_document

POLICY_SUFFIXES = (".txt", ".md", ".docx", ".pdf")


class PolicyError(Exception):
    """A policy folder or document that cannot be used; the message says what to fix."""


def policy_files(policy_dir: Path) -> list[Path]:
    """The policy documents in a folder, in a stable order. Data files (contacts, synonyms ...) are not policies."""
    if not policy_dir.is_dir():
        raise PolicyError(f"policy folder {policy_dir} does not exist: set POLICYBOT_POLICY_DIR or create it")
    files = sorted(
        p
        for p in policy_dir.iterdir()
        if p.is_file() and p.suffix.lower() in POLICY_SUFFIXES and not p.name.startswith((".", "~$"))
        and p.name.lower() != "readme.md"
    )
    if not files:
        raise PolicyError(f"no policy documents (.txt, .md, .docx, .pdf) in {policy_dir}")
    return files


def fingerprint(paths: list[Path], extra: list[Path] = ()) -> str:
    """A hash of the files' names and bytes: it changes whenever any of them changes."""
    digest = hashlib.sha256()
    for path in [*paths, *extra]:
        if path.exists():
            digest.update(path.name.encode())
            digest.update(b"\0")
            digest.update(path.read_bytes())
            digest.update(b"\0")
    return digest.hexdigest()


def read_text(path: Path) -> str:
    suffix = path.suffix.lower()
    try:
        if suffix in (".txt", ".md"):
            return path.read_bytes().decode("utf-8-sig", errors="replace")
        if suffix == ".docx":
            return _read_docx(path)
        if suffix == ".pdf":
            return _read_pdf(path)
    except PolicyError:
        raise
    except Exception as exc:  # a damaged file from a council's share must not take the service down
        raise PolicyError(f"cannot read {path.name}: {type(exc).__name__}: {exc}") from exc
    raise PolicyError(f"{path.name}: unsupported file type {suffix}")


def _read_docx(path: Path) -> str:
    import docx  # python-docx; imported here so the text-only path does not pay for it

    document = docx.Document(str(path))
    lines: list[str] = []
    for paragraph in document.paragraphs:
        text = paragraph.text
        style = (paragraph.style.name or "").lower() if paragraph.style is not None else ""
        if style.startswith("heading") and text.strip():
            lines.append("")
        lines.append(text)
    for table in document.tables:
        for row in table.rows:
            lines.append("\t".join(cell.text for cell in row.cells))
    return "\n".join(lines)


def _read_pdf(path: Path) -> str:
    from pypdf import PdfReader

    reader = PdfReader(str(path))
    pages = [page.extract_text() or "" for page in reader.pages]
    # A page break is a blank line: the parser joins a clause that runs across it, as it does for 5.6.
    return "\n\n".join(pages)


def doc_id_for(path: Path) -> str:
    return re.sub(r"[^a-z0-9]+", "-", path.stem.lower()).strip("-") or "policy"


def load_documents(policy_dir: Path) -> list[Document]:
    """Parse every policy document in `policy_dir`. Raises PolicyError naming the file that failed."""
    documents = []
    for path in policy_files(policy_dir):
        text = read_text(path)
        document = parse_document(text, doc_id_for(path), str(path))
        if not document.clauses:
            raise PolicyError(f"{path.name}: no clauses found; is it a policy document?")
        documents.append(document)
    return documents
