"""Model registry: named ONNX models, stored with their sha256 and re-checked on every load.

Two places hold models:

- the bundled models shipped in the ``nucseg_rt_models`` package (``nuclei_3d``),
  listed in that package's ``index.json``;
- the user registry folder: ``$NUCSEG_RT_HOME`` or the platform's user data folder
  (``$XDG_DATA_HOME/nucseg-rt`` on Linux, ``~/Library/Application Support/nucseg-rt``
  on macOS, ``%LOCALAPPDATA%\\nucseg-rt`` on Windows), with ``index.json`` and ``models/``.

``index.json`` (both places; file names relative to the folder holding it)::

    {"format": 1,
     "models": {"NAME": {"file": "models/NAME.<sha12>.onnx", "sha256": "...", "size": 123,
                         "ortho_file": "models/NAME.ortho.<sha12>.onnx" or null,
                         "ortho_sha256": "..." or null, "source": "...", "added": "ISO time",
                         "metadata": {...},
                         "variants": {"int8": {"file": "...", "sha256": "...",
                                               "ortho_file": null, "ortho_sha256": null}}}}}

A file name carries the start of its hash, so replacing a model never rewrites a file
that the index still points to.

A Cellpose 3 model file is converted on the way in only by a converter the caller passes
(``add_model(..., convert=...)``; ``nucseg-rt add-model`` passes the export tool's): this module
never imports the export tool or PyTorch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from nucseg_rt.errors import (InvalidInputError, ModelFormatError, ModelIntegrityError,
                              ModelNotFoundError)
from nucseg_rt.io import atomic_write
from nucseg_rt.params import file_precision as runs_file_of
from nucseg_rt.models.modelfile import (existing_model_file, inspect_model, is_torch_file,
                                        ortho_partner, read_metadata, sha256_file,
                                        validate_onnx_model)

__all__ = ["BUNDLED_DEFAULT", "PRECISIONS", "ResolvedModel", "ModelFiles", "ModelRecord",
           "Converter", "registry_home", "resolve_model", "add_model", "add_variant",
           "remove_model", "list_models", "model_info", "verify_model", "write_bundled_index",
           "with_article"]

BUNDLED_DEFAULT = "nuclei_3d"
PRECISIONS = ("fp32", "int8", "fp16")
INDEX_FORMAT = 1
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

#: Converts a Cellpose 3 model file to ONNX: ``convert(src, out, *, ortho=None)`` writes ``out``
#: and, given ``ortho`` (a Cellpose file for the ZY/ZX planes), the ortho network beside it,
#: named in ``out``'s metadata. ``nucseg_rt_export.onnx_export.export_cellpose`` is one.
Converter = Callable[..., object]


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load: files found, hashes checked, metadata read.

    ``sha256`` is the hash of ``path`` (the file for the requested precision).
    """

    name: str
    path: Path
    ortho_path: Path | None
    metadata: dict[str, str]
    ortho_metadata: dict[str, str] | None
    sha256: str
    bundled: bool


@dataclass(frozen=True)
class ModelFiles:
    """One precision of a registered model: its file, its ortho partner and their hashes."""

    path: Path
    sha256: str
    ortho_path: Path | None = None
    ortho_sha256: str | None = None


@dataclass(frozen=True)
class ModelRecord:
    """One registry entry (as listed by ``list_models`` and ``model_info``).

    ``files`` is the model as added, in ``precision`` ("fp32", or "int8"/"fp16" for a model
    that was added already quantized); ``variants`` maps further precisions to their files.
    """

    name: str
    files: ModelFiles
    size: int
    source: str
    added: str
    metadata: dict[str, str] = field(default_factory=dict)
    variants: dict[str, ModelFiles] = field(default_factory=dict)
    bundled: bool = False
    precision: str = "fp32"

    @property
    def precisions(self) -> list[str]:
        """The precisions this model runs in: its own, then its variants'."""
        return [self.precision, *(p for p in self.variants if p != self.precision)]


