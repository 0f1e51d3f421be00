"""A gallery of labelled embeddings, and matching against it.

Embeddings are unit vectors, so inner product is cosine. Search goes through faiss when it
is installed (the `gallery` extra), else exact NumPy search:

  flat  faiss IndexFlatIP: exact; the default up to `IndexSpec.flat_max` vectors
  ivf   IndexIVFFlat: k-means cells, `nprobe` of them searched; the default above flat_max
        (training takes seconds where HNSW's graph takes minutes at 1e6 vectors)
  hnsw  IndexHNSWFlat: a navigable graph, `ef_search` candidates; no training, slow to build

Saved as `.npz` with plain arrays (loaded with allow_pickle=False): embeddings, labels,
source paths, the model's description and identity (the checkpoint's SHA-256, which every
exported artifact carries), the index choice and, for ivf/hnsw, the serialised faiss index
(a uint8 array), so a large gallery is not retrained on every start. A gallery built with one
model is never matched against another model's embeddings (`check_model`).
"""

from __future__ import annotations

import io
import json
import math
import sys
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from fogreid.errors import FogreidError
from fogreid.fileio import atomic_write

KINDS = ("auto", "flat", "ivf", "hnsw")


@dataclass(frozen=True)
class IndexSpec:
    kind: str = "auto"         # auto | flat | ivf | hnsw
    flat_max: int = 100_000    # auto: exact search up to this many vectors (about 1 ms/query per 1e5 at 512-d)
    nlist: int | None = None   # ivf cells; None: 4 sqrt(N), the usual faiss guideline
    nprobe: int = 32           # ivf cells searched per query: recall vs time
    hnsw_m: int = 32           # hnsw links per node
    ef_construction: int = 40  # hnsw build effort: build time grows with it
    ef_search: int = 128       # hnsw candidates per query: recall vs time
    train_max: int = 50_000    # ivf trains k-means on a random sample of this many (at least 39 per cell)
    train_iterations: int = 10  # ivf k-means iterations (faiss' default is 25): training time grows with it

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise FogreidError(f"--index {self.kind!r}: choose one of {', '.join(KINDS)}")

    def resolve(self, n: int) -> str:
        return self.kind if self.kind != "auto" else ("flat" if n <= self.flat_max else "ivf")


