"""The run directory: the on-disk contract between stages (see shared/ARCHITECTURE.md).

    runs/<name>/
      config.yaml              resolved config, exactly what ran
      data/                    split.parquet files: train/valid/test interactions, items, users
      model/                   query_tower/, item_tower/ SavedModels, vocab/, model_version
      vectors/<version>/       item vectors (Parquet shards) + manifest.json
      vectors/current
      index/<version>/         FAISS index + manifest.json
      index/current
      eval/                    metrics.json, report.md, *.png

The root may be a local path or a URL (``s3://bucket/runs/x``, ``gs://...``): then ``root`` and every
property are ``UrlPath``s (joined with ``/`` like a Path, read through ``core.storage``), and readers that
need local files copy artifacts into the local cache first (``core.version_cache``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.storage import Storage, join_url, open_storage, scheme_of


class UrlPath:
    """A location on object storage, used like a read-only ``pathlib.Path``: ``/``, ``name``, ``parent``,
    ``exists``, ``is_file``, ``read_bytes``, ``read_text``; ``str()`` is the URL. It has no ``__fspath__``,
    so code that only knows local files fails at once (``TypeError``) instead of writing a local ``s3:`` dir."""

    __slots__ = ("url",)

    def __init__(self, url: str):
        if scheme_of(url) == "file":
            raise ValueError(f"UrlPath needs a URL with a scheme (s3://, gs://), got {url!r}")
        scheme, rest = str(url).split("://", 1)
        if not rest.split("/", 1)[0]:  # "s3:///runs/x" must not become bucket "runs"
            raise ValueError(f"{url!r} names no bucket; write {scheme}://<bucket>/<prefix>")
        self.url = f"{scheme}://{rest.strip('/')}"

    def __truediv__(self, key) -> "UrlPath":
        return UrlPath(join_url(self.url, str(key)))

    def __str__(self) -> str:
        return self.url

    def __repr__(self) -> str:
        return f"UrlPath({self.url!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, UrlPath) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    @property
    def name(self) -> str:
        rest = self.url.split("://", 1)[1]
        return rest.rsplit("/", 1)[-1] if "/" in rest else ""

    @property
    def parent(self) -> "UrlPath":
        scheme, rest = self.url.split("://", 1)
        return UrlPath(f"{scheme}://{rest.rsplit('/', 1)[0]}") if "/" in rest else self

    def resolve(self) -> "UrlPath":
        return self

    def _split(self) -> tuple[Storage, str]:
        """(storage rooted at the parent, this name): one object key, so no listing is needed."""
        return open_storage(self.parent.url), self.name

    def is_file(self) -> bool:
        storage, key = self._split()
        return storage.exists(key)

    def is_dir(self) -> bool:
        return bool(open_storage(self.url).list())

    def exists(self) -> bool:
        return self.is_file() or self.is_dir()

    def read_bytes(self) -> bytes:
        storage, key = self._split()
        return storage.read_bytes(key)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)


def as_location(root) -> "Path | UrlPath":
    """A ``UrlPath`` for a URL, else a ``Path``."""
    if isinstance(root, (Path, UrlPath)):
        return root
    return UrlPath(str(root)) if scheme_of(root) != "file" else Path(root)


@dataclass(frozen=True)
class RunDir:
    root: Path | UrlPath

    def __post_init__(self):
        object.__setattr__(self, "root", as_location(self.root))

    @property
    def remote(self) -> bool:
        return isinstance(self.root, UrlPath)

    def storage(self) -> Storage:
        """The run directory as a ``core.storage.Storage`` (keys ``model/...``, ``index/current``...)."""
        return open_storage(str(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def query_tower(self) -> Path:
        return self.model / "query_tower"

    @property
    def item_tower(self) -> Path:
        return self.model / "item_tower"

    @property
    def model_version_file(self) -> Path:
        return self.model / "model_version"

    @property
    def vectors(self) -> Path:
        return self.root / "vectors"

    @property
    def index(self) -> Path:
        return self.root / "index"

    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def model_version(self) -> str:
        path = self.model_version_file
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: {self.root} has no exported model; run `twotower train --run {self.root}` first"
            )
        return path.read_text().strip()

    def published_vectors(self) -> Path:
        """The vectors version that goes with the published index: the one its manifest names
        (``vectors_version``), else ``vectors/current``. The rebuild flips vectors/current and index/current
        one after the other; resolving through the index keeps a reader in step even if a job died between
        the two flips (the lifecycle never prunes vectors a kept index names)."""
        from core.lifecycle import VersionedRoot

        index, vectors = VersionedRoot(self.index), VersionedRoot(self.vectors)
        version = index.current()
        if version is not None:
            named = index.manifest(version).get("vectors_version")
            if named and named in vectors.versions():
                return self.vectors / named
        return self.vectors / vectors.current_or_raise()

    def require(self, path: Path, how: str) -> Path:
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; {how}")
        return path
