"""Security: safe loading only, user code imported only from where the user pointed, no network.

- every ``torch.load`` in ``pipeline/`` and ``scripts/`` passes ``weights_only=True`` (checked on the
  syntax tree), and nothing unpickles otherwise;
- a malicious pickle in a weights file or checkpoint is refused, through the API and through every
  command that reads one, without running its code (its payload would create a marker folder);
- ``file.py:Class`` imports exactly that file; a name without ``:`` and the built-in names import
  nothing;
- a whole CLI sequence (genome synth, distill, train, predict, evaluate) runs with every socket
  connection and name lookup refused.
"""

from __future__ import annotations

import ast
import os
import pickle
import socket
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from helpers import DEMO_KWARGS, DEMO_KWARGS_JSON, assert_one_line_error, invoke, ok

from pipeline.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "pipeline").rglob("*.py"), *(ROOT / "scripts").rglob("*.py")])


# ------------------------------------------------------------------------------------------------
# static checks
# ------------------------------------------------------------------------------------------------


def _calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """``(dotted name, call)`` for every call whose function is a (dotted) name."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, func = [], node.func
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            if isinstance(func, ast.Name):
                out.append((".".join([func.id, *reversed(parts)]), node))
    return out


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def test_every_torch_load_is_weights_only():
    loads = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):  # `from torch import load` would hide a call from the check below
            if isinstance(node, ast.ImportFrom) and node.module in ("torch", "torch.serialization"):
                assert "load" not in {a.name for a in node.names}, f"{path}: imports torch's load by name"
        for name, call in _calls(tree):
            if name in ("torch.load", "torch.serialization.load"):
                loads.append(f"{path.relative_to(ROOT)}:{call.lineno}")
                value = _keyword(call, "weights_only")
                assert isinstance(value, ast.Constant) and value.value is True, (
                    f"{path}:{call.lineno}: torch.load without weights_only=True"
                )
                assert not any(k.arg is None for k in call.keywords), f"{path}:{call.lineno}: **kwargs"
    assert loads, "no torch.load found: the check looks at the wrong files"


def test_nothing_else_unpickles_or_opens_the_network():
    """No pickle/marshal/torch.jit/torch.hub loading, no ``np.load(allow_pickle=True)``, no network module."""
    banned_calls = {
        *("pickle.load", "pickle.loads", "marshal.load", "marshal.loads", "torch.jit.load", "torch.hub.load"),
        *("torch.hub.load_state_dict_from_url", "torch.hub.download_url_to_file"),
    }
    banned_modules = {"socket", "urllib", "http", "requests", "urllib3", "httpx", "aiohttp", "ftplib", "smtplib"}
    for path in SOURCES:
        tree = ast.parse(path.read_text(), filename=str(path))
        for name, call in _calls(tree):
            assert name not in banned_calls, f"{path}:{call.lineno}: {name}"
            if name in ("np.load", "numpy.load"):
                value = _keyword(call, "allow_pickle")
                assert value is None or (isinstance(value, ast.Constant) and value.value is False), (
                    f"{path}:{call.lineno}: np.load with allow_pickle"
                )
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for module in names:
                assert module.split(".")[0] not in banned_modules, f"{path}:{node.lineno}: imports {module}"


# ------------------------------------------------------------------------------------------------
# malicious pickles
# ------------------------------------------------------------------------------------------------


class Payload:
    """Unpickles to ``os.mkdir(marker)``: the marker folder exists iff the payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.marker),))


@pytest.fixture
def evil(tmp_path, trained_run) -> dict[str, Path]:
    """Weights files and checkpoints carrying :class:`Payload`, and the marker it would create."""
    marker = tmp_path / "payload_ran"
    d = tmp_path / "evil"
    d.mkdir()
    files = {"marker": marker}
    # a state dict with a poisoned entry, as torch.save writes it
    torch.save({"conv1.weight": Payload(marker)}, d / "weights.pt")
    files["weights"] = d / "weights.pt"
    # a bare pickle
    (d / "raw.pkl").write_bytes(pickle.dumps(Payload(marker)))
    files["raw"] = d / "raw.pkl"
    # a checkpoint that is right in every key but one
    ckpt = torch.load(trained_run / "best.pt", weights_only=True)
    ckpt["metrics"] = {"valid_loss": Payload(marker)}
    torch.save(ckpt, d / "best.pt")
    files["checkpoint"] = d / "best.pt"
    # an effects file whose array is an object array of payloads
    np.savez(d / "effects.npz", effects=np.array([Payload(marker)], dtype=object))
    files["effects"] = d / "effects.npz"
    assert not marker.exists()
    return files


