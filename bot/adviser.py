"""The adviser: a question in, an Answer out (citations, escalations, warnings); it knows no chat platform."""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date

import numpy as np

from bot.answer import Answer, Citation, Escalation
from bot.contacts import Contacts, load_contacts
from bot.escalation import EscalationRule, apply_overrides, derive_rules
from bot.policy_dates import review_warning
from bot.settings import Settings
from bot.spelling import Speller
from bot.synonyms import Synonyms, load_synonyms
from index.clauses import Clause, normalise_number
from index.embedder import load_encoder
from index.lexical import tokenize
from index.search import LateInteraction, Ranking, hybrid_rank, single_thread_blas
from index.store import PolicyIndex, load_or_build
from index.tokens import encode_question
from index.units import segment_blocks, split_segments, split_sentences

log = logging.getLogger(__name__)

CONTACTS_FILE = "contacts.toml"
SYNONYMS_FILE = "synonyms.toml"
OVERRIDES_FILE = "escalation_overrides.toml"
EXAMPLE_QUESTIONS = (
    "Can I use the council logo on my Facebook page?",
    "Someone is trolling me online, who do I tell?",
    "Can I post about a closed committee meeting?",
)
_GREETING = re.compile(
    r"^(?:hi|hello|hey|hiya|yo|help|\?+|morning|afternoon|evening|good\s+(?:morning|afternoon|evening)|"
    r"thanks|thank\s+you|cheers|what\s+can\s+you\s+do|how\s+does\s+(?:this|it)\s+work|who\s+are\s+you|"
    r"what\s+are\s+you|start|menu)(?:\s+(?:there|bot|policybot|all|please))?[\s!.?]*$",
    re.IGNORECASE,
)
_FOLLOW_UP = re.compile(r"^(?:and|also|what\s+about|how\s+about|what\s+if|same\s+for|ok\s+and|but)\b", re.IGNORECASE)
# A question that asks for a person ("who do I tell", "who should I contact") gets the people every cited clause
# names, not only the first: the asker wants to know where to go, and the second clause may be the one that says.
_ASKS_WHO = re.compile(
    r"\bwho(?:m)?\s+(?:(?:do|should|can|could|would|will|must|shall)\s+(?:i|we|they|you)\s+|to\s+|i\s+)?"
    r"(?:ask|tell|contact|report|speak|talk|go|turn|complain|inform|notify|email|call|ring|consult)\b|"
    r"\b(?:report|tell|contact|complain\s+to|go\s+to|speak\s+to|talk\s+to)\s+who(?:m)?\b|"
    r"\bwho\s+deals\s+with\b|\bwho\s+(?:can|could)\s+help\b",
    re.IGNORECASE,
)
# Words that never decide what a question is about ("and NOW people are messaging me", "SOMEONE keeps ..."):
# never counted as unknown words, even when a policy happens not to use them.
_FILLER = frozenset(tokenize(
    "now just really still even yet already ever again anyway actually basically literally someone somebody "
    "anyone anybody something anything everyone everybody everything nothing thing things stuff lot lots bit "
    "kind sort way guys folks loads tons keep keeps kept lately recently today yesterday tonight week"
))
# Where a question's parts meet: punctuation, a dash, and the words that attach a circumstance to it.
_PARTS = re.compile(
    r"\s*(?:[,;:!?()]|\s[-–—]\s|\.\s|\b(?:after|because|since|cos|coz|while|whilst|but|though|although)\b)\s*",
    re.IGNORECASE,
)
_CLAUSE_REF = re.compile(r"(?<![\w.])(\d+(?:\.\d+)+|\d+\(\d+[A-Z]?\)(?:\([a-z]+\))*)(?![\w])")