# --- locations and index files -----------------------------------------------------------


def registry_home(home: str | os.PathLike | None = None) -> Path:
    """The user registry folder: ``home``, else ``$NUCSEG_RT_HOME``, else the platform default."""
    if home is not None:
        return Path(home)
    if os.environ.get("NUCSEG_RT_HOME"):
        return Path(os.environ["NUCSEG_RT_HOME"]).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        xdg = os.environ.get("XDG_DATA_HOME", "")
        base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".local" / "share"
    return base / "nucseg-rt"


def _bundled_root() -> Path:
    from importlib.resources import files

    return Path(str(files("nucseg_rt_models")))


def _read_index(root: Path) -> dict:
    path = root / "index.json"
    if not path.exists():
        return {"format": INDEX_FORMAT, "models": {}}
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(index.get("models"), dict):
            raise ValueError("no 'models' table")
    except (ValueError, AttributeError) as exc:
        raise InvalidInputError(f"registry index {path} is damaged ({exc}); restore it from a "
                                f"backup, or delete it and add the models again") from exc
    if index.get("format", INDEX_FORMAT) > INDEX_FORMAT:
        raise InvalidInputError(f"registry index {path} was written by a newer nucseg-rt "
                                f"(format {index['format']}); upgrade nucseg-rt")
    return index


def _write_index(root: Path, index: dict) -> None:
    text = json.dumps(index, indent=2, sort_keys=True) + "\n"
    with atomic_write(root / "index.json") as fh:
        fh.write(text.encode("utf-8"))


def _files(entry: dict, root: Path) -> ModelFiles:
    ortho = entry.get("ortho_file")
    return ModelFiles(root / entry["file"], entry["sha256"],
                      root / ortho if ortho else None, entry.get("ortho_sha256"))


def _record(name: str, entry: dict, root: Path, bundled: bool) -> ModelRecord:
    variants = {p: _files(v, root) for p, v in entry.get("variants", {}).items()}
    metadata = dict(entry.get("metadata", {}))
    precision = entry.get("precision") or metadata.get("precision") or "fp32"
    return ModelRecord(name, _files(entry, root), entry.get("size", 0), entry.get("source", ""),
                       entry.get("added", ""), metadata, variants, bundled, precision)


def _records(root: Path, bundled: bool) -> dict[str, ModelRecord]:
    return {name: _record(name, entry, root, bundled)
            for name, entry in _read_index(root)["models"].items()}


def list_models(*, home: str | os.PathLike | None = None) -> list[ModelRecord]:
    """All registered models: the bundled ones first, then the user's, by name."""
    user = _records(registry_home(home), False)
    return list(_records(_bundled_root(), True).values()) + [user[n] for n in sorted(user)]


def model_info(name: str, *, home: str | os.PathLike | None = None) -> ModelRecord:
    """The registry entry for ``name``; ModelNotFoundError listing the names if unknown."""
    records = {r.name: r for r in list_models(home=home)}
    if name not in records:
        raise ModelNotFoundError(_unknown_name(name, records))
    return records[name]


def _unknown_name(name: str, records) -> str:
    prefix = (f"the bundled model {name!r} is not included in this installation"
              if name == BUNDLED_DEFAULT else f"unknown model name {name!r}")
    return (f"{prefix}; available: {', '.join(sorted(records)) or 'none'} "
            f"(add one with `nucseg-rt add-model FILE --name NAME`)")


# --- resolving a model for inference -------------------------------------------------------


