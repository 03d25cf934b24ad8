"""How a failed attempt's traceback is kept: storable by every store, at most 8 KiB, the
end (where the error was raised) kept and the cut marked."""

from __future__ import annotations

import re
import traceback

from taskforge.domain.outcome import (
    MAX_TRACEBACK_BYTES,
    MAX_TRACEBACK_PART,
    bound_traceback,
    joined_traceback,
    storable_text,
)


def cut_bytes(kept: str) -> int:
    match = re.match(r"\[\.\.\. (\d+) bytes cut \.\.\.\]\n", kept)
    assert match, kept[:80]
    return int(match.group(1))


def test_a_short_traceback_is_kept_whole() -> None:
    text = "Traceback (most recent call last):\n  ...\nValueError: bad\n"

    assert bound_traceback(text) == text


def test_a_long_traceback_keeps_its_end_and_says_how_much_was_cut() -> None:
    text = "".join(f"  frame {n}\n" for n in range(5000)) + "RuntimeError: the end\n"

    kept = bound_traceback(text)

    assert len(kept.encode()) <= MAX_TRACEBACK_BYTES
    assert kept.endswith("frame 4999\nRuntimeError: the end\n")
    body = kept.split("\n", 1)[1]
    assert cut_bytes(kept) + len(body.encode()) == len(text.encode())


def test_a_character_split_by_the_cut_is_dropped_whole() -> None:
    text = "é" * MAX_TRACEBACK_BYTES  # two bytes each

    kept = bound_traceback(text)

    assert len(kept.encode()) <= MAX_TRACEBACK_BYTES
    assert set(kept.split("\n", 1)[1]) == {"é"}
    assert cut_bytes(kept) % 2 == 0


def test_nul_and_lone_surrogates_are_stored_as_escapes() -> None:
    assert storable_text("a\x00b") == "a\\x00b"
    assert storable_text("bad \udc80 byte, ok é") == "bad \\udc80 byte, ok é"
    assert bound_traceback("x\x00\udc80") == "x\\x00\\udc80"


def raise_with(message: str) -> None:
    raise ValueError(message)


def test_a_long_message_is_cut_so_the_frames_are_kept() -> None:
    # An HTTP answer's body quoted in an error: kept whole at the end, it would push every
    # frame out of the 8 KiB.
    try:
        raise_with("y" * 100_000)
    except ValueError as exc:
        kept = joined_traceback(traceback.format_exception(exc))

    assert kept.startswith("Traceback (most recent call last):\n")
    assert ", in raise_with\n" in kept
    cut = 100_000 + len("ValueError: \n") - MAX_TRACEBACK_PART
    assert kept.endswith(f"{'y' * 100}\n[... {cut} characters cut ...]\n")
    assert len(kept.encode()) <= MAX_TRACEBACK_BYTES


def test_parts_within_the_bound_are_joined_as_they_are() -> None:
    parts = ["Traceback (most recent call last):\n", "  File ...\n", "ValueError: bad\n"]

    assert joined_traceback(parts) == "".join(parts)