@dataclass(frozen=True)
class Tuning:
    """Retrieval and abstention constants, with why they are what they are (measured by `policybot eval`)."""

    candidates: int = 64  # units fetched from FAISS per question
    lexical_weight: float = 0.25  # weight of the max-normalised BM25 score added to the dense cosine
    # Re-ranking of the best clauses by late interaction (index.search.LateInteraction), when the index keeps
    # word-piece vectors; None ranks on the cosine and BM25 alone.
    late: LateInteraction | None = LateInteraction()
    citation_margin: float = 0.08  # further clauses are cited while within this of the top fused score
    max_citations: int = 3
    segment_overlap_weight: float = 1.0  # see Adviser._answering_segments
    segment_share: float = 0.25  # see Adviser._answering_segments
    # Abstention (see `Adviser._covered`): the dense score that answers on its own, and the one below which the
    # adviser always abstains, are quantiles of the scores off-topic background questions reach in this index;
    # the constants are used only when an index has no background scores.
    strong_quantile: float = 0.95
    weak_quantile: float = 0.75
    strong_dense: float = 0.64
    weak_dense: float = 0.45
    max_unknown: float = 0.30


def clean_question(raw: str, limit: int) -> tuple[str, list[str]]:
    """Normalise a question: drop control and invisible characters, collapse whitespace, cap the length."""
    notes = []
    # NFKC can expand one character 18-fold (U+FDFA): normalise only what could survive the cap, with room for the
    # control and space characters dropped below, so a huge question costs microseconds, not seconds.
    head = raw[: limit * 4]
    text = unicodedata.normalize("NFKC", head)
    text = "".join(ch if ch.isprintable() or ch in "\n\t" else " " for ch in text)
    text = " ".join(text.replace("\ufffd", " ").split())
    if len(text) > limit or (len(raw) > len(head) and text):
        text = text[:limit].rsplit(" ", 1)[0] or text[:limit]
        notes.append(f"Your question was long, so only its first {limit} characters were used.")
    return text, notes


_SLACK_LINK = re.compile(r"<(?:https?|mailto):[^|>]*\|([^>]*)>")
_CHAT_TOKEN = re.compile(r"<[@#!][^>]*>|<https?:[^>]*>|</?[a-zA-Z][^>]*>")


def strip_markup(text: str) -> str:
    """The words of a question without chat markup: Slack mentions and links, HTML tags, emphasis characters.

    The question is still echoed as typed; this text is only what gets searched."""
    text = _SLACK_LINK.sub(r"\1", text)
    text = _CHAT_TOKEN.sub(" ", text)
    text = re.sub(r"[*_~`#>|]+", " ", text)
    return " ".join(text.split())