def resolve_model(spec: str | os.PathLike, *, ortho: str | os.PathLike | None = None,
                  precision: Literal["fp32", "int8", "fp16", "bf16"] = "fp32",
                  home: str | os.PathLike | None = None) -> ResolvedModel:
    """Find the ONNX file(s) for a registered model name or a path, checked and described.

    Parameters
    ----------
    spec : str or os.PathLike
        A registered name (e.g. ``"nuclei_3d"``) or the path of an ``.onnx`` file. A path's
        ortho partner named in its metadata (``ortho_file``) is used when it sits in the
        same folder; it must match the metadata's ``ortho_sha256``.
    ortho : str or os.PathLike, optional
        Model for the ZY/ZX planes (name or path), replacing the registered/paired one.
    precision : {"fp32", "int8", "fp16", "bf16"}
        Which variant of a registered model to use (bf16: the fp32 file).
    home : path, optional
        User registry folder (default: ``registry_home()``).

    Raises
    ------
    ModelNotFoundError
        Unknown name (the message lists the available ones) or missing file.
    ModelIntegrityError
        A registered file changed since it was added.
    ModelFormatError
        Not a usable ONNX segmentation model.
    InvalidInputError
        Unknown precision, or no variant for it (the message names ``nucseg-rt quantize``).
    """
    precision = runs_file_of(precision)  # bf16 runs the fp32 file
    if precision not in PRECISIONS:
        raise InvalidInputError(f"`precision` must be one of {PRECISIONS}, got {precision!r}")
    record = _lookup(spec, home)
    if record is None:
        path = existing_model_file(spec)
        metadata, nchan = inspect_model(path)
        file_precision = metadata.get("precision", "fp32")
        if precision != file_precision:
            if file_precision != "fp32":
                raise InvalidInputError(f"{path.name} is a {file_precision} model; ask for "
                                        f"precision {file_precision!r} to run it")
            raise InvalidInputError(
                f"precision {precision!r} needs a registered model with "
                f"{with_article(precision)} variant; register {path.name} with "
                f"`nucseg-rt add-model`, then run "
                f"`nucseg-rt quantize NAME`")
        name, sha, bundled = path.stem, sha256_file(path), False
        ortho_path = ortho_partner(path, metadata) if ortho is None else None
    else:
        name, bundled = record.name, record.bundled
        files = _verified(_precision_files(record, precision), record)
        path, sha, ortho_path = files.path, files.sha256, files.ortho_path
        metadata, nchan = inspect_model(path)
    if ortho is not None:
        ortho_path = _resolve_ortho(ortho, home)
    ortho_metadata = None
    if ortho_path is not None:
        ortho_metadata, ortho_nchan = inspect_model(ortho_path)
        if ortho_nchan != nchan:
            raise ModelFormatError(f"ortho model {ortho_path} has {ortho_nchan} input channels, "
                                   f"main model {path} has {nchan}")
    return ResolvedModel(name, path, ortho_path, metadata, ortho_metadata, sha, bundled)


def _lookup(spec: str | os.PathLike, home) -> ModelRecord | None:
    """The record a name refers to; None when ``spec`` is a path."""
    if not isinstance(spec, str):
        return None
    records = {**_records(registry_home(home), False), **_records(_bundled_root(), True)}
    if spec in records:
        return records[spec]
    if spec.endswith(".onnx") or os.sep in spec or "/" in spec or Path(spec).is_file():
        return None
    raise ModelNotFoundError(_unknown_name(spec, records))


def _precision_files(record: ModelRecord, precision: str) -> ModelFiles:
    if precision == record.precision:
        return record.files
    if precision == "fp32":
        raise InvalidInputError(f"model {record.name!r} was added as "
                                f"{with_article(record.precision)} model "
                                f"and has no fp32 version; run it with `precision` "
                                f"{record.precision!r}")
    if precision not in record.variants:
        flag = "" if precision == "int8" else f" --precision {precision}"
        raise InvalidInputError(f"model {record.name!r} has no {precision} variant; create it "
                                f"with `nucseg-rt quantize {record.name}{flag}`")
    return record.variants[precision]


def verify_model(record: ModelRecord) -> None:
    """Re-hash every file of a registry entry (all precisions, ortho partners included).

    Raises ModelNotFoundError for a missing file, ModelIntegrityError for a changed one.
    """
    for files in (record.files, *record.variants.values()):
        _verified(files, record)


