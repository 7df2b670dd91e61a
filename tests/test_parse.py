"""Parsing the seed policy and other councils' documents into citable clauses."""

from __future__ import annotations

import re

import pytest

from index.clauses import normalise_space
from index.parse import parse_document
from tests.conftest import BENCH_POLICIES, SEED_POLICY

SEED_NUMBERS = (
    ["1.1", "1.2", "1.3", "2.1"] + [f"2.1.{i}" for i in range(1, 9)] + ["2.2"] + [f"2.2.{i}" for i in range(1, 8)]
    + ["3.1", "3.2", "4.1"] + [f"5.{i}" for i in range(1, 9)] + ["6.1", "6.2", "7.1", "7.2", "7.3"]
    + [f"8.{i}" for i in range(1, 7)] + ["9.1", "9.2"] + [f"10.{i}" for i in range(1, 8)] + ["11.1", "11.2", "11.3"]
)


@pytest.fixture(scope="module")
def seed():
    return parse_document(SEED_POLICY.read_text(encoding="utf-8"), "seed", str(SEED_POLICY))


def _source_clause_texts() -> dict[str, str]:
    """Each numbered clause's text read straight from the file, independently of the parser: the line after its
    number, joined with any following lines up to the next numbered line or heading (5.6 crosses a page break)."""
    lines = SEED_POLICY.read_text(encoding="utf-8").splitlines()
    texts: dict[str, list[str]] = {}
    current = None
    for line in lines:
        match = re.match(r"^\s*-\s+(\d+(?:\.\d+)+)\s+(.*)$", line)
        if match:
            current = match.group(1)
            texts[current] = [match.group(2)]
        elif re.match(r"^\d+ [A-Z]", line) or line.strip().isupper():
            current = None
        elif current and line.strip():
            texts[current].append(line.strip())
    return {k: normalise_space(" ".join(v)) for k, v in texts.items()}


def test_every_seed_clause_present_once_with_exact_text(seed):
    """Every clause 1.1 to 11.3 is parsed exactly once and its text is the policy's, byte for byte (whitespace
    normalised): the bot quotes the policy, so a parser that drops or alters words would misquote it."""
    numbers = [c.number for c in seed.clauses if c.numbered]
    assert numbers == SEED_NUMBERS
    expected = _source_clause_texts()
    for clause in seed.clauses:
        if clause.numbered:
            assert clause.text == expected[clause.number], clause.number


def test_clause_text_is_verbatim_substring_of_policy(seed):
    """No clause contains text that is not in the policy (whitespace aside)."""
    source = normalise_space(SEED_POLICY.read_text(encoding="utf-8"))
    for clause in seed.clauses:
        assert clause.text in source, clause.number


def test_contents_table_is_not_parsed_as_clauses(seed):
    """The CONTENTS block ("4<TAB>Who can use social media.....<TAB>3") must not become clauses or sections."""
    for clause in seed.clauses:
        assert "....." not in clause.text
        assert not re.search(r"\t\d+$", clause.text)
    assert all(c.section_title != "Who can use social media....." for c in seed.clauses)


def test_header_metadata_with_typos(seed):
    """The header block is parsed, and the "228th June 2021" typo is kept as written instead of crashing."""
    meta = seed.meta
    assert meta.title == "Constitution of the Council (Part 5G: Social Media Policy for Councillors)"
    assert meta.owner == "Angela Wakefield"
    assert meta.version_date == "28th June 2021"
    assert meta.review_due == "May 2022"
    assert meta.approved_by == "Angela Wakefield"
    assert meta.adopted == "Adopted by Full Council on 228th June 2021"


def test_sections_parents_and_page_break(seed):
    """Clauses carry their section, list items their parent, and 5.6 is joined across the page break."""
    assert seed.clause("5.3").section_label == "5 USERS' RESPONSIBILITIES"
    assert seed.clause("2.2.4").parent == "2.2"
    assert seed.clause("2.2.7").parent == "2.2"
    assert seed.clause("2.1").parent is None
    assert seed.clause("5.6").text.endswith("(in the form of a comment) – an untrue statement about a person which "
                                            "is damaging to their reputation may amount to libel.")


