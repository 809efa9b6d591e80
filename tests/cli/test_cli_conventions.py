"""What every verb shares: option names, help lines, `--version`, `-v`/`-q` on either side of the verb, "did you mean",
one error line and the exit codes (2: the command line, 1: the work)."""

from __future__ import annotations

import argparse

import pytest

import lesionseg
from lesionseg.cli import EXIT_FAILED, EXIT_USAGE, build_parser, main


def _verbs() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _options(p: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in p._actions if not isinstance(a, argparse._HelpAction)]


def test_every_option_and_argument_has_a_help_line():
    verbs = _verbs()
    assert set(verbs) == {
        "train",
        "evaluate",
        "predict",
        "export",
        "serve",
        "benchmark",
        "models",
        "ensemble",
        "data",
        "cv",
    }
    lacking = [
        f"{verb} {'/'.join(a.option_strings) or a.dest}"
        for verb, p in verbs.items()
        for a in _options(p)
        if not a.help  # a deprecated alias is argparse.SUPPRESS, which is not empty
    ]
    assert lacking == []


def test_one_name_per_concept_across_verbs():
    verbs = _verbs()
    for verb in ("evaluate", "predict", "export", "serve"):
        assert "--model" in verbs[verb]._option_string_actions, verb
    for verb in ("evaluate", "predict"):
        for option in ("--data-root", "--layout", "--split", "--subset", "--threshold", "--tta", "--device"):
            assert option in verbs[verb]._option_string_actions, (verb, option)
    # The old spellings are parsed but never shown.
    for verb in ("evaluate", "predict", "export"):
        text = verbs[verb].format_help()
        assert "--checkpoint" not in text and "--dataset" not in text, verb


def test_shared_options_read_the_same_in_every_verb():
    verbs = _verbs()
    for option in ("--threshold", "--tta", "--no-postprocess", "--no-progress", "--subset", "--layout"):
        helps = {verbs[v]._option_string_actions[option].help for v in ("evaluate", "predict")}
        assert len(helps) == 1, option
    devices = {verbs[v]._option_string_actions["--device"].help for v in ("evaluate", "predict")}
    assert len(devices) == 1


@pytest.mark.parametrize(
    ("argv", "dest", "value", "old"),
    [
        (["evaluate", "--checkpoint", "skin"], "model", "skin", "--checkpoint"),
        (["export", "--onnx", "m.onnx", "--checkpoint", "runs/x"], "model", "runs/x", "--checkpoint"),
        (["predict", "a.png", "--checkpoint", "polyp"], "model", "polyp", "--checkpoint"),
        # the README's set-up command as it was first published
        (["predict", "--dataset", "../shared/data/ph2", "--out", "p"], "data_root", "../shared/data/ph2", "--dataset"),
    ],
)
def test_deprecated_spellings_still_work_and_say_so(argv, dest, value, old, capsys):
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    assert f"{old} is deprecated" in capsys.readouterr().err


def test_deprecated_alias_keeps_the_default_of_the_new_option():
    args = build_parser().parse_args(["predict", "a.png"])
    assert args.model == "skin" and args.data_root is None


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"lesionseg {lesionseg.__version__}"


@pytest.mark.parametrize(
    ("argv", "verbose", "quiet"),
    [
        (["models"], False, False),
        (["-v", "models"], True, False),
        (["models", "-v"], True, False),
        (["models", "--verbose"], True, False),
        (["-q", "data", "check", "x"], False, True),
        (["data", "check", "x", "-q"], False, True),
        (["predict", "a.png", "-q"], False, True),
        (["-v", "predict", "a.png", "-q"], True, True),
    ],
)
def test_verbose_and_quiet_before_or_after_the_verb(argv, verbose, quiet):
    args = build_parser().parse_args(argv)
    assert (args.verbose, args.quiet) == (verbose, quiet)


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("lesionseg: error: ")]


def test_misspelt_config_key_suggests_the_full_key(capsys):
    assert main(["train", "--set", "trian.epochs=3"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert _error_lines(err) and "'trian.epochs' (did you mean 'train.epochs'?)" in err
    assert "Traceback" not in err
    assert main(["train", "--set", "train.epoch=3"]) == EXIT_FAILED
    assert "(did you mean 'train.epochs'?)" in capsys.readouterr().err


def test_misspelt_model_names_suggest_the_closest(tiny_config, tmp_path, capsys):
    import yaml

    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(tiny_config))
    assert main(["train", "--config", str(cfg), "--set", "model.name=unet_smal", "--no-progress"]) == EXIT_FAILED
    assert "did you mean 'unet_small'" in capsys.readouterr().err
    assert main(["models", "unet_smal"]) == EXIT_USAGE
    assert "did you mean 'unet_small'" in capsys.readouterr().err


def test_misspelt_shipped_tag_suggests_the_tag(blob_root, capsys):
    image = blob_root / "images" / "case000.png"
    assert main(["predict", str(image), "--model", "skn", "--no-progress"]) == EXIT_FAILED
    err = capsys.readouterr().err
    lines = _error_lines(err)
    assert len(lines) == 1 and "(did you mean 'skin'?)" in lines[0]


def test_usage_errors_exit_2_with_one_error_line(capsys):
    assert main(["train"]) == EXIT_USAGE  # neither --config nor --resume
    err = capsys.readouterr().err
    assert len(_error_lines(err)) == 1 and "Traceback" not in err
    assert main(["evaluate"]) == EXIT_USAGE  # no --model
    assert "give --model" in _error_lines(capsys.readouterr().err)[0]
    with pytest.raises(SystemExit) as stop:  # argparse's own errors: the same line, the same code
        main(["serve", "--workers-threads", "0"])
    assert stop.value.code == EXIT_USAGE
    err = capsys.readouterr().err
    assert _error_lines(err) == ["lesionseg: error: argument --workers-threads: expected a whole number >= 1, got 0"]


def test_failed_work_exits_1_without_traceback_unless_verbose(tmp_path, capsys):
    missing = tmp_path / "nothing.yaml"
    assert main(["train", "--config", str(missing)]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert _error_lines(err) == [f"lesionseg: error: {missing}: no such config file"]
    assert "Traceback" not in err
    assert main(["train", "--config", str(missing), "-v"]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "Traceback" in err and _error_lines(err)[-1] == f"lesionseg: error: {missing}: no such config file"
