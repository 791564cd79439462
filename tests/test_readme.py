"""README's commands must run as written from the repository root, with ../shared beside it.

Every command line in README's code blocks is read; each path it names must exist, or be
made by a README command before it (a run folder, an exported model, a report). The
cheap ones also run: every command's --help.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SHARED_DATA

COMMANDS = ("p2p-train", "p2p-export", "p2p-live", "p2p-video", "p2p-translate", "p2p-eval", "p2p-web")
# options whose value is something the command writes
OUTPUT_OPTIONS = {"--out", "-o", "--output", "--record", "--snapshots", "--report", "--markdown", "--web"}
# options whose value is not a path
VALUE_OPTIONS = {"--size", "--shapes", "--min", "--opt", "--max", "--batch", "--noise", "--seed", "--fit", "--backend",
                 "--direction", "--task", "--epochs", "--epochs-decay", "--iters", "--camera", "--max-frames",
                 "--samples", "-k", "--ngf", "--nproc", "--nproc_per_node", "--nnodes", "--rdzv_backend",
                 "--rdzv_endpoint", "--rdzv_id", "--threads", "--runs", "--split", "--limit", "--lr", "--patch",
                 "--temporal", "--batch-size", "--layout", "--seg-iters", "--rows", "--norm", "--port", "--host",
                 "--opset", "--preprocess", "--num-d", "--lambda-fm"}
PATH_SUFFIXES = (".onnx", ".engine", ".pt", ".mp4", ".avi", ".mkv", ".mov", ".png", ".jpg", ".py", ".md", ".sh")


def command_lines() -> list[str]:
    """The shell commands in README's fenced code blocks, continuation lines joined, comments dropped."""
    text = (ROOT / "README.md").read_text()
    lines = []
    for block in re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, re.S):
        joined = block.replace("\\\n", " ")
        for line in joined.splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#") and "→" not in line:  # not the pipeline diagram
                lines.append(line)
    return lines


def p2p_commands() -> list[list[str]]:
    """Each p2p-* invocation (also after `&&`, `.venv/bin/`, `torchrun ... -m p2p.training`) as argv."""
    found = []
    for line in command_lines():
        if line.startswith(("from ", "tr ", "out", "print(")):  # the Python example
            continue
        for part in line.split("&&"):
            try:
                argv = shlex.split(part)
            except ValueError:
                continue
            for i, word in enumerate(argv):
                name = Path(word).name
                if name in COMMANDS:
                    found.append([name, *argv[i + 1:]])
                    break
                if word == "-m" and i + 1 < len(argv) and argv[i + 1] == "p2p.training":
                    found.append(["p2p-train", *argv[i + 2:]])
                    break
    return found


def named_paths(argv: list[str]) -> tuple[list[str], list[str]]:
    """(paths the command reads, paths it writes), by option and by how a word looks."""
    reads, writes = [], []
    args = argv[1:]
    positional = []
    i = 0
    while i < len(args):
        word = args[i]
        if word in OUTPUT_OPTIONS and i + 1 < len(args):
            writes.append(args[i + 1])
            i += 2
            continue
        if word in VALUE_OPTIONS:
            i += 2
            continue
        if word.startswith("-"):
            if "=" not in word and i + 1 < len(args) and not args[i + 1].startswith("-") and word in (
                    "--data", "--calib", "--source", "--teacher", "--video", "--extra-inputs", "--runs", "--cache"):
                if word == "--runs":
                    pass
                elif word != "--source" or looks_like_path(args[i + 1]):
                    reads.append(args[i + 1])
                i += 2
                continue
            i += 1
            continue
        positional.append(word)
        i += 1
    if argv[0] == "p2p-video" and len(positional) >= 3:
        writes.append(positional[2])
        positional = positional[:2]
    reads += [p for p in positional if looks_like_path(p)]
    return reads, writes


def looks_like_path(word: str) -> bool:
    if "://" in word or "!" in word or word.isdigit():
        return False
    return "/" in word or word.endswith(PATH_SUFFIXES)


def made_by(path: str, made: list[str]) -> bool:
    """True if ``path`` is, or lies under, something an earlier README command writes."""
    p = Path(path)
    return any(p == Path(m) or Path(m) in p.parents for m in made)


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is absent; CI provides it")
def test_every_path_in_readme_commands_exists_or_is_made_by_an_earlier_one():
    commands = p2p_commands()
    assert len(commands) >= 20, commands  # the parser really found README's examples
    made: list[str] = []
    missing = []
    for argv in commands:
        reads, writes = named_paths(argv)
        for path in reads:
            if not ((ROOT / path).exists() or made_by(path, made)):
                missing.append(f"{' '.join(argv)}  →  {path}")
        made += writes
        if argv[0] == "p2p-export" and not any(w.endswith((".onnx", ".engine")) for w in writes):
            run = next((a for a in argv[1:] if not a.startswith("-")), None)
            made.append(str(Path(run) / "model.onnx"))  # its default: beside the checkpoint
    assert not missing, "README commands name paths that do not exist:\n" + "\n".join(missing)


def test_readme_scripts_and_files_exist():
    text = (ROOT / "README.md").read_text()
    for path in set(re.findall(r"(?<![\w/.])((?:benchmarks|docs|training|runtime|export|video|evaluation)/[\w./-]+"
                               r"\.(?:py|md|png|jpg|onnx))", text)):
        assert (ROOT / path).exists(), f"README names {path}, which does not exist"


def test_every_readme_command_answers_help():
    for name in sorted({argv[0] for argv in p2p_commands()}):
        result = subprocess.run([sys.executable, "-c", f"import sys; sys.argv[0] = {name!r}; "
                                 f"from importlib.metadata import entry_points; "
                                 f"(ep,) = [e for e in entry_points(group='console_scripts') if e.name == {name!r}]; "
                                 f"ep.load()(['--help'])"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "Usage" in result.stdout, (name, result.stderr[-500:])


def test_the_package_builds_without_data_warnings_and_ships_its_data(tmp_path):
    """setuptools used to print ~130 lines about the data folders on every install; the data must still ship."""
    import zipfile

    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp_path), str(ROOT)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    log = result.stdout + result.stderr
    for complaint in ("absent from the `packages` configuration", "would be ignored", "recognizes"):
        assert complaint not in log, complaint
    (wheel,) = tmp_path.glob("p2p_pix2pix-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "p2p/runtime/demo/demo.onnx" in names
    assert sum(n.startswith("p2p/training/default_data/train/") and n.endswith(".jpg") for n in names) >= 40
    assert any(n.startswith("p2p/training/default_data/val/") for n in names)
    assert any(n.endswith("default_data/LICENSE-opencv-samples.txt") for n in names)


def test_readme_commands_use_the_current_option_names():
    """README teaches the vocabulary: no option it shows is unknown or an old, hidden spelling."""
    from test_cli_vocabulary import COMMANDS

    wrong = []
    for argv in p2p_commands():
        command = COMMANDS[argv[0]]
        known = {name for p in command.params if not getattr(p, "hidden", False)
                 for name in (*p.opts, *getattr(p, "secondary_opts", []))} | {"-h", "--help"}
        wrong += [f"{' '.join(argv)}  →  {word}" for word in argv[1:]
                  if word.startswith("-") and not word.lstrip("-").isdigit() and word.split("=")[0] not in known]
    assert not wrong, "README uses options its commands do not show:\n" + "\n".join(wrong)
