"""A params file that cannot be used is one `ConfigError` line naming the file, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from evergreen.config import load_params
from evergreen.errors import ConfigError
from evergreen.params_file import flow_depth
from tests.harness import TINY


def _params(tmp_path: Path, content: bytes) -> Path:
    path = tmp_path / "params.yaml"
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "not a YAML text file (byte 0 is not UTF-8"),
        (b"data:\n  source: \xff\xfe.csv\n", "not a YAML text file (byte 16 is not UTF-8"),
        (b"data: {source: x}\x00\x00\n", "not valid YAML: character 17: special characters are not allowed"),
        (b"[" * 10_000 + b"]" * 10_000, "nested too deeply"),
        (b"[" * 150 + b"]" * 150, "top level must be a mapping of sections, got list"),  # parsed, not refused
        (b"data:\n" + b"".join(b" " * i + b"k:\n" for i in range(1, 3000)), "nested too deeply"),
        (b"data: [1, 2\nsplit: {}\n", "not valid YAML: line 2, column"),
        (b"", "the file is empty"),
        (b"# only a comment\n\n", "the file is empty"),
        (b"- just\n- a list\n", "top level must be a mapping of sections, got list"),
        (b"just a string\n", "top level must be a mapping of sections, got str"),
    ],
    ids=[
        "binary", "latin1-byte", "nul-bytes", "deep-lists", "150-deep-lists", "deep-mappings", "bad-yaml",
        "empty", "comment-only", "list", "scalar",
    ],
)  # fmt: skip
def test_an_unusable_params_file_is_one_line_naming_it(tmp_path, content, message):
    """Binary, non-UTF-8, NUL bytes, 10k-deep nesting, broken YAML, empty, and a non-mapping top level each
    raise ConfigError whose single-line message names the file and says what is wrong."""
    path = _params(tmp_path, content)
    with pytest.raises(ConfigError) as err:
        load_params(path)
    text = str(err.value)
    assert text.startswith(f"{path}: ") and message in text
    assert "\n" not in text


def test_the_depth_check_counts_brackets_outside_quotes_and_comments():
    """The cheap check before parsing (10,000 levels took the parser 1.8 s to refuse) reads `[` and `{` as YAML
    does: inside quotes and after a comment's `#` they are text, in a plain word they still count."""
    assert flow_depth("a: [1, [2, {b: 3}]]\n") == 3
    assert flow_depth('a: \'[[[[\'  # [[[[\nb: "[\\"[["\n') == 0
    assert flow_depth("c: x#[[\n") == 2  # no space before `#`: not a comment
    assert flow_depth("[" * 10_000) == 10_000


def test_a_deeply_nested_file_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    """The parser took 1.8 s to give up on 10,000 levels; the check before it answers without parsing."""
    import evergreen.params_file

    def parse(_text):
        raise AssertionError("parsed")

    monkeypatch.setattr(evergreen.params_file, "load_plain", parse)
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_params(_params(tmp_path, b"data: " + b"[" * 300 + b"]" * 300 + b"\n"))
    apostrophes = "".join(f"  - {{name: q{i}, allowed: [yes, don't know]}}  # q{i}'s answer\n" for i in range(300))
    assert flow_depth("columns:\n" + apostrophes) == 2  # a quote inside a plain word opens no string


def test_a_directory_named_params_yaml_is_one_line(tmp_path):
    """A directory where the params file should be is a ConfigError naming it, not IsADirectoryError."""
    (tmp_path / "params.yaml").mkdir()
    with pytest.raises(ConfigError, match=r"params.yaml: is a directory, not a params file$"):
        load_params(tmp_path / "params.yaml")


def test_a_good_file_still_loads_after_the_checks(tmp_path):
    """The checks refuse only unusable files: the tiny declaration, written as YAML, loads."""
    params = load_params(_params(tmp_path, yaml.safe_dump(TINY).encode()))
    assert params.data.target.name == "y"
