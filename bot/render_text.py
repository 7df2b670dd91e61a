"""Render an Answer as plain text for the terminal (and as the fallback text of chat messages)."""

from __future__ import annotations

import textwrap

from bot.answer import Answer


def render_text(answer: Answer, width: int = 100) -> str:
    lines: list[str] = []
    for note in answer.notes:
        lines.append(f"Note: {note}")
    if answer.kind in ("help", "empty"):
        lines.append(answer.answer)
        return "\n".join(lines)
    if not answer.answered:
        lines.append(answer.answer)
    else:
        lines.append(textwrap.fill(answer.answer, width))
        lines.append("")
        lines.append("Citations:")
        for citation in answer.citations:
            lines.append(f"  [{citation.clause}] {citation.title} — {citation.document}"
                         + (f" (version {citation.version_date})" if citation.version_date else ""))
            lines.append(textwrap.indent(textwrap.fill(citation.text, width - 6), "      "))
    required = [e for e in answer.escalations if e.required]
    optional = [e for e in answer.escalations if not e.required]
    if required:
        lines.append("")
        lines.append("The policy says to contact:")
        for escalation in required:
            lines.append(f"  • {escalation.role} ({escalation.action}, clause {escalation.clause}): "
                         f"{escalation.contact.describe()}")
            lines.append(textwrap.indent(textwrap.fill(f"“{escalation.reason}”", width - 6), "      "))
    if optional:
        lines.append("")
        lines.append("Who to ask instead (not a policy requirement):")
        for escalation in optional:
            lines.append(f"  • {escalation.role}: {escalation.contact.describe()}")
    if answer.warnings:
        lines.append("")
        for warning in answer.warnings:
            lines.append(f"Warning: {warning}")
    return "\n".join(lines)
