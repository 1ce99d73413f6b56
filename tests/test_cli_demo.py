"""The README's demo command and the byte tokenizer."""

import subprocess
import sys

import pytest

from mamba_ode.cli import main
from mamba_ode.io.tokenizers import ByteTokenizer


def test_demo_runs_and_reports_layers(capsys):
    assert main(["demo", "--prompt", "abc"]) == 0
    out = capsys.readouterr().out
    assert "3 byte tokens" in out and "layer 0 S6 internals" in out
    assert out.count("\n") >= 8


def test_python_dash_m_bad_arguments_exit_2():
    out = subprocess.run([sys.executable, "-m", "mamba_ode", "nonsense"], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "invalid choice" in out.stderr


def test_byte_tokenizer_round_trip_and_errors():
    tok = ByteTokenizer()
    text = "Ay, there's the rub — ünïcode"
    ids = tok.encode(text)
    assert all(0 <= i < 256 for i in ids) and tok.decode(ids) == text
    with pytest.raises(ValueError, match="256"):
        tok.decode([256])
    with pytest.raises(TypeError, match="'text'"):
        tok.encode(b"bytes")