def _faiss():
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def build_index(embeddings: np.ndarray, spec: IndexSpec, seed: int = 0):
    """A faiss index over `embeddings` (N, D) float32 unit rows, or None for exact NumPy search
    (faiss missing and the exact index asked for or chosen)."""
    faiss = _faiss()
    kind = spec.resolve(len(embeddings))
    if faiss is None:
        if kind == "flat":
            return None  # exact NumPy search: the same results, slower on large galleries
        raise FogreidError(f"a {kind} gallery index needs faiss: pip install 'fogreid[gallery]' (faiss-cpu), "
                           f"or use --index flat")
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    d = x.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = spec.ef_construction
        index.hnsw.efSearch = spec.ef_search
    else:
        nlist = spec.nlist or max(1, int(4 * math.sqrt(len(x))))
        nlist = min(nlist, max(1, len(x) // 39))  # faiss wants >= 39 training points per cell
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        size = max(spec.train_max, 39 * nlist)
        sample = x if len(x) <= size else x[np.random.default_rng(seed).choice(len(x), size, replace=False)]
        index.cp.niter = spec.train_iterations
        index.train(sample)
        index.nprobe = min(spec.nprobe, nlist)
    index.add(x)
    return index


@dataclass
class Gallery:
    embeddings: np.ndarray            # (N, D) float32, unit rows
    labels: list[str]
    paths: list[str]
    model: dict = field(default_factory=dict)   # name, input_size (the imgsz), embedding_dim, checkpoint_sha256
    index_spec: IndexSpec = field(default_factory=IndexSpec)
    _index: object = field(default=None, repr=False)
    _index_n: int = field(default=-1, repr=False)    # how many rows the index holds

    @property
    def index_kind(self) -> str:
        return self.index_spec.resolve(len(self.labels))

    def index(self):
        """The search index, built on first use (and after rows were added without it)."""
        if self._index_n != len(self.labels):
            self._index = build_index(self.embeddings, self.index_spec) if len(self.labels) else None
            self._index_n = len(self.labels)
        return self._index

    def add(self, embeddings: np.ndarray, labels: list[str], paths: list[str] | None = None) -> None:
        """Append rows; an index that needs no training (flat, hnsw, a trained ivf) takes them in place."""
        embeddings = np.asarray(embeddings, dtype=np.float32).reshape(len(labels), -1)
        grown = self._index is not None and self._index_n == len(self.labels) and \
            self.index_spec.resolve(len(self.labels) + len(labels)) == self.index_kind
        self.embeddings = np.concatenate([self.embeddings.reshape(-1, embeddings.shape[1]), embeddings])
        self.labels = list(self.labels) + list(labels)
        self.paths = list(self.paths) + list(paths or [""] * len(labels))
        if grown:
            self._index.add(np.ascontiguousarray(embeddings))
            self._index_n = len(self.labels)

    def save(self, path: str | Path) -> None:
        arrays = dict(embeddings=self.embeddings.astype(np.float32), labels=np.array(self.labels, dtype=str),
                      paths=np.array(self.paths, dtype=str), model=np.array(json.dumps(self.model)),
                      index_spec=np.array(json.dumps(asdict(self.index_spec))))
        if self.index_kind != "flat" and self.index() is not None:
            arrays["faiss_index"] = _faiss().serialize_index(self._index)   # uint8 array: no pickle
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        with atomic_write(path) as handle:
            handle.write(buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path, index: IndexSpec | None = None) -> "Gallery":
        """`index` overrides the saved choice (and drops a saved index of another kind)."""
        from fogreid.file_kinds import expect

        path = Path(path)
        expect(path, "", "gallery", "gallery (.npz from `fogreid gallery`)",
               {"onnx": "--model", "checkpoint": "--model or --checkpoint"})
        rebuild = "rebuild it with `fogreid gallery`"
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [k for k in ("embeddings", "labels", "paths", "model") if k not in data]
                if missing:
                    raise FogreidError(f"{path}: not a fogreid gallery (no {', '.join(missing)} array); {rebuild}")
                saved = _index_spec(data["index_spec"], path) if "index_spec" in data else IndexSpec()
                embeddings, labels, paths = data["embeddings"], data["labels"], data["paths"]
                model = _json_field(data["model"], path, "model")
                _check_arrays(embeddings, labels, paths, model, path)
                gallery = cls(embeddings, labels.tolist(), paths.tolist(), model, index or saved)
                if "faiss_index" in data and gallery.index_spec.resolve(len(gallery.labels)) == \
                        saved.resolve(len(gallery.labels)) and _faiss() is not None:
                    gallery._index = _faiss().deserialize_index(data["faiss_index"])
                    gallery._index_n = gallery._index.ntotal
                    _set_search_params(gallery._index, gallery.index_spec)
        # a half-copied file raises one of these too
        except (ValueError, KeyError, OSError, EOFError, TypeError, zipfile.BadZipFile, RuntimeError) as exc:
            first = next(iter(str(exc).splitlines()), "")[:160]
            raise FogreidError(f"{path}: not a readable fogreid gallery ({type(exc).__name__}: {first}); "
                               f"{rebuild}") from None
        finite = np.isfinite(gallery.embeddings).all(axis=1)
        if not finite.all():  # a NaN row scores NaN against every query: matched, and written into the events
            rows = np.flatnonzero(~finite)
            first = gallery.paths[rows[0]] if rows[0] < len(gallery.paths) and gallery.paths[rows[0]] else ""
            raise FogreidError(f"{path}: {len(rows)} of {len(finite)} embeddings hold NaN or infinite values (row "
                               f"{', '.join(map(str, rows[:3]))}{', ...' if len(rows) > 3 else ''}"
                               f"{f', image {first}' if first else ''}); rebuild it with `fogreid gallery`")
        gallery.embeddings = gallery.embeddings.astype(np.float32, copy=False)
        return gallery

    def check_identity(self, identity: str | None) -> None:
        """Refuse a gallery built by another model: both sides' checkpoint SHA-256, where known."""
        mine = self.model.get("checkpoint_sha256")
        if identity and mine and identity != mine:
            raise FogreidError(f"the gallery was built by another model (checkpoint {mine[:12]}, "
                               f"{self.model.get('name')}); this model is checkpoint {identity[:12]}: "
                               f"rebuild the gallery with this model (`fogreid gallery --model ...`)")
        if identity and not mine:
            print("fogreid: warning: the gallery does not record which model built it (built by an older "
                  "fogreid, or from code without `identity=`); only its sizes are checked. Rebuild it with "
                  "`fogreid gallery`.", file=sys.stderr)

    def check_model(self, embedding_dim: int, imgsz: tuple[int, int], identity: str | None = None) -> None:
        """Refuse a model other than the one that built the gallery: its identity (checkpoint
        SHA-256) when both sides know it, and its embedding and input sizes."""
        self.check_identity(identity)
        if (self.embeddings.shape[1] != embedding_dim
                or tuple(self.model.get("input_size", imgsz)) != tuple(imgsz)):
            raise FogreidError(f"the gallery holds {self.embeddings.shape[1]}-d embeddings of a "
                               f"{self.model.get('input_size')} model ({self.model.get('name')}); this model gives "
                               f"{embedding_dim}-d at {imgsz}: rebuild the gallery with this model")

    def match(self, queries: np.ndarray, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(indices (M, k), cosine scores (M, k)), best first."""
        k = min(k, len(self.labels))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        index = self.index()
        if index is None:
            return exact_search(self.embeddings, queries, k)
        scores, indices = index.search(queries, k)
        short = (indices < 0).any(axis=1)   # ivf: fewer than k vectors in the probed cells
        if short.any():
            indices[short], scores[short] = exact_search(self.embeddings, queries[short], k)
        return indices, scores


def _json_field(array: np.ndarray, path: Path, name: str):
    """A JSON string stored as a 0-d array: its value, which must be a mapping."""
    if array.ndim != 0 or array.dtype.kind != "U":
        raise FogreidError(f"{path}: its {name} field is a {array.dtype} array, not a JSON text; rebuild it with "
                           f"`fogreid gallery`")
    try:
        value = json.loads(str(array))
    except ValueError:
        raise FogreidError(f"{path}: its {name} field is not valid JSON; rebuild it with `fogreid gallery`") from None
    if not isinstance(value, dict):
        raise FogreidError(f"{path}: its {name} field is a {type(value).__name__}, not a mapping; rebuild it with "
                           f"`fogreid gallery`")
    return value


def _index_spec(array: np.ndarray, path: Path) -> IndexSpec:
    value = _json_field(array, path, "index_spec")
    known = {f for f in IndexSpec.__dataclass_fields__}
    if set(value) - known or value.get("kind", "auto") not in KINDS:
        raise FogreidError(f"{path}: its index_spec {json.dumps(value)[:80]} is not one fogreid writes; rebuild it "
                           f"with `fogreid gallery`")
    return IndexSpec(**value)


def _check_arrays(embeddings: np.ndarray, labels: np.ndarray, paths: np.ndarray, model: dict, path: Path) -> None:
    """What matching relies on: (N, D) float embeddings with N >= 1, a label and a path per row,
    and a model description whose sizes are sizes."""
    rebuild = "rebuild it with `fogreid gallery`"
    if embeddings.ndim != 2 or embeddings.shape[1] < 1:
        raise FogreidError(f"{path}: its embeddings have shape {embeddings.shape}, not (rows, dim); {rebuild}")
    if embeddings.dtype.kind != "f":
        raise FogreidError(f"{path}: its embeddings are {embeddings.dtype}, not floats; {rebuild}")
    if len(embeddings) == 0:
        raise FogreidError(f"{path}: the gallery is empty (0 embeddings): nothing to match against; build it from a "
                           f"folder with images (`fogreid gallery --images DIR`)")
    for name, array in (("labels", labels), ("paths", paths)):
        if array.ndim != 1 or len(array) != len(embeddings) or array.dtype.kind not in "UO":
            raise FogreidError(f"{path}: its {name} ({array.dtype} {array.shape}) do not give one text per "
                               f"embedding ({len(embeddings)}); {rebuild}")
    size, dim = model.get("input_size", [1, 1]), model.get("embedding_dim", embeddings.shape[1])
    if (not isinstance(size, list) or len(size) != 2 or not all(isinstance(v, int) and v > 0 for v in size)
            or not isinstance(dim, int) or isinstance(dim, bool) or dim != embeddings.shape[1]
            or not isinstance(model.get("checkpoint_sha256", ""), str) or not isinstance(model.get("name", ""), str)):
        raise FogreidError(f"{path}: its model description {json.dumps(model)[:100]} does not fit its embeddings "
                           f"({embeddings.shape[1]}-d); {rebuild}")


def _set_search_params(index, spec: IndexSpec) -> None:
    faiss = _faiss()
    if isinstance(index, faiss.IndexIVF):
        index.nprobe = min(spec.nprobe, index.nlist)
    elif isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = spec.ef_search


def exact_search(embeddings: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sims = queries @ embeddings.T
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = np.take_along_axis(sims, top, axis=1).argsort(axis=1)[:, ::-1]
    indices = np.take_along_axis(top, order, axis=1)
    return indices, np.take_along_axis(sims, indices, axis=1)


def model_identity(path: str | Path) -> str | None:
    """The SHA-256 of the checkpoint an artifact comes from: the checkpoint itself, an ONNX's
    `checkpoint_sha256` metadata, or for an engine the ONNX named in its sidecar JSON."""
    from fogreid.fileio import sha256_file

    path = Path(path)
    if not path.is_file():
        return None
    suffix = path.suffix.lower()
    if suffix in (".pt", ".pth"):
        return sha256_file(path)
    if suffix == ".onnx":
        from fogreid.onnx_graph import read_metadata

        try:
            return read_metadata(path).get("checkpoint_sha256") or None
        except Exception:  # not an ONNX file: loading the model will say so plainly
            return None
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            onnx_name = json.loads(sidecar.read_text()).get("onnx")
        except (ValueError, OSError):
            return None
        if onnx_name and (path.parent / onnx_name).is_file():
            return model_identity(path.parent / onnx_name)
    return None


def label_of(path: Path, root: Path) -> str:
    """The folder name (ROOT/<id>/img.jpg), else the vehicle id of a VeRi/FVRID file name."""
    from fogreid.data.datasets import parse_vehicle_name

    if path.parent != root:
        return path.parent.relative_to(root).parts[0]
    return str(parse_vehicle_name(path.name)[0])


def build_gallery(model, images: str | Path, batch_size: int = 32, progress: bool = True,
                  identity: str | None = None, index: IndexSpec | None = None) -> Gallery:
    """Embed ROOT/<id>/*.jpg (or VeRi/FVRID-named files); `identity` is `model_identity(artifact)`."""
    from tqdm import tqdm

    from fogreid.data.image_io import image_batches, list_images

    root = Path(images)
    paths = list_images(root)
    labels = [label_of(p, root) for p in paths]
    embeddings = []
    with tqdm(total=len(paths), desc="gallery", unit="img", disable=not progress) as bar:
        for batch in image_batches(paths, model.imgsz, batch_size):
            embeddings.append(model(batch)[1])
            bar.update(len(batch))
    emb = np.concatenate(embeddings)
    described = {"name": model.name, "input_size": list(model.imgsz), "embedding_dim": int(emb.shape[1])}
    if identity:
        described["checkpoint_sha256"] = identity
    return Gallery(emb, labels, [str(p) for p in paths], described, index or IndexSpec())
