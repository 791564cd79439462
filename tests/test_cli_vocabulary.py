"""The seven commands speak one option vocabulary (runtime/cli_options.py): same names, grammar and defaults."""
from __future__ import annotations

import dataclasses

import click
import pytest
from click.testing import CliRunner

from p2p.evaluation.cli import main as eval_main
from p2p.export.cli import main as export_main
from p2p.runtime import cli_options as o
from p2p.runtime.backends import BACKENDS
from p2p.runtime.masks import NOISE_MODES
from p2p.runtime.web.cli import main as web_main
from p2p.training.cli import main as train_main
from p2p.training.config import TrainConfig
from p2p.video.cli import translate_main, video_main
from p2p.video.live import main as live_main

COMMANDS = {"p2p-train": train_main, "p2p-export": export_main, "p2p-live": live_main, "p2p-video": video_main,
            "p2p-translate": translate_main, "p2p-eval": eval_main, "p2p-web": web_main}
SHARED = {"--out", "--size", "--backend", "--seed", "--noise", "--fit", "--device", "--temporal"}


def visible_options(command: click.Command) -> dict[str, click.Option]:
    return {max(p.opts, key=len): p for p in command.params
            if isinstance(p, click.Option) and not p.hidden}


def shared_uses():
    return [(name, flag, option) for name, command in COMMANDS.items()
            for flag, option in visible_options(command).items() if flag in SHARED]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_option_of_every_command_has_help(name):
    missing = [flag for flag, option in visible_options(COMMANDS[name]).items() if not (option.help or "").strip()]
    assert not missing, f"{name}: options without help: {missing}"


def test_the_shared_options_are_spelled_and_typed_alike_everywhere():
    uses = shared_uses()
    assert {flag for _, flag, _ in uses} == SHARED  # each of them is used somewhere
    grammar = {"--size": o.SizeType, "--backend": click.Choice, "--noise": click.Choice, "--fit": click.Choice,
               "--device": o.DeviceType, "--temporal": click.FloatRange, "--seed": click.types.IntParamType,
               "--out": click.Path}
    for name, flag, option in uses:
        assert isinstance(option.type, grammar[flag]), (name, flag, option.type)
        if flag == "--out":
            assert set(option.opts) == {"-o", "--out"}, (name, option.opts)
        if flag == "--backend":
            assert tuple(option.type.choices) == BACKENDS, name
        if flag == "--noise":
            assert tuple(option.type.choices) == NOISE_MODES, name
        if flag == "--fit":
            assert tuple(option.type.choices) == o.FIT_MODES, name
        if flag == "--temporal":
            assert (option.type.min, option.type.max) == (0, 1) and option.metavar == "STRENGTH", name
        if flag == "--seed":
            assert option.default == o.DEFAULT_SEED, name


@pytest.mark.parametrize("text,expect", [("256", (256, 256)), ("512x288", (512, 288)), ("512×288", (512, 288)),
                                         (" 64 x 32 ", (64, 32))])
def test_size_parses_n_and_wxh_identically_everywhere(text, expect):
    sizes = [(name, option) for name, flag, option in shared_uses() if flag == "--size"]
    assert {name for name, _ in sizes} >= {"p2p-train", "p2p-live", "p2p-video", "p2p-translate", "p2p-eval"}
    for name, option in sizes:
        assert option.type.convert(text, option, None) == expect, name


@pytest.mark.parametrize("name", ["p2p-live", "p2p-video", "p2p-translate", "p2p-eval", "p2p-train"])
@pytest.mark.parametrize("bad", ["big", "0", "12x", "3x4x5"])
def test_a_bad_size_is_a_usage_error_in_every_command(name, bad):
    args = {"p2p-live": ["m.onnx"], "p2p-video": ["m.onnx", "in.mp4", "-o", "out.mp4"],
            "p2p-translate": ["m.onnx", "a.png", "-o", "out"], "p2p-eval": ["m.onnx"], "p2p-train": []}[name]
    result = CliRunner().invoke(COMMANDS[name], [*args, "--size", bad])
    assert result.exit_code == 2 and "not N or WxH" in result.output, result.output


def test_a_backend_typo_is_refused_everywhere():
    for name, args in (("p2p-eval", ["m.onnx"]), ("p2p-video", ["m.onnx", "in.mp4", "-o", "o.mp4"]),
                       ("p2p-live", []), ("p2p-translate", ["m.onnx", "a.png", "-o", "out"])):
        result = CliRunner().invoke(COMMANDS[name], [*args, "--backend", "ort-cpuu"])
        assert result.exit_code == 2 and "ort-cpu" in result.output, (name, result.output)


def test_training_defaults_come_from_train_config():
    """p2p-train restates no default: each option that is a TrainConfig field defaults to the field's default."""
    fields = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    checked = 0
    for option in train_main.params:
        if option.name in fields and not option.is_flag:
            want = fields[option.name]
            got = option.type.convert(option.default, option, None) if option.default is not None else None
            want = option.type.convert(want, option, None) if want is not None else None
            assert got == want, (option.name, option.default, fields[option.name])
            checked += 1
    assert checked >= 25, checked


def test_old_spellings_still_work_but_are_hidden(tmp_path):
    for command, old in ((export_main, "--output"), (eval_main, "--report")):
        help_text = CliRunner().invoke(command, ["--help"]).output
        assert old not in help_text and "-o, --out" in help_text
        both = CliRunner().invoke(command, [str(tmp_path / "nope"), "-o", "a", old, "b"])
        assert both.exit_code == 2 and "old spelling" in both.output, both.output