def test_glossary_passages_cited_by_heading(seed):
    """The unnumbered glossary gives one passage per term, and Twitter's entry keeps both its paragraphs."""
    glossary = {c.number: c for c in seed.clauses if not c.numbered}
    assert set(glossary) == {
        "Examples of social media para 1",
        "Examples of social media: Facebook",
        "Examples of social media: Blogs",
        "Examples of social media: Twitter",
        "Examples of social media: YouTube",
    }
    twitter = glossary["Examples of social media: Twitter"].text
    assert twitter.startswith("Twitter: A microblogging site")
    assert twitter.endswith("a user’s Twitter name or ‘handle’.")


def _bench(name: str):
    path = BENCH_POLICIES / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    return parse_document(path.read_text(encoding="utf-8"), path.stem, str(path))


def _assert_sane(document):
    numbers = [c.number for c in document.clauses]
    assert len(numbers) == len(set(numbers)), "clause numbers must be unique"
    source = normalise_space((BENCH_POLICIES / f"{document.doc_id}.txt").read_text(encoding="utf-8"))
    for clause in document.clauses:
        assert clause.text and clause.text in source, clause.number
        assert not clause.text.startswith("# source")


def test_welsh_model_code_numbering():
    """"1.—(1)", "(2)", "(a)", "(i)" and "(aa)" nest as the code numbers them; definitions are citable."""
    doc = _bench("mscc_code_of_conduct.txt")
    _assert_sane(doc)
    numbers = {c.number: c for c in doc.clauses}
    assert numbers["1(1)"].text == "In this code —"
    assert numbers["1(1) para 2"].text.startswith('"meeting" ("cyfarfod") means any meeting')
    assert numbers["1(1) para 2(a)"].parent == "1(1) para 2"
    assert numbers["7(b)(vi)"].text == "improperly for private purposes."
    assert numbers["10(2)(a)(ix)(aa)"].parent == "10(2)(a)(ix)"
    assert numbers["10(2)(a)(x)"].parent == "10(2)(a)"
    assert numbers["10(2)(c)"].parent == "10(2)"  # after "[Note: subparagraph (b) is omitted.]"
    assert "14(2A)" in numbers
    assert numbers["6(1)(c)"].section_number == "Part 2"


def test_wye_valley_code_with_other_markup():
    """"1. (1)" numbering, the numbered list under (ix), and unique citations despite unnumbered paragraph 16."""
    doc = _bench("wyevalleycc_code_of_conduct.txt")
    _assert_sane(doc)
    numbers = {c.number for c in doc.clauses}
    assert {"1(1)", "2(1)(a)", "10(2)(a)(ix)(1)", "10(2)(a)(ix)(5)", "10(2)(a)(x)"} <= numbers
    assert doc.meta.adopted.startswith("Adopted at a meeting on 27th March 2017")


def test_numbered_sections_with_unnumbered_paragraphs():
    """Sections "1. Introduction" hold unnumbered paragraphs, cited by section and position; bullet
    sub-headings ("- Post focus") group the rules under them."""
    doc = _bench("mscc_online_policy.txt")
    _assert_sane(doc)
    numbers = {c.number: c for c in doc.clauses}
    assert numbers["1 para 3"].text == "Any changes made to this policy must be through a vote of the full Council."
    assert numbers["6 para 1"].section_title == "Absence of the ‘lead’"
    assert any(n.startswith("8 (Post focus) para") for n in numbers)


def test_unnumbered_bullet_sections():
    """A document of "- Heading" sections with bullet lists still yields citable passages under each heading."""
    doc = _bench("mscc_online_strategy.txt")
    _assert_sane(doc)
    titles = {c.section_title for c in doc.clauses}
    assert {"Introduction", "Social Media", "Benefits of Social Media", "Drawbacks"} <= titles
    assert len(doc.clauses) > 40