def _verified(files: ModelFiles, record: ModelRecord) -> ModelFiles:
    """``files`` after checking that each file exists and still has its recorded sha256."""
    name = record.name
    redo = ("reinstall nucseg-rt" if record.bundled else
            f"add it again with `nucseg-rt add-model FILE --name {name} --force`")
    for path, expected in ((files.path, files.sha256), (files.ortho_path, files.ortho_sha256)):
        if path is None:
            continue
        if not path.is_file():
            raise ModelNotFoundError(f"model {name!r}: file {path} is missing; {redo}")
        actual = sha256_file(path)
        if actual != expected:
            raise ModelIntegrityError(
                f"model {name!r}: {path} changed since it was registered (sha256 "
                f"{actual[:12]}..., recorded {str(expected)[:12]}...); refusing to load it; {redo}")
    return files


def _resolve_ortho(ortho: str | os.PathLike, home) -> Path:
    record = _lookup(ortho, home)
    if record is None:
        return existing_model_file(ortho)
    return _verified(ModelFiles(record.files.path, record.files.sha256), record).path


# --- adding and removing ----------------------------------------------------------------------


def with_article(precision: str) -> str:
    """'an int8' / 'a fp16': the article for a precision name."""
    return f"an {precision}" if precision[0] in "aeiou" else f"a {precision}"


def _validate_name(name: str, reserved, from_file: bool = False) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidInputError(f"`name` must be a non-empty string, got {name!r}")
    if "/" in name or "\\" in name or ".." in name:
        raise InvalidInputError(f"`name` must not contain path separators or '..', got {name!r}")
    if not _NAME_RE.fullmatch(name) or name.endswith(".onnx"):
        raise InvalidInputError(
            f"`name` must be 1-64 letters, digits, '.', '_' or '-', start with a letter or digit "
            f"and not end in '.onnx', got {name!r}")
    if name in reserved:
        if from_file:
            raise InvalidInputError(f"the file's name {name!r} is reserved for a bundled model; "
                                    f"register it under another one with `name`")
        raise InvalidInputError(f"`name` {name!r} is reserved for a bundled model; choose another")
    return name


def add_model(file: str | os.PathLike, *, name: str | None = None,
              ortho: str | os.PathLike | None = None, force: bool = False,
              home: str | os.PathLike | None = None,
              convert: Converter | None = None) -> ModelRecord:
    """Validate a model file and copy it (and its ortho partner) into the user registry.

    Parameters
    ----------
    file : path
        An ONNX model, or a Cellpose 3 model file (detected by content), converted on the
        way in by ``convert``.
    name : str, optional
        Registry name; default the file name without ``.onnx``.
    ortho : path, optional
        Model for ZY/ZX planes (ONNX or Cellpose); default the partner named in the
        model's metadata, if it sits next to it.
    force : bool
        Replace an existing model of that name.
    home : path, optional
        User registry folder (default: ``registry_home()``).
    convert : Converter, optional
        Converts Cellpose files to ONNX, e.g. ``nucseg_rt_export.onnx_export.export_cellpose``
        (needs ``pip install 'nucseg-rt[export]'``); without it a Cellpose file is refused.

    Returns
    -------
    ModelRecord
        The new entry.
    """
    src = existing_model_file(file)
    name = _validate_name(src.name.removesuffix(".onnx") if name is None else name,
                          reserved={BUNDLED_DEFAULT, *_records(_bundled_root(), True)},
                          from_file=name is None)
    root = registry_home(home)
    index = _read_index(root)
    clash = [n for n in index["models"] if n.lower() == name.lower()]
    if clash and not force:
        raise InvalidInputError(f"a model named {clash[0]!r} is already registered; use "
                                f"--force to replace it")
    (root / "models").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".incoming-") as work:
        main, ortho_src = _as_onnx(src, ortho, Path(work), convert)
        nchan = validate_onnx_model(main)
        metadata = read_metadata(main)
        ortho_src = ortho_src or ortho_partner(main, metadata)
        if ortho_src is not None and validate_onnx_model(ortho_src) != nchan:
            raise ModelFormatError(f"ortho model {ortho_src} and {src} differ in input channels")
        entry = {"source": str(src.resolve()), "metadata": metadata, "variants": {},
                 "precision": metadata.get("precision", "fp32"),
                 "added": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "ortho_file": None, "ortho_sha256": None}
        entry["file"], entry["sha256"], entry["size"] = _copy_in(main, root, name)
        if ortho_src is not None:
            entry["ortho_file"], entry["ortho_sha256"], _ = _copy_in(ortho_src, root,
                                                                     f"{name}.ortho")
    replaced = [index["models"].pop(n) for n in clash]
    index["models"][name] = entry
    _write_index(root, index)
    _delete_unused(root, replaced, index)
    return _record(name, entry, root, False)


