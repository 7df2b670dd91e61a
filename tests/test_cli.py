"""The policybot command line, run as a real subprocess: JSON contract, batch mode, errors without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import POLICY_DIR, REPO


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    data = tmp_path_factory.mktemp("cli-data")
    return {**os.environ, "POLICYBOT_DATA_DIR": str(data), "POLICYBOT_POLICY_DIR": str(POLICY_DIR),
            "HF_HUB_OFFLINE": "1"}


def run(args, env, stdin=None, timeout=180):
    return subprocess.run([sys.executable, "-m", "bot.cli", *args], input=stdin, capture_output=True, env=env,
                          cwd=REPO, timeout=timeout)


def test_ask_json_done_when_example(env):
    """The issue's "done when": the logo question cites 5.3/5.4 first, quotes the permission sentence, names the
    chief executive and warns that the policy is past its review date."""
    result = run(["ask", "--json", "Can I use the council logo on my website?"], env)
    assert result.returncode == 0, result.stderr.decode()
    data = json.loads(result.stdout)
    assert data["citations"][0]["clause"] in ("5.3", "5.4")
    assert "written permission of the chief executive" in data["answer"]
    assert any(e["role"] == "chief executive" for e in data["escalations"])
    assert any("review" in w for w in data["warnings"])


def test_batch_mode_answers_every_line_in_order(env):
    """`ask --json -` prints one JSON object per input line, in order, whatever the line holds."""
    lines = ["can I use the crest on my site?", "", "hello", "\x00\x01binary\xff", "what is the weather", "x" * 5000,
             "<!channel> who do I tell about trolls"]
    payload = "\n".join(lines).encode("utf-8", errors="surrogateescape") + b"\n\xff\xfe not utf8\n"
    result = run(["ask", "--json", "-"], env, stdin=payload)
    assert result.returncode == 0, result.stderr.decode()
    outputs = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert len(outputs) == len(lines) + 1
    assert outputs[0]["citations"][0]["clause"] in ("5.3", "5.4")
    assert outputs[2]["answered"] is False
    assert outputs[4]["answered"] is False
    assert outputs[6]["citations"][0]["clause"] == "7.2"


def test_plain_text_answer(env):
    """Without --json the answer is readable text with the citation and the contact."""
    result = run(["ask", "someone is harassing me on facebook"], env)
    assert result.returncode == 0
    text = result.stdout.decode()
    assert "[7.2]" in text and "police" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [(["ask", ""], "question is empty"), (["show", "99.9"], "no clause"), (["eval", "nope.jsonl"], "not found")],
)
def test_errors_are_one_line_without_traceback(env, args, message):
    """Bad input gives one clear line on stderr and a non-zero exit, never a traceback."""
    result = run(args, env)
    assert result.returncode != 0
    stderr = result.stderr.decode()
    assert message in stderr
    assert "Traceback" not in stderr


def test_missing_policy_folder_is_a_clear_error(env, tmp_path):
    """No policy files: one line naming the folder."""
    result = run(["ask", "hello there friend"], {**env, "POLICYBOT_POLICY_DIR": str(tmp_path / "none")})
    assert result.returncode == 2
    assert "does not exist" in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


def test_unreadable_docx_is_a_clear_error(env, tmp_path):
    """A damaged .docx names the file in one line instead of a traceback."""
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "broken.docx").write_bytes(b"PK\x03\x04 this is not really a docx")
    result = run(["index"], {**env, "POLICYBOT_POLICY_DIR": str(folder), "POLICYBOT_DATA_DIR": str(tmp_path / "d")})
    assert result.returncode == 2
    assert "broken.docx" in result.stderr.decode()
    assert "Traceback" not in result.stderr.decode()


def test_index_clauses_show_escalations_check(env):
    """The officer's commands print the parse, one clause, the derived escalation rules and validation."""
    index = run(["index"], env)
    assert index.returncode == 0 and b"clauses" in index.stdout
    clauses = run(["clauses"], env).stdout.decode()
    assert "2.2.4 (under 2.2)" in clauses and "Examples of social media: Twitter" in clauses
    show = run(["show", "5.3"], env).stdout.decode()
    assert "written permission of the chief executive" in show
    rules = run(["escalations"], env).stdout.decode()
    for clause in ("5.3", "5.4", "5.5", "7.2", "11.1"):
        assert f" {clause}:" in rules
    check = run(["check"], env)
    assert b"placeholder" in check.stdout


def test_broken_data_file_is_a_clear_error(env, tmp_path):
    """A synonyms.toml with a TOML error names the file and line instead of a traceback."""
    import shutil

    folder = tmp_path / "policies"
    shutil.copytree(POLICY_DIR, folder)
    (folder / "synonyms.toml").write_text('[synonyms]\ncrest = logo\n', encoding="utf-8")
    result = run(["ask", "can I use the crest?"], {**env, "POLICYBOT_POLICY_DIR": str(folder),
                                                   "POLICYBOT_DATA_DIR": str(tmp_path / "d")})
    assert result.returncode == 2
    stderr = result.stderr.decode()
    assert "synonyms.toml" in stderr and "line" in stderr
    assert "Traceback" not in stderr
