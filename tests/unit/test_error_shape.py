"""Dead letters are grouped by the shape of their error: variable parts replaced."""

from __future__ import annotations

import pytest

from taskforge.domain.dashboard import ERROR_SHAPE_LENGTH, error_shape


@pytest.mark.parametrize(
    ("error", "shape"),
    [
        ("order 17 not found", "order N not found"),
        ("order 42 not found", "order N not found"),
        # Quoted values go first, digits and all.
        ("user 'ann-42' is locked", "user '?' is locked"),
        ('key "a b 7" missing', 'key "?" missing'),
        ("job 01a242e0-dd62-7000-be28-80b62ae12066 gone", "job <id> gone"),
        ("job 01A242E0-DD62-7000-BE28-80B62AE12066 gone", "job <id> gone"),
        ("commit deadbeefcafe0123456789ab rejected", "commit <id> rejected"),
        # A short hex-looking word is a word.
        ("bad feed", "bad feed"),
        ("timeout after 2.5s", "timeout after N.Ns"),
        # Only the first line: a traceback's details do not split a group.
        ("boom 1\n  File x.py, line 3", "boom N"),
        ("", ""),
    ],
)
def test_error_shape_replaces_numbers_ids_and_quoted_values(error: str, shape: str) -> None:
    assert error_shape(error) == shape


def test_error_shape_keeps_the_first_characters_of_a_long_message() -> None:
    assert error_shape("x" * 1000) == "x" * ERROR_SHAPE_LENGTH