class Adviser:
    """Answers questions from the council's policies. Build with `Adviser.load(settings)`."""

    def __init__(
        self,
        settings: Settings,
        encoder,  # noqa: ANN001 - a SentenceTransformer
        index: PolicyIndex,
        synonyms: Synonyms,
        contacts: Contacts,
        rules: list[EscalationRule],
        tuning: Tuning | None = None,
        today: date | None = None,
        speller: Speller | None = None,
    ) -> None:
        self.settings = settings
        self.encoder = encoder
        self.index = index
        single_thread_blas()
        self.synonyms = synonyms
        self.contacts = contacts
        self.rules = rules
        self.tuning = tuning or Tuning()
        self.today = today
        self.speller = speller
        self._synonym_terms = {t for key in synonyms.table for t in tokenize(key)}
        self._rules_by_clause: dict[tuple[str, str], list[EscalationRule]] = {}
        for rule in rules:
            self._rules_by_clause.setdefault((rule.doc_id, rule.clause), []).append(rule)

    @classmethod
    def load(cls, settings: Settings, progress: bool = False, encoder=None) -> Adviser:  # noqa: ANN001
        """Load the encoder, then the index (built or rebuilt on first use), synonyms, contacts and rules."""
        encoder = encoder or load_encoder(settings.model)
        index = load_or_build(settings.policy_dir, settings.index_dir, encoder, settings.model, progress=progress)
        return cls.from_index(settings, encoder, index)

    @classmethod
    def from_index(cls, settings: Settings, encoder, index: PolicyIndex) -> Adviser:  # noqa: ANN001
        policy_dir = settings.policy_dir
        rules = apply_overrides(derive_rules(index.documents), policy_dir / OVERRIDES_FILE)
        synonyms = load_synonyms(policy_dir / SYNONYMS_FILE)
        # A set of the distinct words, from the distinct unit texts: a list of every word occurrence cost ~80 MB at
        # 10,000 clauses, for the same few thousand words.
        vocabulary = {word for text in {unit.text for unit in index.units} for word in re.findall(r"[A-Za-z]+", text)}
        vocabulary.update(word for key, targets in synonyms.table.items() for phrase in (key, *targets)
                          for word in phrase.split())
        return cls(settings, encoder, index, synonyms, load_contacts(policy_dir / CONTACTS_FILE), rules,
                   speller=Speller(vocabulary))

    # ----------------------------------------------------------------------------------------------- asking
    def ask(self, question: str, history: Sequence[str] = ()) -> Answer:
        """Answer one question. `history` holds the conversation's earlier questions, oldest first, so a
        short follow-up ("what about Instagram?") is searched together with the question it follows."""
        if not isinstance(question, str):
            question = str(question, "utf-8", "replace") if isinstance(question, bytes) else str(question)
        text, notes = clean_question(question, self.settings.max_question_chars)
        if not text or not re.search(r"\w", text):
            return Answer(
                question=text,
                answered=False,
                answer="Please type a question about the council's policies, for example: "
                + EXAMPLE_QUESTIONS[0],
                kind="empty",
                notes=tuple(notes),
            )
        if _GREETING.match(strip_markup(text)):
            return self.help_answer(text)
        referenced = self._referenced_clause(text)
        if referenced is not None:
            return self._clause_answer(text, referenced, notes)
        search_text = self._with_history(strip_markup(text), [strip_markup(h) for h in history])
        if not re.search(r"\w", search_text):
            return self.help_answer(text)
        return self._retrieve(text, search_text, notes)

    def help_answer(self, text: str = "help") -> Answer:
        titles = ", ".join(d.meta.title for d in self.index.documents)
        examples = "\n".join(f"• {q}" for q in EXAMPLE_QUESTIONS)
        return Answer(
            question=text,
            answered=False,
            answer=(
                "I answer questions about the council's policies by quoting them, with clause numbers, and I tell "
                f"you who to contact when a policy says so. I know: {titles}. Try:\n{examples}"
            ),
            kind="help",
        )

    def _with_history(self, text: str, history: Sequence[str]) -> str:
        if not history:
            return text
        content = tokenize(text)
        if _FOLLOW_UP.match(text) or len(content) <= 3:
            return f"{history[-1]} {text}"
        return text

    def _referenced_clause(self, text: str) -> Clause | None:
        words = text.split()
        if len(words) > 10:
            return None
        for match in _CLAUSE_REF.finditer(text):
            wanted = normalise_number(match.group(1))
            for clause in self.index.clauses:
                if normalise_number(clause.number) == wanted:
                    return clause
        return None

    def _clause_answer(self, text: str, clause: Clause, notes: list[str]) -> Answer:
        citation = self._citation(clause, 1.0, clause.text)
        escalations = self._escalations(clause, list(range(len(split_segments(clause.text)))))
        return Answer(
            question=text,
            answered=True,
            answer=f"{clause.number}: “{clause.text}”",
            citations=(citation,),
            escalations=tuple(escalations),
            warnings=self._warnings([clause]),
            kind="clause",
            notes=tuple(notes),
        )

    def rank(self, question: str, k: int = 10) -> list[str]:
        """The clause numbers the retrieval ranks first for a question, without abstaining (for MRR@10)."""
        text, _ = clean_question(question, self.settings.max_question_chars)
        _, _, _, result = self._search(strip_markup(text))
        return [self.index.clauses[c].number for c in result.order[:k]]

    def _search(self, search_text: str, rerank: bool = True):  # noqa: ANN202 - (vector, terms, terms, Ranking)
        """Spell-correct, expand and encode the question, then rank (`rerank`: with late interaction)."""
        tuning = self.tuning
        if self.speller is not None:
            search_text = self.speller.correct(search_text)
        expanded = self.synonyms.expand(search_text)
        question = None
        if rerank and self.index.tokens is not None and tuning.late is not None:
            vector, question = encode_question(self.encoder, expanded)
        else:
            vector = self.encoder.encode([expanded], normalize_embeddings=True, convert_to_numpy=True)[0]
        query_terms = tokenize(expanded)
        question_terms = tokenize(search_text)
        result = hybrid_rank(self.index, vector, query_terms, tuning.candidates, tuning.lexical_weight, question,
                             self._late)
        return vector, query_terms, question_terms, result

    def _retrieve(self, text: str, search_text: str, notes: list[str]) -> Answer:
        tuning = self.tuning
        vector, query_terms, question_terms, result = self._search(search_text)
        ranking, fused = result.order, result.fused
        if not ranking:
            return self._abstain(text, notes)
        best = ranking[0]
        if not self._covered(result.anchor_dense, question_terms) and not self._covered_by_part(search_text, result):
            return self._abstain(text, notes)
        chosen = [best] + [
            c for c in ranking[1:] if fused[c] >= fused[best] - tuning.citation_margin
        ][: tuning.max_citations - 1]
        citations = []
        asks_who = bool(_ASKS_WHO.search(search_text))
        escalations: list[Escalation] = []
        headline = []
        for position, clause_id in enumerate(chosen):
            clause = self.index.clauses[clause_id]
            segments = self._answering_segments(clause_id, vector, query_terms)
            quote = self._quote(clause, segments)
            citations.append(self._citation(clause, fused[clause_id], quote))
            if position == 0 or asks_who:
                for escalation in self._escalations(clause, segments):
                    if all(e.role.lower() != escalation.role.lower() for e in escalations):
                        escalations.append(escalation)
            if position == 0:
                headline.append(f"{clause.number}: “{quote}”")
        return Answer(
            question=text,
            answered=True,
            answer=" ".join(headline),
            citations=tuple(citations),
            escalations=tuple(escalations),
            warnings=self._warnings([self.index.clauses[c] for c in chosen]),
            kind="policy",
            notes=tuple(notes),
        )

    def _covered(self, top_dense: float, question_terms: list[str]) -> bool:
        """Does the policy answer this? MiniLM cosines of answerable and out-of-scope questions overlap (a
        question about the council's own Facebook page scores near one about a councillor's), so one cosine
        cut-off either abstains on real questions or answers off-topic ones. Two signals together do better:
        a high cosine answers on its own; a middling one answers only when the question's own words (IDF-
        weighted, after spelling correction) are mostly words the policies or the synonym table know, since an
        off-topic question usually turns on a word no policy uses ("allowance", "laptop", "bin collections").
        Both dense thresholds are calibrated per index: they are quantiles (95th, 75th) of the best scores that
        120 off-topic background questions (index/background_questions.txt) reach against this council's
        policies with this model, so a larger corpus, curated wordings or another model move them too."""
        strong, weak = self.abstention_thresholds
        if top_dense >= strong:
            return True
        if top_dense < weak:
            return False
        return self._unknown_share(question_terms) < self.tuning.max_unknown

    def _covered_by_part(self, search_text: str, result: Ranking) -> bool:
        """Is one part of the question covered on its own, the rest being context the policy has no words for?

        Councillors add circumstances: "getting threats on facebook after the budget vote", "had someone turn up
        at my house, can I stop saying who I am on my accounts". The circumstance's words are unknown to the
        policy and tip the unknown-words share towards abstaining. So when the whole question sits in the middle
        band, each part (split at punctuation and at "after", "because", "but" ...) is tried alone: a part that
        passes `_covered` itself, matches one of the question's top clauses, and scores at least as high as the
        whole question did, shows the rest was incidental. Off-topic questions rarely split this way: their
        unknown word is what they ask about ("the basic allowance", "my council laptop"), not a circumstance."""
        whole = result.anchor_dense
        strong, weak = self.abstention_thresholds
        if not weak <= whole < strong:
            return False
        parts = [p for p in _PARTS.split(search_text) if p and p != search_text and len(tokenize(p)) >= 2]
        for part in parts[:4]:
            # Only the part's first stage is judged (its best clause and cosine): no re-ranking needed.
            _, _, part_terms, part_result = self._search(part, rerank=False)
            if not part_result.order:
                continue
            top = part_result.anchor  # the part's first-stage best, whose cosine is judged
            score = part_result.anchor_dense
            if top in result.order[:3] and score >= whole and self._covered(score, part_terms):
                return True
        return False

    @functools.cached_property
    def _late(self) -> LateInteraction | None:
        """The late-interaction re-ranking, trusting a curated wording the question comes at least as close to as
        the weak abstention threshold (closer than three in four off-topic questions come to anything): an
        officer's wording matched that well is the answer they chose, and on our gold set re-ranking such matches
        only lost them. Questions no wording matches are where token matching helps (docs/benchmarks.md)."""
        late = self.tuning.late
        if late is None or late.trust_curated is not None:
            return late
        return dataclasses.replace(late, trust_curated=self.abstention_thresholds[1])

    @functools.cached_property
    def abstention_thresholds(self) -> tuple[float, float]:
        """(strong, weak) dense thresholds, calibrated on this index's background scores when it has them."""
        tuning = self.tuning
        background = self.index.manifest.get("background") or []
        if len(background) < 20:
            return tuning.strong_dense, tuning.weak_dense
        scores = np.asarray(background)
        return float(np.quantile(scores, tuning.strong_quantile)), float(np.quantile(scores, tuning.weak_quantile))

    def _unknown_share(self, terms: list[str]) -> float:
        """The IDF-weighted share of a question's terms that neither the policies nor the synonym table know."""
        lexical = self.index.lexical
        unique = set(terms)
        if not unique:
            return 1.0
        default_idf = max(lexical.idf.values(), default=1.0)
        weights = {t: lexical.idf.get(t, default_idf) for t in unique}
        unknown = sum(w for t, w in weights.items()
                      if not lexical.known(t) and t not in self._synonym_terms and t not in _FILLER)
        return unknown / sum(weights.values())

    def _answering_segments(self, clause_id: int, vector: np.ndarray, query_terms: list[str]) -> list[int]:
        """The segments of a clause that answer the question: the best block (a segment with any sentence that
        points back to it), scored by the best cosine of its text or of a curated wording attached to it, plus
        the IDF-weighted share of the question's words it contains: words that set one part of a clause apart
        ("personal security" in 5.5) decide between parts the encoder finds equally close. A further block that
        holds at least `segment_share` of those words answers part of the question too ("in cases of a risk to
        personal security, must I still identify myself" is worded like 5.5's rule but turns on its exception)."""
        clause = self.index.clauses[clause_id]
        blocks = {block[0]: block for block in segment_blocks(split_segments(clause.text))}
        units = [i for i in self.index.units_of_clause(clause_id) if self.index.units[i].segment >= 0]
        if not units or len(blocks) == 1:
            return [p for block in blocks.values() for p in block]
        idf = self.index.lexical.idf
        terms = set(query_terms)
        total = sum(idf.get(t, 0.0) for t in terms) or 1.0
        best: dict[int, float] = {}
        overlap: dict[int, float] = {}
        cosines = self.index.faiss_index.reconstruct_batch(np.asarray(units, dtype=np.int64)) @ vector
        for unit_id, cosine in zip(units, cosines.tolist(), strict=True):
            unit = self.index.units[unit_id]
            best[unit.segment] = max(best.get(unit.segment, -1.0), cosine)
            if unit.kind == "sentence":
                shared = terms & self.index.unit_terms(unit_id)
                overlap[unit.segment] = sum(idf.get(t, 0.0) for t in shared) / total
        weight = self.tuning.segment_overlap_weight
        scored = {first: score + weight * overlap.get(first, 0.0) for first, score in best.items() if first in blocks}
        top = max(scored.values())
        share = self.tuning.segment_share
        return sorted(p for first, score in scored.items()
                      if score >= top - 0.02 or overlap.get(first, 0.0) >= share for p in blocks[first])

    def _quote(self, clause: Clause, segments: list[int]) -> str:
        """The verbatim sentence(s) holding the answering segments, plus an anaphoric rule sentence that governs
        them ("If in doubt, contact the chief executive.")."""
        parts = split_segments(clause.text)
        every = split_sentences(clause.text)
        sentences = []
        for sentence in every:
            covered = [i for i, part in enumerate(parts) if part in sentence]
            if any(i in segments for i in covered):
                sentences.append(sentence)
        for rule in self._rules_by_clause.get((clause.doc_id, clause.number), []):
            if set(rule.segments) & set(segments) and rule.sentence not in " ".join(sentences):
                sentences.append(rule.sentence)
        chosen = [i for i, s in enumerate(every) if s in sentences]
        if not chosen:
            return clause.text
        # One unbroken stretch of the clause, so the quote stays verbatim even when the answering sentences are not
        # next to each other (the sentences between them come too).
        return " ".join(every[min(chosen):max(chosen) + 1])

    def _escalations(self, clause: Clause, segments: list[int]) -> list[Escalation]:
        """Escalate from the sentence that answers the question, not from the clause as a whole."""
        result = []
        for rule in self._rules_by_clause.get((clause.doc_id, clause.number), []):
            if rule.segments and not set(rule.segments) & set(segments):
                continue
            for role in rule.roles:
                result.append(
                    Escalation(role, rule.sentence, clause.number, rule.action, self.contacts.lookup(role),
                               doc_id=clause.doc_id)
                )
        return result

    def _abstain(self, text: str, notes: list[str]) -> Answer:
        owner = next((d.meta.owner for d in self.index.documents if d.meta.owner), "")
        role = self.contacts.fallback_role
        contact = self.contacts.lookup(role)
        reason = "The policies do not cover this question; ask them instead."
        fallback = [Escalation(role, reason, "", "advice", contact, required=False)]
        if owner:
            fallback.append(
                Escalation("policy owner", f"{owner} owns the policy.", "", "advice",
                           self.contacts.lookup("policy owner").__class__(role="policy owner", name=owner,
                                                                         configured=True),
                           required=False)
            )
        return Answer(
            question=text,
            answered=False,
            answer=(
                "The council's policies I know do not cover this, so I won't guess. "
                f"Please ask {role}" + (f" or the policy owner, {owner}" if owner else "") + "."
            ),
            escalations=tuple(fallback),
            warnings=(),
            kind="abstain",
            notes=tuple(notes),
        )

    def _citation(self, clause: Clause, score: float, quote: str) -> Citation:
        document = self.index.doc_by_id[clause.doc_id]
        return Citation(
            document=document.meta.title,
            doc_id=clause.doc_id,
            clause=clause.number,
            title=clause.section_label,
            text=clause.text,
            score=float(score),
            version_date=document.meta.version_date,
            quote=quote,
        )

    def _warnings(self, clauses: list[Clause]) -> tuple[str, ...]:
        warnings = []
        for doc_id in dict.fromkeys(c.doc_id for c in clauses):
            warning = review_warning(self.index.doc_by_id[doc_id].meta, self.today or date.today())
            if warning:
                warnings.append(warning)
        return tuple(warnings)
