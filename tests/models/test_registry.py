"""nucseg_rt.models.registry and nucseg_rt.models.modelfile: model files checked, registered, re-checked."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import MODELS
from nucseg_rt.models import modelfile
from nucseg_rt.models import registry
from nucseg_rt.errors import (InvalidInputError, MissingDependencyError, ModelFormatError,
                              ModelIntegrityError, ModelNotFoundError)

MODELS_DIR = MODELS


def _flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.fixture
def bundled(tmp_path, monkeypatch, tiny_onnx_factory):
    """A fake bundled-models folder holding nuclei_3d (+ ortho) and its index."""
    folder = tmp_path / "bundled"
    folder.mkdir()
    ortho = tiny_onnx_factory(folder / "nuclei_3d.ortho.onnx", role="ortho", flow_gain=10.0)
    tiny_onnx_factory(folder / "nuclei_3d.onnx", ortho_file=ortho.name,
                      ortho_sha256=modelfile.sha256_file(ortho))
    registry.write_bundled_index(folder)
    monkeypatch.setattr(registry, "_bundled_root", lambda: folder)
    return folder


# --- registry folder ---------------------------------------------------------------------------


def test_home_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("NUCSEG_RT_HOME", str(tmp_path / "env"))
    assert registry.registry_home(tmp_path / "explicit") == tmp_path / "explicit"
    assert registry.registry_home() == tmp_path / "env"


@pytest.mark.parametrize("platform, env, expected", [
    ("linux", {"XDG_DATA_HOME": "/data/x"}, "/data/x/nucseg-rt"),
    ("linux", {"XDG_DATA_HOME": "relative/ignored"}, "~/.local/share/nucseg-rt"),
    ("linux", {}, "~/.local/share/nucseg-rt"),
    ("darwin", {}, "~/Library/Application Support/nucseg-rt"),
    ("win32", {"LOCALAPPDATA": "/appdata/local"}, "/appdata/local/nucseg-rt"),
])
def test_home_platform_default(monkeypatch, platform, env, expected):
    monkeypatch.delenv("NUCSEG_RT_HOME")
    for key in ("XDG_DATA_HOME", "LOCALAPPDATA"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "platform", platform)
    assert registry.registry_home() == Path(expected).expanduser()


# --- model files ---------------------------------------------------------------------------------


def test_read_metadata(tiny_onnx_model):
    meta = registry.read_metadata(tiny_onnx_model)
    assert meta["diam_mean"] == "30.0" and meta["nchan"] == "2" and meta["role"] == "main"


@pytest.mark.parametrize("content, match", [
    (b"", "not an ONNX model|not a readable ONNX"),
    (b"this is a text file, not a model\n" * 10, "not an ONNX model|not a readable ONNX"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "not an ONNX model|not a readable ONNX"),
], ids=["empty", "text", "binary"])
def test_read_metadata_non_onnx(tmp_path, content, match):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(ModelFormatError, match=match):
        registry.read_metadata(path)


def test_read_metadata_truncated(tmp_path, tiny_onnx_model):
    path = tmp_path / "cut.onnx"
    path.write_bytes(tiny_onnx_model.read_bytes()[:1500])
    with pytest.raises(ModelFormatError):
        registry.read_metadata(path)


def test_torch_file_is_named(tmp_path):
    path = tmp_path / "cellpose_model"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
    assert modelfile.is_torch_file(path)
    with pytest.raises(ModelFormatError, match="PyTorch/Cellpose model file.*export-cellpose"):
        registry.read_metadata(path)


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelNotFoundError, match="model file not found"):
        registry.read_metadata(tmp_path / "none.onnx")


def test_validate_good_model(tiny_onnx_model):
    assert registry.validate_onnx_model(tiny_onnx_model) == 2


def test_validate_one_channel_model(tmp_path, tiny_onnx_factory):
    assert registry.validate_onnx_model(tiny_onnx_factory(tmp_path / "m.onnx", nchan=1)) == 1


@pytest.mark.parametrize("kwargs, match", [
    ({"nchan": 3}, "model input has 3 channels; nucseg-rt runs models with 1 or 2"),
    ({"metadata": {"nchan": "1"}}, "model input has 2 channels but its metadata says nchan=1"),
    ({"metadata": {"diam_mean": ""}}, "needs 'diam_mean' > 0"),
    ({"metadata": {"diam_mean": "-3"}}, "needs 'diam_mean' > 0"),
    ({"metadata": {"diam_mean": "thirty"}}, "'diam_mean' must be a number, found 'thirty'"),
    ({"metadata": {"nchan": "2.5"}}, "'nchan' must be a whole number, found '2.5'"),
], ids=["3-channels", "nchan-mismatch", "no-diam", "negative-diam", "text-diam", "half-nchan"])
def test_validate_rejects_bad_models(tmp_path, tiny_onnx_factory, kwargs, match):
    path = tiny_onnx_factory(tmp_path / "m.onnx", **kwargs)
    with pytest.raises(ModelFormatError, match=match):
        registry.validate_onnx_model(path)


def test_validate_needs_a_channel_count(tmp_path, tiny_onnx_factory):
    import onnx

    model = onnx.load(str(tiny_onnx_factory(tmp_path / "m.onnx", metadata={"nchan": ""})))
    model.graph.input[0].type.tensor_type.shape.dim[1].dim_param = "C"
    onnx.save(model, str(tmp_path / "dynamic.onnx"))
    with pytest.raises(ModelFormatError, match="cannot tell the number of input channels"):
        registry.validate_onnx_model(tmp_path / "dynamic.onnx")


def test_validate_rejects_wrong_outputs(tmp_path, tiny_onnx_model):
    import onnx

    model = onnx.load(str(tiny_onnx_model))
    model.graph.output[0].name = "flow"  # renamed output: not our interface
    model.graph.node[1].output[0] = "flow"
    path = tmp_path / "renamed.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelFormatError, match=r"must include 'flows' and 'cellprob', found \['flow'"):
        registry.validate_onnx_model(path)


def test_validate_rejects_wrong_output_shape(tmp_path, tiny_onnx_model):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(tiny_onnx_model))
    split = next(i for i in model.graph.initializer if i.name == "split")
    split.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(split)[::-1].copy(), "split"))
    for out in model.graph.output:
        out.type.tensor_type.shape.dim[1].dim_param = "C"  # let the graph itself be consistent
    path = tmp_path / "swapped.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ModelFormatError, match=r"must return flows \(1, 2, 64, 64\).*found"):
        registry.validate_onnx_model(path)


def user_models() -> list:
    """Names of the models a user added (the bundled one is always listed too)."""
    return [r.name for r in registry.list_models() if not r.bundled]


# --- add / list / info / remove ----------------------------------------------------------------------


def test_roundtrip(tiny_onnx_model, _isolated_registry):
    rec = registry.add_model(tiny_onnx_model, name="mine")
    assert rec.files.path.is_file() and rec.files.path.parent == _isolated_registry / "models"
    assert rec.files.sha256 == modelfile.sha256_file(tiny_onnx_model)
    assert rec.metadata["diam_mean"] == "30.0" and rec.files.ortho_path is None
    assert user_models() == ["mine"]
    assert registry.model_info("mine") == rec
    index = json.loads((_isolated_registry / "index.json").read_text())
    assert index["format"] == 1 and index["models"]["mine"]["variants"] == {}

    resolved = registry.resolve_model("mine")
    assert (resolved.name, resolved.path, resolved.bundled) == ("mine", rec.files.path, False)
    assert resolved.sha256 == rec.files.sha256 and resolved.ortho_path is None

    removed = registry.remove_model("mine")
    assert removed.name == "mine" and not rec.files.path.exists()
    assert user_models() == []
    assert list((_isolated_registry / "models").iterdir()) == []


def test_default_name_is_file_name(tiny_onnx_model):
    assert registry.add_model(tiny_onnx_model).name == "tiny"


def test_pair_registered_together(tiny_onnx_pair):
    rec = registry.add_model(tiny_onnx_pair, name="pair")
    assert rec.files.ortho_path is not None and rec.files.ortho_path.is_file()
    resolved = registry.resolve_model("pair")
    assert resolved.ortho_path == rec.files.ortho_path
    assert resolved.ortho_metadata["role"] == "ortho"


def test_explicit_ortho(tiny_onnx_model, tiny_onnx_pair):
    ortho = tiny_onnx_pair.with_name("pair.ortho.onnx")
    rec = registry.add_model(tiny_onnx_model, name="withortho", ortho=ortho)
    assert rec.files.ortho_sha256 == modelfile.sha256_file(ortho)


def test_ortho_channel_mismatch(tmp_path, tiny_onnx_model, tiny_onnx_factory):
    ortho = tiny_onnx_factory(tmp_path / "one.onnx", nchan=1)
    with pytest.raises(ModelFormatError, match="differ in input channels"):
        registry.add_model(tiny_onnx_model, name="x", ortho=ortho)


@pytest.mark.parametrize("name, match", [
    ("", "non-empty"),
    ("a/b", "path separators"),
    ("a\\b", "path separators"),
    ("..", r"path separators or '\.\.'"),
    ("up..dir", r"'\.\.'"),
    ("-dash", "start with a letter or digit"),
    ("sp ace", "letters, digits"),
    ("x" * 65, "1-64"),
    ("model.onnx", "not end in '.onnx'"),
    ("nuclei_3d", "reserved"),
])
def test_name_validation(tiny_onnx_model, name, match):
    with pytest.raises(InvalidInputError, match=match):
        registry.add_model(tiny_onnx_model, name=name)
    assert user_models() == []


def test_no_overwrite_without_force(tiny_onnx_model, tiny_onnx_pair, _isolated_registry):
    first = registry.add_model(tiny_onnx_model, name="m")
    for name in ("m", "M"):  # case-insensitive file systems would collide
        with pytest.raises(InvalidInputError, match="already registered.*--force"):
            registry.add_model(tiny_onnx_pair, name=name)
    assert registry.model_info("m") == first
    second = registry.add_model(tiny_onnx_pair, name="m", force=True)
    assert second.files.sha256 != first.files.sha256
    assert not first.files.path.exists()  # replaced file deleted
    assert sorted(p.name for p in (_isolated_registry / "models").iterdir()) == sorted(
        [second.files.path.name, second.files.ortho_path.name])


def test_unknown_name_lists_available(tiny_onnx_model):
    registry.add_model(tiny_onnx_model, name="alpha")
    registry.add_model(tiny_onnx_model, name="beta")
    for call in (registry.resolve_model, registry.model_info, registry.remove_model):
        with pytest.raises(ModelNotFoundError, match="unknown model name 'gamma'; available: alpha, beta"):
            call("gamma")


def test_missing_bundled_model_is_explained(tmp_path, monkeypatch):
    empty = tmp_path / "no_models"
    empty.mkdir()
    monkeypatch.setattr(registry, "_bundled_root", lambda: empty)
    with pytest.raises(ModelNotFoundError, match="bundled model 'nuclei_3d' is not included"):
        registry.resolve_model("nuclei_3d")


def test_damaged_index(_isolated_registry, tiny_onnx_model):
    (_isolated_registry / "index.json").write_text("{not json")
    with pytest.raises(InvalidInputError, match="registry index .* is damaged"):
        registry.list_models()
    with pytest.raises(InvalidInputError, match="is damaged"):
        registry.add_model(tiny_onnx_model)


# --- integrity ---------------------------------------------------------------------------------------


def test_tampered_model_is_refused(tiny_onnx_model):
    rec = registry.add_model(tiny_onnx_model, name="m")
    _flip_last_byte(rec.files.path)
    with pytest.raises(ModelIntegrityError, match="'m'.*changed since it was registered"):
        registry.resolve_model("m")


def test_tampered_ortho_is_refused(tiny_onnx_pair):
    rec = registry.add_model(tiny_onnx_pair, name="p")
    _flip_last_byte(rec.files.ortho_path)
    with pytest.raises(ModelIntegrityError, match="changed since it was registered"):
        registry.resolve_model("p")


def test_verify_model(tiny_onnx_pair):
    rec = registry.add_model(tiny_onnx_pair, name="p")
    registry.verify_model(rec)
    _flip_last_byte(rec.files.ortho_path)
    with pytest.raises(ModelIntegrityError):
        registry.verify_model(registry.model_info("p"))


def test_deleted_model_file(tiny_onnx_model):
    rec = registry.add_model(tiny_onnx_model, name="m")
    rec.files.path.unlink()
    with pytest.raises(ModelNotFoundError, match="is missing.*--force"):
        registry.resolve_model("m")


# --- resolving paths and precisions ------------------------------------------------------------------


def test_resolve_path_picks_up_partner(tiny_onnx_pair):
    resolved = registry.resolve_model(tiny_onnx_pair)
    assert resolved.name == "pair" and resolved.ortho_path == tiny_onnx_pair.with_name("pair.ortho.onnx")
    assert registry.resolve_model(str(tiny_onnx_pair)).ortho_path == resolved.ortho_path


def test_resolve_path_without_partner_file(tmp_path, tiny_onnx_pair):
    lonely = tmp_path / "pair.onnx"
    shutil.copy(tiny_onnx_pair, lonely)
    assert registry.resolve_model(lonely).ortho_path is None


def test_resolve_path_partner_sha_mismatch(tmp_path, tiny_onnx_pair, tiny_onnx_factory):
    shutil.copy(tiny_onnx_pair, tmp_path / "pair.onnx")
    tiny_onnx_factory(tmp_path / "pair.ortho.onnx", role="ortho", flow_gain=1.0)  # another file
    with pytest.raises(ModelIntegrityError, match="does not match the ortho_sha256"):
        registry.resolve_model(tmp_path / "pair.onnx")


def test_resolve_explicit_ortho_overrides(tiny_onnx_pair, tiny_onnx_model):
    resolved = registry.resolve_model(tiny_onnx_pair, ortho=tiny_onnx_model)
    assert resolved.ortho_path == tiny_onnx_model
    registry.add_model(tiny_onnx_model, name="o")
    assert registry.resolve_model(tiny_onnx_pair, ortho="o").ortho_path.parent.name == "models"


def test_resolve_missing_path():
    with pytest.raises(ModelNotFoundError, match="model file not found"):
        registry.resolve_model("missing/model.onnx")


def test_resolve_wrong_channel_model(tmp_path, tiny_onnx_factory):
    with pytest.raises(ModelFormatError, match="3 channels"):
        registry.resolve_model(tiny_onnx_factory(tmp_path / "m3.onnx", nchan=3))


def test_precision_checks(tiny_onnx_model):
    with pytest.raises(InvalidInputError, match="`precision` must be one of"):
        registry.resolve_model(tiny_onnx_model, precision="int4")
    with pytest.raises(InvalidInputError, match="nucseg-rt quantize NAME"):
        registry.resolve_model(tiny_onnx_model, precision="int8")
    registry.add_model(tiny_onnx_model, name="m")
    with pytest.raises(InvalidInputError, match="no fp16 variant.*`nucseg-rt quantize m --precision fp16`"):
        registry.resolve_model("m", precision="fp16")


def test_variant_resolves_and_is_checked(tmp_path, tiny_onnx_model, tiny_onnx_factory,
                                         _isolated_registry):
    registry.add_model(tiny_onnx_model, name="m")
    variant = tiny_onnx_factory(_isolated_registry / "models" / "m.int8.onnx", flow_gain=5.0)
    index = json.loads((_isolated_registry / "index.json").read_text())
    index["models"]["m"]["variants"]["int8"] = {
        "file": "models/m.int8.onnx", "sha256": modelfile.sha256_file(variant),
        "ortho_file": None, "ortho_sha256": None}
    (_isolated_registry / "index.json").write_text(json.dumps(index))
    resolved = registry.resolve_model("m", precision="int8")
    assert resolved.path == variant and resolved.sha256 == modelfile.sha256_file(variant)
    _flip_last_byte(variant)
    with pytest.raises(ModelIntegrityError):
        registry.resolve_model("m", precision="int8")
    registry.remove_model("m")
    assert not variant.exists()


# --- bundled models ----------------------------------------------------------------------------------


def test_bundled_model(bundled, tiny_onnx_model):
    resolved = registry.resolve_model("nuclei_3d")
    assert resolved.bundled and resolved.path == bundled / "nuclei_3d.onnx"
    assert resolved.ortho_path == bundled / "nuclei_3d.ortho.onnx"
    registry.add_model(tiny_onnx_model, name="aaa")
    assert [r.name for r in registry.list_models()] == ["nuclei_3d", "aaa"]  # bundled first
    with pytest.raises(InvalidInputError, match="bundled model and cannot be removed"):
        registry.remove_model("nuclei_3d")
    with pytest.raises(InvalidInputError, match="reserved"):
        registry.add_model(tiny_onnx_model, name="nuclei_3d")


def test_bundled_model_tamper(bundled):
    _flip_last_byte(bundled / "nuclei_3d.onnx")
    with pytest.raises(ModelIntegrityError, match="reinstall nucseg-rt"):
        registry.resolve_model("nuclei_3d")


def test_write_bundled_index_skips_ortho_and_variants(bundled, tiny_onnx_factory):
    tiny_onnx_factory(bundled / "nuclei_3d.int8.onnx")
    index = registry.write_bundled_index(bundled)
    assert list(index["models"]) == ["nuclei_3d"]
    entry = index["models"]["nuclei_3d"]
    assert entry["ortho_file"] == "nuclei_3d.ortho.onnx" and entry["source"] == "bundled"


def test_shipped_bundled_index_matches_files():
    """models/index.json must list every shipped model with its current sha256.

    After changing a file in models/, run:
    python -c "from nucseg_rt.models import write_bundled_index; write_bundled_index()"
    """
    index = json.loads((MODELS_DIR / "index.json").read_text())
    listed = set()
    for name, entry in index["models"].items():
        for key in ("file", "ortho_file"):
            if entry.get(key):
                listed.add(entry[key])
                assert modelfile.sha256_file(MODELS_DIR / entry[key]) == entry[key.replace(
                    "file", "sha256")], f"{entry[key]} changed; refresh models/index.json"
        for variant in entry.get("variants", {}).values():
            listed.update(v for k, v in variant.items() if k.endswith("file") and v)
    unlisted = {p.name for p in MODELS_DIR.glob("*.onnx")} - listed
    assert not unlisted, f"{sorted(unlisted)} not in models/index.json; refresh it"


# --- Cellpose files and the export extra --------------------------------------------------------------


def test_registry_never_imports_the_export_tool(tmp_path):
    """``import nucseg_rt.models`` and ``add_model`` on a Cellpose file without a converter import
    neither nucseg_rt_export nor torch; the file is refused and nothing is registered."""
    cellpose = tmp_path / "cellpose_model"
    cellpose.write_bytes(b"PK\x03\x04 a zip archive, as torch.save writes")
    code = ("import sys\n"
            "import nucseg_rt.models.registry, nucseg_rt.models\n"
            "from nucseg_rt.errors import ModelFormatError\n"
            "try:\n"
            f"    nucseg_rt.models.add_model({str(cellpose)!r}, home={str(tmp_path / 'home')!r})\n"
            "except ModelFormatError as exc:\n    print(exc)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('nucseg_rt_export', 'torch', 'onnxscript')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    message, imported = out.stdout.strip().splitlines()
    assert "is a PyTorch/Cellpose model file, not ONNX; pass `convert`" in message
    assert imported == "[]"
    assert not (tmp_path / "home" / "index.json").exists()


def test_cellpose_file_goes_through_the_converter(tmp_path, tiny_onnx_model):
    """``convert`` gets the Cellpose file (and a Cellpose ortho file) and the path to write."""
    cellpose = tmp_path / "cp_main"
    cellpose.write_bytes(b"PK\x03\x04")
    calls = []

    def convert(src, out, *, ortho=None):
        calls.append((src.name, out.name, ortho))
        out.write_bytes(tiny_onnx_model.read_bytes())

    rec = registry.add_model(cellpose, home=tmp_path / "home", convert=convert)
    assert calls == [("cp_main", "cp_main.onnx", None)]
    assert rec.name == "cp_main" and rec.source == str(cellpose.resolve())
    assert rec.files.sha256 == modelfile.sha256_file(tiny_onnx_model)
    calls.clear()
    rec = registry.add_model(tiny_onnx_model, name="with_ortho", ortho=cellpose,
                             home=tmp_path / "home", convert=convert)
    assert calls == [("cp_main", "ortho.onnx", None)] and rec.files.ortho_path is not None


def test_cellpose_ortho_without_converter_is_refused(tmp_path, tiny_onnx_model):
    cellpose = tmp_path / "cp_ortho"
    cellpose.write_bytes(b"PK\x03\x04")
    with pytest.raises(ModelFormatError, match="cp_ortho is a PyTorch/Cellpose model file"):
        registry.add_model(tiny_onnx_model, ortho=cellpose, home=tmp_path / "home")
    assert not [r for r in registry.list_models(home=tmp_path / "home") if not r.bundled]


def test_missing_dependency_error_is_an_import_error():
    assert issubclass(MissingDependencyError, ImportError)


def test_bundled_metadata_is_the_recipes():
    """The bundled model carries the calibrated defaults and the measured agreement the recipe
    records for the shipped stage (so a re-export gives the same file metadata)."""
    from nucseg_rt.network.engine import model_agreement
    from nucseg_rt.params import MaskDefaults

    recipe = pytest.importorskip("nucseg_rt_export.recipe")
    meta = registry.model_info("nuclei_3d").metadata
    stage = recipe.SHIPPED_STAGE
    assert MaskDefaults.from_metadata(meta) == MaskDefaults(**recipe.MASK_DEFAULTS[stage])
    assert model_agreement(meta) == recipe.AGREEMENT[stage]
    assert model_agreement(meta)["openvino/bf16"] >= 0.99
