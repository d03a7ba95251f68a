"""The command line as a whole: help texts, argument errors and exit codes."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from upscale_stream.cli import main
from upscale_stream.cli.app import build_parser

from .helpers import write_image


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    [action] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def visible_flags(parser: argparse.ArgumentParser) -> list[str]:
    return [
        flag
        for action in parser._actions
        if action.help is not argparse.SUPPRESS
        for flag in action.option_strings
    ]


def test_the_top_level_help_lists_the_three_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("run", "serve", "demo"):
        assert re.search(rf"^\s+{command}\s+\w", out, re.M), command
    assert "RUNWARE_API_KEY" in out


@pytest.mark.parametrize("command", ["run", "serve", "demo"])
def test_each_command_help_documents_every_flag_with_a_sentence(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    parser = subparsers()[command]
    for flag in visible_flags(parser):
        assert flag in out, flag
    for action in parser._actions:
        if action.help is not argparse.SUPPRESS and action.option_strings:
            assert action.help and len(action.help) > 15, action.option_strings


def test_run_help_gives_defaults_and_allowed_values(capsys: pytest.CaptureFixture[str]) -> None:
    main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in (
        "{JPG,PNG,WEBP}",
        "{URL,base64Data,dataURI}",
        "{sync,async}",
        "{2,4}",
        "clarity, ccsr, sd-latent, swinir",
        "provider:id@version",
        "from 20 to 99",
        "Default: 64",
        "Default: 300",
        "exit codes: 0 all succeeded, 1 some failed, 2 usage error, 130 interrupted",
    ):
        assert text in out, text
    assert "--server-task-delay" not in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--format", "gif"], "error: --format: invalid choice: 'GIF' (choose from"),
        (["--output-type", "file"], "error: --output-type: invalid choice: 'file' (choose from"),
        (["--delivery", "later"], "error: --delivery: invalid choice: 'later' (choose from"),
        (["--factor", "3"], "error: --factor: invalid choice: 3 (choose from 2, 4)"),
        (["--model", "bogus"], "error: --model: invalid choice: 'bogus' (choose from clarity"),
        (["--setting", "steps"], "error: --setting: expected key=value, got 'steps'"),
        (["--setting", "steps=lots"], "error: --setting: steps takes a whole number"),
        (["--concurrency", "0"], "error: --concurrency: must be at least 1, got 0"),
        (["--batch", "x"], "error: --batch: expected a whole number, got 'x'"),
        (["--timeout", "0"], "error: --timeout: must be greater than 0"),
        (["--quality", "high"], "error: --quality: expected an integer from 20 to 99, got 'high'"),
        (["--quality", "100"], "error: --quality 100: input should be less than or equal to 99"),
        (["--ttl", "10"], "error: --ttl 10: input should be greater than or equal to 60"),
        (["--model", "ccsr", "--factor", "4"], "error: --factor 4: CCSR (runware:501@1) supports"),
        (["--setting", "seed=3"], "error: --setting seed=3: SwinIR (runware:503@1) does not"),
        (["--url", "ws://h/v1"], "error: --url ws://h/v1: no API key: pass --api-key or set"),
        (
            ["--url", "ws://h/v1", "--embedded"],
            "error: --embedded: not allowed with argument --url",
        ),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_an_argument_error_names_the_argument_and_what_is_allowed_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    write_image(tmp_path / "a.png")
    out = tmp_path / "out"

    code = main(["run", str(tmp_path / "a.png"), "--out", str(out), *flags])

    assert code == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split())
    assert not out.exists()  # nothing was started or written
    # One style for every usage error: the error line, then where the help is; never the
    # whole usage block for some errors and not for others.
    assert "usage:" not in err
    lines = err.splitlines()
    assert lines[0].startswith("upscale-stream run: error: ")
    assert lines[-1] == "(see 'upscale-stream run --help')"


def test_the_allowed_values_are_listed_in_the_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "a.png", "--out", "o", "--format", "gif"]) == 2
    assert "(choose from 'JPG', 'PNG', 'WEBP')" in capsys.readouterr().err


def test_out_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "a.png"]) == 2
    assert "the following arguments are required: -o/--out" in capsys.readouterr().err


def test_no_inputs_found_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "upscale-stream run: error: INPUT " in capsys.readouterr().err


def test_an_output_path_that_is_a_file_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_image(tmp_path / "a.png")
    (tmp_path / "taken").write_text("x")
    assert main(["run", str(tmp_path / "a.png"), "--out", str(tmp_path / "taken")]) == 2
    assert "--out " in capsys.readouterr().err


def test_no_command_prints_the_help_and_exits_with_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: upscale-stream" in capsys.readouterr().err


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert re.fullmatch(r"upscale-stream \S+\n", capsys.readouterr().out)


def test_bench_is_not_a_command_of_the_installed_package(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The harness lives in benchmarks/ of a checkout (make bench), never in the wheel.
    assert main(["bench"]) == 2
    assert "invalid choice: 'bench'" in capsys.readouterr().err
