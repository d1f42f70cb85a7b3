"""Export: Cellpose 3 files load strictly, export to ONNX matching torch, with metadata; bad files refused."""

import json

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

from nucseg_rt.errors import ModelFormatError, ModelNotFoundError  # noqa: E402
from nucseg_rt_export.cellpose_io import file_sha256, load_cellpose_model  # noqa: E402
from nucseg_rt_export.onnx_export import export_cellpose, ortho_path_for  # noqa: E402
from nucseg_rt_export.unet import CPnet  # noqa: E402
from helpers import CELLPOSE, cellpose_module  # noqa: E402

cp_resnet = cellpose_module("cellpose.resnet_torch")
pytestmark = CELLPOSE


def randomize_bn(net, seed):
    """Give BatchNorm layers non-trivial statistics so outputs are not near-constant."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.fixture(scope="module")
def cellpose_file(tmp_path_factory):
    """A model saved by Cellpose 3.1's own CPnet.save_model (extension-less, like Cellpose's)."""
    torch.manual_seed(0)
    net = cp_resnet.CPnet([2, 32, 64, 128, 256], 3, 3, mkldnn=False, diam_mean=17.0)
    randomize_bn(net, 1)
    net.diam_labels.data[:] = 14.5
    path = tmp_path_factory.mktemp("cp") / "nuclei_finetuned"
    net.save_model(str(path))
    return path, net


def test_cellpose_file_loads_strict_and_matches(cellpose_file):
    path, ref = cellpose_file
    m = load_cellpose_model(path)
    assert m.nbase == [2, 32, 64, 128, 256] and m.nout == 3
    assert m.diam_mean == pytest.approx(17.0) and m.diam_labels == pytest.approx(14.5)
    x = torch.randn(2, 2, 96, 112)
    ref.eval()
    with torch.no_grad():
        a, sa = m.net(x)
        b, sb = ref(x)[:2]
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(sa, sb, atol=1e-6)


def test_our_checkpoint_loads_in_cellpose(tmp_path):
    net = CPnet([2, 16, 32, 64, 128], 3, 3, diam_mean=30.0)
    path = tmp_path / "ours"
    torch.save(net.state_dict(), path)
    ref = cp_resnet.CPnet([2, 16, 32, 64, 128], 3, 3, mkldnn=False)
    ref.load_state_dict(torch.load(path, weights_only=True), strict=True)


def test_export_matches_torch_and_carries_metadata(cellpose_file, tmp_path):
    path, ref = cellpose_file
    out = tmp_path / "m.onnx"
    rep = export_cellpose(path, out, ortho=path)
    assert rep.max_abs_diff < 1e-4
    assert rep.ortho_path == ortho_path_for(out) and rep.ortho_path.exists()
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version >= 17
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["nucseg_rt.format"] == "1"
    assert float(meta["diam_mean"]) == pytest.approx(17.0)
    assert float(meta["diam_labels"]) == pytest.approx(14.5)
    assert meta["nchan"] == "2" and meta["nclasses"] == "3"
    assert json.loads(meta["nbase"]) == [2, 32, 64, 128, 256]
    assert meta["source_file"] == path.name and meta["source_sha256"] == file_sha256(path)
    assert meta["role"] == "main" and meta["ortho_file"] == rep.ortho_path.name
    assert meta["ortho_sha256"] == file_sha256(rep.ortho_path)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(3).standard_normal((3, 2, 48, 200)).astype(np.float32)
    flows, cellprob = sess.run(["flows", "cellprob"], {"input": x})
    ref.eval()
    with torch.no_grad():
        y = ref(torch.from_numpy(x))[0].numpy()
    assert flows.shape == (3, 2, 48, 200) and cellprob.shape == (3, 1, 48, 200)
    assert np.abs(flows - y[:, :2]).max() < 1e-4 and np.abs(cellprob - y[:, 2:]).max() < 1e-4


def test_export_check_scales_with_the_output_and_catches_a_wrong_graph(tmp_path):
    """The onnxruntime-vs-torch check allows atol + rtol x the largest output: float32 rounding
    of outputs in the thousands passes; another network's graph does not. (A tiny Cellpose
    network: the check's arithmetic does not depend on the width, and the full-size one is
    test_export_matches_torch_and_carries_metadata's.)"""
    from helpers import make_cellpose_net
    from nucseg_rt_export import onnx_export as oe

    path = tmp_path / "cp_tiny"
    make_cellpose_net(diam_mean=17.0).save_model(str(path))
    m = load_cellpose_model(path)
    nchan = m.nbase[0]
    plain = oe._to_onnx_bytes(m.net, nchan, 17)
    assert oe._verify(m.net, plain, nchan, atol=1e-4) < 1e-4
    with torch.no_grad():  # the same network with outputs x 3000
        m.net.output[2].weight.mul_(3000.0)
        m.net.output[2].bias.mul_(3000.0)
    loud = oe._to_onnx_bytes(m.net, nchan, 17)
    assert oe._verify(m.net, loud, nchan, atol=1e-4) > 1e-4  # an absolute 1e-4 alone would fail
    with pytest.raises(oe.ExportVerificationError, match="differs from torch"):
        oe._verify(m.net, plain, nchan, atol=1e-4)  # the graph of the unscaled network


