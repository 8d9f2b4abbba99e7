"""The compilation stage: exports, backends against eager, the Neo request, and bad input."""

from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from glister_train.cli import main
from glister_train.models import TinyNet
from glister_train.run import train_run

from .conftest import tiny_config
from .test_sagemaker_experiments import aws  # noqa: F401  (the moto server fixture)

pytest.importorskip("onnxruntime")

from glister_train.compile import neo  # noqa: E402
from glister_train.compile.export import export_onnx, export_torchscript  # noqa: E402

ROLE = "arn:aws:iam::123456789012:role/neo"


def quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    from .conftest import write_npz

    root = tmp_path_factory.mktemp("compile")
    run = root / "run"
    train_run(tiny_config(write_npz(root / "data"), train={"epochs": 2}), run, log=quiet)
    return run


def test_torchscript_export_is_neo_shaped_and_round_trips(tmp_path: Path):
    model = TinyNet(num_classes=4, width=4).eval()
    tarball = export_torchscript(model, (3, 12, 12), tmp_path)
    with tarfile.open(tarball) as tar:
        assert tar.getnames() == ["model.pth"]  # Neo wants the one TorchScript file at the root
    assert json.loads((tmp_path / "neo_input.json").read_text()) == {"input0": [1, 3, 12, 12]}
    with pytest.warns(FutureWarning):  # torch.jit is deprecated; Neo still reads it
        loaded = torch.jit.load(str(tmp_path / "model.pth"))
    x = torch.randn(5, 3, 12, 12)
    torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-6)