def add_variant(name: str, precision: Literal["int8", "fp16"], file: str | os.PathLike, *,
                ortho: str | os.PathLike | None = None, force: bool = False,
                home: str | os.PathLike | None = None) -> ModelRecord:
    """Register ``file`` (and its ortho partner) as the ``precision`` variant of model ``name``.

    The fp32 entry must already be in the user registry; bundled models ship their variants.
    ``force`` replaces an existing variant. Returns the updated entry.
    """
    if precision not in PRECISIONS[1:]:
        raise InvalidInputError(f"`precision` must be one of {PRECISIONS[1:]}, got {precision!r}")
    if name in _records(_bundled_root(), True):
        raise InvalidInputError(f"{name!r} is a bundled model; its variants ship with nucseg-rt")
    root = registry_home(home)
    index = _read_index(root)
    if name not in index["models"]:
        raise ModelNotFoundError(_unknown_name(name, index["models"]))
    entry = index["models"][name]
    old = entry.setdefault("variants", {}).get(precision)
    if old is not None and not force:
        raise InvalidInputError(f"model {name!r} already has {with_article(precision)} variant; "
                                f"use --force to replace it")
    src = existing_model_file(file)
    nchan = validate_onnx_model(src)
    if str(nchan) != str(entry.get("metadata", {}).get("nchan", nchan)):
        raise ModelFormatError(f"{src} takes {nchan} channels, model {name!r} takes "
                               f"{entry['metadata']['nchan']}")
    variant = {"ortho_file": None, "ortho_sha256": None}
    variant["file"], variant["sha256"], _ = _copy_in(src, root, f"{name}.{precision}")
    if ortho is not None:
        ortho = existing_model_file(ortho)
        if validate_onnx_model(ortho) != nchan:
            raise ModelFormatError(f"ortho model {ortho} and {src} differ in input channels")
        variant["ortho_file"], variant["ortho_sha256"], _ = _copy_in(
            ortho, root, f"{name}.{precision}.ortho")
    entry["variants"][precision] = variant
    _write_index(root, index)
    if old is not None:
        _delete_unused(root, [{"variants": {precision: old}}], index)
    return _record(name, entry, root, False)


def _as_onnx(src: Path, ortho, work: Path, convert: Converter | None) -> tuple[Path, Path | None]:
    """ONNX paths for ``src`` and ``ortho``, converting Cellpose files into ``work``."""
    ortho = existing_model_file(ortho) if ortho is not None else None
    ortho_is_torch = ortho is not None and is_torch_file(ortho)
    if is_torch_file(src):
        out = work / f"{src.stem}.onnx"
        _converter(convert, src)(src, out, ortho=ortho if ortho_is_torch else None)
        return out, (ortho_partner(out, read_metadata(out)) if ortho_is_torch else ortho)
    if ortho_is_torch:
        _converter(convert, ortho)(ortho, work / "ortho.onnx")
        return src, work / "ortho.onnx"
    return src, ortho


def _converter(convert: Converter | None, path: Path) -> Converter:
    if convert is None:
        raise ModelFormatError(
            f"{path} is a PyTorch/Cellpose model file, not ONNX; pass `convert` (e.g. "
            f"nucseg_rt_export.onnx_export.export_cellpose) to convert it on the way in, as "
            f"`nucseg-rt add-model` does")
    return convert