def test_cellpose4_file_refused(tmp_path):
    path = tmp_path / "cpsam"
    torch.save({"encoder.patch_embed.proj.weight": torch.zeros(4, 3, 8, 8),
                "encoder.blocks.0.attn.qkv.weight": torch.zeros(12, 4),
                "out.weight": torch.zeros(3, 4), "W2": torch.zeros(4, 4)}, path)
    with pytest.raises(ModelFormatError, match="Cellpose 4"):
        load_cellpose_model(path)


def test_non_model_files_refused(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ModelFormatError, match="not a PyTorch/Cellpose model"):
        load_cellpose_model(text)
    with pytest.raises(ModelNotFoundError, match="not found"):
        load_cellpose_model(tmp_path / "missing")
    trunc = tmp_path / "truncated"
    good = tmp_path / "good"
    torch.save(CPnet([2, 8, 16, 32, 64]).state_dict(), good)
    trunc.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(ModelFormatError, match="weights only"):
        load_cellpose_model(trunc)


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_file_with_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil"
    torch.save({"x": _Evil()}, path)
    with pytest.raises(ModelFormatError, match="weights only"):
        load_cellpose_model(path)
    assert "code ran" not in capsys.readouterr().out


def test_shape_mismatch_refused(tmp_path):
    sd = CPnet([2, 16, 32, 64, 128]).state_dict()
    sd["upsample.up.res_up_1.conv.conv_1.full.weight"] = torch.zeros(5, 5)
    path = tmp_path / "bad_shapes"
    torch.save(sd, path)
    with pytest.raises(ModelFormatError, match="does not match a CPnet"):
        load_cellpose_model(path)


def test_unrelated_state_dict_refused(tmp_path):
    path = tmp_path / "resnet"
    torch.save({"conv1.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(ModelFormatError, match="not a Cellpose 3 CPnet"):
        load_cellpose_model(path)


def test_export_rejects_low_opset(cellpose_file, tmp_path):
    with pytest.raises(ValueError, match="opset"):
        export_cellpose(cellpose_file[0], tmp_path / "x.onnx", opset=13)


def test_readme_states_the_export_check_as_implemented():
    """README's sentence on the export check names the tolerance the code applies."""
    import inspect
    from pathlib import Path

    from nucseg_rt_export.onnx_export import RTOL, VERIFY_SHAPES, export_cellpose

    atol = inspect.signature(export_cellpose).parameters["atol"].default
    text = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    sizes = {1: "one", 2: "two", 3: "three", 4: "four"}[len(VERIFY_SHAPES)]
    assert f"on random inputs of {sizes} sizes" in text
    def sci(v):  # 1e-4, as the README writes it
        return f"{v:.0e}".replace("e-0", "e-")

    assert f"within {sci(atol)} plus {sci(RTOL)} times the largest output on that input" in text