def test_onnx_export_has_a_dynamic_batch(tmp_path: Path):
    import onnxruntime as ort

    model = TinyNet(num_classes=4, width=4).eval()
    path = export_onnx(model, (3, 12, 12), tmp_path / "m.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (1, 7):
        x = torch.randn(batch, 3, 12, 12)
        np.testing.assert_allclose(session.run(None, {"input0": x.numpy()})[0], model(x).detach().numpy(),
                                   rtol=1e-5, atol=1e-5)


def run_compile(tiny_run: Path, out: Path, *backends: str, extra: tuple[str, ...] = ()) -> dict:
    assert main(["compile", "--model", str(tiny_run / "model.pt"), "--backend", *backends, "--out", str(out),
                 "--threads", "1", *extra]) == 0
    return {r["backend"]: r for r in json.loads((out / "compile_report.json").read_text())["rows"]}


def test_backends_agree_with_eager(tiny_run: Path, tmp_path: Path, capsys):
    backends = ["onnxruntime", "onnxruntime-int8", "torchscript"]
    if importlib.util.find_spec("openvino"):
        backends.append("openvino")
    rows = run_compile(tiny_run, tmp_path / "out", *backends, extra=("--precision", "fp32"))
    text = capsys.readouterr().out
    eager = rows["eager fp32"]
    assert eager["agreement"] == 1.0 and 0 < eager["test_acc"] <= 1
    for name in ("onnxruntime", "torchscript") + (("openvino",) if "openvino" in backends else ()):
        assert rows[name]["agreement"] == 1.0, name
        assert rows[name]["max_abs_diff"] < 1e-4, name
        assert rows[name]["test_acc"] == eager["test_acc"], name
    int8 = rows["onnxruntime-int8"]
    assert int8["agreement"] >= 0.9 and int8["size_bytes"] > 0  # a 4-class toy: int8 keeps nearly every top-1
    for row in rows.values():
        assert row["latency_b1_ms"] > 0 and row["latency_b64_ms"] > 0
        assert all(Path(f).is_file() for f in row["files"])
    for name in backends:
        assert name in text
    report = json.loads((tmp_path / "out" / "compile_report.json").read_text())
    assert report["input_shape"] == [3, 12, 12] and len(report["preprocess"]["mean"]) == 3
    assert report["test_images"] == 80


@pytest.mark.skipif(importlib.util.find_spec("tvm") is None, reason="apache-tvm not installed")
def test_tvm_matches_eager_and_cross_compiles(tiny_run: Path, tmp_path: Path):
    rows = run_compile(tiny_run, tmp_path / "llvm", "tvm")
    assert rows["tvm"]["agreement"] == 1.0 and rows["tvm"]["max_abs_diff"] < 1e-4
    rows = run_compile(tiny_run, tmp_path / "arm", "tvm", extra=("--target", "aarch64"))
    [library] = rows["tvm"]["files"]
    assert "latency_b1_ms" not in rows["tvm"]  # built for another machine: not run here
    with tarfile.open(library) as tar:
        header = tar.extractfile("lib0.o").read(20)
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # e_machine: AArch64


def test_aoti_matches_eager(tiny_run: Path, tmp_path: Path):
    rows = run_compile(tiny_run, tmp_path / "out", "aoti")
    assert rows["aoti"]["agreement"] == 1.0 and rows["aoti"]["max_abs_diff"] < 1e-4
    assert rows["aoti"]["files"][0].endswith(".pt2")


def test_neo_request(aws, tmp_path: Path):  # noqa: F811
    import boto3

    session = boto3.Session()
    sent: list[dict] = []
    session.events.register("provide-client-params.sagemaker.CreateCompilationJob", lambda params, **_: sent.append(params))
    session.client("s3").create_bucket(Bucket="neo-bucket")
    tarball = export_torchscript(TinyNet(num_classes=4, width=4), (3, 32, 32), tmp_path)
    result = neo.submit(tarball, {"input0": [1, 3, 32, 32]}, "ml_c5", ROLE, "neo-bucket", session=session, wait=True,
                        log=quiet, poll_seconds=0)
    [request] = sent
    name = result["job_name"]
    assert request["CompilationJobName"] == name and request["RoleArn"] == ROLE
    assert request["InputConfig"] == {
        "S3Uri": f"s3://neo-bucket/glister-train/neo/{name}/model.tar.gz",
        "DataInputConfig": '{"input0": [1, 3, 32, 32]}', "Framework": "PYTORCH", "FrameworkVersion": "2.0"}
    assert request["OutputConfig"] == {"S3OutputLocation": f"s3://neo-bucket/glister-train/neo/{name}/output",
                                       "TargetDevice": "ml_c5"}
    body = session.client("s3").get_object(Bucket="neo-bucket", Key=f"glister-train/neo/{name}/model.tar.gz")["Body"]
    assert body.read() == tarball.read_bytes()
    assert result["status"].upper() == "COMPLETED"
    assert neo.framework_version("jetson_nano") == "1.8"


def test_neo_from_the_command_line(aws, tiny_run: Path, tmp_path: Path):  # noqa: F811
    _, sagemaker = aws
    import boto3

    boto3.client("s3").create_bucket(Bucket="neo-bucket")
    assert main(["compile", "--model", str(tiny_run), "--backend", "onnxruntime", "--out", str(tmp_path / "out"),
                 "--neo", "rasp4b", "--neo-role", ROLE, "--neo-bucket", "neo-bucket", "--threads", "1"]) == 0
    report = json.loads((tmp_path / "out" / "compile_report.json").read_text())
    assert {r["backend"] for r in report["rows"]} >= {"onnxruntime", "torchscript"}
    described = sagemaker.describe_compilation_job(CompilationJobName=report["neo"]["job_name"])
    assert described["InputConfig"]["Framework"] == "PYTORCH"
    assert report["neo"]["request"]["OutputConfig"]["TargetDevice"] == "rasp4b"
    assert report["neo"]["request"]["InputConfig"]["FrameworkVersion"] == "1.8"


@pytest.mark.parametrize("args, message", [
    (["--model", "{tmp}/missing.pt"], "no such model file"),
    (["--backend", "tensorrt"], "unknown backend tensorrt"),
    (["--neo", "ml_c99", "--neo-role", ROLE, "--neo-bucket", "b"], "valid targets: lambda, ml_m4"),
    (["--neo", "ml_c5"], "--neo needs --neo-role"),
    (["--out", "{run}"], "not empty"),
])
def test_bad_input_is_a_clear_error(tiny_run: Path, tmp_path: Path, capsys, args, message):
    argv = ["compile", "--model", str(tiny_run / "model.pt"), "--out", str(tmp_path / "out")]
    argv += [a.format(tmp=tmp_path, run=tiny_run) for a in args]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_missing_backend_package_names_the_extra(tiny_run: Path, tmp_path: Path, capsys, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    assert main(["compile", "--model", str(tiny_run), "--backend", "openvino", "--out", str(tmp_path / "o")]) == 2
    assert "pip install 'glister-train[compile]'" in capsys.readouterr().err