def _copy_in(src: Path, root: Path, stem: str) -> tuple[str, str, int]:
    """Copy ``src`` to ``models/<stem>.<sha12>.onnx``; return (relative name, sha256, size)."""
    sha = sha256_file(src)
    relative = f"models/{stem}.{sha[:12]}.onnx"
    dest = root / relative
    if not (dest.is_file() and sha256_file(dest) == sha):
        digest = hashlib.sha256()
        with open(src, "rb") as fin, atomic_write(dest) as fout:
            for chunk in iter(lambda: fin.read(1 << 20), b""):
                digest.update(chunk)
                fout.write(chunk)
            if digest.hexdigest() != sha:
                raise ModelIntegrityError(f"{src} changed while it was being copied; try again")
    return relative, sha, dest.stat().st_size


def _entry_files(entry: dict) -> set[str]:
    parts = [entry, *entry.get("variants", {}).values()]
    return {p[key] for p in parts for key in ("file", "ortho_file") if p.get(key)}


def _delete_unused(root: Path, removed: list[dict], index: dict) -> None:
    """Delete the files of removed entries that no remaining entry uses."""
    used = set().union(*(_entry_files(e) for e in index["models"].values()))
    for entry in removed:
        for relative in _entry_files(entry) - used:
            with contextlib.suppress(FileNotFoundError):
                (root / relative).unlink()


def remove_model(name: str, *, home: str | os.PathLike | None = None) -> ModelRecord:
    """Remove a model and its files from the user registry; return the removed entry."""
    bundled = _records(_bundled_root(), True)
    if name in bundled or name == BUNDLED_DEFAULT:
        raise InvalidInputError(f"{name!r} is a bundled model and cannot be removed")
    root = registry_home(home)
    index = _read_index(root)
    if name not in index["models"]:
        raise ModelNotFoundError(_unknown_name(name, {**index["models"], **bundled}))
    entry = index["models"].pop(name)
    _write_index(root, index)
    _delete_unused(root, [entry], index)
    return _record(name, entry, root, False)


def write_bundled_index(folder: str | os.PathLike | None = None) -> dict:
    """Maintainers: rewrite the bundled ``index.json`` from the ``*.onnx`` files beside it.

    Each main model ``NAME.onnx`` (metadata role not "ortho", no ".int8"/".fp16" suffix)
    gets an entry with its sha256; its ortho partner comes from its metadata. Variants are
    the files ``NAME.<precision>.onnx`` (and ``NAME.<precision>.ortho.onnx``) beside it.
    Returns the index written.
    """
    root = Path(folder) if folder is not None else _bundled_root()
    old = _read_index(root)["models"]
    models = {}
    for path in sorted(root.glob("*.onnx")):
        metadata, _ = inspect_model(path)
        stem = path.name.removesuffix(".onnx")
        if metadata.get("role") == "ortho" or stem.rsplit(".", 1)[-1] in PRECISIONS:
            continue
        partner = ortho_partner(path, metadata)
        variants = {}
        for precision in PRECISIONS[1:]:
            file = root / f"{stem}.{precision}.onnx"
            if file.is_file():
                ortho_file = root / f"{stem}.{precision}.ortho.onnx"
                variants[precision] = _hashed(root, file.name,
                                              ortho_file.name if ortho_file.is_file() else None)
        models[stem] = {
            **_hashed(root, path.name, partner.name if partner else None),
            "size": path.stat().st_size, "source": "bundled", "metadata": metadata,
            "added": old.get(stem, {}).get("added", ""), "variants": variants}
    index = {"format": INDEX_FORMAT, "models": models}
    _write_index(root, index)
    return index


def _hashed(root: Path, file: str, ortho_file: str | None) -> dict:
    return {"file": file, "sha256": sha256_file(root / file), "ortho_file": ortho_file,
            "ortho_sha256": sha256_file(root / ortho_file) if ortho_file else None}