def test_the_payload_is_live(evil):
    """Without ``weights_only`` the payload runs (so the refusals below are real)."""
    torch.load(evil["weights"], weights_only=False)
    assert evil["marker"].is_dir()


def test_malicious_pickles_are_refused_by_the_api(evil, trained_run):
    from pipeline.apply.outputs import read_effects
    from pipeline.models import build_base, build_multiplexer, load_checkpoint, load_state_dict_file, read_checkpoint

    for path in (evil["weights"], evil["raw"]):
        with pytest.raises(UserError, match="pickled Python objects"):
            build_base("demo", weights=path, **DEMO_KWARGS)
        with pytest.raises(UserError, match=path.name):
            build_multiplexer("conv", weights=path, seq_len=80, n_targets=4)
        with pytest.raises(UserError, match="refuses them without running"):
            load_state_dict_file(path)
    for path in (evil["checkpoint"], evil["raw"]):
        with pytest.raises(UserError, match="checkpoint .* cannot be loaded"):
            read_checkpoint(path)
        with pytest.raises(UserError, match="pickled"):
            load_checkpoint(path)
    with pytest.raises(UserError, match="not an effects file"):
        read_effects(evil["effects"])
    assert not evil["marker"].exists()


@pytest.mark.parametrize(
    "command",
    [
        "distill (spec base.weights)",
        "ism --base --weights",
        "ism --checkpoint",
        "predict --checkpoint",
        "score-vcf --checkpoint",
        "evaluate --checkpoint",
        "train --resume",
        "plot",
    ],
)
def test_malicious_pickles_are_refused_by_every_command(command, evil, tmp_path, write_spec, tiny_store, genome_path):
    out = tmp_path / "out"
    out.mkdir()
    region = ["--region", "chr7:3000"]
    vcf = tmp_path / "one.vcf"
    vcf.write_text("#CHROM\tPOS\tID\tREF\tALT\nchr7\t3000\t.\tA\tG\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(evil["checkpoint"].read_bytes())
    spec = write_spec(tmp_path, base={"weights": str(evil["weights"])}, store=str(out / "store.zarr"))
    base_weights = ["--base", "demo", "--base-kwargs", DEMO_KWARGS_JSON, "--weights", evil["weights"]]
    args, name = {
        "distill (spec base.weights)": (["distill", spec, "--device", "cpu"], "weights.pt"),
        "ism --base --weights": (
            ["ism", *base_weights, *region, "--genome", genome_path, "--out", out / "x.npz"],
            "weights.pt",
        ),
        "ism --checkpoint": (["ism", "--checkpoint", evil["checkpoint"], *region, "--out", out / "x.npz"], "best.pt"),
        "predict --checkpoint": (
            ["predict", "--checkpoint", evil["checkpoint"], *region, "--out", out / "x.npz"],
            "best.pt",
        ),
        "score-vcf --checkpoint": (
            ["score-vcf", "--checkpoint", evil["checkpoint"], "--vcf", vcf, "--out", out / "s.tsv"],
            "best.pt",
        ),
        "evaluate --checkpoint": (
            ["evaluate", "--checkpoint", evil["checkpoint"], "--store", tiny_store, "--out", out / "eval"],
            "best.pt",
        ),
        "train --resume": (
            ["train", tiny_store, "--run-dir", run, "--resume", "--steps", "8", "--device", "cpu"],
            "last.pt",
        ),
        "plot": (["plot", evil["effects"], "--out", out / "p.png"], "effects.npz"),
    }[command]
    assert_one_line_error(invoke(*args), name)
    assert not evil["marker"].exists()
    assert list(out.iterdir()) == []


# ------------------------------------------------------------------------------------------------
# user model imports
# ------------------------------------------------------------------------------------------------

MODEL_SOURCE = """
import os
from torch import nn

ORIGIN = {origin!r}
if {marker!r}:
    os.mkdir({marker!r})  # importing this module has a visible side effect


class Net(nn.Module):
    def __init__(self, seq_len=80, n_targets=2):
        super().__init__()
        self.seq_len = seq_len
        self.linear = nn.Linear(4 * seq_len, n_targets)

    def forward(self, x):
        return self.linear(x.flatten(1)).sigmoid()
"""


def _model_file(folder: Path, name: str, origin: str, marker: Path | str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(MODEL_SOURCE.format(origin=origin, marker=str(marker))))
    return path


def test_file_import_uses_exactly_the_given_file(tmp_path, monkeypatch):
    from pipeline.models import build_base, import_object

    mine = _model_file(tmp_path / "mine", "usermodel.py", "the given file")
    _model_file(tmp_path / "on_sys_path", "usermodel.py", "sys.path")
    monkeypatch.syspath_prepend(str(tmp_path / "on_sys_path"))
    monkeypatch.delitem(sys.modules, "usermodel", raising=False)

    cls = import_object(f"{mine}:Net")
    assert sys.modules[cls.__module__].ORIGIN == "the given file"
    assert "usermodel" not in sys.modules  # not imported under its plain name, which would shadow others
    assert isinstance(build_base(f"{mine}:Net"), cls)

    # a relative file path is relative to the working folder, never searched for on sys.path
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    with pytest.raises(UserError, match="usermodel.py.* does not exist"):
        import_object("usermodel.py:Net")
    monkeypatch.chdir(tmp_path / "mine")
    assert sys.modules[import_object("usermodel.py:Net").__module__].ORIGIN == "the given file"


def test_names_without_a_colon_and_builtin_names_import_nothing(tmp_path, monkeypatch):
    import importlib

    from pipeline.models import build_base, build_multiplexer

    imported: list[str] = []
    real_import_module = importlib.import_module
    real_from_file = importlib.util.spec_from_file_location

    def import_module(name: str, *args: Any, **kwargs: Any) -> Any:
        imported.append(name)
        return real_import_module(name, *args, **kwargs)

    def from_file(name: str, *args: Any, **kwargs: Any) -> Any:
        imported.append(name)
        return real_from_file(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", import_module)
    monkeypatch.setattr(importlib.util, "spec_from_file_location", from_file)
    # modules named like the built-in models and like a bare user model, each leaving a marker if imported
    side = tmp_path / "side_effects"
    for name in ("demo", "beluga", "conv", "usermodel"):
        _model_file(side, f"{name}.py", "sys.path", marker=tmp_path / f"imported_{name}")
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(side))

    with pytest.raises(UserError, match="unknown base model 'usermodel'"):
        build_base("usermodel")
    with pytest.raises(UserError, match="unknown multiplexer 'usermodel'"):
        build_multiplexer("usermodel")
    with pytest.raises(UserError, match="unknown base model"):
        build_base(str(side / "usermodel.py"))  # a file without :Class is not imported either
    build_base("demo", **DEMO_KWARGS)
    build_base("beluga", seq_len=310, n_targets=2)
    build_multiplexer("conv", seq_len=80, n_targets=2)
    assert imported == []
    assert not list(tmp_path.glob("imported_*"))
    assert not {"demo", "beluga", "conv", "usermodel"} & set(sys.modules)


# ------------------------------------------------------------------------------------------------
# no network
# ------------------------------------------------------------------------------------------------


def test_end_to_end_without_network(tmp_path, monkeypatch, spec_dict):
    attempts: list[str] = []

    def refuse(what: str) -> Any:
        def refused(*args: Any, **kwargs: Any) -> Any:
            attempts.append(f"{what}{args[1:] if what.startswith('socket.socket') else args}")
            raise OSError(f"network access attempted in a test: {what}")

        return refused

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.socket.connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("socket.socket.connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("socket.getaddrinfo"))
    monkeypatch.delenv("WORLD_SIZE", raising=False)  # one process: no gloo rendezvous in this sequence

    ok("genome", "synth", tmp_path / "genome.fa", "--divisor", "20000")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(spec_dict(genome="genome.fa", store="store.zarr"), sort_keys=False))
    ok("distill", spec, "--device", "cpu")
    ok("train", spec, "--run-dir", tmp_path / "run", "--steps", "2", "--valid-every", "2", "--device", "cpu")
    ok("predict", "--checkpoint", tmp_path / "run" / "best.pt", "--region", "chr7:3000", "--out", tmp_path / "p.npz")
    ok("evaluate", "--checkpoint", tmp_path / "run" / "best.pt", "--store", tmp_path / "store.zarr", "--out",
       tmp_path / "eval", "--device", "cpu")  # fmt: skip
    assert (tmp_path / "eval" / "report.json").is_file()
    assert attempts == []
    with pytest.raises(OSError, match="network access attempted"):  # the guard is in place
        socket.create_connection(("example.org", 80))
