"""One configuration file for every clipsearch component.

``load_config(path)`` reads a YAML file into typed dataclasses. Unknown sections and keys are
rejected with an error naming them; relative paths resolve against the config file's directory.
A later issue adds a setting by adding a dataclass field (with a default) to its section, and a
new section by adding a field of a new dataclass type to :class:`Config`.

Lookup order for the file: the explicit ``--config`` path, else ``$CLIPSEARCH_CONFIG``, else
``./config.yaml`` when present, else built-in defaults (paths relative to the working directory).
``$CLIPSEARCH_WEIGHTS`` overrides ``model.weights``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from indexer.config.build import ConfigError, _build

CONFIG_ENV = "CLIPSEARCH_CONFIG"
WEIGHTS_ENV = "CLIPSEARCH_WEIGHTS"
DATABASE_ENV, READ_DATABASE_ENV = "CLIPSEARCH_DATABASE", "CLIPSEARCH_READ_DATABASE"
DEFAULT_CONFIG_NAME = "config.yaml"
INDEX_KINDS = ("auto", "flat", "flat16", "ivf", "ivf-sq8", "hnsw")

DEFAULT_EXTENSIONS = [".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"]
HEIF_EXTENSIONS = [".heic", ".heif"]
RAW_EXTENSIONS = (
    ".dng .cr2 .cr3 .crw .nef .nrw .arw .srf .sr2 .raf .orf .rw2 .pef .srw .x3f .3fr "
    ".iiq .erf .kdc .dcr .mrw .rwl .mos .mef .raw"
).split()  # camera RAW: rawpy
VIDEO_EXTENSIONS = [".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"]  # PyAV (indexer.embed.video)
RAW_WITH_JPEG = ("skip", "index")  # library.raw_with_jpeg: a RAW beside a same-named JPEG


@dataclass
class ModelConfig:
    """Which CLIP model encodes images and text, and where it runs."""

    name: str = "ViT-B/32"
    weights: str | None = None
    cache_dir: str | None = None
    device: str = "auto"
    precision: str = "auto"
    backend: str = "auto"


@dataclass
class LibraryConfig:
    """Which photos are indexed."""

    roots: list[str] = field(default_factory=lambda: ["data/samples"])
    extensions: list[str] = field(default_factory=lambda: [*DEFAULT_EXTENSIONS, *HEIF_EXTENSIONS, *RAW_EXTENSIONS, *VIDEO_EXTENSIONS])  # fmt: skip
    max_pixels: int = 150_000_000
    follow_symlinks: bool = True
    raw_with_jpeg: str = "skip"  # skip | index (RAW_WITH_JPEG)


@dataclass
class RayConfig:
    """``index.engine: ray``: the Ray actor pool that decodes and encodes (indexer.ingest.ray_engine)."""

    actors: int = 0  # 0: one per GPU of the cluster, else 1
    batch_size: int = 0  # images per actor call (0: index.batch_size, else 64)
    num_gpus: float | None = None  # per actor (None: 1 where the cluster has GPUs, else 0)
    num_cpus: float = 1.0  # per actor (also its torch threads)
    path_map: dict = field(default_factory=dict)  # node (hostname, IP or "*") -> {prefix: prefix}


@dataclass
class IndexConfig:
    """Where and how the index is stored and built."""

    dir: str = "data/index"
    kind: str = "auto"
    batch_size: int = 0
    decode_workers: int = 0
    torch_threads: int = 0
    model_sessions: int = 0
    thumbnail_size: int = 256
    jpeg_draft: bool = True
    fast_resize: bool = True
    save_interval: float = 30.0
    database: str | None = None  # postgresql://user@host/db (None: SQLite in ``dir``)
    read_database: str | None = None  # a replica for read-only opens (None: ``database``)
    thumbs_dir: str | None = None  # None: ``<dir>/thumbs`` (a shared folder for many machines)
    engine: str = "local"  # local | ray (clipsearch index --ray)
    ray_address: str | None = None  # None: a local Ray cluster on this machine
    ray: RayConfig = field(default_factory=RayConfig)


@dataclass
class SearchConfig:
    """Defaults for searches (the CLI flags and UI controls override them)."""

    top_k: int = 20
    threshold: float | None = None
    adaptive: bool = False


WATCH_OBSERVERS, LOG_LEVELS = ("auto", "inotify", "polling"), ("debug", "info", "warning", "error")


@dataclass
class WatchConfig:
    """The folder-watching service (``clipsearch watch``; see ``indexer/watch/service.py``)."""

    debounce_seconds: float = 1.0
    stable_checks: int = 2
    max_batch: int = 256
    observer: str = "auto"
    poll_interval: float = 10.0
    log_file: str | None = None
    log_level: str = "info"

    def __post_init__(self) -> None:
        if not 0 < self.debounce_seconds <= 3600:
            raise ConfigError(f"watch.debounce_seconds: expected 0 < x <= 3600, got {self.debounce_seconds}")  # fmt: skip
        if self.stable_checks < 1:
            raise ConfigError("watch.stable_checks: must be at least 1")
        if self.max_batch < 1:
            raise ConfigError("watch.max_batch: must be at least 1")
        if self.observer not in WATCH_OBSERVERS:
            raise ConfigError(f"watch.observer: expected auto, inotify or polling, got {self.observer!r}")  # fmt: skip
        if not 0.1 <= self.poll_interval <= 86400:
            raise ConfigError(f"watch.poll_interval: expected 0.1 to 86400 seconds, got {self.poll_interval}")  # fmt: skip
        if self.log_file is not None and not self.log_file.strip():
            raise ConfigError("watch.log_file: must not be empty (null: no log file)")
        self.log_level = self.log_level.lower()
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"watch.log_level: expected one of {', '.join(LOG_LEVELS)}, got {self.log_level!r}")  # fmt: skip


@dataclass
class UIConfig:
    """The browser UI (``clipsearch ui``; see ``app/``)."""

    host: str = "127.0.0.1"
    port: int = 8501
    password: str | None = None
    max_upload_mb: int = 20
    max_upload_pixels: int = 50_000_000
    results_per_page: int = 30
    columns: int = 5
    max_results: int = 500

    def __post_init__(self) -> None:
        if not self.host.strip():
            raise ConfigError("ui.host: must not be empty")
        if not 1 <= self.port <= 65535:
            raise ConfigError(f"ui.port: expected 1 to 65535, got {self.port}")
        if self.password is not None and not self.password:
            raise ConfigError("ui.password: must not be empty (null: no password)")
        for key in ("max_upload_mb", "max_upload_pixels", "results_per_page", "max_results"):
            if getattr(self, key) < 1:
                raise ConfigError(f"ui.{key}: must be at least 1")
        if not 1 <= self.columns <= 12:
            raise ConfigError(f"ui.columns: expected 1 to 12, got {self.columns}")


@dataclass
class TagsConfig:
    """Zero-shot tags of indexed photos (``clipsearch tag``, ``tags``, ``export``, ``duplicates``).

    The vocabulary is ``vocabulary`` (an inline mapping), else the YAML file ``file``, else the
    built-in one (schema: :mod:`indexer.tags.vocabulary`). ``top_n`` overrides the vocabulary's cap on
    tags per image (null: the vocabulary's; 0: no limit).
    """

    file: str | None = None
    vocabulary: dict | None = None
    safety: bool = False
    auto: bool = True
    top_n: int | None = None
    xmp_naming: str = "append"
    duplicate_threshold: float = 0.95

    def __post_init__(self) -> None:
        if self.file is not None and self.vocabulary is not None:
            raise ConfigError("tags: set either tags.file or tags.vocabulary, not both")
        if self.file is not None and not self.file.strip():
            raise ConfigError("tags.file: must not be empty (null: the built-in vocabulary)")
        if self.top_n is not None and self.top_n < 0:
            raise ConfigError(f"tags.top_n: expected 0 (no limit) or more, got {self.top_n}")
        if self.xmp_naming not in ("append", "replace"):
            raise ConfigError(f"tags.xmp_naming: expected append or replace, got {self.xmp_naming!r}")  # fmt: skip
        if not -1.0 <= self.duplicate_threshold <= 1.0:
            raise ConfigError(f"tags.duplicate_threshold: expected a cosine in [-1, 1], got {self.duplicate_threshold}")  # fmt: skip


@dataclass
class OCRConfig:
    """Text in images, read after the vectors are committed (``text:`` queries; ``indexer/ocr/``)."""

    enabled: bool = False
    engine: str = "auto"
    languages: str = "eng"  # Tesseract's -l (eng+deu)
    min_text_px: int = 8
    min_confidence: float = 0.5
    max_side: int = 2048  # larger images are scaled down to this long side first
    batch_size: int = 16  # images read per committed batch


@dataclass
class VideoConfig:
    """Videos: frames sampled at scene changes and at least every ``interval_s`` (``indexer/embed/video.py``)."""

    interval_s: float = 2.0
    scene_threshold: float = 0.1  # mean grey difference (0-1) from the last frame taken
    max_frames: int = 120  # per video (a longer one is sampled more sparsely)
    max_seconds: float = 3 * 3600.0  # longer videos are recorded as errors
    max_mb: int = 8192
    keyframes_only: bool = False  # decode keyframes only: faster, sparser

    def __post_init__(self) -> None:
        if not (0.1 <= self.interval_s <= 3600 and 0 < self.scene_threshold <= 1 and min(self.max_frames, self.max_seconds, self.max_mb) >= 1):  # fmt: skip
            raise ConfigError("video: expected interval_s 0.1 to 3600, scene_threshold in (0, 1], max_frames, max_seconds and max_mb at least 1")  # fmt: skip


@dataclass
class Config:
    """The whole configuration; ``source`` is the file it came from (None: defaults)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    library: LibraryConfig = field(default_factory=LibraryConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
    ui: UIConfig = field(default_factory=UIConfig)
    tags: TagsConfig = field(default_factory=TagsConfig)
    ocr: OCRConfig = field(default_factory=OCRConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    source: Path | None = field(default=None, metadata={"internal": True})

    @property
    def base_dir(self) -> Path:
        """Directory relative paths resolve against."""
        return self.source.parent if self.source is not None else Path.cwd()

    def resolve(self, p: str | os.PathLike) -> Path:
        """An absolute path for ``p`` (``~`` expanded, relative to :attr:`base_dir`)."""
        path = Path(os.path.expanduser(os.fspath(p)))
        return path if path.is_absolute() else self.base_dir / path

    @property
    def index_dir(self) -> Path:
        return self.resolve(self.index.dir)

    @property
    def database_url(self) -> str | None:
        """PostgreSQL for writers: $CLIPSEARCH_DATABASE, else ``index.database`` (None: SQLite)."""
        return os.environ.get(DATABASE_ENV) or self.index.database or None

    @property
    def read_database_url(self) -> str | None:
        """For readers: $CLIPSEARCH_READ_DATABASE, else ``index.read_database``, else the above."""
        return os.environ.get(READ_DATABASE_ENV) or self.index.read_database or self.database_url

    @property
    def thumbs_dir(self) -> Path:
        return self.resolve(self.index.thumbs_dir or self.index_dir / "thumbs")

    @property
    def roots(self) -> list[Path]:
        return [self.resolve(r) for r in self.library.roots]

    @property
    def weights_path(self) -> Path | None:
        """The local checkpoint to load: $CLIPSEARCH_WEIGHTS, else model.weights, else None."""
        env = os.environ.get(WEIGHTS_ENV)
        if env:
            return Path(os.path.expanduser(env)).absolute()
        return self.resolve(self.model.weights) if self.model.weights else None

    @property
    def cache_dir(self) -> Path | None:
        return self.resolve(self.model.cache_dir) if self.model.cache_dir else None


def _validate(cfg: Config) -> None:
    def bad(key: str, msg: str) -> ConfigError:
        return ConfigError(f"{key}: {msg}")

    if cfg.model.device not in ("auto", "cpu", "cuda") and not cfg.model.device.startswith("cuda:"):
        raise bad("model.device", f"expected auto, cpu or cuda, got {cfg.model.device!r}")
    for key, allowed in (("model.precision", ("auto", "fp32", "fp16", "bf16", "int8")), ("model.backend", ("auto", "torch", "onnxruntime")),
                         ("index.engine", ("local", "ray")), ("library.raw_with_jpeg", RAW_WITH_JPEG), ("ocr.engine", ("auto", "rapidocr", "tesseract"))):  # fmt: skip
        if (value := getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1])) not in allowed:
            raise bad(key, f"expected {', '.join(allowed[:-1])} or {allowed[-1]}, got {value!r}")
    if cfg.model.precision == "int8" and cfg.model.backend == "torch":
        raise bad("model.precision", "int8 runs on backend onnxruntime (or auto), not torch")
    if cfg.model.backend == "onnxruntime" and cfg.model.precision in ("fp16", "bf16"):
        raise bad("model.precision", "backend onnxruntime runs auto/int8 or fp32")
    if cfg.model.backend == "onnxruntime" and cfg.model.device.startswith("cuda"):
        raise bad("model.backend", "onnxruntime runs on the CPU; use device cpu or auto")
    if cfg.index.kind not in INDEX_KINDS:
        raise bad("index.kind", f"expected one of {', '.join(INDEX_KINDS)}, got {cfg.index.kind!r}")
    for key in ("database", "read_database"):
        if (url := getattr(cfg.index, key)) and not url.startswith(("postgresql:", "postgres:")):
            raise bad(f"index.{key}", "expected a postgresql://user@host/db URL")
    if min((r := cfg.index.ray).actors, r.batch_size, r.num_gpus or 0) < 0 or r.num_cpus <= 0:
        raise bad("index.ray", "actors, batch_size, num_gpus: 0 or more; num_cpus: above 0")
    for key in ("batch_size", "decode_workers", "torch_threads", "model_sessions"):
        if getattr(cfg.index, key) < 0:
            raise bad(f"index.{key}", "must be 0 (automatic) or more")
    if not 0 <= (o := cfg.ocr).min_confidence <= 1 or not all(x.isidentifier() for x in o.languages.split("+")):  # fmt: skip
        raise bad("ocr", f"expected min_confidence 0 to 1, languages like eng or eng+deu; got {o.min_confidence}, {o.languages!r}")  # fmt: skip
    for key in ("library.max_pixels", "search.top_k", "index.thumbnail_size", "ocr.min_text_px", "ocr.max_side", "ocr.batch_size"):  # fmt: skip
        if getattr(getattr(cfg, key.split(".")[0]), key.split(".")[1]) < 1:
            raise bad(key, "must be at least 1")
    if not cfg.library.roots:
        raise bad("library.roots", "list at least one folder")
    cfg.library.extensions = [
        (e if e.startswith(".") else "." + e).lower() for e in cfg.library.extensions
    ]


def config_from_dict(data: dict | None, source: Path | None = None) -> Config:
    """Build and validate a :class:`Config` from parsed YAML."""
    cfg = _build(Config, data, "")
    cfg.source = source
    _validate(cfg)
    return cfg


def find_config_path(explicit: str | os.PathLike | None = None) -> Path | None:
    """The config file to use (see module docstring); None means built-in defaults."""
    if explicit is not None:
        return Path(explicit)
    if env := os.environ.get(CONFIG_ENV):
        return Path(env)
    local = Path.cwd() / DEFAULT_CONFIG_NAME
    return local if local.is_file() else None


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Load the configuration (``path`` None: $CLIPSEARCH_CONFIG, ./config.yaml, defaults)."""
    found = find_config_path(path)
    if found is None:
        return config_from_dict({}, None)
    found = found.expanduser().absolute()
    try:
        text = found.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {found}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {found}: {exc}") from None
    try:
        # libyaml's loader where PyYAML has it: 0.6 ms instead of 11 ms for the commented
        # config.yaml, on every command's start
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # noqa: S506
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML in {found}: {exc}".splitlines()[0]) from None
    try:
        return config_from_dict(data, found)
    except ConfigError as exc:
        raise ConfigError(f"{found}: {exc}") from None
