"""Adversarial input-file scenarios (attack10): ambiguous JSONL rows are accepted instead of refused."""

from __future__ import annotations

from pathlib import Path

from enkash_coins._cli._input import InputRow, read_input


def read(tmp_path: Path, text: str) -> list[object]:
    path = tmp_path / "c.jsonl"
    path.write_text(text)
    return list(read_input(path, campaign="C", company_id="DEFAULT_CO"))


def test_a_jsonl_key_given_twice_is_an_error(tmp_path: Path) -> None:
    got = read(tmp_path, '{"user_id": "ALICE", "user_id": "MALLORY", "event": "E"}\n')
    assert not isinstance(got[0], InputRow), f"silently took the last value: {got[0]}"


def test_a_falsy_non_string_company_is_an_error_not_the_default_company(tmp_path: Path) -> None:
    got = read(tmp_path, '{"user_id": "U1", "event": "E", "company_id": false}\n')
    assert not isinstance(got[0], InputRow), f"credited under the default company: {got[0]}"


def test_a_falsy_non_string_request_id_is_an_error_not_a_derived_id(tmp_path: Path) -> None:
    got = read(tmp_path, '{"user_id": "U1", "event": "E", "request_id": 0}\n')
    assert not isinstance(got[0], InputRow), f"request_id 0 silently replaced by a derived id: {got[0]}"
