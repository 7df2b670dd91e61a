"""Every setting the code reads is documented in .env.example, as the deployment docs promise."""

from __future__ import annotations

import re

from tests.conftest import REPO

INTERNAL = {"POLICYBOT_BENCH_SIGNING_SECRET"}  # passed by `policybot bench` to its own child process only
TEST_ONLY = {"POLICYBOT_TEST_POSTGRES_URL"}


def test_every_policybot_setting_is_in_env_example():
    read = set()
    for path in [*(REPO / "bot").glob("*.py"), *(REPO / "index").glob("*.py")]:
        read |= set(re.findall(r"POLICYBOT_[A-Z_]+[A-Z]", path.read_text(encoding="utf-8")))
    assert len(read) >= 10  # the scan found the settings module's variables
    documented = set(re.findall(r"^#?\s*(POLICYBOT_[A-Z_]+)=", (REPO / ".env.example").read_text(), re.MULTILINE))
    assert read - INTERNAL - TEST_ONLY - documented == set()
