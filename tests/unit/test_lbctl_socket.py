"""Where lbctl finds the control socket, including in a config file that is not valid TOML
(issue 14): the ``[lb] control_socket`` line is scanned for, else the default applies, so that
``lbctl reload`` still reaches lb and shows lb's own 422 about the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from lb.control.lbctl import UsageError, scan_control_socket, socket_from_config

BROKEN = "\n[pools.p\nbroken = \n"  # an unclosed table header and a key without a value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[lb]\ncontrol_socket = "ctl/lb.sock"\n', "ctl/lb.sock"),
        ("[lb]\ncontrol_socket = 'ctl/lb.sock'  # literal\n", "ctl/lb.sock"),
        ('  [ lb ]  # the lb table\n  control_socket="/abs/x.sock"\n', "/abs/x.sock"),
        ('[lb]\nworkers = 2\ncontrol_socket = "a\\\\b.sock"\n', "a\\b.sock"),
        ('lb.control_socket = "top.sock"\n[pools]\n', "top.sock"),
        ('[pools.p]\ncontrol_socket = "not-lb.sock"\n[lb]\nworkers = 1\n', None),
        ('[lb.admin]\ncontrol_socket = "sub.sock"\n', None),
        ('[[listeners]]\ncontrol_socket = "x.sock"\n', None),
        ('[lb]\nnote = """\n[other]\n"""\ncontrol_socket = "after.sock"\n', "after.sock"),
        ('[lb]\ncontrol_socket = "unclosed\n', None),  # the broken line is this one
        ("[lb]\ncontrol_socket = 5\n", None),
        ("[other]\nx = 1\n", None),
    ],
)
def test_scan(text: str, expected: str | None) -> None:
    assert scan_control_socket(text + BROKEN) == expected


def test_a_valid_file_is_read_as_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[lb]\ncontrol_socket = "ctl/lb.sock"\n')
    notes: list[str] = []
    assert socket_from_config(str(cfg), notes.append) == tmp_path / "ctl" / "lb.sock"
    assert notes == []


def test_a_broken_file_still_gives_its_socket_with_a_note(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[lb]\ncontrol_socket = "ctl/lb.sock"\n' + BROKEN)
    notes: list[str] = []
    assert socket_from_config(str(cfg), notes.append) == tmp_path / "ctl" / "lb.sock"
    (note,) = notes
    assert "is not valid TOML" in note and "line 4" in note
    assert "ctl/lb.sock from its [lb] control_socket line" in note


def test_a_broken_file_without_the_line_gives_the_default(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_bytes(b"[lb]\nworkers = 1\n\xff" + BROKEN.encode())  # not even UTF-8
    notes: list[str] = []
    assert socket_from_config(str(cfg), notes.append) == tmp_path / "run" / "lb.sock"
    assert "the default (no such line found)" in notes[0]


def test_a_missing_file_or_a_bad_value_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no config file"):
        socket_from_config(str(tmp_path / "none.toml"))
    cfg = tmp_path / "c.toml"
    cfg.write_text("[lb]\ncontrol_socket = 5\n")
    with pytest.raises(UsageError, match=r"lb\.control_socket is not a path"):
        socket_from_config(str(cfg))
